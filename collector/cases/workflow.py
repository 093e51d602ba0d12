"""The 数字城管 case state machine (GB/T 30428, CJJ/T 106) as pure code with an injected clock.

受理 → 立案 → 派遣 → 处置 → 反馈 → 核查 → 结案, plus 延时 (extend the deadline), 回退 (return for
re-dispatch), 挂账 (park), 作废 (void) and 督办 (escalate). Every transition yields an audit row.
"""

from dataclasses import dataclass, replace
from enum import StrEnum


class CaseState(StrEnum):
    """Where a case is in its lifecycle; values are the national workflow terms."""

    REPORTED = "受理"  # reported, waiting for an operator to accept it
    REGISTERED = "立案"  # accepted as a case, waiting for dispatch
    DISPATCHED = "派遣"  # sent to the responsible department
    HANDLING = "处置"  # the department is working on it
    FEEDBACK = "反馈"  # the department reported it done
    VERIFYING = "核查"  # a field check (or the sensor clearing) confirms the result
    CLOSED = "结案"
    PARKED = "挂账"  # cannot be handled now (budget, season); the clock stops
    VOIDED = "作废"


class Action(StrEnum):
    """What a person or the system can do to a case."""

    ACCEPT = "accept"  # 受理 -> 立案
    VOID = "void"  # 作废
    DISPATCH = "dispatch"  # 派遣
    START = "start"  # 处置
    FEEDBACK = "feedback"  # 反馈
    VERIFY = "verify"  # 核查 after feedback
    ALARM_CLEARED = "alarm_cleared"  # the sensor says the problem is gone: go to 核查
    CLOSE = "close"  # 结案
    RETURN = "return"  # 回退: the department returns a mis-dispatched case
    REJECT = "reject"  # 核查不通过: back to the department
    PARK = "park"  # 挂账
    UNPARK = "unpark"
    EXTEND = "extend"  # 延时
    ESCALATE = "escalate"  # 督办


S = CaseState
OPEN_STATES = frozenset(set(CaseState) - {S.CLOSED, S.VOIDED})

# (action, from state) -> to state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[Action, CaseState], CaseState] = {
    (Action.ACCEPT, S.REPORTED): S.REGISTERED,
    (Action.VOID, S.REPORTED): S.VOIDED,
    (Action.VOID, S.REGISTERED): S.VOIDED,
    (Action.DISPATCH, S.REGISTERED): S.DISPATCHED,
    (Action.START, S.DISPATCHED): S.HANDLING,
    (Action.FEEDBACK, S.HANDLING): S.FEEDBACK,
    (Action.VERIFY, S.FEEDBACK): S.VERIFYING,
    (Action.ALARM_CLEARED, S.REGISTERED): S.VERIFYING,
    (Action.ALARM_CLEARED, S.DISPATCHED): S.VERIFYING,
    (Action.ALARM_CLEARED, S.HANDLING): S.VERIFYING,
    (Action.ALARM_CLEARED, S.FEEDBACK): S.VERIFYING,
    (Action.CLOSE, S.VERIFYING): S.CLOSED,
    (Action.RETURN, S.DISPATCHED): S.REGISTERED,
    (Action.RETURN, S.HANDLING): S.REGISTERED,
    (Action.REJECT, S.VERIFYING): S.HANDLING,
    (Action.PARK, S.DISPATCHED): S.PARKED,
    (Action.PARK, S.HANDLING): S.PARKED,
    (Action.UNPARK, S.PARKED): S.HANDLING,
    (Action.EXTEND, S.DISPATCHED): S.DISPATCHED,
    (Action.EXTEND, S.HANDLING): S.HANDLING,
    **{(Action.ESCALATE, s): s for s in OPEN_STATES},
}

# States in which the deadline clock runs.
TIMED_STATES = frozenset({S.REGISTERED, S.DISPATCHED, S.HANDLING, S.FEEDBACK})


class IllegalTransition(ValueError):
    """An action that the workflow does not allow from the case's current state."""

    def __init__(self, case_no: str, action: Action, state: CaseState) -> None:
        allowed = sorted(a.value for (a, s) in TRANSITIONS if s is state)
        super().__init__(
            f"case {case_no}: cannot {action.value} a case in state {state.value}"
            f" (allowed here: {', '.join(allowed) or 'nothing, the case is finished'})"
        )
        self.case_no = case_no
        self.action = action
        self.state = state


class Colour(StrEnum):
    """Deadline light shown to operators."""

    GREEN = "green"
    YELLOW = "yellow"  # less than a quarter of the allowed time left
    RED = "red"  # overdue
    NONE = "none"  # not timed (waiting for 受理, parked, finished, or no deadline)


