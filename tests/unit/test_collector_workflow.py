"""The case state machine: every legal and every illegal (action, state) pair, the deadline
colour, and the lifecycle rules of issue 14 (upgrade, rework, closure types, 改派), table-driven
on plain values. The clocks themselves are the phase table's: test_collector_phases.py."""

import itertools
from dataclasses import replace

import pytest

from lifeline.collector.cases.codes import COMPONENT_NAMES, CONDITIONS, EVENT_NAMES, conditions
from lifeline.collector.cases.workflow import (
    SYSTEM_ACTIONS,
    TRANSITIONS,
    UNCLASSIFIED,
    Action,
    Args,
    Case,
    CaseState,
    Classification,
    Closure,
    Colour,
    IllegalTransition,
    apply,
    colour,
    open_case,
)

pytestmark = pytest.mark.unit

S, A = CaseState, Action
H = 3_600_000
T0 = 1_800_000_000_000
OPEN = [s for s in S if s not in (S.CLOSED, S.VOIDED)]

# The expected workflow, written out independently of TRANSITIONS.
LEGAL: dict[tuple[Action, CaseState], CaseState] = {
    (A.RECEIVE, S.REPORTED): S.REPORTED,  # the 受理员's 受理, before 立案
    (A.ACCEPT, S.REPORTED): S.REGISTERED,
    (A.CONFIRM, S.REPORTED): S.REPORTED,  # a 监督员's 核实 of a citizen's report
    (A.VOID, S.REPORTED): S.VOIDED,
    (A.VOID, S.REGISTERED): S.VOIDED,
    (A.DISPATCH, S.REGISTERED): S.DISPATCHED,
    (A.START, S.DISPATCHED): S.HANDLING,
    (A.FEEDBACK, S.HANDLING): S.FEEDBACK,
    (A.VERIFY, S.FEEDBACK): S.VERIFYING,
    (A.CHECK, S.VERIFYING): S.VERIFYING,  # 核查通过, before 结案
    (A.CLOSE, S.VERIFYING): S.CLOSED,
    (A.RETURN, S.DISPATCHED): S.REGISTERED,
    (A.RETURN, S.HANDLING): S.REGISTERED,
    (A.REJECT, S.VERIFYING): S.HANDLING,
    (A.PARK, S.DISPATCHED): S.PARKED,
    (A.PARK, S.HANDLING): S.PARKED,
    (A.UNPARK, S.PARKED): S.HANDLING,
    (A.EXTEND, S.DISPATCHED): S.DISPATCHED,
    (A.EXTEND, S.HANDLING): S.HANDLING,
    # The system's own: the alarm came back after the department's 反馈 (返工) ...
    (A.REWORK, S.FEEDBACK): S.HANDLING,
    (A.REWORK, S.VERIFYING): S.HANDLING,
    # ... every alarm cleared before anyone was dispatched (自动恢复, where configured).
    (A.AUTO_CLOSE, S.REPORTED): S.CLOSED,
    (A.AUTO_CLOSE, S.REGISTERED): S.CLOSED,
    # ... a department applies for 延时, 挂账 or 回退 while it has the case; the 派遣员 decides.
    **{(a, s): s for a in (A.APPLY, A.APPROVE, A.DENY) for s in (S.DISPATCHED, S.HANDLING)},
    **{(A.ESCALATE, s): s for s in OPEN},
    **{(A.REPLY, s): s for s in OPEN},  # the department answers a 督办
    **{(A.UPGRADE, s): s for s in OPEN},
}
ALL_PAIRS = list(itertools.product(Action, CaseState))
ARGS = Args(
    extend_ms=H,
    severity=1,
    urgent=True,
    allowed_ms=H,
    request="extend",
    reason="重复",
    extend_max_ms=10 * H,
)


