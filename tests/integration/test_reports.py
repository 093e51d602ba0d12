"""上报 over HTTP (POST /api/v1/cases) on SQLite and PostgreSQL: a 监督员's report goes through
受理 to 结案 with its source; a 受理员's 12345 intake needs 核实; a retry with the same
Idempotency-Key answers the same case; other roles are refused as the permission matrix says;
hostile bodies are refused with a problem and store nothing."""

from __future__ import annotations

from typing import Any

import pytest
import shapely

from lifeline.collector.models import Role
from tests.integration import test_open311_reports as open311
from tests.integration.test_api_http import problem_of
from tests.integration.test_grid_places import GCJ02_RAW_IN_A, A, B
from tests.integration.test_open311_reports import NOW, City

pytestmark = pytest.mark.integration
city = open311.city  # the same city: SQLite and PostgreSQL, a key of every role, a clock

URL = "/api/v1/cases"
HOUR_MS = 3_600_000
PHOTOS = "https://photos.example.org"


def inside(city: City) -> tuple[str, float, float]:
    """A grid's code and a point (lon, lat) inside its polygon."""
    assert city.runtime.cases.grids is not None
    grid, polygon = city.runtime.cases.grids.polygons[0]
    point = polygon.representative_point()
    return grid.code, point.x, point.y


def good(city: City, **more: Any) -> dict[str, Any]:
    _, lon, lat = inside(city)
    body = {"kind": "部件", "subcategory": "0111", "lon": lon, "lat": lat, "datum": "WGS84",
            "description": "燃气井盖破损", "media_url": f"{PHOTOS}/cover.jpg"}  # fmt: skip
    return {**body, **more}


def report(city: City, body: dict[str, Any], role: Role, **headers: str) -> Any:
    return city.client.post(URL, json=body, headers={**city.h(role), **headers})


def stats_by_source(city: City) -> dict[str, int]:
    window = {"from": int(NOW * 1000), "to": int(NOW * 1000) + 100 * HOUR_MS, "group_by": "source"}
    r = city.client.get("/api/v1/stats", params=window, headers=city.h(Role.LEADER))
    assert r.status_code == 200, r.text
    return {g["key"]: g["reported"] for g in r.json()["groups"]}


