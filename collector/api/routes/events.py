"""The event log: a JSON page for polling and a Server-Sent Events stream that resumes."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lifeline.collector.api.auth import ScopedReader, StreamReader
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.paging import MAX_MS, PageSize
from lifeline.collector.api.problems import dumps
from lifeline.collector.api.schemas import EventPage
from lifeline.collector.event_types import type_patterns
from lifeline.collector.models import EventRecord
from lifeline.collector.store import Store
from lifeline.wire.codes import is_ascii_number

router = APIRouter(prefix="/api/v1/events", tags=["events"])

TypesQ = Annotated[
    str,
    Query(max_length=500, description="comma-separated, e.g. `alarm.*,case.opened` (default all)"),
]
AfterQ = Annotated[int | None, Query(ge=0, le=MAX_MS, description="only events with a larger id")]
POLL_S = 1.0  # look at the database this often anyway (events written by other collectors)
KEEPALIVE_S = 15.0  # also how often an open stream checks that its key is still valid
BATCH = 500


def _key_active(store: Store, key_id: int) -> bool:
    return any(k.id == key_id and k.revoked_ms is None for k in store.api_keys())


def _patterns(types: str) -> list[str]:
    try:
        return type_patterns(types)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("", response_model=EventPage)
def list_events(
    store: StoreDep,
    reader: ScopedReader,
    after: AfterQ = None,
    types: TypesQ = "",
    limit: PageSize = 100,
) -> dict[str, Any]:
    """Events with id > after, oldest first; poll again with after = `last_id`. A 专业部门 key
    gets only the events of its own departments' cases, work orders, alarms and devices; its
    `last_id` may then be past its last item (the events it skipped were not its own)."""
    patterns = _patterns(types)
    if reader.scope is None:
        items = store.events(after or 0, limit, patterns)
        return {"items": [asdict(e) for e in items], "last_id": items[-1].id if items else after}
    # Read up to the newest event now, so a short page can move `last_id` past events of
    # other departments instead of making the next poll read them again.
    upto = store.last_event_id()
    items = store.events(after or 0, limit, patterns, scope=reader.scope, until_id=upto)
    last = items[-1].id if len(items) == limit else max(upto, after or 0)
    return {"items": [asdict(e) for e in items], "last_id": last if last else after}


def _next_batch(
    store: Store, after: int, patterns: list[str], scope: tuple[str, ...] | None
) -> tuple[list[EventRecord], int]:
    """The next events of a stream after `after`, and the id it has read up to (for a scope,
    past the events of other departments it skipped)."""
    if scope is None:
        batch = store.events(after, BATCH, patterns)
        return batch, batch[-1].id if batch else after
    upto = store.last_event_id()
    return store.events(after, BATCH, patterns, scope=scope, until_id=upto), upto


def sse_frame(e: EventRecord) -> str:
    """One SSE message: the event id (for Last-Event-ID), its type and its JSON document."""
    doc = {"id": e.id, "type": e.type, "ts_ms": e.ts_ms, "subject": e.subject, "data": e.data}
    return f"id: {e.id}\nevent: {e.type}\ndata: {dumps(doc)}\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def stream(
    request: Request,
    runtime: RuntimeDep,
    reader: StreamReader,
    types: TypesQ = "",
    after: AfterQ = None,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> StreamingResponse:
    """Server-Sent Events from the log, live. Resume with the Last-Event-ID header (browsers do
    it by themselves) or `after`; with neither, the stream starts at the newest event. The key
    is checked again every keepalive (15 s): a revoked key's stream ends with a `revoked`
    event. A 专业部门 key gets only the events of its own departments' cases, work orders,
    alarms and devices. 400 if Last-Event-ID is not a whole number, 422 for an unknown event
    type."""
    key, scope = reader.key, reader.scope
    patterns = _patterns(types)
    if last_event_id is not None:
        if not is_ascii_number(last_event_id.strip()) or int(last_event_id) > MAX_MS:
            raise HTTPException(400, "Last-Event-ID must be an event id (a whole number)")
        start = int(last_event_id)
    elif after is not None:
        start = after
    else:
        start = await run_in_threadpool(runtime.store.last_event_id)

    async def frames() -> AsyncIterator[str]:
        last = start
        yield "retry: 2000\n: connected\n\n"
        with runtime.notifier.listen() as wake:
            sent = checked = time.monotonic()
            while True:
                if time.monotonic() - checked >= KEEPALIVE_S:
                    checked = time.monotonic()
                    if not await run_in_threadpool(_key_active, runtime.store, key.id):
                        yield "event: revoked\ndata: this API key was revoked\n\n"
                        return
                wake.clear()  # before reading: a publish after the read wakes the wait below
                batch, upto = await run_in_threadpool(
                    _next_batch, runtime.store, last, patterns, scope
                )
                for e in batch:
                    yield sse_frame(e)
                    last = e.id
                if len(batch) == BATCH:
                    continue
                last = max(last, upto)  # what a scope skipped is not read again
                if batch:
                    sent = time.monotonic()
                elif time.monotonic() - sent >= KEEPALIVE_S:
                    sent = time.monotonic()
                    yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_S)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
