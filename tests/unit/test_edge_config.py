"""Gateway config: strict schema, suggestions, file/field/reason errors, stable hash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lifeline.edge.config import ConfigError, load_config, resolve_profiles

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"

BASE = {
    "gateway": "gw-1",
    "site": "demo",
    "buses": [
        {
            "type": "tcp",
            "host": "127.0.0.1",
            "port": 1502,
            "devices": [{"id": "mh-1", "unit": 1, "profile": "manhole_cover"}],
        }
    ],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_shipped_examples_are_valid(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert resolve_profiles(cfg, EXAMPLES)


def test_every_device_of_the_demo_has_a_place_in_xihu() -> None:
    """The demo gateway announces every device with a location in 杭州市西湖区 (CGCS2000)."""
    places = load_config(EXAMPLES / "gateway-demo.yaml").locations()
    assert places
    for device, place in places.items():
        assert place is not None, device
        assert (120.02 < place.lon < 120.17, 30.12 < place.lat < 30.34) == (True, True), device
        assert place.address, device


def test_defaults_and_hash_is_stable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.mqtt.root == "lifeline"
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1883)
    reordered = dict(reversed(list(BASE.items())))
    assert load_config(write(tmp_path, reordered)).hash() == cfg.hash()
    changed = {**BASE, "site": "other"}
    assert load_config(write(tmp_path, changed)).hash() != cfg.hash()


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"gatway": "x"}, "gatway", "did you mean 'gateway'?"),
        ({"mqtt": {"keepalive": 30}}, "mqtt.keepalive", "did you mean 'keepalive_s'?"),
        ({"mqtt": {"url": "http://x"}}, "mqtt.url", "mqtt://host"),
        ({"gateway": "bad id!"}, "gateway", "pattern"),
        ({"buffer": {"max_mb": "big"}}, "buffer.max_mb", "valid number"),
    ],
)
def test_schema_errors_name_field_and_reason(
    tmp_path: Path, patch: dict[str, object], field: str, reason: str
) -> None:
    path = write(tmp_path, {**BASE, **patch})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == str(path)
    assert any(f == field and reason in r for f, r in err.value.problems), err.value.problems


def test_device_key_typo_suggests(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"][0]["intervl_s"] = 2
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    ((field, reason),) = err.value.problems
    assert field == "buses[0].devices[0].intervl_s"
    assert "did you mean 'interval_s'?" in reason


def test_unknown_profile_and_override_point(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"][0]["profile"] = "manhole_covr"
    with pytest.raises(ConfigError, match="did you mean 'manhole_cover'"):
        load_config(write(tmp_path, data))
    data["buses"][0]["devices"][0]["profile"] = "manhole_cover"
    data["buses"][0]["devices"][0]["alarms"] = {"tilt": [{"type": "hi", "limit": 5, "severity": 2}]}
    with pytest.raises(ConfigError, match="no point 'tilt'"):
        load_config(write(tmp_path, data))


def test_duplicate_device_and_not_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"].append({"id": "mh-1", "unit": 2, "profile": "manhole_cover"})
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write(tmp_path, data))
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _bus(kind: str, unit: int, dev: str, **where: object) -> dict[str, object]:
    devices = [{"id": dev, "unit": unit, "profile": "manhole_cover"}]
    return {"type": kind, **where, "devices": devices}


@pytest.mark.parametrize(
    ("buses", "reason"),
    [
        # One RS-485 port written as two buses (commission given the same scan twice).
        (
            [_bus("rtu", 1, "a", port="/dev/ttyS1"), _bus("rtu", 2, "b", port="/dev/ttyS1")],
            "buses[0] and buses[1] are both on serial port /dev/ttyS1: a serial line has one",
        ),
        # One DTU (one serial line behind it) as two buses.
        (
            [
                _bus("rtu_over_tcp", 1, "a", host="10.0.0.5", port=8899),
                _bus("rtu_over_tcp", 2, "b", host="10.0.0.5", port=8899),
            ],
            "buses[0] and buses[1] are both on rtu_over_tcp 10.0.0.5:8899",
        ),
        # One device under two ids: on one bus, and on two buses to one Modbus TCP endpoint.
        (
            [
                {
                    **_bus("rtu", 1, "a", port="/dev/ttyS1"),
                    "devices": [
                        {"id": "a", "unit": 1, "profile": "manhole_cover"},
                        {"id": "b", "unit": 1, "profile": "manhole_cover"},
                    ],
                }
            ],
            "devices 'a' and 'b' are both unit 1 on serial port /dev/ttyS1",
        ),
        (
            [_bus("tcp", 3, "a", host="10.0.0.6", port=502), _bus("tcp", 3, "b", host="10.0.0.6")],
            "devices 'a' and 'b' are both unit 3 on tcp 10.0.0.6:502",
        ),
    ],
)
def test_one_line_or_one_device_configured_twice_is_refused(
    tmp_path: Path, buses: list[dict[str, object]], reason: str
) -> None:
    # Such configs used to validate: the gateway opened the port twice and reported one
    # sensor's readings and alarms under two device ids.
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load_config(write(tmp_path, {**BASE, "buses": buses}))


def test_one_unit_on_different_lines_and_tcp_buses_sharing_an_endpoint_are_fine(
    tmp_path: Path,
) -> None:
    buses = [
        _bus("rtu", 1, "a", port="/dev/ttyS1"),
        _bus("rtu", 1, "b", port="/dev/ttyS2"),
        _bus("rtu_over_tcp", 1, "c", host="10.0.0.5", port=8899),
        _bus("tcp", 1, "d", host="10.0.0.6"),
        _bus("tcp", 2, "e", host="10.0.0.6"),  # a Modbus TCP gateway takes many connections
    ]
    assert len(load_config(write(tmp_path, {**BASE, "buses": buses})).devices()) == 5


def test_an_override_with_a_non_monotonic_ladder_is_rejected(tmp_path: Path) -> None:
    """A site override is held to the profile's rule: a worse hazard is never less severe."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"][0]["alarms"] = {
        "ch4": [
            {"type": "hi", "limit": 15, "severity": 1, "message": "school zone"},
            {"type": "hihi", "limit": 50, "severity": 2},
        ]
    }
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    ((field, reason),) = err.value.problems
    assert field == "buses[0].devices[0].alarms.ch4"
    assert "hihi at 50 is severity 2 (二级/橙), less severe than hi at 15 (severity 1" in reason


@pytest.mark.parametrize(
    ("point", "rules", "reason"),
    [
        ("ch4", [{"type": "state", "when": True, "severity": 2}], "needs a bool or bit point"),
        ("cover_open", [{"type": "hi", "limit": 1, "severity": 2}], "needs a numeric point"),
    ],
)
def test_an_override_rule_must_fit_its_point(
    tmp_path: Path, point: str, rules: list[dict[str, object]], reason: str
) -> None:
    """An override is checked against the point as strictly as the profile's own rules are."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["buses"][0]["devices"][0]["alarms"] = {point: rules}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    ((field, problem),) = err.value.problems
    assert field == f"buses[0].devices[0].alarms.{point}"
    assert reason in problem
