"""The console and /docs over HTTP: every file they reference is served here, with the policy."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline.collector.api import create_app
from lifeline.collector.api.routes.cases import CaseAction
from lifeline.collector.models import Role
from lifeline.collector.runtime import CollectorConfig, ConsoleConfig
from tests.integration.test_api_http import Api, running_api, seed

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(f"sqlite:///{tmp_path}/api.db") as a:
        seed(a)
        yield a


def referenced(html: str) -> list[str]:
    return re.findall(r"(?:src|href)=\"([^\"]+)\"", html)


def test_docs_and_console_reference_only_files_the_collector_serves(api: Api) -> None:
    """/docs once loaded Swagger UI from a CDN: blank without the internet."""
    for page in ("/docs", "/console"):
        resp = api.client.get(page)
        assert resp.status_code == 200
        policy = resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'self';" in policy
        assert resp.headers["x-frame-options"] == "DENY"
        refs = referenced(resp.text)
        assert refs, page
        for ref in refs:
            if ref == "data:,":
                continue  # the empty favicon, so the browser asks for none
            assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
            got = api.client.get(ref)
            assert got.status_code == 200, ref
            kind = "javascript" if ref.endswith(".js") else "css"
            assert kind in got.headers["content-type"], ref
    assert "SwaggerUIBundle" in api.client.get("/console/docs.js").text
    assert api.client.get("/openapi.json").json()["info"]["title"] == "Lifeline collector"
    # ReDoc would come from a CDN too: it is not offered rather than blank.
    assert api.client.get("/redoc").status_code == 404


def test_only_listed_vendor_files_are_served(api: Api) -> None:
    lic = api.client.get("/console/vendor/leaflet/LICENSE")
    assert lic.status_code == 200
    assert "text/plain" in lic.headers["content-type"]
    for path in (
        "/console/vendor/leaflet/MANIFEST.json",
        "/console/vendor/leaflet/..%2F..%2Fconsole.py",
        "/console/vendor/../api/app.py",
        "/console/vendor/nothing/LICENSE",
        "/console/console.html",
    ):
        resp = api.client.get(path)
        assert resp.status_code in (404, 422), path
        assert resp.headers["content-type"] == "application/problem+json", path


def test_a_configured_tile_server_is_named_in_the_policy_and_the_console_config(
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    config = CollectorConfig(
        db_url=f"sqlite:///{tmp_path}/c.db",
        ingest=None,
        console=ConsoleConfig("https://{s}.tiles.example.cn/{z}/{x}/{y}.png", "GCJ-02"),
    )
    with TestClient(create_app(config)) as client:
        policy = client.get("/console").headers["content-security-policy"]
        assert "img-src 'self' data: https://*.tiles.example.cn;" in policy
        assert client.get("/console/config.json").json() == {
            "tiles_url": "https://{s}.tiles.example.cn/{z}/{x}/{y}.png",
            "tiles_datum": "GCJ-02",
            "tiles_max_zoom": 19,
        }


def test_readings_newest_first_give_a_chart_the_latest_window(api: Api) -> None:
    """A chart asked for `limit` readings and got the oldest: the first 90 s of the day."""
    base = "/api/v1/readings?device=gas-7&point=gas_concentration"
    newest = api.client.get(f"{base}&order=desc&limit=5", headers=api.h()).json()
    assert [r["value"] for r in newest] == [29.0, 28.0, 27.0, 26.0, 25.0]
    oldest = api.client.get(f"{base}&limit=5", headers=api.h()).json()
    assert [r["value"] for r in oldest] == [0.0, 1.0, 2.0, 3.0, 4.0]  # the default is unchanged
    assert api.client.get(f"{base}&order=sideways", headers=api.h()).status_code == 422


def test_a_client_learns_its_role_units_limits_and_allowed_case_actions(api: Api) -> None:
    reads = set(Role) - {Role.REPORTER}  # a citizen app's key: not even /me
    me = {r: api.client.get("/api/v1/me", headers=api.h(r)).json() for r in reads}
    assert api.client.get("/api/v1/me", headers=api.h(Role.REPORTER)).status_code == 403
    for role, doc in me.items():
        assert (doc["name"], doc["role"]) == (f"{role.value}-1", role.value)
    assert me[Role.VIEWER]["case_actions"] == []
    assert me[Role.LEADER]["case_actions"] == []
    assert not me[Role.VIEWER]["acknowledge"]
    assert me[Role.OPERATOR]["acknowledge"]
    assert "dispatch" in me[Role.DISPATCHER]["case_actions"]
    assert "accept" not in me[Role.DISPATCHER]["case_actions"]  # 立案 is the 值班长's
    assert "accept" in me[Role.SHIFT_LEAD]["case_actions"]
    assert me[Role.ADMIN]["case_actions"] == sorted(a.value for a in CaseAction)
    profiles = {p["name"]: p for p in api.client.get("/api/v1/profiles", headers=api.h()).json()}
    points = {pt["name"]: pt for pt in profiles["gas_detector"]["points"]}
    gas = points["gas_concentration"]
    assert gas["unit"] == "%LEL"
    assert {(r["alarm_type"], r["limit"]) for r in gas["rules"]} >= {("hi", 20.0), ("hihi", 50.0)}
    assert points["sensor_fault"]["rules"][0]["limit"] is None  # a state rule has none
    case = api.client.get("/api/v1/cases", headers=api.h()).json()["items"][0]
    assert case["actions"], case
    for action in case["actions"]:
        assert action not in ("upgrade", "rework", "auto_close")  # the system's own


def test_the_grid_registry_is_served_as_geojson(api: Api) -> None:
    doc = api.client.get("/api/v1/grids", headers=api.h()).json()
    assert doc["type"] == "FeatureCollection"
    registry = api.runtime.cases.grids
    assert registry is not None  # the shipped routing table names the demo district's grids
    assert [f["properties"]["code"] for f in doc["features"]] == [g.code for g in registry.grids]
    first = doc["features"][0]
    assert first["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert first["properties"]["departments"] == list(registry.grids[0].departments)
