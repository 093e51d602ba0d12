"""e2e: alarms already active when a collector starts reach it, with their cases.

firmware-sim (a manhole cover) -> gateway -> private broker; the cover leaks methane, is
opened and tilts while no collector exists, so the broker acknowledges the alarm batches and
keeps them for nobody. A collector started afterwards receives only the gateway's retained
birth (taken at connect time, before the alarms), asks for a fresh one (`rebirth`), and
applies its alarm picture: all three alarms and their cases appear, noted "reconciled from
birth".
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import free_port
from lifeline.demo import Child, http_json, spawn, start_simulator, wait_until
from lifeline.firmware_sim.control import SimControl
from lifeline.wire import AlarmBatch, AlarmState, Kind, decode, subscription

pytestmark = pytest.mark.e2e

ASSET = "3101040111000042"
DEVICE = "mh-001"
ASSETS_YAML = f"""
assets:
  - {{code: "{ASSET}", name: 燃气阀门井, owner: 城市燃气公司, grid: "31010400100201"}}
"""
# What the cover is made to report, and the alarm (point, type) each raises at the edge.
FAULTS = {"ch4": 30, "cover_open": True, "tilt_x": 20}
EXPECTED = {("ch4", "hi"), ("cover_open", "state"), ("tilt_x", "hi")}


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


def set_values(endpoints: dict[str, Any], values: dict[str, Any]) -> None:
    async def pin() -> None:
        ctl = endpoints["control"]
        async with SimControl(ctl["host"], ctl["port"]) as sim:
            for point, value in values.items():
                await sim.set_value(DEVICE, point, value)

    asyncio.run(pin())


def raised_at_the_edge(
    mqtt_url: str, root: str
) -> tuple[mqtt.Client, queue.Queue[tuple[str, str]]]:
    """A subscriber that sees the gateway's alarm batches go by (nobody else stores them)."""
    got: queue.Queue[tuple[str, str]] = queue.Queue()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        batch = decode(bytes(msg.payload))
        if isinstance(batch, AlarmBatch):
            for e in batch.events:
                if e.state is AlarmState.ACTIVE_UNACKED:
                    got.put((e.point, e.alarm_type))

    url = urlparse(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.subscribe(subscription(Kind.ALARM, root=root), qos=1)
    client.loop_start()
    return client, got


def test_alarms_active_before_the_collector_started_reach_it_with_their_cases(
    tmp_path: Path, mqtt_url: str, topic_root: str, children: list[Child]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    endpoints = start_simulator("single-manhole", tmp_path, logs, children)
    (server,) = endpoints["servers"]
    conf = yaml.safe_load(
        (files("lifeline.config") / "examples" / "gateway-single.yaml").read_text()
    )
    conf["mqtt"] = {"url": mqtt_url, "root": topic_root}
    conf["buffer"]["path"] = str(tmp_path / "edge.sqlite")
    conf["buses"][0]["host"], conf["buses"][0]["port"] = server["host"], server["port"]
    (device,) = conf["buses"][0]["devices"]
    device["interval_s"] = 0.2
    device["asset"] = ASSET
    gw_file = tmp_path / "gateway.yaml"
    gw_file.write_text(yaml.safe_dump(conf, allow_unicode=True))

    watcher, raised = raised_at_the_edge(mqtt_url, topic_root)
    try:
        children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
        time.sleep(1.0)  # connected, retained birth published with an empty alarm picture
        set_values(endpoints, FAULTS)
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 30
        while seen != EXPECTED:
            assert time.monotonic() < deadline, f"the gateway raised only {seen}"
            seen.add(raised.get(timeout=max(deadline - time.monotonic(), 0.1)))
    finally:
        watcher.loop_stop()
        watcher.disconnect()

    (tmp_path / "assets.yaml").write_text(ASSETS_YAML, encoding="utf-8")
    api = f"http://127.0.0.1:{free_port()}"
    args = ["collector", "run", "--mqtt", mqtt_url, "--root", topic_root,
            "--db", f"sqlite:///{tmp_path}/collector.db", "--http", api.removeprefix("http://"),
            "--client-id", f"col-{tmp_path.name}", "--assets", str(tmp_path / "assets.yaml"),
            "--bootstrap-key-file", str(tmp_path / "admin.key")]  # fmt: skip
    children.append(spawn("collector", args, logs))
    wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
    key = (tmp_path / "admin.key").read_text().strip()

    def active() -> list[dict[str, Any]] | None:
        page = http_json(f"{api}/api/v1/alarms?state=active", key)
        items = page["items"] if page else []
        return items if {(a["point"], a["alarm_type"]) for a in items} == EXPECTED else None

    alarms = wait_until("the three alarms at the collector", active, 30, children)
    assert {a["gateway"] for a in alarms} == {conf["gateway"]}

    def cases() -> list[dict[str, Any]] | None:
        page = http_json(f"{api}/api/v1/cases", key)
        return page["items"] if page and page["items"] else None

    opened = wait_until("their cases", cases, 30, children)
    assert {(c["gateway"], c["device"], c["asset"]) for c in opened} == {
        (conf["gateway"], DEVICE, ASSET)
    }
    for case in opened:
        detail = http_json(f"{api}/api/v1/cases/{case['case_no']}", key)
        assert "(reconciled from birth)" in detail["audit"][0]["note"]
    metrics = http_json(f"{api}/readyz")
    assert metrics["status"] == "ready"
