"""The 数字城管 case state machine (GB/T 30428, CJJ/T 106) as pure code with an injected clock.

受理 → 立案 → 派遣 → 处置 → 反馈 → 核查 → 结案, plus 延时 (extend the deadline), 回退 (return to the
派遣员 for 改派), 挂账 (park), 作废 (void) and 督办 (escalate). The system adds three transitions of
its own, never posted by a key: 升级 (a more severe alarm upgrades the case), 返工 (the alarm came
back while the department said it was done) and 自动恢复 (结案 before 派遣, where configured).
Every transition yields an audit row.

Times are UTC milliseconds. The clock is not kept here: each stage of a case has its own, in
its phase table (collector.cases.phases), which sets `deadline_ms` (the running stage's due
time, or None), `timed_from_ms` and, while 挂账, `remaining_ms`. `allowed_ms` is the 处置 limit
its 小类 and urgency give.
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from lifeline.collector.cases.calendar import HOUR_MS
from lifeline.collector.cases.codes import conditions

COMPONENT, EVENT, UNCLASSIFIED = "部件", "事件", "未分类"
KINDS = (COMPONENT, EVENT)


class CaseState(StrEnum):
    """Where a case is in its lifecycle; values are the national workflow terms."""

    REPORTED = "受理"  # reported: the 受理员 receives it, then the 值班长 decides 立案
    REGISTERED = "立案"  # accepted as a case, waiting for the 派遣员 to dispatch it
    DISPATCHED = "派遣"  # sent to the responsible department
    HANDLING = "处置"  # the department is working on it
    FEEDBACK = "反馈"  # the department reported it done
    VERIFYING = "核查"  # an inspector checks the result on site
    CLOSED = "结案"
    PARKED = "挂账"  # cannot be handled now (budget, season); the clock stops
    VOIDED = "作废"


class Action(StrEnum):
    """What a person or the system can do to a case."""

    RECEIVE = "receive"  # 受理: the 受理员 takes the report in (the system, for a sensor's)
    ACCEPT = "accept"  # 受理 -> 立案 (an unclassified case is classified here)
    CONFIRM = "confirm"  # 核实: a 监督员 finds a 公众 or 12345 report true on site
    VOID = "void"  # 作废
    DISPATCH = "dispatch"  # 派遣 (and 改派 after a 回退): names the 主办 and 协办 departments
    START = "start"  # 处置
    FEEDBACK = "feedback"  # 反馈
    VERIFY = "verify"  # to 核查 after the department's 反馈
    CHECK = "check"  # 核查通过: the 监督员 finds the work done on site
    CLOSE = "close"  # 结案 after 核查, closure 处置完成 (after 核查通过) or 误报
    RETURN = "return"  # 回退: the department returns a mis-dispatched case to the 派遣员
    REJECT = "reject"  # 核查不通过 (with its reason): back to the department
    PARK = "park"  # 挂账
    UNPARK = "unpark"
    EXTEND = "extend"  # 延时
    ESCALATE = "escalate"  # 督办
    REPLY = "reply"  # the department answers the 督办 (its note is the reply)
    APPLY = "apply"  # the department applies for 延时, 挂账 or 回退 (its `request`)
    APPROVE = "approve"  # the 派遣员 grants the pending application: it takes effect
    DENY = "deny"  # the 派遣员 refuses it
    UPGRADE = "upgrade"  # system: a more severe alarm joined the case
    REWORK = "rework"  # system: the alarm came back after 反馈 / during 核查
    AUTO_CLOSE = "auto_close"  # system: 结案 as 自动恢复, before 派遣, where configured


SYSTEM_ACTIONS = frozenset({Action.UPGRADE, Action.REWORK, Action.AUTO_CLOSE})
# 延时 and 挂账 take effect only as the 派遣员's approve of a department's application (申请 →
# 审批, the 数字城管 rule): nobody posts them in one step, the command centre included.
GRANTED_ONLY = frozenset({Action.EXTEND, Action.PARK})
# A 延时 is granted in half hours; more than the stage's own limit in one grant is refused.
EXTEND_STEP_MS = HOUR_MS // 2


class CheckResult(StrEnum):
    """The 监督员's 核查结果."""

    PASSED = "通过"  # the work is done: the 值班长 may 结案 (处置完成)
    FAILED = "不通过"  # back to the department, with the reason
    FALSE_ALARM = "误报"  # nothing was wrong: 结案 as 误报


