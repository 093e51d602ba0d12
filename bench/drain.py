"""Drain 1 000 000 buffered readings from the edge outbox to a private Mosquitto over QoS 1.

Baseline in the same run: a plain paho publish loop of the very same payloads to the same
broker (QoS 1, waiting for every PUBACK). Figures on shared machines are noisy: compare the
ratio, not the absolute rates. Last line: one JSON object.

    python bench/drain.py [--readings 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttConfig
from edge.outbox import Frozen, Outbox
from edge.uplink import Uplink
from lifeline.broker import PrivateBroker
from wire import Birth, Command, CommandReply, Kind, Quality, topic

GATEWAY = "gw-bench"
ROOT = "bench/lifeline"
DEVICES = 50
POINTS = 10
INFLIGHT = 16


def fill(box: Outbox, readings: int) -> None:
    """Buffer `readings` samples as an outage would leave them (50 devices x 10 points)."""
    t0 = time.time_ns() // 1_000_000 - 86_400_000
    chunk = 50_000
    for start in range(0, readings, chunk):
        box.add(
            (f"dev-{i % DEVICES:03d}", f"p{(i // DEVICES) % POINTS}", t0 + i // 10, i * 0.5,
             Quality.GOOD)
            for i in range(start, min(readings, start + chunk))
        )  # fmt: skip
        box.flush(None, 0)


async def drain(box: Outbox, url: str) -> tuple[float, list[bytes]]:
    """Drain the outbox through the real uplink; return seconds taken and the payloads sent."""
    cfg = MqttConfig(url=url, root=ROOT, inflight=INFLIGHT)

    def birth() -> Birth:
        return Birth(GATEWAY, box.session, 0, time.time_ns() // 1_000_000, software="bench")

    async def no_commands(cmd: Command) -> CommandReply:
        return CommandReply(GATEWAY, box.session, 0, cmd.sent_ms, command_id=cmd.command_id)

    sent: dict[int, bytes] = {}
    original = box.ready

    def capture_ready(exclude: set[int], limit: int, live_since_ms: int) -> list[Frozen]:
        batches = original(exclude, limit, live_since_ms)  # keep what went out, for the baseline
        sent.update((b.seq, b.payload) for b in batches)
        return batches

    box.ready = capture_ready  # type: ignore[method-assign]
    uplink = Uplink(cfg, "bench", GATEWAY, box.session, box, birth, no_commands)
    task = asyncio.create_task(uplink.run())
    # Polling is the measurement here: the uplink has no "drained" event to wait on.
    while not uplink.connected:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    while box.backlog or box.frozen_count():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await uplink.close()
    await task
    return elapsed, [sent[k] for k in sorted(sent)]


def baseline(payloads: list[bytes], host: str, port: int) -> float:
    """Plain paho: publish every payload QoS 1 and wait for all PUBACKs; return seconds."""
    done = threading.Event()
    remaining = [len(payloads)]

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    client.max_inflight_messages_set(INFLIGHT)
    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    name = topic("bench", "gw-baseline", Kind.DATA, root=ROOT)
    started = time.perf_counter()
    for p in payloads:
        client.publish(name, p, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed


def main() -> None:
    """Run the benchmark and print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifeline-drain-"))
    broker = PrivateBroker(work / "broker")
    broker.start()
    try:
        box = Outbox(work / "edge.sqlite", GATEWAY, "bench", max_mb=1024, batch_records=2000)
        t = time.perf_counter()
        fill(box, args.readings)
        fill_s = time.perf_counter() - t
        drain_s, payloads = asyncio.run(drain(box, broker.url))
        box.close()
        base_s = baseline(payloads, broker.host, broker.port)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    rate = args.readings / drain_s
    base_rate = args.readings / base_s
    result = {
        "readings": args.readings,
        "batches": len(payloads),
        "readings_per_s": round(rate),
        "baseline_readings_per_s": round(base_rate),
        "ratio": round(rate / base_rate, 3),
        "buffer_fill_readings_per_s": round(args.readings / fill_s),
        "inflight": INFLIGHT,
    }
    print(f"{'what':40} {'value':>14}")
    print(f"{'buffered readings':40} {args.readings:>14,}")
    print(f"{'buffer fill (readings/s)':40} {result['buffer_fill_readings_per_s']:>14,}")
    print(f"{'edge outbox drain (readings/s)':40} {result['readings_per_s']:>14,}")
    print(f"{'plain paho loop, same payloads':40} {result['baseline_readings_per_s']:>14,}")
    print(f"{'ratio (target >= 0.8)':40} {result['ratio']:>14}")
    print("(shared machine: compare the ratio, not absolute rates)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
