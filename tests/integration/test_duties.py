"""Separation of duties over HTTP on SQLite and PostgreSQL: every (case action, role) pair of the
permission matrix in docs/integration.md is posted and must be allowed or refused as written,
and a 专业部门 key sees and acts on its own departments' cases and work orders only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.cases.duties import (
    CASE_ACTIONS,
    CASE_REPORTERS,
    MAINTAINER_ACTIONS,
    may_act,
    may_report,
    may_work,
)
from lifeline.collector.cases.routing import default_routing_path, load_routing
from lifeline.collector.cases.workflow import Action, CaseState, apply, open_case
from lifeline.collector.cases.workorders import WorkOrderAction, open_work_order
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Role
from tests.integration.test_api_http import Api, now_ms, problem_of, running_api

pytestmark = pytest.mark.integration

A, S = Action, CaseState
GAS, LAMPS = ("GAS", "燃气集团"), ("LAMPS", "路灯管理所")
# The actions that bring a fresh case to the state where each action is legal.
PATH = {
    S.REPORTED: (),
    S.REGISTERED: (A.ACCEPT,),
    S.DISPATCHED: (A.ACCEPT, A.DISPATCH),
    S.HANDLING: (A.ACCEPT, A.DISPATCH, A.START),
    S.FEEDBACK: (A.ACCEPT, A.DISPATCH, A.START, A.FEEDBACK),
    S.VERIFYING: (A.ACCEPT, A.DISPATCH, A.START, A.FEEDBACK, A.VERIFY),
    S.PARKED: (A.ACCEPT, A.DISPATCH, A.PARK),
}
WHERE = {
    A.RECEIVE: S.REPORTED,
    A.ACCEPT: S.REPORTED,
    A.CONFIRM: S.REPORTED,
    A.VOID: S.REPORTED,
    A.DISPATCH: S.REGISTERED,
    A.START: S.DISPATCHED,
    A.RETURN: S.DISPATCHED,
    A.FEEDBACK: S.HANDLING,
    A.VERIFY: S.FEEDBACK,
    A.CHECK: S.VERIFYING,
    A.REJECT: S.VERIFYING,
    A.CLOSE: S.VERIFYING,
    A.UNPARK: S.PARKED,
    A.ESCALATE: S.HANDLING,
    A.APPLY: S.HANDLING,
    A.APPROVE: S.HANDLING,
    A.DENY: S.HANDLING,
    A.REPLY: S.HANDLING,
}
BODY: dict[Action, dict[str, Any]] = {
    A.APPLY: {"request": "park"},
    A.VOID: {"reason": "重复"},
    A.REPLY: {"note": "已到场"},
    A.FEEDBACK: {"note": "已处置"},  # the 处置意见
    A.REJECT: {"note": "仍有隐患"},  # the reason
}
STAYS = (
    A.ESCALATE,
    A.APPLY,
    A.DENY,
    A.REPLY,
    A.CONFIRM,
    A.RECEIVE,
    A.CHECK,
)  # the actions that keep the case's state
SERIAL = iter(range(1, 100_000))


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    url = (
        f"sqlite:///{tmp_path}/duties.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with running_api(url) as a:
        store = a.runtime.store
        for code, name in (GAS, LAMPS):
            store.put_department(code, name, now_ms())
        yield a


def scoped_key(api: Api, name: str, codes: tuple[str, ...]) -> dict[str, str]:
    token = new_token()
    api.runtime.store.create_api_key(
        name, Role.DEPARTMENT.value, digest(token), display_prefix(token), now_ms(), codes
    )
    return {"Authorization": f"Bearer {token}"}


def case_in(
    api: Api,
    state: CaseState,
    department: str = GAS[1],
    assist: str = "",
    pending: str = "",
    source: str = "物联网感知",
    checked: bool = False,
) -> str:
    """A fresh 部件 case of `department` (reported from `source`) brought to `state`."""
    no = f"330106{next(SERIAL):010d}"
    t = now_ms()
    case, audits = open_case(
        case_no=no, kind="部件", subcategory="0111", problem="cover_open", asset=None,
        device=f"mh-{no}", urgency="normal", department=department, grid=None,
        allowed_ms=3_600_000, auto_register=False, actor="seed", now_ms=t, source=source,
    )  # fmt: skip
    for action in PATH[state]:
        case, audit = apply(case, action, actor="seed", now_ms=t, note="seed")
        audits.append(audit)
    if checked:
        case = replace(case, check_result="通过")  # 核查通过, which 结案 needs
    if assist:
        case = replace(case, assist=(assist,))
    if pending:
        case = replace(case, pending=pending)
    case = replace(case, escalations=1)  # a 督办 to reply to
    api.runtime.store.save_case(case, audits, expect_state=None)
    return no


def post(api: Api, no: str, action: Action, headers: dict[str, str]) -> Any:
    body = {"action": action.value, **BODY.get(action, {})}
    return api.client.post(f"/api/v1/cases/{no}/actions", json=body, headers=headers)


def test_every_action_is_allowed_to_exactly_the_roles_of_the_matrix(api: Api) -> None:
    assert set(CASE_ACTIONS) == set(WHERE)  # the walk covers the whole matrix
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    for action, state in WHERE.items():
        for role in Role:
            headers = own if role is Role.DEPARTMENT else api.h(role)
            pending = "park" if action in (A.APPROVE, A.DENY) else ""
            # Only a 公众 or 12345 report needs 核实, and a sensor's case was received as it
            # opened: a 监督员's report waits for its 受理 with nothing to 核实.
            source = {A.CONFIRM: "公众", A.RECEIVE: "监督员"}.get(action, "物联网感知")
            no = case_in(api, state, pending=pending, source=source, checked=action is A.CLOSE)
            r = post(api, no, action, headers)
            if may_act(role, action):
                assert r.status_code == 200, (action, role, r.text)
                after = api.runtime.store.case(no)
                assert after is not None
                if action not in STAYS:
                    assert after.state is not state, (action, role)
            else:
                detail = problem_of(r, 403)["detail"]
                assert role.value in detail, detail
                # A reporter key is refused before any action: it reads nothing either.
                assert (action.value if role is not Role.REPORTER else "公众上报应用") in detail
                assert api.runtime.store.case(no).state is state  # type: ignore[union-attr]


def test_the_matrix_gives_each_duty_what_the_standard_says(api: Api) -> None:
    # Spelled out, so a change to CASE_ACTIONS has to change this test (and the docs) too.
    expected = {
        Role.INSPECTOR: {A.CONFIRM, A.CHECK, A.REJECT},
        Role.INTAKE: {A.RECEIVE, A.VERIFY},
        Role.SHIFT_LEAD: {A.ACCEPT, A.VOID, A.CLOSE, A.ESCALATE},
        Role.DISPATCHER: {A.DISPATCH, A.RETURN, A.UNPARK, A.APPROVE, A.DENY},
        Role.DEPARTMENT: {A.START, A.FEEDBACK, A.APPLY, A.REPLY},
        Role.LEADER: set(),
        Role.VIEWER: set(),
        Role.OPERATOR: set(),
        Role.REPORTER: set(),
        Role.ADMIN: set(CASE_ACTIONS),
    }
    assert set(expected) == set(Role)
    for role, actions in expected.items():
        assert {a for a in CASE_ACTIONS if may_act(role, a)} == actions, role
    # 延时 and 挂账 only by approve of a department's application: nobody posts them.
    for system in (A.UPGRADE, A.REWORK, A.AUTO_CLOSE, A.EXTEND, A.PARK):
        assert not any(may_act(role, system) for role in Role)
    # 上报 (POST /api/v1/cases): a 监督员 from the field, a 受理员 a 12345 call, and admin.
    assert CASE_REPORTERS == {Role.INSPECTOR: "监督员", Role.INTAKE: "12345"}
    assert {r for r in Role if may_report(r)} == {Role.INSPECTOR, Role.INTAKE, Role.ADMIN}


def test_a_report_is_allowed_to_exactly_the_roles_of_the_matrix(api: Api) -> None:
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    body = {
        "kind": "事件",
        "subcategory": "0403",
        "address": "文三路 1 号",
        "description": "燃气味",
    }
    for role in Role:
        headers = own if role is Role.DEPARTMENT else api.h(role)
        call = {"hotline": {"order_no": f"H-{role.value}"}} if role is Role.INTAKE else {}
        r = api.client.post("/api/v1/cases", json={**body, **call}, headers=headers)
        if may_report(role):
            assert r.status_code == 201, (role, r.text)
            assert r.json()["source"] == CASE_REPORTERS.get(role, "监督员")
        else:
            detail = problem_of(r, 403)["detail"]
            why = "reporter key" if role is Role.REPORTER else "report (上报) needs one of"
            assert why in detail, detail
            assert role.value in detail, detail


def test_a_department_key_sees_and_acts_on_its_own_cases_only(api: Api) -> None:
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    mine = case_in(api, S.DISPATCHED)
    theirs = case_in(api, S.DISPATCHED, department=LAMPS[1])
    helping = case_in(api, S.DISPATCHED, department=LAMPS[1], assist=GAS[1])
    listed = api.client.get("/api/v1/cases", headers=own).json()["items"]
    assert {c["case_no"] for c in listed} == {mine, helping}  # 主办 or 协办
    everything = api.client.get("/api/v1/cases", headers=api.h(Role.LEADER)).json()["items"]
    assert {mine, theirs, helping} <= {c["case_no"] for c in everything}
    problem_of(api.client.get(f"/api/v1/cases/{theirs}", headers=own), 404)
    assert api.client.get(f"/api/v1/cases/{helping}", headers=own).status_code == 200
    problem_of(post(api, theirs, A.START, own), 404)
    problem_of(post(api, helping, A.START, own), 404)  # 协办 sees it; the 主办 handles it
    assert post(api, mine, A.START, own).json()["state"] == "处置"
    audit = api.client.get(f"/api/v1/cases/{mine}", headers=own).json()["audit"]
    assert (audit[-1]["actor"], audit[-1]["role"]) == ("燃气集团 抢修班", "department")


def order_of(api: Api, department: str) -> str:
    """A fresh 设备运维工单 (待接单) that `department` maintains."""
    no = f"YW330106{next(SERIAL):010d}"
    order, audit = open_work_order(
        order_no=no, problem="comm_loss", title="设备通信中断", gateway="gw-1",
        device=f"sl-{no}", asset=None, severity=3, urgent=False, department=department,
        allowed_ms=86_400_000, now_ms=now_ms(),
    )  # fmt: skip
    api.runtime.store.save_work_order(order, [audit], expect_state=None)
    return no


def state_of(api: Api, order_no: str) -> str:
    order = api.runtime.store.work_order(order_no)
    assert order is not None
    return order.state.value


def work(api: Api, no: str, headers: dict[str, str], action: str, **body: Any) -> Any:
    return api.client.post(
        f"/api/v1/work-orders/{no}/actions", json={"action": action, **body}, headers=headers
    )


def test_a_department_key_takes_and_completes_its_own_work_orders_only(api: Api) -> None:
    # Before, 接单 and 完工 needed the dispatcher role: the department that maintains the
    # device saw its work order and could not work it.
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    mine, theirs = order_of(api, GAS[1]), order_of(api, LAMPS[1])
    taken = work(api, mine, own, "accept", actor="张工")
    assert taken.status_code == 200, taken.text
    assert taken.json()["state"] == "处理中"
    done = work(api, mine, own, "complete", closure="误报", note="传感器正常").json()
    assert (done["state"], done["closure"]) == ("已完成", "误报")
    audit = api.client.get(f"/api/v1/work-orders/{mine}", headers=own).json()["audit"]
    assert [(a["action"], a["actor"], a["role"], a["on_behalf_of"]) for a in audit[1:]] == [
        ("accept", "燃气集团 抢修班", "department", "张工"),
        ("complete", "燃气集团 抢修班", "department", ""),
    ]
    assert audit[1]["key_id"] == audit[2]["key_id"] is not None
    # Another department's work order, or none at all, is the same 404: existence does not leak.
    for no in (theirs, "YW0"):
        for action in ("accept", "complete"):
            problem_of(work(api, no, own, action), 404)
    problem_of(work(api, "YW' OR '1'='1", own, "accept"), 422)  # not a work-order number
    assert state_of(api, theirs) == "待接单"
    problem_of(work(api, mine, own, "accept"), 409)  # finished
    problem_of(work(api, theirs, own, "auto_close"), 422)  # the system's, whoever asks
    problem_of(work(api, theirs, own, "accept", closure="误报"), 422)


def test_every_work_order_action_is_allowed_to_exactly_the_roles_that_work_them(
    api: Api,
) -> None:
    # The maintainer's actions (接单, 完工) belong to dispatcher and up and to the maintaining
    # department; every duty role of the case workflow is refused them.
    assert {WorkOrderAction.ACCEPT, WorkOrderAction.COMPLETE} == MAINTAINER_ACTIONS
    allowed = {Role.DISPATCHER, Role.OPERATOR, Role.ADMIN, Role.DEPARTMENT}
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    for action in MAINTAINER_ACTIONS:
        for role in Role:
            assert may_work(role, action) is (role in allowed), (action, role)
            no = order_of(api, GAS[1])
            r = work(api, no, own if role is Role.DEPARTMENT else api.h(role), action.value)
            if role in allowed:
                assert r.status_code == 200, (action, role, r.text)
            else:
                detail = problem_of(r, 403)["detail"]
                assert role.value in detail, detail
                # A reporter key is refused before any action: it reads nothing either.
                assert (action.value if role is not Role.REPORTER else "公众上报应用") in detail
                assert state_of(api, no) == "待接单"
    assert not any(may_work(role, WorkOrderAction.AUTO_CLOSE) for role in Role)


def test_department_keys_and_the_registry_refuse_what_does_not_fit(api: Api) -> None:
    admin = api.h(Role.ADMIN)
    c = api.client
    for body in (
        {"name": "x", "role": "department"},  # no departments
        {"name": "x", "role": "department", "departments": ["NOPE"]},  # not registered
        {"name": "x", "role": "dispatcher", "departments": [GAS[0]]},  # only department keys
        {"name": "x", "role": "department", "departments": ["a b"]},  # not a code
    ):
        problem_of(c.post("/api/v1/keys", json=body, headers=admin), 422)
    made = c.post(
        "/api/v1/keys", json={"name": "燃气", "role": "department", "departments": ["GAS"]},
        headers=admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["departments"] == ["GAS"]
    assert (
        c.put("/api/v1/departments/WATER", json={"name": "水务集团"}, headers=admin).status_code
        == 201
    )
    assert (
        c.put(
            "/api/v1/departments/WATER", json={"name": "水务集团有限公司"}, headers=admin
        ).status_code
        == 200
    )
    problem_of(c.put("/api/v1/departments/W2", json={"name": "燃气集团"}, headers=admin), 409)
    problem_of(
        c.put("/api/v1/departments/W2", json={"name": "x"}, headers=api.h(Role.DISPATCHER)), 403
    )
    problem_of(c.put("/api/v1/departments/a%20b", json={"name": "x"}, headers=admin), 422)
    listed = c.get("/api/v1/departments", headers=api.h(Role.LEADER)).json()
    assert {"code": "WATER", "name": "水务集团有限公司"} in listed


def test_a_renamed_department_keeps_its_open_cases_and_one_in_use_is_not_removed(
    api: Api,
) -> None:
    c, admin = api.client, api.h(Role.ADMIN)
    no = case_in(api, S.HANDLING, department=LAMPS[1])
    own = scoped_key(api, "路灯抢修班", (LAMPS[0],))
    # Cases name departments by name: before, a rename hid the open case from the
    # department's own key (its scope is the code and the current name).
    rename = c.put(f"/api/v1/departments/{LAMPS[0]}", json={"name": "路灯养护中心"}, headers=admin)
    assert rename.status_code == 200, rename.text
    seen = c.get(f"/api/v1/cases/{no}", headers=own)
    assert seen.status_code == 200, seen.text
    assert seen.json()["department"] == "路灯养护中心"
    detail = problem_of(c.delete(f"/api/v1/departments/{LAMPS[0]}", headers=admin), 409)["detail"]
    assert detail.startswith(
        f"department LAMPS (路灯养护中心) is still in use: 1 open cases ({no})"
    )
    assert "active keys" in detail
    problem_of(c.delete(f"/api/v1/departments/{LAMPS[0]}", headers=api.h(Role.DISPATCHER)), 403)
    problem_of(c.delete("/api/v1/departments/NOPE", headers=admin), 404)
    problem_of(c.delete("/api/v1/departments/a%20b", headers=admin), 422)
    for name in (" 水务集团", "水务\n集团", "水务\u202e集团", ""):
        problem_of(c.put("/api/v1/departments/WATER", json={"name": name}, headers=admin), 422)
    assert c.put("/api/v1/departments/WATER", json={"name": "水务集团"}, headers=admin).is_success
    assert c.delete("/api/v1/departments/WATER", headers=admin).status_code == 204
    listed = c.get("/api/v1/departments", headers=admin).json()
    shipped = load_routing(default_routing_path()).departments  # registered at start
    assert [d["code"] for d in listed if d["code"] not in shipped] == [GAS[0], LAMPS[0]]


def test_a_department_applies_for_an_extension_and_the_dispatcher_grants_it(api: Api) -> None:
    # Fails on the old code: a dispatcher's {"action": "extend", "extend_hours": 1000} took
    # effect in one step, 0.0001 h was accepted, and the grant's hours were recorded nowhere.
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    no = case_in(api, S.HANDLING)  # 0111 normal: the shipped 处置 limit is 24 h
    url = f"/api/v1/cases/{no}/actions"
    for role in (Role.DISPATCHER, Role.SHIFT_LEAD, Role.ADMIN):  # not in one step, by anyone
        for direct in ({"action": "extend", "extend_hours": 2}, {"action": "park"}):
            problem_of(api.client.post(url, json=direct, headers=api.h(role)), 422)
    problem_of(api.client.post(url, json={"action": "extend"}, headers=own), 422)
    for hours, bound in ((1000, "at most the stage's own limit, 24 h"), (0.0001, "0.5 h")):
        body = {"action": "apply", "request": "extend", "extend_hours": hours}
        assert bound in problem_of(api.client.post(url, json=body, headers=own), 422)["detail"]
    body = {"action": "apply", "request": "extend", "extend_hours": 12.5, "note": "管线需开挖"}
    r = api.client.post(url, json=body, headers=own)
    assert (r.json()["pending"], r.json()["pending_hours"]) == ("extend", 12.5)
    due = r.json()["deadline_ms"]
    problem_of(post(api, no, A.APPROVE, own), 403)  # nor does it grant itself
    assert api.client.get(f"/api/v1/cases/{no}", headers=own).json()["deadline_ms"] == due
    granted = post(api, no, A.APPROVE, api.h(Role.DISPATCHER)).json()
    assert granted["pending"] is None
    assert granted["deadline_ms"] == due + 12.5 * 3_600_000  # natural hours later
    detail = api.client.get(f"/api/v1/cases/{no}", headers=own).json()
    (dispose,) = [p for p in detail["phases"] if p["stage"] == "处置"]
    assert dispose["extended_hours"] == 12.5
    assert [(a["action"], a["role"], a["note"]) for a in detail["audit"][-3:]] == [
        ("apply", "department", "申请 延时 12.5 h: 管线需开挖"),
        ("approve", "dispatcher", "批准 延时 12.5 h"),
        ("extend", "dispatcher", "延时 12.5 小时: 批准的申请"),
    ]
    problem_of(post(api, no, A.APPROVE, api.h(Role.DISPATCHER)), 422)  # nothing pending


def test_a_case_parked_in_dispatch_goes_back_to_dispatch(api: Api) -> None:
    # Fails on the old code: unpark sent it to 处置 though its department never posted start.
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    dispatcher = api.h(Role.DISPATCHER)
    for state in (S.DISPATCHED, S.HANDLING):
        no = case_in(api, state)
        url = f"/api/v1/cases/{no}/actions"
        body = {"action": "apply", "request": "park", "note": "待预算"}
        assert api.client.post(url, json=body, headers=own).status_code == 200
        assert post(api, no, A.APPROVE, dispatcher).json()["state"] == S.PARKED.value
        problem_of(post(api, no, A.UNPARK, own), 403)  # 解除挂账 is the 派遣员's
        assert post(api, no, A.UNPARK, dispatcher).json()["state"] == state.value


def test_a_department_replies_once_per_supervision(api: Api) -> None:
    # Fails on the old code: the same 督办 took any number of replies, each "(第1次)".
    own = scoped_key(api, "燃气集团 抢修班", (GAS[0],))
    no = case_in(api, S.HANDLING)  # with 督办 第1次
    url = f"/api/v1/cases/{no}/actions"
    reply = {"action": "reply", "note": "抢修队已到场"}
    assert api.client.post(url, json=reply, headers=own).status_code == 200
    said = problem_of(api.client.post(url, json=reply, headers=own), 422)["detail"]
    assert "督办 第1次 has its reply already" in said
    assert post(api, no, A.ESCALATE, api.h(Role.SHIFT_LEAD)).status_code == 200  # 第2次
    assert api.client.post(url, json=reply, headers=own).status_code == 200
    notes = [a["note"] for a in api.client.get(f"/api/v1/cases/{no}", headers=own).json()["audit"]]
    assert [n for n in notes if n.startswith("督办回复")] == [
        "督办回复 (第1次): 抢修队已到场",
        "督办回复 (第2次): 抢修队已到场",
    ]


def test_a_department_name_never_passes_for_another_department(api: Api) -> None:
    # Reproduced on main (review of issue 19, item 4): a department could be named like another's
    # code (EVIL named GAS: GAS's key then saw and handled EVIL's cases), a name given up by a
    # rename could be taken by a new department (which inherited the old one's closed cases,
    # while the old one's key lost them), and a key's raw code matched a case's department.
    c, admin = api.client, api.h(Role.ADMIN)
    gas_key = scoped_key(api, "燃气值班", (GAS[0],))
    lamps_key = scoped_key(api, "路灯值班", (LAMPS[0],))

    def put(code: str, name: str) -> Any:
        return c.put(f"/api/v1/departments/{code}", json={"name": name}, headers=admin)

    said = problem_of(put("EVIL", GAS[0]), 409)["detail"]
    assert said.startswith("'GAS' is a department code: a name may not equal a code")
    assert put("SEWER1", "SEWER").status_code == 201
    assert problem_of(put("SEWER", "排水公司"), 409)["detail"].startswith(
        "'SEWER' is the name of department SEWER1: a code may not equal a name"
    )
    # A case that names a department by a raw code (free text of old) is no department's.
    raw = case_in(api, S.DISPATCHED, department=GAS[0])
    problem_of(c.get(f"/api/v1/cases/{raw}", headers=gas_key), 404)
    problem_of(post(api, raw, A.START, gas_key), 404)

    closed = case_in(api, S.VERIFYING, department=LAMPS[1], checked=True)
    assert post(api, closed, A.CLOSE, api.h(Role.SHIFT_LEAD)).status_code == 200
    assert put(LAMPS[0], "路灯养护中心").status_code == 200
    # The old name stays LAMPS's: its key still sees the case closed under it, nobody else.
    assert c.get(f"/api/v1/cases/{closed}", headers=lamps_key).status_code == 200
    assert problem_of(put("NEWCO", LAMPS[1]), 409)["detail"].startswith(
        "'路灯管理所' was the name of department LAMPS: names are never reused"
    )
    assert put(LAMPS[0], LAMPS[1]).status_code == 200  # its own former name: its again
    # Removed, its name is still its own: another code may not take it, it may come back.
    assert put("WATER", "水务集团").status_code == 201
    assert c.delete("/api/v1/departments/WATER", headers=admin).status_code == 204
    problem_of(put("W2", "水务集团"), 409)
    assert put("WATER", "水务集团").status_code == 201
    listed = {d["code"]: d["name"] for d in c.get("/api/v1/departments", headers=admin).json()}
    for code in load_routing(default_routing_path()).departments:  # registered at start
        del listed[code]
    assert listed == {
        "GAS": "燃气集团", "LAMPS": "路灯管理所", "SEWER1": "SEWER", "WATER": "水务集团"
    }  # fmt: skip


@pytest.mark.parametrize(
    "name", ["system", "System", "a\x1b[2Jb", "a\nb", "a\u202eb", "   ", " x", "x" * 101, ""]
)
def test_key_and_actor_names_that_would_mislead_the_audit_are_refused(api: Api, name: str) -> None:
    # Reproduced on main (item 13): a key named `system` passed for the engine in the audit,
    # and ESC, newline or U+202E in a key or actor name were kept and printed raw.
    c, admin = api.client, api.h(Role.ADMIN)
    problem_of(c.post("/api/v1/keys", json={"name": name, "role": "viewer"}, headers=admin), 422)
    no = case_in(api, S.HANDLING)
    body = {"action": "escalate", "actor": name}
    problem_of(c.post(f"/api/v1/cases/{no}/actions", json=body, headers=admin), 422)
    body = {"action": "accept", "actor": name}
    problem_of(c.post("/api/v1/work-orders/YW-NONE/actions", json=body, headers=admin), 422)
    assert all(k["name"] != name for k in c.get("/api/v1/keys", headers=admin).json())
