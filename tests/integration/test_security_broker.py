"""The shipped broker hardening (config/mosquitto/lifeline-secure.conf + lifeline.acl) holds.

A gateway authenticates as its own gateway id and can publish only under its own topics; the
broker drops anything it publishes as another gateway. Without any ACL, the collector still
refuses a payload whose gateway differs from the topic's (dead letter). The helpers here (a
throwaway CA, a password file, the secure broker) are shared by the other security suites.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import PrivateBroker
from lifeline.wire import Command, DataBatch, Kind, Record, encode, topic
from tests.services import free_port, start_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.proof]

MOSQUITTO = Path(str(files("lifeline.config") / "mosquitto"))
PASSWORDS = {
    "gw-a": "pw-gateway-a-7Hq2",
    "gw-b": "pw-gateway-b-Xk91",
    "lifeline-collector": "pw-col-Zr55",
    "lifeline-collector-probe": "pw-col-Zr55",  # its probes' user: the same password
}
NOW = 1_800_000_000_000


def make_ca(where: Path, clients: tuple[str, ...] = ("gw-a", "lifeline-collector")) -> Path:
    """A throwaway CA, a broker certificate for 127.0.0.1 and client certificates (openssl)."""
    where.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=lifeline-test-ca")  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("broker", *clients):
        ssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip
    return where


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file made with mosquitto_passwd (hashed, never the plain text)."""
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )
    path.chmod(0o600)
    return path


@dataclass
class SecureBroker:
    """A private broker running the shipped secure config: plain port and TLS port."""

    broker: PrivateBroker
    tls_port: int
    certs: Path

    @property
    def url(self) -> str:
        """Plain (password + ACL) listener."""
        return self.broker.url

    @property
    def tls_url(self) -> str:
        """TLS listener (mutual TLS + password + ACL)."""
        return f"mqtts://127.0.0.1:{self.tls_port}"


@contextlib.contextmanager
def secure_broker(tmp: Path) -> Iterator[SecureBroker]:
    """Start Mosquitto with lifeline.conf + lifeline-secure.conf, paths pointed at `tmp`."""
    certs = make_ca(tmp / "certs")
    pw = password_file(tmp / "lifeline.passwd", PASSWORDS)
    tls_port = free_port()
    conf = (MOSQUITTO / "lifeline-secure.conf").read_text()
    for old, new in {
        "/etc/mosquitto/lifeline.passwd": str(pw),
        "/etc/mosquitto/lifeline.acl": str(MOSQUITTO / "lifeline.acl"),
        "/etc/mosquitto/certs": str(certs),
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "per_listener_settings false": "",  # the default; Mosquitto wants it before listeners
    }.items():
        assert old in conf, f"lifeline-secure.conf no longer mentions {old}"
        conf = conf.replace(old, new)
    with start_mosquitto(extra_conf=conf) as broker:
        yield SecureBroker(broker, tls_port, certs)


