"""Poll scheduling: one loop per bus or connection, per-device intervals, device health."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from lifeline.drivers.errors import DeviceException, DriverError
from lifeline.drivers.link import (
    Link,
    LinkSettings,
    LinkStats,
    ModbusSerialLink,
    ModbusTcpLink,
    RtuOverTcpLink,
)
from lifeline.drivers.profile import Profile
from lifeline.drivers.reader import SILENT_CODES, DeviceReader
from lifeline.drivers.values import Value
from lifeline.edge.config import Bus, DeviceConfig, HealthConfig, RtuBus, TcpBus

log = logging.getLogger("lifeline.edge.scheduler")

_JITTER = 0.02  # of the interval, per cycle: gateways in one cabinet drift apart


class Health(StrEnum):
    """What the gateway believes about a device."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class Outcome(StrEnum):
    """How one poll went, as far as the device's health is concerned."""

    CLEAN = "clean"  # every read answered at the first request
    TROUBLED = "troubled"  # values came, but only after retries, busy answers or re-planning
    REFUSED = "refused"  # the device answered, with exceptions only: alive, no values
    SILENT = "silent"  # no answer (timeout, bad frames, link down, gateway 10/11)


@dataclass(slots=True)
class HealthTracker:
    """A device's health from its poll outcomes, with re-probe backoff; pure, time passed in.

    Offline after `offline_after` silent polls in a row (re-probed with a doubling backoff);
    degraded after `degraded_after` of them, or after any poll that needed retries, met busy
    answers or got exceptions only (a device that answers is alive: never offline for that);
    online again after one good poll when it was offline, after `recover_after` clean polls
    in a row when it was degraded. `timeouts` counts the timeouts a retry covered.
    """

    cfg: HealthConfig
    state: Health = Health.ONLINE
    failures: int = 0  # consecutive silent polls
    clean: int = 0  # consecutive clean polls
    backoff_s: float = 0.0
    timeouts: int = 0  # timeouts that a retry covered, since the gateway started
    detail: str = ""  # why the device is not online ("" when it is)

    def record(self, outcome: Outcome, detail: str = "", timeouts: int = 0) -> Health | None:
        """Count one poll outcome (`detail` says what went wrong); the new state if it changed."""
        old = self.state
        if outcome is Outcome.SILENT:
            self.failures += 1
            self.clean = 0
            if self.failures >= self.cfg.offline_after:
                self.state = Health.OFFLINE
                self.backoff_s = min(
                    self.cfg.reprobe_max_s, max(self.cfg.reprobe_min_s, self.backoff_s * 2)
                )
            elif self.failures >= self.cfg.degraded_after:
                self.state = Health.DEGRADED
            if self.state is not Health.ONLINE:
                self.detail = detail
        else:
            self.failures = 0
            self.backoff_s = 0.0
            if outcome is Outcome.CLEAN:
                self.clean += 1
                if old is Health.OFFLINE or self.clean >= self.cfg.recover_after:
                    self.state = Health.ONLINE
                    self.detail = ""
            else:
                self.clean = 0
                self.timeouts += timeouts
                self.state = Health.DEGRADED
                self.detail = detail
        return self.state if self.state is not old else None


@dataclass(slots=True)
class Device:
    """A device being polled: its config, profile, reader (read plan), health and counters."""

    cfg: DeviceConfig
    profile: Profile
    reader: DeviceReader
    health: HealthTracker
    next_due: float = 0.0
    polls: int = 0
    errors: int = 0
    busy: int = 0  # busy / acknowledge answers (exception 05/06)
    last_error: str = ""
    last_error_ms: int | None = None
    last_ok_ms: int | None = None  # last good poll (the health snapshot reads these)
    state_since_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    point_names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The device id."""
        return self.cfg.id


def make_reader(cfg: DeviceConfig, profile: Profile) -> DeviceReader:
    """The reader of one device: the profile's points planned with its and the config's limits.

    Raises ValueError when a point is larger than `max_registers` allows in one read.
    """
    return DeviceReader(
        cfg.unit,
        profile.points,
        cfg.timeout_s,
        retries=cfg.retries,
        busy_retries=cfg.busy_retries,
        busy_backoff_s=cfg.busy_backoff_s,
        max_gap=profile.max_gap if cfg.max_gap is None else cfg.max_gap,
        max_registers=profile.max_registers if cfg.max_registers is None else cfg.max_registers,
        name=cfg.id,
    )


def make_device(cfg: DeviceConfig, profile: Profile, health: HealthConfig) -> Device:
    """Build the runtime state of one device (plans its reads once)."""
    return Device(
        cfg=cfg,
        profile=profile,
        reader=make_reader(cfg, profile),
        health=HealthTracker(health),
        point_names=[p.name for p in profile.points],
    )


class PollSink(Protocol):
    """Where poll outcomes go (the daemon: rules, report-by-exception, outbox)."""

    def values(self, device: Device, values: dict[str, Value], ts_ms: int) -> None:
        """A device answered (`device.last_ok_ms` is still the previous good poll)."""

    def failure(self, device: Device, error: DriverError, ts_ms: int) -> None:
        """A poll failed (after retries)."""

    def transition(self, device: Device, state: Health, reason: str, ts_ms: int) -> None:
        """A device changed health state."""


def make_link(bus: Bus) -> Link:
    """The drivers link for a bus config, with the bus's pacing, echo and reconnect settings."""
    settings = LinkSettings(
        request_delay_s=bus.request_delay_s,
        connect_delay_s=bus.connect_delay_s,
        echo=getattr(bus, "echo", False),
        reconnect_after=getattr(bus, "reconnect_after", 0),
    )
    if isinstance(bus, TcpBus):
        return ModbusTcpLink(bus.host, bus.port, settings)
    if isinstance(bus, RtuBus):
        return ModbusSerialLink(
            bus.port, bus.baudrate, bus.parity, bus.stopbits, bus.bytesize, settings
        )
    return RtuOverTcpLink(bus.host, bus.port, settings=settings)


