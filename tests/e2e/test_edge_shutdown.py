"""Honest health at the edge (issue 13 item 8): what the broker keeps retained for a gateway says
how it ended. A clean stop (SIGTERM) leaves the death "shutdown" (the gateway sends DISCONNECT,
so the broker never publishes the will); a killed gateway leaves the will, "connection lost".
Reproduced on main: every clean stop was followed by the will, retained over the "shutdown".
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.wire import Birth, Death, Kind, Message, decode, topic
from tests.e2e.test_edge_gateway import (
    gateway_config,
    manholes,
    polled,
    simulator,
    start_gateway,
    subscribed,
    wait_for,
)

pytestmark = [pytest.mark.e2e]


def retained_death(url: str, root: str) -> Message:
    """The death the broker keeps for gw-e2e, as a fresh subscriber receives it."""
    got: list[Message] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(decode(bytes(m.payload)))
    parts = urlsplit(url)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.subscribe(topic("e2e", "gw-e2e", Kind.DEATH, root=root), qos=1)
    client.loop_start()
    try:
        wait_for(lambda: bool(got), 5, "the retained death")
    finally:
        client.loop_stop()
        client.disconnect()
    return got[-1]


def test_sigterm_leaves_shutdown_and_sigkill_leaves_the_will(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    with simulator(tmp_path, manholes(1)) as eps, subscribed(mqtt_url, topic_root) as sub:
        port = eps["servers"][0]["port"]
        config = gateway_config(tmp_path, mqtt_url, topic_root, port, polled(1, 0.2))
        for stop, reason in ((signal.SIGTERM, "shutdown"), (signal.SIGKILL, "connection lost")):
            before = len(sub.messages)
            proc = start_gateway(config, tmp_path / "gateway.log")

            def born(n: int = before) -> bool:
                return any(isinstance(m, Birth) for m in sub.messages[n:])

            wait_for(born, 20, "birth")
            proc.send_signal(stop)
            code = proc.wait(15)
            time.sleep(1.0)  # the broker publishes a will as soon as it sees the socket close
            deaths = [m.reason for m in sub.messages[before:] if isinstance(m, Death)]
            assert deaths == [reason], deaths
            kept = retained_death(mqtt_url, topic_root)
            assert isinstance(kept, Death)
            assert kept.reason == reason
            if stop is signal.SIGTERM:
                assert code == 0
