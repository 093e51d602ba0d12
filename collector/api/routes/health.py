"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lifeline.collector.api.auth import MaybeViewer
from lifeline.collector.api.deps import RuntimeDep
from lifeline.collector.api.schemas import ReadyOut
from lifeline.collector.partitions import PartitionedIngest
from lifeline.collector.store import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready: `reasons` says why"}},
)
async def readyz(runtime: RuntimeDep, key: MaybeViewer) -> JSONResponse:
    """Ready when the database answers, commits succeed and (if ingesting) the broker gives
    what ingest relies on; otherwise 503. Answers within a few seconds even when the database
    is unreachable. Without a key only `{"status": "ready" | "not ready"}`; with any valid
    key also every reason, the backend, the ingest counters (what the public must not learn:
    the database's and the broker's errors, the traffic) and `warnings`: degradations that
    leave it ready, such as a working calendar that does not list a coming year's 调休."""
    body: dict[str, Any] = {"backend": runtime.store.backend}
    reasons: list[str] = []
    try:
        await run_in_threadpool(runtime.store.ping)
        body["dead_letters"] = await run_in_threadpool(runtime.store.count_dead_letters)
    except StoreError as exc:
        reasons.append(f"database: {exc}")
    if runtime.ingest is not None:
        ingest = runtime.ingest
        stats = ingest.stats
        body["mqtt_connected"] = stats.connected
        body["mqtt_subscribed"] = ingest.ready
        body["ingest"] = {
            "received": stats.received,
            "readings": stats.readings,
            "duplicates": stats.duplicates,
            "dead_letters": stats.dead_letters,
            "store_errors": stats.store_errors,
            "poisoned": stats.poisoned,
        }
        if isinstance(ingest, PartitionedIngest):
            body["partitions"] = {"held": ingest.held, "handovers": ingest.handovers}
        reasons.extend(ingest.problems())
    reasons.extend(runtime.problems())
    warnings = runtime.calendar_warnings()
    if warnings:
        body["warnings"] = warnings
    status = "not ready" if reasons else "ready"
    public = {"status": status}
    body = {**body, "status": status, "reasons": reasons} if key is not None else public
    checked = ReadyOut.model_validate(body).model_dump(mode="json", exclude_unset=True)
    return JSONResponse(checked, status_code=503 if reasons else 200)
