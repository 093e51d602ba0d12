"""Readings: raw, bucketed and latest values."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from collector.api.deps import StoreDep
from collector.models import Bucket, Reading
from wire.messages import Value

router = APIRouter(prefix="/api/v1", tags=["readings"])


class ReadingOut(BaseModel):
    """One reading; `ts_ms` is the UTC sample time at the edge in milliseconds."""

    gateway: str
    device: str
    point: str
    ts_ms: int
    value: Value
    quality: str
    historical: bool


class BucketOut(BaseModel):
    """Aggregate of one time bucket starting at `ts_ms`."""

    ts_ms: int
    count: int
    min: float
    avg: float
    max: float


def _out(r: Reading) -> ReadingOut:
    return ReadingOut(
        gateway=r.gateway,
        device=r.device,
        point=r.point,
        ts_ms=r.ts_ms,
        value=r.value,
        quality=r.quality,
        historical=r.historical,
    )


@router.get("/readings")
def readings(
    store: StoreDep,
    device: str,
    point: str | None = None,
    since: Annotated[int | None, Query(description="UTC ms, inclusive")] = None,
    until: Annotated[int | None, Query(description="UTC ms, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> list[ReadingOut]:
    """Raw readings of a device (optionally one point) in [since, until), oldest first."""
    return [_out(r) for r in store.readings(device, point, since, until, limit)]


@router.get("/series")
def series(
    store: StoreDep,
    device: str,
    point: str,
    since: int,
    until: int,
    bucket_ms: Annotated[int, Query(ge=1)] = 60_000,
) -> list[BucketOut]:
    """Min/avg/max of numeric readings per bucket (buckets aligned to the epoch)."""
    if until <= since:
        raise HTTPException(422, "until must be after since")
    if (until - since) // bucket_ms > 100_000:
        raise HTTPException(422, "too many buckets: widen bucket_ms or narrow the range")
    buckets: list[Bucket] = store.series(device, point, since, until, bucket_ms)
    return [
        BucketOut(ts_ms=b.ts_ms, count=b.count, min=b.min, avg=b.avg, max=b.max) for b in buckets
    ]


@router.get("/latest")
def latest(store: StoreDep, device: str | None = None) -> list[ReadingOut]:
    """The newest reading of every (device, point)."""
    return [_out(r) for r in store.latest(device)]
