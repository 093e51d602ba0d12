"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from collector.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers and (if ingesting) our subscriptions are active."""
    body: dict[str, Any] = {"backend": runtime.store.backend}
    ok = True
    try:
        body["dead_letters"] = runtime.store.count_dead_letters()
    except Exception as exc:  # any database failure means not ready
        ok = False
        body["database"] = f"error: {exc}"
    if runtime.ingest is not None:
        stats = runtime.ingest.stats
        body["mqtt_connected"] = stats.connected
        body["mqtt_subscribed"] = runtime.ingest.ready
        body["ingest"] = {
            "received": stats.received,
            "readings": stats.readings,
            "duplicates": stats.duplicates,
            "dead_letters": stats.dead_letters,
            "store_errors": stats.store_errors,
        }
        ok = ok and runtime.ingest.ready
    body["status"] = "ready" if ok else "not ready"
    return JSONResponse(body, status_code=200 if ok else 503)
