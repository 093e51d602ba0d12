"""Open311 GeoReport v2 conformance against real stores (SQLite and PostgreSQL): anonymous
reads, JSON and XML, discovery, service definitions, comma lists, the 90-day window applied in
the query, the spec's error format, service_notice in words, times with the +08:00 offset."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import Point
from typer.testing import CliRunner

from lifeline.collector.api import create_app
from lifeline.collector.cases.workflow import Case, CaseState, Place
from lifeline.collector.cli import app as collector_cli
from lifeline.collector.runtime import CollectorConfig, Runtime

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = 1_764_489_600_000  # 2025-11-30T08:00:00Z, 16:00 in the city (+08:00)
BASE = Case(
    case_no="",
    kind="事件",
    subcategory="0403",
    problem="gas",
    asset=None,  # the case is its own subject: many open ones may coexist
    device=None,
    state=CaseState.DISPATCHED,
    urgency="紧急",
    department="gas",
    grid=None,
    created_ms=NOW,
    updated_ms=NOW,
    deadline_ms=NOW + 2 * 3_600_000,
    timed_from_ms=NOW,
    allowed_ms=2 * 3_600_000,
    title="燃气管道破裂",
    location=Place(121.437, 31.187, "CGCS2000", "漕溪北路 88 号", "asset"),
)


def add(rt: Runtime, case_no: str, age_ms: int, **changes: object) -> None:
    case = replace(BASE, case_no=case_no, created_ms=NOW - age_ms, **changes)  # type: ignore[arg-type]
    rt.store.save_case(case, [], expect_state=None)


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/o.db"
    )
    rt = Runtime(CollectorConfig(db_url=url), clock=lambda: NOW / 1000)
    try:
        rt.start()
        rt.store.put_department("gas", "燃气公司", NOW)
        add(rt, "C-NEW", 0)
        add(rt, "C-CLOSED", DAY, state=CaseState.CLOSED, subcategory="0111", kind="部件")
        for i in range(6):  # newer than the two below, so a fetch of 4×limit never reaches them
            add(rt, f"C-MID{i}", 5 * DAY + i)
        add(rt, "C-OLD1", 10 * DAY)
        add(rt, "C-OLD2", 10 * DAY + 1)
        add(rt, "C-ANCIENT", 91 * DAY)
        with TestClient(create_app(CollectorConfig(db_url=url), rt)) as c:
            yield c
    finally:
        rt.close()


def parse(content: bytes) -> ET.Element:
    # Our own server's answer, not untrusted input: the standard parser is fine here.
    return ET.fromstring(content)  # noqa: S314


def ids(resp_json: list[dict[str, object]]) -> list[object]:
    return [r["service_request_id"] for r in resp_json]


def assert_error(resp: object, code: int, xml: bool = False) -> str:
    from httpx import Response

    assert isinstance(resp, Response)
    assert resp.status_code == code, resp.text
    if xml:
        assert resp.headers["content-type"].startswith("text/xml")
        root = parse(resp.content)
        assert root.tag == "errors"
        (err,) = root.findall("error")
        assert err.findtext("code") == str(code)
        description = err.findtext("description")
        assert description
        return description
    assert resp.headers["content-type"] == "application/json"
    ((body),) = resp.json()
    assert body["code"] == code
    assert isinstance(body["description"], str)
    assert body["description"]
    return body["description"]


def test_reads_are_anonymous_json_and_xml(client: TestClient) -> None:
    services = client.get("/open311/v2/services.json")
    assert services.status_code == 200
    assert {"0111", "0403"} <= {s["service_code"] for s in services.json()}
    root = parse(client.get("/open311/v2/services.xml").content)
    assert root.tag == "services"
    assert {"0111", "0403"} <= {s.findtext("service_code") for s in root.findall("service")}
    assert client.get("/open311/v2/services/0403.json").json() == {
        "service_code": "0403",
        "attributes": [],
    }
    definition = parse(client.get("/open311/v2/services/0403.xml").content)
    assert (definition.tag, definition.findtext("service_code")) == ("service_definition", "0403")

    (req,) = client.get("/open311/v2/requests/C-NEW.json").json()
    assert req["requested_datetime"] == "2025-11-30T16:00:00+08:00"
    assert req["expected_datetime"] == "2025-11-30T18:00:00+08:00"
    assert (req["lat"], req["long"]) == (31.187, 121.437)
    assert req["agency_responsible"] == "燃气公司"
    assert req["service_notice"] == "已派遣至燃气公司，2小时内处置"
    resp = client.get("/open311/v2/requests/C-NEW.xml")
    assert resp.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = parse(resp.content)
    assert root.tag == "service_requests"
    (el,) = root.findall("request")
    assert el.findtext("service_notice") == req["service_notice"]
    assert el.findtext("lat") == "31.187"
    assert el.find("media_url") is not None


def test_a_case_without_a_place_is_placed_inside_its_grid(client: TestClient) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.cases.grids is not None
    grid, polygon = rt.cases.grids.polygons[0]
    add(rt, "C-GRID", 0, location=Place(), grid=grid.code)
    add(rt, "C-NOWHERE", 0, location=Place(), grid=None)
    (req,) = client.get("/open311/v2/requests/C-GRID.json").json()
    assert polygon.contains(Point(req["long"], req["lat"]))
    assert req["address"] == f"{grid.street}{grid.community}"
    (nowhere,) = client.get("/open311/v2/requests/C-NOWHERE.json").json()
    assert (nowhere["lat"], nowhere["long"], nowhere["address"]) == (None, None, "")


def test_discovery_names_this_endpoint_and_both_formats(client: TestClient) -> None:
    # Whatever Host a client sends, the URL is not built from it (a cached discovery
    # document would send other apps there): relative without a configured public_url.
    doc = client.get("/open311/v2/discovery.json", headers={"Host": "evil.example"}).json()
    (endpoint,) = doc["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == "/open311/v2"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    root = parse(client.get("/open311/v2/discovery.xml").content)
    formats = root.findall("endpoints/endpoint/formats/format")
    assert {f.text for f in formats} == {"text/xml", "application/json"}
    assert root.findtext("endpoints/endpoint/url") == "/open311/v2"


def test_discovery_names_the_configured_public_url(tmp_path: Path) -> None:
    config = CollectorConfig(
        db_url=f"sqlite:///{tmp_path}/p.db", public_url="https://lifeline.example.gov.cn/"
    )
    rt = Runtime(config, clock=lambda: NOW / 1000)
    try:
        rt.start()
        with TestClient(create_app(config, rt)) as c:
            doc = c.get("/open311/v2/discovery.json", headers={"Host": "evil.example"}).json()
    finally:
        rt.close()
    assert doc["endpoints"][0]["url"] == "https://lifeline.example.gov.cn/open311/v2"


@pytest.mark.parametrize(
    "url",
    ["ftp://x.cn", "https://", "https://u:p@x.cn", "https://x.cn/?a=1", "https://x.cn/#f", "x.cn"],
)
def test_a_public_url_that_is_no_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        CollectorConfig(public_url=url)


def test_collector_run_refuses_a_public_url_that_is_no_base_url(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("public_url: https://evil@lifeline.example.gov.cn\n", encoding="utf-8")
    r = CliRunner().invoke(collector_cli, ["run", "--config", str(config)])
    assert r.exit_code == 2, r.output
    assert "public_url" in r.stderr


def test_date_filters_run_in_the_query_so_no_match_is_missed(client: TestClient) -> None:
    # The old façade fetched 4×limit newest cases, then filtered by date: with limit=1 it
    # saw only C-NEW, C-CLOSED and two C-MID and answered [] here.
    got = client.get(
        "/open311/v2/requests.json",
        params={
            "start_date": "2025-11-19T00:00:00+08:00",
            "end_date": "2025-11-21T00:00:00+08:00",
            "limit": "1",
        },
    ).json()
    assert ids(got) == ["C-OLD1", "C-OLD2"]


def test_the_default_window_is_the_past_90_days(client: TestClient) -> None:
    everything = ids(client.get("/open311/v2/requests.json").json())
    assert "C-ANCIENT" not in everything
    assert everything[:2] == ["C-NEW", "C-CLOSED"]
    assert len(everything) == 10
    old = client.get("/open311/v2/requests.json?end_date=2025-09-02T00:00:00Z").json()
    assert ids(old) == ["C-ANCIENT"]
    wide = "/open311/v2/requests.json?start_date=2025-01-01T00:00:00Z&end_date=2025-12-01T00:00:00Z"
    assert "90 days" in assert_error(client.get(wide), 400)
    backwards = "start_date=2025-11-02T00:00:00Z&end_date=2025-11-01T00:00:00Z"
    assert_error(client.get(f"/open311/v2/requests.xml?{backwards}"), 400, xml=True)


def test_an_answer_holds_at_most_1000_requests_the_newest(client: TestClient) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    for i in range(991):  # with the 10 of the fixture: 1 001 in the default window
        add(rt, f"C-BULK{i:04d}", 20 * DAY + i)
    got = ids(client.get("/open311/v2/requests.json").json())
    assert len(got) == 1000
    assert got[:2] == ["C-NEW", "C-CLOSED"]
    assert "C-BULK0990" not in got  # the oldest is the one left out


def test_service_code_and_status_take_comma_lists(client: TestClient) -> None:
    get = client.get
    assert ids(get("/open311/v2/requests.json?service_code=0111").json()) == ["C-CLOSED"]
    both = get("/open311/v2/requests.json?service_code=0111,0403").json()
    assert len(both) == 10
    assert ids(get("/open311/v2/requests.json?status=closed").json()) == ["C-CLOSED"]
    assert len(get("/open311/v2/requests.json?status=open,closed").json()) == 10
    assert "C-CLOSED" not in ids(get("/open311/v2/requests.json?status=open").json())
    # service_request_id overrides every other filter, as the spec says
    picked = get("/open311/v2/requests.json?service_request_id=C-ANCIENT,C-NEW&status=closed")
    assert ids(picked.json()) == ["C-ANCIENT", "C-NEW"]
    # a request named twice (or 1 000 times) is answered once
    twice = get("/open311/v2/requests.json?service_request_id=C-NEW,C-OLD1,C-NEW,C-NEW")
    assert ids(twice.json()) == ["C-NEW", "C-OLD1"]
    many = ",".join(["C-OLD1", "C-NEW"] * 500)
    assert ids(get(f"/open311/v2/requests.json?service_request_id={many}").json()) == [
        "C-OLD1",
        "C-NEW",
    ]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/open311/v2/requests.json?service_code=abcd", 400),
        ("/open311/v2/requests.json?service_code=0403,1", 400),
        ("/open311/v2/requests.json?status=pending", 400),
        ("/open311/v2/requests.json?start_date=yesterday", 400),
        ("/open311/v2/requests.json?end_date=" + "9" * 41, 400),
        ("/open311/v2/requests/nope.json", 404),
        # an id or code no request or service can have is not found (the spec's 404), not
        # a bad parameter: 400 is for a missing one
        ("/open311/v2/requests/" + "x" * 65 + ".json", 404),
        ("/open311/v2/requests/a%20b.json", 404),
        ("/open311/v2/tokens/" + "t" * 65 + ".json", 404),
        ("/open311/v2/services/9999.json", 404),
        ("/open311/v2/services/0403.xml.json", 404),  # a doubled suffix: no such code
        ("/open311/v2/services/" + "1" * 300 + ".json", 404),
        ("/open311/v2/services.csv", 404),
        ("/open311/v2/requests.json?status=%00", 400),  # refused before any route
        ("/open311/v2/no-such-resource.json", 404),  # no route at all
    ],
)
def test_bad_requests_get_the_spec_error_format(client: TestClient, path: str, code: int) -> None:
    assert_error(client.get(path), code)
    if path.endswith(".json") or ".json?" in path:
        assert_error(client.get(path.replace(".json", ".xml", 1)), code, xml=True)
