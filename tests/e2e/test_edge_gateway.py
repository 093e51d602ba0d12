"""The gateway as a separate process against firmware-sim and a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.edge.buffer import Outbox, views
from lifeline.firmware_sim.control import SimControl
from lifeline.wire import (
    AlarmBatch,
    Command,
    CommandReply,
    DataBatch,
    Kind,
    Message,
    Quality,
    decode,
    encode,
    subscription,
    topic,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SampleKey = tuple[str, str, int]  # device, point, sample ms
BACKLOG = 50_000


def wait_for(
    cond: Callable[[], bool], limit_s: float = 30.0, what: str = "condition", poll_s: float = 0.05
) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


@contextlib.contextmanager
def simulator(tmp: Path, devices: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """firmware-sim in its own process serving `devices` on one Modbus TCP port."""
    scenario = tmp / "scenario.yaml"
    server = {"name": "cab", "kind": "tcp", "port": 0, "devices": devices}
    scenario.write_text(yaml.safe_dump({"seed": 7, "servers": [server]}))
    endpoints = tmp / "endpoints.json"
    argv = [sys.executable, "-c", "from lifeline.firmware_sim.cli import app; app()", "run"]
    argv += ["--scenario", str(scenario), "--endpoints-file", str(endpoints)]
    with open(tmp / "sim.log", "ab") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(endpoints.exists, 30, "firmware-sim endpoints")
        yield json.loads(endpoints.read_text())
    finally:
        proc.terminate()
        proc.wait(10)


def gateway_config(
    tmp: Path, mqtt_url: str, root: str, port: int, devices: list[dict[str, Any]], **extra: Any
) -> Path:
    cfg = {
        "gateway": "gw-e2e",
        "site": "e2e",
        "mqtt": {
            "url": mqtt_url,
            "root": root,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "allow_anonymous_commands": True,  # the test broker: anonymous, on loopback
        },
        "buffer": {"path": str(tmp / "buffer.sqlite"), "flush_s": 0.05, "batch_records": 500},
        "health": {"offline_after": 3, "reprobe_min_s": 1, "reprobe_max_s": 2},
        "status_interval_s": 5,
        "buses": [{"type": "tcp", "host": "127.0.0.1", "port": port, "devices": devices}],
        **extra,
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "run",
        "--config",
        str(config),
    ]
    with open(log, "ab") as err:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)


class Subscriber:
    """A persistent-session QoS 1 subscriber that keeps every message (survives broker restarts)."""

    def __init__(self, url: str, root: str) -> None:
        self.messages: list[Message] = []
        self.raw: list[tuple[str, bytes]] = []
        self.root = root
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{os.getpid()}-{random.random()}",
            clean_session=False,
        )  # fmt: skip
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        parts = urlsplit(url)
        self._subscribed = False
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        wait_for(lambda: self._subscribed, 10, "subscription")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(subscription(None, root=self.root), qos=1)
        self._subscribed = True

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/cmd"):
            return
        payload = bytes(msg.payload)
        self.raw.append((msg.topic, payload))
        self.messages.append(decode(payload))

    def data(self) -> dict[int, DataBatch]:
        """Data batches by seq; a redelivered seq must carry the very same payload."""
        out: dict[int, DataBatch] = {}
        for m in self.messages:
            if isinstance(m, DataBatch):
                if m.seq in out:
                    assert encode(out[m.seq]) == encode(m), f"seq {m.seq} reused for other data"
                out[m.seq] = m
        return out

    def seqs(self) -> set[int]:
        """Every seq of the durable lanes received so far."""
        return {
            m.seq for m in list(self.messages) if m.kind in (Kind.DATA, Kind.ALARM, Kind.DEVICE)
        }

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def subscribed(url: str, root: str) -> Iterator[Subscriber]:
    sub = Subscriber(url, root)
    try:
        yield sub
    finally:
        sub.close()


def committed_pending(db_path: Path) -> set[SampleKey]:
    """Readings committed to a (dead) gateway's buffer and not yet acknowledged."""
    keys: set[SampleKey] = set()
    if not db_path.exists():
        return keys
    db = sqlite3.connect(db_path)
    try:
        for (body,) in db.execute("SELECT body FROM chunks"):
            keys.update((d, p, ts) for d, p, ts, *_ in msgpack.Unpacker(io.BytesIO(body)))
        for (payload,) in db.execute(
            "SELECT payload FROM batches WHERE lane = 2 AND payload IS NOT NULL"
        ):
            body = msgpack.unpackb(payload)["b"]
            keys.update((d, p, ts) for d, p, ts, *_ in body)
    finally:
        db.close()
    return keys


