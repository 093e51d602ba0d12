"""MQTT 3.1.1 and 5 on both sides, against a broker that speaks only 3.1.1 (a NATS node) and
Mosquitto: a refused protocol is named with the CONNACK reason and how to switch, and the
other version works end to end with PUBACK only after the commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.collector.ingest import Ingest, IngestConfig, parse_mqtt_url
from lifeline.collector.store import Store, open_store
from lifeline.edge.buffer import Outbox
from lifeline.edge.config import MqttConfig
from lifeline.edge.uplink import Uplink
from lifeline.nats import NatsNode, nats_node
from lifeline.wire import (
    Birth,
    Command,
    CommandReply,
    DataBatch,
    Kind,
    Quality,
    Record,
    encode,
    topic,
)
from tests.services import free_port, wait_until

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsNode]:
    with nats_node(tmp_path_factory.mktemp("nats")) as node:
        yield node


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/p.db")
    s.migrate()
    yield s
    s.close()


def rows(store: Store) -> int:
    return len(store.readings(device="dev", limit=10_000))


def publish_batches(url: str, root: str, n: int) -> None:
    host, port = parse_mqtt_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, f"gw-{uuid.uuid4().hex[:8]}")
    c.connect(host, port)
    c.loop_start()
    t = topic("site", "gw-p", Kind.DATA, root=root)
    infos = []
    for seq in range(1, n + 1):
        recs = (Record("dev", "p", T0 + seq, float(seq)),)
        infos.append(c.publish(t, encode(DataBatch("gw-p", "s", seq, T0, recs, epoch="e")), 1))
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_collector_refused_mqtt5_names_the_connack_and_how_to_switch(
    store: Store, nats: NatsNode
) -> None:
    ing = Ingest(store, IngestConfig(mqtt_url=nats.url, client_id="c-v5"))
    ing.start()
    try:
        reasons = wait_until(lambda: [p for p in ing.problems() if "CONNACK" in p])
        assert not ing.ready
    finally:
        ing.stop()
    assert (
        "CONNACK Unsupported protocol version (0x84; MQTT 5, client id c-v5): the broker does"
        " not speak MQTT 5; switch with --mqtt-protocol 3.1.1"
    ) in reasons[0]


@pytest.mark.parametrize("where", ["nats", "mosquitto"])
def test_collector_speaks_mqtt311_and_keeps_its_session(
    store: Store, nats: NatsNode, mqtt_url: str, topic_root: str, where: str
) -> None:
    url = nats.url if where == "nats" else mqtt_url
    root = topic_root.replace(".", "-")
    cfg = IngestConfig(mqtt_url=url, root=root, client_id=f"c-{uuid.uuid4().hex[:8]}")
    cfg.protocol = "3.1.1"
    ing = Ingest(store, cfg)
    ing.start()
    try:
        assert ing.wait_ready(20)
        publish_batches(url, root, 20)
        wait_until(lambda: rows(store) == 20)
    finally:
        ing.stop()
    # Published while the collector is away: kept in its session (clean session 0).
    publish_batches(url, root, 40)
    ing = Ingest(store, cfg)
    ing.start()
    try:
        assert ing.wait_ready(20)
        wait_until(lambda: rows(store) == 40)
        assert ing.health.sessions_lost == 0
        assert ing.problems() == []
    finally:
        ing.stop()
    assert ing.stats.duplicates >= 20  # seqs 1-20 again (and any unacknowledged at stop)


async def _no_commands(cmd: Command) -> CommandReply:
    return CommandReply("gw", "s", 0, T0, command_id=cmd.command_id, ok=True)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_gateway_on_a_311_only_broker(
    tmp_path: Path, nats: NatsNode, topic_root: str, protocol: str
) -> None:
    """MQTT 5 is refused with the CONNACK reason and how to switch; 3.1.1 drains the buffer."""
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    box.add(("d1", "p", T0 + i, float(i), Quality.GOOD) for i in range(50))
    box.flush(None, 0)
    cfg = MqttConfig(
        url=nats.url,
        root=topic_root.replace(".", "-"),
        protocol=protocol,  # type: ignore[arg-type]
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )

    def birth() -> Birth:
        return Birth("gw", box.session, 0, T0)

    uplink = Uplink(cfg, "site", "gw", box.session, box, birth, _no_commands)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        if protocol == "5":
            await _until(lambda: "CONNACK" in uplink.last_error)
        else:
            await _until(lambda: box.backlog == 0 and box.frozen_count() == 0)
        await uplink.close()
        await task

    asyncio.run(main())
    box.close()
    if protocol == "5":
        assert uplink.connects == 0
        assert (
            "CONNACK Unsupported protocol version (0x84; MQTT 5, client id lifeline-edge-gw):"
            ' the broker does not speak MQTT 5; set mqtt.protocol: "3.1.1" in the gateway config'
        ) in uplink.last_error
    else:
        assert uplink.connects == 1
        assert uplink.acked >= 1


async def _until(cond: Callable[[], bool], limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_gateway_fails_over_to_the_next_broker_url_at_once(
    tmp_path: Path, mqtt_url: str, topic_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead first URL costs one refused connection, not a backoff: the next URL is tried."""
    dead = f"mqtt://127.0.0.1:{free_port()}"
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    box.add(("d1", "p", T0 + i, float(i), Quality.GOOD) for i in range(50))
    box.flush(None, 0)
    # A backoff of 30 s after a full round would fail the time limit below.
    cfg = MqttConfig(
        url=dead, failover_urls=[mqtt_url], root=topic_root, reconnect_min_s=30, reconnect_max_s=60
    )

    def birth() -> Birth:
        return Birth("gw", box.session, 0, T0)

    uplink = Uplink(cfg, "site", "gw", box.session, box, birth, _no_commands)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        await _until(lambda: box.backlog == 0 and box.frozen_count() == 0, limit_s=20)
        await uplink.close()
        await task

    started = time.monotonic()
    asyncio.run(main())
    box.close()
    assert time.monotonic() - started < 10
    assert uplink.url == mqtt_url
    assert f"broker {dead} unreachable" in uplink.last_error
    assert any(f"; trying {mqtt_url} next" in r.getMessage() for r in caplog.records)


def test_collector_fails_over_to_the_next_broker_url(
    store: Store, mqtt_url: str, topic_root: str
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    cfg = IngestConfig(
        mqtt_url=f"{dead},{mqtt_url}", root=topic_root, client_id=f"c-{uuid.uuid4().hex[:8]}"
    )
    ing = Ingest(store, cfg)
    ing.start()
    try:
        assert ing.wait_ready(10)
        assert ing.broker_url == mqtt_url
        publish_batches(mqtt_url, topic_root, 5)
        wait_until(lambda: rows(store) == 5)
    finally:
        ing.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_collector_is_ready_only_after_its_session_probe(
    store: Store, mqtt_url: str, topic_root: str, protocol: str
) -> None:
    """A fresh client id finds no session at its first connect, which proves nothing: ingest
    drops its connection once and reports ready only when the reconnect found the session."""
    cfg = IngestConfig(mqtt_url=mqtt_url, root=topic_root, client_id=f"c-{uuid.uuid4().hex[:8]}")
    cfg.protocol = protocol
    ing = Ingest(store, cfg)
    ing.start()
    try:
        assert ing.wait_ready(20)
        assert ing.health.session_probe == "honoured"
        assert ing.health.connects == 2  # the first connect, and the reconnect that checked
        assert ing.problems() == []
    finally:
        ing.stop()
