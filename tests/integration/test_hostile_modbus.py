"""Hostile Modbus answers against a running gateway: it keeps polling the good devices, stays
up, and reports each bad one (error counters in its status message, offline device events).

firmware-sim answers one device with random bytes (fuzzed frames), one with a Modbus
exception, and one on an RTU-over-TCP bus with a corrupted CRC.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.demo import Child, spawn, wait_until
from wire import (
    DataBatch,
    DeviceEventBatch,
    Message,
    Quality,
    Status,
    decode,
    subscription,
)

pytestmark = [pytest.mark.integration, pytest.mark.proof]

GOOD = {"mh-1", "mh-2"}
BAD = {"sl-1": "garbage", "gas-1": "exception", "tilt-1": "bad_crc"}


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
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    logs = tmp_path / "logs"
    logs.mkdir()
    got: list[Message] = []
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(decode(bytes(msg.payload)))

    url = urlsplit(mqtt_url)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(url.hostname or "127.0.0.1", url.port or 1883)
    sub.subscribe(subscription(None, root=topic_root), qos=1)
    sub.loop_start()
    children: list[Child] = []
    eps_file = tmp_path / "endpoints.json"
    try:
        sim_args = ["sim", "run", "--scenario", str(tmp_path / "scenario.yaml")]
        children.append(spawn("sim", [*sim_args, "--endpoints-file", str(eps_file)], logs))
        eps = wait_until(
            "sim", lambda: eps_file.exists() and json.loads(eps_file.read_text()), 30, children
        )
        buses = []
        for server in eps["servers"]:
            devices = [
                {"id": d["id"], "unit": d["unit"], "profile": d["profile"], "interval_s": 0.3,
                 "timeout_s": 0.3, "retries": 0}
                for d in server["devices"]
            ]  # fmt: skip
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
        gw = spawn("gateway", ["edge", "run", "--config", str(tmp_path / "gw.yaml")], logs)
        children.append(gw)

        def reported() -> bool:
            with lock:
                status = [m for m in got if isinstance(m, Status)]
            return bool(status) and all(status[-1].counters.get(f"errors.{d}", 0) > 3 for d in BAD)

        wait_until("every bad device reported", reported, 30, children)
        time.sleep(2)  # the good devices keep their cadence meanwhile
        assert gw.alive()
    finally:
        for child in reversed(children):
            child.stop()
        sub.loop_stop()
        sub.disconnect()
    assert gw.proc.returncode == 0
    with lock:
        records = [r for m in got if isinstance(m, DataBatch) for r in m.records]
        events = [e for m in got if isinstance(m, DeviceEventBatch) for e in m.events]
    good_counts = {d: sum(r.device == d for r in records) for d in GOOD}
    assert all(n >= 5 * 10 for n in good_counts.values()), good_counts  # >= 5 polls each
    invented = [r for r in records if r.device in BAD and r.quality is Quality.GOOD]
    assert not invented, "a good value was invented for a device that never answered well"
    offline = {e.device for e in events if not e.online}
    assert offline >= set(BAD), events
    assert "Traceback" not in gw.log.read_text()
