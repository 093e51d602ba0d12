"""Stage clocks on a working calendar (issue 19, part 2): 工作时 / 工作日 / 自然时 across a weekend,
a holiday and a make-up working day; the phase table a case builds; 挂账 that is never overdue;
延时; 督办 at every new overdue. Plain values with the time given (UTC ms)."""

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from lifeline.collector.cases.calendar import (
    CalendarError,
    Unit,
    WorkCalendar,
    load_calendar,
)
from lifeline.collector.cases.phases import Limit, Stage, start, step
from lifeline.collector.cases.routing import default_routing_path, load_routing, routing_calendar
from lifeline.collector.cases.workflow import Action, Args, Case, CaseState, apply, open_case

pytestmark = pytest.mark.unit

H = 3_600_000
A, S = Action, CaseState
# 2026-04-30 is a Thursday; 05-01..05-05 is the 劳动节 holiday, 05-09 (Saturday) a make-up day.
CAL = WorkCalendar(
    periods=((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))),
    holidays=frozenset(date(2026, 5, d) for d in range(1, 6)),
    workdays=frozenset({date(2026, 5, 9)}),
    name="test",
)


def at(month: int, day: int, hh: int, mm: int = 0) -> int:
    """Local (UTC+8) wall time as UTC ms (hours 8 to 23 only: enough here)."""
    return int(datetime(2026, month, day, hh - 8, mm, tzinfo=UTC).timestamp() * 1000)


def test_work_hours_skip_the_night_the_weekend_and_a_holiday() -> None:
    # Thursday 16:00 + 3 工作时: 1.5 h on Thursday, then Friday 05-01 (a holiday), the weekend,
    # and 05-04 .. 05-05 (holidays): the next work is Wednesday 05-06 08:30 -> 10:00.
    assert CAL.due(at(4, 30, 16), 3, Unit.WORK_HOURS) == at(5, 6, 10)
    # The lunch break does not count: 11:00 + 2 h ends at 14:30.
    assert CAL.due(at(4, 29, 11), 2, Unit.WORK_HOURS) == at(4, 29, 14, 30)
    # Starting at night or at a weekend counts from the next work period.
    assert CAL.due(at(4, 29, 22), 1, Unit.WORK_HOURS) == at(4, 30, 9, 30)


def test_a_make_up_day_is_worked_and_a_work_day_is_a_days_work_time() -> None:
    # Friday 05-08 16:00 + 2 工作时: 1.5 h Friday, then Saturday 05-09 (调休上班) 08:30 -> 09:00.
    assert CAL.due(at(5, 8, 16), 2, Unit.WORK_HOURS) == at(5, 9, 9)
    assert CAL.day_ms == 7.5 * H
    # 1 工作日 from Thursday 04-30 16:00: 7.5 h of work -> Wednesday 05-06 at 16:00.
    assert CAL.due(at(4, 30, 16), 1, Unit.WORK_DAYS) == at(5, 6, 16)


def test_natural_hours_run_day_and_night_and_through_holidays() -> None:
    assert CAL.due(at(4, 30, 16), 24, Unit.NATURAL_HOURS) == at(5, 1, 16)


def test_time_left_and_resumed_count_work_time_only() -> None:
    due = at(5, 6, 10)
    assert CAL.left(at(4, 30, 16), due, Unit.WORK_HOURS) == 3 * H
    assert CAL.resume(at(5, 11, 9), 3 * H, Unit.WORK_HOURS) == at(5, 11, 12) + 0
    assert CAL.left(at(5, 6, 11), due, Unit.WORK_HOURS) == -H  # an hour of work overdue
    # Fails on the old code: an overdue clock resumed as natural hours before now (07:00),
    # not as the work time it was overdue: 2 work hours before Monday 05-11 09:00 (08:30 start)
    # is 16:00 on Saturday 05-09, a make-up working day — 2 work hours overdue, as `left` says.
    resumed = CAL.resume(at(5, 11, 9), -2 * H, Unit.WORK_HOURS)
    assert resumed == at(5, 9, 16)
    assert CAL.left(at(5, 11, 9), resumed, Unit.WORK_HOURS) == -2 * H
    assert CAL.resume(at(5, 11, 9), -2 * H, Unit.NATURAL_HOURS) == at(5, 11, 9) - 2 * H


def test_the_shipped_calendar_loads_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    path = default_routing_path()
    cal = routing_calendar(load_routing(path), path)
    assert not cal.is_workday(date(2026, 10, 1))  # 国庆节
    assert cal.is_workday(date(2026, 10, 10))  # a Saturday worked (调休)
    bad = tmp_path / "cal.yaml"
    bad.write_text("work_hours: [{start: '12:00', end: '08:00'}]\n", encoding="utf-8")
    with pytest.raises(CalendarError, match="ordered"):
        load_calendar(bad)
    bad.write_text(
        "work_hours: [{start: '08:00', end: '12:00'}]\nholidays: [2026-05-09]\n"
        "workdays: [2026-05-09]\n",
        encoding="utf-8",
    )
    with pytest.raises(CalendarError, match="both a holiday and a make-up"):
        load_calendar(bad)