class Client:
    """A blocking paho client for tests: connect result, received messages, publish."""

    def __init__(
        self, port: int, user: str | None, password: str | None = None, client_id: str = ""
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.refused: Any = None
        self.done = threading.Event()
        self.dropped = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{time.time_ns()}"
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.c.on_disconnect = lambda *_: self.dropped.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.done.wait(10)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            self.refused = rc
        else:
            self.connected.set()
        self.done.set()

    def subscribe(self, flt: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        acked = threading.Event()
        self.c.on_subscribe = lambda *_: acked.set()
        self.c.subscribe(flt, qos=1)
        assert acked.wait(10)

    def publish(self, name: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        self.c.publish(name, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        self.c.disconnect()
        self.c.loop_stop()


def batch(gateway: str, seq: int, device: str = "dev-1") -> bytes:
    """A one-reading data batch claiming to come from `gateway`."""
    rec = Record(device, "p", NOW + seq, float(seq))
    return encode(DataBatch(gateway, "s1", seq, NOW, (rec,), epoch="e1"))


def wait(cond: Any, timeout: float = 10) -> None:
    """Poll until `cond()` is truthy."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_anonymous_and_wrong_password_are_refused(tmp_path: Path) -> None:
    with secure_broker(tmp_path) as sb:
        anon = Client(sb.broker.port, None)
        wrong = Client(sb.broker.port, "gw-a", "not-the-password")
        right = Client(sb.broker.port, "gw-a", PASSWORDS["gw-a"])
        for c in (anon, wrong, right):
            c.close()
    assert anon.refused is not None
    assert wrong.refused is not None
    assert right.connected.is_set()


def test_a_gateway_cannot_publish_or_read_as_another_gateway(tmp_path: Path) -> None:
    with secure_broker(tmp_path) as sb:
        col = Client(sb.broker.port, "lifeline-collector", PASSWORDS["lifeline-collector"])
        col.subscribe("$share/ingest/lifeline/v1/+/+/data")  # as the collector subscribes
        spoofer = Client(sb.broker.port, "gw-a", PASSWORDS["gw-a"])
        gw_a = Client(sb.broker.port, "gw-a", PASSWORDS["gw-a"])
        gw_a.subscribe("lifeline/v1/+/+/cmd")  # tries to read every gateway's commands
        try:
            own = topic("s1", "gw-a", Kind.DATA)
            # Mosquitto 2.0 answers a QoS 1 publish outside the ACL by dropping the message
            # and the connection (MQTT 3.1.1 has no "not authorised" PUBACK).
            spoofer.c.publish(topic("s1", "gw-b", Kind.DATA), batch("gw-b", 1), qos=1)
            wait(lambda: not spoofer.c.is_connected())
            gw_a.publish(own, batch("gw-a", 1))
            wait(lambda: len(col.received) >= 1)
            for gw in ("gw-b", "gw-a"):  # the collector user may command any gateway
                cmd = Command(gw, "ops", 0, NOW, f"c-{gw}", "rebirth")
                col.publish(topic("s1", gw, Kind.CMD), encode(cmd))
            wait(lambda: len(gw_a.received) >= 1)
            time.sleep(0.3)  # a stray gw-b command would have been delivered by now
        finally:
            for c in (col, spoofer, gw_a):
                c.close()
    assert [t for t, _ in col.received] == [own]
    assert [t for t, _ in gw_a.received] == [topic("s1", "gw-a", Kind.CMD)]


def test_a_client_id_is_bound_to_its_user(tmp_path: Path) -> None:
    """Issue 17: gw-a's credentials with the collector's (or gw-b's) client id used to make the
    broker disconnect the real client (takeover); the client id is now the user name."""
    with secure_broker(tmp_path) as sb:
        port = sb.broker.port
        col = Client(port, "lifeline-collector", PASSWORDS["lifeline-collector"],
                     client_id="lifeline-collector")  # fmt: skip
        gw_b = Client(port, "gw-b", PASSWORDS["gw-b"], client_id="lifeline-edge-gw-b")
        col.subscribe("lifeline/v1/+/+/data")
        thieves = [
            Client(port, "gw-a", PASSWORDS["gw-a"], client_id=taken)
            for taken in ("lifeline-collector", "lifeline-edge-gw-b")
        ]
        try:
            assert all(t.connected.is_set() for t in thieves)
            # Still connected and still delivered to: a later publish reaches the collector.
            gw_b.publish(topic("s1", "gw-b", Kind.DATA), batch("gw-b", 1))
            wait(lambda: len(col.received) >= 1)
            kicked = [c.c._client_id for c in (col, gw_b) if c.dropped.is_set()]
        finally:
            for c in (col, gw_b, *thieves):
                c.close()
    assert kicked == []


def test_collector_dead_letters_a_gateway_mismatch_without_any_acl(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    """On the open test broker: gw-a's topic carrying gw-b's payload is refused, not stored."""
    db = tmp_path / "collector.db"
    port = free_port()
    args = ["collector", "run", "--mqtt", mqtt_url, "--db", f"sqlite:///{db}"]
    args += ["--root", topic_root, "--client-id", f"col-{port}", "--http", f"127.0.0.1:{port}"]
    args += ["--bootstrap-key-file", str(tmp_path / "admin.key")]  # /readyz's counters need it
    log = tmp_path / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lifeline", *args], stdout=out, stderr=out)
    try:

        def ready() -> Any:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError, FileNotFoundError):  # key: written at start
                key = {"X-API-Key": (tmp_path / "admin.key").read_text().strip()}
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, headers=key)
                return r.json() if r.status_code == 200 else None
            return None

        wait(ready, 30)
        pub = Client(int(mqtt_url.rsplit(":", 1)[1]), None)
        pub.publish(topic("s1", "gw-a", Kind.DATA, root=topic_root), batch("gw-b", 1, "spoof"))
        pub.publish(topic("s1", "gw-a", Kind.DATA, root=topic_root), batch("gw-a", 1, "real"))
        pub.close()
        wait(lambda: ready()["ingest"]["received"] >= 2, 20)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
    conn = sqlite3.connect(db)
    try:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters")]
        devices = [d for (d,) in conn.execute("SELECT DISTINCT device FROM readings")]
    finally:
        conn.close()
    assert len(reasons) == 1
    assert "'gw-a' does not match payload gateway 'gw-b'" in reasons[0]
    assert devices == ["real"]
