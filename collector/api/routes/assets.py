"""The 部件 registry: list, detail with device status and latest values, admin writes."""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from collector.api.auth import Admin, Viewer
from collector.api.deps import StoreDep
from collector.assets import Asset

router = APIRouter(prefix="/api/v1", tags=["assets"])

Code = Annotated[str, Path(pattern=r"^\d{16}$", description="16-digit 部件标识码")]
DeviceId = Annotated[str, Path(min_length=1, max_length=200)]


class BindIn(BaseModel):
    """Which asset a device watches."""

    asset: str = Field(pattern=r"^\d{16}$", description="16-digit 部件标识码")


@router.get("/assets")
def assets(store: StoreDep, key: Viewer) -> list[dict[str, Any]]:
    """All registered assets."""
    return [a.model_dump() for a in store.assets()]


@router.get("/assets/{code}")
def asset(store: StoreDep, key: Viewer, code: Code) -> dict[str, Any]:
    """One asset with its devices' status and latest values."""
    found = next((a for a in store.assets() if a.code == code), None)
    if found is None:
        raise HTTPException(404, f"no asset {code}")
    doc = found.model_dump()
    bound = [d for d in store.devices() if d.asset == code]
    doc["devices"] = [
        {**asdict(d), "latest": [asdict(r) for r in store.latest(d.device)]} for d in bound
    ]
    return doc


@router.put("/assets/{code}")
def put_asset(store: StoreDep, key: Admin, code: Code, body: Asset) -> dict[str, Any]:
    """Create or replace an asset (admin); its listed devices are bound to it."""
    if body.code != code:
        raise HTTPException(422, f"body code {body.code} does not match the URL ({code})")
    store.upsert_assets([body])
    return body.model_dump()


@router.put("/devices/{device}/asset")
def bind(store: StoreDep, key: Admin, device: DeviceId, body: BindIn) -> dict[str, str]:
    """Bind a device to an asset (admin), replacing any earlier binding."""
    if not any(a.code == body.asset for a in store.assets()):
        raise HTTPException(404, f"no asset {body.asset}: register it first")
    store.bind_device(device, body.asset)
    return {"device": device, "asset": body.asset}
