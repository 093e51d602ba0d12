"""What a client needs to present data: who the key is (its role), the device profiles'
points with their units and default alarm limits, and the 单元网格 polygons."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from shapely.geometry import mapping

from lifeline.collector.api.auth import ScopedReader
from lifeline.collector.api.deps import RuntimeDep
from lifeline.collector.api.schemas import MeOut, ProfileOut
from lifeline.collector.cases.duties import may_act
from lifeline.collector.cases.workflow import Action
from lifeline.collector.models import Role

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/me", response_model=MeOut)
def me(reader: ScopedReader) -> dict[str, Any]:
    """The calling key: its `name`, `role`, the `departments` (codes) a 专业部门 key is scoped
    to, whether it may `acknowledge` alarms and the `case_actions` its role may post (the
    permission matrix of collector.cases.duties, before that scope), so a client offers only
    what the role allows."""
    key = reader.key
    return {
        "departments": list(key.departments),
        "name": key.name,
        "role": key.role.value,
        "acknowledge": key.role.allows(Role.OPERATOR),
        "case_actions": sorted(a.value for a in Action if may_act(key.role, a)),
    }


@router.get("/profiles", response_model=list[ProfileOut])
def profiles(runtime: RuntimeDep, reader: ScopedReader) -> list[dict[str, Any]]:
    """Every device profile the collector knows: name, family and points, each point with its
    unit ('' if none) and default alarm rules (`alarm_type`, `severity` 1..4, `message`,
    `limit` in the point's unit or null). A gateway may set other limits per site: an alarm's
    own `limit` is the one in force. Reference data: the same for every key."""
    return [
        {
            "name": p.name,
            "family": p.family,
            "points": [
                {"name": pt.name, "unit": pt.unit, "rules": [asdict(r) for r in pt.rules]}
                for pt in p.points
            ],
        }
        for p in runtime.cases.catalog.profiles.values()
    ]


@router.get("/grids")
def grids(runtime: RuntimeDep, reader: ScopedReader) -> dict[str, Any]:
    """The 单元网格 registry as a GeoJSON FeatureCollection (RFC 7946; lon/lat degrees, CGCS2000
    or WGS 84): each feature's properties are `code`, `street` (街道), `community` (社区) and
    `departments` (the first leads). Empty when the routing table names no grid file.
    Reference data: the same for every key."""
    registry = runtime.cases.grids
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "code": g.code,
                    "street": g.street,
                    "community": g.community,
                    "departments": list(g.departments),
                },
                "geometry": mapping(shape),
            }
            for g, shape in (registry.polygons if registry else [])
        ],
    }
