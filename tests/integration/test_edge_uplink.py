"""The MQTT uplink on a real broker: lanes, PUBACK-before-delete, same seq on resend, commands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.edge.buffer import Outbox
from lifeline.edge.config import MqttConfig
from lifeline.edge.uplink import Uplink
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    Command,
    CommandReply,
    DataBatch,
    Death,
    Kind,
    Message,
    Quality,
    Severity,
    decode,
    encode,
    subscription,
    topic,
)

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


class Listener:
    """A plain paho subscriber that records every decoded message in arrival order."""

    def __init__(self, url: str, root: str) -> None:
        self.messages: list[Message] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        parts = urlsplit(url)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.subscribe(subscription(None, root=root), qos=1)
        self.client.loop_start()
        time.sleep(0.2)  # let the SUBACK arrive before anything is published

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/cmd"):  # the tests publish garbage there on purpose
            self.messages.append(decode(bytes(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def listening(url: str, root: str) -> Iterator[Listener]:
    listener = Listener(url, root)
    try:
        yield listener
    finally:
        listener.close()


def make_uplink(
    url: str, root: str, box: Outbox, on_command: Callable[[Command], Awaitable[CommandReply]]
) -> Uplink:
    cfg = MqttConfig(url=url, root=root, inflight=4, reconnect_min_s=0.2, reconnect_max_s=1.0)

    def birth() -> Birth:
        return Birth("gw", box.session, 0, T0, software="test", config_hash="h")

    return Uplink(cfg, "site", "gw", box.session, box, birth, on_command)


async def no_commands(cmd: Command) -> CommandReply:
    return CommandReply("gw", "s", 0, T0, command_id=cmd.command_id, ok=True)


async def until(cond: Callable[[], bool], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def drain(url: str, root: str, box: Outbox) -> None:
    """Run an uplink until every buffered reading and frozen batch is acknowledged, then close."""
    uplink = make_uplink(url, root, box, no_commands)
    task = asyncio.create_task(uplink.run())
    await until(lambda: box.backlog == 0 and box.frozen_count() == 0)
    await uplink.close()
    await task


def alarm_event() -> AlarmEvent:
    return AlarmEvent("gw:1", "d1", "gas", "hihi", Severity.CRITICAL, AlarmState.ACTIVE_UNACKED, T0)


def fill(box: Outbox, n: int) -> None:
    box.add(("d1", "p", T0 + i, float(i), Quality.GOOD) for i in range(n))
    box.flush(None, 0)


def test_alarm_overtakes_backlog_and_all_arrive_once(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    # A 2 MB buffer freezes the backlog two batches at a time (an eighth of it), so refills
    # keep crossing into a newly frozen window: no batch may go out twice at a crossing.
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", max_mb=2, batch_records=500)
    fill(box, 20_000)
    box.add_alarm_events([alarm_event()])

    with listening(mqtt_url, topic_root) as sub:
        asyncio.run(drain(mqtt_url, topic_root, box))
        time.sleep(0.3)
    durable = [m for m in sub.messages if m.kind in (Kind.DATA, Kind.ALARM)]
    assert isinstance(durable[0], AlarmBatch)
    seqs = [m.seq for m in durable]
    assert len(set(seqs)) == len(seqs) == 41
    values = [r.value for m in durable if isinstance(m, DataBatch) for r in m.records]
    assert values == [float(i) for i in range(20_000)]  # once each, in order
    assert all(r.historical for m in durable if isinstance(m, DataBatch) for r in m.records)
    kinds = [m.kind for m in sub.messages]
    assert kinds[0] is Kind.BIRTH
    assert kinds[-1] is Kind.DEATH


async def _silent_broker(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, got: list[int]
) -> None:
    """Accepts an MQTT connection and never acknowledges a publish."""
    await reader.read(1024)  # CONNECT
    writer.write(b"\x20\x03\x00\x00\x00")  # MQTT 5 CONNACK: accepted, no properties
    await writer.drain()
    while data := await reader.read(65536):
        got.append(len(data))


def test_rows_leave_only_after_puback_and_resend_keeps_seq(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", batch_records=100)
    fill(box, 1000)

    async def against_silent_broker() -> None:
        got: list[int] = []
        server = await asyncio.start_server(lambda r, w: _silent_broker(r, w, got), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        uplink = make_uplink(f"mqtt://127.0.0.1:{port}", topic_root, box, no_commands)
        task = asyncio.create_task(uplink.run())
        await until(lambda: uplink.published == 4 and sum(got) > 4 * 100 * 20)
        await asyncio.sleep(0.3)
        assert uplink.published == 4  # the window is full: nothing more goes out
        assert box.frozen_count() == 10  # all 1000 rows (frozen ahead) are still buffered
        await uplink.close()
        await task
        server.close()

    asyncio.run(against_silent_broker())
    frozen_before = {b.seq: b.payload for b in box.ready(set(), 100, T0)}

    with listening(mqtt_url, topic_root) as sub:
        asyncio.run(drain(mqtt_url, topic_root, box))
        time.sleep(0.3)
    data = {m.seq: m for m in sub.messages if isinstance(m, DataBatch)}
    assert sorted(data) == list(range(1, 11))
    for seq, payload in frozen_before.items():
        assert encode(data[seq]) == payload  # resent with the same seq and the same content


def test_commands_get_replies_and_malformed_ones_do_not_crash(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")

    async def handler(cmd: Command) -> CommandReply:
        if cmd.name == "boom":
            raise RuntimeError("handler exploded")
        if cmd.name == "verbose":  # an error over the wire's 1024 characters, e.g. a long list
            raise ValueError("bad key; " * 200)
        return CommandReply("gw", "s1", 0, T0, command_id=cmd.command_id, ok=True, result={"n": 1})

    cmd_topic = topic("site", "gw", Kind.CMD, root=topic_root)

    async def main(sub: Listener) -> None:
        uplink = make_uplink(mqtt_url, topic_root, box, handler)
        task = asyncio.create_task(uplink.run())
        await until(lambda: uplink.connected)
        await asyncio.sleep(0.2)
        for payload in (
            b"\x00garbage",
            encode(Command("gw", "x", 0, T0, command_id="c1", name="ok")),
            encode(Command("gw", "x", 0, T0, command_id="c2", name="boom")),
            # Issue 17: a note over the wire's 256 characters went unanswered (reply pending).
            encode(
                Command("gw", "x", 0, T0, command_id="c3", name="ack", args={"note": "n" * 300})
            ),
            encode(Command("gw", "x", 0, T0, command_id="c4", name="verbose")),
        ):
            sub.client.publish(cmd_topic, payload, qos=1)
        await until(lambda: sum(isinstance(m, CommandReply) for m in sub.messages) == 5)
        await uplink.close()
        await task

    with listening(mqtt_url, topic_root) as sub:
        asyncio.run(main(sub))
    replies = [m for m in sub.messages if isinstance(m, CommandReply)]
    by_id = {r.command_id: r for r in replies}
    assert not by_id[""].ok
    assert "msgpack" in by_id[""].error
    assert by_id["c1"].ok
    assert by_id["c1"].result == {"n": 1}
    assert not by_id["c2"].ok
    assert "handler exploded" in by_id["c2"].error
    assert (
        by_id["c3"].error
        == "cannot decode the command: command args[note] is 300 characters, over 256"
    )
    assert len(by_id["c4"].error) == 1024
    assert by_id["c4"].error.endswith("…")


def test_reconnects_after_broker_restart(tmp_path: Path, topic_root: str) -> None:
    from tests.services import start_mosquitto

    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    with start_mosquitto() as broker:

        async def main() -> None:
            uplink = make_uplink(broker.url, topic_root, box, no_commands)
            task = asyncio.create_task(uplink.run())
            await until(lambda: uplink.connected)
            await asyncio.to_thread(broker.stop)
            await until(lambda: not uplink.connected)
            fill(box, 100)  # sampled during the outage
            await asyncio.to_thread(broker.start)
            await until(lambda: uplink.connects == 2 and box.backlog == 0)
            await until(lambda: box.frozen_count() == 0)
            await uplink.close()
            await task

        asyncio.run(main())


def test_a_broker_restart_leaves_the_old_connections_will_matched_to_it_not_to_the_new_birth(
    tmp_path: Path, topic_root: str
) -> None:
    """Mosquitto publishes its clients' wills when it shuts down, and keeps them retained: the
    reconnected gateway's new birth must not be ended by its previous connection's will."""
    from tests.services import start_mosquitto

    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    with start_mosquitto() as broker:

        async def main() -> None:
            uplink = make_uplink(broker.url, topic_root, box, no_commands)
            task = asyncio.create_task(uplink.run())
            await until(lambda: uplink.connected)
            await asyncio.to_thread(broker.stop)
            await until(lambda: not uplink.connected)
            await asyncio.to_thread(broker.start)
            await until(lambda: uplink.connects == 2)
            births = retained(broker.url, topic("site", "gw", Kind.BIRTH, root=topic_root))
            deaths = retained(broker.url, topic("site", "gw", Kind.DEATH, root=topic_root))
            await uplink.close()
            await task
            (birth,) = births
            (will,) = deaths
            assert isinstance(birth, Birth)
            assert isinstance(will, Death)
            assert (will.reason, will.session) == ("connection lost", birth.session)
            assert birth.bd_seq == will.bd_seq + 1  # Sparkplug's bdSeq: another connection

        asyncio.run(main())


def retained(url: str, topic_name: str) -> list[Message]:
    """What the broker keeps retained on `topic_name`, read by a fresh subscriber."""
    got: list[Message] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(decode(bytes(m.payload)))
    parts = urlsplit(url)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.subscribe(topic_name, qos=1)
    client.loop_start()
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    return got


def test_clean_close_sends_disconnect_so_the_retained_death_says_shutdown(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    """Issue 13 item 8: a clean stop published its death, then the broker published the will."""
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    death_topic = topic("site", "gw", Kind.DEATH, root=topic_root)

    async def main() -> None:
        uplink = make_uplink(mqtt_url, topic_root, box, no_commands)
        task = asyncio.create_task(uplink.run())
        await until(lambda: uplink.connected)
        await uplink.close("shutdown")
        await task

    with listening(mqtt_url, topic_root) as sub:
        asyncio.run(main())
        time.sleep(0.5)  # a will would be published now, when the broker sees the socket close
    deaths = [m for m in sub.messages if isinstance(m, Death)]
    assert [d.reason for d in deaths] == ["shutdown"]
    (kept,) = retained(mqtt_url, death_topic)
    assert isinstance(kept, Death)
    assert kept.reason == "shutdown"


async def _refusing_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal MQTT 5 broker: it refuses every publish on a data topic with PUBACK 0x87 (Not
    authorized), takes everything else, and never drops the connection."""

    async def packet() -> tuple[int, bytes]:
        head = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return head, await reader.readexactly(length)

    try:
        await packet()  # CONNECT
        writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: accepted, no properties
        while True:
            head, body = await packet()
            kind = head >> 4
            if kind == 3 and head & 0x06:  # PUBLISH, QoS 1
                size = int.from_bytes(body[:2], "big")
                name, pid = body[2 : 2 + size].decode(), body[2 + size : 4 + size]
                writer.write(b"\x40\x03" + pid + (b"\x87" if name.endswith("/data") else b"\x00"))
            elif kind == 8:  # SUBSCRIBE
                writer.write(b"\x90\x04" + body[:2] + b"\x00\x01")
            elif kind == 12:  # PINGREQ
                writer.write(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


def test_a_puback_error_never_removes_a_batch_and_does_not_loop(
    tmp_path: Path, topic_root: str
) -> None:
    """MQTT 5 PUBACK 0x87: the batch stays in the buffer, waits longer each time, and the
    connection is kept (on main the batch was deleted as if it had been delivered)."""
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", batch_records=500)
    fill(box, 2000)
    box.add_alarm_events([alarm_event()])

    async def against_refusing_broker() -> Uplink:
        server = await asyncio.start_server(_refusing_broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        uplink = make_uplink(f"mqtt://127.0.0.1:{port}", topic_root, box, no_commands)
        task = asyncio.create_task(uplink.run())
        await until(lambda: uplink.refused >= 4)
        await asyncio.sleep(3)  # refused batches wait 0.2, 0.4, 0.8 ... s: no tight loop
        await uplink.close()
        await task
        server.close()
        return uplink

    uplink = asyncio.run(against_refusing_broker())
    assert box.frozen_count() == 4  # all four data batches, not one removed
    assert box.backlog + sum(b.n for b in box.ready(set(), 100, T0)) == 2000
    assert uplink.refused < 30
    assert uplink.connects == 1  # a refused batch is no reason to reconnect
    assert uplink.acked >= 1  # the alarm batch went through
    assert "Not authorized (0x87)" in uplink.last_error
    box.close()


@pytest.mark.parametrize(("protocol", "code"), [("5", "0x87"), ("3.1.1", "0x87")])
def test_a_refused_connection_says_the_brokers_reason(
    tmp_path: Path, topic_root: str, protocol: Literal["5", "3.1.1"], code: str
) -> None:
    """Not "unreachable (); TimeoutError": the CONNACK reason, the protocol, the client id."""
    from tests.services import start_mosquitto

    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    with start_mosquitto("allow_anonymous false") as broker:
        cfg = MqttConfig(
            url=broker.url,
            root=topic_root,
            protocol=protocol,
            reconnect_min_s=0.2,
        )

        def birth() -> Birth:
            return Birth("gw", box.session, 0, T0)

        uplink = Uplink(cfg, "site", "gw", box.session, box, birth, no_commands)

        async def main() -> None:
            task = asyncio.create_task(uplink.run())
            await until(lambda: "CONNACK" in uplink.last_error)
            await uplink.close()
            await task

        asyncio.run(main())
    assert f"CONNACK Not authorized ({code}; MQTT {protocol}, client id lifeline-edge-gw)" in (
        uplink.last_error
    )
    assert uplink.connects == 0
    box.close()
