"""The storage ports: one protocol per aggregate, and Store, which is all of them.

A consumer that needs one aggregate takes its protocol (the event pump an EventLogStore, the
webhook sender a WebhookStore); where it needs a part of several, each aggregate's protocol
extends the narrower one it takes (the case engine: CaseHandlingStore, WorkOrderHandlingStore,
DeviceStore, DeviceAssetStore). SQLite and PostgreSQL implement Store and pass one contract
suite. Every method raises StoreError (StoreUnavailable, StoreDataError, Conflict) for a
database failure, never a driver's own error.

A `scope` argument, where a method takes one, is the department names a 专业部门 key is
limited to (every name its codes have had; None: no limit). What a scope sees is
written once, as SQL, in store/scope_sql.py.
"""

from collections.abc import Sequence
from typing import Any, Protocol

from lifeline.collector.assets import Asset
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.workflow import Audit, Case
from lifeline.collector.cases.workorders import WorkOrder
from lifeline.collector.errors import Conflict, StoreDataError, StoreError, StoreUnavailable
from lifeline.collector.grids import GridMap
from lifeline.collector.models import (
    AlarmLink,
    AlarmRecord,
    AlarmTransition,
    AlarmView,
    ApiKey,
    Bucket,
    DeadLetter,
    Delivery,
    Department,
    DeviceState,
    DueDelivery,
    EventRecord,
    GatewayEpoch,
    GatewayState,
    Incoming,
    Reading,
    ReportClaim,
    StatusChange,
    Webhook,
    WriteResult,
)
from lifeline.collector.stats import Counts

__all__ = [
    "AlarmStore",
    "AssetStore",
    "CaseHandlingStore",
    "CaseStore",
    "Conflict",
    "DeadLetterStore",
    "DeviceAssetStore",
    "DeviceStore",
    "EventLogStore",
    "GatewayStore",
    "KeyStore",
    "ReadingStore",
    "Store",
    "StoreDataError",
    "StoreError",
    "StoreUnavailable",
    "WebhookStore",
    "WorkOrderHandlingStore",
    "WorkOrderStore",
]


