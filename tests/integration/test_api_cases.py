"""The case and work-order API of issue 14 over HTTP against a real store: actions with their
arguments, what a key may not post, work orders, the online rate, where each alarm ended. Every
bad input is a 4xx problem+json, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.assets import Asset
from lifeline.collector.models import Accepted, Role
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DeviceEvent,
    DeviceEventBatch,
    DeviceInfo,
    Kind,
    Severity,
    TopicParts,
)
from tests.integration.test_api_http import (
    GW,
    Api,
    now_ms,
    problem_of,
    running_api,
    wait_for,
)

pytestmark = pytest.mark.integration

COVER = "3301060111000101"
BRIDGE = "3301060208000101"
SEQ = iter(range(10_000, 1_000_000))


def send(
    api: Api, aid: str, device: str, point: str, kind: str, state: AlarmState, sev: int
) -> None:
    """One alarm transition as ingest stores it, then the post-commit hook."""
    ev = AlarmEvent(aid, device, point, kind, Severity(sev), state, now_ms(), 1.0, None, point)
    batch = AlarmBatch(GW, "s1", next(SEQ), now_ms(), (ev,), epoch="e1")
    api.runtime.store.write([Accepted(TopicParts("xihu", GW, Kind.ALARM), batch)], now_ms())
    api.runtime.after_commit()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(f"sqlite:///{tmp_path}/cases.db") as a:
        store = a.runtime.store
        store.upsert_assets(
            [
                Asset(code=COVER, owner="燃气集团", maintainer="燃气运维站", devices=("mh-1",)),
                Asset(code=BRIDGE, owner="城管局", devices=("tilt-b01",)),
            ]
        )
        devices = (
            DeviceInfo("mh-1", "manhole_cover", "manhole", True),
            DeviceInfo("tilt-b01", "tilt_sensor", "tilt", True),
            DeviceInfo("sl-1", "streetlight", "streetlight", True),
        )
        birth = Birth(GW, "s1", 0, now_ms(), "1.0", "h", devices)
        store.write([Accepted(TopicParts("xihu", GW, Kind.BIRTH), birth)], now_ms())
        yield a


def only_case(api: Api, **params: Any) -> dict[str, Any]:
    (case,) = wait_for(
        lambda: api.client.get("/api/v1/cases", params=params, headers=api.h()).json()["items"]
    )
    return case  # type: ignore[no-any-return]


def act(api: Api, no: str, body: dict[str, Any], role: Role = Role.ADMIN) -> Any:
    # admin may take every action; who may take which is test_duties.py's subject.
    return api.client.post(f"/api/v1/cases/{no}/actions", json=body, headers=api.h(role))


def test_a_key_cannot_post_alarm_cleared_to_jump_a_case_past_handling(api: Api) -> None:
    # Reproduced on main: a dispatcher posted alarm_cleared while the alarm was still active
    # and the case went 立案 -> 核查.
    send(api, f"{GW}:1", "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, 2)
    case = only_case(api)
    assert case["state"] == "立案"
    for system in ("alarm_cleared", "upgrade", "rework", "auto_close"):
        problem_of(act(api, case["case_no"], {"action": system}), 422)
    assert only_case(api)["state"] == "立案"


def test_closing_while_the_alarm_is_active_then_acknowledging_opens_no_duplicate(
    api: Api,
) -> None:
    send(api, f"{GW}:2", "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, 2)
    no = only_case(api)["case_no"]
    for action in ("dispatch", "start", "feedback", "verify"):
        body = (
            {"action": action, "note": "井盖已复位"} if action == "feedback" else {"action": action}
        )
        assert act(api, no, body).status_code == 200, action
    # 结案 waits for 核查通过; a note with control characters is refused in words.
    assert "核查通过" in problem_of(act(api, no, {"action": "close"}), 422)["detail"]
    dirty = problem_of(act(api, no, {"action": "check", "note": "ok\x1b[2J"}), 422)
    assert "control or bidi character U+001B" in json.dumps(dirty, ensure_ascii=False)
    checked = act(api, no, {"action": "check", "note": "井盖平稳"}).json()
    assert "check" not in checked["actions"]  # once per round
    assert "close" in checked["actions"]
    assert act(api, no, {"action": "close"}).status_code == 200
    send(api, f"{GW}:2", "mh-1", "cover_open", "state", AlarmState.ACTIVE_ACKED, 2)
    cases = api.client.get("/api/v1/cases", headers=api.h()).json()["items"]
    assert [c["case_no"] for c in cases] == [no]
    assert cases[0]["closure"] == "处置完成"


def test_dispatch_names_the_departments_and_a_return_needs_a_named_redispatch(api: Api) -> None:
    send(api, f"{GW}:3", "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, 2)
    no = only_case(api)["case_no"]
    for code, name in (("GASOPS", "燃气运维站"), ("TRAFFIC", "交警大队"), ("DRAIN", "排水公司")):
        api.runtime.store.put_department(code, name, now_ms())
    # Departments come from the registry, by code or name, never as free text.
    unknown = {"action": "dispatch", "department": "燃气运维站", "assist": ["某某公司"]}
    assert "某某公司" in problem_of(act(api, no, unknown), 422)["detail"]
    body = {"action": "dispatch", "department": "燃气运维站", "assist": ["TRAFFIC"]}
    assert act(api, no, body).json()["assist"] == ["交警大队"]
    assert act(api, no, {"action": "return", "note": "不属本单位"}).json()["state"] == "立案"
    problem_of(act(api, no, {"action": "dispatch"}), 422)
    again = act(api, no, {"action": "dispatch", "department": "排水公司"}).json()
    assert (again["state"], again["department"], again["returns"]) == ("派遣", "排水公司", 1)
    audit = api.client.get(f"/api/v1/cases/{no}", headers=api.h()).json()["audit"]
    assert audit[-1]["note"] == "改派 主办 燃气运维站 → 排水公司"


@pytest.mark.parametrize(
    "body",
    [
        {"action": "close", "department": "x"},  # an argument of another action
        {"action": "dispatch", "closure": "误报"},
        {"action": "accept", "kind": "事件"},  # kind without its 小类
        {"action": "accept", "subcategory": "04x3", "kind": "事件"},
        {"action": "accept", "kind": "设备", "subcategory": "0403"},
        {"action": "close", "closure": "自动恢复"},  # the system's closure
        {"action": "extend", "extend_hours": -1},
        {"action": "dispatch", "assist": [""]},
        {"action": "dispatch", "department": "x" * 101},
        {"action": "nothing"},
        {},
        # The texts of the case record: too long, control characters, wrong types, misplaced.
        {"action": "feedback", "note": "修" * 2001},
        {"action": "feedback", "note": "已修复\x01"},  # (a NUL is 400 in any body)
        {"action": "reject", "note": "\x1b[31m不通过"},
        {"action": "feedback", "note": ["已修复"]},
        {"action": "accept", "condition": "井" * 501},
        {"action": "accept", "condition": ""},
        {"action": "accept", "condition": "井盖\x07缺失"},
        {"action": "accept", "condition": {"text": "井盖缺失"}},
        {"action": "close", "condition": 5},
        {"action": "dispatch", "condition": "井盖缺失"},
        {"action": "check", "media_url": "javascript:alert(1)"},
        {"action": "check", "media_url": "https://photos.example.org/" + "a" * 2000},
        {"action": "reject", "media_url": 42},
        {"action": "close", "media_url": "https://photos.example.org/a.jpg"},
    ],
)
def test_every_bad_action_body_is_a_4xx_problem(api: Api, body: dict[str, Any]) -> None:
    send(api, f"{GW}:4", "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, 2)
    no = only_case(api)["case_no"]
    problem_of(act(api, no, body), 422)


def test_an_unclassified_case_is_accepted_with_its_kind_and_subcategory(api: Api) -> None:
    send(api, f"{GW}:5", "sl-1", "temperature", "hi", AlarmState.ACTIVE_UNACKED, 2)
    case = only_case(api)
    assert (case["kind"], case["state"], case["title"]) == ("未分类", "受理", "未分类物联感知告警")
    assert case["subcategory_name"] is None
    assert case["deadline_ms"] > now_ms()  # the 立案 stage runs while it waits in 受理
    problem_of(act(api, case["case_no"], {"action": "accept"}), 422)
    done = act(api, case["case_no"], {"action": "accept", "kind": "部件", "subcategory": "0118"})
    assert done.status_code == 200, done.text
    assert (done.json()["kind"], done.json()["subcategory_name"]) == ("部件", "路灯")
    assert done.json()["deadline_ms"] > now_ms()  # the 派遣 stage's, from 立案
    phases = api.client.get(f"/api/v1/cases/{case['case_no']}", headers=api.h()).json()["phases"]
    assert [(p["stage"], p["end_ms"] is None) for p in phases] == [("立案", False), ("派遣", True)]


def test_a_bridge_that_moves_is_an_event_case_at_the_bridge_and_upgrades(api: Api) -> None:
    send(api, f"{GW}:6", "tilt-b01", "angle_x", "hi", AlarmState.ACTIVE_UNACKED, 3)
    case = only_case(api)
    assert (case["kind"], case["subcategory"], case["asset"], case["urgency"]) == (
        "事件",
        "0499",
        BRIDGE,
        "normal",
    )
    send(api, f"{GW}:7", "tilt-b01", "angle_x", "hihi", AlarmState.ACTIVE_UNACKED, 2)
    upgraded = only_case(api)
    assert (upgraded["severity"], upgraded["urgency"], upgraded["repeats"]) == (2, "urgent", 1)
    assert upgraded["deadline_ms"] < case["deadline_ms"]
    assert [a["alarm_id"] for a in upgraded["alarms"]] == [f"{GW}:6", f"{GW}:7"]
    api.runtime.event_pump.run_once()
    events = api.client.get("/api/v1/events?types=case.upgraded", headers=api.h()).json()
    (event,) = events["items"]
    assert (event["data"]["case_no"], event["data"]["severity"]) == (case["case_no"], 2)


def test_work_orders_over_http(api: Api) -> None:
    send(api, f"{GW}:8", "sl-1", "_device", "comm_loss", AlarmState.ACTIVE_UNACKED, 3)
    send(api, f"{GW}:9", "mh-1", "battery", "lo", AlarmState.ACTIVE_UNACKED, 4)
    assert api.client.get("/api/v1/cases", headers=api.h()).json()["items"] == []
    page = api.client.get("/api/v1/work-orders?limit=1", headers=api.h()).json()
    assert len(page["items"]) == 1
    rest = api.client.get(
        "/api/v1/work-orders", params={"cursor": page["next_cursor"]}, headers=api.h()
    ).json()
    orders = {o["problem"]: o for o in page["items"] + rest["items"]}
    assert set(orders) == {"comm_loss", "low_battery"}
    battery = orders["low_battery"]
    assert (battery["asset"], battery["state"], battery["colour"]) == (COVER, "待接单", "green")
    assert battery["alarms"][0]["alarm_id"] == f"{GW}:9"
    url = f"/api/v1/work-orders/{battery['order_no']}/actions"
    problem_of(api.client.post(url, json={"action": "accept"}, headers=api.h(Role.VIEWER)), 403)
    problem_of(
        api.client.post(url, json={"action": "auto_close"}, headers=api.h(Role.DISPATCHER)), 422
    )
    problem_of(
        api.client.post(
            url, json={"action": "accept", "closure": "误报"}, headers=api.h(Role.DISPATCHER)
        ),
        422,
    )
    for hostile in ("接单\u202e", "接单\x1b[2J"):  # the free-text rule of a case's note
        bad = {"action": "accept", "note": hostile}
        problem_of(api.client.post(url, json=bad, headers=api.h(Role.DISPATCHER)), 422)
    taken = api.client.post(
        url, json={"action": "accept", "actor": "运维张工"}, headers=api.h(Role.DISPATCHER)
    )
    assert taken.json()["state"] == "处理中"
    problem_of(api.client.post(url, json={"action": "accept"}, headers=api.h(Role.DISPATCHER)), 409)
    done = api.client.post(
        url, json={"action": "complete", "closure": "误报"}, headers=api.h(Role.DISPATCHER)
    ).json()
    assert (done["state"], done["closure"]) == ("已完成", "误报")
    detail = api.client.get(f"/api/v1/work-orders/{battery['order_no']}", headers=api.h()).json()
    assert [a["action"] for a in detail["audit"]] == ["open", "accept", "complete"]
    taker = detail["audit"][1]
    assert (taker["actor"], taker["role"], taker["on_behalf_of"]) == (
        "dispatcher-1",
        "dispatcher",
        "运维张工",
    )
    problem_of(api.client.get("/api/v1/work-orders/YW0", headers=api.h()), 404)
    problem_of(
        api.client.post(
            "/api/v1/work-orders/YW0/actions",
            json={"action": "accept"},
            headers=api.h(Role.DISPATCHER),
        ),
        404,
    )
    assert api.client.get("/api/v1/work-orders?state=已完成", headers=api.h()).json()["items"]
    problem_of(api.client.get("/api/v1/work-orders?state=done", headers=api.h()), 422)
    problem_of(api.client.get("/api/v1/work-orders?cursor=%%%", headers=api.h()), 400)
    metrics = api.client.get("/metrics", headers=api.h()).text
    assert 'lifeline_work_orders{state="已完成"} 1' in metrics
    assert 'lifeline_alarm_outcomes{outcome="work_order"} 2' in metrics


def test_each_alarm_says_where_it_ended(api: Api) -> None:
    send(api, f"{GW}:10", "sl-1", "temperature", "hi", AlarmState.ACTIVE_UNACKED, 3)
    send(api, f"{GW}:11", "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, 2)
    api.runtime.event_pump.run_once()
    recorded = api.client.get(f"/api/v1/alarms/{GW}:10", headers=api.h()).json()
    assert recorded["outcome"] == "recorded"
    assert "no route" in recorded["outcome_reason"]
    cased = api.client.get("/api/v1/alarms?outcome=case", headers=api.h()).json()["items"]
    assert [(a["alarm_id"], a["outcome_ref"]) for a in cased] == [
        (f"{GW}:11", only_case(api)["case_no"])
    ]
    problem_of(api.client.get("/api/v1/alarms?outcome=lost", headers=api.h()), 422)


def test_the_device_online_rate(api: Api) -> None:
    t = now_ms()
    batch = DeviceEventBatch(GW, "s1", next(SEQ), t, (DeviceEvent("sl-1", False, t),), epoch="e1")
    api.runtime.store.write([Accepted(TopicParts("xihu", GW, Kind.DEVICE), batch)], t)
    rate = api.client.get("/api/v1/stats/online-rate?window_h=1", headers=api.h()).json()
    assert (rate["devices"], rate["online"], rate["offline"]) == (3, 2, 1)
    assert rate["online_now_rate"] == pytest.approx(2 / 3)
    assert 0 < rate["online_time_rate"] <= 1
    gw_only = api.client.get(f"/api/v1/stats/online-rate?gateway={GW}", headers=api.h()).json()
    assert gw_only["devices"] == 3
    problem_of(api.client.get("/api/v1/stats/online-rate?window_h=0", headers=api.h()), 422)
    problem_of(api.client.get("/api/v1/stats/online-rate"), 401)
