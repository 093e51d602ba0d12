"""Point-in-polygon places every device and asset in its 单元网格 (issue 19 §3), on SQLite and
PostgreSQL: an asset when it is written, a device at each birth (a moved device again), both
again when the collector loads its grid registry; the asset and device lists filter by grid.

The grids are the demo district's (config/grids/330106.geojson, the shipped routing table's):
A and B side by side."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lifeline.collector.api.app import create_app
from lifeline.collector.assets import Asset
from lifeline.collector.cli import app as collector_cli
from lifeline.collector.models import Accepted, Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.collector.store import Store, open_store
from lifeline.wire import Birth, DeviceInfo, Kind, Location, TopicParts
from tests.integration.test_api_http import add_keys, problem_of

pytestmark = pytest.mark.integration

A, B = "33010600100101", "33010600100201"
IN_A, IN_B, NOWHERE = (120.140, 30.277), (120.134, 30.277), (121.0, 31.0)
T0 = 1_795_000_000_000


def asset(serial: int, grid: str = "", at: tuple[float, float] | None = None) -> Asset:
    lon, lat = at if at else (None, None)
    return Asset(code=f"33010601110000{serial:02}", owner="燃气集团", grid=grid, lon=lon, lat=lat)


IN_A_AS_A = asset(1, A, IN_A)
ON_NO_GRID = asset(2, "", NOWHERE)
SAYS_B_STANDS_IN_A = asset(3, B, IN_A)
SAYS_B_NO_POINT = asset(4, B)


def birth(store: Store, at_a: tuple[float, float], n: int = 0) -> None:
    """A birth of gateway gw: dev-a at `at_a`, dev-x outside every grid, dev-n nowhere known."""
    devices = (
        DeviceInfo("dev-a", "gas_detector", "gas", True, location=Location(*at_a, "CGCS2000", "")),
        DeviceInfo(
            "dev-x", "gas_detector", "gas", True, location=Location(*NOWHERE, "CGCS2000", "")
        ),
        DeviceInfo("dev-n", "gas_detector", "gas", True),
    )
    msg = Birth("gw", "s", n, T0 + n, "1", "h", devices)
    store.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), msg)], T0 + n)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path}/grids.db"


@pytest.fixture
def api(db_url: str) -> Iterator[tuple[TestClient, Runtime, dict[str, str], dict[str, str]]]:
    config = CollectorConfig(db_url=db_url, ingest=None)
    runtime = Runtime(config)
    try:
        keys = add_keys(runtime)
        with TestClient(create_app(config, runtime)) as client:
            viewer = {"Authorization": f"Bearer {keys[Role.VIEWER]}"}
            admin = {"Authorization": f"Bearer {keys[Role.ADMIN]}"}
            yield client, runtime, viewer, admin
    finally:
        runtime.close()


def codes(items: list[dict[str, Any]], key: str = "code") -> list[str]:
    return [i[key] for i in items]


def test_assets_and_devices_are_placed_in_the_grid_that_holds_them(
    api: tuple[TestClient, Runtime, dict[str, str], dict[str, str]],
) -> None:
    client, runtime, viewer, admin = api
    runtime.store.upsert_assets([IN_A_AS_A, ON_NO_GRID, SAYS_B_STANDS_IN_A, SAYS_B_NO_POINT])
    birth(runtime.store, IN_A)
    listed = {a["code"]: a for a in client.get("/api/v1/assets", headers=viewer).json()}
    assert {c: (a["grid"], a["declared_grid"]) for c, a in listed.items()} == {
        IN_A_AS_A.code: (A, A),
        ON_NO_GRID.code: ("", ""),
        SAYS_B_STANDS_IN_A.code: (A, B),  # the polygon wins over the record
        SAYS_B_NO_POINT.code: (B, B),  # no point: the record stands
    }
    in_a = client.get("/api/v1/assets", params={"grid": A}, headers=viewer).json()
    assert codes(in_a) == [IN_A_AS_A.code, SAYS_B_STANDS_IN_A.code]
    in_b = client.get("/api/v1/assets", params={"grid": B}, headers=viewer).json()
    assert codes(in_b) == [SAYS_B_NO_POINT.code]
    detail = client.get(f"/api/v1/assets/{SAYS_B_STANDS_IN_A.code}", headers=viewer).json()
    assert (detail["grid"], detail["declared_grid"]) == (A, B)

    devices = {d["device"]: d["grid"] for d in client.get("/api/v1/devices", headers=viewer).json()}
    assert devices == {"dev-a": A, "dev-x": None, "dev-n": None}
    one = client.get("/api/v1/gateways/gw/devices/dev-a", headers=viewer).json()
    assert one["grid"] == A
    in_a = client.get("/api/v1/devices", params={"grid": A}, headers=viewer).json()
    assert codes(in_a, "device") == ["dev-a"]

    birth(runtime.store, IN_B, n=1)  # dev-a was moved to grid B
    in_a = client.get("/api/v1/devices", params={"grid": A}, headers=viewer).json()
    in_b = client.get("/api/v1/devices", params={"grid": B}, headers=viewer).json()
    assert (codes(in_a, "device"), codes(in_b, "device")) == ([], ["dev-a"])

    # An asset written through the API is placed too, and the answer shows where.
    body = SAYS_B_STANDS_IN_A.model_copy(update={"code": "3301060111000005"}).model_dump()
    put = client.put("/api/v1/assets/3301060111000005", json=body, headers=admin)
    assert put.status_code == 200, put.text
    assert (put.json()["grid"], put.json()["declared_grid"]) == (A, B)


@pytest.mark.parametrize(
    "grid", ["", "abc", "3301060010010", "3301060010010123", "٣٣٠١٠٦٠٠١٠٠١٠١", "33010600100101 "]
)
def test_a_grid_filter_that_is_no_grid_code_is_refused(
    api: tuple[TestClient, Runtime, dict[str, str], dict[str, str]], grid: str
) -> None:
    client, _, viewer, _ = api
    for path in ("/api/v1/assets", "/api/v1/devices"):
        problem_of(client.get(path, params={"grid": grid}, headers=viewer), 422)


def test_the_collector_places_what_is_stored_when_it_loads_the_grid_registry(
    db_url: str,
) -> None:
    # Written without a registry (as before migration 18, or before grids were drawn).
    store = open_store(db_url)
    store.migrate()
    store.upsert_assets([SAYS_B_STANDS_IN_A, ON_NO_GRID])
    birth(store, IN_A)
    assert [g for _, g in store.located_assets()] == ["", B]
    assert [d.grid for d in store.devices()] == [None, None, None]
    store.close()
    runtime = Runtime(CollectorConfig(db_url=db_url, ingest=None))
    try:
        placed = {a.code: g for a, g in runtime.store.located_assets()}
        assert placed == {ON_NO_GRID.code: "", SAYS_B_STANDS_IN_A.code: A}
        assert {d.device: d.grid for d in runtime.store.devices()} == {
            "dev-a": A,
            "dev-n": None,
            "dev-x": None,
        }
        assert runtime.store.use_grids(None) == (1, 1)  # no registry: back to the records
        assert [d.device for d in runtime.store.devices(grid=A)] == []
    finally:
        runtime.close()


def test_assets_import_warns_of_an_asset_that_stands_in_another_grid(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/c.db"]
    assert CliRunner().invoke(collector_cli, ["migrate", *db]).exit_code == 0
    csv = tmp_path / "assets.csv"
    csv.write_text(
        "code,owner,grid,lon,lat\n"
        f"{IN_A_AS_A.code},燃气集团,{A},{IN_A[0]},{IN_A[1]}\n"
        f"{SAYS_B_STANDS_IN_A.code},燃气集团,{B},{IN_A[0]},{IN_A[1]}\n",
        encoding="utf-8",
    )
    r = CliRunner().invoke(collector_cli, ["assets", "import", str(csv), *db, "--json"])
    assert r.exit_code == 0, r.output
    why = (
        f"asset {SAYS_B_STANDS_IN_A.code} names grid {B}, but its point (120.14, 30.277) stands"
        f" in grid {A}: placed in {A}"
    )
    assert r.stderr == f"warning: {why}\n"
    assert '"warnings": ["' + why + '"]' in r.stdout
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    try:
        assert [g for _, g in store.located_assets(grid=A)] == [A, A]
    finally:
        store.close()
    bad = tmp_path / "routing.yaml"
    bad.write_text("grids: nowhere.geojson\n", encoding="utf-8")
    r = CliRunner().invoke(
        collector_cli, ["assets", "import", str(csv), *db, "--routing", str(bad)]
    )
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ")
    assert r.stderr.count("\n") == 1


def test_collector_run_assets_warns_of_an_asset_that_stands_in_another_grid(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "assets.csv"
    csv.write_text(
        f"code,owner,grid,lon,lat\n{SAYS_B_STANDS_IN_A.code},燃气集团,{B},{IN_A[0]},{IN_A[1]}\n",
        encoding="utf-8",
    )
    runtime = Runtime(CollectorConfig(db_url=db_url, ingest=None, assets_file=csv))
    try:
        assert [g for _, g in runtime.store.located_assets()] == [A]
    finally:
        runtime.close()
    (warned,) = [
        r for r in caplog.records if r.levelname == "WARNING" and "names grid" in r.message
    ]
    assert warned.getMessage() == (
        f"{csv}: asset {SAYS_B_STANDS_IN_A.code} names grid {B}, but its point (120.14, 30.277)"
        f" stands in grid {A}: placed in {A}"
    )


# One spot in grid B (WGS 84 / CGCS2000), 150 m west of A's border, as 高德 (GCJ-02) and 百度
# (BD-09) give it: compared raw, the GCJ-02 point stands in A and the BD-09 one in no grid.
TRUE_IN_B = (120.1365, 30.2775)
GCJ02_RAW_IN_A = (120.141245, 30.275201)
BD09_RAW_NOWHERE = (120.147723, 30.281366)


def test_a_gcj02_or_bd09_point_is_placed_where_it_truly_stands(db_url: str, tmp_path: Path) -> None:
    # Stored before the registry is loaded: an asset recorded off 高德, a device commissioned so.
    gcj = Asset(
        code="3301060111000006", owner="燃气集团", grid=A, lon=GCJ02_RAW_IN_A[0],
        lat=GCJ02_RAW_IN_A[1], datum="GCJ-02",
    )  # fmt: skip
    store = open_store(db_url)
    store.migrate()
    store.upsert_assets([gcj])
    at = Location(*GCJ02_RAW_IN_A, "GCJ-02", "")
    msg = Birth(
        "gw", "s", 0, T0, "1", "h", (DeviceInfo("dev-g", "gas_detector", "gas", True, location=at),)
    )
    store.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), msg)], T0)
    store.close()
    # The collector loads the registry, places what is stored again and imports one off 百度.
    csv = tmp_path / "assets.csv"
    bd = "3301060111000007"
    lon, lat = BD09_RAW_NOWHERE
    csv.write_text(f"code,owner,lon,lat,datum\n{bd},燃气集团,{lon},{lat},BD-09\n", encoding="utf-8")
    runtime = Runtime(CollectorConfig(db_url=db_url, ingest=None, assets_file=csv))
    try:
        assert {a.code: g for a, g in runtime.store.located_assets()} == {gcj.code: B, bd: B}
        assert {d.device: d.grid for d in runtime.store.devices()} == {"dev-g": B}
        # A case at the asset is in B, so B's department (属地) takes it.
        grid = runtime.cases.grid_of(gcj, None)
        assert grid is not None
        assert grid.code == B
        # A device moved (a new birth) is placed by its new point, in its datum, too.
        moved = DeviceInfo(
            "dev-g", "gas_detector", "gas", True, location=Location(*IN_A, "GCJ-02", "")
        )
        msg = Birth("gw", "s", 1, T0 + 1, "1", "h", (moved,))
        runtime.store.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), msg)], T0 + 1)
        assert {d.device: d.grid for d in runtime.store.devices()} == {"dev-g": B}
    finally:
        runtime.close()
