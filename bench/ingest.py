"""Benchmark: MQTT batches -> committed PostgreSQL rows, against a plain COPY of the same rows.

Run from the repository root: `python bench/ingest.py [--batches N] [--records N]`.
Starts a private Mosquitto (shipped config) and uses PostgreSQL from $LIFELINE_BENCH_DB_URL or
postgresql://postgres@127.0.0.1:5432/postgres, creating and dropping its own database.
The last line printed is one JSON object.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from collector.ingest import Ingest, IngestConfig
from collector.store.postgres import COPY_TYPES, PG_EPOCH_MS, PostgresStore
from lifeline.broker import PrivateBroker
from wire import DataBatch, Kind, Record, encode, topic

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = "bench/lifeline"


def make_batches(n: int, records: int, t0: int) -> list[DataBatch]:
    """n data batches of `records` readings each, like a busy gateway's backlog."""
    out = []
    for seq in range(1, n + 1):
        recs = tuple(
            Record(f"dev{i % 50:03d}", f"p{i % 8}", t0 + seq * 1000 + i, 20.0 + (seq % 97) * 0.1)
            for i in range(records)
        )
        out.append(DataBatch("gw-bench", "s", seq, t0, recs))
    return out


def publish(url_host: str, port: int, payloads: list[bytes]) -> float:
    """Publish QoS 1 and wait for every PUBACK; return seconds taken."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, "bench-gw")
    c.max_inflight_messages_set(1000)
    c.connect(url_host, port)
    c.loop_start()
    t = topic("site", "gw-bench", Kind.DATA, root=ROOT)
    start = time.perf_counter()
    infos = []
    for p in payloads:
        infos.append(c.publish(t, p, qos=1))
        if len(infos) % 5000 == 0:
            for i in infos[-5000:]:
                i.wait_for_publish(60)  # keep below paho's 65535 message ids
    for i in infos:
        i.wait_for_publish(60)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def run_ingest(
    db_url: str, broker: PrivateBroker, batches: list[DataBatch], batch_max: int
) -> float:
    """Queue the backlog in the broker, then time the collector draining it into the database."""
    store = PostgresStore(db_url)
    store.migrate()
    cfg = IngestConfig(
        mqtt_url=broker.url, root=ROOT, client_id="bench-collector", batch_max=batch_max,
        receive_maximum=max(2 * batch_max, 100),
    )  # fmt: skip
    first = Ingest(store, cfg)
    first.start()  # creates the persistent session, so the broker queues for us
    first.wait_ready(10)
    first.stop()
    publish(broker.host, broker.port, [encode(b) for b in batches])
    total = sum(len(b.records) for b in batches)
    ing = Ingest(store, cfg)
    start = time.perf_counter()
    ing.start()
    while ing.stats.readings < total:
        time.sleep(0.01)
        if time.perf_counter() - start > 300:
            raise RuntimeError(f"ingest stalled at {ing.stats.readings} of {total} rows")
    elapsed = time.perf_counter() - start
    ing.stop()
    store.close()
    if count_rows(db_url) != total:
        raise RuntimeError("committed rows differ from published rows")
    return elapsed


def run_copy(db_url: str, batches: list[DataBatch], rows_per_tx: int) -> float:
    """Plain binary COPY of the same rows into the same (emptied) table, same transaction size."""
    rows = [
        (
            b.gateway,
            r.device,
            r.point,
            (r.ts_ms - PG_EPOCH_MS) * 1000,
            3,
            r.value,
            None,
            "good",
            False,
        )
        for b in batches
        for r in b.records
    ]
    cols = "gateway_id, device, point, ts, vtype, value_num, value_text, quality, historical"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
        start = time.perf_counter()
        for i in range(0, len(rows), rows_per_tx):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY readings ({cols}) FROM STDIN (FORMAT BINARY)") as cp,
            ):
                cp.set_types(COPY_TYPES)  # the collector's own fast timestamp encoding
                for row in rows[i : i + rows_per_tx]:
                    cp.write_row(row)
        elapsed = time.perf_counter() - start
    if count_rows(db_url) != len(rows):
        raise RuntimeError("COPY row count mismatch")
    return elapsed


def main() -> int:
    """Run the benchmark and print a table, then one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, default=3000, help="MQTT messages (default 3000)")
    ap.add_argument("--records", type=int, default=100, help="readings per message (default 100)")
    ap.add_argument("--batch-max", type=int, default=200, help="messages per collector transaction")
    args = ap.parse_args()

    admin = os.environ.get("LIFELINE_BENCH_DB_URL", DEFAULT_DB)
    name = f"lifeline_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{admin.rsplit('/', 1)[0]}/{name}"
    broker = PrivateBroker(Path(tempfile.mkdtemp(prefix="lifeline-bench-mqtt-")))
    broker.start()
    try:
        batches = make_batches(args.batches, args.records, int(time.time() * 1000))
        total = args.batches * args.records
        ingest_s = run_ingest(db_url, broker, batches, args.batch_max)
        copy_s = run_copy(db_url, batches, args.batch_max * args.records)
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    rows_per_s = total / ingest_s
    copy_rows_per_s = total / copy_s
    ratio = rows_per_s / copy_rows_per_s
    print(f"{'measure':<42}{'rows':>10}{'seconds':>10}{'rows/s':>12}")
    for label, secs in (
        ("MQTT batches -> committed rows (collector)", ingest_s),
        ("plain binary COPY, same rows, same table", copy_s),
    ):
        print(f"{label:<42}{total:>10}{secs:>10.2f}{total / secs:>12.0f}")
    print(
        f"ratio {ratio:.2f} (target >= 0.7). Shared machines are noisy: compare ratios, not rates."
    )
    print(
        json.dumps(
            {
                "rows_per_s": round(rows_per_s),
                "copy_rows_per_s": round(copy_rows_per_s),
                "ratio": round(ratio, 3),
                "rows": total,
                "messages": args.batches,
                "records_per_message": args.records,
                "messages_per_tx": args.batch_max,
                "python": sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