class ReadingStore(Protocol):
    """Readings: raw, bucketed and latest (the backends' hot path)."""

    def readings(
        self,
        device: str,
        point: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
        gateway: str | None = None,
        newest_first: bool = False,
    ) -> list[Reading]:
        """Raw readings of a device (of one gateway, if given; optionally one point) in
        [since, until), oldest first, or newest first (the `limit` newest) if asked."""
        ...

    def series(
        self,
        device: str,
        point: str,
        since_ms: int,
        until_ms: int,
        bucket_ms: int,
        gateway: str | None = None,
    ) -> list[Bucket]:
        """Numeric readings (of one gateway's device, if given) bucketed into min/avg/max over
        [since, until); ValueError if bucket_ms is not positive."""
        ...

    def latest(
        self,
        device: str | None = None,
        gateway: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[Reading]:
        """The newest reading of every (gateway, device, point), optionally for one device
        and/or one gateway; with `scope`, of the devices in scope only."""
        ...

    def count_readings(self) -> int:
        """Total stored readings."""
        ...


class DeviceStore(Protocol):
    """Devices as their gateways announced them (the case engine places a case with them)."""

    def devices(self, gateway: str | None = None, device: str | None = None) -> list[DeviceState]:
        """All known devices, optionally of one gateway and/or with one device id."""
        ...


class GatewayStore(DeviceStore, Protocol):
    """Gateways, their buffer epochs and devices, device status history and command replies."""

    def gateways(self, scope: Sequence[str] | None = None) -> list[GatewayState]:
        """All known gateways (with `scope`, those of a device in scope)."""
        ...

    def gateway_epochs(self, gateway: str) -> list[GatewayEpoch]:
        """The buffer epochs a gateway has used, newest first."""
        ...

    def devices(
        self,
        gateway: str | None = None,
        device: str | None = None,
        grid: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[DeviceState]:
        """All known devices, optionally of one gateway, with one device id and/or placed in
        one 单元网格 (its code); with `scope`, only those in scope."""
        ...

    def device_history(
        self, since_ms: int, until_ms: int, scope: Sequence[str] | None = None
    ) -> list[StatusChange]:
        """Every device's status changes in [since, until), each device's last change before
        `since` first (the status it had then), oldest first; with `scope`, of the devices in
        scope only."""
        ...

    def command_reply(self, gateway: str, command_id: str) -> dict[str, Any] | None:
        """A gateway's reply to a command, if it arrived."""
        ...


class DeviceAssetStore(Protocol):
    """Which asset (部件) a device is bound to (the case engine's subject of a case)."""

    def asset_of_device(self, gateway: str, device: str) -> Asset | None:
        """The asset a gateway's device is bound to, if any."""
        ...


class AssetStore(DeviceAssetStore, Protocol):
    """The asset registry: city components (部件) and the devices bound to them."""

    def upsert_assets(self, assets: Sequence[Asset]) -> int:
        """Insert or replace assets and bind their listed devices; return how many.

        A device listed as `gateway/device` is bound as named; one listed as `device` is bound
        to the one gateway that has it, or waits for the first gateway to announce it. Raises
        AssetError (nothing stored) if several gateways have a device of that id.
        """
        ...

    def assets(self) -> list[Asset]:
        """All assets ordered by code."""
        ...

    def located_assets(
        self,
        grid: str | None = None,
        code: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[tuple[Asset, str]]:
        """All assets ordered by code, each with the code of the 单元网格 it is placed in (""
        if none; see grids.place); only those placed in `grid` and/or with the 部件标识码
        `code` if given, and with `scope`, only those in scope."""
        ...

    def bind_device(self, gateway: str | None, device: str, asset: str) -> None:
        """Bind a gateway's device to an asset (replacing any earlier binding); without a
        gateway, the binding waits for the first gateway that announces the device."""
        ...


class AlarmStore(Protocol):
    """Alarms by source (deduplicated) and by occurrence (the alarm index)."""

    def alarms(self, active_only: bool = False) -> list[AlarmRecord]:
        """Deduplicated alarms, newest first."""
        ...

    def find_alarms(
        self,
        *,
        states: Sequence[str] = (),
        severities: Sequence[int] = (),
        gateway: str | None = None,
        device: str | None = None,
        asset: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
        outcomes: Sequence[str] = (),
        scope: Sequence[str] | None = None,
    ) -> list[AlarmView]:
        """Alarm occurrences matching every given filter, newest first, ids below `before_id`;
        `outcomes` selects by where they ended (`pending`: not handled yet); with `scope`, only
        those attached to a case or work order in scope."""
        ...

    def alarm(self, alarm_id: str, scope: Sequence[str] | None = None) -> AlarmView | None:
        """One alarm occurrence by its edge id (`gateway:epoch:n`, n counts alarms); with
        `scope`, only if it is attached to a case or work order in scope."""
        ...


class CaseHandlingStore(Protocol):
    """What the case engine reads and writes of cases: alarm transitions to handle, where each
    alarm occurrence ended, and 数字城管 cases, saved with their audits and phases."""

    def pending_alarm_transitions(self, limit: int = 500) -> list[AlarmTransition]:
        """Stored alarm events the case engine has not handled yet, oldest first."""
        ...

    def mark_transitions_handled(
        self, ids: Sequence[int], cleared: Sequence[tuple[str, int]] = ()
    ) -> None:
        """Record that the case engine handled these alarm events, and that the alarm ids of
        `cleared` cleared at the given times (ms)."""
        ...

    def link(self, alarm_id: str) -> AlarmLink | None:
        """Where the latest occurrence (activation) of an alarm id ended, if the engine has
        handled it."""
        ...

    def links(self, ref: str) -> list[AlarmLink]:
        """The alarm occurrences of one case or work order, in the order they were attached."""
        ...

    def record_outcome(self, link: AlarmLink, transition_ids: Sequence[int]) -> None:
        """Store an occurrence that became no case nor work order (ignored or recorded) and
        mark its transitions handled, atomically; Conflict if it was handled meanwhile."""
        ...

    def next_case_serial(self, prefix: str) -> int:
        """Allocate the next serial for case numbers starting with `prefix` (1, 2, ...)."""
        ...

    def open_case_for(self, subject: str, problem: str) -> Case | None:
        """The open case for (asset or device, problem), if there is one."""
        ...

    def last_closed_case_for(self, subject: str, problem: str) -> Case | None:
        """The most recently closed (结案) case for (asset or device, problem), if any."""
        ...

    def save_case(
        self,
        case: Case,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
        links: Sequence[AlarmLink] = (),
        cleared: Sequence[tuple[str, int]] = (),
        phases: Sequence[Phase] = (),
        claims: Sequence[ReportClaim] = (),
    ) -> None:
        """Insert (expect_state None) or update a case with its audits, its new or changed
        `phases`, the alarm occurrences it takes (`links`), the ones that cleared, the handled
        events, and the reporting client's ids for it (`claims`), atomically.

        An update saves only over the row `case` was read from (optimistic locking: the
        stored row must still be at `case.version`, and each save adds one to it).

        Raises Conflict if the stored case is no longer in `expect_state` or at
        `case.version`, an alarm of `links` already belongs elsewhere, or a claim's id already
        names a case.
        """
        ...

    def reported_case(self, scope: str, report_id: str) -> tuple[str, str] | None:
        """The case number and fingerprint a client's report id (of `scope`) was stored with,
        or None if no case has that id."""
        ...

    def case(self, case_no: str) -> Case | None:
        """One case by number."""
        ...

    def phases(self, case_no: str) -> list[Phase]:
        """The phase table of a case (stage, department, start, due, end), in order."""
        ...

    def audit(self, case_no: str) -> list[Audit]:
        """The audit trail of a case, oldest first."""
        ...

    def overdue_phases(self, now_ms: int) -> list[Phase]:
        """Running, unparked phases past their due time and not escalated (督办) for it."""
        ...


class CaseStore(CaseHandlingStore, Protocol):
    """Cases as the engine handles them, and as the command center lists, filters and counts
    them (综合评价)."""

    def links_for(self, refs: Sequence[str]) -> dict[str, list[AlarmLink]]:
        """The alarm occurrences of several cases or work orders, by number."""
        ...

    def count_alarm_outcomes(self) -> dict[str, int]:
        """How many alarm occurrences ended in each outcome (case, work_order, ...)."""
        ...

    def cases(self, open_only: bool = False) -> list[Case]:
        """Cases, newest first."""
        ...

    def case_counts(
        self, from_ms: int, to_ms: int, group_by: str, scope: Sequence[str] | None = None
    ) -> dict[str, Counts]:
        """The 综合评价 counts of the window [from_ms, to_ms) per `group_by` (department, grid,
        subcategory or source); KeyError for another. With `scope`, of the cases one of these
        departments is 主办 of only."""
        ...

    def find_cases(
        self,
        *,
        states: Sequence[str] = (),
        department: str | None = None,
        subcategory: str | None = None,
        subcategories: Sequence[str] = (),
        grid: str | None = None,
        created_from_ms: int | None = None,
        created_to_ms: int | None = None,
        overdue_at_ms: int | None = None,
        overdue: bool = True,
        before: tuple[int, str] | None = None,
        limit: int = 100,
        scope: Sequence[str] | None = None,
    ) -> list[Case]:
        """Cases matching every given filter, newest first, keyset-paged below `before`;
        with `subcategories`, only those of one of these 小类; with `created_from_ms` /
        `created_to_ms`, only those reported in [from, to); with `scope`, only those whose 主办
        or a 协办 is one of these departments."""
        ...

    def count_cases_by_state(self) -> dict[str, int]:
        """How many cases are in each state."""
        ...

    def case_by_token(self, token: str) -> Case | None:
        """The case an Open311 POST created and answered with this token, if any."""
        ...


class WorkOrderHandlingStore(Protocol):
    """What the case engine reads and writes of work orders (maintenance of the monitoring
    equipment itself)."""

    def open_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        """The unfinished work order for (gateway/device, problem), if there is one."""
        ...

    def last_closed_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        """The most recently finished work order for (gateway/device, problem), if any."""
        ...

    def save_work_order(
        self,
        order: WorkOrder,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
        links: Sequence[AlarmLink] = (),
        cleared: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Insert (expect_state None) or update a work order with its audits, alarm links,
        cleared alarms and handled events, atomically; Conflict as save_case (state and
        `order.version`)."""
        ...

    def work_order(self, order_no: str) -> WorkOrder | None:
        """One work order by number."""
        ...


class WorkOrderStore(WorkOrderHandlingStore, Protocol):
    """Work orders (maintenance of the monitoring equipment itself) with their audit trail."""

    def work_order(self, order_no: str, scope: Sequence[str] | None = None) -> WorkOrder | None:
        """One work order by number (with `scope`, only if one of these departments maintains
        it)."""
        ...

    def find_work_orders(
        self,
        *,
        states: Sequence[str] = (),
        department: str | None = None,
        gateway: str | None = None,
        device: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
        scope: Sequence[str] | None = None,
    ) -> list[WorkOrder]:
        """Work orders matching every given filter, newest first, keyset-paged below `before`;
        with `scope`, only those one of these departments maintains."""
        ...

    def work_order_audit(self, order_no: str) -> list[Audit]:
        """The audit trail of a work order, oldest first (`case_no` holds the order number)."""
        ...

    def count_work_orders_by_state(self) -> dict[str, int]:
        """How many work orders are in each state."""
        ...


class DeadLetterStore(Protocol):
    """Payloads refused at ingest, with the reason."""

    def dead_letters(self, limit: int = 100, before_id: int | None = None) -> list[DeadLetter]:
        """Refused payloads newest first, with an id below `before_id` (paging)."""
        ...

    def prune_dead_letters(self, before_ms: int) -> int:
        """Delete dead letters received before `before_ms`; return how many."""
        ...

    def count_dead_letters(self) -> int:
        """Total refused payloads."""
        ...


class DepartmentStore(Protocol):
    """The department registry as routing and scopes read it."""

    def departments(self) -> list[Department]:
        """The department registry, by code."""
        ...

    def department_names(self) -> dict[str, tuple[str, ...]]:
        """Every name each department code has had, the registered one first (codes since
        removed included): the names its keys' scope covers."""
        ...


class KeyStore(DepartmentStore, Protocol):
    """API keys, stored by digest, and the department registry 专业部门 keys are scoped to."""

    def create_api_key(
        self,
        name: str,
        role: str,
        key_hash: str,
        prefix: str,
        now_ms: int,
        departments: Sequence[str] = (),
    ) -> int:
        """Store a new key by its digest, scoped to `departments` (codes); return its id."""
        ...

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this digest."""
        ...

    def api_keys(self) -> list[ApiKey]:
        """Every key (active and revoked), oldest first."""
        ...

    def revoke_api_key(self, key_id: int, now_ms: int) -> bool:
        """Revoke a key; False if there is no such active key."""
        ...

    def put_department(self, code: str, name: str, now_ms: int) -> bool:
        """Register a department or rename it; True if it is new. Raises NameTaken if `name` is
        another code's name (now or before: names are never reused) or any code, or `code` is
        any name. A rename carries the open cases (主办, 协办), their running phases and open
        work orders over to the new name; closed cases keep the old one, still the department's."""
        ...

    def remove_department(self, code: str, now_ms: int) -> Department | None:
        """Remove a department from the registry and return it; None if no department has this
        code. Raises InUse (nothing removed) while an open case has it as 主办 or 协办 (by name
        or code), an open work order names it or an active key is scoped to it. Its name is
        kept as a former name (never reused)."""
        ...


class EventLogStore(Protocol):
    """The event log behind SSE and webhooks."""

    def pump_events(self, now_ms: int, limit: int = 500) -> int:
        """Copy alarm events, status changes, case and work-order audits not yet logged into
        `events`."""
        ...

    def last_event_id(self) -> int:
        """The newest event id (0 if the log is empty)."""
        ...

    def events(
        self,
        after_id: int,
        limit: int = 500,
        types: Sequence[str] = (),
        scope: Sequence[str] | None = None,
        until_id: int | None = None,
    ) -> list[EventRecord]:
        """Events with id > after_id (and ≤ until_id, if given), oldest first; `types` are LIKE
        patterns (empty = all); with `scope`, only those about what is in scope."""
        ...


class WebhookStore(Protocol):
    """Webhooks and their deliveries."""

    def create_webhook(
        self, url: str, event_types: Sequence[str], secret: str, description: str, now_ms: int
    ) -> Webhook:
        """Register an endpoint for event types (patterns like `alarm.*`); it receives the
        matching events logged from now on."""
        ...

    def webhooks(self) -> list[Webhook]:
        """Every registered webhook."""
        ...

    def delete_webhook(self, webhook_id: int, now_ms: int) -> bool:
        """Unregister a webhook, cancelling its pending deliveries; False if unknown."""
        ...

    def fan_out_deliveries(self, now_ms: int, limit: int = 500) -> int:
        """Create pending deliveries for events past each webhook's cursor; return how many."""
        ...

    def claim_due_deliveries(
        self, now_ms: int, limit: int = 100, lease_ms: int = 60_000
    ) -> list[DueDelivery]:
        """Pending deliveries due now, leased for `lease_ms` so no other sender takes them."""
        ...

    def record_delivery(
        self,
        delivery_id: int,
        status: str,
        attempts: int,
        next_ms: int,
        response_code: int | None,
        error: str,
        now_ms: int,
    ) -> None:
        """Store the outcome of one delivery attempt."""
        ...

    def deliveries(self, webhook_id: int, limit: int = 100) -> list[Delivery]:
        """The most recent deliveries of a webhook, newest first."""
        ...

    def count_deliveries_by_status(self) -> dict[str, int]:
        """How many deliveries are in each status."""
        ...


class Store(
    ReadingStore,
    GatewayStore,
    AssetStore,
    AlarmStore,
    CaseStore,
    WorkOrderStore,
    DeadLetterStore,
    KeyStore,
    EventLogStore,
    WebhookStore,
    Protocol,
):
    """One storage interface: every aggregate, and the write path that fills them from ingest."""

    # How far ahead of the collector's clock a sample time may be and still be plausible (ms);
    # anything further ahead, or before wire.EARLIEST_PLAUSIBLE_MS, is stored flagged.
    max_skew_ms: int

    @property
    def backend(self) -> str:
        """Which engine and layout: sqlite, postgres-partitioned or timescaledb."""
        ...

    @property
    def write_concurrency(self) -> int:
        """How many `write` calls can usefully run at once (one per connection)."""
        ...

    def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied (empty if none)."""
        ...

    def use_grids(self, grids: GridMap | None) -> tuple[int, int]:
        """Place devices (by their install location, at each birth) and assets (by their
        point, at each write) in the 单元网格 registry `grids` (None: none) from now on, and
        place every stored one again now; return how many assets and how many devices changed
        grid. The rule is grids.place's: the polygon holding the point wins over a declared
        grid, which stands for an asset without a point or outside every grid."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def ping(self) -> None:
        """Return quickly if the database answers; raise StoreUnavailable (within about two
        seconds, whatever the state of the network) if it does not."""
        ...

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        """Commit a batch in one transaction, ignoring durable keys (gateway, epoch, seq) already
        seen. Raises StoreUnavailable (retry later) or StoreDataError (something in `items`
        cannot be stored); nothing is committed then."""
        ...
