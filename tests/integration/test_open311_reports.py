"""Citizen reports through Open311 (POST requests) on SQLite and PostgreSQL: a report becomes a
受理 case of source 公众 in its 单元网格, needs a 监督员's 核实 before 立案 and goes through to
结案; tokens answer; hostile forms are refused in the spec's error format and store nothing;
reports are rate-limited per key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from lifeline.collector.api import create_app
from lifeline.collector.cases.codes import conditions
from lifeline.collector.cases.workflow import Action, CaseState, apply, open_case
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Accepted, Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.wire import AlarmBatch, AlarmEvent, AlarmState, Kind, Severity, TopicParts

pytestmark = pytest.mark.integration

NOW = 1_764_489_600.0  # 2025-11-30T08:00:00Z, a Sunday, 16:00 in the city
URL = "/open311/v2/requests.json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class City:
    client: TestClient
    runtime: Runtime
    keys: dict[Role, str]
    clock: list[float]

    def h(self, role: Role) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    def post(self, form: dict[str, Any] | list[tuple[str, str]], role: Role = Role.REPORTER) -> Any:
        fields = list(form.items()) if isinstance(form, dict) else form
        body = urlencode([("api_key", self.keys[role]), *fields])  # repeated fields stay so
        return self.client.post(URL, content=body, headers=FORM)

    def act(self, no: str, action: str, role: Role, **body: Any) -> Any:
        return self.client.post(
            f"/api/v1/cases/{no}/actions", json={"action": action, **body}, headers=self.h(role)
        )


@pytest.fixture(params=["sqlite", "postgres"])
def city(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[City]:
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/r.db"
    )
    clock = [NOW]
    rt = Runtime(CollectorConfig(db_url=url), clock=lambda: clock[0])
    rt.start()
    try:
        keys = {}
        for role in Role:
            token = new_token()
            rt.store.create_api_key(
                f"{role.value}-1", role.value, digest(token), display_prefix(token), 0
            )
            keys[role] = token
        with TestClient(create_app(CollectorConfig(db_url=url), rt)) as c:
            yield City(c, rt, keys, clock)
    finally:
        rt.close()


def spec_error(resp: httpx.Response, code: int) -> str:
    assert resp.status_code == code, resp.text
    ((err),) = resp.json()
    assert err["code"] == code
    description: str = err["description"]
    assert description
    return description


def test_a_citizen_report_goes_from_post_through_to_closure(city: City) -> None:
    assert city.runtime.cases.grids is not None
    grid, polygon = city.runtime.cases.grids.polygons[0]
    inside = polygon.representative_point()
    r = city.post(
        {
            "service_code": "0403",
            "lat": str(inside.y),
            "long": str(inside.x),
            "description": "路边闻到很浓的燃气味",
            "media_url": "https://photos.example.org/a.jpg",
            "email": "citizen@example.org",
            "phone": "+86 138 0000 0000",
            "account_id": "app-42",
        }
    )
    assert r.status_code == 201, r.text
    ((answer),) = r.json()
    no, token = answer["service_request_id"], answer["token"]
    assert answer["service_notice"] == "已上报，待核实"  # not received (受理) yet
    assert answer["account_id"] == "app-42"
    assert no.startswith(grid.code[:6])  # numbered in the grid's area
    assert city.client.get(f"/open311/v2/tokens/{token}.json").json() == [
        {"token": token, "service_request_id": no}
    ]
    spec_error(city.client.get("/open311/v2/tokens/not-a-token.json"), 404)
    (public,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert (public["status"], public["status_notes"]) == ("open", "受理")
    assert public["media_url"] == "https://photos.example.org/a.jpg"
    assert public["description"] == "路边闻到很浓的燃气味"
    assert "citizen@example.org" not in json.dumps(public)  # contact is never published

    case = city.client.get(f"/api/v1/cases/{no}", headers=city.h(Role.INTAKE)).json()
    assert (case["source"], case["state"], case["grid"]) == ("公众", "受理", grid.code)
    routed = city.runtime.cases.routing.department_for(
        "事件", "0403", grid, city.runtime.cases.directory()
    )
    assert (case["department"], routed) == (
        "西溪街道城市管理办公室",
        ("西溪街道城市管理办公室", ()),
    )
    assert case["contact"] == {
        "email": "citizen@example.org",
        "phone": "+86 138 0000 0000",
        "account_id": "app-42",
    }
    assert case["audit"][0]["actor"] == "reporter-1"  # the app's key posted it

    # 受理 waits for a 监督员's 核实, 立案 for the 受理; then the case runs the whole workflow.
    steps = {"confirm", "receive", "accept"}
    assert steps & set(case["actions"]) == {"confirm"}
    refused = city.act(no, "receive", Role.INTAKE)
    assert refused.status_code == 422, refused.text
    assert "核实" in refused.json()["detail"]
    assert city.act(no, "confirm", Role.INSPECTOR).json()["confirmed_by"] == "inspector-1"
    assert city.act(no, "confirm", Role.INSPECTOR).status_code == 422  # once is enough
    refused = city.act(no, "accept", Role.SHIFT_LEAD)
    assert refused.status_code == 422, refused.text
    assert "受理 first" in refused.json()["detail"]
    city.clock[0] += 300
    received = city.act(no, "receive", Role.INTAKE).json()
    assert received["received_by"] == "intake-1"
    assert steps & set(received["actions"]) == {"accept"}
    (public,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert public["service_notice"] == "已受理，待立案"
    assert received["received_ms"] == city.clock[0] * 1000
    photo = "https://photos.example.org/checked.jpg"
    for action, role, body in [
        ("accept", Role.SHIFT_LEAD, {}),
        ("dispatch", Role.DISPATCHER, {}),
        ("start", Role.ADMIN, {}),  # for the 专业部门; the matrix: tests/integration/test_duties.py
        ("feedback", Role.ADMIN, {"note": "已关阀并修复泄漏点"}),  # the 处置意见
        ("verify", Role.INTAKE, {}),
        ("check", Role.INSPECTOR, {"note": "现场复测无泄漏", "media_url": photo}),
        ("close", Role.SHIFT_LEAD, {}),
    ]:
        city.clock[0] += 600
        r = city.act(no, action, role, **body)
        assert r.status_code == 200, (action, role, r.text)
    (done,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert (done["status"], done["service_notice"]) == ("closed", "已结案")
    assert done["status_notes"] == "结案：已关阀并修复泄漏点"  # the 处置意见 for the citizen
    record = city.client.get(f"/api/v1/cases/{no}", headers=city.h(Role.VIEWER)).json()
    leak = conditions("事件", "0403")
    assert (record["register_condition"], record["close_condition"]) == leak
    assert (record["check_result"], record["check_note"], record["check_media_url"]) == (
        "通过", "现场复测无泄漏", photo,
    )  # fmt: skip
    assert (record["checked_by"], record["disposal_note"]) == ("inspector-1", "已关阀并修复泄漏点")
    detail = city.client.get(f"/api/v1/cases/{no}", headers=city.h(Role.VIEWER)).json()
    stages = [(p["stage"], p["due_ms"] - p["start_ms"]) for p in detail["phases"]]
    assert stages[0] == ("受理", 15 * 60_000)  # the shipped 15 natural minutes (stages.受理)
    assert [s for s, _ in stages] == ["受理", "立案", "派遣", "处置", "核查"]
    assert [a["action"] for a in detail["audit"]][:4] == ["report", "confirm", "receive", "accept"]


def test_a_report_by_address_alone_can_be_voided_without_confirmation(city: City) -> None:
    r = city.post({"service_code": "0403", "address_string": "文三路 1 号"})
    no = r.json()[0]["service_request_id"]
    case = city.client.get(f"/api/v1/cases/{no}", headers=city.h(Role.VIEWER)).json()
    assert (case["location"]["address"], case["location"]["lat"]) == ("文三路 1 号", None)
    voided = city.act(no, "void", Role.SHIFT_LEAD, reason="重复")
    assert voided.json()["state"] == "作废"
    (public,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert (public["status"], public["service_notice"]) == ("closed", "已作废（重复）")


def test_only_a_citizen_report_takes_a_confirmation() -> None:
    iot, _ = open_case(
        case_no="C1", kind="事件", subcategory="0403", problem="gas_leak", asset=None,
        device="gas-1", urgency="normal", department="x", grid=None, allowed_ms=None,
        auto_register=False, actor="system", now_ms=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="only a 公众 or 12345 report"):
        apply(iot, Action.CONFIRM, actor="监督员", now_ms=1)
    accepted, _ = apply(iot, Action.ACCEPT, actor="值班长", now_ms=1)  # no 核实 needed
    assert accepted.state is CaseState.REGISTERED


GOOD = {"service_code": "0403", "lat": "30.27", "long": "120.14"}


def test_the_routes_judge_deadlines_by_the_engines_clock(city: City) -> None:
    """Colours, the overdue filter and a phase's overdue flag follow the engine's clock (here
    injected, a year before the suite runs), as the times the engine stamps do: a case just
    dispatched and a work order just opened are green until that clock passes their due time
    (the wall clock made both red at once)."""
    no = city.post(GOOD).json()[0]["service_request_id"]
    for action, role in [
        ("confirm", Role.INSPECTOR),
        ("receive", Role.INTAKE),
        ("accept", Role.SHIFT_LEAD),
        ("dispatch", Role.DISPATCHER),
    ]:
        acted = city.act(no, action, role)
        assert acted.status_code == 200, acted.text
    dispatched = acted.json()
    assert dispatched["colour"] == "green"
    ms = int(NOW * 1000)
    down = AlarmEvent("gw-1:1", "sl-1", "_device", "comm_loss", Severity.MEDIUM,
                      AlarmState.ACTIVE_UNACKED, ms, 1.0, None, "offline")  # fmt: skip
    batch = AlarmBatch("gw-1", "s1", 1, ms, (down,), epoch="e1")
    city.runtime.store.write([Accepted(TopicParts("xihu", "gw-1", Kind.ALARM), batch)], ms)
    city.runtime.after_commit()
    (order,) = city.client.get("/api/v1/work-orders", headers=city.h(Role.VIEWER)).json()["items"]

    def seen() -> tuple[str, bool, list[str], str, str]:
        get = city.client.get
        case = get(f"/api/v1/cases/{no}", headers=city.h(Role.VIEWER)).json()
        late = get("/api/v1/cases?overdue=true", headers=city.h(Role.VIEWER)).json()["items"]
        url = f"/api/v1/work-orders/{order['order_no']}"
        (listed,) = get("/api/v1/work-orders", headers=city.h(Role.VIEWER)).json()["items"]
        one = get(url, headers=city.h(Role.VIEWER)).json()
        return (case["colour"], case["phases"][-1]["overdue"], [c["case_no"] for c in late],
                listed["colour"], one["colour"])  # fmt: skip

    assert seen() == ("green", False, [], "green", "green")
    city.clock[0] = max(dispatched["deadline_ms"], order["deadline_ms"]) / 1000 + 60
    assert seen() == ("red", True, [no], "red", "red")
    taken = city.client.post(
        f"/api/v1/work-orders/{order['order_no']}/actions",
        json={"action": "accept"},
        headers=city.h(Role.DISPATCHER),
    )
    assert taken.json()["colour"] == "red"


HOSTILE: list[tuple[str, list[tuple[str, str]], int]] = [
    ("no service_code", [("lat", "30.27"), ("long", "120.14")], 400),
    ("unknown service", [*{**GOOD, "service_code": "9999"}.items()], 400),
    ("lat without long", [("service_code", "0403"), ("lat", "30.27")], 400),
    ("no location", [("service_code", "0403"), ("description", "x")], 400),
    ("lat out of range", [*{**GOOD, "lat": "91"}.items()], 400),
    ("lat not finite", [*{**GOOD, "lat": "nan"}.items()], 400),
    ("lat not a number", [*{**GOOD, "lat": "north"}.items()], 400),
    ("description too long", [*GOOD.items(), ("description", "x" * 4001)], 400),
    ("media_url script", [*GOOD.items(), ("media_url", "javascript:alert(1)")], 400),
    ("media_url file", [*GOOD.items(), ("media_url", "file:///etc/passwd")], 400),
    ("email", [*GOOD.items(), ("email", "not-an-address")], 400),
    ("phone", [*GOOD.items(), ("phone", "call me; DROP TABLE cases")], 400),
    ("repeated field", [*GOOD.items(), ("service_code", "0111")], 400),
    ("control character", [*GOOD.items(), ("first_name", "a\x1bb")], 400),
    ("bidi override", [*GOOD.items(), ("description", "闻到燃气\u202e味")], 400),
    ("line separator", [*GOOD.items(), ("address_string", "文三路\u20291 号")], 400),
    ("newline in a name", [*GOOD.items(), ("first_name", "a\nb")], 400),
    ("name too long", [*GOOD.items(), ("last_name", "x" * 65)], 400),
]


@pytest.mark.parametrize(("what", "form", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_reports_are_refused_in_the_spec_format_and_store_nothing(
    city: City, what: str, form: list[tuple[str, str]], code: int
) -> None:
    spec_error(city.post(form), code)
    assert city.runtime.store.cases() == []


def test_a_report_needs_a_valid_key_and_a_form(city: City) -> None:
    c = city.client
    spec_error(c.post(URL, data=GOOD), 403)
    spec_error(c.post(URL, data={**GOOD, "api_key": "llk_not-a-key"}), 403)
    spec_error(c.post(URL, json={**GOOD, "api_key": city.keys[Role.REPORTER]}), 400)
    nul = f"api_key={city.keys[Role.REPORTER]}&service_code=%00&lat=1&long=1"
    assert "control" in spec_error(c.post(URL, content=nul, headers=FORM), 400)
    raw = b"service_code=\x00"
    spec_error(c.post(URL, content=raw, headers=FORM), 400)  # refused before the route
    xml = c.post("/open311/v2/requests.xml", data=GOOD)
    assert xml.status_code == 403
    assert b"<errors><error><code>403</code>" in xml.content
    assert city.runtime.store.cases() == []


def test_a_report_takes_a_reporter_or_admin_key_and_no_other(city: City) -> None:
    for role in Role:
        r = city.post(GOOD, role=role)
        if role in (Role.REPORTER, Role.ADMIN):
            assert r.status_code == 201, (role, r.text)
        else:
            assert "reporter key" in spec_error(r, 403), role
    assert len(city.runtime.store.cases()) == 2


def test_a_reporters_contact_is_shown_to_the_duties_that_need_it_only(city: City) -> None:
    no = city.post({**GOOD, "phone": "13800000000", "first_name": "张"}).json()[0][
        "service_request_id"
    ]
    contact = {"phone": "13800000000", "first_name": "张"}
    duty = {Role.INTAKE, Role.INSPECTOR, Role.SHIFT_LEAD, Role.DISPATCHER, Role.ADMIN}
    for role in set(Role) - {Role.REPORTER, Role.DEPARTMENT}:  # department: scoped, below
        one = city.client.get(f"/api/v1/cases/{no}", headers=city.h(role)).json()
        (listed,) = city.client.get("/api/v1/cases", headers=city.h(role)).json()["items"]
        want = contact if role in duty else None
        assert one["contact"] == listed["contact"] == want, role
    case = city.runtime.store.case(no)
    assert case is not None
    # The case's 主办 is registered (the routing table declares it): a key of that department.
    (code,) = [d.code for d in city.runtime.store.departments() if d.name == case.department]
    token = new_token()
    city.runtime.store.create_api_key(
        "部门", Role.DEPARTMENT.value, digest(token), display_prefix(token), 0, (code,)
    )
    seen = city.client.get(f"/api/v1/cases/{no}", headers={"X-API-Key": token}).json()
    assert (seen["case_no"], seen["contact"]) == (no, None)
    acted = city.act(no, "confirm", Role.INSPECTOR).json()  # an action's answer too
    assert acted["contact"] == contact
    assert city.act(no, "void", Role.SHIFT_LEAD, reason="重复").json()["contact"] == contact


@pytest.mark.parametrize("charset", ["gbk", "GB2312", "gb18030", "utf-8"])
def test_a_form_in_a_declared_chinese_charset_is_read_in_it(city: City, charset: str) -> None:
    text = "路边闻到燃气味"
    body = urlencode(
        {"api_key": city.keys[Role.REPORTER], **GOOD, "description": text}, encoding=charset
    )
    headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
    r = city.client.post(URL, content=body, headers=headers)
    assert r.status_code == 201, r.text
    (case,) = city.runtime.store.cases()
    assert case.title == text


@pytest.mark.parametrize(
    ("charset", "says"),
    [
        ("utf-16", "charset 'utf-16' is not supported"),
        ("base64", "charset 'base64' is not supported"),  # a codec, but not a text encoding
        (None, "not valid utf-8"),  # GBK bytes sent without saying so: not read as garbage
    ],
)
def test_a_form_in_another_charset_is_refused_naming_it(
    city: City, charset: str | None, says: str
) -> None:
    body = urlencode(
        {"api_key": city.keys[Role.REPORTER], **GOOD, "description": "燃气味"}, encoding="gbk"
    )
    declared = f"; charset={charset}" if charset else ""
    headers = {"Content-Type": f"application/x-www-form-urlencoded{declared}"}
    assert says in spec_error(city.client.post(URL, content=body, headers=headers), 400)
    assert city.runtime.store.cases() == []


def test_reports_are_rate_limited_per_key(city: City) -> None:
    for _ in range(30):
        assert city.post(GOOD).status_code == 201
    limited = city.post(GOOD)
    assert "30 reports a minute" in spec_error(limited, 429)
    assert limited.headers["Retry-After"] == "60"  # when the first of the 30 leaves the window
    city.clock[0] += 45.5
    assert city.post(GOOD).headers["Retry-After"] == "15"  # whole seconds, rounded up
    city.clock[0] -= 45.5
    assert city.post(GOOD, role=Role.ADMIN).status_code == 201  # another key
    city.clock[0] += 60
    assert city.post(GOOD).status_code == 201  # a minute later: allowed again
    assert len(city.runtime.store.cases()) == 32
    metrics = city.client.get("/metrics", headers=city.h(Role.VIEWER)).text
    assert "lifeline_open311_reports_refused_total 2" in metrics


def test_a_report_in_a_grid_whose_department_is_not_registered_goes_to_the_default(
    city: City,
) -> None:
    # Reproduced on main (review of issue 19, item 2): the grid file's department took the case
    # whether the registry held it or not; now it is passed over, counted and logged.
    assert city.runtime.cases.grids is not None
    grid, polygon = city.runtime.cases.grids.polygons[0]
    assert grid.department == "西溪街道城市管理办公室"
    assert city.runtime.store.remove_department("xixi-cgb", 0) is not None
    inside = polygon.representative_point()
    report = {"service_code": "0403", "lat": str(inside.y), "long": str(inside.x)}
    r = city.post({**report, "description": "燃气味"})
    assert r.status_code == 201, r.text
    ((answer),) = r.json()
    case = city.runtime.store.case(answer["service_request_id"])
    assert case is not None
    assert (case.grid, case.department) == (
        grid.code,
        city.runtime.cases.routing.default_department,
    )
    metrics = city.client.get("/metrics", headers=city.h(Role.VIEWER)).text
    assert "lifeline_routing_unregistered_total 1" in metrics


def test_a_report_outside_the_service_area_or_for_another_city_is_refused(city: City) -> None:
    assert city.runtime.cases.grids is not None
    _, polygon = city.runtime.cases.grids.polygons[0]
    inside = polygon.representative_point()
    form = {"service_code": "0403", "lat": str(inside.y), "long": str(inside.x)}
    assert "service area" in spec_error(city.post({**form, "lat": "0", "long": "0"}), 400)
    assert "jurisdiction_id" in spec_error(city.post({**form, "jurisdiction_id": "zz"}), 400)
    gets = [
        "/open311/v2/services.json",
        "/open311/v2/requests.xml",
        "/open311/v2/services/0403.json",
    ]
    for path in gets:
        r = city.client.get(path, params={"jurisdiction_id": "zz"})
        assert r.status_code == 400, (path, r.text)
        assert "jurisdiction_id" in r.text
    assert city.runtime.store.cases() == []
    # The district's own area code is served, as is no jurisdiction_id at all.
    routing = city.runtime.cases.routing
    city.runtime.cases.routing = routing.model_copy(update={"district": "330106"})
    assert city.post({**form, "jurisdiction_id": "330106"}).status_code == 201
    assert city.post(form).status_code == 201
    for path in gets:
        assert city.client.get(path, params={"jurisdiction_id": "330106"}).status_code == 200
    assert "330106" in spec_error(city.post({**form, "jurisdiction_id": "310104"}), 400)


def test_answers_name_the_grids_street_and_expect_nothing_once_closed(city: City) -> None:
    grids = city.runtime.cases.grids
    assert grids is not None
    grid, polygon = grids.polygons[0]
    inside = polygon.representative_point()
    r = city.post({"service_code": "0403", "lat": str(inside.y), "long": str(inside.x)})
    no = r.json()[0]["service_request_id"]
    (req,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert req["address"] == f"{grid.street}{grid.community}" != ""
    assert (req["lat"], req["long"]) == (inside.y, inside.x)  # the reported point, not the grid's
    assert req["expected_datetime"] is not None  # 受理 has its time limit
    assert city.act(no, "void", Role.SHIFT_LEAD, reason="重复").status_code == 200
    (closed,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert (closed["status"], closed["expected_datetime"]) == ("closed", None)
    # An address alone places nothing: no grid, and no made-up point.
    by_address = city.post({"service_code": "0403", "address_string": "文三路 1 号"})
    other = by_address.json()[0]["service_request_id"]
    (unplaced,) = city.client.get(f"/open311/v2/requests/{other}.json").json()
    assert (unplaced["lat"], unplaced["long"], unplaced["address"]) == (None, None, "文三路 1 号")