class Closure(StrEnum):
    """How a case was closed (结案类型)."""

    DONE = "处置完成"  # the department fixed it and 核查 confirmed it
    AUTO = "自动恢复"  # the sensor cleared before anyone was dispatched (configured)
    FALSE_ALARM = "误报"  # 核查 found no problem


S = CaseState
OPEN_STATES = frozenset(set(CaseState) - {S.CLOSED, S.VOIDED})

# (action, from state) -> to state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[Action, CaseState], CaseState] = {
    (Action.RECEIVE, S.REPORTED): S.REPORTED,
    (Action.ACCEPT, S.REPORTED): S.REGISTERED,
    (Action.CONFIRM, S.REPORTED): S.REPORTED,
    (Action.VOID, S.REPORTED): S.VOIDED,
    (Action.VOID, S.REGISTERED): S.VOIDED,
    (Action.DISPATCH, S.REGISTERED): S.DISPATCHED,
    (Action.START, S.DISPATCHED): S.HANDLING,
    (Action.FEEDBACK, S.HANDLING): S.FEEDBACK,
    (Action.VERIFY, S.FEEDBACK): S.VERIFYING,
    (Action.CHECK, S.VERIFYING): S.VERIFYING,
    (Action.CLOSE, S.VERIFYING): S.CLOSED,
    (Action.RETURN, S.DISPATCHED): S.REGISTERED,
    (Action.RETURN, S.HANDLING): S.REGISTERED,
    (Action.REJECT, S.VERIFYING): S.HANDLING,
    (Action.PARK, S.DISPATCHED): S.PARKED,
    (Action.PARK, S.HANDLING): S.PARKED,
    (Action.UNPARK, S.PARKED): S.HANDLING,  # or back to 派遣, if parked there (Args.parked_from)
    (Action.EXTEND, S.DISPATCHED): S.DISPATCHED,
    (Action.EXTEND, S.HANDLING): S.HANDLING,
    (Action.REWORK, S.FEEDBACK): S.HANDLING,
    (Action.REWORK, S.VERIFYING): S.HANDLING,
    (Action.AUTO_CLOSE, S.REPORTED): S.CLOSED,
    (Action.AUTO_CLOSE, S.REGISTERED): S.CLOSED,
    **{(Action.APPLY, s): s for s in (S.DISPATCHED, S.HANDLING)},
    **{(Action.APPROVE, s): s for s in (S.DISPATCHED, S.HANDLING)},
    **{(Action.DENY, s): s for s in (S.DISPATCHED, S.HANDLING)},
    **{(Action.ESCALATE, s): s for s in OPEN_STATES},
    **{(Action.REPLY, s): s for s in OPEN_STATES},
    **{(Action.UPGRADE, s): s for s in OPEN_STATES},
}

# States in which a stage clock runs (挂账 stops it; 结案 and 作废 end it).
TIMED_STATES = frozenset(OPEN_STATES - {S.PARKED})


class IllegalTransition(ValueError):
    """An action that the workflow does not allow from the case's current state."""

    def __init__(self, case_no: str, action: Action, state: CaseState) -> None:
        allowed = sorted(
            a.value
            for (a, s) in TRANSITIONS
            if s is state and a not in SYSTEM_ACTIONS | GRANTED_ONLY
        )
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
class Place:
    """Where a case is: longitude and latitude (degrees, in `datum`), an address, and where the
    place came from: `asset` (the 部件's record), `device` (the device's own install location,
    from its gateway's birth) or `none` (neither is known)."""

    lon: float | None = None
    lat: float | None = None
    datum: str = ""
    address: str = ""
    source: str = "none"


