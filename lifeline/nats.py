"""Private NATS servers with JetStream and MQTT on loopback, for tests and benchmarks: one node,
or a cluster of three.

NATS 2.9 (Debian's `nats-server`) speaks MQTT 3.1.1 only (an MQTT 5 CONNECT gets CONNACK
"unacceptable protocol version"), QoS 0 and 1 (a QoS 2 subscription is granted QoS 1), keeps
MQTT sessions and QoS 1 messages in JetStream streams replicated across the cluster (to all
three nodes here), grants `$share/...` filters without ever delivering on them, and drops a
client that publishes on a topic holding '.' or ' '. Each node gets its own free ports and
its own storage folder.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import free_port, wait_for_port

__all__ = ["NatsNode", "nats_binary", "nats_cluster", "nats_node"]


def nats_binary() -> str:
    """Path of nats-server, or raise FileNotFoundError saying how to get it."""
    exe = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if exe is None:
        raise FileNotFoundError(
            "nats-server is not installed: run scripts/setup.sh --tests (apt-get install"
            " nats-server)"
        )
    return exe


@dataclass
class NatsNode:
    """One nats-server process: client, MQTT and cluster ports on 127.0.0.1, data in `workdir`."""

    name: str
    workdir: Path
    mqtt_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    routes: list[int] = field(default_factory=list)  # cluster ports of the other nodes
    replicas: int = 3  # of every MQTT stream and consumer, in a cluster
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt:// URL of this node's MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def _write_conf(self) -> Path:
        replicas = f", stream_replicas: {self.replicas}, consumer_replicas: {self.replicas}"
        replicas = replicas if self.routes else ""
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f'jetstream {{ store_dir: "{self.workdir / "js"}", max_mem: 64MB, max_file: 1GB }}',
            # Redelivery of an unacknowledged QoS 1 message after 10 s, not NATS's 30 s default:
            # keeps a test that kills a collector short. In a cluster, every MQTT stream and
            # consumer on all three nodes: NATS otherwise takes as many replicas as nodes it
            # sees at the first MQTT connect (measured: 2 of 3), and losing one of 2 leaves no
            # quorum, so no node accepts an MQTT session until the dead one returns.
            f'mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, ack_wait: "10s"{replicas} }}',
        ]
        if self.routes:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: lifeline, listen: 127.0.0.1:{self.cluster_port},"
                f" routes: [{routes}] }}"
            )
        conf = self.workdir / f"{self.name}.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def start(self) -> None:
        """Start (or restart) the node, keeping its JetStream storage."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write_conf()
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen([nats_binary(), "-c", str(conf)], stdout=log, stderr=log)
        wait_for_port("127.0.0.1", self.mqtt_port)

    def kill(self) -> None:
        """SIGKILL: what a machine that dies does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _accepts(port: int) -> bool:
    """Whether the MQTT listener on `port` accepts a clean MQTT 3.1.1 session within 3 s."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, f"ready-{uuid.uuid4().hex[:8]}", clean_session=True
    )
    accepted: list[bool] = []
    client.on_connect = lambda c, u, f, r, p: accepted.append(not r.is_failure)
    with contextlib.suppress(OSError):
        client.connect("127.0.0.1", port, 5)
        end = time.monotonic() + 3
        while not accepted and time.monotonic() < end:
            client.loop(0.1)
        client.disconnect()
    return bool(accepted and accepted[0])


def mqtt_ready(port: int, timeout: float = 60.0) -> None:
    """Wait until the node's MQTT listener on `port` accepts a session (NATS refuses MQTT
    clients until JetStream is up and, in a cluster, its meta leader elected), or raise
    TimeoutError."""
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"NATS MQTT on port {port} refuses sessions after {timeout} s")
        time.sleep(0.5)


@contextlib.contextmanager
def nats_node(workdir: Path) -> Iterator[NatsNode]:
    """A single NATS node with JetStream and MQTT, stopped (and its storage kept) afterwards."""
    node = NatsNode("n1", workdir)
    node.start()
    try:
        mqtt_ready(node.mqtt_port)
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def nats_cluster(workdir: Path, size: int = 3) -> Iterator[list[NatsNode]]:
    """`size` clustered NATS nodes (JetStream and MQTT on each, streams replicated), all
    accepting MQTT sessions when the block starts; every node is stopped afterwards."""
    nodes = [NatsNode(f"n{i}", workdir / f"n{i}") for i in range(1, size + 1)]
    for node in nodes:
        node.routes = [other.cluster_port for other in nodes if other is not node]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            mqtt_ready(node.mqtt_port)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
