"""One reading end to end through real processes: sim -> gateway -> collector -> HTTP API."""

from __future__ import annotations

import contextlib
import queue
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
from lifeline.wire import DataBatch, Kind, decode, subscription

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgres"])
def collector_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The collector's database URL; set up before (so torn down after) the processes using it."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/collector.db"


@pytest.fixture
def children(collector_db: str) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


@contextlib.contextmanager
def data_batches(mqtt_url: str, root: str) -> Iterator[queue.Queue[DataBatch]]:
    """Subscribe before anything publishes; batches land in the yielded queue."""
    got: queue.Queue[DataBatch] = queue.Queue()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        batch = decode(bytes(msg.payload))
        if isinstance(batch, DataBatch):
            got.put(batch)

    url = urlparse(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.subscribe(subscription(Kind.DATA, root=root), qos=1)
    client.loop_start()
    try:
        yield got
    finally:
        client.loop_stop()
        client.disconnect()


def test_simulated_reading_reaches_the_api_with_its_sample_time(
    collector_db: str,
    tmp_path: Path,
    mqtt_url: str,
    topic_root: str,
    children: list[Child],
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
    gw_file = tmp_path / "gateway.yaml"
    gw_file.write_text(yaml.safe_dump(conf))

    api = f"http://127.0.0.1:{free_port()}"
    children.append(
        spawn(
            "collector",
            [
                "collector",
                "run",
                "--mqtt",
                mqtt_url,
                "--root",
                topic_root,
                "--db",
                collector_db,
                "--http",
                api.removeprefix("http://"),
                "--client-id",
                f"col-{tmp_path.name}",
                "--bootstrap-key-file",
                str(tmp_path / "admin.key"),
            ],
            logs,
        )
    )
    wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
    key = (tmp_path / "admin.key").read_text().strip()
    with data_batches(mqtt_url, topic_root) as batches:
        children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
        batch = batches.get(timeout=60)
    assert batch.gateway == conf["gateway"]
    sent = batch.records[0]
    assert sent.device == "mh-001"

    def stored() -> list[dict[str, Any]] | None:
        rows = http_json(f"{api}/api/v1/readings?device=mh-001&point={sent.point}&limit=1000", key)
        return [r for r in rows or [] if r["ts_ms"] == sent.ts_ms] or None

    (row,) = wait_until("the reading at the API", stored, 60, children)
    assert row["value"] == pytest.approx(sent.value)
    assert row["gateway"] == conf["gateway"]
    assert row["quality"] == "good"
