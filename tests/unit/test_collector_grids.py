"""单元网格 (issue 19, part 3): codes, the GeoJSON registry, point-in-polygon placement, and 属地
routing — 部件先属主后属地, 事件先属地后属主 unless the 小类 names its 主管部门."""

import json
from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.assets import Asset, load, misplaced
from lifeline.collector.cases.routing import (
    DepartmentRule,
    Outcome,
    Routing,
    default_routing_path,
    load_routing,
    routing_grids,
)
from lifeline.collector.departments import Directory
from lifeline.collector.grids import (
    Grid,
    GridError,
    check_grid_code,
    load_grids,
    place,
    to_grid_datum,
)

pytestmark = pytest.mark.unit


def square(w: float, s: float, size: float = 1.0) -> dict[str, Any]:
    e, n = w + size, s + size
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def feature(code: str, geometry: dict[str, Any], departments: list[str]) -> dict[str, Any]:
    props = {
        "code": code,
        "street": "西溪街道",
        "community": "文三社区",
        "departments": departments,
    }
    return {"type": "Feature", "properties": props, "geometry": geometry}


def write(tmp_path: Path, *features: dict[str, Any]) -> Path:
    path = tmp_path / "grids.geojson"
    doc = {"type": "FeatureCollection", "features": list(features)}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("code", ["33010600100101", "330106001001012"])
def test_a_grid_code_is_14_or_15_digits(code: str) -> None:
    assert check_grid_code(code) == code


@pytest.mark.parametrize(
    "code", ["330106001001", "3301060010010123", "3301060010010x", "", "٣٣٠١٠٦٠٠١٠٠١٠١"]
)
def test_other_grid_codes_are_refused(code: str) -> None:
    with pytest.raises(GridError, match="14 digits"):
        check_grid_code(code)
    with pytest.raises(ValueError, match="grid"):
        Asset(code="3301060111000101", owner="x", grid=code) if code else check_grid_code(code)


