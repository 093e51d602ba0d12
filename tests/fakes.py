"""In-memory fakes of ports: the gateway's (edge/ports.py), for unit tests of
`edge.daemon.Gateway`, and the case engine's store (`collector.cases.engine.EngineStore`).

They keep what they were given in plain lists and dicts, so a test asserts on values instead of
reaching into the gateway, the engine or a database. Integration and e2e tests use the real
adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lifeline.collector.assets import Asset
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.workflow import Audit, Case, CaseState
from lifeline.collector.cases.workorders import WorkOrder, WorkOrderState
from lifeline.collector.errors import Conflict
from lifeline.collector.models import (
    AlarmLink,
    AlarmTransition,
    Department,
    DeviceState,
    ReportClaim,
)
from lifeline.edge.buffer import BufferFull, GatewayHealth, Sample
from lifeline.edge.clock import mono_ms, wall_ms
from lifeline.edge.config import GatewayConfig, resolve_profiles
from lifeline.edge.daemon import Gateway
from lifeline.edge.ports import Buffer, CommandHandler, PollerFactory
from lifeline.edge.scheduler import BusPoller
from lifeline.wire import AlarmEvent, AlarmState, Birth, DeviceEvent


class FakeBuffer:
    """A `Buffer` in memory. `full` makes alarm and device event writes raise BufferFull."""

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch = epoch
        self.next_seq = 1
        self.backlog = 0
        self.evicted = 0
        self.disk_dropped = 0
        self.cap_bytes = 1 << 20
        self.disk_full_since_ms: int | None = None
        self.health_source: Callable[[], GatewayHealth] | None = None
        self.on_disk_full: Callable[[bool], None] | None = None
        self.full = False
        self.samples: list[Sample] = []  # queued, not yet flushed
        self.flushed: list[Sample] = []
        self.alarm_events: list[AlarmEvent] = []
        self.device_events: list[DeviceEvent] = []
        self.ack_requests: list[tuple[str, str, str]] = []  # what the crew CLI queues
        self.snapshots: list[GatewayHealth] = []
        self.health_due = True
        self.closed = False
        self._alarm_number = 0

    def add(self, samples: Iterable[Sample]) -> None:
        self.samples.extend(samples)

    def add_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        if self.full:
            raise BufferFull("no room for an alarm event (fake)")
        self.alarm_events.extend(events)

    def add_device_events(self, events: Sequence[DeviceEvent]) -> None:
        if self.full:
            raise BufferFull("no room for a device event (fake)")
        self.device_events.extend(events)

    def flush(self, live_since_ms: int | None, room: int) -> int:
        self.flushed.extend(self.samples)
        self.samples.clear()
        return 0

    def frozen_count(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def check_disk(self) -> None:
        pass

    def commit_acks(self) -> None:
        pass

    def health_changed(self) -> None:
        self.health_due = True

    def save_health(self) -> bool:
        if not self.health_due or self.health_source is None:
            return False
        self.snapshots.append(self.health_source())
        self.health_due = False
        return True

    def open_alarms(self) -> list[AlarmEvent]:
        latest = {e.alarm_id: e for e in self.alarm_events}
        return [e for e in latest.values() if e.state is not AlarmState.NORMAL]

    def next_alarm_number(self) -> int:
        self._alarm_number += 1
        return self._alarm_number

    def take_ack_requests(self) -> list[tuple[str, str, str]]:
        taken, self.ack_requests = self.ack_requests, []
        return taken

    def prune_alarm_log(self, retention_days: float) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


class FakeUplink:
    """A `Transport` that is always connected and keeps what the gateway published."""

    def __init__(self, birth: Callable[[], Birth], on_command: CommandHandler) -> None:
        self.birth = birth
        self.on_command = on_command
        self.live_since_ms: int | None = 0
        self.state_since_ms = 0
        self.last_error = ""
        self.last_error_ms: int | None = None
        self.last_puback_ms: int | None = None
        self.room = 10
        self.kicks = 0
        self.births: list[Birth] = []
        self.statuses: list[dict[str, int | float]] = []
        self.closed = ""  # the reason of the death published at close
        self.step_ms = 0
        self._closing = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.live_since_ms is not None

    def kick(self) -> None:
        self.kicks += 1

    def publish_birth(self) -> None:
        self.births.append(self.birth())

    def publish_status(self, counters: dict[str, int | float]) -> None:
        self.statuses.append(counters)

    def clock_stepped(self, step_ms: int) -> None:
        self.step_ms += step_ms

    def counters(self) -> dict[str, int | float]:
        return {"published": 0}

    async def run(self) -> None:
        await self._closing.wait()

    async def drain(self, timeout_s: float) -> bool:
        return True

    async def close(self, reason: str = "shutdown") -> None:
        self.closed = reason
        self._closing.set()


def fake_gateway(
    cfg: GatewayConfig,
    tmp_path: Path,
    buffer: Buffer | None = None,
    poller: PollerFactory = BusPoller,
    wall: Callable[[], int] = wall_ms,
    mono: Callable[[], int] = mono_ms,
) -> tuple[Gateway, FakeUplink]:
    """A gateway for `cfg` over `buffer` (a new FakeBuffer if None) and a FakeUplink."""
    gw = Gateway(
        cfg,
        resolve_profiles(cfg, tmp_path),
        tmp_path / "gw.yaml",
        session="s1",
        buffer=buffer or FakeBuffer(),
        uplink=FakeUplink,
        poller=poller,
        wall=wall,
        mono=mono,
    )
    assert isinstance(gw.uplink, FakeUplink)
    return gw, gw.uplink


@dataclass
class FakeCaseStore:
    """The store ports of the case engine (`engine.EngineStore`) in memory, with the SQL store's
    rules: one open case (work order) per (subject, problem), one owner per alarm id,
    compare-and-set on the state. `known_devices` are bound to the `known_assets` their `asset`
    names, as the SQL store's device_assets binds them."""

    known_devices: list[DeviceState] = field(default_factory=list)
    known_assets: list[Asset] = field(default_factory=list)
    pending: list[AlarmTransition] = field(default_factory=list)
    handled: set[int] = field(default_factory=set)
    phases_: dict[str, dict[int, Phase]] = field(default_factory=dict)
    cases_: dict[str, Case] = field(default_factory=dict)
    orders: dict[str, WorkOrder] = field(default_factory=dict)
    audits: dict[str, list[Audit]] = field(default_factory=dict)
    links_: dict[tuple[str, int], AlarmLink] = field(default_factory=dict)
    serials: dict[str, int] = field(default_factory=dict)
    claims: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)  # department code -> name

    def departments(self) -> list[Department]:
        return [Department(c, n) for c, n in sorted(self.registry.items())]

    def department_names(self) -> dict[str, tuple[str, ...]]:
        return {c: (n,) for c, n in self.registry.items()}

    def pending_alarm_transitions(self, limit: int = 500) -> list[AlarmTransition]:
        return [t for t in self.pending if t.id not in self.handled][:limit]

    def mark_transitions_handled(
        self, ids: Sequence[int], cleared: Sequence[tuple[str, int]] = ()
    ) -> None:
        self._clear(cleared)
        self.handled.update(ids)

    def _clear(self, cleared: Sequence[tuple[str, int]]) -> None:
        for aid, ts in cleared:
            for key, k in self.links_.items():
                if k.alarm_id == aid and k.cleared_ms is None:
                    self.links_[key] = replace(k, cleared_ms=ts)

    def _link(self, links: Sequence[AlarmLink]) -> None:
        for k in links:
            if (k.alarm_id, k.activation) in self.links_:
                raise Conflict(f"alarm {k.alarm_id} was handled meanwhile")
            self.links_[(k.alarm_id, k.activation)] = k

    def devices(self, gateway: str | None = None, device: str | None = None) -> list[DeviceState]:
        return [
            d
            for d in self.known_devices
            if gateway in (None, d.gateway) and device in (None, d.device)
        ]

    def asset_of_device(self, gateway: str, device: str) -> Asset | None:
        codes = {d.asset for d in self.devices(gateway, device)}
        return next((a for a in self.known_assets if a.code in codes), None)

    def link(self, alarm_id: str) -> AlarmLink | None:
        mine = [k for k in self.links_.values() if k.alarm_id == alarm_id]
        return max(mine, key=lambda k: k.activation, default=None)

    def links(self, ref: str) -> list[AlarmLink]:
        return [k for k in self.links_.values() if k.ref == ref]

    def record_outcome(self, link: AlarmLink, transition_ids: Sequence[int]) -> None:
        self._link([link])
        self.handled.update(transition_ids)

    def next_case_serial(self, prefix: str) -> int:
        self.serials[prefix] = self.serials.get(prefix, 0) + 1
        return self.serials[prefix]

    def open_case_for(self, subject: str, problem: str) -> Case | None:
        return next(
            (
                c
                for c in self.cases_.values()
                if (c.subject, c.problem) == (subject, problem)
                and c.state not in (CaseState.CLOSED, CaseState.VOIDED)
            ),
            None,
        )

    def last_closed_case_for(self, subject: str, problem: str) -> Case | None:
        closed = [
            c
            for c in self.cases_.values()
            if (c.subject, c.problem) == (subject, problem) and c.state is CaseState.CLOSED
        ]
        return max(closed, key=lambda c: c.updated_ms, default=None)

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
        stored = self.cases_.get(case.case_no)
        if any((c.scope, c.report_id) in self.claims for c in claims):
            raise Conflict("a report id names a case already")
        if expect_state is None and self.open_case_for(case.subject, case.problem):
            raise Conflict("one open case per (subject, problem)")
        if expect_state is not None and (stored is None or stored.state.value != expect_state):
            raise Conflict(f"case {case.case_no} is no longer in state {expect_state}")
        self._link(links)
        self._clear(cleared)
        self.cases_[case.case_no] = case
        self.audits.setdefault(case.case_no, []).extend(audits)
        self.handled.update(transition_ids)
        for ph in phases:
            table = self.phases_.setdefault(case.case_no, {})
            table[ph.seq] = ph
        for c in claims:
            self.claims[(c.scope, c.report_id)] = (case.case_no, c.fingerprint)

    def reported_case(self, scope: str, report_id: str) -> tuple[str, str] | None:
        return self.claims.get((scope, report_id))

    def case(self, case_no: str) -> Case | None:
        return self.cases_.get(case_no)

    def phases(self, case_no: str) -> list[Phase]:
        return [p for _, p in sorted(self.phases_.get(case_no, {}).items())]

    def audit(self, case_no: str) -> list[Audit]:
        return list(self.audits.get(case_no, []))

    def overdue_phases(self, now_ms: int) -> list[Phase]:
        running = (p for t in self.phases_.values() for p in t.values() if p.end_ms is None)
        return [p for p in running if p.needs_escalation(now_ms)]

    def open_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        return next(
            (
                o
                for o in self.orders.values()
                if (o.subject, o.problem) == (subject, problem)
                and o.state is not WorkOrderState.DONE
            ),
            None,
        )

    def last_closed_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        done = [
            o
            for o in self.orders.values()
            if (o.subject, o.problem) == (subject, problem) and o.state is WorkOrderState.DONE
        ]
        return max(done, key=lambda o: o.updated_ms, default=None)

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
        stored = self.orders.get(order.order_no)
        if expect_state is not None and (stored is None or stored.state.value != expect_state):
            raise Conflict(f"work order {order.order_no} is no longer in state {expect_state}")
        self._link(links)
        self._clear(cleared)
        self.orders[order.order_no] = order
        self.audits.setdefault(order.order_no, []).extend(audits)
        self.handled.update(transition_ids)

    def work_order(self, order_no: str) -> WorkOrder | None:
        return self.orders.get(order_no)
