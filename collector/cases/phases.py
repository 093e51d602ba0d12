"""The phase table of a case: one row per stage it went through — stage, department, start, due,
end, overdue — each stage with its own clock (GB/T 30428.1 阶段时限).

Stages and the workflow states they cover:

- 受理: 受理 until the 受理员 receives the report (receive), or 作废 — a sensor's case never
  opens it (the system receives the alarm as it opens the case);
- 立案: 受理 from its receipt until 立案 or 作废 (the 值班长's decision);
- 派遣: 立案, until 派遣 (the 派遣员);
- 处置: 派遣, 处置 and 挂账, until 反馈 — the 处置 clock starts at 派遣, and stops while 挂账;
- 核查: 反馈 and 核查, until 结案 or 核查不通过.

Each phase carries who held it, the one 数字城管 考核 holds to its time limit: 受理, 立案 and
派遣 are the 指挥中心's (受理员, 值班长, 派遣员), 处置 the 主办 专业部门's, and 核查 the
command centre's too — the 监督中心 that sends the 监督员 is, here, the same 城市运行管理中心
(the routing table's `center`). A slow 派遣员 is the centre's late 派遣, never a department's.

A stage's limit comes from the routing table per (小类, urgency) and counts in 工作时, 工作日 or
自然时 on the city's working calendar. 挂账 time is never overdue: the clock keeps the time that
was left and runs again from 解除挂账. 延时 moves the due time by its hours on the stage's clock
(work hours for a 工作时/工作日 stage). A 督办 is due once per overdue episode: a new stage, or
a due time moved past now by 延时 that then passes again. A due time moved while the stage stays
overdue (解除挂账 of a case parked overdue, a 延时 too short to reach now) keeps the 督办 it had.
Pure code over plain values with the time given.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from lifeline.collector.cases.calendar import HOUR_MS, Unit, WorkCalendar
from lifeline.collector.cases.workflow import Action, Case, CaseState

S = CaseState


class Stage(StrEnum):
    """A stage with its own time limit."""

    RECEIVE = "受理"
    REGISTER = "立案"
    DISPATCH = "派遣"
    DISPOSE = "处置"
    VERIFY = "核查"


# The stages the command centre holds (the rest, 处置, the case's 主办 department holds).
CENTER_STAGES = frozenset({Stage.RECEIVE, Stage.REGISTER, Stage.DISPATCH, Stage.VERIFY})


# The stage of each state but 受理, whose stage depends on the receipt (stage_of).
STAGE_OF: dict[CaseState, Stage] = {
    S.REGISTERED: Stage.DISPATCH,
    S.DISPATCHED: Stage.DISPOSE,
    S.HANDLING: Stage.DISPOSE,
    S.PARKED: Stage.DISPOSE,
    S.FEEDBACK: Stage.VERIFY,
    S.VERIFYING: Stage.VERIFY,
}


def stage_of(case: Case) -> Stage | None:
    """The stage a case is in: by its state, and for 受理 by whether it was received yet
    (None: finished, no stage runs)."""
    if case.state is S.REPORTED:
        return Stage.REGISTER if case.received_by is not None else Stage.RECEIVE
    return STAGE_OF.get(case.state)


@dataclass(frozen=True, slots=True)
class Limit:
    """A time limit: `amount` of `unit`."""

    amount: float
    unit: Unit

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit.value}"


class Limits(Protocol):
    """Where limits come from (the routing table provides it)."""

    def limit(self, stage: Stage, subcategory: str, urgent: bool) -> Limit | None:
        """The limit of `stage` for a case of this 小类 and urgency (None: untimed)."""
        ...


@dataclass(frozen=True, slots=True)
class Phase:
    """One stage a case went through. Times are UTC ms; `due_ms` None: the stage is untimed.

    `parked_ms` is the 挂账 time inside it, `parked_since_ms` set while parked, with `left_ms`
    the time that was left then (as its unit counts); `extended` the 延时 granted (hours);
    `escalated_due_ms` the due time the last 督办 was raised for."""

    case_no: str
    seq: int
    stage: str
    department: str
    start_ms: int
    due_ms: int | None
    unit: str = Unit.NATURAL_HOURS.value
    end_ms: int | None = None
    parked_ms: int = 0
    parked_since_ms: int | None = None
    left_ms: int | None = None
    extended: float = 0
    escalated_due_ms: int | None = None

    def overdue(self, now_ms: int) -> bool:
        """True if the stage ended after its due time, or runs (not parked) past it now."""
        if self.due_ms is None:
            return False
        if self.end_ms is not None:
            return self.end_ms > self.due_ms
        return self.parked_since_ms is None and now_ms > self.due_ms

    def needs_escalation(self, now_ms: int) -> bool:
        """Overdue now and not yet escalated (督办) for this due time."""
        return self.end_ms is None and self.overdue(now_ms) and self.escalated_due_ms != self.due_ms


def holder(stage: Stage, case: Case, center: str) -> str:
    """Who holds `stage` of `case`: the command centre `center` for 受理, 立案, 派遣 and
    核查, the case's 主办 department for 处置."""
    return center if stage in CENTER_STAGES else case.department


def _open(
    case: Case, seq: int, now_ms: int, limits: Limits, calendar: WorkCalendar, center: str
) -> Phase | None:
    stage = stage_of(case)
    if stage is None:
        return None
    held = holder(stage, case, center)
    limit = limits.limit(stage, case.subcategory, case.urgency == "urgent")
    if limit is None:
        return Phase(case.case_no, seq, stage.value, held, now_ms, None)
    due = calendar.due(now_ms, limit.amount, limit.unit)
    return Phase(case.case_no, seq, stage.value, held, now_ms, due, limit.unit.value)


