"""Alarm rules and report-by-exception, driven by plain values and explicit times.

Every call passes two times: the sample's wall-clock stamp (T0 + ...) and a monotonic time
(M0 + ...). Where they move together the helpers derive one from the other; the clock-step tests
move them apart, as NTP does.
"""

from __future__ import annotations

import itertools

import pytest

from lifeline.edge.rules import AlarmEngine, ExceptionFilter, Rule, UnknownAlarm
from lifeline.wire import AlarmState, Quality, Severity

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
M0 = 5_000  # monotonic ms: an arbitrary origin, unrelated to the wall clock
A = AlarmState.ACTIVE_UNACKED
C = AlarmState.CLEARED_UNACKED


def engine_with(*rules: Rule) -> AlarmEngine:
    counter = itertools.count(1)
    eng = AlarmEngine("gw1", lambda: next(counter))
    eng.set_rules("d1", "p", rules)
    return eng


def run(eng: AlarmEngine, samples: list[tuple[float, object]]) -> list[tuple[float, str]]:
    """Feed (seconds, value) samples; return (seconds, state) of every event."""
    out = []
    for sec, value in samples:
        ms = int(sec * 1000)
        for e in eng.evaluate("d1", "p", value, T0 + ms, M0 + ms):  # type: ignore[arg-type]
            out.append((sec, e.state.value))
    return out


CASES = [
    # (name, rule, samples, expected events)
    ("hi below limit", Rule("hi", 20), [(0, 19.9)], []),
    ("hi exactly at limit", Rule("hi", 20), [(0, 20.0)], [(0, A)]),
    ("hi clears below", Rule("hi", 20), [(0, 25), (1, 19)], [(0, A), (1, C)]),
    (
        "hi deadband holds then clears",
        Rule("hi", 20, deadband=2),
        [(0, 21), (1, 19), (2, 18.1), (3, 18.0)],
        [(0, A), (3, C)],
    ),
    (
        "chattering without deadband",
        Rule("hi", 20),
        [(0, 20), (1, 19.9), (2, 20), (3, 19.9)],
        [(0, A), (1, C), (2, A), (3, C)],
    ),
    (
        "chattering inside deadband",
        Rule("hi", 20, deadband=1),
        [(0, 20), (1, 19.9), (2, 20), (3, 19.9)],
        [(0, A)],
    ),
    ("hihi", Rule("hihi", 50, severity=Severity.HIGH), [(0, 49), (1, 50)], [(1, A)]),
    ("lo exactly at limit", Rule("lo", 5), [(0, 5)], [(0, A)]),
    ("lo deadband", Rule("lo", 5, deadband=1), [(0, 4), (1, 5.5), (2, 6.1)], [(0, A), (2, C)]),
    ("lolo", Rule("lolo", 1), [(0, 2), (1, 0.5), (2, 3)], [(1, A), (2, C)]),
    (
        "on-delay expires",
        Rule("hi", 10, on_delay_s=2),
        [(0, 11), (1, 11), (2, 11), (3, 11)],
        [(2, A)],
    ),
    (
        "clear during on-delay",
        Rule("hi", 10, on_delay_s=2),
        [(0, 11), (1, 11), (1.5, 9), (2.5, 11), (4, 11), (4.5, 11)],
        [(4.5, A)],
    ),
    (
        "off-delay holds",
        Rule("hi", 10, off_delay_s=3),
        [(0, 11), (1, 9), (2, 11), (3, 9), (5, 9), (6, 9)],
        [(0, A), (6, C)],
    ),
    ("roc rising", Rule("roc", 5), [(0, 0), (1, 4), (2, 10), (3, 11)], [(2, A), (3, C)]),
    ("roc falling", Rule("roc", 5), [(0, 10), (1, 4)], [(1, A)]),
    ("roc exactly at rate", Rule("roc", 5), [(0, 0), (2, 10)], [(2, A)]),
    ("state true", Rule("state", when=True), [(0, False), (1, True), (2, False)], [(1, A), (2, C)]),
    ("state false", Rule("state", when=False), [(0, True), (1, False)], [(1, A)]),
    (
        "non-number keeps limit state",
        Rule("hi", 10),
        [(0, 11), (1, None), (2, 9)],
        [(0, A), (2, C)],
    ),
    # Deviation rules judge |value - baseline|: a tilt is a tilt whichever way it leans.
    ("deviation: tilted one way", Rule("hi", 10, baseline=0), [(0, 9.9), (1, 25)], [(1, A)]),
    ("deviation: tilted the other way", Rule("hi", 10, baseline=0), [(0, -25)], [(0, A)]),
    ("deviation: at the limit below", Rule("hi", 10, baseline=0), [(0, -10)], [(0, A)]),
    ("deviation: within the band", Rule("hi", 10, baseline=0), [(0, -9.9), (1, 9.9)], []),
    (
        "deviation from an installed baseline",
        Rule("hi", 10, baseline=3),
        [(0, 12.9), (1, -6.9), (2, 13), (3, 4), (4, -7)],
        [(2, A), (3, C), (4, A)],
    ),
    (
        "deadband on the deviation",
        Rule("hi", 10, deadband=1, baseline=0),
        [(0, -11), (1, -9.5), (2, 9.1), (3, -8.9)],
        [(0, A), (3, C)],
    ),
    (
        "deviation swings through the baseline",
        Rule("hi", 10, baseline=0),
        [(0, 12), (1, -12), (2, 0)],
        [(0, A), (2, C)],
    ),
]


