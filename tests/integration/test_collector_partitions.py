"""Two collectors split the sites by partition leases in PostgreSQL, on a real broker, with
no shared subscription: each partition is one session; when a collector goes, the other takes
its partitions over and everything published meanwhile is stored exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.collector.ingest import IngestConfig, parse_mqtt_url
from lifeline.collector.partitions import PartitionedIngest, parse_partitions
from lifeline.collector.store import Store, open_store
from lifeline.wire import DataBatch, Kind, Record, encode, topic
from tests.services import wait_until

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000
SITES = {"xihu": "gw-n", "binjiang": "gw-s"}  # site -> its gateway
PARTS = "north=xihu,gongshu;south=binjiang"


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[Store, Store]]:
    a, b = open_store(pg_url), open_store(pg_url)
    a.migrate()
    yield a, b
    a.close()
    b.close()


def collector(store: Store, pg_url: str, url: str, root: str, group: str) -> PartitionedIngest:
    cfg = IngestConfig(mqtt_url=url, root=root, client_id=group)
    return PartitionedIngest(store, cfg, parse_partitions(PARTS), pg_url, check_s=0.2)


def publish(url: str, root: str, batches: int, done: threading.Event) -> None:
    """Both gateways: `batches` data batches each, QoS 1, paced over a few seconds."""
    host, port = parse_mqtt_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, f"gws-{uuid.uuid4().hex[:8]}")
    c.connect(host, port)
    c.loop_start()
    infos = []
    for seq in range(1, batches + 1):
        for site, gw in SITES.items():
            recs = tuple(Record(f"{gw}-d", f"p{i}", T0 + seq * 10 + i, 1.0) for i in range(5))
            payload = encode(DataBatch(gw, "s", seq, T0, recs, epoch="e"))
            infos.append(c.publish(topic(site, gw, Kind.DATA, root=root), payload, 1))
        if seq % 20 == 0:
            time.sleep(0.1)
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()
    done.set()


def counts(pg_url: str) -> tuple[int, int]:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (device, point, ts)) FROM readings"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_two_collectors_split_the_partitions_and_one_takes_over_when_the_other_goes(
    stores: tuple[Store, Store], pg_url: str, mqtt_url: str, topic_root: str
) -> None:
    group = f"c-{uuid.uuid4().hex[:6]}"  # the same client id: the partitions' sessions
    a = collector(stores[0], pg_url, mqtt_url, topic_root, group)
    b = collector(stores[1], pg_url, mqtt_url, topic_root, group)
    a.start()
    try:
        wait_until(lambda: a.held == ["north", "south"] and a.ready)
        b.start()
        try:
            # A alone took both; with B alive each holds one (A gives one back, B takes it).
            wait_until(lambda: len(a.held) == 1 and len(b.held) == 1 and a.ready and b.ready)
            assert sorted(a.held + b.held) == ["north", "south"]
            done = threading.Event()
            pub = threading.Thread(target=publish, args=(mqtt_url, topic_root, 300, done))
            pub.start()
            wait_until(lambda: counts(pg_url)[0] > 500)
            a.stop()  # mid-stream: what A's session holds goes to B with the lease
            wait_until(lambda: b.held == ["north", "south"])
            pub.join(60)
            assert done.is_set()
            wait_until(lambda: counts(pg_url)[0] >= 300 * 2 * 5, timeout=60)
            assert b.problems() == []
        finally:
            b.stop()
    finally:
        a.stop()
    assert counts(pg_url) == (3000, 3000)
    assert a.stats.readings > 0  # both did part of the work
    assert b.stats.readings > 0
