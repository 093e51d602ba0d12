"""Alarms: filtered, cursor-paged list; one alarm; acknowledge (sent to the gateway)."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lifeline.collector.api.auth import Operator, ScopedReader
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.paging import (
    Cursor,
    Name,
    PageSize,
    TimeMs,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from lifeline.collector.api.schemas import AckAccepted, AlarmOut, AlarmPage
from lifeline.collector.models import AlarmView
from lifeline.wire import MAX_STR, AlarmState

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"])

StateFilter = Literal["active", "active_unacked", "active_acked", "cleared_unacked", "normal"]
ACTIVE = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)  # `state=active`
UNACKED = (AlarmState.ACTIVE_UNACKED.value, AlarmState.CLEARED_UNACKED.value)  # what ack takes
OutcomeFilter = Literal["case", "work_order", "ignored", "recorded", "pending"]
AlarmId = Annotated[str, Path(min_length=1, max_length=200, description="edge id gateway:epoch:n")]


class AckIn(BaseModel):
    """An acknowledgement; the key's name is recorded as who acknowledged."""

    note: str = Field(default="", max_length=MAX_STR)  # what the wire carries to the gateway


def alarm_doc(a: AlarmView) -> dict[str, Any]:
    """The JSON form of an alarm."""
    doc = asdict(a)
    doc.pop("id")
    return doc


@router.get("", response_model=AlarmPage)
def list_alarms(
    store: StoreDep,
    reader: ScopedReader,
    state: Annotated[list[StateFilter], Query(description="any of these; `active` = both")] = [],  # noqa: B006 - FastAPI copies defaults
    severity: Annotated[
        list[Annotated[int, Field(ge=1, le=4)]], Query(description="1 一级 ... 4 四级")
    ] = [],  # noqa: B006
    gateway: Name = None,
    device: Name = None,
    asset: Name = None,
    since: TimeMs = None,
    until: TimeMs = None,
    outcome: Annotated[
        list[OutcomeFilter],
        Query(description="where they ended: case, work_order, ignored, recorded, pending"),
    ] = [],  # noqa: B006
    limit: PageSize = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Alarm occurrences, newest first, raised in [since, until); stable under new alarms.
    Each says where it ended (`outcome`: its case or work order in `outcome_ref`, or why
    neither in `outcome_reason`; null while the case engine has not handled it yet). A 专业部门
    key sees the alarms of its own departments' cases and work orders only."""
    states: set[str] = set()
    for s in state:
        states.update(ACTIVE if s == "active" else (s,))
    before = cursor_int(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = store.find_alarms(
        states=sorted(states),
        severities=sorted(set(severity)),
        gateway=gateway,
        device=device,
        asset=asset,
        since_ms=since,
        until_ms=until,
        before_id=before,
        limit=limit + 1,
        outcomes=sorted(set(outcome)),
        scope=reader.scope,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [alarm_doc(a) for a in rows],
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
    }


@router.get("/{alarm_id}", response_model=AlarmOut)
def get_alarm(store: StoreDep, reader: ScopedReader, alarm_id: AlarmId) -> dict[str, Any]:
    """One alarm occurrence in its latest state; 404 if there is none of that id (or, for a
    专业部门 key, none of its own departments')."""
    alarm = store.alarm(alarm_id, reader.scope)
    if alarm is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    return alarm_doc(alarm)


@router.post("/{alarm_id}/ack", status_code=202, response_model=AckAccepted)
def acknowledge(
    runtime: RuntimeDep, key: Operator, alarm_id: AlarmId, body: AckIn | None = None
) -> JSONResponse:
    """Send an acknowledgement to the gateway; the new state arrives as alarm.acknowledged.
    404 if there is no such alarm, 409 if it is not active, 422 if the note cannot travel,
    503 if its gateway cannot be reached from this collector."""
    alarm = runtime.store.alarm(alarm_id)
    if alarm is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    if alarm.state not in UNACKED:
        raise HTTPException(409, f"alarm {alarm_id} is {alarm.state}: nothing to acknowledge")
    site = next((g.site for g in runtime.store.gateways() if g.gateway == alarm.gateway), None)
    if site is None or runtime.ingest is None:
        raise HTTPException(503, f"gateway {alarm.gateway} cannot be reached from this collector")
    note = body.note if body else ""
    args: dict[str, Any] = {"alarm_id": alarm_id, "who": key.name, "note": note}
    try:
        command_id = runtime.ingest.send_command(site, alarm.gateway, "ack", args)
    except ConnectionError as exc:
        raise HTTPException(503, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse(
        {
            "alarm_id": alarm_id,
            "gateway": alarm.gateway,
            "command_id": command_id,
            "reply": f"/api/v1/gateways/{alarm.gateway}/commands/{command_id}",
        },
        status_code=202,
    )
