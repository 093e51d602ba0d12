"""Profile schema: shipped profiles load; bad files are rejected with file, point and reason."""

import itertools
from pathlib import Path

import pytest
import yaml

from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import AlarmRuleSpec, ProfileError, builtin_profiles, load_profile

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


@pytest.mark.parametrize(
    ("profile", "point"), [("gas_detector", "gas_concentration"), ("manhole_cover", "ch4")]
)
def test_gas_stages_follow_gbt_50493_and_the_worse_stage_is_more_severe(
    profile: str, point: str
) -> None:
    """GB/T 50493-2019: 一级报警 (first stage) at 20 %LEL, 二级报警 (second, worse) at 50 %LEL.

    Our severities count the other way (1 = 一级/红 is the worst): the detector's first stage is
    our 2 (橙), its second stage our 1 (红). Each message keeps the detector's own stage name.
    """
    rules = {r.type: r for r in builtin_profiles()[profile].point(point).alarms}
    first, second = rules["hi"], rules["hihi"]
    assert (first.limit, first.severity) == (20, 2)
    assert (second.limit, second.severity) == (50, 1)
    assert "一级报警" in first.message
    assert "GB/T 50493 第一级" in first.message
    assert "二级报警" in second.message
    assert "GB/T 50493 第二级" in second.message


def test_streetlight_leakage_is_electric_leakage_not_lamp_failure() -> None:
    profile = builtin_profiles()["streetlight"]
    (rule,) = profile.point("leakage_current").alarms
    assert rule.severity == 1
    assert "漏电" in rule.message
    assert "触电" in rule.message
    assert "lamp failure" not in rule.message.lower()
    assert "灯" not in rule.message


def _extremity(rule: AlarmRuleSpec) -> tuple[str, float] | None:
    """(side, how extreme) of a limit rule: higher means a worse hazard on that side."""
    assert rule.limit is not None or rule.type == "state"
    if rule.type in ("hi", "hihi"):
        return ("deviation" if rule.deviation else "high", rule.limit or 0.0)
    if rule.type in ("lo", "lolo"):
        return ("low", -(rule.limit or 0.0))
    if rule.type == "roc":
        return ("rate", rule.limit or 0.0)
    return None


def test_every_shipped_ladder_grades_a_worse_hazard_at_least_as_severe() -> None:
    for profile in builtin_profiles().values():
        for point in profile.points:
            graded = [(_extremity(r), r.severity) for r in point.alarms if _extremity(r)]
            for (a, sev_a), (b, sev_b) in itertools.permutations(graded, 2):
                if a is not None and b is not None and a[0] == b[0] and b[1] > a[1]:
                    assert sev_b <= sev_a, (profile.name, point.name, a, b)


def rule(type_: str, limit: float, severity: int, **extra: object) -> dict[str, object]:
    return {"type": type_, "limit": limit, "severity": severity, **extra}


LADDERS = [
    # (rules of one numeric point, what the error must say)
    (
        [rule("hi", 20, 1), rule("hihi", 50, 2)],  # the old gas defaults: inverted
        "hihi at 50 is severity 2 (二级/橙), less severe than hi at 20 (severity 1",
    ),
    ([rule("hi", 20, 2), rule("hihi", 15, 1)], "hihi at 15 is below hi at 20"),
    (
        [rule("lo", 20, 1), rule("lolo", 10, 3)],
        "lolo at 10 is severity 3 (三级/黄), less severe than lo at 20 (severity 1",
    ),
    ([rule("lo", 10, 3), rule("lolo", 12, 2)], "lolo at 12 is above lo at 10"),
    (
        [rule("hi", 3, 2), rule("hi", 5, 3)],  # two hi rules on one point: the same ladder
        "hi at 5 is severity 3 (三级/黄), less severe than hi at 3 (severity 2",
    ),
    (
        [rule("roc", 0.5, 2), rule("roc", 2, 4)],
        "roc at 2 is severity 4 (四级/蓝), less severe than roc at 0.5 (severity 2",
    ),
    (
        [rule("hi", 3, 2, deviation=True), rule("hihi", 5, 3, deviation=True)],
        "hihi at ±5 is severity 3 (三级/黄), less severe than hi at ±3 (severity 2",
    ),
    ([rule("lo", 3, 2, deviation=True)], "only hi and hihi rules judge a deviation, not lo"),
    ([rule("hi", 0, 2, deviation=True)], "a deviation limit is a distance from the baseline"),
]


@pytest.mark.parametrize(("alarms", "reason"), LADDERS)
def test_a_non_monotonic_ladder_is_rejected_with_file_point_and_reason(
    tmp_path: Path, alarms: list[dict[str, object]], reason: str
) -> None:
    point = {"name": "conc", "table": "holding", "address": 0, "dtype": "uint16", "alarms": alarms}
    path = write(tmp_path, [point])
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert str(path) in text
    assert "point 'conc'" in text
    assert reason in text


def test_ladders_on_different_sides_do_not_constrain_each_other(tmp_path: Path) -> None:
    """A low alarm and a high alarm, a limit and a rate, a value and a deviation: separate."""
    alarms = [
        rule("hi", 253, 3),
        rule("lo", 187, 2),
        rule("roc", 5, 1),
        rule("hihi", 260, 3),
        rule("hihi", 2, 4, deviation=True),
    ]
    point = {"name": "v", "table": "holding", "address": 0, "dtype": "uint16", "alarms": alarms}
    assert len(load_profile(write(tmp_path, [point])).point("v").alarms) == 5


@pytest.mark.parametrize(
    ("profile", "points"),
    [("manhole_cover", ["tilt_x", "tilt_y"]), ("tilt_sensor", ["angle_x", "angle_y"])],
)
def test_tilt_limits_judge_the_deviation_from_the_installed_baseline(
    profile: str, points: list[str]
) -> None:
    """DESIGN.md: tilt is judged on |angle - installed baseline|, both directions."""
    for name in points:
        limits = [r for r in builtin_profiles()[profile].point(name).alarms if r.type != "roc"]
        assert limits
        assert all(r.type in ("hi", "hihi") and r.deviation for r in limits)


def test_manhole_tilt_alarm_waits_two_seconds() -> None:
    (rule,) = builtin_profiles()["manhole_cover"].point("tilt_x").alarms
    assert (rule.type, rule.limit, rule.on_delay_s, rule.deviation) == ("hi", 10, 2, True)


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
