"""Gateways and devices (status since when, latest values), commands, dead letters."""

import base64
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lifeline.collector.api.auth import Operator, Reader, ScopedReader, Viewer
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.names import find_device
from lifeline.collector.api.paging import (
    Cursor,
    GridCode,
    Name,
    PageSize,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from lifeline.collector.api.schemas import (
    CommandAccepted,
    CommandReplyOut,
    DeadLetterPage,
    DeviceDetail,
    GatewayDetail,
)
from lifeline.collector.models import DeviceState, GatewayState
from lifeline.collector.store import Store
from lifeline.wire.messages import Value

router = APIRouter(prefix="/api/v1", tags=["gateways"])

Ident = Annotated[str, Path(min_length=1, max_length=200)]


class CommandIn(BaseModel):
    """A command for a gateway (see `lifeline edge --help` for what each does)."""

    name: Literal["rebirth", "ack", "reload", "write"]
    args: dict[str, Value] = Field(default_factory=dict, max_length=20)


def own_counters(counters: dict[str, int | float], devices: set[str]) -> dict[str, int | float]:
    """A gateway's status counters as a key limited to `devices` (device ids) sees them: the
    gateway-wide figures (a name without a dot: uptime_s, polls, buffer_rows, ...) and the
    per-device ones (`errors.<device>`) of those devices only. A dotted name is per device, so
    one of a device not in `devices` is left out, whatever its first part."""
    return {
        name: value
        for name, value in counters.items()
        if "." not in name or name.partition(".")[2] in devices
    }


def _shown(store: Store, gateways: list[GatewayState], reader: Reader) -> list[dict[str, Any]]:
    if reader.scope is None:
        return [asdict(g) for g in gateways]
    mine: dict[str, set[str]] = {}
    for d in store.devices(None, scope=reader.scope):
        mine.setdefault(d.gateway, set()).add(d.device)
    return [
        {**asdict(g), "counters": own_counters(g.counters, mine.get(g.gateway, set()))}
        for g in gateways
    ]


@router.get("/gateways", response_model=list[GatewayState])
def gateways(store: StoreDep, reader: ScopedReader) -> list[dict[str, Any]]:
    """Every known gateway with its status and the time of its last change (for a 专业部门
    key, the gateways of its own cases' and work orders' devices, with the per-device
    counters of those devices only)."""
    return _shown(store, store.gateways(reader.scope), reader)


@router.get("/gateways/{gateway}", response_model=GatewayDetail)
def gateway(store: StoreDep, reader: ScopedReader, gateway: Ident) -> dict[str, Any]:
    """One gateway with its devices and its buffer epochs (newest first: the current one); 404
    if the gateway is unknown (or out of a 专业部门 key's scope, whose list of devices and
    per-device counters are of its own devices only)."""
    found = next((g for g in store.gateways(reader.scope) if g.gateway == gateway), None)
    if found is None:
        raise HTTPException(404, f"no gateway {gateway}")
    epochs = store.gateway_epochs(gateway)
    return {
        **_shown(store, [found], reader)[0],
        "epoch": epochs[0].epoch if epochs else None,
        "epochs": [asdict(e) for e in epochs],
        "devices": [asdict(d) for d in store.devices(gateway, scope=reader.scope)],
    }


@router.post("/gateways/{gateway}/commands", status_code=202, response_model=CommandAccepted)
def command(runtime: RuntimeDep, key: Operator, gateway: Ident, body: CommandIn) -> JSONResponse:
    """Send a command (operator); poll the returned `reply` URL for the gateway's answer. 404
    for an unknown gateway, 422 for what the wire cannot carry, 503 without an MQTT connection."""
    found = next((g for g in runtime.store.gateways() if g.gateway == gateway), None)
    if found is None:
        raise HTTPException(404, f"no gateway {gateway}")
    if runtime.ingest is None:
        raise HTTPException(503, "this collector has no MQTT connection")
    try:
        command_id = runtime.ingest.send_command(found.site, gateway, body.name, body.args)
    except ConnectionError as exc:
        raise HTTPException(503, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    reply = f"/api/v1/gateways/{gateway}/commands/{command_id}"
    return JSONResponse({"command_id": command_id, "reply": reply}, status_code=202)


@router.get(
    "/gateways/{gateway}/commands/{command_id}",
    response_model=CommandReplyOut,
    response_model_exclude_unset=True,
)
def command_reply(
    store: StoreDep,
    key: Viewer,
    gateway: Ident,
    command_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
) -> dict[str, Any]:
    """The gateway's reply to a command: state pending until it arrives."""
    reply = store.command_reply(gateway, command_id)
    if reply is None:
        return {"state": "pending"}
    return {"state": "done", **reply}


@router.get("/devices", response_model=list[DeviceState])
def devices(
    store: StoreDep, reader: ScopedReader, gateway: Name = None, grid: GridCode = None
) -> list[dict[str, Any]]:
    """Every known device with its status (since when), family, asset, install location and
    the 单元网格 that location stands in; of one gateway and/or placed in one grid (its code)
    if asked. A 专业部门 key gets the devices of its own cases and work orders."""
    return [asdict(d) for d in store.devices(gateway, grid=grid, scope=reader.scope)]


@router.get("/devices/{device}", response_model=DeviceDetail)
def device(store: StoreDep, reader: ScopedReader, device: Ident) -> dict[str, Any]:
    """One device by id alone, while one gateway has it (409 with the candidates if several
    do): its asset and its latest value of every point; 404 if none (in scope)."""
    found = find_device(store, device, scope=reader.scope)
    if found is None:
        raise HTTPException(404, f"no device {device}")
    return _device_doc(store, found)


@router.get("/gateways/{gateway}/devices/{device}", response_model=DeviceDetail)
def gateway_device(
    store: StoreDep, reader: ScopedReader, gateway: Ident, device: Ident
) -> dict[str, Any]:
    """One device of one gateway: its asset and its latest value of every point; 404 if that
    gateway has no such device (in scope)."""
    found = find_device(store, device, gateway, reader.scope)
    if found is None:
        raise HTTPException(404, f"no device {device} on gateway {gateway}")
    return _device_doc(store, found)


def _device_doc(store: StoreDep, d: DeviceState) -> dict[str, Any]:
    return {**asdict(d), "latest": [asdict(r) for r in store.latest(d.device, d.gateway)]}


@router.get("/dead-letters", response_model=DeadLetterPage)
def dead_letters(
    store: StoreDep, key: Viewer, limit: PageSize = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """The total count and one page of refused payloads, newest first; pass `next_cursor`
    back for the next page (null: done). Each shows the first 4 KiB of its payload (base64),
    its whole `size` and `sha256`."""
    before = cursor_int(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = store.dead_letters(limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "count": store.count_dead_letters(),
        "items": [
            {
                "id": d.id,
                "topic": d.topic,
                "reason": d.reason,
                "received_ms": d.received_ms,
                "size": d.size,
                "sha256": d.sha256,
                "truncated": d.size > len(d.payload),
                "payload_b64": base64.b64encode(d.payload).decode(),
            }
            for d in rows
        ],
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
    }
