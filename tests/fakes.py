"""In-memory fakes of the gateway's ports (edge/ports.py), for unit tests of `edge.daemon.Gateway`.

They keep what the gateway gave them in plain lists, so a test asserts on values instead of
reaching into the gateway or the SQLite file. Integration and e2e tests use the real adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

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