@dataclass(frozen=True, slots=True)
class Case:
    """A city-management case; `kind` is 部件 (asset) or 事件 (event)."""

    case_no: str
    kind: str
    subcategory: str
    problem: str
    asset: str | None
    device: str | None
    state: CaseState
    urgency: str
    department: str
    grid: str | None
    created_ms: int
    updated_ms: int
    deadline_ms: int | None
    timed_from_ms: int | None
    repeats: int = 0
    escalations: int = 0
    title: str = ""
    gateway: str | None = None  # the gateway of `device` (a device id is unique per gateway)

    @property
    def subject(self) -> str:
        """What the case is about, for one open case per (subject, problem): the asset, else
        the gateway's device, else the case itself."""
        if self.asset:
            return self.asset
        if self.device:
            return f"{self.gateway}/{self.device}" if self.gateway else self.device
        return self.case_no


@dataclass(frozen=True, slots=True)
class Audit:
    """One audit row: who did what to which case, when, from which state to which, and why."""

    case_no: str
    ts_ms: int
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str = ""


def apply(
    case: Case,
    action: Action,
    *,
    actor: str,
    now_ms: int,
    note: str = "",
    extend_ms: int = 0,
) -> tuple[Case, Audit]:
    """Apply `action` to `case` at `now_ms`; raise IllegalTransition if not allowed."""
    if not actor:
        raise ValueError(f"case {case.case_no}: every transition needs an actor")
    target = TRANSITIONS.get((action, case.state))
    if target is None:
        raise IllegalTransition(case.case_no, action, case.state)
    if action is Action.EXTEND and extend_ms <= 0:
        raise ValueError(f"case {case.case_no}: 延时 needs a positive extension")
    updated = replace(case, state=target, updated_ms=now_ms)
    if action is Action.EXTEND and case.deadline_ms is not None:
        updated = replace(updated, deadline_ms=case.deadline_ms + extend_ms)
    elif action is Action.ACCEPT and case.deadline_ms is not None:
        # In 受理 deadline_ms holds the allowed duration; 立案 starts the clock.
        updated = replace(updated, deadline_ms=now_ms + case.deadline_ms, timed_from_ms=now_ms)
    elif action is Action.ESCALATE:
        updated = replace(updated, escalations=case.escalations + 1)
    elif action is Action.PARK and case.deadline_ms is not None:
        # The clock stops while parked: remember the time left as a negative offset from "now".
        updated = replace(updated, deadline_ms=case.deadline_ms - now_ms, timed_from_ms=None)
    elif action is Action.UNPARK and case.deadline_ms is not None:
        updated = replace(updated, deadline_ms=now_ms + case.deadline_ms, timed_from_ms=now_ms)
    audit = Audit(case.case_no, now_ms, actor, action.value, case.state.value, target.value, note)
    return updated, audit


def open_case(
    *,
    case_no: str,
    kind: str,
    subcategory: str,
    problem: str,
    asset: str | None,
    device: str | None,
    urgency: str,
    department: str,
    grid: str | None,
    allowed_ms: int | None,
    auto_register: bool,
    actor: str,
    now_ms: int,
    title: str = "",
    note: str = "",
    gateway: str | None = None,
) -> tuple[Case, list[Audit]]:
    """Create a case in 受理; with `auto_register` it is 立案 at once (two audit rows)."""
    case = Case(
        case_no=case_no,
        kind=kind,
        subcategory=subcategory,
        problem=problem,
        asset=asset,
        device=device,
        state=S.REPORTED,
        urgency=urgency,
        department=department,
        grid=grid,
        created_ms=now_ms,
        updated_ms=now_ms,
        deadline_ms=allowed_ms,  # while in 受理 this holds the allowed duration, not a time
        timed_from_ms=None,
        title=title,
        gateway=gateway,
    )
    audits = [Audit(case_no, now_ms, actor, "report", None, S.REPORTED.value, note)]
    if auto_register:
        case, audit = apply(case, Action.ACCEPT, actor=actor, now_ms=now_ms, note="auto-立案")
        audits.append(audit)
    return case, audits


def colour(case: Case, now_ms: int) -> Colour:
    """Deadline light: green, yellow (< 1/4 of the allowed time left), red (overdue)."""
    if case.state not in TIMED_STATES or case.deadline_ms is None or case.timed_from_ms is None:
        return Colour.NONE
    if now_ms > case.deadline_ms:
        return Colour.RED
    total = max(case.deadline_ms - case.timed_from_ms, 1)
    return Colour.YELLOW if (case.deadline_ms - now_ms) * 4 < total else Colour.GREEN


def needs_escalation(case: Case, now_ms: int) -> bool:
    """An overdue timed case that has not yet been escalated for this deadline."""
    return colour(case, now_ms) is Colour.RED and case.escalations == 0
