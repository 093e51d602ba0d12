"""Bus benchmark: 32 simulated devices on one emulated 9600-baud RTU bus (pty).

Reports achieved device polls per second against the theoretical maximum for the same
requests at the line rate (bytes on the wire plus the 3.5-character silences Modbus RTU
requires), and requests per cycle with the read planner versus one request per point.
Then the same bus with one device busy 40 % of the time (exception 06, waited out with the
gateway's bounded retries) and one dead device (offline after three silent polls, re-probed
with backoff), measured from when the gateway has found the dead one out: the others'
polls/s against the line rate of their own requests (`efficiency_faulty`; what is missing is
the busy device's retries and backoff sleeps and the dead one's re-probes, a timeout each),
and their cycle time against the healthy run's (`cycle_ratio_faulty`).
Both runs go through the gateway's own scheduler (BusPoller) with its default device settings.
Run from the repository root: `python bench/bus.py [--seconds 20] [--devices 32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any, Literal

from lifeline.drivers.errors import DriverError
from lifeline.drivers.link import char_time
from lifeline.drivers.planner import ReadRequest
from lifeline.drivers.profile import builtin_profiles
from lifeline.drivers.values import Value
from lifeline.edge.config import DeviceConfig, HealthConfig, RtuBus
from lifeline.edge.scheduler import BusPoller, Device, Health, make_device
from lifeline.firmware_sim.scenario import Scenario
from lifeline.firmware_sim.simulation import Simulation

FAMILIES = ["manhole_cover", "streetlight", "gas_detector", "tilt_sensor"]
PARITY: Literal["E"] = "E"  # Modbus RTU default framing 8E1: 11 bits per character
BUSY_UNIT, DEAD_UNIT = 1, 2  # in the faulty run
WARM_UP_S = 0.5  # before measuring; the faulty run also waits for the dead device to be offline


def transaction_s(request: ReadRequest, char_s: float) -> float:
    """Line time of one read: request + response bytes and a 3.5-char silence before each."""
    req, resp = request.rtu_bytes
    return (req + resp + 2 * 3.5) * char_s


class Counting:
    """A PollSink that counts good polls per device, from a start time on."""

    def __init__(self) -> None:
        self.polls: Counter[str] = Counter()
        self.counting = False

    def values(self, device: Device, values: dict[str, Value], ts_ms: int) -> None:
        if self.counting:
            self.polls[device.id] += 1

    def failure(self, device: Device, error: DriverError, ts_ms: int) -> None:
        """Failures are the dead device's: its cost is in the others' figures."""

    def transition(self, device: Device, state: Health, reason: str, ts_ms: int) -> None:
        """Health changes are expected (busy: degraded, dead: offline)."""


async def poll_bus(
    path: str,
    baud: int,
    units: dict[int, str],
    seconds: float,
    warm_up_s: float,
    timeout: float,  # noqa: ASYNC109 - the devices' per-request timeout, not this call's
    dead_units: tuple[int, ...] = (),
) -> tuple[Counting, float, BusPoller]:
    """Poll every unit as often as the line allows for `seconds`, after `warm_up_s` (and once
    the units in `dead_units` are offline)."""
    profiles = builtin_profiles()
    bus = RtuBus.model_validate(
        {
            "type": "rtu",
            "port": path,
            "baudrate": baud,
            "parity": PARITY,
            "devices": [
                # interval 1 ms: every device is always due, the bus is never idle
                {"id": f"d{u}", "unit": u, "profile": p, "interval_s": 0.001, "timeout_s": timeout}
                for u, p in units.items()
            ],
        }
    )
    health = HealthConfig()
    devices = [
        make_device(DeviceConfig.model_validate(d.model_dump()), profiles[d.profile], health)
        for d in bus.devices
    ]
    sink = Counting()
    poller = BusPoller(bus, devices, sink)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(warm_up_s)
    # A dead device costs its timeouts until it is offline (three polls), then only a re-probe
    # now and then: measure from when the gateway has found it out.
    while any(d.cfg.unit == DEAD_UNIT and d.health.state is not Health.OFFLINE for d in devices):
        if DEAD_UNIT not in dead_units:
            break
        await asyncio.sleep(0.1)
    sink.counting = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return sink, elapsed, poller


async def run(seconds: float, devices: int, baud: int, request_timeout: float) -> dict[str, Any]:
    """Measure the healthy bus, then the bus with a busy and a dead device; return the figures."""
    profiles = builtin_profiles()
    units = {u: FAMILIES[u % len(FAMILIES)] for u in range(1, devices + 1)}
    plans = {u: make_device(_cfg(u, p), profiles[p], HealthConfig()).reader.plan
             for u, p in units.items()}  # fmt: skip
    char_s = char_time(baud, PARITY)
    line_s = {u: sum(transaction_s(r, char_s) for r in plan) for u, plan in plans.items()}
    cycle_theory_s = sum(line_s.values())
    planned = sum(len(plan) for plan in plans.values())
    per_point = sum(len(profiles[p].points) for p in units.values())

    def scenario(faulty: bool) -> Scenario:
        devs: list[dict[str, Any]] = [
            {"id": f"d{u}", "unit": u, "profile": p} for u, p in units.items()
        ]
        if faulty:
            devs[BUSY_UNIT - 1]["quirks"] = [{"kind": "busy", "probability": 0.4}]
            devs[DEAD_UNIT - 1]["fault"] = {"kind": "no_answer"}
        server = {"name": "bus", "kind": "serial", "baudrate": baud, "parity": PARITY,
                  "devices": devs}  # fmt: skip
        return Scenario.model_validate({"seed": 1, "servers": [server]})

    async with Simulation(scenario(False), control_port=None) as sim:
        path = sim.endpoints["servers"][0]["path"]
        healthy, elapsed, poller = await poll_bus(
            path, baud, units, seconds, WARM_UP_S, request_timeout
        )
    errors = sum(d.errors for d in poller.devices)
    polls = sum(healthy.polls.values())
    achieved = polls / elapsed
    theoretical = devices / cycle_theory_s
    cycles = polls / devices

    async with Simulation(scenario(True), control_port=None) as sim:
        path = sim.endpoints["servers"][0]["path"]
        faulty, f_elapsed, f_poller = await poll_bus(
            path, baud, units, seconds, WARM_UP_S, request_timeout, (DEAD_UNIT,)
        )
        busy_given = sim.devices[f"d{BUSY_UNIT}"].stats.busy
    others = [u for u in units if u not in (BUSY_UNIT, DEAD_UNIT)]
    others_cycle_theory_s = sum(line_s[u] for u in others)
    others_polls = sum(faulty.polls[f"d{u}"] for u in others)
    others_theoretical = len(others) / others_cycle_theory_s
    busy_dev = next(d for d in f_poller.devices if d.cfg.unit == BUSY_UNIT)
    dead_dev = next(d for d in f_poller.devices if d.cfg.unit == DEAD_UNIT)
    # The others' cycle: how long each of them waits between two polls, faulty over healthy.
    cycle_faulty = f_elapsed / (others_polls / len(others))
    cycle_healthy = elapsed / cycles
    return {
        "bench": "bus",
        "efficiency": round(achieved / theoretical, 3),
        "request_reduction": round(per_point / planned, 2),
        "baud": baud,
        "devices": devices,
        "achieved_polls_per_s": round(achieved, 2),
        "theoretical_polls_per_s": round(theoretical, 2),
        "cycles": round(cycles, 1),
        "errors": errors,
        "requests_per_cycle_planned": planned,
        "requests_per_cycle_one_per_point": per_point,
        "cycle_s_theoretical": round(cycle_theory_s, 4),
        "cycle_s_achieved": round(elapsed / cycles, 4),
        "seconds": round(elapsed, 2),
        "parity": PARITY,
        "efficiency_faulty": round(others_polls / f_elapsed / others_theoretical, 3),
        "cycle_ratio_faulty": round(cycle_faulty / cycle_healthy, 3),
        "busy_answers": busy_given,
        "busy_polls_delivered": faulty.polls[f"d{BUSY_UNIT}"],
        "busy_device_state": busy_dev.health.state.value,
        "dead_device_state": dead_dev.health.state.value,
    }


def _cfg(unit: int, profile: str) -> DeviceConfig:
    return DeviceConfig(id=f"d{unit}", unit=unit, profile=profile)


def main() -> None:
    """Parse arguments, run, print a table and the JSON figures as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time, per run")
    parser.add_argument("--devices", type=int, default=32, help="devices on the bus (3..247)")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--timeout", type=float, default=0.5, help="per-request timeout, s")
    args = parser.parse_args()
    r = asyncio.run(run(args.seconds, args.devices, args.baud, args.timeout))
    rows = [
        ("devices on one bus", f"{r['devices']} @ {r['baud']} baud 8{r['parity']}1"),
        ("cycles measured", f"{r['cycles']} in {r['seconds']} s ({r['errors']} errors)"),
        ("achieved polls/s", f"{r['achieved_polls_per_s']}"),
        ("theoretical polls/s", f"{r['theoretical_polls_per_s']} (line rate, same requests)"),
        ("efficiency", f"{r['efficiency']:.3f} (target >= 0.95)"),
        ("cycle time achieved / line", f"{r['cycle_s_achieved']} s / {r['cycle_s_theoretical']} s"),
        ("requests/cycle planned", f"{r['requests_per_cycle_planned']}"),
        ("requests/cycle one per point", f"{r['requests_per_cycle_one_per_point']}"),
        ("request reduction", f"{r['request_reduction']}x (target >= 5x)"),
        ("with a busy and a dead device", f"unit {BUSY_UNIT} busy 40 %, unit {DEAD_UNIT} silent"),
        ("  efficiency of the others", f"{r['efficiency_faulty']:.3f}"),
        ("  their cycle, faulty / healthy", f"{r['cycle_ratio_faulty']:.3f}"),
        ("  busy device", f"{r['busy_polls_delivered']} polls delivered, "
         f"{r['busy_answers']} busy answers waited out, {r['busy_device_state']}"),
        ("  dead device", f"{r['dead_device_state']} (re-probed with backoff)"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print("bus benchmark (emulated RS-485 on a pty; shared machines are noisy: compare ratios)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
