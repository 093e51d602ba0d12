"""The gateway's data path, one direction: poll → decode → rules → buffer → uplink.

`Pipeline` is the pollers' `PollSink`: decoded values go through the alarm rules and the
report-by-exception filters into the buffer, and the uplink is told there is something to
publish. Nothing downstream calls back into it; a failure in its own timer goes to the
`on_failure` it was given.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from lifeline.drivers.errors import DriverError
from lifeline.drivers.profile import AlarmRuleSpec, Profile
from lifeline.drivers.values import Value
from lifeline.edge.buffer import Sample
from lifeline.edge.config import Bus, GatewayConfig, point_rules
from lifeline.edge.ports import Buffer, Transport
from lifeline.edge.rules import AlarmEngine, ExceptionFilter, Rule, UnknownAlarm
from lifeline.edge.scheduler import Device, Health, make_device
from lifeline.wire import AlarmEvent, DeviceEvent, Quality, Severity

log = logging.getLogger("lifeline.edge")


def to_rule(spec: AlarmRuleSpec, baseline: float = 0.0) -> Rule:
    """Translate a profile/config alarm rule into the rules engine's form.

    `baseline` is the point's installed zero (its unit); only a deviation rule uses it.
    Raises ValueError for a severity outside 1..4.
    """
    return Rule(
        type=spec.type,
        limit=spec.limit if spec.limit is not None else 0.0,
        severity=Severity(spec.severity),
        deadband=spec.deadband,
        on_delay_s=spec.on_delay_s,
        off_delay_s=spec.off_delay_s,
        when=spec.when if spec.when is not None else True,
        message=spec.message,
        baseline=baseline if spec.deviation else None,
    )


class Pipeline:
    """Poll outcomes into rules, filters and the buffer; the uplink is kicked, never waited for.

    `wall` (UTC ms) stamps events, `mono` (ms) times delays and heartbeats; `on_failure`
    (where, exception) hears of a failure in the alarm delay timer, a loop callback.
    """

    def __init__(
        self,
        buffer: Buffer,
        engine: AlarmEngine,
        uplink: Transport,
        wall: Callable[[], int],
        mono: Callable[[], int],
        on_failure: Callable[[str, BaseException], None],
    ) -> None:
        self.buffer = buffer
        self.engine = engine
        self.uplink = uplink
        self.devices: dict[str, Device] = {}
        self.has_data = asyncio.Event()  # set by new readings, cleared by the flusher
        self._wall, self._mono = wall, mono
        self._on_failure = on_failure
        self._filters: dict[str, dict[str, ExceptionFilter]] = {}
        self._comm_loss = Severity.HIGH
        self._delay_timer: asyncio.TimerHandle | None = None
        self._delay_due_ms: int | None = None

    def load(
        self, cfg: GatewayConfig, profiles: dict[str, Profile]
    ) -> list[tuple[Bus, list[Device]]]:
        """Build the devices, their rules and filters from `cfg`; return the devices per bus.

        On a reload, a device kept keeps what `status` shows about it, an unchanged rule keeps
        its alarm state, and the rules of points no longer configured are dropped.
        Raises ValueError when a point cannot be planned or a rule has no valid severity.
        """
        before = self.devices
        points_before = {(d.id, n) for d in before.values() for n in d.point_names}
        devices: dict[str, Device] = {}
        filters: dict[str, dict[str, ExceptionFilter]] = {}
        buses: list[tuple[Bus, list[Device]]] = []
        for bus in cfg.buses:
            devs = []
            for dc in bus.devices:
                profile = profiles[dc.id]
                dev = make_device(dc, profile, cfg.health)
                prev = before.get(dc.id)
                if prev is not None:
                    dev.last_ok_ms, dev.last_error = prev.last_ok_ms, prev.last_error
                    dev.last_error_ms = prev.last_error_ms
                devs.append(dev)
                devices[dc.id] = dev
                for p in profile.points:
                    baseline = dc.baselines.get(p.name, 0.0)
                    rules = [to_rule(s, baseline) for s in point_rules(dc, p)]
                    if dc.stale_after_s is not None:
                        rules.append(Rule("stale", dc.stale_after_s, Severity(dc.stale_severity)))
                    self.engine.set_rules(dc.id, p.name, rules)
                if dc.report.deadband is not None:
                    filters[dc.id] = {
                        name: ExceptionFilter(dc.report.deadband, dc.report.heartbeat_s)
                        for name in dev.point_names
                    }
            buses.append((bus, devs))
        points_after = {(d.id, n) for d in devices.values() for n in d.point_names}
        for dev_id, name in points_before - points_after:
            self.engine.set_rules(dev_id, name, [])
        self.devices, self._filters = devices, filters
        self._comm_loss = Severity(cfg.health.comm_loss_severity)
        return buses

    # --- the poll sink (hot path) ----------------------------------------------------------

    def values(self, device: Device, values: dict[str, Value], ts_ms: int) -> None:
        """A device answered: evaluate rules, filter by exception, queue for the buffer.

        Raises BufferFull when an alarm event it raised cannot be stored.
        """
        mono = self._mono()  # times delays and heartbeats; ts_ms (wall) stamps the data
        dev_id = device.id
        engine = self.engine
        filters = self._filters.get(dev_id)
        good = Quality.GOOD
        out: list[Sample] = []
        events: list[AlarmEvent] = []
        for name, raw in values.items():
            value: Value | None = raw
            quality = good
            if raw.__class__ is float and not math.isfinite(raw):
                value, quality = None, Quality.BAD  # the wire carries no NaN
            elif engine.has_rules(dev_id, name):
                events.extend(engine.evaluate(dev_id, name, value, ts_ms, mono))
            if filters is None or filters[name].admit(value, quality, mono):
                out.append((dev_id, name, ts_ms, value, quality))
        self.buffer.add(out)
        self.has_data.set()
        if events:
            self._alarm_events(events)
        if engine.next_due_ms is not None:
            self._arm_delay_timer()
        if device.last_ok_ms is None:  # its first answer: `status` should show it soon
            self.buffer.health_changed()

    def failure(self, device: Device, error: DriverError, ts_ms: int) -> None:
        """A poll failed: counted on the device; health decides what else happens."""

    def transition(self, device: Device, state: Health, reason: str, ts_ms: int) -> None:
        """Log once, emit device events and comm-loss alarms, mark points stale when offline.

        Raises BufferFull when the device event or alarm cannot be stored.
        """
        log.warning("device %s is now %s: %s", device.id, state.value, reason)
        self.buffer.health_changed()
        if state is Health.OFFLINE:
            self.buffer.add_device_events([DeviceEvent(device.id, False, ts_ms, reason)])
            self._alarm_events(
                self.engine.comm_loss(device.id, True, ts_ms, self._mono(), self._comm_loss)
            )
            self.buffer.add(
                (device.id, name, ts_ms, None, Quality.STALE) for name in device.point_names
            )
            self.has_data.set()
        else:  # online or degraded: it answers, so comm loss (if any) is over
            events = self.engine.comm_loss(device.id, False, ts_ms, self._mono(), self._comm_loss)
            if events:  # it had been offline
                self.buffer.add_device_events([DeviceEvent(device.id, True, ts_ms, reason)])
                self._alarm_events(events)
        self.uplink.kick()

    # --- alarms by time and by hand ------------------------------------------------------------

    def tick(self) -> None:
        """Raise or clear what timers decide (stale data, expired on/off delays).

        Raises BufferFull when an alarm event cannot be stored.
        """
        events = self.engine.tick(self._wall(), self._mono())
        if events:
            self._alarm_events(events)
        if self.engine.next_due_ms is not None:
            self._arm_delay_timer()

    def acknowledge(self, alarm_id: str, who: str, note: str) -> str:
        """Acknowledge an alarm (collector or crew CLI); return its new state.

        Raises ValueError when no such alarm is waiting for an acknowledgement, BufferFull
        when the acknowledgement cannot be stored.
        """
        try:
            event = self.engine.acknowledge(alarm_id, who, note, self._wall())
        except UnknownAlarm:
            raise ValueError(f"no unacknowledged alarm {alarm_id!r} on this gateway") from None
        self._alarm_events([event])
        return event.state.value

    def _arm_delay_timer(self) -> None:
        """Wake up when the earliest running on/off delay expires (unless already set for it)."""
        due = self.engine.next_due_ms
        if due is None or (self._delay_due_ms is not None and self._delay_due_ms <= due):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not serving (values fed by hand): the housekeeping tick will not run either
        if self._delay_timer is not None:
            self._delay_timer.cancel()
        self._delay_due_ms = due
        wait_s = max(0, due - self._mono()) / 1000 + 0.001
        self._delay_timer = loop.call_later(wait_s, self._delays_due)

    def _delays_due(self) -> None:
        self._delay_timer = self._delay_due_ms = None
        try:
            self.tick()
        except Exception as exc:  # a loop callback: it would die in silence otherwise
            self._on_failure("alarm delay timer", exc)

    def _alarm_events(self, events: list[AlarmEvent]) -> None:
        for e in events:
            log.warning("alarm %s %s %s/%s: %s", e.alarm_id, e.state, e.device, e.point, e.message)
        self.buffer.add_alarm_events(events)
        self.uplink.kick()

    # --- buffer → uplink -------------------------------------------------------------------

    async def flusher(self, flush_s: float) -> None:
        """Commit queued readings every `flush_s` seconds while they come (runs until cancelled)."""
        while True:
            await self.has_data.wait()
            await asyncio.sleep(flush_s)  # gather a batch: one transaction, not one per reading
            self.has_data.clear()
            self.flush()

    def flush(self) -> None:
        """Commit queued readings, freeze batches for the uplink's free window, kick it."""
        frozen = self.buffer.flush(self.uplink.live_since_ms, self.uplink.room)
        if frozen or self.buffer.backlog:
            self.uplink.kick()
