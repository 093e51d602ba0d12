"""Profile schema: shipped profiles load; bad files are rejected with file, point and reason."""

from pathlib import Path

import pytest
import yaml

from drivers.planner import plan_reads
from drivers.profile import ProfileError, builtin_profiles, load_profile

pytestmark = pytest.mark.unit

IDENT = {
    "vendor": "V",
    "model": "M",
    "vendor_id": {"address": 100, "expect": 1},
    "model_id": {"address": 101, "expect": 2},
    "firmware_version": {"address": 102},
}


def write(tmp_path: Path, points: list[dict[str, object]], **extra: object) -> Path:
    doc = {"name": "x", "family": "gas", "identification": IDENT, "points": points, **extra}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_builtin_profiles_load_and_plan_compactly() -> None:
    profiles = builtin_profiles()
    assert set(profiles) == {"manhole_cover", "streetlight", "gas_detector", "tilt_sensor"}
    for profile in profiles.values():
        assert len(plan_reads(profile.points)) * 5 <= len(profile.points)


def test_gas_detector_defaults_are_yiji_at_20_and_erji_at_50_lel() -> None:
    rules = {
        r.type: r for r in builtin_profiles()["gas_detector"].point("gas_concentration").alarms
    }
    assert (rules["hi"].limit, rules["hihi"].limit) == (20, 50)
    assert (rules["hi"].severity, rules["hihi"].severity) == (1, 2)  # 一级 at 20, 二级 at 50


def test_manhole_tilt_alarm_waits_two_seconds() -> None:
    (rule,) = builtin_profiles()["manhole_cover"].point("tilt_x").alarms
    assert (rule.type, rule.limit, rule.on_delay_s) == ("hi", 10, 2)


def test_unknown_key_is_rejected_with_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path, [{"name": "t", "table": "holding", "address": 0, "dtype": "uint16", "scal": 0.1}]
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert str(path) in text
    assert "point 't'" in text
    assert "'scal'" in text
    assert "did you mean 'scale'?" in text


def test_unknown_key_in_alarm_rule_suggests_alarm_field(tmp_path: Path) -> None:
    alarm = {"type": "hi", "limit": 1, "severity": 2, "on_dealy_s": 2}
    point = {"name": "t", "table": "holding", "address": 0, "dtype": "uint16", "alarms": [alarm]}
    with pytest.raises(ProfileError, match="did you mean 'on_delay_s'"):
        load_profile(write(tmp_path, [point]))


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        (
            [{"name": "f", "table": "holding", "address": 0, "dtype": "float32", "length": 1}],
            "float32 needs 2 register",
        ),
        ([{"name": "f", "table": "coil", "address": 0, "dtype": "float32"}], "dtype must be bool"),
        (
            [
                {"name": "a", "table": "input", "address": 0, "dtype": "float32"},
                {"name": "b", "table": "input", "address": 1, "dtype": "uint16"},
            ],
            "'a' and 'b' overlap",
        ),
        (
            [
                {"name": "a", "table": "input", "address": 3, "dtype": "bit", "bit": 1},
                {"name": "b", "table": "input", "address": 3, "dtype": "bit", "bit": 1},
            ],
            "both bit 1",
        ),
        (
            [{"name": "a", "table": "input", "address": 65536, "dtype": "uint16"}],
            "less than or equal to 65535",
        ),
        ([{"name": "a", "table": "input", "address": 65535, "dtype": "uint32"}], "runs past 65535"),
        (
            [{"name": "a", "table": "input", "address": 0, "dtype": "uint16", "writable": True}],
            "read-only",
        ),
        ([{"name": "a", "table": "input", "address": 0, "dtype": "bit"}], "needs `bit"),
        (
            [
                {
                    "name": "a",
                    "table": "input",
                    "address": 0,
                    "dtype": "uint16",
                    "alarms": [{"type": "state", "when": True, "severity": 2}],
                }
            ],
            "state alarm needs a bool or bit point",
        ),
        (
            [
                {
                    "name": "a",
                    "table": "input",
                    "address": 0,
                    "dtype": "uint16",
                    "alarms": [{"type": "hi", "severity": 2}],
                }
            ],
            "needs a `limit`",
        ),
    ],
)
def test_impossible_combinations_are_rejected_with_point_and_reason(
    tmp_path: Path, points: list[dict[str, object]], reason: str
) -> None:
    path = write(tmp_path, points)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert str(path) in str(exc.value)
    assert reason in str(exc.value)


def test_shared_register_bits_on_distinct_bits_are_fine(tmp_path: Path) -> None:
    points = [
        {"name": "a", "table": "input", "address": 3, "dtype": "bit", "bit": 0},
        {"name": "b", "table": "input", "address": 3, "dtype": "bit", "bit": 1},
    ]
    profile = load_profile(write(tmp_path, points))
    assert profile.point("b").bit == 1
    with pytest.raises(KeyError, match="did you mean 'a'"):
        profile.point("aa")
