"""Readings: raw, bucketed and latest values."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from lifeline.collector.api.auth import Reader, ScopedReader
from lifeline.collector.api.deps import StoreDep
from lifeline.collector.api.names import find_device, gateway_of
from lifeline.collector.api.paging import MAX_MS
from lifeline.collector.api.schemas import BucketOut, ReadingOut
from lifeline.collector.models import Bucket, Reading
from lifeline.wire import Quality

router = APIRouter(prefix="/api/v1", tags=["readings"])


def _out(r: Reading) -> ReadingOut:
    return ReadingOut(
        gateway=r.gateway,
        device=r.device,
        point=r.point,
        ts_ms=r.ts_ms,
        value=r.value,
        quality=Quality(r.quality),
        historical=r.historical,
        received_ms=r.received_ms,
    )


MAX_RAW = 10_000
MAX_BUCKETS = 10_000
MAX_SERIES_RANGE_MS = 400 * 86_400_000
Device = Annotated[str, Query(min_length=1, max_length=200)]
Point = Annotated[str, Query(min_length=1, max_length=200)]
Gateway = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="the device's gateway (needed when several gateways have that device id)",
    ),
]


def _gateway(store: StoreDep, reader: Reader, device: str, gateway: str | None) -> str | None:
    """The gateway to read `device` from (names.gateway_of); for a 专业部门 key, 404 unless the
    device is one of its own cases' or work orders' (scope_sql)."""
    if reader.scope is None:
        return gateway_of(store, device, gateway)
    found = find_device(store, device, gateway, reader.scope)
    if found is None:
        raise HTTPException(404, f"no device {device}")
    return found.gateway


@router.get("/readings")
def readings(
    store: StoreDep,
    reader: ScopedReader,
    device: Device,
    point: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_MS, description="UTC ms, inclusive")] = None,
    until: Annotated[int | None, Query(ge=0, le=MAX_MS, description="UTC ms, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RAW)] = 1000,
    gateway: Gateway = None,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="asc: oldest first (the first `limit`); desc: newest first (the last)"),
    ] = "asc",
) -> list[ReadingOut]:
    """Raw readings of a device (optionally one point) in [since, until), oldest first, or
    with `order=desc` newest first: the most recent `limit` readings, as a chart wants them.
    404 for a 专业部门 key and a device not of its own cases or work orders."""
    gw = _gateway(store, reader, device, gateway)
    rows = store.readings(device, point, since, until, limit, gw, newest_first=order == "desc")
    return [_out(r) for r in rows]


@router.get("/series")
def series(
    store: StoreDep,
    reader: ScopedReader,
    device: Device,
    point: Point,
    since: Annotated[int, Query(ge=0, le=MAX_MS, description="UTC ms, inclusive")],
    until: Annotated[int, Query(ge=0, le=MAX_MS, description="UTC ms, exclusive")],
    bucket_ms: Annotated[int, Query(ge=1000, le=MAX_SERIES_RANGE_MS)] = 60_000,
    gateway: Gateway = None,
) -> list[BucketOut]:
    """Min/avg/max of numeric readings per bucket (aligned to the epoch), ≤ 10 000 buckets;
    422 for an empty or reversed range, one over 400 days, or too many buckets; 404 for a
    专业部门 key and a device not of its own cases or work orders."""
    if until <= since:
        raise HTTPException(422, "until must be after since")
    if until - since > MAX_SERIES_RANGE_MS:
        raise HTTPException(422, "the range is limited to 400 days")
    if (until - since) // bucket_ms > MAX_BUCKETS:
        raise HTTPException(422, "too many buckets: widen bucket_ms or narrow the range")
    gw = _gateway(store, reader, device, gateway)
    buckets: list[Bucket] = store.series(device, point, since, until, bucket_ms, gw)
    return [
        BucketOut(ts_ms=b.ts_ms, count=b.count, min=b.min, avg=b.avg, max=b.max) for b in buckets
    ]


@router.get("/latest")
def latest(
    store: StoreDep,
    reader: ScopedReader,
    device: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    gateway: Gateway = None,
) -> list[ReadingOut]:
    """The newest reading of every (gateway, device, point), optionally of one device (409
    with the candidates if several gateways have that id and none is named) or gateway; for a
    专业部门 key, of its own cases' and work orders' devices (404 for another device)."""
    if device is not None:
        gateway = _gateway(store, reader, device, gateway)
    return [_out(r) for r in store.latest(device, gateway, reader.scope)]
