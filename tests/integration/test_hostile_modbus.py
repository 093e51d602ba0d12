"""Hostile and difficult Modbus devices against a running gateway (separate processes, MQTT).

The gateway keeps polling the good devices, stays up, and reports each bad one: error counters
in its status message, offline device events for devices that do not answer. A device that
answers with a Modbus exception is alive: degraded, never offline, no comm-loss alarm. And the
field's difficult devices (issue 16) are read in full: a meter with a gap in its register map,
a device busy 40 % of the time, an RS-485 line that echoes requests and adds noise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.demo import Child, spawn, wait_until
from lifeline.drivers.profile import builtin_profiles
from lifeline.wire import (
    AlarmBatch,
    DataBatch,
    DeviceEventBatch,
    Message,
    Quality,
    Status,
    decode,
    subscription,
)

pytestmark = [pytest.mark.integration, pytest.mark.proof]


class Run:
    """What a gateway published, and the processes to watch."""

    def __init__(self) -> None:
        self.got: list[Message] = []
        self.lock = threading.Lock()
        self.children: list[Child] = []
        self.gateway: Child | None = None

    def messages(self, kind: type[Message]) -> list[Any]:
        with self.lock:
            return [m for m in self.got if isinstance(m, kind)]

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        wait_until(what, check, timeout, self.children)


@contextmanager
def gateway_on(
    tmp_path: Path, mqtt_url: str, topic_root: str, scenario: dict[str, Any], device: dict[str, Any]
) -> Iterator[Run]:
    """firmware-sim with `scenario`, a gateway polling every device with `device` settings."""
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    logs = tmp_path / "logs"
    logs.mkdir()
    run = Run()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with run.lock:
            run.got.append(decode(bytes(msg.payload)))

    url = urlsplit(mqtt_url)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(url.hostname or "127.0.0.1", url.port or 1883)
    sub.subscribe(subscription(None, root=topic_root), qos=1)
    sub.loop_start()
    eps_file = tmp_path / "endpoints.json"
    try:
        sim_args = ["sim", "run", "--scenario", str(tmp_path / "scenario.yaml")]
        run.children.append(spawn("sim", [*sim_args, "--endpoints-file", str(eps_file)], logs))
        eps = wait_until(
            "sim", lambda: eps_file.exists() and json.loads(eps_file.read_text()), 30, run.children
        )
        buses = []
        for server in eps["servers"]:
            devices = [
                {"id": d["id"], "unit": d["unit"], "profile": d["profile"], **device}
                for d in server["devices"]
            ]
            kind = "rtu_over_tcp" if server["kind"] == "rtu_tcp" else "tcp"
            buses.append({"type": kind, "host": server["host"], "port": server["port"],
                          "devices": devices})  # fmt: skip
        conf = {
            "gateway": "gw-fuzz",
            "site": "s1",
            "mqtt": {"url": mqtt_url, "root": topic_root},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "health": {"offline_after": 2, "reprobe_min_s": 0.5, "reprobe_max_s": 1},
            "status_interval_s": 1,
            "buses": buses,
        }
        (tmp_path / "gw.yaml").write_text(yaml.safe_dump(conf))
        run.gateway = spawn("gateway", ["edge", "run", "--config", str(tmp_path / "gw.yaml")], logs)
        run.children.append(run.gateway)
        yield run
    finally:
        for child in reversed(run.children):
            child.stop()
        sub.loop_stop()
        sub.disconnect()
    assert run.gateway.proc.returncode == 0
    assert "Traceback" not in run.gateway.log.read_text()


GOOD = {"mh-1", "mh-2"}
SILENT = {"sl-1": "garbage", "tilt-1": "bad_crc"}  # no usable answer: offline
ALIVE = {"gas-1": "exception"}  # answers exception 04 (device failure): alive, degraded


def test_gateway_survives_fuzzed_corrupt_and_exception_answers(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    scenario = {
        "seed": 3,
        "servers": [
            {"name": "cab", "kind": "tcp", "port": 0, "devices": [
                {"id": "mh-1", "unit": 1, "profile": "manhole_cover"},
                {"id": "sl-1", "unit": 2, "profile": "streetlight", "fault": {"kind": "garbage"}},
                {"id": "gas-1", "unit": 3, "profile": "gas_detector",
                 "fault": {"kind": "exception"}},
            ]},
            {"name": "dtu", "kind": "rtu_tcp", "port": 0, "baudrate": 38400, "devices": [
                {"id": "mh-2", "unit": 1, "profile": "manhole_cover"},
                {"id": "tilt-1", "unit": 2, "profile": "tilt_sensor", "fault": {"kind": "bad_crc"}},
            ]},
        ],
    }  # fmt: skip
    device = {"interval_s": 0.3, "timeout_s": 0.3, "retries": 0}
    with gateway_on(tmp_path, mqtt_url, topic_root, scenario, device) as run:

        def reported() -> bool:
            status = run.messages(Status)
            bad = {**SILENT, **ALIVE}
            return bool(status) and all(status[-1].counters.get(f"errors.{d}", 0) > 3 for d in bad)

        run.wait("every bad device reported", reported, 30)
        time.sleep(2)  # the good devices keep their cadence meanwhile
        assert run.gateway is not None
        assert run.gateway.alive()
        assert run.messages(Status)[-1].counters["devices_degraded"] >= 1
    records = [r for m in run.messages(DataBatch) for r in m.records]
    events = [e for m in run.messages(DeviceEventBatch) for e in m.events]
    alarms = [e for m in run.messages(AlarmBatch) for e in m.events]
    good_counts = {d: sum(r.device == d for r in records) for d in GOOD}
    assert all(n >= 5 * 10 for n in good_counts.values()), good_counts  # >= 5 polls each
    invented = [r for r in records if r.device in {**SILENT, **ALIVE} and r.quality is Quality.GOOD]
    assert not invented, "a good value was invented for a device that never answered well"
    offline = {e.device for e in events if not e.online}
    assert offline == set(SILENT), events
    comm_loss = {a.device for a in alarms if a.alarm_type == "comm_loss"}
    assert comm_loss == set(SILENT), "a device answering exceptions is alive: no comm loss"


def test_gateway_reads_the_fields_difficult_devices_in_full(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    scenario = {
        "seed": 16,
        "servers": [
            {"name": "cab", "kind": "tcp", "port": 0, "devices": [
                # a strict meter: exception 02 for the unmapped registers 5..7 of its map
                {"id": "gas-m", "unit": 1, "profile": "gas_detector", "unmapped": "exception"},
                # busy (exception 06) to 40 % of requests
                {"id": "sl-b", "unit": 2, "profile": "streetlight",
                 "quirks": [{"kind": "busy", "probability": 0.4}]},
            ]},
            # an RS-485 line behind the DTU that echoes each request and adds noise bytes
            {"name": "dtu", "kind": "rtu_tcp", "port": 0, "baudrate": 38400, "devices": [
                {"id": "tilt-e", "unit": 1, "profile": "tilt_sensor",
                 "quirks": [{"kind": "echo"}, {"kind": "noise", "before": 3, "after": 2}]},
            ]},
        ],
    }  # fmt: skip
    profiles = builtin_profiles()
    points = {"gas-m": "gas_detector", "sl-b": "streetlight", "tilt-e": "tilt_sensor"}
    device = {"interval_s": 0.3, "timeout_s": 0.3, "retries": 1}
    with gateway_on(tmp_path, mqtt_url, topic_root, scenario, device) as run:

        def all_read() -> bool:
            good = [r for m in run.messages(DataBatch) for r in m.records
                    if r.quality is Quality.GOOD]  # fmt: skip
            return all(
                sum(r.device == d for r in good) >= 8 * len(profiles[p].points)
                for d, p in points.items()
            )

        run.wait("every point of every difficult device read 8 times", all_read, 40)
        run.wait("a status after that", lambda: len(run.messages(Status)) >= 2, 5)
        counters = run.messages(Status)[-1].counters
    records = [r for m in run.messages(DataBatch) for r in m.records]
    events = [e for m in run.messages(DeviceEventBatch) for e in m.events]
    alarms = [e for m in run.messages(AlarmBatch) for e in m.events]
    for dev, profile in points.items():
        seen = {r.point for r in records if r.device == dev and r.quality is Quality.GOOD}
        assert seen == {p.name for p in profiles[profile].points}, dev
    assert not [e for e in events if not e.online], "no difficult device went offline"
    assert not [a for a in alarms if a.alarm_type == "comm_loss"]
    assert counters["busy_answers"] > 0
    assert counters["link_echoes"] > 0
    assert counters["link_noise_bytes"] > 0