@dataclass(frozen=True, slots=True)
class Case:
    """A city-management case; `kind` is 部件 (asset), 事件 (event) or 未分类 (to classify)."""

    case_no: str
    kind: str
    subcategory: str  # '' while 未分类
    problem: str
    asset: str | None
    device: str | None
    state: CaseState
    urgency: str
    department: str  # 主办
    grid: str | None
    created_ms: int
    updated_ms: int
    deadline_ms: int | None  # a time, or None while no deadline runs (受理, no limit)
    timed_from_ms: int | None
    repeats: int = 0
    escalations: int = 0
    title: str = ""
    gateway: str | None = None  # the gateway of `device` (a device id is unique per gateway)
    allowed_ms: int | None = None  # the time limit its 小类 and urgency give (None: unknown yet)
    severity: int | None = None  # the most severe alarm attached (1 = 一级 ... 4 = 四级)
    assist: tuple[str, ...] = ()  # 协办 departments
    reworks: int = 0  # 返工
    returns: int = 0  # 回退
    closure: str | None = None  # a Closure value once 结案
    recurrence_of: str | None = None  # the case this one recurs (反复发生)
    remaining_ms: int | None = None  # while 挂账: the time that was left
    location: Place = field(default_factory=Place)
    pending: str | None = None  # an application awaiting the 派遣员: extend, park or return
    pending_hours: float = 0  # the 延时 applied for (hours on the stage's clock)
    source: str = "物联网感知"  # where the report came from: one of SOURCES
    void_reason: str | None = None  # once 作废: one of VOID_REASONS
    media_url: str = ""  # a photo of the problem, from the report (http or https)
    contact: str = ""  # the reporter's contact fields as a JSON object (never published)
    confirmed_by: str | None = None  # the 监督员 whose 核实 a 公众 or 12345 report needs
    received_by: str | None = None  # who received it (受理): a 受理员's key, or the system
    received_ms: int | None = None
    register_condition: str = ""  # 立案条件 met, from the 小类 table or the 值班长's words
    close_condition: str = ""  # 结案条件 met at 结案
    disposal_note: str = ""  # 处置意见: the department's account of what it did, at 反馈
    check_result: str | None = None  # 核查结果 of the current round: a CheckResult value
    check_note: str = ""  # the 监督员's finding (the reason, when 不通过)
    check_media_url: str = ""  # a photo taken at 核查 (http or https)
    checked_by: str | None = None
    checked_ms: int | None = None
    token: str | None = None  # the Open311 token the reporting app was given
    # The stored row's version it was read at (a save over another is a Conflict); no part of
    # the record, so not of equality either.
    version: int = field(default=0, compare=False)

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
    """One audit row: who did what to which case, when, from which state to which, and why.

    `actor` is the authenticated key's name (or `system`); `key_id` and `role` are that key's
    (None and '' for the system); `on_behalf_of` is a name the client gave, kept apart because
    nothing vouches for it."""

    case_no: str
    ts_ms: int
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str = ""
    key_id: int | None = None
    role: str = ""
    on_behalf_of: str = ""


@dataclass(frozen=True, slots=True)
class Classification:
    """What an operator decides when accepting an unclassified case: its kind and 小类, and
    the time limit that gives (from the routing table)."""

    kind: str
    subcategory: str
    allowed_ms: int


# Where a case's report came from (案件来源) and why one is voided (作废原因).
SOURCES = ("物联网感知", "监督员", "12345", "公众")
SENSED = "物联网感知"  # a sensor's alarm: the system receives (受理) it as it opens the case
PUBLIC = "公众"  # a citizen's report (Open311 POST): 受理 only after a 监督员's 核实
INSPECTOR = "监督员"  # a 监督员's 上报 from the field: the reporter saw it, no 核实
HOTLINE = "12345"  # a 12345 hotline call a 受理员 entered: 受理 only after a 监督员's 核实
# The sources whose report nobody on the city's staff has seen: a 监督员 核实s it on site
# before the 受理员 takes it in (the 数字城管 rule for 公众举报 and 热线 cases).
UNSEEN = frozenset({PUBLIC, HOTLINE})
VOID_REASONS = ("误报", "重复", "非管理范围", "设备故障")

# What a department may apply for, and the action an approval takes.
REQUESTS = {"extend": Action.EXTEND, "park": Action.PARK, "return": Action.RETURN}
REQUEST_NAMES = {"extend": "延时", "park": "挂账", "return": "回退"}


@dataclass(frozen=True, slots=True)
class Args:
    """Arguments of the actions that take any: 延时 `extend_ms`; 派遣 `department` (主办) and
    `assist` (协办); 结案 `closure`; 受理 `classify`; 升级 `severity`, `urgent` and the
    `allowed_ms` of the new urgency; 申请 `request` (extend, park or return; with `extend_ms`
    for extend); 作废 its `reason` (one of VOID_REASONS); 立案 and 结案 `condition` (the
    立案条件 / 结案条件 in the 值班长's words, instead of the 小类 table's); 核查 (check,
    reject) `media_url`, a photo; 申请 延时 `extend_max_ms`, the most one grant may give (the
    running stage's own limit, None: the stage is untimed); 解除挂账 `parked_from`, the state
    the case was parked from; 督办回复 `replied`, True if the last 督办 was answered already."""

    extend_ms: int = 0
    department: str | None = None
    assist: tuple[str, ...] = ()
    closure: Closure | None = None
    classify: Classification | None = None
    severity: int | None = None
    urgent: bool = False
    allowed_ms: int | None = None
    request: str | None = None
    reason: str | None = None
    condition: str | None = None
    media_url: str = ""
    extend_max_ms: int | None = None
    parked_from: CaseState | None = None
    replied: bool = False


