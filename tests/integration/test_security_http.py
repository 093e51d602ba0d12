"""The collector's HTTP API under attack: revoked keys, what the public sees, redirects.

In-process runtimes served by a real uvicorn on loopback (tests/integration/test_api_http.py's
helpers); the connection-exhaustion experiment runs the collector as its own process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lifeline.collector.api.routes import events
from lifeline.collector.models import Role
from tests.integration.test_api_http import (
    add_keys,
    live_collector,
    now_ms,
    problem_of,
    running_api,
)
from tests.integration.test_security_broker import wait
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.proof]


def test_a_revoked_key_loses_its_open_event_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: a stream opened before its key was revoked went on for ever."""
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.3)
    with live_collector(f"sqlite:///{tmp_path}/s.db") as (base, runtime):
        keys = add_keys(runtime)
        revoked, kept = keys[Role.VIEWER], keys[Role.OPERATOR]
        by_name = {k.name: k.id for k in runtime.store.api_keys()}
        with httpx.Client(timeout=10) as http:
            streams = [
                http.stream("GET", f"{base}/api/v1/events/stream", headers={"X-API-Key": key})
                for key in (revoked, kept)
            ]
            gone, alive = (s.__enter__() for s in streams)
            try:
                assert runtime.store.revoke_api_key(by_name["viewer-1"], now_ms())
                deadline = time.monotonic() + 10
                lines = []
                for line in gone.iter_lines():  # keepalives every 0.3 s keep this loop turning
                    lines.append(line)
                    assert time.monotonic() < deadline, "the revoked key's stream is still open"
                assert "event: revoked" in lines
                got = []
                for line in alive.iter_lines():  # the other key's stream goes on
                    got.append(line)
                    if got.count(": keepalive") >= 2:
                        break
            finally:
                for s in streams:
                    s.__exit__(None, None, None)


def test_readyz_tells_the_public_only_ready_or_not(tmp_path: Path) -> None:
    """Issue 17: /readyz gave anybody the database's errors and the ingest counters."""
    with running_api(f"sqlite:///{tmp_path}/r.db") as api:
        public = api.client.get("/readyz")
        assert public.status_code == 200
        assert public.json() == {"status": "ready"}
        detail = api.client.get("/readyz", headers=api.h(Role.VIEWER))
        assert detail.json()["status"] == "ready"
        assert detail.json()["reasons"] == []
        assert detail.json()["backend"] == "sqlite"
        assert problem_of(api.client.get("/readyz", headers={"X-API-Key": "llk_nope"}), 401)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "/console"),
        ("/console/", "/console"),
        ("/api/v1/alarms/?limit=3", "/api/v1/alarms?limit=3"),
        ("/healthz/", "/healthz"),
    ],
)
def test_redirects_are_relative_whatever_the_host_header(
    tmp_path: Path, path: str, location: str
) -> None:
    """Issue 17: the trailing-slash redirect reflected the Host header."""
    with running_api(f"sqlite:///{tmp_path}/r.db") as api:
        r = api.client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == location


def test_half_sent_requests_cannot_exhaust_the_api(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    """Issue 17: ~1 000 half-sent requests held every file descriptor for ever: the API went
    down, the collector could not reconnect to its broker, the log grew by 200 MB. The same
    mechanism with a cap of 40 and 120 connections: the ones over the cap are answered 503 at
    once, the held ones are closed after the request timeout, and the collector recovers."""
    port = free_port()
    key_file = tmp_path / "admin.key"
    args = ["collector", "run", "--mqtt", mqtt_url, "--db", f"sqlite:///{tmp_path}/c.db"]
    args += ["--root", topic_root, "--client-id", f"c-{port}", "--http", f"127.0.0.1:{port}"]
    args += ["--bootstrap-key-file", str(key_file)]
    args += ["--http-max-connections", "40", "--http-request-timeout-s", "2"]
    log = tmp_path / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lifeline", *args], stdout=out, stderr=out)
    socks: list[socket.socket] = []
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            return False

        wait(ready, 30)
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/v1/alarms HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            socks.append(s)
        answers = [first_bytes(s) for s in socks]  # each: 503 at once, or closed after 2 s
        busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        closed = [a for a in answers if a == b""]
        assert len(busy) >= 120 - 40
        assert len(busy) + len(closed) == 120
        assert b'"detail":"too many connections"' in busy[0]
        wait(ready, 10)  # the held connections are gone: room again
        key = {"X-API-Key": key_file.read_text().strip()}
        detail = httpx.get(f"http://127.0.0.1:{port}/readyz", headers=key, timeout=5).json()
        assert detail["mqtt_connected"] is True
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=key, timeout=5).text
        assert f"lifeline_http_refused_total {len(busy)}" in metrics
        assert f"lifeline_http_timed_out_total {len(closed)}" in metrics
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert len(text) < 20_000, text[-2000:]
    assert text.count("connections open, the cap") == 1  # one line when the cap is reached


def first_bytes(s: socket.socket) -> bytes:
    """What the server sends first on `s` (b"" if it closes), waiting at most 10 s."""
    try:
        return s.recv(4096)
    except ConnectionResetError:
        return b""