def manholes(n: int) -> list[dict[str, Any]]:
    return [{"id": f"mh-{i:02d}", "unit": i, "profile": "manhole_cover"} for i in range(1, n + 1)]


def polled(n: int, interval_s: float) -> list[dict[str, Any]]:
    return [
        {"id": f"mh-{i:02d}", "unit": i, "profile": "manhole_cover", "interval_s": interval_s}
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_sigkill_loop_loses_nothing_committed_and_duplicates_nothing(
    tmp_path: Path, mqtt_url: str, topic_root: str, protocol: str
) -> None:
    rng = random.Random(20261121)
    # Ten kills on the default protocol; three prove the same acknowledgement path on 3.1.1
    # and keep the default suite inside its time budget.
    kills = 10 if protocol == "5" else 3
    with simulator(tmp_path, manholes(5)) as eps, subscribed(mqtt_url, topic_root) as sub:
        port = eps["servers"][0]["port"]
        config = gateway_config(tmp_path, mqtt_url, topic_root, port, polled(5, 0.1))
        cfg = yaml.safe_load(config.read_text())
        cfg["mqtt"]["protocol"] = protocol
        config.write_text(yaml.safe_dump(cfg))
        must_arrive: set[SampleKey] = set()
        snapshots: list[int] = []
        t0 = time.time_ns() // 1_000_000 - 3_600_000
        buffer = tmp_path / "buffer.sqlite"
        for k in range(kills):
            # Backlog as after an outage keeps the uplink busy, so kills land mid-drain.
            box = Outbox(tmp_path / "buffer.sqlite", "gw-e2e", "earlier", batch_records=500)
            start = t0 + k * BACKLOG
            box.add(("backlog", "p", start + i, float(i), Quality.GOOD) for i in range(BACKLOG))
            box.flush(None, 0)
            box.close()
            must_arrive |= {("backlog", "p", start + i) for i in range(BACKLOG)}
            seq_before = views.buffer_stats(buffer).next_seq
            proc = start_gateway(config, tmp_path / "gateway.log")

            def drain_started(before: int = seq_before) -> bool:
                return views.buffer_stats(buffer).next_seq > before

            # The drain of a backlog this size takes tens of milliseconds, so a kill timed from
            # the start of the process mostly lands after it: time it from the first batch the
            # gateway froze instead (a random moment within the drain, or just after it).
            wait_for(drain_started, 30, "the drain to start", poll_s=0.001)
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            pending = committed_pending(tmp_path / "buffer.sqlite")
            snapshots.append(len(pending))
            must_arrive |= pending
        proc = start_gateway(config, tmp_path / "gateway.log")

        def drained() -> bool:
            stats = views.buffer_stats(tmp_path / "buffer.sqlite")
            return stats.backlog_readings == 0 and stats.frozen_batches == 0

        time.sleep(1.5)
        wait_for(drained, 30, "the buffer to drain")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        last_seq = views.buffer_stats(tmp_path / "buffer.sqlite").next_seq - 1
        wait_for(lambda: len(sub.seqs()) >= last_seq, 60, "the subscriber to catch up")
        assert sub.seqs() == set(range(1, last_seq + 1))
    batches = sub.data()
    received = [(r.device, r.point, r.ts_ms) for b in batches.values() for r in b.records]
    assert len(received) == len(set(received)), "a sample arrived under two different seqs"
    missing = must_arrive - set(received)
    assert not missing, f"{len(missing)} committed readings never arrived"
    print("committed, unacknowledged readings at each kill:", snapshots)
    assert sum(n > 0 for n in snapshots) >= kills // 2, snapshots  # kills landed mid-drain
    assert len(batches) > kills


def set_sim_value(endpoints: dict[str, Any], device: str, point: str, value: float) -> None:
    """Pin a simulated point to `value` through firmware-sim's control port."""
    ctl = endpoints["control"]

    async def go() -> None:
        async with SimControl(ctl["host"], ctl["port"]) as sim:
            await sim.set_value(device, point, value)

    asyncio.run(go())


def test_gas_alarm_reaches_broker_ahead_of_backlog(tmp_path: Path, topic_root: str) -> None:
    """A leak rising through 20 then 50 %LEL raises the GB/T 50493 first stage (severity 2) and
    then the second (severity 1) within polls + the on-delay."""
    from tests.services import start_mosquitto

    interval, on_delay_1 = 0.5, 1.0  # gas_detector.yaml: hi 20 %LEL waits 1 s; hihi 50 none
    slack_ms = 300  # scheduling on a shared 2-core machine; an on-time alarm needs far less
    gas = [{"id": "gas-01", "unit": 1, "profile": "gas_detector", "set": {"gas_concentration": 0}}]
    with start_mosquitto() as broker, simulator(tmp_path, gas) as eps:
        sub = Subscriber(broker.url, topic_root)
        broker.stop()  # the 4G link is down while the leak starts
        box = Outbox(tmp_path / "buffer.sqlite", "gw-e2e", "earlier", batch_records=500)
        t0 = time.time_ns() // 1_000_000 - 3_600_000
        box.add(("gas-01", "temperature", t0 + i, 20.0, Quality.GOOD) for i in range(100_000))
        box.flush(None, 0)
        box.close()
        devices = [{"id": "gas-01", "unit": 1, "profile": "gas_detector", "interval_s": interval}]
        config = gateway_config(
            tmp_path, broker.url, topic_root, eps["servers"][0]["port"], devices
        )
        proc = start_gateway(config, tmp_path / "gateway.log")
        log = tmp_path / "buffer.sqlite"
        try:
            polled = lambda: views.buffer_stats(log).backlog_readings > 100_000  # noqa: E731
            wait_for(polled, 20, "the first poll")
            step_1 = time.time_ns() // 1_000_000
            set_sim_value(eps, "gas-01", "gas_concentration", 30.0)

            def limit_alarms() -> list[views.AlarmRow]:
                # the steps also trip the rate-of-change rule (3级): only the limits matter here
                rows = [r for r in views.alarms(log) if r.alarm_type in ("hi", "hihi")]
                return sorted(rows, key=lambda r: r.ts_ms)

            wait_for(lambda: len(limit_alarms()) >= 1, 20, "the first-stage alarm")
            step_2 = time.time_ns() // 1_000_000
            set_sim_value(eps, "gas-01", "gas_concentration", 60.0)
            wait_for(lambda: len(limit_alarms()) >= 2, 20, "the second-stage alarm")
            first, second = limit_alarms()[:2]
            assert (first.alarm_type, first.severity) == ("hi", 2)  # 一级报警 at 20 %LEL: 橙
            assert (second.alarm_type, second.severity) == ("hihi", 1)  # 二级报警 at 50: 红
            # The first poll after the step sees the leak; a timer raises it when the on-delay
            # has run from that sample, without waiting for another poll.
            assert first.ts_ms - step_1 <= (interval + on_delay_1) * 1000 + slack_ms
            assert second.ts_ms - step_2 <= interval * 1000 + slack_ms
            broker.start()
            wait_for(lambda: sum(isinstance(m, DataBatch) for m in sub.messages) >= 5, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            sub.close()
    durable = [m for m in sub.messages if m.kind in (Kind.DATA, Kind.ALARM, Kind.DEVICE)]
    assert isinstance(durable[0], AlarmBatch)  # ahead of the 100 000-reading backlog
    limits = [e for e in durable[0].events if e.alarm_type in ("hi", "hihi")]
    assert [e.severity for e in limits] == [2, 1]


def test_reload_with_invalid_file_keeps_polling_and_says_why(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    with simulator(tmp_path, manholes(1)) as eps, subscribed(mqtt_url, topic_root) as sub:
        config = gateway_config(
            tmp_path, mqtt_url, topic_root, eps["servers"][0]["port"], polled(1, 0.2)
        )
        bad = tmp_path / "bad.yaml"
        bad.write_text(config.read_text().replace("interval_s", "intervall_s"))
        proc = start_gateway(config, tmp_path / "gateway.log")
        try:
            wait_for(lambda: any(isinstance(m, DataBatch) for m in sub.messages), 20)
            cmd = Command("gw-e2e", "ops", 0, time.time_ns() // 1_000_000, "r1", "reload")
            bad_cmd = Command(
                "gw-e2e", "ops", 0, cmd.sent_ms, "r2", "reload", args={"path": str(bad)}
            )
            cmd_topic = topic("e2e", "gw-e2e", Kind.CMD, root=topic_root)
            sub.client.publish(cmd_topic, encode(bad_cmd), qos=1)
            sub.client.publish(cmd_topic, b"\x93not a command", qos=1)
            sub.client.publish(cmd_topic, encode(cmd), qos=1)

            def replies() -> dict[str, CommandReply]:
                return {m.command_id: m for m in sub.messages if isinstance(m, CommandReply)}

            wait_for(lambda: len(replies()) == 3, 20, "three replies")
            n_before = len(sub.data())
            time.sleep(1.0)
            assert len(sub.data()) > n_before  # still polling and publishing
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    got = replies()
    assert not got["r2"].ok
    assert "intervall_s" in got["r2"].error
    assert "did you mean 'interval_s'" in got["r2"].error
    assert not got[""].ok
    assert got["r1"].ok


def test_broker_outage_replays_everything_once_in_order_flagged_historical(
    tmp_path: Path, topic_root: str
) -> None:
    """The broker is down for 20 s under load: about 5 500 readings to replay, which spans many
    batches and reconnect backoffs. LIFELINE_OUTAGE_S sets the length (e.g. 600 for a long
    outage run alone); the default keeps the whole suite inside its time budget."""
    from tests.services import start_mosquitto

    outage_s = float(os.environ.get("LIFELINE_OUTAGE_S", "20"))
    interval = 0.2
    with start_mosquitto() as broker, simulator(tmp_path, manholes(5)) as eps:
        sub = Subscriber(broker.url, topic_root)
        config = gateway_config(
            tmp_path, broker.url, topic_root, eps["servers"][0]["port"], polled(5, interval)
        )
        proc = start_gateway(config, tmp_path / "gateway.log")
        try:
            wait_for(lambda: len(sub.data()) >= 5, 20, "live data")
            broker.stop()
            down_ms = time.time_ns() // 1_000_000
            time.sleep(outage_s)
            up_ms = time.time_ns() // 1_000_000
            broker.start()

            def drained() -> bool:
                stats = views.buffer_stats(tmp_path / "buffer.sqlite")
                return stats.backlog_readings == 0 and stats.frozen_batches == 0

            wait_for(drained, 30, "the backlog to drain")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        last_seq = views.buffer_stats(tmp_path / "buffer.sqlite").next_seq - 1
        wait_for(lambda: len(sub.seqs()) >= last_seq, 30, "the subscriber to catch up")
        sub.close()
    first_seen: dict[int, DataBatch] = {}
    for m in sub.messages:
        if isinstance(m, DataBatch):
            first_seen.setdefault(m.seq, m)
    records = [r for b in first_seen.values() for r in b.records]
    keys = [(r.device, r.point, r.ts_ms) for r in records]
    assert len(keys) == len(set(keys)), "a reading arrived twice under different seqs"
    series: dict[tuple[str, str], list[int]] = {}
    for r in records:
        series.setdefault((r.device, r.point), []).append(r.ts_ms)
    for name, stamps in series.items():
        assert stamps == sorted(stamps), f"{name} arrived out of order"
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < 3 * interval * 1000, f"{name} lost readings (gap {max(gaps)} ms)"
    during = [r for r in records if down_ms + 500 < r.ts_ms < up_ms]
    assert len(during) >= 5 * 11 * (outage_s - 1) / interval * 0.8
    assert all(r.historical for r in during)
