"""Ingest against the real broker: hostile payloads, persistent sessions, commands."""

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lifeline.collector.ingest import Ingest, IngestConfig, classify
from lifeline.collector.models import Rejected
from lifeline.collector.store import Store, open_store
from lifeline.collector.store.sqlite import SqliteStore
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    Command,
    DataBatch,
    Kind,
    Message,
    Record,
    Severity,
    decode,
    encode,
    subscription,
    topic,
)
from tests.services import wait_until

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/ingest.db")
    s.migrate()
    yield s
    s.close()


def start_ingest(store: Store, mqtt_url: str, root: str, client_id: str) -> Ingest:
    ing = Ingest(store, IngestConfig(mqtt_url=mqtt_url, root=root, client_id=client_id))
    ing.start()
    assert ing.wait_ready(10)
    return ing


def publish_all(client: mqtt.Client, items: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(t, p, qos=1) for t, p in items]
    for info in infos:
        info.wait_for_publish(10)


def batch(gw: str, seq: int, n: int = 5) -> bytes:
    recs = tuple(Record("dev", f"p{i}", T0 + seq * 1000 + i, float(seq)) for i in range(n))
    return encode(DataBatch(gw, "s", seq, T0, recs, epoch="e1"))


# Structured junk: msgpack maps that look like envelopes but break the contract somewhere.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
    st.binary(max_size=8),
)  # fmt: skip
_envelopes = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 2, "1"]), "k": st.sampled_from(["data", "alarm", "x"])},
    optional={
        "g": st.sampled_from(["gw-h", "", "a/b", 7]),
        "s": _scalars,
        "q": _scalars,
        "t": _scalars,
        "b": st.one_of(_scalars, st.lists(st.lists(_scalars, max_size=7), max_size=3)),
        "zz": _scalars,
    },
).map(lambda d: msgpack.packb(d, use_bin_type=True))
hostile = st.one_of(st.binary(max_size=64), _envelopes)