def _retime(case: Case, phase: Phase | None) -> Case:
    """The case's clock fields from its running phase (`deadline_ms` is the stage's due)."""
    if phase is None or phase.end_ms is not None:
        return replace(case, remaining_ms=None)
    if phase.parked_since_ms is not None:
        return replace(
            case, deadline_ms=phase.due_ms, timed_from_ms=None, remaining_ms=phase.left_ms
        )
    return replace(case, deadline_ms=phase.due_ms, timed_from_ms=phase.start_ms, remaining_ms=None)


def start(
    case: Case, now_ms: int, limits: Limits, calendar: WorkCalendar, *, center: str
) -> tuple[list[Phase], Case]:
    """The first phase of a new case (in the stage of its state, held as `holder` says with
    `center` the command centre's department name), and the case timed by it."""
    phase = _open(case, 1, now_ms, limits, calendar, center)
    return ([phase] if phase else []), _retime(case, phase)


def step(
    phases: Sequence[Phase],
    before: Case,
    after: Case,
    action: Action,
    now_ms: int,
    limits: Limits,
    calendar: WorkCalendar,
    *,
    center: str,
    extend: float = 0,
) -> tuple[list[Phase], Case]:
    """Follow a transition `before` -> `after` by `action` at `now_ms` on the phase table;
    a phase it opens is held as `holder` says (`center`: the command centre's name).

    Returns the phases changed or added (to store) and `after` with its clock fields set from
    the running phase. A change of stage ends the running phase and opens the next; within a
    stage, 挂账 stops the clock, 解除挂账 runs it again with the time that was left, 延时 moves
    the due time by `extend` hours of the stage's clock, 升级 to urgent shortens it (never
    lengthens), and 督办 marks the due time it was raised for (carried to a due time moved but
    still past, so one overdue episode has one 督办).
    """
    current = phases[-1] if phases and phases[-1].end_ms is None else None
    seq = phases[-1].seq if phases else 0
    stage = stage_of(after)
    if current is None or stage is None or current.stage != stage.value:
        changed = []
        if current is not None:
            changed.append(replace(current, end_ms=now_ms))
        opened = _open(after, seq + 1, now_ms, limits, calendar, center) if stage else None
        if opened is not None:
            changed.append(opened)
        return changed, _retime(after, opened)
    unit = Unit(current.unit)
    updated = current
    if action is Action.PARK and current.parked_since_ms is None:
        left = None if current.due_ms is None else calendar.left(now_ms, current.due_ms, unit)
        updated = replace(current, parked_since_ms=now_ms, left_ms=left)
    elif action is Action.UNPARK and current.parked_since_ms is not None:
        due = current.due_ms
        if current.left_ms is not None:
            due = calendar.resume(now_ms, current.left_ms, unit)
        updated = replace(
            current,
            parked_ms=current.parked_ms + now_ms - current.parked_since_ms,
            parked_since_ms=None,
            left_ms=None,
            due_ms=due,
        )
    elif action is Action.EXTEND and current.due_ms is not None and extend > 0:
        # Hours of the stage's clock: work hours for a 工作时/工作日 limit, else natural hours.
        hours = Unit.NATURAL_HOURS if unit is Unit.NATURAL_HOURS else Unit.WORK_HOURS
        if current.parked_since_ms is not None and current.left_ms is not None:
            updated = replace(current, left_ms=current.left_ms + round(extend * HOUR_MS))
        else:
            updated = replace(current, due_ms=calendar.due(current.due_ms, extend, hours))
        updated = replace(updated, extended=current.extended + extend)
    elif action is Action.UPGRADE and after.urgency == "urgent" and before.urgency != "urgent":
        updated = _shorten(current, after, now_ms, limits, calendar)
    elif action is Action.ESCALATE:
        updated = replace(current, escalated_due_ms=current.due_ms)
    if _same_overdue(current, updated, now_ms):
        # It never stopped being overdue (a 解除挂账 of a case parked overdue, a 延时 too short
        # to reach now): the 督办 already raised covers the moved due time.
        updated = replace(updated, escalated_due_ms=updated.due_ms)
    if updated == current:
        return [], _retime(after, current)
    return [updated], _retime(after, updated)


def _same_overdue(before: Phase, after: Phase, now_ms: int) -> bool:
    """True if `before` was escalated for its due time and `after` moved that due time to one
    still past at `now_ms`, with the clock running."""
    return (
        before.due_ms is not None
        and before.escalated_due_ms == before.due_ms
        and after.due_ms is not None
        and after.due_ms != before.due_ms
        and after.parked_since_ms is None
        and after.due_ms <= now_ms
    )


def _shorten(
    phase: Phase, case: Case, now_ms: int, limits: Limits, calendar: WorkCalendar
) -> Phase:
    limit = limits.limit(Stage(phase.stage), case.subcategory, True)
    if limit is None:
        return phase
    due = calendar.due(now_ms, limit.amount, limit.unit)
    if phase.parked_since_ms is not None:
        left = calendar.left(now_ms, due, Unit(phase.unit))
        if phase.left_ms is None or left < phase.left_ms:
            return replace(phase, left_ms=left)
        return phase
    if phase.due_ms is None or due < phase.due_ms:
        return replace(phase, due_ms=due, unit=limit.unit.value)
    return phase
