"""Tilt judged on |angle - installed baseline|: shipped profiles, the gateway config, the sink.

The gateway's pipeline is fed plain values with an injected clock over an in-memory buffer;
nothing is polled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline.edge.config import ConfigError, load_config, parse_config
from lifeline.edge.daemon import Gateway
from tests.fakes import FakeBuffer, fake_gateway

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
HELD_S = 2  # manhole_cover.yaml: a cover tilt must be held 2 s


def gateway(tmp_path: Path, device: dict[str, Any]) -> tuple[Gateway, list[int]]:
    """A gateway with one device; returns it and the monotonic clock (ms) its tests move.

    Its buffer is a FakeBuffer (`open_alarms` reads it)."""
    cfg = parse_config(
        {
            "gateway": "gw-t",
            "site": "s",
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [{"type": "tcp", "host": "127.0.0.1", "devices": [device]}],
        }
    )
    now = [0]
    gw, _ = fake_gateway(cfg, tmp_path, FakeBuffer(), wall=lambda: T0 + now[0], mono=lambda: now[0])
    return gw, now


def hold(gw: Gateway, now: list[int], device: str, values: dict[str, Any]) -> set[tuple[str, str]]:
    """Feed the same values now and HELD_S later; return the (point, type) of open alarms."""
    for _ in range(2):
        gw.pipeline.values(gw.devices[device], values, T0 + now[0])
        now[0] += HELD_S * 1000
    return {(e.point, e.alarm_type) for e in gw.buffer.open_alarms()}


@pytest.mark.parametrize("angle", [-25.0, 25.0, -10.5])
def test_a_cover_tilted_either_way_raises_its_alarm(tmp_path: Path, angle: float) -> None:
    """Issue 14: -25 degrees on a cover raised nothing, since `hi` judged the signed angle."""
    gw, now = gateway(tmp_path, {"id": "mh-1", "unit": 1, "profile": "manhole_cover"})
    assert ("tilt_x", "hi") in hold(gw, now, "mh-1", {"tilt_x": angle, "tilt_y": 0.0})


def test_a_bridge_leaning_back_raises_the_same_ladder_as_leaning_forward(tmp_path: Path) -> None:
    """The second member of the kind: an inclinometer's hi/hihi ladder, on the negative side."""
    gw, now = gateway(tmp_path, {"id": "tilt-1", "unit": 1, "profile": "tilt_sensor"})
    gw.pipeline.values(gw.devices["tilt-1"], {"angle_y": 0.0}, T0)
    for _ in range(3):  # held past the 5 s on-delay of hi, without tripping the rate rule
        now[0] += 3000
        gw.pipeline.values(gw.devices["tilt-1"], {"angle_y": -6.0}, T0 + now[0])
        gw.pipeline.values(gw.devices["tilt-1"], {"angle_y": -6.0}, T0 + now[0])
    raised = {
        (e.alarm_type, int(e.severity)) for e in gw.buffer.open_alarms() if e.point == "angle_y"
    }
    assert {("hi", 3), ("hihi", 2)} <= raised


def test_the_installed_baseline_is_the_zero_the_deviation_is_judged_from(tmp_path: Path) -> None:
    """A cover seated at 4 degrees: 12 degrees is 8 from its zero (quiet), -7 is 11 (alarm)."""
    device = {"id": "mh-1", "unit": 1, "profile": "manhole_cover", "baselines": {"tilt_x": 4.0}}
    gw, now = gateway(tmp_path, device)
    assert hold(gw, now, "mh-1", {"tilt_x": 12.0}) == set()
    gw, now = gateway(tmp_path / "again", device)
    assert ("tilt_x", "hi") in hold(gw, now, "mh-1", {"tilt_x": -7.0})


BASE: dict[str, Any] = {
    "gateway": "gw-1",
    "site": "demo",
    "buses": [{"type": "tcp", "host": "127.0.0.1", "devices": []}],
}


def load_with(tmp_path: Path, device: dict[str, Any]) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"] = [{"id": "mh-1", "unit": 1, "profile": "manhole_cover", **device}]
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    load_config(path)


@pytest.mark.parametrize(
    ("device", "field", "reason"),
    [
        ({"baselines": {"tilt_z": 1.0}}, "baselines.tilt_z", "no point 'tilt_z' (did you mean"),
        (
            {"baselines": {"water_level": 3.0}},
            "baselines.water_level",
            "no alarm rule of point 'water_level' judges a deviation",
        ),
        (  # an override that judges the signed angle leaves the baseline nothing to do
            {
                "baselines": {"tilt_x": 1.0},
                "alarms": {"tilt_x": [{"type": "hi", "limit": 8, "severity": 2}]},
            },
            "baselines.tilt_x",
            "no alarm rule of point 'tilt_x' judges a deviation",
        ),
        ({"baselines": {"tilt_x": float("nan")}}, "baselines.tilt_x", "finite number"),
        ({"baselines": {"tilt_x": "flat"}}, "baselines.tilt_x", "valid number"),
    ],
)
def test_a_baseline_that_cannot_work_is_rejected(
    tmp_path: Path, device: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_with(tmp_path, device)
    assert any(f.endswith(field) and reason in r for f, r in err.value.problems), err.value


def test_an_override_may_judge_the_deviation_with_its_own_ladder(tmp_path: Path) -> None:
    rules = [
        {"type": "hi", "deviation": True, "limit": 6, "severity": 3},
        {"type": "hihi", "deviation": True, "limit": 4, "severity": 2},
    ]
    with pytest.raises(ConfigError, match="hihi at ±4 is below hi at ±6"):
        load_with(tmp_path, {"alarms": {"tilt_x": rules}})
    rules[1]["limit"] = 12
    load_with(tmp_path, {"alarms": {"tilt_x": rules}, "baselines": {"tilt_x": -0.5}})
