"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from collector.api.deps import RuntimeDep
from collector.partitions import PartitionedIngest
from collector.store import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers, commits succeed and (if ingesting) the broker gives
    what ingest relies on; otherwise 503 with every reason. Answers within a few seconds even
    when the database is unreachable."""
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
    body["status"] = "not ready" if reasons else "ready"
    body["reasons"] = reasons
    return JSONResponse(body, status_code=503 if reasons else 200)
