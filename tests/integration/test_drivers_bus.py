"""16 simulated devices on one 9600-baud RTU bus over a pty: one dead, one answering garbage."""

import asyncio
import time
from typing import Any

import pytest

from lifeline.drivers.errors import BadFrame, DeviceTimeout, DriverError
from lifeline.drivers.link import ModbusSerialLink, poll_device
from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import builtin_profiles
from lifeline.firmware_sim.scenario import Scenario
from lifeline.firmware_sim.simulation import Simulation

pytestmark = pytest.mark.integration

FAMILIES = ["manhole_cover", "streetlight", "gas_detector", "tilt_sensor"]
DEAD, GARBAGE = 5, 9
TIMEOUT = 0.25


def bus_scenario() -> Scenario:
    devices: list[dict[str, Any]] = [
        {"id": f"dev{u}", "unit": u, "profile": FAMILIES[u % 4]} for u in range(1, 17)
    ]
    devices[DEAD - 1]["fault"] = {"kind": "no_answer"}
    devices[GARBAGE - 1]["fault"] = {"kind": "garbage"}
    server = {"name": "bus", "kind": "serial", "baudrate": 9600, "parity": "E", "devices": devices}
    return Scenario.model_validate({"seed": 7, "servers": [server]})


async def cycle(link: ModbusSerialLink) -> dict[int, tuple[float, object]]:
    """Poll every device once; per unit: seconds it took and its values or its error."""
    profiles = builtin_profiles()
    out: dict[int, tuple[float, object]] = {}
    for unit in range(1, 17):
        plan = plan_reads(profiles[FAMILIES[unit % 4]].points)
        start = time.perf_counter()
        result: object
        try:
            result = await poll_device(link, unit, plan, TIMEOUT, retries=0)
        except DriverError as exc:
            result = exc
        out[unit] = (time.perf_counter() - start, result)
    return out


def test_dead_and_garbage_devices_cost_only_their_own_timeout() -> None:
    asyncio.run(_dead_and_garbage_devices_cost_only_their_own_timeout())


async def _dead_and_garbage_devices_cost_only_their_own_timeout() -> None:
    sim = Simulation(bus_scenario(), control_port=None)
    async with sim:
        path = sim.endpoints["servers"][0]["path"]
        async with ModbusSerialLink(path, 9600, parity="E") as link:
            faulty = [await cycle(link) for _ in range(3)]
            sim.set_fault(f"dev{DEAD}", "none")
            sim.set_fault(f"dev{GARBAGE}", "none")
            clean = [await cycle(link) for _ in range(2)]

    healthy = [u for u in range(1, 17) if u not in (DEAD, GARBAGE)]
    profiles = builtin_profiles()
    for run in faulty:
        for unit in healthy:
            values = run[unit][1]
            assert isinstance(values, dict), f"unit {unit}: {values}"
            assert set(values) == {p.name for p in profiles[FAMILIES[unit % 4]].points}
        dead_err, garbage_err = run[DEAD][1], run[GARBAGE][1]
        assert isinstance(dead_err, DeviceTimeout)
        assert (dead_err.unit, dead_err.function, dead_err.address) == (DEAD, 3, 0)
        assert isinstance(garbage_err, BadFrame)
        assert garbage_err.unit == GARBAGE
        # The dead device costs its own timeout (plus at most the gap bookkeeping), no more.
        assert TIMEOUT <= run[DEAD][0] < 1.5 * TIMEOUT
        assert run[GARBAGE][0] < 1.5 * TIMEOUT + 0.5

    # Healthy devices keep their cadence: the time spent on them is the same with and without
    # the faulty neighbours (ratio, not absolute speed), and none of them absorbed a timeout.
    def healthy_time(run: dict[int, tuple[float, object]]) -> float:
        return sum(run[u][0] for u in healthy)

    with_faults = min(healthy_time(r) for r in faulty)
    without = min(healthy_time(r) for r in clean)
    assert with_faults < 1.3 * without
    assert max(r[u][0] for r in faulty for u in healthy) < TIMEOUT
    for run in clean:
        assert all(isinstance(run[u][1], dict) for u in range(1, 17))


def test_serial_write_switches_the_lamp_and_refuses_read_only_points() -> None:
    asyncio.run(_serial_write_switches_the_lamp_and_refuses_read_only_points())


async def _serial_write_switches_the_lamp_and_refuses_read_only_points() -> None:
    sim = Simulation(bus_scenario(), control_port=None)
    profile = builtin_profiles()["streetlight"]
    async with sim, ModbusSerialLink(sim.endpoints["servers"][0]["path"], 9600, "E") as link:
        await link.write(1, profile.point("dimming"), 40, TIMEOUT)
        await link.write(1, profile.point("lamp_switch"), True, TIMEOUT)
        await asyncio.sleep(0.3)  # one physics tick so lamp_on follows the switch
        values = await poll_device(link, 1, plan_reads(profile.points), TIMEOUT)
        assert (values["dimming"], values["lamp_switch"], values["lamp_on"]) == (40, True, True)
        with pytest.raises(DriverError) as exc:
            await link.write(
                1, profile.point("voltage").model_copy(update={"writable": True}), 1, TIMEOUT
            )
        assert getattr(exc.value, "code", None) == 2
