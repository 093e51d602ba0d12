"""Edge gateway cost: CPU, memory and latency polling firmware-sim over Modbus TCP into Mosquitto.

Phases (each a fresh gateway process; firmware-sim and the broker run alongside on loopback):
  idle  one manhole cover at 1 Hz
  load  50 manhole covers (11 points each) at 1 Hz = 550 points/s, on 5 TCP connections
  max   the same 50 devices polled faster and faster until p95 sample->broker latency > 1 s
  base  the baseline, in the same run: a bare loop in its own process that polls the same 50
        devices over 5 connections with pymodbus' own client and publishes each cycle's values
        as one wire data batch (wire.encode_data, the gateway's own encoder) with paho at QoS 1
        - no buffer, no rules, no health, no report-by-exception.
        ratio = baseline CPU per 1000 points / gateway CPU per 1000 points (1.0 = as cheap).

Latency is sample time (taken by the gateway) to arrival at a subscriber on the broker.
Figures on shared machines are noisy, and firmware-sim, the broker and the subscriber share
the same cores as the gateway: compare ratios, not absolute times. Last line: one JSON object.

    python bench/edge.py [--load-s 15] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import PrivateBroker
from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import Table, builtin_profiles
from lifeline.drivers.values import decode_response
from lifeline.wire import DataBatch, Kind, Quality, decode, encode_data, subscription, topic

ROOT = "bench/lifeline"
DEVICES = 50
POINTS_PER_DEVICE = 11  # manhole_cover
TICK = os.sysconf("SC_CLK_TCK")


class Collector:
    """Subscribes to data and notes, per record, receive time minus sample time."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        self.window: list[float] | None = None
        self.count = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-collector")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(subscription(Kind.DATA, root=ROOT), qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time() * 1000
        # The collector's own decoder: wire/codec.py is the one reader of the envelope.
        batch = decode(bytes(msg.payload))
        if not isinstance(batch, DataBatch):
            return
        with self.lock:
            if self.window is not None:
                self.window.extend(now - r.ts_ms for r in batch.records if not r.historical)
                self.count += len(batch.records)

    def start(self) -> None:
        """Begin a measurement window."""
        with self.lock:
            self.window, self.count = [], 0

    def stop(self) -> tuple[list[float], int]:
        """End the window: latencies (ms) and the number of records."""
        with self.lock:
            window, self.window = self.window or [], None
            return window, self.count

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Phase:
    """What one measurement window saw."""

    seconds: float
    cpu_s: float
    points: int
    latencies: list[float]
    rss_mb: float

    @property
    def points_per_s(self) -> float:
        """Records received per second."""
        return self.points / self.seconds

    def pct(self, q: float) -> float:
        """Latency percentile in ms (0 if nothing arrived)."""
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def simulator(work: Path) -> Iterator[int]:
    """firmware-sim with 50 manhole covers on one Modbus TCP port; yields the port."""
    scenario = work / "scenario.yaml"
    devices = [
        {"id": f"mh-{i:02d}", "unit": i, "profile": "manhole_cover"} for i in range(1, DEVICES + 1)
    ]
    server = {"name": "bench", "kind": "tcp", "port": 0, "devices": devices}
    scenario.write_text(yaml.safe_dump({"seed": 1, "tick_s": 1.0, "servers": [server]}))
    endpoints = work / "endpoints.json"
    argv = [sys.executable, "-c", "from lifeline.firmware_sim.cli import app; app()", "run"]
    argv += ["--scenario", str(scenario), "--endpoints-file", str(endpoints)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not endpoints.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("firmware-sim did not start")
            time.sleep(0.05)
        yield int(json.loads(endpoints.read_text())["servers"][0]["port"])
    finally:
        proc.terminate()
        proc.wait(10)


def gateway_config(
    work: Path, broker: PrivateBroker, port: int, devices: int, interval: float, links: int
) -> Path:
    """A gateway polling `devices` manholes every `interval` s over `links` TCP connections."""
    buses = []
    per_link = max(1, devices // links)
    for first in range(1, devices + 1, per_link):
        units = range(first, min(devices, first + per_link - 1) + 1)
        buses.append(
            {
                "type": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "devices": [
                    {
                        "id": f"mh-{u:02d}",
                        "unit": u,
                        "profile": "manhole_cover",
                        "interval_s": interval,
                        "timeout_s": 1.0,
                    }
                    for u in units
                ],
            }
        )
    cfg = {
        "gateway": "gw-bench",
        "site": "bench",
        "mqtt": {"url": broker.url, "root": ROOT, "inflight": 16},
        "buffer": {"path": str(work / f"edge-{time.monotonic_ns()}.sqlite"), "flush_s": 0.05},
        "status_interval_s": 60,
        "buses": buses,
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def gateway_argv(config: Path) -> list[str]:
    """The gateway daemon's command line."""
    run = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "run",
        "--config",
        str(config),
    ]
    return [*run, "--log-level", "warning"]


async def _baseline(sim_port: int, host: str, port: int, devices: int, links: int) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    (req,) = plan_reads(builtin_profiles()["manhole_cover"].points)
    assert req.table is Table.INPUT, "the baseline reads the manhole cover's one input block"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    pub.max_inflight_messages_set(16)
    pub.connect(host, port)
    pub.loop_start()
    data_topic = topic("bench", "gw-baseline", Kind.DATA, root=ROOT)
    seq = itertools.count(1)
    good = Quality.GOOD.value

    async def poll(units: range) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim_port, timeout=1.0)
        await client.connect()
        while True:
            due = time.monotonic() + 1.0
            rows = []
            for unit in units:
                resp = await client.read_input_registers(
                    req.address, count=req.count, device_id=unit
                )
                ts = int(time.time() * 1000)
                values = decode_response(req, resp.registers)
                rows += [[f"mh-{unit}", n, ts, v, good, False] for n, v in values.items()]
            # The same wire batch the gateway sends (wire/codec.py's hot-path encoder).
            payload = encode_data("gw-baseline", "bench", "1", next(seq), ts, rows)
            pub.publish(data_topic, payload, qos=1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    per_link = max(1, devices // links)
    units = [range(f, min(devices, f + per_link - 1) + 1) for f in range(1, devices + 1, per_link)]
    await asyncio.gather(*(poll(u) for u in units))


def baseline_argv(sim_port: int, broker: PrivateBroker) -> list[str]:
    """The bare pymodbus + paho loop's command line (this script, in baseline mode)."""
    target = f"{sim_port},{broker.host},{broker.port},{DEVICES},5"
    return [sys.executable, str(Path(__file__).resolve()), "--baseline-worker", target]


def measure(argv: list[str], sub: Collector, warmup_s: float, seconds: float) -> Phase:
    """Run a poller process, measure a window after warm-up, stop it with SIGTERM."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup_s)
        cpu0 = cpu_seconds(proc.pid)
        sub.start()
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1 = cpu_seconds(proc.pid)
        elapsed = time.monotonic() - t0
        latencies, points = sub.stop()
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
    return Phase(elapsed, cpu1 - cpu0, points, latencies, rss)


def main() -> None:
    """Run the phases, print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-s", type=float, default=15.0, help="load window (s)")
    parser.add_argument("--quick", action="store_true", help="shorter windows (smoke run)")
    parser.add_argument("--baseline-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        sim_port, host, port, devices, links = args.baseline_worker.split(",")
        asyncio.run(_baseline(int(sim_port), host, int(port), int(devices), int(links)))
        return
    load_s = 5.0 if args.quick else args.load_s
    step_s = 2.0 if args.quick else 4.0
    work = Path(tempfile.mkdtemp(prefix="lifeline-edge-bench-"))
    broker = PrivateBroker(work / "broker")
    broker.start()
    try:
        with simulator(work) as port:
            sub = Collector(broker.host, broker.port)
            try:
                idle_cfg = gateway_config(work, broker, port, 1, 1.0, 1)
                idle = measure(gateway_argv(idle_cfg), sub, 3, load_s / 2)
                load_cfg = gateway_config(work, broker, port, DEVICES, 1.0, 5)
                load = measure(gateway_argv(load_cfg), sub, 3, load_s)
                base = measure(baseline_argv(port, broker), sub, 3, load_s)
                steps: list[tuple[float, Phase]] = []
                for interval in (0.1, 0.05, 0.03, 0.02, 0.015, 0.01):
                    offered = DEVICES * POINTS_PER_DEVICE / interval
                    cfg = gateway_config(work, broker, port, DEVICES, interval, 10)
                    phase = measure(gateway_argv(cfg), sub, 2, step_s)
                    steps.append((offered, phase))
                    if phase.pct(0.95) > 1000 or phase.points_per_s < 0.9 * offered:
                        break
            finally:
                sub.close()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(idle, load, base, steps)


def report(idle: Phase, load: Phase, base: Phase, steps: list[tuple[float, Phase]]) -> None:
    """Print the table and the JSON line."""
    sustained = [p for o, p in steps if p.pct(0.95) <= 1000 and p.points_per_s >= 0.9 * o]
    max_pps = max((p.points_per_s for p in sustained), default=0.0)
    per_1k = load.cpu_s / max(1, load.points) * 1000
    base_per_1k = base.cpu_s / max(1, base.points) * 1000
    result = {
        "cpu_share": round(load.cpu_s / load.seconds, 4),
        "cpu_s_per_1k_points": round(per_1k, 4),
        "baseline_cpu_s_per_1k_points": round(base_per_1k, 4),
        "baseline_cpu_share": round(base.cpu_s / base.seconds, 4),
        "ratio": round(base_per_1k / per_1k, 3) if per_1k else 0.0,
        "rss_mb": round(max([load.rss_mb, idle.rss_mb] + [p.rss_mb for _, p in steps]), 1),
        "points_per_s": round(load.points_per_s, 1),
        "latency_p50_ms": round(load.pct(0.5), 1),
        "latency_p95_ms": round(load.pct(0.95), 1),
        "idle_cpu_share": round(idle.cpu_s / idle.seconds, 4),
        "max_points_per_s": round(max_pps),
        "max_steps": [
            {
                "offered": round(o),
                "points_per_s": round(p.points_per_s),
                "p95_ms": round(p.pct(0.95), 1),
                "cpu_share": round(p.cpu_s / p.seconds, 3),
            }
            for o, p in steps
        ],
    }
    print(
        f"{'phase':28} {'points/s':>10} {'CPU share':>10} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7}"
    )
    rows = [("idle (1 device, 1 Hz)", idle), ("load (50 devices, 1 Hz)", load)]
    rows += [("baseline: pymodbus+paho loop", base)]
    rows += [(f"max: offered {o:,.0f}/s", p) for o, p in steps]
    for name, p in rows:
        print(
            f"{name:28} {p.points_per_s:>10,.0f} {p.cpu_s / p.seconds:>10.3f} "
            f"{p.pct(0.5):>8.1f} {p.pct(0.95):>8.1f} {p.rss_mb:>7.1f}"
        )
    print(
        f"CPU s per 1000 points at load: {result['cpu_s_per_1k_points']}"
        f" (bare pymodbus+paho loop: {result['baseline_cpu_s_per_1k_points']};"
        f" ratio {result['ratio']})"
    )
    if steps and steps[-1][1].cpu_s / steps[-1][1].seconds < 0.9:
        print("note: the gateway never used a full core; the load generator (firmware-sim) hit")
        print("      its limit first, so max_points_per_s is a lower bound for the gateway")
    print(f"max sustained points/s (p95 <= 1 s): {result['max_points_per_s']:,}")
    print(f"median step latency: {statistics.median([p.pct(0.5) for _, p in steps] or [0]):.1f} ms")
    print("(shared machine; firmware-sim, broker and subscriber share the cores: compare ratios)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