@pytest.mark.parametrize(
    ("rule", "samples", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_table(
    rule: Rule, samples: list[tuple[float, object]], expected: list[tuple[float, str]]
) -> None:
    assert run(engine_with(rule), samples) == expected


@pytest.mark.parametrize(
    ("baseline", "value", "limit"),
    [(0, -25, -10), (0, 25, 10), (3, -7.5, -7), (3, 14, 13), (-2, -13, -12)],
)
def test_a_deviation_alarm_reports_the_bound_its_value_crossed(
    baseline: float, value: float, limit: float
) -> None:
    """value and limit stay in the point's own unit: -25 deg beyond -10 deg, not 25 beyond 10."""
    eng = engine_with(Rule("hi", 10, baseline=baseline, message="cover tilted"))
    (e,) = eng.evaluate("d1", "p", value, T0, M0)
    assert (e.alarm_type, e.value, e.limit, e.message) == ("hi", value, limit, "cover tilted")


def test_a_deviation_alarm_without_message_says_it_is_a_deviation() -> None:
    (e,) = engine_with(Rule("hihi", 5, baseline=1.5)).evaluate("d1", "p", -4, T0, M0)
    assert e.message == "p high-high: more than 5 from its baseline 1.5"


@pytest.mark.parametrize("kind", ["lo", "lolo", "roc", "state", "stale"])
def test_only_high_rules_judge_a_deviation(kind: str) -> None:
    with pytest.raises(ValueError, match="only hi and hihi"):
        Rule(kind, 5, baseline=0)


def test_lifecycle_and_stable_ids() -> None:
    eng = engine_with(Rule("hi", 20, severity=Severity.CRITICAL))
    (raised,) = eng.evaluate("d1", "p", 25, T0, M0)
    assert (raised.alarm_id, raised.state, raised.severity) == ("gw1:1", A, Severity.CRITICAL)
    acked = eng.acknowledge("gw1:1", "crew-7", "on site", T0 + 5)
    assert (acked.state, acked.ack_by, acked.ack_note) == (
        AlarmState.ACTIVE_ACKED,
        "crew-7",
        "on site",
    )
    (cleared,) = eng.evaluate("d1", "p", 10, T0 + 10, M0 + 10)
    assert (cleared.alarm_id, cleared.state) == ("gw1:1", AlarmState.NORMAL)
    with pytest.raises(UnknownAlarm):
        eng.acknowledge("gw1:1", "crew-7", "", T0 + 11)
    (again,) = eng.evaluate("d1", "p", 30, T0 + 20, M0 + 20)
    assert again.alarm_id == "gw1:2"


def test_cleared_unacked_then_ack_and_return_keeps_id() -> None:
    eng = engine_with(Rule("hi", 20))
    eng.evaluate("d1", "p", 25, T0, M0)
    (cleared,) = eng.evaluate("d1", "p", 10, T0 + 1, M0 + 1)
    assert cleared.state is C
    (back,) = eng.evaluate("d1", "p", 25, T0 + 2, M0 + 2)
    assert (back.alarm_id, back.state) == ("gw1:1", A)
    eng.evaluate("d1", "p", 10, T0 + 3, M0 + 3)
    done = eng.acknowledge("gw1:1", "cli", "", T0 + 4)
    assert done.state is AlarmState.NORMAL
    assert eng.active() == []


def test_tick_expires_on_delay_without_new_sample() -> None:
    eng = engine_with(Rule("hi", 10, on_delay_s=2))
    assert eng.evaluate("d1", "p", 11, T0, M0) == []
    assert eng.tick(T0 + 1999, M0 + 1999) == []
    (e,) = eng.tick(T0 + 2000, M0 + 2000)
    assert e.state is A


@pytest.mark.parametrize(
    ("samples", "due_after", "raised_at_due"),
    [
        ([(0, 11)], 2.0, True),  # on-delay running: due when it has been held 2 s
        ([(0, 11), (1.5, 12)], 2.0, True),  # a later sample over the limit does not push it
        ([(0, 11), (1, 9)], 2.0, False),  # cleared during the on-delay: an early, empty wake-up
        ([(0, 9)], None, False),  # no condition, nothing due
        ([(0, 11), (1, 9), (1.5, 11)], 2.0, False),  # restarted at 1.5 s: due again at 3.5 s
    ],
)
def test_next_due_marks_when_an_on_delay_expires(
    samples: list[tuple[float, object]], due_after: float | None, raised_at_due: bool
) -> None:
    eng = engine_with(Rule("hi", 10, on_delay_s=2))
    run(eng, samples)
    assert eng.next_due_ms == (None if due_after is None else M0 + int(due_after * 1000))
    if due_after is None:
        return
    events = eng.tick(T0 + int(due_after * 1000), M0 + int(due_after * 1000))
    assert bool(events) is raised_at_due
    if raised_at_due:
        assert eng.next_due_ms is None
    elif samples[-1][1] == 11:
        assert eng.next_due_ms == M0 + 3500
        assert [e.state for e in eng.tick(T0 + 3500, M0 + 3500)] == [A]


def test_next_due_marks_when_an_off_delay_expires() -> None:
    eng = engine_with(Rule("hi", 10, off_delay_s=3))
    assert [s for _, s in run(eng, [(0, 11), (1, 9)])] == [A.value]
    assert eng.next_due_ms == M0 + 4000
    assert eng.tick(T0 + 3999, M0 + 3999) == []
    assert [e.state for e in eng.tick(T0 + 4000, M0 + 4000)] == [C]
    assert eng.next_due_ms is None


def test_stale_rule() -> None:
    eng = engine_with(Rule("stale", 10, severity=Severity.LOW))
    eng.evaluate("d1", "p", 1, T0, M0)
    assert eng.tick(T0 + 9_999, M0 + 9_999) == []
    (e,) = eng.tick(T0 + 10_000, M0 + 10_000)
    assert (e.alarm_type, e.state) == ("stale", A)
    (c,) = eng.evaluate("d1", "p", 2, T0 + 11_000, M0 + 11_000)
    assert c.state is C


def test_comm_loss_and_restore() -> None:
    eng = engine_with()
    (lost,) = eng.comm_loss("d1", True, T0, M0, Severity.HIGH)
    assert (lost.alarm_type, lost.point, lost.state, lost.severity) == (
        "comm_loss",
        "_device",
        A,
        Severity.HIGH,
    )
    assert eng.comm_loss("d1", True, T0 + 1, M0 + 1) == []
    fresh = engine_with()
    fresh.restore([lost], M0 + 2)
    (back,) = fresh.comm_loss("d1", False, T0 + 2, M0 + 2)
    assert (back.alarm_id, back.state) == (lost.alarm_id, C)


@pytest.mark.parametrize(
    ("deadband", "samples", "expected"),
    [
        (None, [(0, 1.0), (1, 1.0)], [True, True]),
        (0.5, [(0, 1.0), (1, 1.4), (2, 1.5), (3, 2.1)], [True, False, False, True]),
        (0.5, [(0, 1.0), (299, 1.0), (300, 1.0)], [True, False, True]),
        (0.0, [(0, True), (1, False), (2, False)], [True, True, False]),
    ],
)
def test_exception_filter(
    deadband: float | None, samples: list[tuple[float, object]], expected: list[bool]
) -> None:
    f = ExceptionFilter(deadband=deadband, heartbeat_s=300)
    got = [f.admit(v, Quality.GOOD, M0 + int(s * 1000)) for s, v in samples]  # type: ignore[arg-type]
    assert got == expected


def test_exception_filter_reports_quality_change() -> None:
    f = ExceptionFilter(deadband=10)
    assert f.admit(1.0, Quality.GOOD, M0)
    assert f.admit(None, Quality.STALE, M0 + 1)
    assert f.admit(1.0, Quality.GOOD, M0 + 2)


# --- wall-clock steps: delays, rates, timers and heartbeats run on the monotonic clock --------

HOUR = 3_600_000


def test_on_delay_survives_the_wall_clock_stepping_back_an_hour() -> None:
    """Issue 13 item 5: NTP stepped the clock back mid-delay; the 1 s on-delay still expires."""
    eng = engine_with(Rule("hi", 20, on_delay_s=1))
    assert eng.evaluate("d1", "p", 30, T0, M0) == []  # the leak is seen; the delay starts
    # NTP steps the wall clock back an hour; the monotonic clock runs on.
    assert eng.evaluate("d1", "p", 30, T0 - HOUR + 500, M0 + 500) == []
    (raised,) = eng.evaluate("d1", "p", 30, T0 - HOUR + 1000, M0 + 1000)
    assert (raised.state, raised.ts_ms) == (A, T0 - HOUR + 1000)  # stamped with the clock's time


def test_delay_timer_due_time_is_monotonic() -> None:
    eng = engine_with(Rule("hi", 20, on_delay_s=1))
    eng.evaluate("d1", "p", 30, T0, M0)
    assert eng.next_due_ms == M0 + 1000
    (raised,) = eng.tick(T0 - HOUR + 1000, M0 + 1000)
    assert raised.state is A


def test_stale_timer_ignores_a_step_forward() -> None:
    """A clock stepped forward an hour must not fire every stale timer at once."""
    eng = engine_with(Rule("stale", 10, severity=Severity.LOW))
    eng.evaluate("d1", "p", 1, T0, M0)
    assert eng.tick(T0 + HOUR + 1000, M0 + 1000) == []
    (e,) = eng.tick(T0 + HOUR + 10_000, M0 + 10_000)
    assert (e.alarm_type, e.state) == ("stale", A)


def test_rate_of_change_ignores_a_step() -> None:
    """A rate measured across a step would be divided by an hour (or by a negative time)."""
    eng = engine_with(Rule("roc", 5))
    eng.evaluate("d1", "p", 0, T0, M0)
    (e,) = eng.evaluate("d1", "p", 10, T0 + HOUR + 1000, M0 + 1000)  # 10 per second
    assert e.state is A


def test_exception_filter_heartbeat_survives_a_step_back() -> None:
    """After a step back, an unchanged value is still reported every heartbeat, not an hour late."""
    f = ExceptionFilter(deadband=0.5, heartbeat_s=300)
    assert f.admit(1.0, Quality.GOOD, M0)
    assert not f.admit(1.0, Quality.GOOD, M0 + 299_000)
    assert f.admit(1.0, Quality.GOOD, M0 + 300_000)