def make(
    state: CaseState,
    deadline: int | None = T0 + 10 * H,
    timed: int | None = T0,
    **changes: object,
) -> Case:
    case = Case(
        "330106202611180001", "事件", "0403", "gas_leak", "3301060111000001", "g1", state,
        "normal", "燃气公司", None, T0, T0, deadline, timed, allowed_ms=10 * H, severity=3,
    )  # fmt: skip
    return replace(case, **changes)  # type: ignore[arg-type]


def test_the_table_is_the_documented_workflow() -> None:
    assert dict(TRANSITIONS) == LEGAL


def test_a_cleared_alarm_is_no_workflow_action() -> None:
    # Today's bug: a dispatcher key could post alarm_cleared and jump 立案 -> 核查.
    assert "alarm_cleared" not in {a.value for a in Action}
    assert {a.value for a in SYSTEM_ACTIONS} == {"upgrade", "rework", "auto_close"}


@pytest.mark.parametrize(("action", "state"), [p for p in ALL_PAIRS if p in LEGAL])
def test_legal_transition(action: Action, state: CaseState) -> None:
    pending = "park" if action in (A.APPROVE, A.DENY) else None
    source = "公众" if action is A.CONFIRM else "监督员"  # only a citizen's needs 核实
    received = None if action is A.RECEIVE else "intake-1"  # 立案 only after 受理
    # something to decide or to answer
    checked = "通过" if action is A.CLOSE else None  # 结案 only after 核查通过
    given = make(
        state, pending=pending, escalations=1, source=source, received_by=received,
        check_result=checked,
    )  # fmt: skip
    case, audit = apply(given, action, actor="op-7", now_ms=T0 + H, note="n", args=ARGS)
    assert case.state is LEGAL[(action, state)]
    assert (audit.actor, audit.ts_ms, audit.from_state, audit.to_state) == (
        "op-7",
        T0 + H,
        state.value,
        LEGAL[(action, state)].value,
    )
    assert audit.note.endswith("n")
    assert case.updated_ms == T0 + H


