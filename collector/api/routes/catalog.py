"""What a client needs to present data: who the key is (its role) and the device profiles'
points with their units and default alarm limits."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from collector.api.auth import Viewer
from collector.api.deps import RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/me")
def me(key: Viewer) -> dict[str, str]:
    """The calling key's name and role (viewer, dispatcher, operator or admin), so a client
    offers only the actions the role allows."""
    return {"name": key.name, "role": key.role.value}


@router.get("/profiles")
def profiles(runtime: RuntimeDep, key: Viewer) -> list[dict[str, Any]]:
    """Every device profile the collector knows: name, family and points, each point with its
    unit ('' if none) and default alarm rules (`alarm_type`, `severity` 1..4, `message`,
    `limit` in the point's unit or null). A gateway may set other limits per site: an alarm's
    own `limit` is the one in force."""
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
