"""Benchmark: MQTT batches -> committed PostgreSQL rows, against a plain COPY of the same rows.

Run from the repository root: `python bench/ingest.py [--batches N] [--records N] [--rounds N]`.
Each round times the collector and then a plain COPY of the same rows; the ratio reported is
the median of the rounds' ratios (medians of the rates are shown too).
Starts a private Mosquitto (shipped config) and uses PostgreSQL from $LIFELINE_BENCH_DB_URL or
postgresql://postgres@127.0.0.1:5432/postgres, creating and dropping its own database.

Then, in the same run, a broker cluster (`--cluster-batches`, 0 to skip): the same kind of
backlog from two gateways on two sites, drained by collector *processes* (`collector run`,
MQTT 3.1.1): one collector on one Mosquitto, then two collectors splitting the sites by
partitions on a three-node NATS cluster (lifeline/nats.py; JetStream replicates every message to
three nodes). Both figures include what a process does (HTTP server, lease thread) and share
this machine's cores with the brokers and PostgreSQL: compare them with each other.
The last line printed is one JSON object.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import PrivateBroker, free_port
from lifeline.collector.ingest import Ingest, IngestConfig, parse_mqtt_url
from lifeline.collector.runtime import tune_gc
from lifeline.collector.store.postgres import COPY_TYPES, PG_EPOCH_MS, PostgresStore
from lifeline.nats import nats_cluster
from lifeline.wire import DataBatch, Kind, Record, decode, encode, topic

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = "bench/lifeline"


def make_batches(n: int, records: int, t0: int, gateway: str = "gw-bench") -> list[DataBatch]:
    """n data batches of `records` readings each, like a busy gateway's backlog."""
    out = []
    for seq in range(1, n + 1):
        recs = tuple(
            Record(f"dev{i % 50:03d}", f"p{i % 8}", t0 + seq * 1000 + i, 20.0 + (seq % 97) * 0.1)
            for i in range(records)
        )
        out.append(DataBatch(gateway, "s", seq, t0, recs, epoch="e1"))
    return out


def publish(
    url_host: str, port: int, payloads: list[bytes], site: str = "site", gateway: str = "gw-bench"
) -> float:
    """Publish QoS 1 and wait for every PUBACK; return seconds taken."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, f"bench-{gateway}")
    c.max_inflight_messages_set(1000)
    c.connect(url_host, port)
    c.loop_start()
    t = topic(site, gateway, Kind.DATA, root=ROOT)
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
    db_url: str, broker: PrivateBroker, payloads: list[bytes], total: int, batch_max: int
) -> tuple[float, float]:
    """Queue the backlog in the broker, then time the collector draining it into the database.

    Returns wall seconds and this process's CPU seconds (the collector's threads) meanwhile.
    """
    store = PostgresStore(db_url)
    store.migrate()
    # The receive window keeps the defaults' proportion (2000 messages for batches of 500):
    # two writers' batches in hand and as many again being decoded.
    cfg = IngestConfig(
        mqtt_url=broker.url, root=ROOT, client_id="bench-collector", batch_max=batch_max,
        receive_maximum=4 * batch_max,
    )  # fmt: skip
    tune_gc()  # as `collector run` does
    first = Ingest(store, cfg)
    first.start()  # creates the persistent session, so the broker queues for us
    first.wait_ready(10)
    first.stop()
    publish(broker.host, broker.port, payloads)
    ing = Ingest(store, cfg)
    start, cpu = time.perf_counter(), time.process_time()
    ing.start()
    while ing.stats.readings < total:
        time.sleep(0.01)
        if time.perf_counter() - start > 300:
            raise RuntimeError(f"ingest stalled at {ing.stats.readings} of {total} rows")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    ing.stop()
    store.close()
    if count_rows(db_url) != total:
        raise RuntimeError("committed rows differ from published rows")
    return elapsed, cpu


def run_copy(db_url: str, payloads: list[bytes], rows_per_tx: int) -> float:
    """Plain binary COPY of the same rows into the same (emptied) table, same transaction size."""
    batches = [decode(p) for p in payloads]
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
        if isinstance(b, DataBatch)
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


SITES = ("north", "south")  # one gateway each; the partitions of the cluster run


def spawn_collector(
    db_url: str, mqtt: str, port: int, partitions: str | None
) -> subprocess.Popen[bytes]:
    """`collector run` as its own process (MQTT 3.1.1), quiet; partitioned when asked."""
    args = ["--mqtt", mqtt, "--mqtt-protocol", "3.1.1", "--db", db_url, "--root", ROOT]
    args += ["--client-id", "bench-collector", "--http", f"127.0.0.1:{port}"]
    args += ["--partitions", partitions] if partitions else []
    return subprocess.Popen(
        [sys.executable, "-m", "lifeline.collector", "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ready(port: int) -> bool:
    """Whether the collector on `port` answers /readyz with 200."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)