@pytest.mark.parametrize(("action", "state"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition_is_refused_with_a_clear_error(action: Action, state: CaseState) -> None:
    with pytest.raises(IllegalTransition) as err:
        apply(make(state), action, actor="op", now_ms=T0, args=ARGS)
    assert f"cannot {action.value} a case in state {state.value}" in str(err.value)
    assert "allowed here" in str(err.value)
    for system in SYSTEM_ACTIONS:  # the hint names only what a person may do
        assert system.value not in str(err.value).split("allowed here")[1]


def test_full_happy_path_with_auto_register() -> None:
    case, audits = open_case(
        case_no="X", kind="部件", subcategory="0111", problem="cover", asset="A", device="g1",
        urgency="urgent", department="燃气公司", grid=None, allowed_ms=2 * H,
        auto_register=True, actor="system", now_ms=T0,
    )  # fmt: skip
    assert (case.state, case.allowed_ms) == (S.REGISTERED, 2 * H)
    for action in (A.DISPATCH, A.START, A.FEEDBACK, A.VERIFY, A.CHECK, A.CLOSE):
        case, audit = apply(case, action, actor="op", now_ms=T0, note="已复位")
        audits.append(audit)
    assert [a.to_state for a in audits] == [
        "受理", "立案", "派遣", "处置", "反馈", "核查", "核查", "结案",
    ]  # fmt: skip
    assert case.closure == "处置完成"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0, Colour.GREEN),
        (T0 + 7 * H, Colour.GREEN),
        (T0 + 15 * H // 2, Colour.GREEN),  # exactly a quarter of the 10 h left
        (T0 + 15 * H // 2 + 1, Colour.YELLOW),
        (T0 + 10 * H, Colour.YELLOW),
        (T0 + 10 * H + 1, Colour.RED),
    ],
)
def test_deadline_colours(now: int, expected: Colour) -> None:
    assert colour(make(S.HANDLING), now) is expected


def test_an_extension_needs_a_positive_amount() -> None:
    with pytest.raises(ValueError, match="positive"):
        apply(make(S.HANDLING), A.EXTEND, actor="op", now_ms=T0)


def test_every_transition_needs_an_actor() -> None:
    with pytest.raises(ValueError, match="actor"):
        apply(make(S.REGISTERED), A.DISPATCH, actor="", now_ms=T0)


# --- 升级: a more severe alarm upgrades the case (its clock: test_collector_phases.py) ----------

UPGRADES = [
    # (severity, urgency, allowed, new severity, urgent, new allowed) -> (urgency, allowed)
    pytest.param(3, "normal", 10 * H, 2, True, 2 * H, ("urgent", 2 * H), id="to-urgent"),
    pytest.param(2, "urgent", 2 * H, 1, True, 2 * H, ("urgent", 2 * H), id="severity-only"),
    pytest.param(2, "urgent", 2 * H, 1, False, 10 * H, ("urgent", 2 * H), id="never-drops"),
]


@pytest.mark.parametrize(
    ("sev", "urgency", "allowed", "new_sev", "urgent", "new_allowed", "expected"), UPGRADES
)
@pytest.mark.parametrize("state", [S.REPORTED, S.DISPATCHED, S.PARKED])
def test_upgrade(
    state: CaseState,
    sev: int,
    urgency: str,
    allowed: int,
    new_sev: int,
    urgent: bool,
    new_allowed: int,
    expected: tuple[str, int],
) -> None:
    case = make(state, severity=sev, urgency=urgency, allowed_ms=allowed)
    args = Args(severity=new_sev, urgent=urgent, allowed_ms=new_allowed)
    up, audit = apply(case, A.UPGRADE, actor="system", now_ms=T0 + H, args=args)
    assert (up.state, up.severity) == (state, new_sev)
    assert (up.urgency, up.allowed_ms) == expected
    assert audit.action == "upgrade"
    assert f"severity {sev} → {new_sev}" in audit.note


def test_an_upgrade_needs_a_more_severe_alarm() -> None:
    with pytest.raises(ValueError, match="more severe"):
        apply(make(S.HANDLING, severity=2), A.UPGRADE, actor="s", now_ms=T0, args=Args(severity=2))


# --- 返工, 结案 types, 改派, 未分类 ---------------------------------------------------------


@pytest.mark.parametrize("state", [S.FEEDBACK, S.VERIFYING])
def test_rework_starts_a_new_handling_round(state: CaseState) -> None:
    case = make(state, escalations=1, timed=None)
    back, _audit = apply(case, A.REWORK, actor="system", now_ms=T0 + 20 * H)
    # The 督办 level counts on across rounds; the new 处置 clock is the phase table's.
    assert (back.state, back.reworks, back.escalations) == (S.HANDLING, 1, 1)


@pytest.mark.parametrize(
    ("closure", "expected"),
    [(None, "处置完成"), (Closure.DONE, "处置完成"), (Closure.FALSE_ALARM, "误报")],
)
def test_closure_types_a_person_may_give(closure: Closure | None, expected: str) -> None:
    checked = make(S.VERIFYING, check_result="通过")
    closed, audit = apply(checked, A.CLOSE, actor="op", now_ms=T0, args=Args(closure=closure))
    assert (closed.state, closed.closure) == (S.CLOSED, expected)
    assert expected in audit.note


def test_auto_recovery_is_the_systems_closure_and_only_before_dispatch() -> None:
    with pytest.raises(ValueError, match="system"):
        apply(make(S.VERIFYING), A.CLOSE, actor="op", now_ms=T0, args=Args(closure=Closure.AUTO))
    closed, _ = apply(make(S.REGISTERED), A.AUTO_CLOSE, actor="system", now_ms=T0)
    assert (closed.state, closed.closure) == (S.CLOSED, "自动恢复")
    for state in (S.DISPATCHED, S.HANDLING, S.FEEDBACK, S.VERIFYING):
        with pytest.raises(IllegalTransition):
            apply(make(state), A.AUTO_CLOSE, actor="system", now_ms=T0)


def test_return_and_redispatch_name_the_department() -> None:
    case, audit = apply(
        make(S.REGISTERED), A.DISPATCH, actor="派遣员", now_ms=T0,
        args=Args(department="燃气公司", assist=("交警大队", "燃气公司")),
    )  # fmt: skip
    assert (case.department, case.assist) == ("燃气公司", ("交警大队",))
    assert audit.note == "派遣 主办 燃气公司, 协办 交警大队"
    case, _ = apply(case, A.RETURN, actor="燃气公司", now_ms=T0 + H, note="非我单位管辖")
    assert (case.state, case.returns) == (S.REGISTERED, 1)
    with pytest.raises(ValueError, match="改派 names the department"):
        apply(case, A.DISPATCH, actor="派遣员", now_ms=T0 + 2 * H)
    case, audit = apply(
        case, A.DISPATCH, actor="派遣员", now_ms=T0 + 2 * H, args=Args(department="水务集团")
    )
    assert (case.state, case.department, case.assist) == (S.DISPATCHED, "水务集团", ())
    assert audit.note == "改派 主办 燃气公司 → 水务集团"


def test_an_unclassified_case_is_accepted_with_its_kind_and_subcategory() -> None:
    case, _ = open_case(
        case_no="X", kind=UNCLASSIFIED, subcategory="", problem="unclassified", asset=None,
        device="x1", urgency="urgent", department="中心", grid=None, allowed_ms=None,
        auto_register=True, actor="system", now_ms=T0,
    )  # fmt: skip
    assert case.state is S.REPORTED  # never auto-立案: someone has to classify it
    with pytest.raises(ValueError, match="未分类"):
        apply(case, A.ACCEPT, actor="op", now_ms=T0)
    accepted, _ = apply(
        case, A.ACCEPT, actor="op", now_ms=T0 + H,
        args=Args(classify=Classification("事件", "0406", 2 * H)),
    )  # fmt: skip
    assert (accepted.kind, accepted.subcategory, accepted.allowed_ms) == ("事件", "0406", 2 * H)


def test_a_department_applies_and_the_dispatcher_decides() -> None:
    # Reproduced on main: a 1 000 h 延时 took effect in one step, by whoever posted it.
    case = make(S.HANDLING)
    asked = Args(request="extend", extend_ms=10 * H, extend_max_ms=10 * H)
    applied, audit = apply(case, A.APPLY, actor="燃气集团", now_ms=T0, args=asked)
    assert (applied.state, applied.pending, applied.pending_hours) == (S.HANDLING, "extend", 10)
    assert audit.note == "申请 延时 10 h"
    with pytest.raises(ValueError, match="already has an application"):
        apply(applied, A.APPLY, actor="燃气集团", now_ms=T0, args=Args(request="park"))
    denied, audit = apply(applied, A.DENY, actor="派遣员", now_ms=T0, note="理由不足")
    assert (denied.pending, denied.pending_hours, audit.note) == (
        None,
        0,
        "驳回 延时 10 h: 理由不足",
    )
    with pytest.raises(ValueError, match="no application"):
        apply(denied, A.APPROVE, actor="派遣员", now_ms=T0)
    for bad in (Args(request="extend"), Args(request="park", extend_ms=H), Args(request="x")):
        with pytest.raises(ValueError, match="application"):
            apply(case, A.APPLY, actor="燃气集团", now_ms=T0, args=bad)
    parked, _ = apply(applied, A.FEEDBACK, actor="燃气集团", now_ms=T0, note="已修复")
    assert parked.pending is None  # moot once the case moved on


@pytest.mark.parametrize(
    ("extend_ms", "max_ms", "said"),
    [
        (1000 * H, 24 * H, "at most the stage's own limit, 24 h"),
        (24 * H + H // 2, 24 * H, "at most the stage's own limit, 24 h"),
        (360, 24 * H, "steps of 0.5 h"),  # extend_hours 0.0001
        (H + 1, 24 * H, "steps of 0.5 h"),
        (H, None, "no time limit"),
    ],
)
def test_an_application_for_an_extension_is_bounded(
    extend_ms: int, max_ms: int | None, said: str
) -> None:
    # Fails on the old code: 1 000 h and 0.0001 h were both accepted.
    bad = Args(request="extend", extend_ms=extend_ms, extend_max_ms=max_ms)
    with pytest.raises(ValueError, match=said):
        apply(make(S.HANDLING), A.APPLY, actor="燃气集团", now_ms=T0, args=bad)
    for hours in (0.5, 24):  # the smallest step and the stage's whole limit
        ok = Args(request="extend", extend_ms=int(hours * H), extend_max_ms=24 * H)
        applied, _ = apply(make(S.HANDLING), A.APPLY, actor="燃气集团", now_ms=T0, args=ok)
        assert applied.pending_hours == hours


def test_an_extension_over_the_limit_at_its_approval_is_not_granted() -> None:
    # An 升级 to urgent after the application shortened the stage's limit (24 h -> 2 h).
    case = make(S.HANDLING, pending="extend", pending_hours=12)
    with pytest.raises(ValueError, match="at most the stage's own limit, 2 h"):
        apply(case, A.APPROVE, actor="派遣员", now_ms=T0, args=Args(extend_max_ms=2 * H))
    denied, _ = apply(case, A.DENY, actor="派遣员", now_ms=T0, args=Args(extend_max_ms=2 * H))
    assert denied.pending is None  # a refusal needs no bound
    granted, _ = apply(case, A.APPROVE, actor="派遣员", now_ms=T0, args=Args(extend_max_ms=12 * H))
    assert granted.pending is None


def test_a_grant_of_an_extension_says_its_hours() -> None:
    # Fails on the old code: the extend row of a grant said only 批准的申请.
    _, audit = apply(
        make(S.HANDLING), A.EXTEND, actor="派遣员", now_ms=T0, note="批准的申请",
        args=Args(extend_ms=3 * H // 2),
    )  # fmt: skip
    assert audit.note == "延时 1.5 小时: 批准的申请"


@pytest.mark.parametrize(
    ("parked_from", "back_to"), [(S.DISPATCHED, S.DISPATCHED), (None, S.HANDLING)]
)
def test_unpark_returns_to_the_state_the_case_was_parked_from(
    parked_from: CaseState | None, back_to: CaseState
) -> None:
    # Fails on the old code: a case parked in 派遣 landed in 处置 without its department's start.
    args = Args(parked_from=parked_from)
    case, audit = apply(make(S.PARKED), A.UNPARK, actor="派遣员", now_ms=T0, args=args)
    assert (case.state, audit.to_state) == (back_to, back_to.value)


def test_a_void_says_why_with_a_reason_code() -> None:
    with pytest.raises(ValueError, match="作废 needs its reason"):
        apply(make(S.REPORTED), A.VOID, actor="值班长", now_ms=T0)
    with pytest.raises(ValueError, match="作废 needs its reason"):
        apply(make(S.REPORTED), A.VOID, actor="值班长", now_ms=T0, args=Args(reason="不想办"))
    voided, audit = apply(make(S.REGISTERED), A.VOID, actor="值班长", now_ms=T0,
                          args=Args(reason="非管理范围"))  # fmt: skip
    assert (voided.state, voided.void_reason, audit.note) == (
        S.VOIDED,
        "非管理范围",
        "作废: 非管理范围",
    )
    assert make(S.REPORTED).source == "物联网感知"  # what the sensors report


def test_a_reply_answers_a_supervision_with_its_level() -> None:
    with pytest.raises(ValueError, match="answers a 督办"):
        apply(make(S.HANDLING), A.REPLY, actor="燃气集团", now_ms=T0, note="已处理")
    escalated, _ = apply(make(S.HANDLING), A.ESCALATE, actor="system", now_ms=T0)
    with pytest.raises(ValueError, match="in its note"):
        apply(escalated, A.REPLY, actor="燃气集团", now_ms=T0)
    _, audit = apply(escalated, A.REPLY, actor="燃气集团", now_ms=T0, note="抢修队已到场")
    assert audit.note == "督办回复 (第1次): 抢修队已到场"
    # Fails on the old code: the same 督办 could be answered any number of times.
    with pytest.raises(ValueError, match="督办 第1次 has its reply already"):
        apply(escalated, A.REPLY, actor="燃气集团", now_ms=T0, note="再报", args=Args(replied=True))


def test_a_report_is_received_before_it_is_registered_and_a_citizens_is_confirmed_first() -> None:
    # Fails on the old code: there was no 受理 step, and 立案 followed 核实 directly.
    case, audits = open_case(
        case_no="P", kind="事件", subcategory="0406", problem="public_report", asset=None,
        device=None, urgency="normal", department="排水", grid=None, allowed_ms=24 * H,
        auto_register=False, actor="app", now_ms=T0, source="公众",
    )  # fmt: skip
    assert (case.received_by, case.received_ms) == (None, None)
    assert [a.action for a in audits] == ["report"]
    with pytest.raises(ValueError, match="立案 needs the report 受理 first"):
        apply(case, A.ACCEPT, actor="lead", now_ms=T0)
    with pytest.raises(ValueError, match=r"needs 核实 by a 监督员 .* before 受理"):
        apply(case, A.RECEIVE, actor="intake", now_ms=T0)
    case, _ = apply(case, A.CONFIRM, actor="inspector", now_ms=T0 + H)
    case, audit = apply(case, A.RECEIVE, actor="intake", now_ms=T0 + 2 * H, note="电话核对")
    assert (case.state, case.received_by, case.received_ms) == (S.REPORTED, "intake", T0 + 2 * H)
    assert (audit.action, audit.from_state, audit.to_state, audit.note) == (
        "receive", "受理", "受理", "受理: 电话核对",
    )  # fmt: skip
    with pytest.raises(ValueError, match="already 受理 by intake"):
        apply(case, A.RECEIVE, actor="intake-2", now_ms=T0 + 3 * H)
    case, _ = apply(case, A.ACCEPT, actor="lead", now_ms=T0 + 3 * H)
    assert (case.state, case.received_by) == (S.REGISTERED, "intake")


@pytest.mark.parametrize(("source", "received_by"), [("物联网感知", "system"), ("监督员", None)])
def test_a_sensors_case_is_received_as_it_opens_any_other_waits(
    source: str, received_by: str | None
) -> None:
    case, audits = open_case(
        case_no="S", kind="部件", subcategory="0111", problem="cover", asset="A", device="g1",
        urgency="normal", department="燃气公司", grid=None, allowed_ms=2 * H,
        auto_register=False, actor="system", now_ms=T0, source=source,
    )  # fmt: skip
    assert (case.received_by, case.received_ms) == (received_by, T0 if received_by else None)
    assert [a.action for a in audits] == ["report"]


def test_every_named_subcategory_has_its_register_and_close_conditions() -> None:
    named = {("部件", c) for c in COMPONENT_NAMES} | {("事件", c) for c in EVENT_NAMES}
    assert set(CONDITIONS) == named
    assert all(register and close for register, close in CONDITIONS.values())
    assert conditions("部件", "9999") == ("", "")


def test_the_case_record_keeps_conditions_disposal_note_and_check_results() -> None:
    # Fails on the old code: none of these were recorded, and 结案 needed no 核查结果.
    cover = conditions("部件", "0111")
    case, _ = open_case(
        case_no="R", kind="部件", subcategory="0111", problem="cover", asset="A", device="g1",
        urgency="normal", department="燃气公司", grid=None, allowed_ms=2 * H,
        auto_register=True, actor="system", now_ms=T0,
    )  # fmt: skip
    assert case.register_condition == cover[0]  # auto-立案 meets the 小类's 立案标准
    for action in (A.DISPATCH, A.START):
        case, _ = apply(case, action, actor="op", now_ms=T0)
    with pytest.raises(ValueError, match="处置意见"):
        apply(case, A.FEEDBACK, actor="燃气公司", now_ms=T0, note="  ")
    case, audit = apply(case, A.FEEDBACK, actor="燃气公司", now_ms=T0, note="井盖已复位")
    assert (case.disposal_note, audit.note) == ("井盖已复位", "处置意见: 井盖已复位")
    case, _ = apply(case, A.VERIFY, actor="受理员", now_ms=T0)
    with pytest.raises(ValueError, match="needs 核查通过"):
        apply(case, A.CLOSE, actor="值班长", now_ms=T0)
    with pytest.raises(ValueError, match="reason"):
        apply(case, A.REJECT, actor="监督员", now_ms=T0)
    photo = Args(media_url="https://photos.example.org/1.jpg")
    case, audit = apply(case, A.REJECT, actor="监督员", now_ms=T0 + H, note="仍松动", args=photo)
    assert (case.state, case.check_result, case.check_note, audit.note) == (
        S.HANDLING, "不通过", "仍松动", "核查不通过: 仍松动",
    )  # fmt: skip
    assert (case.check_media_url, case.checked_by, case.checked_ms) == (
        "https://photos.example.org/1.jpg", "监督员", T0 + H,
    )  # fmt: skip
    case, _ = apply(case, A.FEEDBACK, actor="燃气公司", now_ms=T0 + 2 * H, note="更换井盖")
    assert (case.check_result, case.check_note, case.disposal_note) == (None, "", "更换井盖")
    case, _ = apply(case, A.VERIFY, actor="受理员", now_ms=T0 + 2 * H)
    case, audit = apply(case, A.CHECK, actor="监督员", now_ms=T0 + 3 * H, note="已稳固")
    assert (case.state, case.check_result, audit.note) == (S.VERIFYING, "通过", "核查通过: 已稳固")
    with pytest.raises(ValueError, match="already 核查通过"):
        apply(case, A.CHECK, actor="监督员", now_ms=T0 + 3 * H)
    closed, audit = apply(case, A.CLOSE, actor="值班长", now_ms=T0 + 4 * H)
    assert (closed.closure, closed.close_condition) == ("处置完成", cover[1])
    assert audit.note == f"结案: 处置完成, 结案条件: {cover[1]}"
    own, _ = apply(case, A.CLOSE, actor="值班长", now_ms=T0, args=Args(condition="已更换新井盖"))
    assert own.close_condition == "已更换新井盖"


def test_a_false_alarm_is_the_checks_own_finding_and_a_register_condition_may_be_given() -> None:
    false, _ = apply(make(S.VERIFYING), A.CLOSE, actor="值班长", now_ms=T0, note="现场无泄漏",
                     args=Args(closure=Closure.FALSE_ALARM))  # fmt: skip
    assert (false.closure, false.check_result, false.check_note, false.close_condition) == (
        "误报", "误报", "现场无泄漏", "",
    )  # fmt: skip
    given = Args(condition="井盖缺失，行人踏空风险")
    accepted, audit = apply(make(S.REPORTED, received_by="受理员"), A.ACCEPT, actor="值班长",
                            now_ms=T0, args=given)  # fmt: skip
    assert accepted.register_condition == "井盖缺失，行人踏空风险"
    assert audit.note == "立案条件: 井盖缺失，行人踏空风险"
