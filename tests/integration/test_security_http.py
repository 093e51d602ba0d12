"""The collector's HTTP API under attack: revoked keys, what the public sees, redirects.

In-process runtimes served by a real uvicorn on loopback (tests/integration/test_api_http.py's
helpers); the connection-exhaustion experiment runs the collector as its own process.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from collector.api.routes import events
from collector.models import Role
from tests.integration.test_api_http import (
    add_keys,
    live_collector,
    now_ms,
    problem_of,
    running_api,
)

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
