"""The case engine: turns stored alarm transitions into cases and work orders, and applies
operator actions.

Every alarm occurrence is decided once, when it is first seen active: the routing table says
whether it becomes a 部件 or 事件 case, a device work order, or nothing (an explicit ignore, or
a severity 3-4 alarm no route takes), and the decision is stored with a snapshot of the alarm
(`alarm_links`). Later transitions of it (acknowledged, cleared) only add evidence to where it
went; they never open anything. An occurrence is one activation of an edge alarm id: ISA-18.2
lets an alarm that cleared unacknowledged return under the same id, and that return is a new
occurrence (the leak is back).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from lifeline.collector.assets import Asset
from lifeline.collector.cases import phases as clock
from lifeline.collector.cases.calendar import DEFAULT_CALENDAR, Unit, WorkCalendar
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.routing import Decision, Outcome, Routing
from lifeline.collector.cases.workflow import (
    GRANTED_ONLY,
    PUBLIC,
    REQUESTS,
    SYSTEM_ACTIONS,
    UNCLASSIFIED,
    Action,
    Args,
    Audit,
    Case,
    CaseState,
    Classification,
    Closure,
    Place,
    apply,
    open_case,
)
from lifeline.collector.cases.workorders import (
    WorkOrder,
    WorkOrderAction,
    WorkOrderState,
    act_on,
    open_work_order,
)
from lifeline.collector.departments import Directory
from lifeline.collector.errors import Conflict
from lifeline.collector.grids import Grid, GridMap, place
from lifeline.collector.models import (
    ORIGIN_BIRTH,
    RECONCILED,
    AlarmLink,
    AlarmTransition,
    ApiKey,
    DeviceState,
    ReportClaim,
)
from lifeline.collector.profiles import Catalog, shipped_catalog
from lifeline.collector.store.base import (
    CaseHandlingStore,
    DepartmentStore,
    DeviceAssetStore,
    DeviceStore,
    WorkOrderHandlingStore,
)
from lifeline.wire import AlarmState

log = logging.getLogger(__name__)

SYSTEM = "system"
HOUR_MS = 3_600_000
_ACTIVE = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)
_BEFORE_DISPATCH = (CaseState.REPORTED, CaseState.REGISTERED)
_DONE_BY_DEPARTMENT = (CaseState.FEEDBACK, CaseState.VERIFYING)
_FINISHED = (CaseState.CLOSED, CaseState.VOIDED)
# How often an operator's action is read and applied again when another writer saved the case
# (or work order) between its read and its save. Every round of a race lets one writer
# through, so this many writers of one case at once all get through; more answer Conflict.
_ATTEMPTS = 32


def _origin_note(t: AlarmTransition) -> str:
    """What an audit adds when the transition came from a birth's alarm picture."""
    return f" ({RECONCILED})" if t.origin == ORIGIN_BIRTH else ""


def _describe(t: AlarmTransition) -> str:
    return (
        f"alarm {t.alarm_id}: {t.message or t.alarm_type} (severity {t.severity},"
        f" value {t.value})" + _origin_note(t)
    )


class CaseNotFound(KeyError):
    """No case (or work order) with that number."""


class ReportReused(ValueError):
    """A client's report id given again with other fields than the report it names."""


class EngineStore(
    CaseHandlingStore,
    WorkOrderHandlingStore,
    DeviceStore,
    DeviceAssetStore,
    DepartmentStore,
    Protocol,
):
    """The parts of the store ports the engine takes (collector.store.Store provides them)."""


def place_of(asset: Asset | None, device: DeviceState | None) -> Place:
    """Where a case or work order is: the asset's recorded place, else the device's own install
    location (from its gateway's birth), else nothing known (source `none`)."""
    if asset is not None and asset.lon is not None:
        return Place(asset.lon, asset.lat, asset.datum, asset.address, "asset")
    loc = device.location if device is not None else None
    if loc is not None:
        address = loc.address or (asset.address if asset is not None else "")
        return Place(loc.lon, loc.lat, loc.datum, address, "device")
    if asset is not None and asset.address:
        return Place(None, None, asset.datum, asset.address, "asset")
    return Place()


