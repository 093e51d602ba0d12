"""Concurrent ingest writers on PostgreSQL: acks and state changes keep arrival order."""

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest

from lifeline.collector.ingest import Ingest, IngestConfig
from lifeline.collector.models import Accepted, Incoming, WriteResult
from lifeline.collector.store import Store, open_store
from lifeline.wire import Birth, Kind, encode, topic
from tests.integration.test_collector_ingest import batch
from tests.services import wait_until

pytestmark = pytest.mark.integration


class GatedStore:
    """The real PostgreSQL store, except that its first write waits for `gate`."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.committed: list[list[str]] = []  # message kinds of each committed batch, in order

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            assert self.gate.wait(30), "the test never opened the gate"
        result = self.inner.write(items, now_ms)
        kinds = [str(i.message.kind) for i in items if isinstance(i, Accepted)]
        with self.lock:
            self.committed.append(kinds)
        return result


@pytest.fixture
def gated(pg_url: str) -> Iterator[GatedStore]:
    store = open_store(pg_url)
    store.migrate()
    assert store.write_concurrency == 2
    yield GatedStore(store)
    store.close()


def started(store: GatedStore, mqtt_url: str, root: str, client_id: str) -> Ingest:
    cfg = IngestConfig(mqtt_url=mqtt_url, root=root, client_id=client_id, batch_wait_s=0)
    ing = Ingest(cast(Store, store), cfg)
    ing.start()
    assert ing.wait_ready(10)
    return ing


def send(client: mqtt.Client, t: str, payload: bytes) -> None:
    client.publish(t, payload, qos=1).wait_for_publish(10)


def test_a_later_batch_commits_first_but_is_acknowledged_after_the_earlier_one(
    gated: GatedStore, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    t = topic("site", "gw-o", Kind.DATA, root=topic_root)
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    ing = started(gated, mqtt_url, topic_root, client_id)
    try:
        send(publisher, t, batch("gw-o", 1))
        wait_until(lambda: gated.calls == 1)  # the first writer holds seq 1 at the gate
        send(publisher, t, batch("gw-o", 2))
        wait_until(lambda: len(gated.committed) == 1)  # the second writer committed seq 2
        assert gated.inner.count_readings() == 5
        assert ing.stats.received == 0, "seq 2 was acknowledged before seq 1"
        gated.gate.set()
        wait_until(lambda: ing.stats.received == 2)
    finally:
        gated.gate.set()
        ing.stop()
    # Everything was acknowledged: a new run of the same session gets no redelivery ahead of
    # a fresh message (the broker sends queued messages first).
    again = started(gated, mqtt_url, topic_root, client_id)
    try:
        send(publisher, t, batch("gw-o", 3))
        wait_until(lambda: again.stats.received >= 1)
        assert (again.stats.received, again.stats.duplicates) == (1, 0)
    finally:
        again.stop()
    assert gated.inner.count_readings() == 15


def test_a_state_change_waits_for_every_earlier_batch(
    gated: GatedStore, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    ing = started(gated, mqtt_url, topic_root, f"c-{uuid.uuid4().hex[:8]}")
    try:
        send(publisher, topic("site", "gw-o", Kind.DATA, root=topic_root), batch("gw-o", 1))
        wait_until(lambda: gated.calls == 1)
        birth = Birth("gw-o", "s2", 0, 1_800_000_000_000, software="t", config_hash="h")
        send(publisher, topic("site", "gw-o", Kind.BIRTH, root=topic_root), encode(birth))
        # The second writer has the birth; it must not write it while seq 1 is uncommitted.
        assert not threading.Event().wait(0.5)
        assert gated.calls == 1
        gated.gate.set()
        wait_until(lambda: len(gated.committed) == 2)
        assert gated.committed == [["data"], ["birth"]]
    finally:
        gated.gate.set()
        ing.stop()
