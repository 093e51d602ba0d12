"""A real broker cluster: three NATS nodes (JetStream + MQTT 3.1.1), two gateways on different
nodes, two collectors splitting the sites by partition leases in PostgreSQL (NATS does not
honour `$share`). Mid-stream, one broker node is SIGKILLed (a gateway's and a collector's
node), then one collector: the gateways reconnect to a surviving node within 10 s, the other
collector takes the dead one's partition (its session, with what was queued there) over, and
the books balance: every committed reading and alarm event stored exactly once.
docs/RELIABILITY.md records the figures ("Broker cluster").

Also the acknowledgement and kill test on a single NATS node: the collector and the gateway
SIGKILLed in turn under load; the books balance (PUBACK only after the commit, on both sides).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.nats import NatsNode, nats_cluster
from lifeline.wire import Kind, decode, subscription
from tests.e2e.test_proof_district import (
    ROOT,
    Proc,
    district,
    finish_and_account,
    report,
    wait_for,
)
from tests.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.proof]

SITES = ("north", "south")  # one per gateway: partitions split by site
PARTITIONS = "pn=north;ps=south"


class Births:
    """An MQTT 3.1.1 listener with a persistent session (it survives its own node's election
    pause): each gateway's births, by the wall time the gateway built them at its CONNACK."""

    def __init__(self, node: NatsNode) -> None:
        self.sent_ms: list[tuple[int, str]] = []  # (birth sent_ms, gateway)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, f"births-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", node.mqtt_port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(subscription(Kind.BIRTH, root=ROOT), 1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        birth = decode(bytes(msg.payload))
        self.sent_ms.append((birth.sent_ms, birth.gateway))

    def after(self, gateway: str, t_ms: int) -> float | None:
        """Seconds from wall time `t_ms` to the first birth `gateway` built after it, if any."""
        later = [ms for ms, gw in self.sent_ms if gw == gateway and ms > t_ms]
        return (min(later) - t_ms) / 1000 if later else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _readyz(tmp: Path, port: int) -> dict[str, Any]:
    """A collector's /readyz with the counters (they need a key: the bootstrapped one)."""
    keys = sorted(tmp.glob("collector-*.key"))
    headers = {"X-API-Key": keys[0].read_text().strip()} if keys else {}
    try:
        body: dict[str, Any] = httpx.get(
            f"http://127.0.0.1:{port}/readyz", timeout=2, headers=headers
        ).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body


def held(tmp: Path, port: int) -> list[str]:
    """The partitions a collector says it holds ([] if it does not answer)."""
    return list(_readyz(tmp, port).get("partitions", {}).get("held", []))


def readings_of(tmp: Path, port: int) -> int:
    """Readings a collector committed since it started (0 if it does not answer)."""
    return int(_readyz(tmp, port).get("ingest", {}).get("readings", 0))