def _days(first: date, last: date) -> set[date]:
    return {first + timedelta(days=n) for n in range((last - first).days + 1)}


def test_the_shipped_calendar_is_the_state_councils_2026_arrangement() -> None:
    # 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04), item by item.
    d = date
    holidays = (
        _days(d(2026, 1, 1), d(2026, 1, 3))  # 元旦
        | _days(d(2026, 2, 15), d(2026, 2, 23))  # 春节, 9 days
        | _days(d(2026, 4, 4), d(2026, 4, 6))  # 清明节
        | _days(d(2026, 5, 1), d(2026, 5, 5))  # 劳动节
        | _days(d(2026, 6, 19), d(2026, 6, 21))  # 端午节
        | _days(d(2026, 9, 25), d(2026, 9, 27))  # 中秋节
        | _days(d(2026, 10, 1), d(2026, 10, 7))  # 国庆节
    )
    make_up = {d(2026, 1, 4), d(2026, 2, 14), d(2026, 2, 28), d(2026, 5, 9), d(2026, 9, 20),
               d(2026, 10, 10)}  # fmt: skip
    path = default_routing_path()
    cal = routing_calendar(load_routing(path), path)
    assert cal.holidays == holidays
    assert cal.workdays == make_up
    assert all(day.isoweekday() in (6, 7) for day in make_up)  # each a weekend day worked
    # The first working day after 春节 is Tuesday 02-24; Saturday 02-28 is worked, 03-01 not.
    february = sorted(_days(d(2026, 2, 21), d(2026, 3, 1)))
    assert [day.day for day in february if cal.is_workday(day)] == [24, 25, 26, 27, 28]
    # 1 工作日 from Wednesday 09-30 16:00 runs over 国庆节 and ends on Thursday 10-08 at 16:00.
    assert cal.due(at(9, 30, 16), 1, Unit.WORK_DAYS) == at(10, 8, 16)


# --- the phase table --------------------------------------------------------------------------


class Table:
    """Stage limits: 受理 15 自然分钟, 立案 1 工作时, 派遣 30 自然分钟 urgent / 1 工作时, 处置
    2 工作日 normal and 4 自然时 urgent, 核查 untimed."""

    def limit(self, stage: Stage, subcategory: str, urgent: bool) -> Limit | None:
        return {
            Stage.RECEIVE: Limit(0.25, Unit.NATURAL_HOURS),
            Stage.REGISTER: Limit(1, Unit.WORK_HOURS),
            Stage.DISPATCH: Limit(0.5, Unit.NATURAL_HOURS) if urgent else Limit(1, Unit.WORK_HOURS),
            Stage.DISPOSE: Limit(4, Unit.NATURAL_HOURS) if urgent else Limit(2, Unit.WORK_DAYS),
        }.get(stage)


CENTER = "区城市运行管理中心"  # the command centre


class Case_:
    """A case driven through the workflow with its phase table, as the engine drives it."""

    def __init__(self, now: int, urgency: str = "normal", source: str = "物联网感知") -> None:
        case, _ = open_case(
            case_no="C1", kind="部件", subcategory="0111", problem="cover", asset="A",
            device="d", urgency=urgency, department="燃气集团", grid=None, allowed_ms=None,
            auto_register=False, actor="system", now_ms=now, source=source,
        )  # fmt: skip
        self.phases, self.case = start(case, now, Table(), CAL, center=CENTER)

    def do(self, action: Action, now: int, extend: float = 0, args: Args | None = None) -> Case:
        given = replace(args or Args(), extend_ms=int(extend * H))
        after, _ = apply(self.case, action, actor="op", now_ms=now, note="现场", args=given)
        changed, self.case = step(
            self.phases, self.case, after, action, now, Table(), CAL, center=CENTER, extend=extend
        )
        for p in changed:
            if self.phases and self.phases[-1].seq == p.seq:
                self.phases[-1] = p
            else:
                self.phases.append(p)
        return self.case


