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

from drivers.errors import DriverError
from drivers.link import Link, ModbusSerialLink, ModbusTcpLink, RtuOverTcpLink, poll_device
from drivers.planner import ReadRequest, Value, plan_reads
from drivers.profile import Profile
from edge.config import Bus, DeviceConfig, HealthConfig, RtuBus, TcpBus

log = logging.getLogger("lifeline.edge.scheduler")

_JITTER = 0.02  # of the interval, per cycle: gateways in one cabinet drift apart


class Health(StrEnum):
    """What the gateway believes about a device."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(slots=True)
class HealthTracker:
    """Consecutive-failure counter with re-probe backoff; pure, time passed in."""

    cfg: HealthConfig
    state: Health = Health.ONLINE
    failures: int = 0
    backoff_s: float = 0.0

    def record(self, ok: bool) -> Health | None:
        """Count one poll outcome; return the new state if it changed."""
        old = self.state
        if ok:
            self.failures = 0
            self.backoff_s = 0.0
            self.state = Health.ONLINE
        else:
            self.failures += 1
            if self.failures >= self.cfg.offline_after:
                self.state = Health.OFFLINE
                self.backoff_s = min(
                    self.cfg.reprobe_max_s, max(self.cfg.reprobe_min_s, self.backoff_s * 2)
                )
            elif self.failures >= self.cfg.degraded_after:
                self.state = Health.DEGRADED
        return self.state if self.state is not old else None


@dataclass(slots=True)
class Device:
    """A device being polled: its config, profile, read plan, health and counters."""

    cfg: DeviceConfig
    profile: Profile
    plan: list[ReadRequest]
    health: HealthTracker
    next_due: float = 0.0
    polls: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_ms: int | None = None
    last_ok_ms: int | None = None  # last good poll (the health snapshot reads these)
    state_since_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    point_names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The device id."""
        return self.cfg.id


def make_device(cfg: DeviceConfig, profile: Profile, health: HealthConfig) -> Device:
    """Build the runtime state of one device (plans its reads once)."""
    return Device(
        cfg=cfg,
        profile=profile,
        plan=plan_reads(profile.points),
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
    """The drivers link for a bus config."""
    if isinstance(bus, TcpBus):
        return ModbusTcpLink(bus.host, bus.port)
    if isinstance(bus, RtuBus):
        return ModbusSerialLink(bus.port, bus.baudrate, bus.parity, bus.stopbits, bus.bytesize)
    return RtuOverTcpLink(bus.host, bus.port)


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
        self.link: Link | None = None
        self._clock = clock

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        now = self._clock()
        for dev in self.devices:  # random phase: no two gateways beat in step
            dev.next_due = now + random.uniform(0, dev.cfg.interval_s)
        async with make_link(self.bus) as link:
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
        try:
            values = await poll_device(
                link, dev.cfg.unit, dev.plan, dev.cfg.timeout_s, dev.cfg.retries
            )
        except Exception as exc:  # one device's surprise must not stop the bus
            if not isinstance(exc, DriverError):
                log.exception("unexpected error polling %s", dev.id)
                exc = DriverError(dev.cfg.unit, None, None, f"{type(exc).__name__}: {exc}")
            dev.errors += 1
            dev.last_error = str(exc)
            dev.last_error_ms = ts_ms
            self.sink.failure(dev, exc, ts_ms)
            changed = dev.health.record(False)
            if changed is not None:
                dev.state_since_ms = ts_ms
                self.sink.transition(dev, changed, str(exc), ts_ms)
        else:
            changed = dev.health.record(True)
            if changed is not None:
                dev.state_since_ms = ts_ms
                self.sink.transition(dev, changed, "answering again", ts_ms)
            self.sink.values(dev, values, ts_ms)
            dev.last_ok_ms = ts_ms  # after the sink, which may ask whether it answered before
        self._reschedule(dev, started)

    def _reschedule(self, dev: Device, started: float) -> None:
        interval = dev.cfg.interval_s
        if dev.health.state is Health.OFFLINE:
            dev.next_due = started + dev.health.backoff_s * random.uniform(0.8, 1.2)
            return
        dev.next_due += interval * (1 + random.uniform(-_JITTER, _JITTER))
        now = self._clock()
        if dev.next_due < now:  # overran (slow device, timeouts): skip, do not burst
            dev.next_due = now + interval * random.uniform(0.5, 1.0)