def test_cluster_node_and_collector_killed_mid_stream_lose_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("LIFELINE_CLUSTER_SEED", "1818"))
    with (
        district(tmp_path, gateways=2, devices=40, seed=seed, duration_s=60) as d,
        nats_cluster(tmp_path / "nats") as nodes,
    ):
        urls = [n.url for n in nodes]
        # Collector a starts on node 1, b on node 2; each has the others to fail over to.
        orders = {"a": [0, 1, 2], "b": [1, 2, 0]}
        ports: dict[str, int] = {}
        procs: dict[str, Proc] = {}
        for name, order in orders.items():
            ports[name] = free_port()
            args = ["collector", "run", "--mqtt", ",".join(urls[i] for i in order)]
            args += ["--mqtt-protocol", "3.1.1", "--db", d.db_url, "--root", ROOT]
            args += ["--client-id", "ingest", "--partitions", PARTITIONS]
            args += ["--http", f"127.0.0.1:{ports[name]}"]
            args += ["--bootstrap-key-file", str(tmp_path / f"collector-{name}.key")]
            procs[name] = Proc(f"collector-{name}", args, tmp_path / f"collector-{name}.log")
            procs[name].start()
            d.collectors.append(procs[name])
            d.http_ports.append(ports[name])
            d.wait_ready(len(d.collectors) - 1)
        births = Births(nodes[1])
        try:
            # gw-1 on node 1, gw-2 on node 3: different nodes, each with the others as failover.
            homes = {"gw-1": [0, 1, 2], "gw-2": [2, 0, 1]}
            for (gw, order), server, site in zip(
                homes.items(), d.scenario["servers"], SITES, strict=True
            ):
                mqtt_over = {
                    "url": urls[order[0]],
                    "failover_urls": [urls[i] for i in order[1:]],
                    "protocol": "3.1.1",
                }
                d.add_gateway(gw, server, site=site, mqtt=mqtt_over)
            wait_for(
                "both collectors to ingest",
                lambda: readings_of(tmp_path, ports["a"]) and readings_of(tmp_path, ports["b"]),
                60,
            )
            time.sleep(4)
            split = {name: readings_of(tmp_path, port) for name, port in ports.items()}

            node_killed_ms = time.time_ns() // 1_000_000
            nodes[0].kill()  # gw-1's node, and collector a's
            time.sleep(5)
            b_before = readings_of(tmp_path, ports["b"])
            procs["b"].kill()  # the collector of one partition dies mid-stream
            collector_killed_at = time.monotonic()
            a_at_kill = readings_of(tmp_path, ports["a"])
            wait_for("a to take b's partition", lambda: len(held(tmp_path, ports["a"])) == 2, 30)
            takeover_s = time.monotonic() - collector_killed_at
            time.sleep(5)
            a_after = readings_of(tmp_path, ports["a"])
            # The birth reaches the listener through the cluster, which may still be electing
            # after the node's death: wait for it (bounded) rather than look once.
            wait_for(
                "gw-1's birth after its node died",
                lambda: births.after("gw-1", node_killed_ms) is not None,
                30,
            )
            reconnect_s = births.after("gw-1", node_killed_ms)
            books = finish_and_account(d)
        finally:
            births.close()
    problems = [p for bk in books for p in bk.problems()]
    report(
        "cluster",
        {
            "seed": seed,
            "readings_before_node_kill": split,
            "gw1_reconnect_s": reconnect_s,
            "b_readings_at_its_kill": b_before,
            "a_readings_after_b_died": a_after - a_at_kill,
            "a_took_over_b_partition_s": takeover_s,
            "books": [vars(bk) for bk in books],
        },
    )
    assert all(n > 0 for n in split.values()), f"the collectors did not split the load: {split}"
    assert reconnect_s is not None, "gw-1 never published a birth after its node died"
    assert reconnect_s < 10, f"gw-1 took {reconnect_s:.1f} s to reconnect to a surviving node"
    assert a_after > a_at_kill, "the surviving collector did not take the dead one's partition"
    assert not problems, problems


def test_single_nats_node_acknowledges_only_what_the_collector_committed(
    tmp_path: Path,
) -> None:
    """The collector and the gateway SIGKILLed in turn on one NATS node (MQTT 3.1.1): every
    reading and alarm event the gateway committed is stored exactly once."""
    from lifeline.nats import nats_node

    seed = int(os.environ.get("LIFELINE_CLUSTER_SEED", "1818"))
    with (
        district(tmp_path, gateways=1, devices=20, seed=seed, duration_s=40) as d,
        nats_node(tmp_path / "nats") as node,
    ):
        port = free_port()
        args = ["collector", "run", "--mqtt", node.url, "--mqtt-protocol", "3.1.1"]
        args += ["--db", d.db_url, "--root", ROOT, "--client-id", "ingest"]
        args += ["--http", f"127.0.0.1:{port}"]
        args += ["--bootstrap-key-file", str(tmp_path / "collector-1.key")]
        proc = Proc("collector", args, tmp_path / "collector.log")
        proc.start()
        d.collectors.append(proc)
        d.http_ports.append(port)
        d.wait_ready(0)
        over = {"url": node.url, "protocol": "3.1.1"}
        d.add_gateway("gw-1", d.scenario["servers"][0], mqtt=over)
        wait_for("the collector to ingest", lambda: readings_of(tmp_path, port), 60)
        kills = 0
        for i in range(4):
            time.sleep(2)
            victim = d.gateways["gw-1"] if i % 2 == 0 else proc  # the last: the collector
            victim.kill()
            kills += 1
            victim.start()
            if victim is proc:
                d.wait_ready(0)
        books = finish_and_account(d)
    problems = [p for bk in books for p in bk.problems()]
    report("nats_single_node_ack", {"seed": seed, "kills": kills,
                                    "books": [vars(bk) for bk in books]})  # fmt: skip
    assert not problems, problems
