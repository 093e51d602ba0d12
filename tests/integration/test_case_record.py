"""The case record's rules over HTTP on SQLite and PostgreSQL (second review, issue 19): a
核查不通过 is a 返工 in the record as in the statistics, a 误报 closure cannot overwrite a passing
核查, a 核查结果 has its words, the first dispatch is 派遣 (改派 only after a 回退), and free text
refuses control, bidi and separator characters."""

from __future__ import annotations

from typing import Any

import pytest

from lifeline.collector.cases.codes import conditions
from lifeline.collector.models import Role
from tests.integration import test_duties
from tests.integration.test_api_http import Api, problem_of
from tests.integration.test_duties import GAS, LAMPS, S, case_in

pytestmark = pytest.mark.integration
api = test_duties.api  # the keys and departments of the duties suite, on both stores


def act(api: Api, no: str, body: dict[str, Any]) -> Any:
    return api.client.post(f"/api/v1/cases/{no}/actions", json=body, headers=api.h(Role.ADMIN))


def audit_notes(api: Api, no: str) -> list[str]:
    doc = api.client.get(f"/api/v1/cases/{no}", headers=api.h()).json()
    return [a["note"] for a in doc["audit"]]


def test_a_failed_check_is_a_rework_of_the_case(api: Api) -> None:
    no = case_in(api, S.VERIFYING)
    rejected = act(api, no, {"action": "reject", "note": "仍有异味"}).json()
    assert (rejected["state"], rejected["reworks"]) == ("处置", 1)


def test_a_passing_check_cannot_be_closed_as_a_false_alarm(api: Api) -> None:
    no = case_in(api, S.VERIFYING)
    for blank in ("", "  \n"):  # a 核查结果 needs its words
        detail = problem_of(act(api, no, {"action": "check", "note": blank}), 422)["detail"]
        assert "核查结果" in detail
    assert act(api, no, {"action": "check", "note": "复测无泄漏"}).status_code == 200
    false = {"action": "close", "closure": "误报", "note": "无泄漏"}
    assert "not 误报" in problem_of(act(api, no, false), 422)["detail"]
    case = api.runtime.store.case(no)
    assert case is not None
    assert (case.state, case.check_result, case.check_note) == (S.VERIFYING, "通过", "复测无泄漏")
    assert act(api, no, {"action": "close"}).json()["closure"] == "处置完成"
    # Without a passing 核查 a 误报 is still the 核查's own finding.
    other = case_in(api, S.VERIFYING)
    assert act(api, other, false).json()["closure"] == "误报"


def test_the_first_dispatch_is_派遣_and_only_one_after_a_回退_is_改派(api: Api) -> None:
    no = case_in(api, S.REGISTERED)  # routed to 燃气集团
    assert act(api, no, {"action": "dispatch", "department": LAMPS[0]}).status_code == 200
    assert audit_notes(api, no)[-1] == f"派遣 主办 {LAMPS[1]}"
    assert act(api, no, {"action": "return", "note": "不属本单位"}).status_code == 200
    assert act(api, no, {"action": "dispatch", "department": GAS[0]}).status_code == 200
    assert audit_notes(api, no)[-1] == f"改派 主办 {LAMPS[1]} → {GAS[1]}"


@pytest.mark.parametrize(
    "body",
    [
        {"action": "accept", "condition": "闻到燃气\u202e味"},  # right-to-left override
        {"action": "accept", "condition": "井盖\u2066缺失"},  # isolate
        {"action": "accept", "condition": "井盖\u200f缺失"},  # right-to-left mark
        {"action": "accept", "condition": "井盖\u2028缺失"},  # line separator
        {"action": "accept", "condition": "井盖\n缺失"},  # a condition is one line
        {"action": "accept", "note": "井盖\u2029缺失"},  # paragraph separator
        {"action": "accept", "note": "井盖\x85缺失"},  # C1 next line
    ],
)
def test_free_text_refuses_bidi_and_separator_characters(api: Api, body: dict[str, Any]) -> None:
    no = case_in(api, S.REPORTED)
    assert "U+" in problem_of(act(api, no, body), 422)["detail"]
    assert api.runtime.store.case(no).state is S.REPORTED  # type: ignore[union-attr]


def test_a_note_keeps_its_lines_and_a_blank_condition_is_the_standard(api: Api) -> None:
    no = case_in(api, S.REPORTED)
    body = {"action": "accept", "condition": "   ", "note": "现场:\n\t井盖缺失"}
    accepted = act(api, no, body)
    assert accepted.status_code == 200, accepted.text
    standard = conditions("部件", "0111")[0]
    assert api.runtime.store.case(no).register_condition == standard  # type: ignore[union-attr]
    assert audit_notes(api, no)[-1] == f"立案条件: {standard}: 现场:\n\t井盖缺失"