def _join(detail: str, note: str) -> str:
    return f"{detail}: {note}" if note else detail


def _accept(case: Case, args: Args) -> Case:
    if case.kind == UNCLASSIFIED and args.classify is None:
        raise ValueError(
            f"case {case.case_no} is 未分类: accept it with its kind (部件 or 事件) and 小类"
        )
    if args.classify is not None:
        c = args.classify
        if c.kind not in KINDS:
            raise ValueError(f"kind {c.kind!r} is not 部件 or 事件")
        case = replace(case, kind=c.kind, subcategory=c.subcategory, allowed_ms=c.allowed_ms)
    condition = args.condition or conditions(case.kind, case.subcategory)[0]
    return replace(case, register_condition=condition)


def _check(case: Case, result: CheckResult, actor: str, now_ms: int, note: str, args: Args) -> Case:
    return replace(
        case,
        check_result=result.value,
        check_note=note,
        check_media_url=args.media_url,
        checked_by=actor,
        checked_ms=now_ms,
    )


def _close(case: Case, actor: str, now_ms: int, note: str, args: Args) -> tuple[Case, str]:
    closure = args.closure or Closure.DONE
    if closure is Closure.AUTO:
        raise ValueError("自动恢复 is recorded by the system only, before 派遣")
    if closure is Closure.DONE:
        if case.check_result != CheckResult.PASSED.value:
            raise ValueError(
                f"case {case.case_no}: 结案 (处置完成) needs 核查通过 — a 监督员 posts check"
                " (or close it as 误报)"
            )
        condition = args.condition or conditions(case.kind, case.subcategory)[1]
    else:  # 误报 is itself the 核查's finding, recorded as the 核查结果
        condition = args.condition or ""
        case = _check(case, CheckResult.FALSE_ALARM, actor, now_ms, note, args)
    detail = f"结案: {closure.value}" + (f", 结案条件: {condition}" if condition else "")
    return replace(case, closure=closure.value, close_condition=condition), detail


def _dispatch(case: Case, args: Args) -> tuple[Case, str]:
    if case.returns and args.department is None:
        raise ValueError(
            f"case {case.case_no} was returned (回退): 改派 names the department it goes to"
        )
    dept = args.department or case.department
    assist = tuple(a for a in dict.fromkeys(args.assist) if a != dept)
    if case.returns or dept != case.department:
        detail = f"改派 主办 {case.department} → {dept}"
    else:
        detail = f"派遣 主办 {dept}"
    if assist:
        detail += f", 协办 {'、'.join(assist)}"
    return replace(case, department=dept, assist=assist), detail


def _upgrade(case: Case, args: Args) -> tuple[Case, str]:
    if args.severity is None or (case.severity is not None and args.severity >= case.severity):
        raise ValueError(f"case {case.case_no}: an upgrade needs a more severe alarm")
    detail = f"severity {case.severity or '?'} → {args.severity}"
    urgent = args.urgent or case.urgency == "urgent"  # urgency never drops
    updated = replace(case, severity=args.severity, urgency="urgent" if urgent else "normal")
    new = args.allowed_ms
    if new is not None and (case.allowed_ms is None or new < case.allowed_ms):
        updated = replace(updated, allowed_ms=new)  # shorter, never longer
    if urgent and case.urgency != "urgent":
        detail += ", now urgent"
    return updated, detail


def _apply_for(case: Case, args: Args) -> tuple[Case, str]:
    if case.pending is not None:
        raise ValueError(
            f"case {case.case_no} already has an application for"
            f" {REQUEST_NAMES[case.pending]}: the 派遣员 approves or denies it first"
        )
    if args.request not in REQUESTS:
        raise ValueError(f"an application is for one of: {', '.join(REQUESTS)}")
    hours = args.extend_ms / HOUR_MS
    if (args.request == "extend") != (hours > 0):
        raise ValueError("an application for extend (延时) and only that gives its hours")
    if args.request == "extend":
        _bound_extension(case, args)
    detail = f"申请 {REQUEST_NAMES[args.request]}" + (f" {hours:g} h" if hours else "")
    return replace(case, pending=args.request, pending_hours=hours), detail


