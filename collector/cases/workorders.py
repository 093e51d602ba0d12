"""Device maintenance work orders (设备运维工单) as pure code with an injected clock.

A device-health alarm (comm loss, stale data, low battery, sensor fault, sensor life or
calibration due) is about the monitoring device, not the city: it goes to the device's
maintainer as a work order, apart from the 数字城管 cases, with its own deadline (running from
when it is opened): 待接单 → 处理中 → 已完成. A device that recovers before anyone took the order
closes it as 自动恢复 where configured; after 接单 the recovery is only noted, and the
maintainer completes it (处置完成, or 误报 when the device was fine).
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from lifeline.collector.cases.workflow import Audit, Closure, Colour, Place


class WorkOrderState(StrEnum):
    """Where a work order is."""

    OPEN = "待接单"  # waiting for the maintainer to take it
    ACCEPTED = "处理中"  # the maintainer is on it
    DONE = "已完成"


class WorkOrderAction(StrEnum):
    """What a maintainer (or the system) can do to a work order."""

    ACCEPT = "accept"  # 接单
    COMPLETE = "complete"  # 完工: closure 处置完成 or 误报
    AUTO_CLOSE = "auto_close"  # system: the device recovered before 接单 (自动恢复)


W = WorkOrderState
WORK_ORDER_TRANSITIONS: dict[tuple[WorkOrderAction, WorkOrderState], WorkOrderState] = {
    (WorkOrderAction.ACCEPT, W.OPEN): W.ACCEPTED,
    (WorkOrderAction.COMPLETE, W.OPEN): W.DONE,
    (WorkOrderAction.COMPLETE, W.ACCEPTED): W.DONE,
    (WorkOrderAction.AUTO_CLOSE, W.OPEN): W.DONE,
}


class IllegalWorkOrderAction(ValueError):
    """An action a work order in its current state does not allow."""

    def __init__(self, order_no: str, action: WorkOrderAction, state: WorkOrderState) -> None:
        allowed = sorted(
            a.value
            for (a, s) in WORK_ORDER_TRANSITIONS
            if s is state and a is not WorkOrderAction.AUTO_CLOSE
        )
        super().__init__(
            f"work order {order_no}: cannot {action.value} a work order in state {state.value}"
            f" (allowed here: {', '.join(allowed) or 'nothing, it is finished'})"
        )


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """One 设备运维工单 for one device and one problem."""

    order_no: str
    problem: str
    title: str
    gateway: str
    device: str
    asset: str | None
    state: WorkOrderState
    severity: int
    urgency: str
    department: str  # the device's maintainer
    created_ms: int
    updated_ms: int
    deadline_ms: int
    allowed_ms: int
    repeats: int = 0
    closure: str | None = None
    recurrence_of: str | None = None
    location: Place = field(default_factory=Place)
    # The stored row's version it was read at (a save over another is a Conflict); no part of
    # the record, so not of equality either.
    version: int = field(default=0, compare=False)

    @property
    def subject(self) -> str:
        """The device, named with its gateway: one open work order per (subject, problem)."""
        return f"{self.gateway}/{self.device}"


def open_work_order(
    *,
    order_no: str,
    problem: str,
    title: str,
    gateway: str,
    device: str,
    asset: str | None,
    severity: int,
    urgent: bool,
    department: str,
    allowed_ms: int,
    now_ms: int,
    note: str = "",
    location: Place | None = None,
    recurrence_of: str | None = None,
) -> tuple[WorkOrder, Audit]:
    """A new work order, 待接单, due `allowed_ms` from now; and its first audit row."""
    order = WorkOrder(
        order_no=order_no,
        problem=problem,
        title=title,
        gateway=gateway,
        device=device,
        asset=asset,
        state=W.OPEN,
        severity=severity,
        urgency="urgent" if urgent else "normal",
        department=department,
        created_ms=now_ms,
        updated_ms=now_ms,
        deadline_ms=now_ms + allowed_ms,
        allowed_ms=allowed_ms,
        recurrence_of=recurrence_of,
        location=location or Place(),
    )
    return order, Audit(order_no, now_ms, "system", "open", None, W.OPEN.value, note)


def act_on(
    order: WorkOrder,
    action: WorkOrderAction,
    *,
    actor: str,
    now_ms: int,
    note: str = "",
    closure: Closure | None = None,
) -> tuple[WorkOrder, Audit]:
    """Apply `action` at `now_ms`; raise IllegalWorkOrderAction, or ValueError for a closure
    a person may not give (自动恢复 is the system's)."""
    if not actor:
        raise ValueError(f"work order {order.order_no}: every transition needs an actor")
    target = WORK_ORDER_TRANSITIONS.get((action, order.state))
    if target is None:
        raise IllegalWorkOrderAction(order.order_no, action, order.state)
    updated = replace(order, state=target, updated_ms=now_ms)
    if action is WorkOrderAction.COMPLETE:
        kind = closure or Closure.DONE
        if kind is Closure.AUTO:
            raise ValueError("自动恢复 is recorded by the system only, before 接单")
        updated = replace(updated, closure=kind.value)
        note = f"完工: {kind.value}" + (f": {note}" if note else "")
    elif action is WorkOrderAction.AUTO_CLOSE:
        updated = replace(updated, closure=Closure.AUTO.value)
    audit = Audit(
        order.order_no, now_ms, actor, action.value, order.state.value, target.value, note
    )
    return updated, audit


def work_order_colour(order: WorkOrder, now_ms: int) -> Colour:
    """Deadline light of an unfinished work order: green, yellow (< 1/4 left), red (overdue)."""
    if order.state is W.DONE:
        return Colour.NONE
    if now_ms > order.deadline_ms:
        return Colour.RED
    total = max(order.allowed_ms, 1)
    return Colour.YELLOW if (order.deadline_ms - now_ms) * 4 < total else Colour.GREEN
