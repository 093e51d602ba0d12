"""firmware-sim scenarios and device models, without sockets."""

import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import Table, builtin_profiles
from lifeline.drivers.values import decode_response
from lifeline.firmware_sim.cli import app
from lifeline.firmware_sim.device import ModbusFault, SimDevice
from lifeline.firmware_sim.scenario import ScenarioError, load_scenario

pytestmark = pytest.mark.unit


def device(profile: str, seed: str = "s") -> SimDevice:
    scenario = load_scenario("demo")
    return SimDevice("d", 1, builtin_profiles()[profile], random.Random(seed), scenario.start)


def read_all(dev: SimDevice) -> dict[str, object]:
    values: dict[str, object] = {}
    for request in plan_reads(dev.profile.points):
        values.update(
            decode_response(request, dev.read(request.table, request.address, request.count))
        )
    return values


def test_shipped_scenarios_load() -> None:
    assert len(load_scenario("single-manhole").servers[0].devices) == 1
    demo = load_scenario("demo")
    assert {d.profile for s in demo.servers for d in s.devices} == set(builtin_profiles())


def test_same_seed_gives_the_same_readings() -> None:
    a, b = device("gas_detector"), device("gas_detector")
    for dev in (a, b):
        dev.trigger("leak", {"peak": 60, "ramp_s": 10})
        dev.step(load_scenario("demo").start, 5.0)
    assert read_all(a) == read_all(b)
    assert 25 < float(read_all(a)["gas_concentration"]) < 35  # type: ignore[arg-type]


def test_registers_decode_back_to_the_physics_values() -> None:
    dev = device("tilt_sensor")
    dev.trigger("jump", {"x": 6})
    dev.step(load_scenario("demo").start, 1.0)
    decoded = read_all(dev)
    assert decoded["tilt_alarm"] is True
    assert decoded["angle_x"] == pytest.approx(dev.values()["angle_x"], abs=1e-3)


def test_writes_only_to_writable_points() -> None:
    dev = device("streetlight")
    dev.write(Table.HOLDING, 1, [30])
    assert dev.values()["dimming"] == 30
    with pytest.raises(ModbusFault) as exc:
        dev.write(Table.HOLDING, 2, [1])
    assert exc.value.code == 2
    with pytest.raises(ModbusFault) as exc:
        dev.write(Table.HOLDING, 1, [300])  # dimming is 0..100
    assert exc.value.code == 3


def test_bad_scenario_names_the_problem(tmp_path: Path) -> None:
    doc = {
        "servers": [
            {
                "name": "a",
                "kind": "tcp",
                "devices": [{"id": "x", "unit": 1, "profile": "gas_detector"}],
            }
        ],
        "timeline": [{"at": 1, "device": "x", "event": "open"}],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ScenarioError, match="has no event 'open'"):
        load_scenario(path)


def test_cli_help_and_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0
    result = runner.invoke(app, ["run", "--scenario", "/nonexistent.yaml"])
    assert result.exit_code == 2
    assert runner.invoke(app, ["trigger", "mh-1", "open"]).exit_code == 2