def _bound_extension(case: Case, args: Args) -> None:
    if args.extend_ms % EXTEND_STEP_MS:
        raise ValueError(f"case {case.case_no}: 延时 is given in steps of 0.5 h (extend_hours)")
    if args.extend_max_ms is None:
        raise ValueError(f"case {case.case_no}: its stage has no time limit: no 延时 to give")
    if args.extend_ms > args.extend_max_ms:
        raise ValueError(
            f"case {case.case_no}: one 延时 gives at most the stage's own limit,"
            f" {args.extend_max_ms / HOUR_MS:g} h (extend_hours)"
        )


def apply(
    case: Case,
    action: Action,
    *,
    actor: str,
    now_ms: int,
    note: str = "",
    args: Args | None = None,
) -> tuple[Case, Audit]:
    """Apply `action` to `case` at `now_ms`.

    Raises IllegalTransition if the workflow does not allow it from the case's state, and
    ValueError if its arguments do not fit or the case is not ready for it (a 延时 of nothing,
    立案 before 受理, 受理 of a 公众 or 12345 report before its 核实, an unclassified case accepted
    without its 小类, a returned case re-dispatched without naming the department, a closure
    type a person may not give, 反馈 without its 处置意见 or 核查不通过 without its reason in
    the note, 结案 as 处置完成 before 核查通过, an application for 延时 off the 0.5 h step or over
    `args.extend_max_ms` (at 申请, and again at 批准), a second reply to the same 督办).

    The case record follows GB/T 30428.1: 立案 stores the 立案条件 met (`args.condition`, else
    the 小类 table's, collector.cases.codes.CONDITIONS), 结案 the 结案条件, 反馈 the 处置意见
    (its note), and check / reject the 核查结果 with the 监督员's note and photo; 结案 as 误报
    records 误报 as the 核查结果.
    """
    args = args or Args()
    if not actor:
        raise ValueError(f"case {case.case_no}: every transition needs an actor")
    target = TRANSITIONS.get((action, case.state))
    if target is None:
        raise IllegalTransition(case.case_no, action, case.state)
    if action is Action.UNPARK and args.parked_from is S.DISPATCHED:
        target = S.DISPATCHED  # not started yet: 处置 begins with the department's start
    updated = replace(case, state=target, updated_ms=now_ms)
    if action is Action.EXTEND:
        if args.extend_ms <= 0:
            raise ValueError(f"case {case.case_no}: 延时 needs a positive extension")
        note = _join(f"延时 {args.extend_ms / HOUR_MS:g} 小时", note)
    elif action is Action.RECEIVE:
        if case.received_by is not None:
            raise ValueError(f"case {case.case_no}: already 受理 by {case.received_by}")
        if case.source in UNSEEN and case.confirmed_by is None:
            raise ValueError(
                f"case {case.case_no}: a {case.source} report needs 核实 by a 监督员 (confirm)"
                " before 受理"
            )
        updated = replace(updated, received_by=actor, received_ms=now_ms)
        note = _join("受理", note)
    elif action is Action.ACCEPT:
        if case.received_by is None:
            raise ValueError(
                f"case {case.case_no}: 立案 needs the report 受理 first (receive, by a 受理员)"
            )
        updated = _accept(updated, args)
        if updated.register_condition:
            note = _join(f"立案条件: {updated.register_condition}", note)
    elif action is Action.CONFIRM:
        if case.source not in UNSEEN:
            raise ValueError(f"case {case.case_no}: only a 公众 or 12345 report needs 核实")
        if case.confirmed_by is not None:
            raise ValueError(f"case {case.case_no}: already 核实 by {case.confirmed_by}")
        updated = replace(updated, confirmed_by=actor)
        note = _join("核实: 属实", note)
    elif action is Action.DISPATCH:
        updated, detail = _dispatch(updated, args)
        note = _join(detail, note)
    elif action is Action.RETURN:
        updated = replace(updated, returns=case.returns + 1)
    elif action is Action.FEEDBACK:
        if not note.strip():
            raise ValueError(
                f"case {case.case_no}: 反馈 gives the 处置意见 (what was done) in its note"
            )
        # A new 反馈 asks for a new 核查: the last round's result no longer holds.
        updated = replace(
            updated,
            disposal_note=note,
            check_result=None,
            check_note="",
            check_media_url="",
            checked_by=None,
            checked_ms=None,
        )
        note = f"处置意见: {note}"
    elif action in (Action.CHECK, Action.REJECT):
        passed = action is Action.CHECK
        if passed and case.check_result == CheckResult.PASSED.value:
            raise ValueError(f"case {case.case_no}: already 核查通过 by {case.checked_by}")
        if not passed and not note.strip():
            raise ValueError(f"case {case.case_no}: 核查不通过 gives its reason in the note")
        result = CheckResult.PASSED if passed else CheckResult.FAILED
        updated = _check(updated, result, actor, now_ms, note, args)
        note = _join(f"核查{result.value}", note)
    elif action is Action.CLOSE:
        updated, detail = _close(updated, actor, now_ms, note, args)
        note = _join(detail, note)
    elif action is Action.AUTO_CLOSE:
        updated = replace(updated, closure=Closure.AUTO.value)
    elif action is Action.VOID:
        if args.reason not in VOID_REASONS:
            raise ValueError(f"作废 needs its reason: one of {', '.join(VOID_REASONS)}")
        updated = replace(updated, void_reason=args.reason)
        note = _join(f"作废: {args.reason}", note)
    elif action is Action.REPLY:
        if not case.escalations or not note.strip():
            raise ValueError(f"case {case.case_no}: a reply answers a 督办, in its note")
        if args.replied:
            raise ValueError(
                f"case {case.case_no}: 督办 第{case.escalations}次 has its reply already;"
                " a department replies once per 督办"
            )
        note = f"督办回复 (第{case.escalations}次): {note}"
    elif action is Action.APPLY:
        updated, detail = _apply_for(updated, args)
        note = _join(detail, note)
    elif action in (Action.APPROVE, Action.DENY):
        if case.pending is None:
            raise ValueError(f"case {case.case_no} has no application to {action.value}")
        verdict = "批准" if action is Action.APPROVE else "驳回"
        detail = f"{verdict} {REQUEST_NAMES[case.pending]}"
        if case.pending == "extend":
            detail += f" {case.pending_hours:g} h"
            if action is Action.APPROVE:  # an 升级 since may have shortened the stage's limit
                _bound_extension(case, replace(args, extend_ms=round(case.pending_hours * HOUR_MS)))
        updated = replace(updated, pending=None, pending_hours=0)
        note = _join(detail, note)
    elif action is Action.ESCALATE:
        updated = replace(updated, escalations=case.escalations + 1)
        note = _join(f"督办 第{updated.escalations}次", note)
    elif action is Action.UPGRADE:
        updated, detail = _upgrade(updated, args)
        note = _join(detail, note)
    elif action is Action.REWORK:
        updated = replace(updated, reworks=case.reworks + 1)  # a new 处置 phase
    if updated.pending is not None and target not in (S.DISPATCHED, S.HANDLING):
        updated = replace(updated, pending=None, pending_hours=0)  # moot once it moved on
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
    severity: int | None = None,
    location: Place | None = None,
    recurrence_of: str | None = None,
    source: str = SENSED,
    media_url: str = "",
    contact: str = "",
    token: str | None = None,
) -> tuple[Case, list[Audit]]:
    """Create a case in 受理 (one audit row, `report`). A sensor's case (source 物联网感知) is
    received (受理) by `actor` as it opens: the sensor is trusted, so its 受理 stage never
    opens; a case from any other source waits for a 受理员's `receive`. With `auto_register`
    a sensor's case is 立案 at once as well (a second audit row)."""
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
        deadline_ms=None,
        timed_from_ms=None,
        title=title,
        gateway=gateway,
        allowed_ms=allowed_ms,
        severity=severity,
        recurrence_of=recurrence_of,
        location=location or Place(),
        source=source,
        media_url=media_url,
        contact=contact,
        token=token,
        received_by=actor if source == SENSED else None,
        received_ms=now_ms if source == SENSED else None,
    )
    audits = [Audit(case_no, now_ms, actor, "report", None, S.REPORTED.value, note)]
    if auto_register and kind != UNCLASSIFIED:
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
