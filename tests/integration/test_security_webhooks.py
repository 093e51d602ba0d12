"""Webhooks as an attack surface: SSRF, rebinding, echoed answers, URL credentials, secrets at rest.

The receivers are real servers on loopback, let in by the explicit allow-list setting
(`WebhookConfig.allow`, `--webhook-allow`); without it, loopback is exactly what is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lifeline.collector.api import create_app
from lifeline.collector.models import Role
from lifeline.collector.runtime import Runtime
from lifeline.collector.webhooks import WebhookConfig
from lifeline.wire import AlarmState
from tests.integration.test_api_http import (
    GW,
    Api,
    add_keys,
    fast_config,
    problem_of,
    receiver,
    running_api,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.proof]


@contextlib.contextmanager
def api_without_allow_list(tmp_path: Path) -> Iterator[Api]:
    config = replace(fast_config(f"sqlite:///{tmp_path}/w.db"), webhooks=WebhookConfig())
    app = create_app(config)
    with TestClient(app) as client:
        runtime: Runtime = app.state.runtime
        yield Api(client, runtime, add_keys(runtime))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",  # the database
        "http://localhost:1883/",  # the broker, by name
        "http://10.1.2.3/internal",  # private (RFC 1918)
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://0.0.0.0:22/",
        "http://224.0.0.1/",  # multicast
        "http://no-such-host.invalid/",  # does not resolve
    ],
)
def test_webhooks_may_not_target_the_collectors_own_network(tmp_path: Path, url: str) -> None:
    """Issue 17: webhook URLs could target loopback and private hosts (a port scanner)."""
    with api_without_allow_list(tmp_path) as api:
        r = api.client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=api.h(Role.ADMIN)
        )
        problem = problem_of(r, 422)
        assert api.runtime.store.webhooks() == []
    assert "not a public address" in problem["detail"] or "cannot resolve" in problem["detail"]


def test_the_target_is_checked_again_at_delivery(tmp_path: Path) -> None:
    """What was allowed at registration is refused at delivery once it no longer is (a DNS
    answer that changed, or the allow-list): nothing is sent."""
    with running_api(f"sqlite:///{tmp_path}/w.db") as api, receiver(0) as (url, got):
        hook = api.client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=api.h(Role.ADMIN)
        ).json()
        api.runtime.webhooks.config.allow = ()  # the same Deliverer, the address now refused
        api.alarm(f"{GW}:700", AlarmState.ACTIVE_UNACKED)
        failed = wait_for(lambda: deliveries(api, hook["id"], "error"))
        assert got.empty()
    assert failed[0]["error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1")


@contextlib.contextmanager
def banner_server(banner: bytes) -> Iterator[int]:
    """A TCP server that answers whatever it is sent with `banner` and hangs up, as an SSH
    server does when it is spoken HTTP to."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = srv.accept()
                with conn:
                    conn.settimeout(5)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)
                        conn.sendall(banner)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        srv.close()


def deliveries(api: Api, hook_id: int, field: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api.client.get(
        f"/api/v1/webhooks/{hook_id}/deliveries", headers=api.h(Role.ADMIN)
    ).json()
    return [d for d in rows if d[field]]


def test_a_failed_delivery_does_not_echo_what_the_target_said(tmp_path: Path) -> None:
    """Issue 17: the deliveries list quoted the target's answer (an SSH banner, a version)."""
    banner = b"SSH-2.0-OpenSSH_9.2p1 internal-bastion-7\r\n"
    with running_api(f"sqlite:///{tmp_path}/w.db") as api, banner_server(banner) as port:
        hook = api.client.post(
            "/api/v1/webhooks",
            json={"url": f"http://127.0.0.1:{port}/", "events": ["*"]},
            headers=api.h(Role.ADMIN),
        ).json()
        api.alarm(f"{GW}:701", AlarmState.ACTIVE_UNACKED)
        failed = wait_for(lambda: deliveries(api, hook["id"], "error"))
    # (a reset can beat the banner: then the kind is "connection failed"; never the banner)
    assert failed[0]["error"] in ("the answer was not HTTP", "connection failed")
    assert "SSH" not in str(failed)


def test_url_credentials_are_sent_but_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_api(f"sqlite:///{tmp_path}/w.db") as api, receiver(0) as (url, got):
        secret_url = url.replace("http://", "http://hook-user:Pa55-never-log@")
        api.client.post(
            "/api/v1/webhooks", json={"url": secret_url, "events": ["*"]}, headers=api.h(Role.ADMIN)
        )
        api.alarm(f"{GW}:702", AlarmState.ACTIVE_UNACKED)
        headers, _ = got.get(timeout=20)
    assert headers["Authorization"].startswith("Basic ")
    assert "Pa55-never-log" not in caplog.text


def test_the_sqlite_file_holding_webhook_secrets_is_private(tmp_path: Path) -> None:
    """Issue 17: the collector's SQLite file (webhook secrets in clear) was created 0644."""
    with running_api(f"sqlite:///{tmp_path}/w.db") as api:
        api.client.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/h", "events": ["*"]},
            headers=api.h(Role.ADMIN),
        )
        modes = {p.name: os.stat(p).st_mode & 0o777 for p in tmp_path.glob("w.db*")}
    assert modes["w.db"] == 0o600
    assert set(modes.values()) == {0o600}  # the -wal and -shm files too
