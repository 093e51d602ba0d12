"""The case state machine: every legal and every illegal (action, state) pair, plus deadlines."""

import itertools

import pytest

from collector.cases.workflow import (
    TRANSITIONS,
    Action,
    Case,
    CaseState,
    Colour,
    IllegalTransition,
    apply,
    colour,
    needs_escalation,
    open_case,
)

pytestmark = pytest.mark.unit

S, A = CaseState, Action
H = 3_600_000
T0 = 1_800_000_000_000

# The expected workflow, written out independently of TRANSITIONS.
LEGAL: dict[tuple[Action, CaseState], CaseState] = {
    (A.ACCEPT, S.REPORTED): S.REGISTERED,
    (A.VOID, S.REPORTED): S.VOIDED,
    (A.VOID, S.REGISTERED): S.VOIDED,
    (A.DISPATCH, S.REGISTERED): S.DISPATCHED,
    (A.START, S.DISPATCHED): S.HANDLING,
    (A.FEEDBACK, S.HANDLING): S.FEEDBACK,
    (A.VERIFY, S.FEEDBACK): S.VERIFYING,
    (A.ALARM_CLEARED, S.REGISTERED): S.VERIFYING,
    (A.ALARM_CLEARED, S.DISPATCHED): S.VERIFYING,
    (A.ALARM_CLEARED, S.HANDLING): S.VERIFYING,
    (A.ALARM_CLEARED, S.FEEDBACK): S.VERIFYING,
    (A.CLOSE, S.VERIFYING): S.CLOSED,
    (A.RETURN, S.DISPATCHED): S.REGISTERED,
    (A.RETURN, S.HANDLING): S.REGISTERED,
    (A.REJECT, S.VERIFYING): S.HANDLING,
    (A.PARK, S.DISPATCHED): S.PARKED,
    (A.PARK, S.HANDLING): S.PARKED,
    (A.UNPARK, S.PARKED): S.HANDLING,
    (A.EXTEND, S.DISPATCHED): S.DISPATCHED,
    (A.EXTEND, S.HANDLING): S.HANDLING,
    **{(A.ESCALATE, s): s for s in S if s not in (S.CLOSED, S.VOIDED)},
}
ALL_PAIRS = list(itertools.product(Action, CaseState))


def make(state: CaseState, deadline: int | None = T0 + 10 * H, timed: int | None = T0) -> Case:
    return Case(
        "310104202611180001", "部件", "0111", "gas_leak", "3101040111000001", "g1", state,
        "urgent", "燃气公司", None, T0, T0, deadline, timed,
    )  # fmt: skip


def test_the_table_is_the_documented_workflow() -> None:
    assert dict(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("action", "state"), [p for p in ALL_PAIRS if p in LEGAL])
def test_legal_transition(action: Action, state: CaseState) -> None:
    case, audit = apply(make(state), action, actor="op-7", now_ms=T0 + H, note="n", extend_ms=H)
    assert case.state is LEGAL[(action, state)]
    assert (audit.actor, audit.ts_ms, audit.from_state, audit.to_state, audit.note) == (
        "op-7",
        T0 + H,
        state.value,
        LEGAL[(action, state)].value,
        "n",
    )
    assert case.updated_ms == T0 + H


@pytest.mark.parametrize(("action", "state"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition_is_refused_with_a_clear_error(action: Action, state: CaseState) -> None:
    with pytest.raises(IllegalTransition) as err:
        apply(make(state), action, actor="op", now_ms=T0, extend_ms=H)
    assert f"cannot {action.value} a case in state {state.value}" in str(err.value)
    assert "allowed here" in str(err.value)


def test_full_happy_path_with_auto_register() -> None:
    case, audits = open_case(
        case_no="X", kind="部件", subcategory="0111", problem="gas_leak", asset="A", device="g1",
        urgency="urgent", department="燃气公司", grid=None, allowed_ms=2 * H,
        auto_register=True, actor="system", now_ms=T0,
    )  # fmt: skip
    assert case.state is S.REGISTERED
    assert (case.deadline_ms, case.timed_from_ms) == (T0 + 2 * H, T0)
    for action in (A.DISPATCH, A.START, A.FEEDBACK, A.VERIFY, A.CLOSE):
        case, audit = apply(case, action, actor="op", now_ms=T0)
        audits.append(audit)
    assert [a.to_state for a in audits] == ["受理", "立案", "派遣", "处置", "反馈", "核查", "结案"]


def test_waiting_for_acceptance_has_no_running_clock() -> None:
    case, audits = open_case(
        case_no="X", kind="事件", subcategory="0404", problem="flooding", asset=None, device="m1",
        urgency="normal", department="d", grid=None, allowed_ms=48 * H, auto_register=False,
        actor="system", now_ms=T0,
    )  # fmt: skip
    assert (case.state, len(audits), colour(case, T0 + 100 * H)) == (S.REPORTED, 1, Colour.NONE)
    case, _ = apply(case, A.ACCEPT, actor="op", now_ms=T0 + 5 * H)
    assert case.deadline_ms == T0 + 53 * H  # the clock starts at 立案


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


def test_overdue_case_needs_one_escalation() -> None:
    case = make(S.DISPATCHED)
    assert not needs_escalation(case, T0 + 10 * H)
    assert needs_escalation(case, T0 + 11 * H)
    escalated, audit = apply(case, A.ESCALATE, actor="system", now_ms=T0 + 11 * H)
    assert (escalated.state, escalated.escalations, audit.action) == (S.DISPATCHED, 1, "escalate")
    assert not needs_escalation(escalated, T0 + 12 * H)


def test_extension_moves_the_deadline() -> None:
    case, _ = apply(make(S.HANDLING), A.EXTEND, actor="op", now_ms=T0, extend_ms=5 * H)
    assert case.deadline_ms == T0 + 15 * H
    with pytest.raises(ValueError, match="positive"):
        apply(make(S.HANDLING), A.EXTEND, actor="op", now_ms=T0)


def test_parking_stops_the_clock() -> None:
    parked, _ = apply(make(S.HANDLING), A.PARK, actor="op", now_ms=T0 + 4 * H)
    assert colour(parked, T0 + 100 * H) is Colour.NONE
    resumed, _ = apply(parked, A.UNPARK, actor="op", now_ms=T0 + 50 * H)
    assert resumed.deadline_ms == T0 + 56 * H  # the 6 hours left when parked


def test_every_transition_needs_an_actor() -> None:
    with pytest.raises(ValueError, match="actor"):
        apply(make(S.REGISTERED), A.DISPATCH, actor="", now_ms=T0)