def bus_name(bus: Bus) -> str:
    """A readable name for logs."""
    if bus.name:
        return bus.name
    return bus.port if isinstance(bus, RtuBus) else f"{bus.type}://{bus.host}:{bus.port}"


class BusPoller:
    """Polls the devices of one bus, one request at a time, each at its own interval."""

    def __init__(
        self,
        bus: Bus,
        devices: list[Device],
        sink: PollSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.name = bus_name(bus)
        self.devices = devices
        self.sink = sink
        self.link: Link | None = None  # while running (commands write through it)
        self._link = make_link(bus)
        self._clock = clock

    @property
    def link_stats(self) -> LinkStats:
        """What the bus's link had to put up with (echoes, noise, stale answers, reconnects)."""
        return self._link.stats

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        now = self._clock()
        for dev in self.devices:  # random phase: no two gateways beat in step
            dev.next_due = now + random.uniform(0, dev.cfg.interval_s)
        async with self._link as link:
            self.link = link
            try:
                while True:
                    dev = min(self.devices, key=lambda d: d.next_due)
                    wait = dev.next_due - self._clock()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._poll(link, dev)
            finally:
                self.link = None

    async def _poll(self, link: Link, dev: Device) -> None:
        ts_ms = time.time_ns() // 1_000_000
        started = self._clock()
        dev.polls += 1
        reader = dev.reader
        try:
            values = await reader.poll(link)
        except Exception as exc:  # one device's surprise must not stop the bus
            if not isinstance(exc, DriverError):
                log.exception("unexpected error polling %s", dev.id)
                exc = DriverError(dev.cfg.unit, None, None, f"{type(exc).__name__}: {exc}")
            dev.busy += reader.last.busy
            dev.errors += 1
            dev.last_error = str(exc)
            dev.last_error_ms = ts_ms
            self.sink.failure(dev, exc, ts_ms)
            alive = isinstance(exc, DeviceException) and exc.code not in SILENT_CODES
            outcome = Outcome.REFUSED if alive else Outcome.SILENT
            reason = f"answers with exceptions only: {exc}" if alive else str(exc)
            self._record(dev, outcome, reason, 0, ts_ms)
        else:
            counts = reader.last
            dev.busy += counts.busy
            if counts.clean and not reader.unreadable:
                self._record(dev, Outcome.CLEAN, "answering again", 0, ts_ms)
            else:
                trouble = counts.summary()
                if reader.unreadable:
                    refused = ", ".join(sorted(reader.unreadable))
                    trouble += ("; " if trouble else "") + f"refuses points {refused}"
                self._record(dev, Outcome.TROUBLED, trouble, counts.timeouts, ts_ms)
            self.sink.values(dev, values, ts_ms)
            dev.last_ok_ms = ts_ms  # after the sink, which may ask whether it answered before
        self._reschedule(dev, started)

    def _record(
        self, dev: Device, outcome: Outcome, reason: str, timeouts: int, ts_ms: int
    ) -> None:
        changed = dev.health.record(outcome, reason, timeouts)
        if changed is not None:
            dev.state_since_ms = ts_ms
            self.sink.transition(dev, changed, reason, ts_ms)

    def _reschedule(self, dev: Device, started: float) -> None:
        interval = dev.cfg.interval_s
        if dev.health.state is Health.OFFLINE:
            dev.next_due = started + dev.health.backoff_s * random.uniform(0.8, 1.2)
            return
        dev.next_due += interval * (1 + random.uniform(-_JITTER, _JITTER))
        now = self._clock()
        if dev.next_due < now:  # overran (slow device, timeouts): skip, do not burst
            dev.next_due = now + interval * random.uniform(0.5, 1.0)
