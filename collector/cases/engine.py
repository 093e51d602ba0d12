"""The case engine: turns stored alarm transitions into cases and applies operator actions."""

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from collector.assets import Asset
from collector.cases.routing import Route, Routing
from collector.cases.workflow import (
    Action,
    Audit,
    Case,
    CaseState,
    apply,
    needs_escalation,
    open_case,
)
from collector.models import ORIGIN_BIRTH, RECONCILED, AlarmTransition
from collector.store import Conflict, Store
from wire import AlarmState

log = logging.getLogger(__name__)

SYSTEM = "system"
HOUR_MS = 3_600_000
_ACTIVE = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)
_CLEARABLE = (CaseState.REGISTERED, CaseState.DISPATCHED, CaseState.HANDLING, CaseState.FEEDBACK)


def _origin_note(t: AlarmTransition) -> str:
    """What an audit adds when the transition came from a birth's alarm picture."""
    return f" ({RECONCILED})" if t.origin == ORIGIN_BIRTH else ""


class CaseNotFound(KeyError):
    """No case with that number."""


class CaseEngine:
    """Applies the routing table to alarm transitions; every change goes through the workflow."""

    def __init__(self, store: Store, routing: Routing, clock: Callable[[], float]) -> None:
        self.store = store
        self.routing = routing
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def process_pending(self, limit: int = 500) -> int:
        """Handle stored alarm transitions not yet seen by the engine; return how many."""
        pending = self.store.pending_alarm_transitions(limit)
        families: dict[tuple[str, str], str] = {}
        for t in pending:
            if (t.gateway, t.device) not in families:
                families.update(
                    {(d.gateway, d.device): d.family for d in self.store.devices(t.gateway)}
                )
            self._handle(t, families.get((t.gateway, t.device), ""))
        return len(pending)

    def _handle(self, t: AlarmTransition, family: str) -> None:
        route = self.routing.match(family, t.alarm_type, t.point)
        asset = self.store.asset_of_device(t.gateway, t.device) if route else None
        if route is None or (asset is None and route.event_subcategory is None):
            self.store.mark_transitions_handled([t.id])
            return
        subject = asset.code if asset else f"{t.gateway}/{t.device}"
        current = self.store.open_case_for(subject, route.problem)
        now = self._now_ms()
        if t.state in _ACTIVE:
            if current is None:
                case, audits = self._new_case(t, route, asset, now)
                self.store.save_case(case, audits, expect_state=None, transition_ids=[t.id])
                log.info("case %s opened (%s) for %s", case.case_no, case.state, subject)
            else:
                self._attach(current, t, now)
        elif (
            current is not None
            and current.state in _CLEARABLE
            and not self._still_active(t.gateway, t.device, family, route.problem)
        ):
            case, audit = apply(
                current,
                Action.ALARM_CLEARED,
                actor=SYSTEM,
                now_ms=now,
                note=f"alarm {t.alarm_id} cleared" + _origin_note(t),
            )
            audits = [audit]
            if self.routing.auto_close:
                case, audit = apply(case, Action.CLOSE, actor=SYSTEM, now_ms=now, note="auto-close")
                audits.append(audit)
            self.store.save_case(
                case, audits, expect_state=current.state.value, transition_ids=[t.id]
            )
        elif current is not None:
            self.store.save_case(
                current, [], expect_state=current.state.value, transition_ids=[t.id]
            )
        else:
            self.store.mark_transitions_handled([t.id])

    def _still_active(self, gateway: str, device: str, family: str, problem: str) -> bool:
        """Whether another alarm of the same problem on this device is still active."""
        for a in self.store.alarms(active_only=True):
            if (a.gateway, a.device) != (gateway, device):
                continue
            route = self.routing.match(family, a.alarm_type, a.point)
            if route is not None and route.problem == problem:
                return True
        return False

    def _attach(self, case: Case, t: AlarmTransition, now: int) -> None:
        audits: list[Audit] = []
        if t.state == AlarmState.ACTIVE_UNACKED.value:
            case = replace(case, repeats=case.repeats + 1, updated_ms=now)
            audits.append(
                Audit(
                    case.case_no,
                    now,
                    SYSTEM,
                    "attach",
                    case.state.value,
                    case.state.value,
                    f"repeat alarm {t.alarm_id} ({t.alarm_type} on {t.gateway}/{t.device}"
                    f" {t.point})",
                )
            )
        self.store.save_case(case, audits, expect_state=case.state.value, transition_ids=[t.id])

    def _new_case(
        self, t: AlarmTransition, route: Route, asset: Asset | None, now: int
    ) -> tuple[Case, list[Audit]]:
        urgent = t.severity <= route.urgent_severity
        if asset is not None:
            kind, sub, area, grid = "部件", asset.subcategory, asset.area, asset.grid or None
            dept = asset.owner if route.department == "owner" else asset.maintainer
        else:
            assert route.event_subcategory is not None
            kind, sub, area, grid = "事件", route.event_subcategory, self.routing.area_code, None
            dept = self.routing.default_department
        local = datetime.fromtimestamp(now / 1000, UTC) + timedelta(
            hours=self.routing.utc_offset_hours
        )
        prefix = f"{area}{local:%Y%m%d}"
        case_no = f"{prefix}{self.store.next_case_serial(prefix):04d}"
        hours = self.routing.allowed_hours(sub, urgent)
        case, audits = open_case(
            case_no=case_no,
            kind=kind,
            subcategory=sub,
            problem=route.problem,
            asset=asset.code if asset else None,
            device=t.device,
            urgency="urgent" if urgent else "normal",
            department=dept,
            grid=grid,
            allowed_ms=int(hours * HOUR_MS),
            auto_register=route.auto_register,
            actor=SYSTEM,
            now_ms=now,
            title=route.title or route.problem,
            gateway=t.gateway,
            note=f"alarm {t.alarm_id}: {t.message or t.alarm_type} (value {t.value})"
            + _origin_note(t),
        )
        if route.auto_dispatch and case.state is CaseState.REGISTERED:
            case, audit = apply(
                case, Action.DISPATCH, actor=SYSTEM, now_ms=now, note=f"auto-派遣 to {dept}"
            )
            audits.append(audit)
        return case, audits

    def act(
        self, case_no: str, action: Action, actor: str, note: str = "", extend_hours: float = 0
    ) -> Case:
        """Apply an operator action; raise IllegalTransition, CaseNotFound or Conflict."""
        case = self.store.case(case_no)
        if case is None:
            raise CaseNotFound(case_no)
        updated, audit = apply(
            case,
            action,
            actor=actor,
            now_ms=self._now_ms(),
            note=note,
            extend_ms=int(extend_hours * HOUR_MS),
        )
        self.store.save_case(updated, [audit], expect_state=case.state.value)
        return updated

    def escalate_overdue(self) -> list[str]:
        """Raise a 督办 on every overdue case not yet escalated; return their numbers."""
        now = self._now_ms()
        escalated = []
        for case in self.store.cases(open_only=True):
            if not needs_escalation(case, now):
                continue
            updated, audit = apply(
                case, Action.ESCALATE, actor=SYSTEM, now_ms=now, note="overdue: 督办"
            )
            try:
                self.store.save_case(updated, [audit], expect_state=case.state.value)
            except Conflict:
                continue  # someone acted on it meanwhile; the next tick looks again
            log.warning("case %s is overdue: 督办 raised", case.case_no)
            escalated.append(case.case_no)
        return escalated
