"""The 部件 registry: list, detail with device status and latest values, admin writes."""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from lifeline.collector.api.auth import Admin, ScopedReader
from lifeline.collector.api.deps import StoreDep
from lifeline.collector.api.names import find_device
from lifeline.collector.api.schemas import AssetDetail, BindingOut
from lifeline.collector.assets import Asset, AssetError

router = APIRouter(prefix="/api/v1", tags=["assets"])

Code = Annotated[str, Path(pattern=r"^\d{16}$", description="16-digit 部件标识码")]
DeviceId = Annotated[str, Path(min_length=1, max_length=200)]


class BindIn(BaseModel):
    """Which asset a device watches."""

    asset: str = Field(pattern=r"^\d{16}$", description="16-digit 部件标识码")


@router.get("/assets", response_model=list[Asset])
def assets(store: StoreDep, reader: ScopedReader) -> list[dict[str, Any]]:
    """All registered assets (for a 专业部门 key, those of its own cases and devices)."""
    return [a.model_dump() for a in store.assets(reader.scope)]


@router.get("/assets/{code}", response_model=AssetDetail)
def asset(store: StoreDep, reader: ScopedReader, code: Code) -> dict[str, Any]:
    """One asset with its devices' status and latest values; 404 if it is not registered (or
    out of a 专业部门 key's scope, which sees the asset's devices in its scope only)."""
    found = next((a for a in store.assets(reader.scope) if a.code == code), None)
    if found is None:
        raise HTTPException(404, f"no asset {code}")
    doc = found.model_dump()
    bound = [d for d in store.devices(scope=reader.scope) if d.asset == code]
    doc["devices"] = [
        {**asdict(d), "latest": [asdict(r) for r in store.latest(d.device, d.gateway)]}
        for d in bound
    ]
    return doc


@router.put("/assets/{code}", response_model=Asset)
def put_asset(store: StoreDep, key: Admin, code: Code, body: Asset) -> dict[str, Any]:
    """Create or replace an asset (admin); its listed devices are bound to it (409 if one is
    named without its gateway while several gateways have that id)."""
    if body.code != code:
        raise HTTPException(422, f"body code {body.code} does not match the URL ({code})")
    try:
        store.upsert_assets([body])
    except AssetError as exc:
        raise HTTPException(409, str(exc)) from None
    return body.model_dump()


@router.put("/devices/{device}/asset", response_model=BindingOut)
def bind(store: StoreDep, key: Admin, device: DeviceId, body: BindIn) -> dict[str, str | None]:
    """Bind a device, named by id alone, to an asset (admin), replacing any earlier binding:
    409 with the candidates if several gateways have that id; a device no gateway announced
    yet is bound when the first gateway announces it."""
    found = find_device(store, device)
    return _bind(store, found.gateway if found else None, device, body)


@router.put("/gateways/{gateway}/devices/{device}/asset", response_model=BindingOut)
def bind_scoped(
    store: StoreDep, key: Admin, gateway: DeviceId, device: DeviceId, body: BindIn
) -> dict[str, str | None]:
    """Bind one gateway's device to an asset (admin), replacing any earlier binding."""
    return _bind(store, gateway, device, body)


def _bind(store: StoreDep, gateway: str | None, device: str, body: BindIn) -> dict[str, str | None]:
    if not any(a.code == body.asset for a in store.assets()):
        raise HTTPException(404, f"no asset {body.asset}: register it first")
    store.bind_device(gateway, device, body.asset)
    return {"gateway": gateway, "device": device, "asset": body.asset}