def test_an_inspectors_report_goes_from_受理_through_to_结案(city: City) -> None:
    grid, _, _ = inside(city)
    r = report(city, good(city), Role.INSPECTOR)
    assert r.status_code == 201, r.text
    case = r.json()
    no = case["case_no"]
    assert r.headers["location"] == f"/api/v1/cases/{no}"
    assert (case["source"], case["state"], case["grid"]) == ("监督员", "受理", grid)
    assert no.startswith(grid[:6])  # numbered in the grid's area
    assert case["media_url"] == "https://photos.example.org/cover.jpg"
    assert case["location"]["datum"] == "WGS84"
    assert case["received_by"] is None  # waits for the 受理员
    expected, _ = city.runtime.cases.routing.department_for(
        "部件",
        "0111",
        city.runtime.cases.grids.get(grid) if city.runtime.cases.grids else None,
        city.runtime.cases.directory(),
    )
    assert case["department"] == expected == "西溪街道城市管理办公室"  # the grid's, registered
    # The reporter is the 监督员: there is nothing to 核实, the next step is the 受理.
    assert {"confirm", "receive", "accept"} & set(case["actions"]) == {"receive"}
    problem_of(city.act(no, "confirm", Role.INSPECTOR), 422)
    steps = [
        ("receive", Role.INTAKE, {}),
        ("accept", Role.SHIFT_LEAD, {}),
        ("dispatch", Role.DISPATCHER, {}),
        ("start", Role.ADMIN, {}),  # for the 专业部门 (the matrix: test_duties.py)
        ("feedback", Role.ADMIN, {"note": "已更换井盖"}),
        ("verify", Role.INTAKE, {}),
        ("check", Role.INSPECTOR, {"note": "现场核查已修复"}),
        ("close", Role.SHIFT_LEAD, {}),
    ]
    for action, role, body in steps:
        city.clock[0] += 600
        acted = city.act(no, action, role, **body)
        assert acted.status_code == 200, (action, acted.text)
    detail = city.client.get(f"{URL}/{no}", headers=city.h(Role.VIEWER)).json()
    assert (detail["state"], detail["source"], detail["closure"]) == ("结案", "监督员", "处置完成")
    first = detail["audit"][0]
    assert (first["action"], first["actor"], first["role"]) == (
        "report",
        "inspector-1",
        "inspector",
    )
    assert first["key_id"] is not None
    assert first["note"] == "监督员上报"
    assert [a["action"] for a in detail["audit"]] == ["report", *(s[0] for s in steps)]
    assert [p["stage"] for p in detail["phases"]] == ["受理", "立案", "派遣", "处置", "核查"]
    assert stats_by_source(city) == {"监督员": 1}
    (public,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert public["service_notice"] == "已结案"


def test_a_report_in_gcj02_is_in_the_grid_where_it_truly_stands(city: City) -> None:
    # 高德's point for a spot in grid B: compared raw with the polygons it stands in grid A.
    grids = city.runtime.cases.grids
    assert grids is not None
    assert grids.locate(*GCJ02_RAW_IN_A, datum="WGS84") == grids.get(A)
    lon, lat = GCJ02_RAW_IN_A
    r = report(city, good(city, lon=lon, lat=lat, datum="GCJ-02"), Role.INSPECTOR)
    assert r.status_code == 201, r.text
    assert r.json()["grid"] == B
    assert r.json()["location"]["datum"] == "GCJ-02"  # kept as reported


def test_a_12345_call_needs_核实_and_its_工单号_is_one_case(city: City) -> None:
    call = good(
        city,
        kind="事件",
        subcategory="0403",
        description="市民来电：路边闻到燃气味",
        hotline={"order_no": "12345-20251130-0042",
                 "caller": {"name": "王先生", "phone": "138 0000 0000"}},
    )  # fmt: skip
    r = report(city, call, Role.INTAKE)
    assert r.status_code == 201, r.text
    case = r.json()
    no = case["case_no"]
    assert (case["source"], case["state"]) == ("12345", "受理")
    assert case["contact"] == {"name": "王先生", "phone": "138 0000 0000"}
    assert {"confirm", "receive", "accept"} & set(case["actions"]) == {"confirm"}
    (public,) = city.client.get(f"/open311/v2/requests/{no}.json").json()
    assert public["service_notice"] == "已上报，待核实"
    assert "王先生" not in str(public)  # the caller is never published
    # The same 工单 entered again (by another 受理员, or admin) is the case it already is.
    again = report(city, call, Role.ADMIN)
    assert (again.status_code, again.json()["case_no"]) == (200, no)
    other = {**call, "description": "另一个说法"}
    assert no in problem_of(report(city, other, Role.INTAKE), 422)["detail"]
    # A 监督员 核实s it on site, then the 受理员 receives it and the 值班长 registers it.
    assert "核实" in problem_of(city.act(no, "receive", Role.INTAKE), 422)["detail"]
    for action, role in [("confirm", Role.INSPECTOR), ("receive", Role.INTAKE),
                         ("accept", Role.SHIFT_LEAD)]:  # fmt: skip
        acted = city.act(no, action, role)
        assert acted.status_code == 200, (action, acted.text)
    detail = city.client.get(f"{URL}/{no}", headers=city.h(Role.VIEWER)).json()
    assert detail["audit"][0]["note"] == "12345 热线工单 12345-20251130-0042"
    assert (detail["state"], detail["confirmed_by"]) == ("立案", "inspector-1")
    assert stats_by_source(city) == {"12345": 1}


def test_a_retry_with_the_same_idempotency_key_answers_the_same_case(city: City) -> None:
    body = good(city)
    first = report(city, body, Role.INSPECTOR, **{"Idempotency-Key": "8e03978e-40d5-43e8"})
    assert first.status_code == 201, first.text
    no = first.json()["case_no"]
    city.clock[0] += 30  # the 城管通 retries after a timeout
    for header in ("8e03978e-40d5-43e8", '"8e03978e-40d5-43e8"'):  # bare, or RFC 8941 string
        again = report(city, body, Role.INSPECTOR, **{"Idempotency-Key": header})
        assert (again.status_code, again.json()["case_no"]) == (200, no), again.text
    by_id = report(city, {**body, "report_id": "8e03978e-40d5-43e8"}, Role.INSPECTOR)
    assert (by_id.status_code, by_id.json()["case_no"]) == (200, no)
    changed = {**body, "description": "另一处井盖"}
    detail = problem_of(
        report(city, changed, Role.INSPECTOR, **{"Idempotency-Key": "8e03978e-40d5-43e8"}), 422
    )["detail"]
    assert no in detail
    both = report(city, {**body, "report_id": "b"}, Role.INSPECTOR, **{"Idempotency-Key": "a"})
    problem_of(both, 422)
    # Ids are the key's own: another 监督员's same id is another report.
    theirs = report(city, body, Role.ADMIN, **{"Idempotency-Key": "8e03978e-40d5-43e8"})
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["case_no"] != no
    assert report(city, body, Role.INSPECTOR).status_code == 201  # no id: a new report
    assert len(city.runtime.store.cases()) == 3
    audits = city.runtime.store.audit(no)
    assert [a.action for a in audits] == ["report"]


def test_only_a_监督员_a_受理员_or_admin_reports(city: City) -> None:
    hotline = {"hotline": {"order_no": "A1"}}
    allowed = {Role.INSPECTOR: {}, Role.INTAKE: hotline, Role.ADMIN: {}}
    for role in Role:
        r = report(city, good(city, **allowed.get(role, {})), role)
        if role in allowed:
            assert r.status_code == 201, (role, r.text)
            continue
        detail = problem_of(r, 403)["detail"]
        if role is Role.REPORTER:  # a 公众 app's key posts Open311 reports and nothing else
            assert "reporter key" in detail, detail
            continue
        assert "report (上报) needs one of: admin" in detail, detail
        assert f"is {role.value}" in detail, detail
    assert {c.source for c in city.runtime.store.cases()} == {"监督员", "12345"}
    # A duty's report fits the duty: a 12345 call only from a 受理员, a 受理员's only 12345.
    problem_of(report(city, good(city, hotline={"order_no": "A2"}), Role.INSPECTOR), 422)
    problem_of(report(city, good(city), Role.INTAKE), 422)
    problem_of(city.client.post(URL, json=good(city)), 401)
    assert len(city.runtime.store.cases()) == 3


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("unknown 小类", {"subcategory": "9999"}),
    ("小类 of the other kind", {"kind": "事件", "subcategory": "0111"}),
    ("小类 not four digits", {"subcategory": "01111"}),
    ("kind unknown", {"kind": "其他"}),
    ("lat out of range", {"lat": 91}),
    ("lon out of range", {"lon": -180.5}),
    ("lat without lon", {"lon": None}),
    ("no place", {"lon": None, "lat": None}),
    ("datum unknown", {"datum": "EPSG:3857"}),
    ("description too long", {"description": "x" * 4001}),
    ("description blank", {"description": "  "}),
    ("control character", {"description": "井盖\x1b[31m破损"}),
    ("bidi override", {"description": "井盖\u202e破损"}),  # reorders what a reader sees
    ("bidi isolate", {"description": "井盖\u2066破损"}),
    ("line separator in the address", {"address": "文三路\u20281 号"}),
    ("newline in the caller's name", {"hotline": {"order_no": "X2", "caller": {"name": "张\n三"}}}),
    ("address too long", {"address": "路" * 201}),
    ("media_url script", {"media_url": "javascript:alert(1)"}),
    ("media_url too long", {"media_url": "https://x.org/" + "a" * 2000}),
    ("unknown field", {"severity": 1}),
    ("report_id with spaces", {"report_id": "a b"}),
    ("report_id too long", {"report_id": "a" * 129}),
    ("caller phone", {"hotline": {"order_no": "X1", "caller": {"phone": "1; DROP TABLE"}}}),
    ("工单号 with a quote", {"hotline": {"order_no": "X'1"}}),
]


