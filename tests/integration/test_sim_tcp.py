"""firmware-sim over Modbus TCP: shipped scenarios, identification, control, injected faults."""

import asyncio

import pytest

from lifeline.drivers.errors import DeviceException, DeviceTimeout, LinkDown
from lifeline.drivers.link import ModbusTcpLink, RtuOverTcpLink, poll_device
from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import builtin_profiles
from lifeline.firmware_sim.control import ControlError, SimControl
from lifeline.firmware_sim.scenario import load_scenario
from lifeline.firmware_sim.simulation import Simulation

pytestmark = pytest.mark.integration


def test_single_manhole_scenario_serves_the_profile_and_control_moves_it() -> None:
    asyncio.run(_single_manhole_scenario_serves_the_profile_and_control_moves_it())


async def _single_manhole_scenario_serves_the_profile_and_control_moves_it() -> None:
    profile = builtin_profiles()["manhole_cover"]
    plan = plan_reads(profile.points)
    async with Simulation(load_scenario("single-manhole")) as sim:
        eps = sim.endpoints
        (server,) = eps["servers"]
        assert server["devices"] == [{"id": "mh-001", "unit": 1, "profile": "manhole_cover"}]
        async with ModbusTcpLink(server["host"], server["port"]) as link:
            ident = await poll_device(link, 1, plan_reads(profile.identification.as_points()), 0.5)
            assert profile.identification.matches(ident)
            before = await poll_device(link, 1, plan, 0.5)
            assert before["cover_open"] is False
            async with SimControl(eps["control"]["host"], eps["control"]["port"]) as ctl:
                await ctl.trigger("mh-001", "open")
                await ctl.set_value("mh-001", "water_level", 95)
                await asyncio.sleep(0.3)  # one physics tick
                after = await poll_device(link, 1, plan, 0.5)
                assert after["cover_open"] is True
                assert float(after["tilt_x"]) > 10
                assert after["water_level"] == 95
                with pytest.raises(ControlError, match="did you mean 'water_level'"):
                    await ctl.set_value("mh-001", "water_levle", 1)
                await ctl.fault("mh-001", "exception", code=4)
                with pytest.raises(DeviceException) as exc:
                    await poll_device(link, 1, plan, 0.5)
                assert exc.value.code == 4
                await ctl.fault("mh-001", "no_answer")
                with pytest.raises(DeviceTimeout):
                    await poll_device(link, 1, plan, 0.2, retries=1)
                await ctl.fault("mh-001", "link_drop")
                with pytest.raises(LinkDown):
                    await poll_device(link, 1, plan, 0.5, retries=0)
                await ctl.fault("mh-001", "none")
                assert (await poll_device(link, 1, plan, 0.5))["water_level"] == 95


def test_demo_scenario_every_device_answers_over_tcp_and_dtu() -> None:
    asyncio.run(_demo_scenario_every_device_answers_over_tcp_and_dtu())


async def _demo_scenario_every_device_answers_over_tcp_and_dtu() -> None:
    profiles = builtin_profiles()
    async with Simulation(load_scenario("demo"), control_port=None) as sim:
        for server in sim.endpoints["servers"]:
            kind = ModbusTcpLink if server["kind"] == "tcp" else RtuOverTcpLink
            async with kind(server["host"], server["port"]) as link:
                for dev in server["devices"]:
                    profile = profiles[dev["profile"]]
                    values = await poll_device(link, dev["unit"], plan_reads(profile.points), 0.5)
                    assert set(values) == {p.name for p in profile.points}


def test_link_down_when_nothing_listens() -> None:
    asyncio.run(_link_down_when_nothing_listens())


async def _link_down_when_nothing_listens() -> None:
    scenario = load_scenario("single-manhole")
    async with Simulation(scenario, control_port=None) as sim:
        port = sim.endpoints["servers"][0]["port"]
    plan = plan_reads(builtin_profiles()["manhole_cover"].points)
    async with ModbusTcpLink("127.0.0.1", port) as link:
        with pytest.raises(LinkDown) as exc:
            await poll_device(link, 1, plan, 0.3, retries=0)
        assert exc.value.unit == 1