def test_a_point_is_placed_in_the_polygon_that_holds_it(tmp_path: Path) -> None:
    grids = load_grids(
        write(
            tmp_path,
            feature("33010600100101", square(120, 30), ["东区城管办"]),
            feature("33010600100201", square(121, 30), ["西区城管办"]),
        )
    )
    assert grids.locate(120.5, 30.5, datum="CGCS2000") == Grid(
        "33010600100101", "西溪街道", "文三社区", ("东区城管办",)
    )
    at = ((121.5, 30.2), (121.0, 30.5))
    codes = [getattr(grids.locate(x, y, datum="WGS84"), "code", None) for x, y in at]
    assert codes == ["33010600100201", "33010600100101"]  # on a shared border: the first
    assert grids.locate(119.0, 30.5, datum="CGCS2000") is None  # outside every grid
    assert grids.locate(None, None, datum="CGCS2000") is None  # no place known


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ([feature("330106001001", square(120, 30), [])], "14 digits"),
        ([feature("33010600100101", square(120, 30), [])] * 2, "listed twice"),
        (
            [feature("33010600100101", BOWTIE, [])],
            "valid Polygon",
        ),  # a bow-tie crosses itself
        ([feature("33010600100101", {"type": "Point", "coordinates": [0, 0]}, [])], "Polygon"),
        ([feature("33010600100101", {"type": "Polygon"}, [])], "geometry"),
        ([feature("33010600100101", square(120, 30), [""])], "list of names"),
        ([feature("33010600100101", square(120, 30), [" 城管办 "])], "end with a space"),
        ([feature("33010600100101", square(120, 30), ["城管\x1b办"])], "control"),
        ([feature("33010600100101", square(30, 120), [])], "axes swapped"),  # lat, lon
        ([feature("33010600100101", square(500_000, 3_300_000), [])], "axes swapped"),  # metres
        (
            [feature("33010600100101", square(120, 30), []),
             feature("33010600100201", square(120.5, 30), [])],
            r"grids 33010600100101 \(features.0\) and 33010600100201 \(features.1\) overlap",
        ),
        (
            [feature("33010600100101", square(120, 30), []),
             {**feature("33010600100201", square(121, 30), []),
              "properties": {"code": "33010600100201", "street": 7}}],
            "street is text or null",
        ),
        ([], "no grids"),
    ],
)  # fmt: skip
def test_a_broken_grid_file_is_refused_with_the_reason(
    tmp_path: Path, features: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(GridError, match=reason):
        load_grids(write(tmp_path, *features))


def test_a_sliver_between_neighbours_loads_and_null_names_are_empty(tmp_path: Path) -> None:
    # Borders drawn apart overlap a little (0.5 % of a grid here): tolerated, not an overlap.
    nulls = {"code": "33010600100201", "street": None, "community": None}
    grids = load_grids(
        write(
            tmp_path,
            feature("33010600100101", square(120, 30), ["东区城管办"]),
            {"type": "Feature", "properties": nulls, "geometry": square(120.995, 30)},
        )
    )
    assert grids.get("33010600100201") == Grid("33010600100201", "", "", ())


def test_the_demo_district_ships_grids_that_hold_its_assets() -> None:
    path = default_routing_path()
    grids = routing_grids(load_routing(path), path)
    assert grids is not None
    assert {g.code[:6] for g in grids.grids} == {"330106"}
    for a in load(path.parent.parent / "assets" / "demo.yaml"):
        placed = grids.locate(a.lon, a.lat, datum=a.datum)
        assert placed is not None, a.code
        assert placed.code == a.grid, a.code  # the record and the polygon agree


def test_the_polygon_places_a_point_over_the_grid_its_record_declares(tmp_path: Path) -> None:
    a, b = "33010600100101", "33010600100201"
    grids = load_grids(
        write(tmp_path, feature(a, square(120, 30), []), feature(b, square(121, 30), []))
    )

    def at(lon: float | None, lat: float | None, declared: str = "") -> str:
        return place(grids, lon, lat, declared, datum="CGCS2000")

    assert at(120.5, 30.5) == a
    assert at(120.5, 30.5, declared=b) == a  # the surveyed point wins
    assert at(121.0, 30.5, declared=b) == b  # on the shared border: the declared one
    assert at(121.0, 30.5) == a  # ...else the first in file order
    assert at(119.0, 30.5, declared=b) == b  # outside every grid: the declared one
    assert at(119.0, 30.5) == ""
    assert at(None, None, declared=b) == b  # no point: the declared one
    assert place(None, 120.5, 30.5, declared=b, datum="CGCS2000") == b  # no registry: declared


# The demo district's latitude; A west of B, the border at 120.139 (as 330106's grids are drawn).
WEST, EAST = "33010600100101", "33010600100201"
TRUE_IN_WEST = (120.1365, 30.2775)  # WGS 84 / CGCS2000, 250 m west of the border
# The same spot as 高德 (GCJ-02) and 百度 (BD-09) give it: both raw points stand in EAST.
AS_GCJ02 = (120.141245, 30.275201)
AS_BD09 = (120.147723, 30.281366)


def border_grids(tmp_path: Path) -> Any:
    lat = TRUE_IN_WEST[1] - 0.01
    west = square(120.139 - 0.05, lat, 0.05)
    east = square(120.139, lat, 0.05)
    return load_grids(write(tmp_path, feature(WEST, west, ["西"]), feature(EAST, east, ["东"])))


@pytest.mark.parametrize(
    ("at", "datum"),
    [(TRUE_IN_WEST, "CGCS2000"), (TRUE_IN_WEST, "WGS84"), (AS_GCJ02, "GCJ-02"), (AS_BD09, "BD-09")],
)
def test_a_point_is_placed_where_it_truly_stands_whatever_its_datum(
    tmp_path: Path, at: tuple[float, float], datum: str
) -> None:
    grids = border_grids(tmp_path)
    assert place(grids, *at, datum="CGCS2000") == (WEST if at == TRUE_IN_WEST else EAST)
    assert place(grids, *at, datum=datum) == WEST
    assert place(grids, *at, declared=EAST, datum=datum) == WEST  # the declared grid too
    placed = grids.locate(*at, datum=datum)
    assert placed is not None
    assert placed.department == "西"  # so its case goes to 西's 属地


def test_a_point_is_converted_to_the_grid_files_datum_to_within_two_metres() -> None:
    for at, datum in ((AS_GCJ02, "GCJ-02"), (AS_BD09, "BD-09")):
        lon, lat = to_grid_datum(*at, datum)
        # 1e-5 degrees is 1.1 m of latitude here, 0.96 m of longitude
        assert abs(lon - TRUE_IN_WEST[0]) < 2e-5, datum
        assert abs(lat - TRUE_IN_WEST[1]) < 2e-5, datum
    assert to_grid_datum(*TRUE_IN_WEST, "WGS84") == TRUE_IN_WEST  # centimetres from CGCS2000
    # Outside China neither offset is applied: GCJ-02 and BD-09 there are WGS 84 as it is.
    assert to_grid_datum(2.2945, 48.8584, "GCJ-02") == (2.2945, 48.8584)


@pytest.mark.parametrize(
    "datum", ["", "gcj02", "GCJ02", "EPSG:4326", "CGCS 2000", "bd-09", "北京54", "WGS84 "]
)
def test_a_point_in_an_unknown_datum_is_refused_not_placed(tmp_path: Path, datum: str) -> None:
    grids = border_grids(tmp_path)
    for call in (
        lambda: place(grids, *TRUE_IN_WEST, datum=datum),
        lambda: grids.locate(*TRUE_IN_WEST, datum=datum),
        lambda: grids.holds(WEST, *TRUE_IN_WEST, datum=datum),
    ):
        with pytest.raises(GridError, match=r"datum .* is not one of CGCS2000, WGS84, GCJ-02"):
            call()
    assert place(grids, None, None, declared=EAST, datum=datum) == EAST  # no point: no datum used


def test_an_asset_whose_point_is_in_another_grid_is_named_in_a_warning(tmp_path: Path) -> None:
    a, b = "33010600100101", "33010600100201"
    grids = load_grids(
        write(tmp_path, feature(a, square(120, 30), []), feature(b, square(121, 30), []))
    )
    agrees = Asset(code="3301060111000001", owner="x", grid=a, lon=120.5, lat=30.5)
    stale = Asset(code="3301060111000002", owner="x", grid=b, lon=120.5, lat=30.5)
    pointless = Asset(code="3301060111000003", owner="x", grid=b)
    outside = Asset(code="3301060111000004", owner="x", grid=b, lon=119.0, lat=30.5)
    # Reproduced on main (review of issue 19, item 9): a grid the file lacks passed unsaid.
    nowhere = Asset(code="3301060111000005", owner="x", grid="99999999999999")
    lost = Asset(code="3301060111000006", owner="x", grid="99999999999999", lon=119.0, lat=30.5)
    assert misplaced([agrees, stale, pointless, outside, nowhere, lost], grids) == [
        f"asset 3301060111000002 names grid {b}, but its point (120.5, 30.5) stands in grid"
        f" {a}: placed in {a}",
        *(
            f"asset {n.code} names grid 99999999999999, which is not in the grid file, and its"
            " point places it in none: no grid department (属地) can take its cases"
            for n in (nowhere, lost)
        ),
    ]
    assert misplaced([stale], None) == []


# --- 属地 routing -------------------------------------------------------------------------------

GRID = Grid("33010600100101", "西溪街道", "文三社区", ("西溪街道城管办",))
COVER = Asset(code="3301060111000101", owner="燃气集团", maintainer="燃气运维站")
# The registry: the shipped table's departments and the ones these tests route to.
HELD = {
    "gas": "燃气集团", "gas-ops": "燃气运维站", "xixi": "西溪街道城管办", "gas-admin": "燃气管理处",
    "wensan": "文三社区网格站",
}  # fmt: skip


def routing(**changes: object) -> Routing:
    return load_routing(default_routing_path()).model_copy(update=changes)


def decide(r: Routing, asset: Asset | None, grid: Grid | None, family: str = "gas") -> str:
    d = r.decide(
        family=family, alarm_type="hi", point="gas_concentration", severity=2, asset=asset,
        grid=grid, directory=Directory.of({**r.departments, **HELD}),
    )  # fmt: skip
    assert d.outcome is Outcome.CASE
    return d.department


def test_an_event_goes_to_its_grid_first_then_the_owner() -> None:
    # The shipped gas route names `department: owner`; here the 事件 rule itself: no override.
    base = routing()
    routes = [
        r.model_copy(update={"department": None}) if r.subcategory == "0403" else r
        for r in base.routes
    ]
    r = base.model_copy(update={"routes": routes})
    assert decide(r, COVER, GRID) == "西溪街道城管办"  # 事件先属地
    assert decide(r, COVER, None) == "燃气集团"  # 后属主
    assert decide(r, None, None) == r.default_department
    named = r.model_copy(update={"event_departments": {"0403": "燃气管理处"}})
    assert decide(named, COVER, GRID) == "燃气管理处"  # the 小类's 主管部门 first
    table = r.model_copy(update={"grid_departments": {GRID.code: "文三社区网格站"}})
    assert decide(table, COVER, GRID) == "文三社区网格站"  # the table before the registry


def test_a_component_goes_to_its_owner_first_then_the_grid() -> None:
    r = routing()
    held = Directory.of({**r.departments, **HELD})
    assert r._department(DepartmentRule.OWNER, COVER, GRID, "0111", held)[0] == "燃气集团"  # 先属主
    assert r._department(DepartmentRule.MAINTAINER, COVER, GRID, "0111", held)[0] == "燃气运维站"
    # Before issue 19 a detector on no asset went to the center whatever its place.
    assert decide(r, None, GRID) == "西溪街道城管办"  # 后属地: owner unknown
    assert decide(r, None, None) == r.default_department