def test_each_stage_has_its_own_clock_and_dispose_starts_at_dispatch() -> None:
    c = Case_(at(4, 30, 9))
    assert c.case.deadline_ms == at(4, 30, 10)  # 立案 stage: 1 工作时
    c.do(A.ACCEPT, at(4, 30, 9, 30))
    assert c.case.deadline_ms == at(4, 30, 10, 30)  # 派遣 stage: 1 工作时 from 立案
    c.do(A.DISPATCH, at(4, 30, 16))  # dispatched late: the 派遣 stage ran over
    # 处置: 2 工作日 = 15 h of work from Thursday 16:00 -> Thursday 1.5 h, holidays, Wednesday
    # 05-06 7.5 h, Thursday 05-07 3.5 h + 2.5 h: 05-07 at 16:00 (counted from 派遣, not 立案).
    assert (c.case.deadline_ms, c.case.timed_from_ms) == (at(5, 7, 16), at(4, 30, 16))
    c.do(A.START, at(5, 6, 9))
    c.do(A.FEEDBACK, at(5, 7, 15))
    c.do(A.VERIFY, at(5, 7, 16))
    c.do(A.CHECK, at(5, 8, 8))  # 核查通过: the 核查 stage runs on to 结案
    c.do(A.CLOSE, at(5, 8, 9))
    rows = [(p.stage, p.start_ms, p.due_ms, p.end_ms, p.overdue(at(6, 1, 12))) for p in c.phases]
    assert rows == [
        ("立案", at(4, 30, 9), at(4, 30, 10), at(4, 30, 9, 30), False),
        ("派遣", at(4, 30, 9, 30), at(4, 30, 10, 30), at(4, 30, 16), True),
        ("处置", at(4, 30, 16), at(5, 7, 16), at(5, 7, 15), False),
        ("核查", at(5, 7, 15), None, at(5, 8, 9), False),
    ]
    # Fails on the old code (every stage the 主办's): the centre holds 立案, 派遣 and 核查 —
    # the late 派遣 above is its own, never 燃气集团's — and the 主办 holds 处置.
    holders = [(p.stage, p.department) for p in c.phases]
    assert holders == [("立案", CENTER), ("派遣", CENTER), ("处置", "燃气集团"), ("核查", CENTER)]


def test_parked_time_is_never_overdue_and_the_clock_runs_again_with_what_was_left() -> None:
    c = Case_(at(4, 30, 9))
    c.do(A.ACCEPT, at(4, 30, 9))
    c.do(A.DISPATCH, at(4, 30, 9))  # 处置 due: 15 h of work: 7 h, holidays, 7.5 h, 0.5 h
    assert c.case.deadline_ms == at(5, 7, 9)
    c.do(A.PARK, at(4, 30, 10))  # 1 h of work used, 14 h left
    (dispose,) = [p for p in c.phases if p.stage == "处置"]
    assert (dispose.left_ms, dispose.parked_since_ms) == (14 * H, at(4, 30, 10))
    assert not dispose.overdue(at(6, 30, 12))  # weeks 挂账: not overdue
    assert not dispose.needs_escalation(at(6, 30, 12))
    c.do(A.UNPARK, at(6, 1, 8, 30))  # Monday 06-01: 14 h of work left: 7.5 h, then 6.5 h
    (dispose,) = [p for p in c.phases if p.stage == "处置"]
    assert c.case.deadline_ms == dispose.due_ms == at(6, 2, 16, 30)
    assert dispose.parked_ms == at(6, 1, 8, 30) - at(4, 30, 10)


def test_an_extension_moves_the_due_time_on_the_stages_clock() -> None:
    c = Case_(at(4, 30, 9))
    c.do(A.ACCEPT, at(4, 30, 9))
    c.do(A.DISPATCH, at(4, 30, 9))  # due 05-07 09:00
    c.do(A.EXTEND, at(5, 6, 9), extend=2)  # 2 work hours later: 05-07 11:00
    (dispose,) = [p for p in c.phases if p.stage == "处置"]
    assert (dispose.due_ms, dispose.extended) == (at(5, 7, 11), 2)


def test_escalation_is_due_once_per_overdue_and_again_at_the_next() -> None:
    c = Case_(at(4, 30, 9))
    c.do(A.ACCEPT, at(4, 30, 9))
    running = c.phases[-1]
    assert not running.needs_escalation(at(4, 30, 10))  # due at 10:00 exactly: not yet
    assert running.needs_escalation(at(4, 30, 10, 1))
    c.do(A.ESCALATE, at(4, 30, 10, 1))
    assert not c.phases[-1].needs_escalation(at(4, 30, 11))  # once for this due time
    assert c.case.escalations == 1
    c.do(A.DISPATCH, at(4, 30, 11))  # a new stage, a new clock: due 05-07 11:00
    assert c.phases[-1].needs_escalation(at(5, 8, 9))
    c.do(A.ESCALATE, at(5, 8, 9))
    c.do(A.EXTEND, at(5, 8, 9, 30), extend=8)  # 8 work hours: due 05-08 11:30
    assert not c.phases[-1].needs_escalation(at(5, 8, 9, 30))  # due moved past now
    assert c.phases[-1].needs_escalation(at(5, 11, 12))  # passed again: 督办 again
    c.do(A.ESCALATE, at(5, 11, 12))
    assert c.case.escalations == 3  # the 督办 level


