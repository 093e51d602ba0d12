"""Hostile network input against a running collector process: it stays up and says why.

MQTT: hostile topic names under the collector's root and a multi-megabyte garbage payload go
to the dead-letter table; a valid batch after them is stored. HTTP at the socket level
(the API engineer tests the endpoints themselves): a slowloris crowd of half-sent requests,
a 1 MB header, raw garbage and a lying Content-Length; /healthz keeps answering meanwhile.
Everything is bounded and on loopback.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.wire import MAX_PAYLOAD_BYTES, DataBatch, Record, encode
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.proof]

Popen = subprocess.Popen[bytes]


@contextlib.contextmanager
def collector(
    tmp: Path, mqtt_url: str, root: str
) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A collector process on SQLite; yields (http port, db path, process)."""
    port = free_port()
    db = tmp / "collector.db"
    args = ["collector", "run", "--mqtt", mqtt_url, "--db", f"sqlite:///{db}", "--root", root]
    args += ["--client-id", f"hostile-{port}", "--http", f"127.0.0.1:{port}"]
    args += ["--bootstrap-key-file", str(tmp / "admin.key")]  # /readyz's counters need a key
    with open(tmp / "collector.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lifeline", *args], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not ready(port):
            assert proc.poll() is None, (tmp / "collector.log").read_text()
            assert time.monotonic() < deadline, "collector never became ready"
            time.sleep(0.1)
        yield port, db, proc
    finally:
        proc.terminate()
        proc.wait(20)


def ready(port: int) -> bool:
    """/readyz says 200 within a second."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    return False


def healthy(port: int) -> bool:
    """/healthz answers within two seconds."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    return False


def test_hostile_topics_and_huge_payloads_are_dead_lettered(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    r = topic_root
    # Only names that match the collector's subscriptions reach it (a deeper topic or another
    # version level never does): each of these is a gateway id the wire contract refuses.
    hostile = {
        f"{r}/v1/s1/../data": b"\x80",  # a path trick as a gateway id
        f"{r}/v1/s1/gw\u202e1/data": b"\x80",  # bidi override in the gateway id
        f"{r}/v1/s1/{'g' * 5000}/data": b"\x80",  # a 5 kB gateway id
        # Invalid msgpack over the collector's payload limit. (A 4 MB one no longer gets this
        # far: config/mosquitto/lifeline.conf's max_packet_size turns it away at the broker.)
        f"{r}/v1/s1/gw-1/data": b"\xc1" * (MAX_PAYLOAD_BYTES + 512),
    }
    url = urlsplit(mqtt_url)
    with collector(tmp_path, mqtt_url, topic_root) as (port, db, proc):
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect(url.hostname or "127.0.0.1", url.port or 1883)
        pub.loop_start()
        for name, payload in hostile.items():
            pub.publish(name, payload, qos=1).wait_for_publish(10)
        now = 1_800_000_000_000
        good = DataBatch("gw-1", "s", 1, now, (Record("dev", "p", now, 1.0),), epoch="e1")
        pub.publish(f"{r}/v1/s1/gw-1/data", encode(good), qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        key = {"X-API-Key": (tmp_path / "admin.key").read_text().strip()}
        deadline = time.monotonic() + 20
        while (
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2, headers=key).json()["ingest"][
                "received"
            ]
            < len(hostile) + 1
        ):
            assert time.monotonic() < deadline, "the collector did not take every message"
            time.sleep(0.1)
        assert proc.poll() is None
    conn = sqlite3.connect(db)
    try:
        dead = conn.execute("SELECT topic, reason FROM dead_letters").fetchall()
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    finally:
        conn.close()
    assert len(dead) == len(hostile)
    assert all(reason for _, reason in dead)
    assert stored == 1


def test_http_socket_abuse_does_not_take_the_collector_down(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    with collector(tmp_path, mqtt_url, topic_root) as (port, _db, proc):
        crowd = []
        for _ in range(50):  # slowloris: requests that never finish
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            crowd.append(s)
        assert healthy(port), "50 half-sent requests starved /healthz"
        answers = []
        abuse = [
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n",
            b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4,  # a TLS hello, then noise
            b"POST /api/v1/alarms/x/ack HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{",
            b"GET /api/v1/readings?device=%00%ff%fe&limit=-1&since=9e999&" + b"a=b&" * 5000
            + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ]  # fmt: skip
        for raw in abuse:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                with contextlib.suppress(OSError):
                    s.sendall(raw)
                    s.shutdown(socket.SHUT_WR)
                with contextlib.suppress(OSError):
                    answers.append(s.recv(64))
        for s in crowd:
            s.close()
        assert healthy(port)
        assert proc.poll() is None
    # Whatever came back was an HTTP error status or a closed connection, never a 2xx/5xx.
    for head in answers:
        assert not head or head.startswith(b"HTTP/1.1 4"), head
