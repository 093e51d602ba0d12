"""Bus benchmark: 32 simulated devices on one emulated 9600-baud RTU bus (pty).

Reports achieved device polls per second against the theoretical maximum for the same
requests at the line rate (bytes on the wire plus the 3.5-character silences Modbus RTU
requires), and requests per cycle with the read planner versus one request per point.
Run from the repository root: `python bench/bus.py [--seconds 20] [--devices 32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Literal

from drivers.errors import DriverError
from drivers.link import ModbusSerialLink, char_time, poll_device
from drivers.planner import ReadRequest, plan_reads
from drivers.profile import builtin_profiles
from firmware_sim.scenario import Scenario
from firmware_sim.simulation import Simulation

FAMILIES = ["manhole_cover", "streetlight", "gas_detector", "tilt_sensor"]
PARITY: Literal["E"] = "E"  # Modbus RTU default framing 8E1: 11 bits per character


def transaction_s(request: ReadRequest, char_s: float) -> float:
    """Line time of one read: request + response bytes and a 3.5-char silence before each."""
    req, resp = request.rtu_bytes
    return (req + resp + 2 * 3.5) * char_s


async def run(seconds: float, devices: int, baud: int, request_timeout: float) -> dict[str, Any]:
    """Poll the bus round-robin for `seconds` and return the figures."""
    profiles = builtin_profiles()
    units = {u: profiles[FAMILIES[u % len(FAMILIES)]] for u in range(1, devices + 1)}
    plans = {u: plan_reads(p.points) for u, p in units.items()}
    server = {
        "name": "bus",
        "kind": "serial",
        "baudrate": baud,
        "parity": PARITY,
        "devices": [{"id": f"d{u}", "unit": u, "profile": p.name} for u, p in units.items()],
    }
    scenario = Scenario.model_validate({"seed": 1, "servers": [server]})
    char_s = char_time(baud, PARITY)
    cycle_theory_s = sum(transaction_s(r, char_s) for plan in plans.values() for r in plan)
    planned = sum(len(plan) for plan in plans.values())
    per_point = sum(len(p.points) for p in units.values())
    polls = errors = cycles = 0
    async with Simulation(scenario, control_port=None) as sim:
        path = sim.endpoints["servers"][0]["path"]
        async with ModbusSerialLink(path, baud, parity=PARITY) as link:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for unit, plan in plans.items():
                    try:
                        await poll_device(link, unit, plan, request_timeout, retries=0)
                        polls += 1
                    except DriverError:
                        errors += 1
                cycles += 1
            elapsed = time.perf_counter() - start
    achieved = polls / elapsed
    theoretical = devices / cycle_theory_s
    return {
        "bench": "bus",
        "efficiency": round(achieved / theoretical, 3),
        "request_reduction": round(per_point / planned, 2),
        "baud": baud,
        "devices": devices,
        "achieved_polls_per_s": round(achieved, 2),
        "theoretical_polls_per_s": round(theoretical, 2),
        "cycles": cycles,
        "errors": errors,
        "requests_per_cycle_planned": planned,
        "requests_per_cycle_one_per_point": per_point,
        "cycle_s_theoretical": round(cycle_theory_s, 4),
        "cycle_s_achieved": round(elapsed / cycles, 4),
        "seconds": round(elapsed, 2),
        "parity": PARITY,
    }


def main() -> None:
    """Parse arguments, run, print a table and the JSON figures as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time")
    parser.add_argument("--devices", type=int, default=32, help="devices on the bus (1..247)")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--timeout", type=float, default=0.5, help="per-request timeout, s")
    args = parser.parse_args()
    r = asyncio.run(run(args.seconds, args.devices, args.baud, args.timeout))
    rows = [
        ("devices on one bus", f"{r['devices']} @ {r['baud']} baud 8{r['parity']}1"),
        ("cycles measured", f"{r['cycles']} in {r['seconds']} s ({r['errors']} errors)"),
        ("achieved polls/s", f"{r['achieved_polls_per_s']}"),
        ("theoretical polls/s", f"{r['theoretical_polls_per_s']} (line rate, same requests)"),
        ("efficiency", f"{r['efficiency']:.3f} (target >= 0.9)"),
        ("cycle time achieved / line", f"{r['cycle_s_achieved']} s / {r['cycle_s_theoretical']} s"),
        ("requests/cycle planned", f"{r['requests_per_cycle_planned']}"),
        ("requests/cycle one per point", f"{r['requests_per_cycle_one_per_point']}"),
        ("request reduction", f"{r['request_reduction']}x (target >= 5x)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("bus benchmark (emulated RS-485 on a pty; shared machines are noisy: compare ratios)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
