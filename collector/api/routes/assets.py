"""The 部件 registry."""

from typing import Any

from fastapi import APIRouter

from collector.api.deps import StoreDep

router = APIRouter(prefix="/api/v1", tags=["assets"])


@router.get("/assets")
def assets(store: StoreDep) -> list[dict[str, Any]]:
    """All registered assets."""
    return [a.model_dump() for a in store.assets()]