@settings(
    max_examples=1,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # one fresh example; shrinking 1000-item lists would take minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(payloads=st.lists(hostile, min_size=1000, max_size=1000))
def test_hostile_payloads_go_to_dead_letters_and_ingest_continues(
    payloads: list[bytes], tmp_path: Path, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    t = topic("site", "gw-h", Kind.DATA, root=topic_root)
    assert all(isinstance(classify(t, p, topic_root, 0), Rejected) for p in payloads)
    store = open_store(f"sqlite:///{tmp_path}/hostile-{uuid.uuid4().hex[:8]}.db")
    store.migrate()
    ing = start_ingest(store, mqtt_url, topic_root, f"c-{uuid.uuid4().hex[:8]}")
    try:
        items = [(t, p) for p in payloads]
        # Good batches interleaved: the stream must go on around the junk.
        for seq in range(1, 21):
            items.insert(seq * 45, (t, batch("gw-h", seq)))
        publish_all(publisher, items)
        wait_until(lambda: store.count_dead_letters() == 1000 and store.count_readings() == 100)
        stored = {d.payload for d in store.dead_letters(limit=2000)}
        assert stored == set(payloads)
    finally:
        ing.stop()  # joins the writer, so its counters below are final
        store.close()
    assert ing.stats.dead_letters == 1000


def test_persistent_session_keeps_what_arrives_while_the_collector_is_away(
    store: Store, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    start_ingest(store, mqtt_url, topic_root, client_id).stop()
    t = topic("site", "gw-p", Kind.DATA, root=topic_root)
    # More than Mosquitto's default max_queued_messages (1000) while nobody is connected.
    publish_all(publisher, [(t, batch("gw-p", seq, 2)) for seq in range(1, 3001)])
    ing = start_ingest(store, mqtt_url, topic_root, client_id)
    try:
        wait_until(lambda: store.count_readings() == 6000, timeout=60)
    finally:
        ing.stop()
    assert ing.stats.duplicates == 0


def test_commands_go_out_on_the_gateway_cmd_topic(
    store: Store, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    got: list[bytes] = []
    arrived, subscribed = threading.Event(), threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        got.append(bytes(m.payload))
        arrived.set()

    publisher.on_message = on_message
    publisher.on_subscribe = lambda *_: subscribed.set()
    publisher.subscribe(subscription(Kind.CMD, topic_root), qos=1)
    assert subscribed.wait(10)
    ing = start_ingest(store, mqtt_url, topic_root, f"c-{uuid.uuid4().hex[:8]}")
    try:
        command_id = ing.send_command("site", "gw-c", "reload", {"force": True})
        assert arrived.wait(10)
    finally:
        ing.stop()
    cmd = decode(got[0])
    assert isinstance(cmd, Command)
    assert (cmd.gateway, cmd.command_id, cmd.name, cmd.args) == (
        "gw-c",
        command_id,
        "reload",
        {"force": True},
    )


def test_a_retained_birth_is_answered_with_a_rebirth_command(
    store: Store, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    # The broker's copy of a birth can be hours old: the collector asks for a fresh one.
    got: list[bytes] = []
    arrived, subscribed = threading.Event(), threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        got.append(bytes(m.payload))
        arrived.set()

    publisher.on_message = on_message
    publisher.on_subscribe = lambda *_: subscribed.set()
    publisher.subscribe(subscription(Kind.CMD, topic_root), qos=1)
    assert subscribed.wait(10)
    old = Birth("gw-r", "s-old", 0, T0, "1.0", "h", epoch="e1")
    t = topic("site", "gw-r", Kind.BIRTH, root=topic_root)
    publisher.publish(t, encode(old), qos=1, retain=True).wait_for_publish(10)
    ing = start_ingest(store, mqtt_url, topic_root, f"c-{uuid.uuid4().hex[:8]}")
    try:
        assert arrived.wait(10)
        # At least one: a collector that resubscribes (its first-connect session check
        # reconnects once) is sent the retained birth again and answers it again.
        wait_until(lambda: ing.stats.rebirths_requested >= 1)
        wait_until(lambda: bool(store.gateways()))
    finally:
        ing.stop()
        publisher.publish(t, b"", qos=1, retain=True).wait_for_publish(10)  # clear it
    cmd = decode(got[0])
    assert isinstance(cmd, Command)
    assert (cmd.gateway, cmd.name) == ("gw-r", "rebirth")


def test_an_alarm_id_of_another_gateway_is_a_dead_letter_and_a_conflict_event(
    store: Store,
) -> None:
    # gw-x may not flip gw-a's alarm: in an alarm batch, or in its birth's alarm picture.
    ev = AlarmEvent("gw-a:e1:3", "mh-01", "tilt", "hi", Severity.HIGH, AlarmState.NORMAL, T0)
    forged: list[Message] = [
        AlarmBatch("gw-x", "s", 1, T0, (ev,), epoch="e1"),
        Birth("gw-x", "s", 0, T0, "1", "h", (), (ev,), 0, epoch="e1"),
    ]
    items = []
    for msg in forged:
        item = classify(topic("site", "gw-x", msg.kind, root="r"), encode(msg), "r", T0)
        assert isinstance(item, Rejected)
        assert item.conflict_of == "gw-x"
        assert "alarm id 'gw-a:e1:3' is not one of gateway 'gw-x'" in item.reason
        items.append(item)
    result = store.write(items, T0)
    assert (result.dead_letters, result.gateway_conflicts) == (2, 2)
    store.pump_events(T0)
    conflicts = [e for e in store.events(0) if e.type == "gateway.conflict"]
    assert [e.subject for e in conflicts] == ["gw-x", "gw-x"]
    assert store.alarms() == []


class BuggyStore(SqliteStore):
    """A real SQLite store with a bug on the alarm path (what a bad refactoring leaves)."""

    def _alarm_event(self, *args: Any, **kwargs: Any) -> int:
        raise KeyError("a bug on the alarm path")


def test_a_bug_on_the_write_path_stops_the_writer_visibly_and_is_not_retried_nor_dead_lettered(
    tmp_path: Path, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    # Before, the store turned the bug into a StoreDataError: ingest retried the healthy alarm
    # batch three times, dead-lettered it as poison and went on doing so with every alarm.
    path = tmp_path / "bug.db"
    buggy = BuggyStore(str(path))
    buggy.migrate()
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    ev = AlarmEvent("gw-b:e1:1", "gas-1", "gas", "hi", Severity.HIGH, AlarmState.ACTIVE_UNACKED,
                    T0, 30.0, 20, "gas high")  # fmt: skip
    alarm = encode(AlarmBatch("gw-b", "s", 1, T0, (ev,), epoch="e1"))
    ing = start_ingest(buggy, mqtt_url, topic_root, client_id)
    try:
        publish_all(publisher, [(topic("site", "gw-b", Kind.ALARM, root=topic_root), alarm)])
        wait_until(lambda: bool(ing.problems()))
        assert ing.problems() == ["ingest writer 0 stopped: KeyError: 'a bug on the alarm path'"]
        assert (ing.stats.store_errors, ing.stats.poisoned, ing.stats.received) == (0, 0, 0)
        assert buggy.count_dead_letters() == 0
    finally:
        ing.stop()
        buggy.close()
    # Never acknowledged: the fixed collector gets the alarm from the broker.
    fixed = open_store(f"sqlite:///{path}")
    again = start_ingest(fixed, mqtt_url, topic_root, client_id)
    try:
        wait_until(lambda: again.stats.received == 1)
        assert [a.alarm_id for a in fixed.alarms()] == ["gw-b:e1:1"]
    finally:
        again.stop()
        fixed.close()
