"""The 单元网格 registry: grid codes with their 街道, 社区, responsible departments and
polygons, and point-in-polygon placement (GB/T 30428.2 单元网格划分与编码; shapely).

A grid code is 14 digits — 6 area (行政区划代码) + 3 街道 + 3 社区 + 2 grid — or the 15-digit
variant some cities use (3 grid digits). Grids come from a GeoJSON FeatureCollection whose
features carry `code`, `street` (街道), `community` (社区) and `departments` (names, the first
one leads) as properties, and a Polygon or MultiPolygon in lon/lat (CGCS2000 / WGS 84 degrees).

A point is placed in the grid file's datum: a point in GCJ-02 (国测局 "火星" coordinates, what
高德/腾讯 maps give) or BD-09 (百度) is converted to WGS 84 first (to_grid_datum), since compared
raw it is hundreds of metres off and a 部件 near a border lands in the neighbouring grid.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordTransform import bd09_to_wgs84, gcj02_to_wgs84
from shapely import STRtree, prepare, unary_union
from shapely.errors import ShapelyError
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from lifeline.collector.departments import check_name
from lifeline.wire.codes import GRID_CODE_RULE, is_grid_code
from lifeline.wire.messages import DATUMS


class GridError(ValueError):
    """A grid code or grid file that cannot be used; the message says which and why."""


def check_grid_code(code: str) -> str:
    """`code` if it is a 14- or 15-digit 单元网格 code (wire.codes, the rule the edge checks
    too); GridError otherwise."""
    if not is_grid_code(code):
        raise GridError(f"grid code {code!r} must be {GRID_CODE_RULE}")
    return code


# CGCS2000 and WGS 84 realise the same ITRF-aligned frame on nearly the same ellipsoid: a point
# differs by centimetres, far below how exactly a grid border is drawn, so neither is converted.
_SAME_AS_GRID_FILE = ("CGCS2000", "WGS84")


def to_grid_datum(lon: float, lat: float, datum: str) -> tuple[float, float]:
    """(lon, lat) degrees given in `datum` (one of wire.messages.DATUMS) as (lon, lat) degrees in
    the grid file's datum (CGCS2000 / WGS 84, treated as one: they differ by centimetres).

    GCJ-02 (GB 20263 obfuscation, the 国测局 offset) and BD-09 (百度, GCJ-02 offset again) are
    converted to WGS 84 by coordTransform's published inverse, which is exact to about a metre
    inside China; outside China both are WGS 84 unchanged, as the offset is only applied
    there. Raises GridError for any other datum.
    """
    if datum in _SAME_AS_GRID_FILE:
        return lon, lat
    if datum == "GCJ-02":
        wgs = gcj02_to_wgs84(lon, lat)
    elif datum == "BD-09":
        wgs = bd09_to_wgs84(lon, lat)
    else:
        raise GridError(f"datum {datum!r} is not one of {', '.join(DATUMS)}")
    return float(wgs[0]), float(wgs[1])


@dataclass(frozen=True, slots=True)
class Grid:
    """One 单元网格: its code, 街道 and 社区 names, and the departments responsible for it."""

    code: str
    street: str = ""
    community: str = ""
    departments: tuple[str, ...] = ()

    @property
    def area(self) -> str:
        """The 6-digit area code."""
        return self.code[:6]

    @property
    def department(self) -> str | None:
        """The leading responsible department (属地), if any."""
        return self.departments[0] if self.departments else None


# How far outside every grid a point is still served: about 500 m (0.005° of latitude is
# 556 m; of longitude, 556 m × cos φ), more than phone GPS and datum errors, far less than
# the distance to the next district's streets that another platform serves.
SERVICE_MARGIN_DEG = 0.005


class GridMap:
    """Grids with their polygons, found by code or by a point inside."""

    def __init__(self, grids: Sequence[tuple[Grid, BaseGeometry]]) -> None:
        self._grids = [g for g, _ in grids]
        self._shapes = [s for _, s in grids]
        self._by_code = {g.code: g for g in self._grids}
        self._index = {g.code: i for i, g in enumerate(self._grids)}
        self._tree = STRtree(self._shapes)
        self._area: BaseGeometry | None = None  # the service area, made on first use

    @property
    def grids(self) -> list[Grid]:
        """Every grid, in file order."""
        return list(self._grids)

    @property
    def polygons(self) -> list[tuple[Grid, BaseGeometry]]:
        """Every grid with its polygon (lon/lat degrees), in file order."""
        return list(zip(self._grids, self._shapes, strict=True))

    def get(self, code: str) -> Grid | None:
        """The grid with this code."""
        return self._by_code.get(code)

    def point(self, code: str) -> tuple[float, float] | None:
        """A point inside the grid's polygon as (lon, lat) degrees (shapely's representative
        point, which lies inside even a concave polygon), or None for an unknown code."""
        i = self._index.get(code)
        if i is None:
            return None
        p = self._shapes[i].representative_point()
        return (p.x, p.y)

    def locate(self, lon: float | None, lat: float | None, *, datum: str) -> Grid | None:
        """The grid whose polygon holds (lon, lat) degrees in `datum` (to_grid_datum) — on a
        shared border, the first in file order — or None (no place, or outside every grid).
        Raises GridError for a datum not in wire.messages.DATUMS."""
        if lon is None or lat is None:
            return None
        hits = self._tree.query(Point(to_grid_datum(lon, lat, datum)), predicate="intersects")
        return self._grids[int(min(hits))] if len(hits) else None

    def serves(self, lon: float, lat: float, *, datum: str) -> bool:
        """True if (lon, lat) degrees in `datum` (to_grid_datum) lies in the service area: the
        union of every grid's polygon widened by SERVICE_MARGIN_DEG, so a point a few metres off
        a border (GPS error, a 部件 on the district's edge) is still served while one in another
        city is not. Raises GridError for a datum not in DATUMS."""
        if self._area is None:
            area = unary_union(self._shapes).buffer(SERVICE_MARGIN_DEG)
            prepare(area)  # many reports test one area: index it once
            self._area = area
        return bool(self._area.intersects(Point(to_grid_datum(lon, lat, datum))))

    def holds(self, code: str, lon: float, lat: float, *, datum: str) -> bool:
        """True if the grid `code` is known and its polygon holds (lon, lat) degrees in `datum`
        (to_grid_datum), border included. Raises GridError for a datum not in DATUMS."""
        i = self._index.get(code)
        point = Point(to_grid_datum(lon, lat, datum))
        return i is not None and bool(self._shapes[i].intersects(point))


def place(
    grids: GridMap | None,
    lon: float | None,
    lat: float | None,
    declared: str = "",
    *,
    datum: str,
) -> str:
    """The code of the 单元网格 a device, asset or case at (lon, lat) degrees in `datum` is
    placed in, where its record names the grid `declared` ("" if none); "" when nothing places
    it. The point is compared with the polygons in the grid file's datum (to_grid_datum), so a
    GCJ-02 or BD-09 point lands where it truly stands. Raises GridError for a datum not in
    wire.messages.DATUMS (only when there is a point to place).

    The polygon wins: a surveyed point is evidence, a typed grid code is a claim that goes
    stale when grids are redrawn, and the cases raised there are placed the same way. On a
    border shared by several grids, the declared one if its polygon touches the point, else
    the first in file order. Without a point, a registry, or a grid holding the point, the
    declared grid stands.
    """
    if grids is None or lon is None or lat is None:
        return declared
    if declared and grids.holds(declared, lon, lat, datum=datum):
        return declared
    found = grids.locate(lon, lat, datum=datum)
    return found.code if found is not None else declared


# Two grids may share a border, and independently drawn borders leave slivers; an overlap
# beyond this share of the smaller grid's area places one point in two grids, which a tiling
# (GB/T 30428.2: grids cover the district without gaps or overlaps) never does.
OVERLAP_TOLERANCE = 0.01


def _text(props: dict[str, Any], name: str, where: str) -> str:
    value = props.get(name)
    if value is None:  # absent or JSON null: not known
        return ""
    if not isinstance(value, str):
        raise GridError(f"{where}: {name} is text or null, not {json.dumps(value)[:40]}")
    return value


def _grid(feature: Any, i: int) -> tuple[Grid, BaseGeometry]:
    where = f"features.{i}"
    if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
        raise GridError(f"{where}: a Feature with properties")
    props = feature["properties"]
    code = check_grid_code(str(props.get("code", "")))
    where = f"{where} ({code})"
    depts = props.get("departments", [])
    if not isinstance(depts, list) or not all(isinstance(d, str) and d for d in depts):
        raise GridError(f"{where}: departments is a list of names")
    for name in depts:
        try:
            check_name(name)
        except ValueError as exc:
            raise GridError(f"{where}: departments: {exc}") from None
    try:
        geom = shape(feature.get("geometry") or {})
    except (ShapelyError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise GridError(f"{where}: geometry: {exc}") from None
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty or not geom.is_valid:
        raise GridError(f"{where}: geometry must be a valid Polygon or MultiPolygon")
    west, south, east, north = geom.bounds
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise GridError(
            f"{where}: coordinates outside lon -180..180, lat -90..90 degrees"
            f" ({west:g}, {south:g} .. {east:g}, {north:g}): axes swapped (lat, lon), or a"
            " projected CRS? GeoJSON is lon, lat degrees"
        )
    street, community = _text(props, "street", where), _text(props, "community", where)
    return Grid(code, street, community, tuple(depts)), geom


def _overlaps(grids: Sequence[tuple[Grid, BaseGeometry]]) -> None:
    """GridError naming the first two grids that overlap beyond OVERLAP_TOLERANCE."""
    shapes = [g for _, g in grids]
    tree = STRtree(shapes)
    for i, a in enumerate(shapes):
        for j in sorted(int(k) for k in tree.query(a, predicate="intersects")):
            if j <= i:
                continue
            b = shapes[j]
            share = a.intersection(b).area / min(a.area, b.area)
            if share > OVERLAP_TOLERANCE:
                raise GridError(
                    f"grids {grids[i][0].code} (features.{i}) and {grids[j][0].code}"
                    f" (features.{j}) overlap by {share:.0%} of the smaller one: grids tile a"
                    " district without overlaps (GB/T 30428.2)"
                )


def load_grids(path: Path) -> GridMap:
    """Load a GeoJSON FeatureCollection of grids; GridError naming the file, feature and
    reason (a bad code, a duplicate, a geometry that is no valid polygon, coordinates that are
    no lon/lat degrees, two grids that overlap beyond OVERLAP_TOLERANCE, a department name
    that breaks the department name rule, a street or community that is not text). A null
    street or community is ""."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GridError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise GridError(f"{path}: a GeoJSON FeatureCollection is expected")
    grids: list[tuple[Grid, BaseGeometry]] = []
    seen: set[str] = set()
    try:
        for i, feature in enumerate(doc.get("features") or []):
            grid, geom = _grid(feature, i)
            if grid.code in seen:
                raise GridError(f"features.{i}: grid {grid.code} is listed twice")
            seen.add(grid.code)
            grids.append((grid, geom))
        _overlaps(grids)
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None
    if not grids:
        raise GridError(f"{path}: no grids")
    return GridMap(grids)