class CaseEngine:
    """Applies the routing table to alarm transitions; every change goes through the workflow."""

    def __init__(
        self,
        store: EngineStore,
        routing: Routing,
        clock: Callable[[], float],
        catalog: Catalog | None = None,
        calendar: WorkCalendar = DEFAULT_CALENDAR,
        grids: GridMap | None = None,
    ) -> None:
        self.store = store
        self.routing = routing
        self.catalog = catalog if catalog is not None else shipped_catalog()
        self.calendar = calendar
        self.grids = grids
        self._clock = clock
        # Routings that passed over a department the registry does not hold (/metrics), and
        # the names already logged (once each: an unregistered owner recurs with every alarm).
        self.unregistered_total = 0
        self._unregistered_logged: set[str] = set()

    def now_ms(self) -> int:
        """The engine clock's time, in ms since the Unix epoch."""
        return int(self._clock() * 1000)

    def directory(self) -> Directory:
        """The department registry as routing reads it now (a rename or an addition made
        through the API or the CLI counts from the next decision)."""
        registry = {d.code: d.name for d in self.store.departments()}
        return Directory.of(registry, self.store.department_names(), self.routing.departments)

    def _center(self) -> str:
        """The command centre's registered name now: it holds 受理, 立案, 派遣 and 核查."""
        return self.routing.command_center(self.directory())

    def _passed_over(self, unregistered: Sequence[str], department: str, what: str) -> None:
        """Count a routing that passed over unregistered departments; log each name once."""
        if not unregistered:
            return
        self.unregistered_total += 1
        for name in unregistered:
            if name not in self._unregistered_logged:
                self._unregistered_logged.add(name)
                log.warning(
                    "%s: department %r is not in the department registry; routed to %s"
                    " instead (register it, or fix the asset or grid file; said once per name)",
                    what,
                    name,
                    department,
                )

    # --- alarm transitions --------------------------------------------------------------------

    def process_pending(self, limit: int = 500) -> int:
        """Handle stored alarm transitions not yet seen by the engine; return how many.

        A pass stops early at a conflict (another collector or an operator changed the same
        case meanwhile): the transitions left are taken up by the next pass.
        """
        pending = self.store.pending_alarm_transitions(limit)
        devices: dict[tuple[str, str], DeviceState] = {}
        handled = 0
        for t in pending:
            if (t.gateway, t.device) not in devices:
                devices.update({(d.gateway, d.device): d for d in self.store.devices(t.gateway)})
            try:
                self._handle(t, devices.get((t.gateway, t.device)))
            except Conflict as exc:
                log.info("alarm %s: %s; trying again on the next pass", t.alarm_id, exc)
                break
            handled += 1
        return handled

    def _handle(self, t: AlarmTransition, device: DeviceState | None) -> None:
        now = self.now_ms()
        known = self.store.link(t.alarm_id)
        returned = known is not None and known.cleared_ms is not None and t.state in _ACTIVE
        if known is not None and not returned:
            self._again(t, known, now)
            return
        if t.state not in _ACTIVE:
            # Cleared before this collector ever saw it active: nothing to open or close.
            self.store.mark_transitions_handled([t.id])
            return
        asset = self.store.asset_of_device(t.gateway, t.device)
        decision = self.routing.decide(
            family=device.family if device else "",
            alarm_type=t.alarm_type,
            point=t.point,
            severity=t.severity,
            asset=asset,
            gateway=t.gateway,
            device=t.device,
            grid=self.grid_of(asset, device),
            directory=self.directory(),
        )
        self._passed_over(decision.unregistered, decision.department, f"alarm {t.alarm_id}")
        link = self._snapshot(t, device, decision, now)
        if known is not None:
            link = replace(link, activation=known.activation + 1)
        if decision.outcome in (Outcome.IGNORED, Outcome.RECORDED):
            self.store.record_outcome(link, [t.id])
            log.info("alarm %s %s: %s", t.alarm_id, decision.outcome.value, decision.reason)
        elif decision.outcome is Outcome.WORK_ORDER:
            self._work_order(t, device, asset, decision, link, now)
        else:
            self._case(t, device, asset, decision, link, now)

    def _snapshot(
        self, t: AlarmTransition, device: DeviceState | None, d: Decision, now: int
    ) -> AlarmLink:
        unit = self.catalog.unit(device.profile, t.point) if device else ""
        return AlarmLink(
            t.alarm_id,
            t.gateway,
            t.device,
            t.point,
            t.alarm_type,
            t.severity,
            t.value,
            t.limit,
            unit,
            t.ts_ms,
            t.message,
            d.outcome.value,
            None,
            d.reason,
            now,
        )

    def grid_of(self, asset: Asset | None, device: DeviceState | None) -> Grid | None:
        """The 单元网格 a case is in: the grid registry's polygon holding its place (the asset's,
        else the device's install location), else the grid its asset record names (the rule
        of grids.place, which places assets and devices too)."""
        where = place_of(asset, device)
        declared = asset.grid if asset is not None else ""
        code = place(self.grids, where.lon, where.lat, declared, datum=where.datum)
        if not code:
            return None
        return (self.grids.get(code) if self.grids else None) or Grid(code)

    def _step(
        self,
        phases: list[Phase],
        before: Case,
        after: Case,
        action: Action,
        now: int,
        extend: float = 0,
    ) -> Case:
        """Follow a transition on the phase table `phases` (updated in place: the rows to
        store replace their earlier versions) and return `after` timed by it."""
        changed, timed = clock.step(
            phases,
            before,
            after,
            action,
            now,
            self.routing,
            self.calendar,
            center=self._center(),
            extend=extend,
        )
        for p in changed:
            if phases and phases[-1].seq == p.seq:
                phases[-1] = p
            else:
                phases.append(p)
        return timed

    def _number(self, tag: str, area: str, now: int) -> str:
        """`tag` + area code + local date + a four-digit serial of that day."""
        local = datetime.fromtimestamp(now / 1000, UTC) + timedelta(
            hours=self.routing.utc_offset_hours
        )
        prefix = f"{tag}{area}{local:%Y%m%d}"
        return f"{prefix}{self.store.next_case_serial(prefix):04d}"

    def _recurs(self, closed_ms: int | None, t: AlarmTransition) -> bool:
        window = self.routing.recurrence_window_h * HOUR_MS
        return closed_ms is not None and t.ts_ms - closed_ms <= window

    # --- cases --------------------------------------------------------------------------------

    def _case(
        self,
        t: AlarmTransition,
        device: DeviceState | None,
        asset: Asset | None,
        d: Decision,
        link: AlarmLink,
        now: int,
    ) -> None:
        subject = asset.code if asset else f"{t.gateway}/{t.device}"
        current = self.store.open_case_for(subject, d.problem)
        if current is not None:
            self._attach(current, t, d, link, now)
            return
        last = self.store.last_closed_case_for(subject, d.problem)
        recur = last.case_no if last and self._recurs(last.updated_ms, t) else None
        placed = self.grid_of(asset, device)
        grid = placed.code if placed else None
        case_no = self._number("", self.routing.area_code(asset, grid), now)
        note = _describe(t)
        if d.reason:
            note += f"; {d.reason}"
        if recur:
            note += f"; 反复发生: back within {self.routing.recurrence_window_h:g} h of {recur}"
        case, audits = open_case(
            case_no=case_no,
            kind=d.kind,
            subcategory=d.subcategory,
            problem=d.problem,
            asset=asset.code if asset else None,
            device=t.device,
            urgency="urgent" if d.urgent else "normal",
            department=d.department,
            grid=grid,
            allowed_ms=d.allowed_ms,
            auto_register=False,
            actor=SYSTEM,
            now_ms=now,
            title=d.title,
            gateway=t.gateway,
            note=note,
            severity=t.severity,
            location=place_of(asset, device),
            recurrence_of=recur,
        )
        phases, case = clock.start(case, now, self.routing, self.calendar, center=self._center())
        steps = []
        if d.auto_register and case.kind != UNCLASSIFIED:
            steps.append((Action.ACCEPT, Args(), "auto-立案"))
            if d.auto_dispatch:
                steps.append((Action.DISPATCH, Args(department=d.department), "auto-派遣"))
        for action, args, why in steps:
            after, audit = apply(case, action, actor=SYSTEM, now_ms=now, note=why, args=args)
            case = self._step(phases, case, after, action, now)
            audits.append(audit)
        self.store.save_case(
            case,
            audits,
            expect_state=None,
            transition_ids=[t.id],
            links=[replace(link, ref=case_no)],
            phases=phases,
        )
        log.info("case %s opened (%s %s) for %s", case.case_no, case.kind, case.state, subject)

    def report(
        self,
        *,
        kind: str,
        subcategory: str,
        description: str,
        place: Place,
        media_url: str,
        contact: str,
        key: ApiKey,
        source: str = PUBLIC,
        note: str = "公众上报 (Open311)",
        token: str | None = None,
        claims: Sequence[ReportClaim] = (),
    ) -> tuple[Case, bool]:
        """Open a reported case in 受理, whoever reported it (案件来源 `source`): a citizen
        (公众, through Open311), a 监督员 (上报 from the field) or a 受理员 entering a 12345
        call. Its 单元网格 comes from `place` (lon/lat degrees), its 主办 from 事件先属地后属主 (a
        部件 with no asset: the grid's department), its time limit from the routing table. A
        公众 or 12345 report waits for a 监督员's 核实 (confirm) before its 受理; a 监督员's waits
        for the 受理员's receive. `contact` is the reporter's fields as a JSON object ('' if
        none); `key` the key that posted it (the audit's actor); `note` the report row's note.

        `claims` are the client's own ids for the report (an Idempotency-Key, a 12345 工单号):
        when one already names a case, that case is answered and nothing is stored, so a retry
        never opens a second case. Returns the case and whether it is new. Raises ReportReused
        if an id names a case reported with other fields (the same id for another report)."""
        known = self._claimed(claims)
        if known is not None:
            return known, False
        now = self.now_ms()
        grid = self.grids.locate(place.lon, place.lat, datum=place.datum) if self.grids else None
        case_no = self._number("", self.routing.area_code(None, grid.code if grid else None), now)
        department, skipped = self.routing.department_for(kind, subcategory, grid, self.directory())
        self._passed_over(skipped, department, f"case {case_no}")
        case, audits = open_case(
            case_no=case_no,
            kind=kind,
            subcategory=subcategory,
            problem="public_report" if source == PUBLIC else "report",
            asset=None,
            device=None,
            urgency="normal",
            department=department,
            grid=grid.code if grid else None,
            allowed_ms=self.routing.allowed_ms(subcategory, urgent=False),
            auto_register=False,
            actor=key.name,
            now_ms=now,
            title=description,
            note=note,
            location=place,
            source=source,
            media_url=media_url,
            contact=contact,
            token=token,
        )
        audits = [replace(a, key_id=key.id, role=key.role.value) for a in audits]
        phases, case = clock.start(case, now, self.routing, self.calendar, center=self._center())
        try:
            self.store.save_case(case, audits, expect_state=None, phases=phases, claims=claims)
        except Conflict:
            known = self._claimed(claims)  # a retry raced this try and stored its case first
            if known is None:
                raise
            return known, False
        log.info("case %s reported (%s) through %s", case.case_no, source, key.name)
        return case, True

    def _claimed(self, claims: Sequence[ReportClaim]) -> Case | None:
        """The case one of `claims` already names, if any; ReportReused if it was reported
        with other fields."""
        for c in claims:
            found = self.store.reported_case(c.scope, c.report_id)
            if found is None:
                continue
            case_no, fingerprint = found
            if fingerprint != c.fingerprint:
                raise ReportReused(
                    f"report id {c.report_id!r} names case {case_no}, reported with other"
                    " fields: a new report needs a new id"
                )
            case = self.store.case(case_no)
            if case is not None:
                return case
        return None

    def _attach(
        self, case: Case, t: AlarmTransition, d: Decision, link: AlarmLink, now: int
    ) -> None:
        """A new occurrence of the problem of an open case: attach it; a more severe one
        upgrades the case; one back after the department's 反馈 sends it back to 处置."""
        before = case.state
        case = replace(case, repeats=case.repeats + 1, updated_ms=now)
        audits = [
            Audit(case.case_no, now, SYSTEM, "attach", before.value, before.value, _describe(t))
        ]
        phases = self.store.phases(case.case_no)
        if case.severity is None or t.severity < case.severity:
            args = Args(severity=t.severity, urgent=d.urgent, allowed_ms=d.allowed_ms)
            if case.subcategory != d.subcategory:
                args = replace(args, allowed_ms=None)  # a limit of another 小类 says nothing here
            after, audit = apply(
                case,
                Action.UPGRADE,
                actor=SYSTEM,
                now_ms=now,
                note=f"alarm {t.alarm_id}",
                args=args,
            )
            case = self._step(phases, case, after, Action.UPGRADE, now)
            audits.append(audit)
        if case.state in _DONE_BY_DEPARTMENT:
            after, audit = apply(
                case,
                Action.REWORK,
                actor=SYSTEM,
                now_ms=now,
                note=f"返工: alarm {t.alarm_id} is back after the department's 反馈",
            )
            case = self._step(phases, case, after, Action.REWORK, now)
            audits.append(audit)
            log.warning("case %s: the alarm is back: 返工 (rework %d)", case.case_no, case.reworks)
        self.store.save_case(
            case,
            audits,
            expect_state=before.value,
            transition_ids=[t.id],
            links=[replace(link, ref=case.case_no)],
            phases=phases,
        )

    def _again(self, t: AlarmTransition, link: AlarmLink, now: int) -> None:
        """A later transition of an occurrence already decided: evidence for where it went."""
        cleared = t.state not in _ACTIVE and link.cleared_ms is None
        marks = [(t.alarm_id, t.ts_ms)] if cleared else []
        if cleared and link.outcome == Outcome.CASE and link.ref:
            case = self.store.case(link.ref)
            if case is not None and case.state not in _FINISHED:
                self._cleared_case(case, t, now)
                return
        if cleared and link.outcome == Outcome.WORK_ORDER and link.ref:
            order = self.store.work_order(link.ref)
            if order is not None and order.state is not WorkOrderState.DONE:
                self._cleared_order(order, t, now)
                return
        self.store.mark_transitions_handled([t.id], marks)

    def _all_cleared(self, ref: str, alarm_id: str) -> bool:
        return all(
            k.cleared_ms is not None or k.alarm_id == alarm_id for k in self.store.links(ref)
        )

    def _cleared_case(self, case: Case, t: AlarmTransition, now: int) -> None:
        """A cleared alarm is evidence on its case, never a step past 处置: only a case still
        before 派遣 may close by itself (自动恢复), and only where configured."""
        before = case.state
        note = f"alarm {t.alarm_id} cleared" + _origin_note(t)
        audits = [
            Audit(case.case_no, now, SYSTEM, "alarm_cleared", before.value, before.value, note)
        ]
        case = replace(case, updated_ms=now)
        phases: list[Phase] = []
        if (
            self.routing.auto_close
            and before in _BEFORE_DISPATCH
            and self._all_cleared(case.case_no, t.alarm_id)
        ):
            after, audit = apply(
                case, Action.AUTO_CLOSE, actor=SYSTEM, now_ms=now, note="every alarm cleared"
            )
            phases = self.store.phases(case.case_no)
            case = self._step(phases, case, after, Action.AUTO_CLOSE, now)
            audits.append(audit)
        self.store.save_case(
            case,
            audits,
            expect_state=before.value,
            transition_ids=[t.id],
            cleared=[(t.alarm_id, t.ts_ms)],
            phases=phases,
        )

    # --- work orders --------------------------------------------------------------------------

    def _work_order(
        self,
        t: AlarmTransition,
        device: DeviceState | None,
        asset: Asset | None,
        d: Decision,
        link: AlarmLink,
        now: int,
    ) -> None:
        subject = f"{t.gateway}/{t.device}"
        current = self.store.open_work_order_for(subject, d.problem)
        if current is not None:
            self._attach_order(current, t, d, link, now)
            return
        last = self.store.last_closed_work_order_for(subject, d.problem)
        recur = last.order_no if last and self._recurs(last.updated_ms, t) else None
        placed = self.grid_of(asset, device)
        grid = placed.code if placed else None
        order_no = self._number("YW", self.routing.area_code(asset, grid), now)
        note = _describe(t) + (f"; 反复发生: back after {recur}" if recur else "")
        assert d.allowed_ms is not None  # work-order decisions always carry their limit
        order, audit = open_work_order(
            order_no=order_no,
            problem=d.problem,
            title=d.title,
            gateway=t.gateway,
            device=t.device,
            asset=asset.code if asset else None,
            severity=t.severity,
            urgent=d.urgent,
            department=d.department,
            allowed_ms=d.allowed_ms,
            now_ms=now,
            note=note,
            location=place_of(asset, device),
            recurrence_of=recur,
        )
        self.store.save_work_order(
            order,
            [audit],
            expect_state=None,
            transition_ids=[t.id],
            links=[replace(link, ref=order_no)],
        )
        log.info("work order %s opened (%s) for %s", order_no, d.problem, subject)

    def _attach_order(
        self, order: WorkOrder, t: AlarmTransition, d: Decision, link: AlarmLink, now: int
    ) -> None:
        before = order.state
        updated = replace(order, repeats=order.repeats + 1, updated_ms=now)
        if t.severity < order.severity:
            updated = replace(updated, severity=t.severity)
        if d.urgent and order.urgency != "urgent":
            assert d.allowed_ms is not None
            deadline = min(order.deadline_ms, now + d.allowed_ms)  # never later
            updated = replace(updated, urgency="urgent", deadline_ms=deadline)
        audit = Audit(
            order.order_no, now, SYSTEM, "attach", before.value, before.value, _describe(t)
        )
        self.store.save_work_order(
            updated,
            [audit],
            expect_state=before.value,
            transition_ids=[t.id],
            links=[replace(link, ref=order.order_no)],
        )

    def _cleared_order(self, order: WorkOrder, t: AlarmTransition, now: int) -> None:
        before = order.state
        note = f"alarm {t.alarm_id} cleared" + _origin_note(t)
        audits = [
            Audit(order.order_no, now, SYSTEM, "alarm_cleared", before.value, before.value, note)
        ]
        order = replace(order, updated_ms=now)
        if (
            self.routing.work_orders.auto_close
            and before is WorkOrderState.OPEN
            and self._all_cleared(order.order_no, t.alarm_id)
        ):
            order, audit = act_on(
                order,
                WorkOrderAction.AUTO_CLOSE,
                actor=SYSTEM,
                now_ms=now,
                note="the device recovered before 接单",
            )
            audits.append(audit)
        self.store.save_work_order(
            order,
            audits,
            expect_state=before.value,
            transition_ids=[t.id],
            cleared=[(t.alarm_id, t.ts_ms)],
        )

    # --- operator actions ---------------------------------------------------------------------

    def act(
        self,
        case_no: str,
        action: Action,
        actor: str,
        note: str = "",
        *,
        extend_hours: float = 0,
        department: str | None = None,
        assist: Sequence[str] = (),
        closure: Closure | None = None,
        kind: str | None = None,
        subcategory: str | None = None,
        request: str | None = None,
        reason: str | None = None,
        condition: str | None = None,
        media_url: str = "",
        key_id: int | None = None,
        role: str = "",
        on_behalf_of: str = "",
    ) -> Case:
        """Apply an operator action: 派遣 with `department` (主办) and `assist` (协办), 结案 with
        its `closure`, 受理 of an unclassified case with its `kind` and `subcategory` (小类),
        申请 with its `request` (and `extend_hours` for 延时), 作废 with its `reason`, 立案 and
        结案 with the `condition` in the 值班长's words (else the 小类 table's), 核查 (check,
        reject) with a photo's `media_url`; 批准
        carries out the pending
        application (a second audit row: the extend, park or return it grants).
        The audit row names `actor` (the authenticated key's name), its `key_id` and `role`,
        and `on_behalf_of` (a name the client gave, unverified).

        Raises CaseNotFound, IllegalTransition, Conflict, or ValueError (arguments that do not
        fit, or an action only the system takes).
        """
        if action in SYSTEM_ACTIONS:
            raise ValueError(f"{action.value} is taken by the system only")
        if action in GRANTED_ONLY:
            raise ValueError(
                f"{action.value} takes effect only by approve of a department's application"
                " (apply with its request)"
            )

        def once() -> Case:
            """Read the case, apply the action, save over the version read (Conflict if
            someone saved it meanwhile); the case as saved."""
            case = self.store.case(case_no)
            if case is None:
                raise CaseNotFound(case_no)
            classify = None
            if kind is not None or subcategory is not None:
                if action is not Action.ACCEPT or kind is None or subcategory is None:
                    raise ValueError("kind and subcategory go together, with accept (受理)")
                urgent = case.urgency == "urgent"
                classify = Classification(
                    kind, subcategory, self.routing.allowed_ms(subcategory, urgent)
                )
            parked_from, replied = self._history(case_no, action)
            args = Args(
                extend_ms=int(extend_hours * HOUR_MS),
                department=department,
                assist=tuple(assist),
                closure=closure,
                classify=classify,
                request=request,
                reason=reason,
                condition=condition,
                media_url=media_url,
                extend_max_ms=self._extend_max_ms(case)
                if "extend" in (request, case.pending)
                else None,
                parked_from=parked_from,
                replied=replied,
            )
            now = self.now_ms()

            def signed(a: Audit) -> Audit:
                return replace(a, key_id=key_id, role=role, on_behalf_of=on_behalf_of)

            updated, audit = apply(case, action, actor=actor, now_ms=now, note=note, args=args)
            audits = [signed(audit)]
            phases = self.store.phases(case_no)
            updated = self._step(phases, case, updated, action, now, extend=extend_hours)
            if action is Action.APPROVE and case.pending is not None:
                granted = REQUESTS[case.pending]
                before = updated
                updated, audit = apply(
                    before,
                    granted,
                    actor=actor,
                    now_ms=now,
                    note="批准的申请",
                    args=Args(extend_ms=int(case.pending_hours * HOUR_MS)),
                )
                audits.append(signed(audit))
                updated = self._step(phases, before, updated, granted, now, case.pending_hours)
            self.store.save_case(updated, audits, expect_state=case.state.value, phases=phases)
            return replace(updated, version=case.version + 1)

        for _ in range(_ATTEMPTS):
            try:
                return once()
            except Conflict:
                # Saved by someone else since our read: apply the action again to what is
                # stored now (a 督办 takes the next level; an action the new state no longer
                # allows, or a second application, is refused as it would be in turn).
                continue
        raise Conflict(f"case {case_no} changed {_ATTEMPTS} times meanwhile; try again")

    def _extend_max_ms(self, case: Case) -> int | None:
        """The most one 延时 may give a case in its running stage: the stage's own limit, as ms
        on its clock (a 工作日 is the calendar's day of work hours); None if it is untimed."""
        stage = clock.stage_of(case)
        limit = (
            None
            if stage is None
            else self.routing.limit(stage, case.subcategory, case.urgency == "urgent")
        )
        if limit is None:
            return None
        per = self.calendar.day_ms if limit.unit is Unit.WORK_DAYS else HOUR_MS
        return round(limit.amount * per)

    def _history(self, case_no: str, action: Action) -> tuple[CaseState | None, bool]:
        """What 解除挂账 and 督办回复 need from the audit trail: the state the case was parked
        from (None: not asked, or no 挂账 found), and whether its last 督办 was answered."""
        if action not in (Action.UNPARK, Action.REPLY):
            return None, False
        trail = self.store.audit(case_no)
        if action is Action.UNPARK:
            parks = [a.from_state for a in trail if a.action == Action.PARK.value]
            return (CaseState(parks[-1]) if parks and parks[-1] else None), False
        last = {a.action: i for i, a in enumerate(trail)}
        return None, last.get(Action.REPLY.value, -1) > last.get(Action.ESCALATE.value, -1)

    def act_on_work_order(
        self,
        order_no: str,
        action: WorkOrderAction,
        actor: str,
        note: str = "",
        closure: Closure | None = None,
        *,
        key_id: int | None = None,
        role: str = "",
        on_behalf_of: str = "",
    ) -> WorkOrder:
        """Apply a maintainer's action (接单 accept, 完工 complete with its closure), audited
        like a case action (`actor`, `key_id`, `role`, `on_behalf_of`).

        Raises CaseNotFound, IllegalWorkOrderAction, Conflict or ValueError.
        """
        if action is WorkOrderAction.AUTO_CLOSE:
            raise ValueError("auto_close is taken by the system only")
        for _ in range(_ATTEMPTS):
            order = self.store.work_order(order_no)
            if order is None:
                raise CaseNotFound(order_no)
            updated, audit = act_on(
                order, action, actor=actor, now_ms=self.now_ms(), note=note, closure=closure
            )
            audit = replace(audit, key_id=key_id, role=role, on_behalf_of=on_behalf_of)
            try:
                self.store.save_work_order(updated, [audit], expect_state=order.state.value)
            except Conflict:
                continue  # saved by someone else since the read: apply to what is stored now
            return replace(updated, version=order.version + 1)
        raise Conflict(f"work order {order_no} changed {_ATTEMPTS} times meanwhile; try again")

    def escalate_overdue(self) -> list[str]:
        """Raise a 督办 on every case whose running stage is overdue and not yet escalated for
        its due time (so again after a 延时 that passed, or in a later stage); return their
        numbers. The audit note gives the level (第N次) and the stage."""
        now = self.now_ms()
        escalated = []
        for phase in self.store.overdue_phases(now):
            case = self.store.case(phase.case_no)
            if case is None or case.state in _FINISHED:
                continue
            updated, audit = apply(
                case,
                Action.ESCALATE,
                actor=SYSTEM,
                now_ms=now,
                note=f"overdue in {phase.stage}",
            )
            phases = self.store.phases(case.case_no)
            updated = self._step(phases, case, updated, Action.ESCALATE, now)
            try:
                self.store.save_case(updated, [audit], expect_state=case.state.value, phases=phases)
            except Conflict:
                continue  # someone acted on it meanwhile; the next tick looks again
            log.warning("case %s is overdue in %s: 督办", case.case_no, phase.stage)
            escalated.append(case.case_no)
        return escalated