def run_processes(
    db_url: str, urls: list[str], collectors: int, payloads: dict[str, list[bytes]], total: int
) -> float:
    """Queue two gateways' backlog in the broker's sessions, then start `collectors` collector
    processes and return rows/s: the rows committed after the first one is ready, over the
    time from then to the last row (what was drained before is left out of both)."""
    partitions = (
        ";".join(f"p{i}={site}" for i, site in enumerate(SITES)) if collectors > 1 else None
    )
    ports = [free_port() for _ in range(collectors)]
    # Each collector starts on another node, as a deployment would.
    mqtts = [",".join(urls[i:] + urls[:i]) for i in range(collectors)]

    def start() -> list[subprocess.Popen[bytes]]:
        return [
            spawn_collector(db_url, m, p, partitions) for m, p in zip(mqtts, ports, strict=True)
        ]

    def wait(cond: Callable[[], bool], what: str, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not within {limit_s:g} s")
            time.sleep(0.05)

    procs = start()  # creates the sessions (every partition's), so the broker queues for them
    try:
        wait(lambda: all(ready(p) for p in ports), "collectors ready", 120)
    finally:
        stop_all(procs)
    host, port = parse_mqtt_url(urls[0])
    for site in SITES:
        publish(host, port, payloads[site], site=site, gateway=f"gw-{site}")
    procs = start()
    try:
        wait(lambda: any(ready(p) for p in ports), "a collector ready", 120)
        start_s, before = time.perf_counter(), count_rows(db_url)
        wait(lambda: count_rows(db_url) >= total, "the backlog drained", 600)
        elapsed = time.perf_counter() - start_s
    finally:
        stop_all(procs)
    if count_rows(db_url) != total:
        raise RuntimeError("committed rows differ from published rows")
    return (total - before) / elapsed


def cluster_figures(db_url: str, batches: int, records: int) -> dict[str, float]:
    """rows/s of one collector on one Mosquitto and of two on a 3-node NATS cluster."""
    t0 = int(time.time() * 1000)
    half = batches // 2
    payloads = {s: [encode(b) for b in make_batches(half, records, t0, f"gw-{s}")] for s in SITES}
    total = half * records * len(SITES)
    out = {}
    broker = PrivateBroker(Path(tempfile.mkdtemp(prefix="lifeline-bench-mqtt-")))
    broker.start()
    try:
        out["one_collector_mosquitto_rows_per_s"] = run_processes(
            db_url, [broker.url], 1, payloads, total
        )
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, batch_keys")
    workdir = Path(tempfile.mkdtemp(prefix="lifeline-bench-nats-"))
    try:
        with nats_cluster(workdir) as nodes:
            out["two_collectors_nats_cluster_rows_per_s"] = run_processes(
                db_url, [n.url for n in nodes], 2, payloads, total
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["cluster_rows"] = total
    return out


def main() -> int:
    """Run the benchmark and print a table, then one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, default=3000, help="MQTT messages (default 3000)")
    ap.add_argument("--records", type=int, default=100, help="readings per message (default 100)")
    ap.add_argument("--batch-max", type=int, default=200, help="messages per collector transaction")
    ap.add_argument("--rounds", type=int, default=5, help="ingest + COPY rounds (median ratio)")
    ap.add_argument(
        "--cluster-batches",
        type=int,
        default=4000,
        help="messages of the collector-process runs (one on Mosquitto, two on a NATS cluster;"
        " default 4000, 0 to skip)",
    )
    args = ap.parse_args()

    admin = os.environ.get("LIFELINE_BENCH_DB_URL", DEFAULT_DB)
    name = f"lifeline_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{admin.rsplit('/', 1)[0]}/{name}"
    broker = PrivateBroker(Path(tempfile.mkdtemp(prefix="lifeline-bench-mqtt-")))
    broker.start()
    try:
        # Only the encoded payloads are kept: the collector shares this process, and 300 000
        # live Record objects of ours would make its garbage collections slower than its own.
        t0 = int(time.time() * 1000)
        payloads = [encode(b) for b in make_batches(args.batches, args.records, t0)]
        total = args.batches * args.records
        rounds = []
        for _ in range(args.rounds):
            ingest_s, ingest_cpu = run_ingest(db_url, broker, payloads, total, args.batch_max)
            copy_s = run_copy(db_url, payloads, args.batch_max * args.records)
            rounds.append((ingest_s, ingest_cpu, copy_s))
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("TRUNCATE readings, batch_keys")  # the next round starts afresh
        cluster = (
            cluster_figures(db_url, args.cluster_batches, args.records)
            if args.cluster_batches
            else {}
        )
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ratios = [copy_s / ingest_s for ingest_s, _, copy_s in rounds]
    ratio = statistics.median(ratios)
    ingest_s = statistics.median(r[0] for r in rounds)
    ingest_cpu = statistics.median(r[1] for r in rounds)
    copy_s = statistics.median(r[2] for r in rounds)
    rows_per_s = total / ingest_s
    copy_rows_per_s = total / copy_s
    print(f"{'measure':<42}{'rows':>10}{'seconds':>10}{'rows/s':>12}")
    for label, secs in (
        ("MQTT batches -> committed rows (collector)", ingest_s),
        ("plain binary COPY, same rows, same table", copy_s),
    ):
        print(f"{label:<42}{total:>10}{secs:>10.2f}{total / secs:>12.0f}")
    print(f"ratio per round: {' '.join(f'{r:.2f}' for r in ratios)}")
    print(
        f"ratio {ratio:.2f}, median of {len(ratios)} rounds (target >= 0.7)."
        " Shared machines are noisy: compare ratios, not rates."
    )
    if cluster:
        print(f"{'collector processes, MQTT 3.1.1':<42}{'rows':>10}{'':>10}{'rows/s':>12}")
        for label, key in (
            ("one collector, one Mosquitto", "one_collector_mosquitto_rows_per_s"),
            ("two collectors (partitions), 3-node NATS", "two_collectors_nats_cluster_rows_per_s"),
        ):
            print(f"{label:<42}{cluster['cluster_rows']:>10}{'':>10}{cluster[key]:>12.0f}")
    print(
        json.dumps(
            {
                **{k: round(v) for k, v in cluster.items()},
                "rows_per_s": round(rows_per_s),
                "copy_rows_per_s": round(copy_rows_per_s),
                "ratio": round(ratio, 3),
                "ratios": [round(r, 3) for r in ratios],
                "collector_cpu_us_per_row": round(ingest_cpu / total * 1e6, 2),
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