@pytest.mark.parametrize(("what", "change"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_reports_are_refused_with_a_problem_and_store_nothing(
    city: City, what: str, change: dict[str, Any]
) -> None:
    problem_of(report(city, good(city, **change), Role.ADMIN), 422)
    assert city.runtime.store.cases() == []


def test_hostile_headers_and_bodies_are_refused(city: City) -> None:
    h = city.h(Role.INSPECTOR)
    for key in (b"a b", b"x" * 200, "ü".encode(), b'"a'):
        headers: dict[str, str | bytes] = {**h, "Idempotency-Key": key}
        r = city.client.post(URL, json=good(city), headers=headers)
        assert r.status_code == 422, (key, r.text)
    nan = b'{"kind": "\xe9\x83\xa8\xe4\xbb\xb6", "subcategory": "0111", "lat": NaN, "lon": 1,' \
          b' "description": "x"}'  # fmt: skip
    r = city.client.post(URL, content=nan, headers={**h, "Content-Type": "application/json"})
    problem_of(r, 422)
    problem_of(city.client.post(URL, content=b"[", headers=h), 422)
    assert city.runtime.store.cases() == []


def test_the_header_report_id_and_工单号_name_one_retry_id(city: City) -> None:
    call = good(city, kind="事件", subcategory="0403", hotline={"order_no": "ADM-1"})
    # A header that differs from the 工单号 was ignored: the old case answered a new id.
    differs = report(city, call, Role.INTAKE, **{"Idempotency-Key": "zzz"})
    detail = problem_of(differs, 422)["detail"]
    assert all(word in detail for word in ("Idempotency-Key", "order_no", "'zzz'"))
    assert (
        "report_id"
        in problem_of(report(city, {**call, "report_id": "x"}, Role.INTAKE), 422)["detail"]
    )
    assert city.runtime.store.cases() == []  # stores nothing
    first = report(
        city, {**call, "report_id": "ADM-1"}, Role.INTAKE, **{"Idempotency-Key": "ADM-1"}
    )
    assert first.status_code == 201, first.text
    no = first.json()["case_no"]
    # Any name of the id finds the case: the 工单号 alone, or with the header.
    for headers in ({}, {"Idempotency-Key": '"ADM-1"'}):
        again = report(city, call, Role.ADMIN, **headers)
        assert (again.status_code, again.json()["case_no"]) == (200, no), again.text
    # A 监督员's header and report_id differ: 422 naming both.
    both = report(city, good(city, report_id="b"), Role.INSPECTOR, **{"Idempotency-Key": "a"})
    detail = problem_of(both, 422)["detail"]
    assert all(word in detail for word in ("Idempotency-Key", "report_id"))
    assert len(city.runtime.store.cases()) == 1


def test_a_place_outside_the_service_area_is_refused(city: City) -> None:
    grids = city.runtime.cases.grids
    assert grids is not None
    # Where the district's grids reach furthest east, and a little beyond: GPS error at the
    # edge of the district is still served; the sea off Africa, or the next city, is not.
    edge = max(
        (p for _, g in grids.polygons for p in shapely.get_coordinates(g)), key=lambda p: p[0]
    )
    for lon, lat in [(0.0, 0.0), (edge[0] + 0.05, edge[1]), (-edge[0], edge[1])]:
        refused = report(city, good(city, lon=lon, lat=lat), Role.INSPECTOR)
        assert "service area" in problem_of(refused, 422)["detail"]
    assert city.runtime.store.cases() == []
    near = report(city, good(city, lon=edge[0] + 0.001, lat=edge[1]), Role.INSPECTOR)
    assert near.status_code == 201, near.text
    by_address = report(city, good(city, lon=None, lat=None, address="文三路 1 号"), Role.INSPECTOR)
    assert by_address.status_code == 201, by_address.text
