"""The 部件 registry: list, detail with device status and latest values, admin writes."""

import logging
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from lifeline.collector.api.auth import Admin, ScopedReader
from lifeline.collector.api.deps import StoreDep
from lifeline.collector.api.names import find_device
from lifeline.collector.api.paging import GridCode
from lifeline.collector.api.schemas import AssetDetail, AssetOut, BindingOut
from lifeline.collector.assets import Asset, AssetError
from lifeline.wire.codes import ASSET_CODE_PATTERN

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["assets"])

Code = Annotated[str, Path(pattern=ASSET_CODE_PATTERN, description="16-digit 部件标识码")]
DeviceId = Annotated[str, Path(min_length=1, max_length=200)]


class BindIn(BaseModel):
    """Which asset a device watches."""

    asset: str = Field(pattern=ASSET_CODE_PATTERN, description="16-digit 部件标识码")


def _placed(asset: Asset, grid: str) -> dict[str, Any]:
    """An asset's record as an AssetOut: `grid` where it is placed, `declared_grid` its own."""
    return {**asset.model_dump(), "grid": grid, "declared_grid": asset.grid}


@router.get("/assets", response_model=list[AssetOut])
def assets(store: StoreDep, reader: ScopedReader, grid: GridCode = None) -> list[dict[str, Any]]:
    """All registered assets, or those placed in one 单元网格 (`grid`, its code), each with the
    grid it is placed in and the grid its record declares. A 专业部门 key gets those of its own
    cases and devices."""
    return [_placed(a, g) for a, g in store.located_assets(grid, scope=reader.scope)]


@router.get("/assets/{code}", response_model=AssetDetail)
def asset(store: StoreDep, reader: ScopedReader, code: Code) -> dict[str, Any]:
    """One asset with its devices' status and latest values; 404 if it is not registered (or
    out of a 专业部门 key's scope, which sees the asset's devices in its scope only)."""
    found = store.located_assets(code=code, scope=reader.scope)
    if not found:
        raise HTTPException(404, f"no asset {code}")
    doc = _placed(*found[0])
    bound = [d for d in store.devices(scope=reader.scope) if d.asset == code]
    doc["devices"] = [
        {**asdict(d), "latest": [asdict(r) for r in store.latest(d.device, d.gateway)]}
        for d in bound
    ]
    return doc


@router.put("/assets/{code}", response_model=AssetOut)
def put_asset(store: StoreDep, key: Admin, code: Code, body: Asset) -> dict[str, Any]:
    """Create or replace an asset (admin); its listed devices are bound to it (409 if one is
    named without its gateway while several gateways have that id). The answer shows the
    单元网格 it is placed in: where its point stands in another grid than the one it declares,
    the point's grid (logged as a warning)."""
    if body.code != code:
        raise HTTPException(422, f"body code {body.code} does not match the URL ({code})")
    try:
        store.upsert_assets([body])
    except AssetError as exc:
        raise HTTPException(409, str(exc)) from None
    ((stored, grid),) = store.located_assets(code=code)
    if body.grid and grid != body.grid:
        log.warning(
            "asset %s names grid %s, but its point (%s, %s) stands in grid %s: placed there",
            code, body.grid, body.lon, body.lat, grid,
        )  # fmt: skip
    return _placed(stored, grid)


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
    if not store.located_assets(code=body.asset):
        raise HTTPException(404, f"no asset {body.asset}: register it first")
    store.bind_device(gateway, device, body.asset)
    return {"gateway": gateway, "device": device, "asset": body.asset}
