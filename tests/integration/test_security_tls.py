"""TLS end to end: firmware-sim -> gateway ==mqtts==> Mosquitto ==mqtts==> collector -> SQLite.

The broker runs the shipped secure config: mutual TLS with a throwaway CA made by the test,
per-gateway passwords and the topic ACL. Neither password may appear in any process log.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import time
from pathlib import Path

import pytest
import yaml

from lifeline.demo import Child, spawn, wait_until
from tests.integration.test_security_broker import PASSWORDS, secure_broker
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.proof]

CONNECT = bytes.fromhex("100f00044d5154540402003c0003746573")  # MQTT 3.1.1 CONNECT, id "tes"


def readings_by(db: Path, gateway: str) -> int:
    """Rows the collector stored for `gateway` (0 before its schema exists)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT count(*) FROM readings WHERE gateway_id = ?"
        return int(conn.execute(sql, (gateway,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_gateway_and_collector_talk_over_mutual_tls_with_passwords_and_acl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    children: list[Child] = []
    with secure_broker(tmp_path) as sb:
        certs = sb.certs
        scenario = {
            "seed": 1,
            "servers": [
                {"name": "cab", "kind": "tcp", "port": 0, "devices": [
                    {"id": "mh-1", "unit": 1, "profile": "manhole_cover"},
                    {"id": "gas-1", "unit": 2, "profile": "gas_detector"},
                ]}
            ],
        }  # fmt: skip
        (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario))
        eps_file = tmp_path / "endpoints.json"
        try:
            children.append(
                spawn(
                    "sim",
                    [
                        "sim",
                        "run",
                        "--scenario",
                        str(tmp_path / "scenario.yaml"),
                        "--endpoints-file",
                        str(eps_file),
                    ],
                    logs,
                )
            )
            eps = wait_until(
                "sim", lambda: eps_file.exists() and json.loads(eps_file.read_text()), 30, children
            )
            db = tmp_path / "collector.db"
            http = free_port()
            monkeypatch.setenv("LIFELINE_MQTT_PASSWORD", PASSWORDS["lifeline-collector"])
            children.append(
                spawn(
                    "collector",
                    [
                        "collector",
                        "run",
                        "--mqtt",
                        sb.tls_url,
                        "--db",
                        f"sqlite:///{db}",
                        "--http",
                        f"127.0.0.1:{http}",
                        "--client-id",
                        "col-tls",
                        "--mqtt-username",
                        "lifeline-collector",
                        "--mqtt-ca",
                        str(certs / "ca.crt"),
                        "--mqtt-cert",
                        str(certs / "lifeline-collector.crt"),
                        "--mqtt-key",
                        str(certs / "lifeline-collector.key"),
                    ],
                    logs,
                )
            )
            conf = {
                "gateway": "gw-a",
                "site": "s1",
                "mqtt": {
                    "url": sb.tls_url,
                    "username": "gw-a",
                    "password": PASSWORDS["gw-a"],
                    "tls": {"ca": str(certs / "ca.crt"), "cert": str(certs / "gw-a.crt"),
                            "key": str(certs / "gw-a.key")},
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 1.0,
                },
                "buffer": {"path": str(tmp_path / "gw-a.sqlite")},
                "buses": [{"type": "tcp", "host": "127.0.0.1",
                           "port": eps["servers"][0]["port"], "devices": [
                               {"id": "mh-1", "unit": 1, "profile": "manhole_cover"},
                               {"id": "gas-1", "unit": 2, "profile": "gas_detector"},
                           ]}],
            }  # fmt: skip
            (tmp_path / "gw-a.yaml").write_text(yaml.safe_dump(conf))
            children.append(
                spawn("gateway", ["edge", "run", "--config", str(tmp_path / "gw-a.yaml")], logs)
            )
            wait_until("readings over TLS", lambda: readings_by(db, "gw-a") >= 20, 60, children)
            # The TLS port speaks only TLS, and only to clients with a certificate from our CA.
            plain = _plain_mqtt_connect(sb.tls_port)
            untrusted = _tls_without_client_cert(sb.tls_port, certs / "ca.crt")
        finally:
            for child in reversed(children):
                child.stop()
    assert [c.proc.returncode for c in children] == [0, 0, 0]
    assert plain is None
    assert untrusted is not None
    text = "".join(c.log.read_text(errors="replace") for c in children)
    for secret in PASSWORDS.values():
        assert secret not in text


def _plain_mqtt_connect(port: int) -> bytes | None:
    """Send a plain MQTT CONNECT; what comes back (None: the TLS port hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(CONNECT)
        time.sleep(0.2)
        try:
            data = s.recv(4)
        except (ConnectionError, TimeoutError):
            return None
    return data or None


def _tls_without_client_cert(port: int, ca: Path) -> str | None:
    """Try a TLS handshake and a read without a client certificate; the error, if refused."""
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(CONNECT)
            if not tls.recv(4):
                return "closed"
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        return str(exc)
    return None
