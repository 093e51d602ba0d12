"""Drain 1 000 000 buffered readings from the edge outbox to a private Mosquitto over QoS 1.

Baseline in the same run: a plain paho publish loop of the very same payloads to the same
broker (QoS 1, waiting for every PUBACK). The buffer is filled once and copied for each round;
rounds alternate drain and baseline, and the ratio reported is the median of the rounds' ratios
(one round lasts a fraction of a second, so a single one is at the mercy of whatever else the
machine runs). Figures on shared machines are noisy: compare the ratio, not the absolute
rates. Last line: one JSON object.

    python bench/drain.py [--readings 1000000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker import PrivateBroker
from lifeline.edge.buffer import Frozen, Outbox
from lifeline.edge.config import MqttConfig
from lifeline.edge.uplink import Uplink
from lifeline.wire import Birth, Command, CommandReply, Kind, Quality, topic

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


async def drain(box: Outbox, url: str) -> tuple[float, float, list[bytes]]:
    """Drain the outbox through the real uplink: wall and CPU seconds, and the payloads sent."""
    cfg = MqttConfig(url=url, root=ROOT, inflight=INFLIGHT)

    def birth() -> Birth:
        return Birth(GATEWAY, box.session, 0, time.time_ns() // 1_000_000, software="bench")

    async def no_commands(cmd: Command) -> CommandReply:
        return CommandReply(GATEWAY, box.session, 0, cmd.sent_ms, command_id=cmd.command_id)

    sent: dict[int, bytes] = {}
    original = box.ready

    def capture_ready(exclude: set[int], limit: int, live_since_ms: int) -> Iterator[Frozen]:
        for b in original(exclude, limit, live_since_ms):
            sent[b.seq] = b.payload  # keep what went out, for the baseline
            yield b

    box.ready = capture_ready  # type: ignore[method-assign]
    uplink = Uplink(cfg, "bench", GATEWAY, box.session, box, birth, no_commands)
    task = asyncio.create_task(uplink.run())
    # Polling is the measurement here: the uplink has no "drained" event to wait on.
    while not uplink.connected:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    started, cpu = time.perf_counter(), time.process_time()
    while box.backlog or box.frozen_count():  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    box.commit_acks()  # the drained rows are deleted inside the timed part
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await uplink.close()
    await task
    return elapsed, cpu, [sent[k] for k in sorted(sent)]


def baseline(payloads: list[bytes], host: str, port: int) -> tuple[float, float]:
    """Plain paho: publish every payload QoS 1, wait for all PUBACKs; wall and CPU seconds."""
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
    started, cpu = time.perf_counter(), time.process_time()
    for p in payloads:
        client.publish(name, p, qos=1)
    done.wait(300)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    client.loop_stop()
    client.disconnect()
    return elapsed, cpu


Round = tuple[float, float, float, float, int]  # drain wall, CPU; baseline wall, CPU; batches


def one_round(template: Path, work: Path, url: str, host: str, port: int) -> Round:
    """Drain a fresh copy of the filled buffer, then publish its payloads with plain paho."""
    db = work / "round.sqlite"
    shutil.copyfile(template, db)
    # An outage's buffer was written long ago and is on disk; a fresh copy is 80 MB of dirty
    # page cache that the kernel would write back during the timed drain.
    fd = os.open(db, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    box = Outbox(db, GATEWAY, "bench", max_mb=1024, batch_records=2000)
    drain_s, drain_cpu, payloads = asyncio.run(drain(box, url))
    box.close()
    for f in work.glob("round.sqlite*"):
        f.unlink()
    base_s, base_cpu = baseline(payloads, host, port)
    return drain_s, drain_cpu, base_s, base_cpu, len(payloads)


def main() -> None:
    """Run the benchmark and print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifeline-drain-"))
    broker = PrivateBroker(work / "broker")
    broker.start()
    rounds = []
    try:
        template = work / "filled.sqlite"
        box = Outbox(template, GATEWAY, "bench", max_mb=1024, batch_records=2000)
        t = time.perf_counter()
        fill(box, args.readings)
        fill_s = time.perf_counter() - t
        box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file to copy
        box.close()
        for _ in range(args.rounds):
            rounds.append(one_round(template, work, broker.url, broker.host, broker.port))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [r[2] / r[0] for r in rounds]
    ratio = statistics.median(ratios)
    drain_s = statistics.median(r[0] for r in rounds)
    base_s = statistics.median(r[2] for r in rounds)
    drain_cpu = statistics.median(r[1] for r in rounds)
    base_cpu = statistics.median(r[3] for r in rounds)
    rate = args.readings / drain_s
    base_rate = args.readings / base_s
    result = {
        "readings": args.readings,
        "batches": rounds[0][4],
        "readings_per_s": round(rate),
        "baseline_readings_per_s": round(base_rate),
        "ratio": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
        "buffer_fill_readings_per_s": round(args.readings / fill_s),
        "drain_cpu_s": round(drain_cpu, 3),  # this process only (the broker is apart)
        "baseline_cpu_s": round(base_cpu, 3),
        "inflight": INFLIGHT,
    }
    print(f"{'what':40} {'value':>14}")
    print(f"{'buffered readings':40} {args.readings:>14,}")
    print(f"{'buffer fill (readings/s)':40} {result['buffer_fill_readings_per_s']:>14,}")
    print(f"{'edge outbox drain (readings/s, median)':40} {result['readings_per_s']:>14,}")
    print(
        f"{'plain paho loop, same payloads (median)':40} {result['baseline_readings_per_s']:>14,}"
    )
    print(f"{'ratio, median of rounds (target >= 0.8)':40} {result['ratio']:>14}")
    cpus = f"{drain_cpu:.3f} / {base_cpu:.3f}"
    print(f"{'CPU s, drain / plain paho (medians)':40} {cpus:>14}")
    print(f"{'ratio per round':40} {' '.join(str(r) for r in result['ratios']):>14}")
    print("(shared machine: compare the ratio, not absolute rates)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
