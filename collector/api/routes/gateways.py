"""Gateways, devices, alarms and dead letters."""

import base64
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from collector.api.deps import StoreDep

router = APIRouter(prefix="/api/v1", tags=["gateways"])


@router.get("/gateways")
def gateways(store: StoreDep) -> list[dict[str, Any]]:
    """Every known gateway with its status and the time of its last change."""
    return [asdict(g) for g in store.gateways()]


@router.get("/devices")
def devices(store: StoreDep, gateway: str | None = None) -> list[dict[str, Any]]:
    """Every known device with its status, family and asset."""
    return [asdict(d) for d in store.devices(gateway)]


@router.get("/alarms")
def alarms(store: StoreDep, active: bool = False) -> list[dict[str, Any]]:
    """Alarms deduplicated by source and type, with count and first/last occurrence."""
    return [asdict(a) for a in store.alarms(active_only=active)]


@router.get("/dead-letters")
def dead_letters(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> dict[str, Any]:
    """The total count and the most recent refused payloads (base64)."""
    return {
        "count": store.count_dead_letters(),
        "items": [
            {
                "id": d.id,
                "topic": d.topic,
                "reason": d.reason,
                "received_ms": d.received_ms,
                "payload_b64": base64.b64encode(d.payload).decode(),
            }
            for d in store.dead_letters(limit)
        ],
    }
