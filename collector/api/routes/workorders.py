"""Device maintenance work orders (设备运维工单) and the device online rate."""

from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field, field_validator, model_validator

from lifeline.collector.api.auth import ScopedReader
from lifeline.collector.api.deps import NowMs, RuntimeDep, StoreDep
from lifeline.collector.api.paging import (
    CASE_NO_PATTERN,
    Cursor,
    Name,
    PageSize,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from lifeline.collector.api.routes.cases import Text, alarm_snapshot
from lifeline.collector.api.schemas import WorkOrderDetail, WorkOrderOut, WorkOrderPage
from lifeline.collector.cases.duties import may_work, work_refusal
from lifeline.collector.cases.engine import CaseNotFound
from lifeline.collector.cases.workflow import Closure
from lifeline.collector.cases.workorders import (
    IllegalWorkOrderAction,
    WorkOrder,
    WorkOrderAction,
    WorkOrderState,
    work_order_colour,
)
from lifeline.collector.departments import check_actor
from lifeline.collector.models import AlarmLink
from lifeline.collector.online import OnlineRate, online_rate
from lifeline.collector.store import Conflict

router = APIRouter(prefix="/api/v1", tags=["work orders"])

OrderNo = Annotated[str, Path(pattern=CASE_NO_PATTERN, description="work-order number")]
HOUR_MS = 3_600_000


class OrderAction(StrEnum):
    """What a maintainer may post (the system's own auto_close is not)."""

    ACCEPT = "accept"  # 接单
    COMPLETE = "complete"  # 完工, with `closure` 处置完成 (default) or 误报


class OrderActionIn(BaseModel):
    """An action on a work order."""

    action: OrderAction
    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="who acts for the key, kept as `on_behalf_of` (the actor is the key)",
    )
    note: Text = Field(default="", max_length=2000)  # free text: collector.text
    closure: Literal["处置完成", "误报"] | None = Field(
        default=None, description="for complete: 处置完成 (default) or 误报"
    )

    @field_validator("actor")
    @classmethod
    def _actor(cls, v: str | None) -> str | None:
        return None if v is None else check_actor(v)

    @model_validator(mode="after")
    def _closure_with_complete(self) -> "OrderActionIn":
        if self.closure is not None and self.action is not OrderAction.COMPLETE:
            raise ValueError(f"`closure` goes with complete, not {self.action.value}")
        return self


def work_order_doc(
    order: WorkOrder, now_ms: int, alarms: list[AlarmLink] | None = None
) -> dict[str, Any]:
    """The JSON form of a work order with its deadline colour now and its alarms."""
    body = asdict(order)
    del body["version"]  # the store's guard against lost updates, not part of the record
    body["state"] = order.state.value
    body["colour"] = work_order_colour(order, now_ms).value
    body["alarms"] = [alarm_snapshot(k) for k in alarms or []]
    return body


@router.get("/work-orders", response_model=WorkOrderPage)
def list_work_orders(
    store: StoreDep,
    reader: ScopedReader,
    now: NowMs,
    state: Annotated[list[WorkOrderState], Query(description="any of these states")] = [],  # noqa: B006 - FastAPI copies defaults
    open_only: bool = False,
    department: Name = None,
    gateway: Name = None,
    device: Name = None,
    limit: PageSize = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Work orders, newest first, with their deadline colour and alarms; `next_cursor` pages
    on (null: done). A 专业部门 key sees only those its departments maintain."""
    states = {s.value for s in state}
    if open_only:
        states = (states or {s.value for s in WorkOrderState}) - {WorkOrderState.DONE.value}
        if not states:
            return {"items": [], "next_cursor": None}
    before = None
    if cursor:
        created, order_no = decode_cursor(cursor, 2)
        before = (cursor_int(created), order_no)
    rows = store.find_work_orders(
        states=sorted(states),
        department=department,
        gateway=gateway,
        device=device,
        before=before,
        limit=limit + 1,
        scope=reader.scope,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    links = store.links_for([o.order_no for o in rows])
    return {
        "items": [work_order_doc(o, now, links.get(o.order_no, [])) for o in rows],
        "next_cursor": encode_cursor(rows[-1].created_ms, rows[-1].order_no) if more else None,
    }


@router.get("/work-orders/{order_no}", response_model=WorkOrderDetail)
def get_work_order(
    store: StoreDep, reader: ScopedReader, now: NowMs, order_no: OrderNo
) -> dict[str, Any]:
    """One work order with its alarms and audit trail; 404 if there is none of that number (or,
    for a 专业部门 key, none its departments maintain)."""
    order = store.work_order(order_no, reader.scope)
    if order is None:
        raise HTTPException(404, f"no work order {order_no}")
    body = work_order_doc(order, now, store.links(order_no))
    body["audit"] = [
        {
            "order_no": a.case_no,
            "ts_ms": a.ts_ms,
            "actor": a.actor,
            "action": a.action,
            "from_state": a.from_state,
            "to_state": a.to_state,
            "note": a.note,
            "key_id": a.key_id,
            "role": a.role,
            "on_behalf_of": a.on_behalf_of,
        }
        for a in store.work_order_audit(order_no)
    ]
    return body


@router.post("/work-orders/{order_no}/actions", response_model=WorkOrderOut)
def act_on_work_order(
    runtime: RuntimeDep, reader: ScopedReader, order_no: OrderNo, body: OrderActionIn
) -> dict[str, Any]:
    """接单 (accept) or 完工 (complete, with its closure), by a dispatcher, operator or admin
    key, or a 专业部门 key on a work order its departments maintain (404 for another, as if
    there were none); 403 for any other key, 409 if the work order's state does not allow it
    now. Audited under the key (`actor`, `key_id`, `role`)."""
    key, action = reader.key, WorkOrderAction(body.action.value)
    if not may_work(key.role, action):
        raise HTTPException(403, work_refusal(key, action))
    if reader.scope is not None and runtime.store.work_order(order_no, reader.scope) is None:
        raise HTTPException(404, f"no work order {order_no}")
    try:
        order = runtime.cases.act_on_work_order(
            order_no,
            action,
            key.name,
            body.note,
            Closure(body.closure) if body.closure else None,
            key_id=key.id,
            role=key.role.value,
            on_behalf_of=body.actor or "",
        )
    except CaseNotFound:
        raise HTTPException(404, f"no work order {order_no}") from None
    except (IllegalWorkOrderAction, Conflict) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.event_pump.kick()
    return work_order_doc(order, runtime.cases.now_ms(), runtime.store.links(order_no))


@router.get("/stats/online-rate", response_model=OnlineRate)
def device_online_rate(
    store: StoreDep,
    reader: ScopedReader,
    now: NowMs,
    window_h: Annotated[
        float, Query(gt=0, le=24 * 366, description="hours back from now for the time share")
    ] = 24,
    gateway: Name = None,
) -> dict[str, Any]:
    """Device online rate: the share online now, and the share of observed time online over
    the last `window_h` hours (docs/integration.md defines both); for a 专业部门 key, of the
    devices of its own cases and work orders."""
    since = now - int(window_h * HOUR_MS)
    devices = store.devices(gateway, scope=reader.scope)
    history = store.device_history(since, now, reader.scope)
    return asdict(online_rate(devices, history, since, now))
