"""The gateway's ports: what its runtime needs of the buffer, the uplink and a bus poller.

The composition root (edge/daemon.py) builds the real adapters (`edge.buffer.Outbox`,
`edge.uplink.Uplink`, `edge.scheduler.BusPoller`) and passes them in; unit tests pass
in-memory fakes instead (Cosmic Python's `typing.Protocol` ports).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from lifeline.drivers.link import Link, LinkStats
from lifeline.edge.buffer import GatewayHealth, Sample
from lifeline.edge.config import Bus
from lifeline.edge.scheduler import Device, PollSink
from lifeline.wire import AlarmEvent, Birth, Command, CommandReply, DeviceEvent

CommandHandler = Callable[[Command], Awaitable[CommandReply]]


class Buffer(Protocol):
    """The store-and-forward buffer as the gateway's runtime uses it (`edge.buffer.Outbox`).

    Writes raise `edge.buffer.BufferFull` when an alarm or device event cannot be stored.
    """

    epoch: str  # batch keys are (gateway, epoch, seq)
    next_seq: int
    backlog: int  # readings committed, not yet in a batch
    evicted: int  # readings evicted oldest-first when full
    disk_dropped: int  # readings never stored for lack of room
    health_source: Callable[[], GatewayHealth] | None
    on_disk_full: Callable[[bool], None] | None

    @property
    def cap_bytes(self) -> int:
        """The bound in force, in bytes."""
        ...

    @property
    def disk_full_since_ms(self) -> int | None:
        """UTC ms since when the disk is full; None while it has room."""
        ...

    def add(self, samples: Iterable[Sample]) -> None:
        """Queue readings in memory until the next `flush`."""

    def add_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        """Commit alarm events to their lane and the alarm log."""

    def add_device_events(self, events: Sequence[DeviceEvent]) -> None:
        """Commit device online/offline events to their lane."""

    def flush(self, live_since_ms: int | None, room: int) -> int:
        """Commit queued readings, freeze batches for `room` places; the number frozen."""
        ...

    def frozen_count(self) -> int:
        """Batches frozen and not yet acknowledged."""
        ...

    def used_bytes(self) -> int:
        """Bytes of the file in use."""
        ...

    def check_disk(self) -> None:
        """Look at the disk under the buffer (about once a second)."""

    def commit_acks(self) -> None:
        """Delete the batches the broker acknowledged."""

    def health_changed(self) -> None:
        """Write the health snapshot soon."""

    def save_health(self) -> bool:
        """Write the health snapshot if due; True if written."""
        ...

    def open_alarms(self) -> list[AlarmEvent]:
        """The latest event of every alarm not back to normal."""
        ...

    def next_alarm_number(self) -> int:
        """Take the next persisted alarm number."""
        ...

    def take_ack_requests(self) -> list[tuple[str, str, str]]:
        """Acknowledgements queued by the crew: (alarm id, who, note)."""
        ...

    def prune_alarm_log(self, retention_days: float) -> int:
        """Delete alarm log rows past the retention; how many."""
        ...

    def close(self) -> None:
        """Commit what is held in memory and close."""


class Transport(Protocol):
    """The MQTT uplink as the gateway's runtime uses it (`edge.uplink.Uplink`)."""

    live_since_ms: int | None  # UTC ms of the CONNACK of the connection up; None while down
    state_since_ms: int
    last_error: str
    last_error_ms: int | None
    last_puback_ms: int | None

    @property
    def connected(self) -> bool:
        """True between CONNACK and the connection dropping."""
        ...

    @property
    def room(self) -> int:
        """Free places in the in-flight window."""
        ...

    def kick(self) -> None:
        """Something new was frozen, queued or acknowledged: publish soon."""

    def publish_birth(self) -> None:
        """Publish the retained birth of this session."""

    def publish_status(self, counters: dict[str, int | float]) -> None:
        """Publish a status message with these figures."""

    def clock_stepped(self, step_ms: int) -> None:
        """The wall clock stepped by `step_ms`: the next birth says so."""

    def counters(self) -> dict[str, int | float]:
        """The uplink's own figures for the status message."""
        ...

    async def run(self) -> None:
        """Stay connected until `close`; raises what one of its callbacks raised."""

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is frozen or in flight, at most `timeout_s`; True if empty."""
        ...

    async def close(self, reason: str = "shutdown") -> None:
        """Publish the death `reason`, send DISCONNECT and end `run`."""


TransportFactory = Callable[[Callable[[], Birth], CommandHandler], Transport]
"""Builds the uplink from the gateway's birth source and command handler."""


class Poller(Protocol):
    """One bus's poll loop (`edge.scheduler.BusPoller`): feeds a `PollSink` until cancelled."""

    name: str
    devices: list[Device]
    link: Link | None  # while running (commands write through it)

    @property
    def link_stats(self) -> LinkStats:
        """What the bus's link had to put up with."""
        ...

    async def run(self) -> None:
        """Poll until cancelled."""


PollerFactory = Callable[[Bus, list[Device], PollSink], Poller]
"""Builds the poller of one bus from its config, its devices and where outcomes go."""