def test_one_overdue_episode_has_one_escalation() -> None:
    # Fails on the old code: unpark of a case parked overdue raised a new 督办, and so did a
    # 延时 too short to reach now, though the stage never stopped being overdue.
    c = Case_(at(4, 30, 9))
    c.do(A.ACCEPT, at(4, 30, 9))
    c.do(A.DISPATCH, at(4, 30, 9))  # 处置 due 05-07 09:00
    c.do(A.START, at(4, 30, 9))
    c.do(A.ESCALATE, at(5, 7, 10))  # 1 work hour overdue: 督办 第1次
    c.do(A.PARK, at(5, 7, 11))  # parked while overdue: -2 h left
    c.do(A.UNPARK, at(5, 11, 9))  # still 2 work hours overdue
    due = c.phases[-1].due_ms
    assert due is not None
    assert due < at(5, 11, 9)  # moved, yet in the past
    assert not c.phases[-1].needs_escalation(at(5, 11, 9, 1))  # the same episode
    c.do(A.EXTEND, at(5, 11, 9, 30), extend=1)  # 1 work hour: due still past
    assert not c.phases[-1].needs_escalation(at(5, 11, 9, 31))
    c.do(A.EXTEND, at(5, 11, 10), extend=4)  # due 05-11 15:00, past now: a new episode
    due = c.phases[-1].due_ms
    assert due is not None
    assert due > at(5, 11, 10)
    assert not c.phases[-1].needs_escalation(at(5, 11, 10, 1))
    assert c.phases[-1].needs_escalation(due + 1)  # passed again: 第2次


def test_an_urgent_upgrade_shortens_the_running_stage_never_lengthens_it() -> None:
    c = Case_(at(4, 30, 9))
    c.do(A.ACCEPT, at(4, 30, 9))
    c.do(A.DISPATCH, at(4, 30, 9))  # normal: due 05-06 16:30
    up = c.do(A.UPGRADE, at(4, 30, 10), args=Args(severity=1, urgent=True))
    assert (up.urgency, up.deadline_ms) == ("urgent", at(4, 30, 14))  # 4 natural hours
    assert c.phases[-1].unit == "自然时"


def test_rework_and_a_failed_check_open_a_new_dispose_round() -> None:
    c = Case_(at(4, 30, 9))
    for action in (A.ACCEPT, A.DISPATCH, A.START, A.FEEDBACK, A.VERIFY):
        c.do(action, at(4, 30, 9))
    c.do(A.REJECT, at(4, 30, 10))
    assert [p.stage for p in c.phases] == ["立案", "派遣", "处置", "核查", "处置"]
    assert c.phases[-1].start_ms == at(4, 30, 10)
    assert c.phases[3].end_ms == at(4, 30, 10)


def test_a_finished_case_has_no_running_phase() -> None:
    c = Case_(at(4, 30, 9))
    c.do(A.VOID, at(4, 30, 9, 10), args=Args(reason="重复"))
    assert c.case.state is S.VOIDED
    assert [(p.stage, p.end_ms) for p in c.phases] == [("立案", at(4, 30, 9, 10))]


def test_a_report_waits_in_the_receive_stage_a_sensors_case_starts_in_register() -> None:
    # Fails on the old code: 受理 and 立案 were one stage, timed by the 立案 limit.
    c = Case_(at(5, 10, 22), source="监督员")  # a Sunday night: 受理 runs in natural time
    assert (c.case.deadline_ms, c.case.timed_from_ms) == (at(5, 10, 22, 15), at(5, 10, 22))
    c.do(A.RECEIVE, at(5, 10, 22, 20))  # 5 minutes late
    assert c.case.deadline_ms == at(5, 11, 9, 30)  # 立案: 1 工作时 from Monday 08:30
    c.do(A.ACCEPT, at(5, 11, 9))
    rows = [(p.stage, p.start_ms, p.due_ms, p.end_ms, p.overdue(at(5, 11, 9))) for p in c.phases]
    assert rows[:2] == [
        ("受理", at(5, 10, 22), at(5, 10, 22, 15), at(5, 10, 22, 20), True),
        ("立案", at(5, 10, 22, 20), at(5, 11, 9, 30), at(5, 11, 9), False),
    ]
    sensed = Case_(at(5, 10, 22))
    assert [p.stage for p in sensed.phases] == ["立案"]  # received by the system as it opened
    assert c.phases[0].department == CENTER  # the 受理员 is the centre's
