"""Reading one device the way it wants to be read: retries, busy answers, refused merged reads.

A `DeviceReader` polls one unit through a link with its read plan and learns from the answers:

- a timeout, a bad frame or a lost link is retried `retries` times (the device may not have
  heard the request); the poll fails when a read still fails;
- exception 05 (ACKNOWLEDGE) or 06 (SERVER DEVICE BUSY) means "alive, ask again later" (Modbus
  Application Protocol V1.1b3 §7): the same read is asked again after `busy_backoff_s`,
  doubling, at most `busy_retries` times;
- exception 02 (ILLEGAL DATA ADDRESS) or 03 (ILLEGAL DATA VALUE) to a read that merges several
  points means the device will not serve that read as a whole (nothing at an address inside
  the gap, or fewer registers per request than Modbus allows): the read is split at its gaps,
  then in halves (`drivers.planner.split_read`), and the plan that works is kept for the next
  polls and logged once. A single point the device refuses is left out of the plan and named;
- exception 10/11 from a Modbus TCP gateway (path unavailable, target failed to respond) means
  the device behind it did not answer: handled like a timeout.

Every poll's costs are counted (`PollCounts`), so the scheduler can call a device that answers
only after retries degraded, with its timeout count.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from lifeline.drivers.errors import DeviceException, DeviceTimeout, DriverError
from lifeline.drivers.planner import MAX_REGISTERS, ReadRequest, plan_reads, split_read
from lifeline.drivers.profile import PointSpec
from lifeline.drivers.values import Value, decode_response

__all__ = ["BUSY_CODES", "SILENT_CODES", "DeviceReader", "PollCounts", "ReadLink", "describe_plan"]

log = logging.getLogger("lifeline.drivers")

BUSY_CODES = frozenset({5, 6})  # ACKNOWLEDGE, SERVER DEVICE BUSY: alive, ask again later
SILENT_CODES = frozenset({10, 11})  # a gateway says the device behind it did not answer
_REFUSED_CODES = frozenset({2, 3})  # ILLEGAL DATA ADDRESS / VALUE: read less at a time


class ReadLink(Protocol):
    """What a reader needs of a link (`drivers.link.Link` has it; tests pass fakes)."""

    async def read(
        self,
        unit: int,
        request: ReadRequest,
        timeout: float,  # noqa: ASYNC109 - per request, as in drivers.link
    ) -> list[int] | list[bool]:
        """Read the registers (or bits) of `request` from device `unit`."""
        ...


@dataclass(slots=True)
class PollCounts:
    """What one poll cost beyond one answer per read."""

    timeouts: int = 0  # reads that timed out (then retried, or the poll failed)
    retried: int = 0  # reads asked again after a timeout, a bad frame or a lost link
    busy: int = 0  # busy / acknowledge answers (exception 05, 06)
    split: int = 0  # merged reads the device refused (02, 03) and that were split
    failed: list[str] = field(default_factory=list)  # reads given up on while others answered

    @property
    def clean(self) -> bool:
        """True when every read was answered at the first request."""
        return not (self.timeouts or self.retried or self.busy or self.split or self.failed)

    def summary(self) -> str:
        """A short human account, e.g. '2 timeouts and 1 busy answer covered by retries'."""
        parts = []
        for count, what in (
            (self.timeouts, "timeout"),
            (self.retried - self.timeouts, "bad answer"),
            (self.busy, "busy answer"),
        ):
            if count > 0:
                parts.append(f"{count} {what}{'s' if count > 1 else ''}")
        text = " and ".join(parts) + " covered by retries" if parts else ""
        if self.split:
            text += ("; " if text else "") + f"{self.split} merged read(s) refused and split"
        if self.failed:
            text += ("; " if text else "") + "; ".join(self.failed)
        return text


def describe_plan(plan: Iterable[ReadRequest]) -> str:
    """'fc3 11174+1, fc3 11176+2' (function code, first address + count of each read)."""
    return ", ".join(f"fc{r.function} {r.address}+{r.count}" for r in plan)


class DeviceReader:
    """Polls one unit, retrying and re-planning as the device's answers demand.

    `points` are planned with `max_gap` / `max_registers` (see `plan_reads`); `timeout` is per
    read, in seconds. `name` names the device in log lines. `sleep` is injectable for tests.
    The link is given to each poll: the plan learnt belongs to the device, not to a connection.
    """

    def __init__(
        self,
        unit: int,
        points: Iterable[PointSpec],
        timeout: float,
        retries: int = 1,
        busy_retries: int = 3,
        busy_backoff_s: float = 0.05,
        max_gap: int = 16,
        max_registers: int = MAX_REGISTERS,
        name: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.unit = unit
        self.name = name or f"unit {unit}"
        self.timeout = timeout
        self.retries = retries
        self.busy_retries = busy_retries
        self.busy_backoff_s = busy_backoff_s
        self._sleep = sleep
        self.planned = plan_reads(points, max_gap, max_registers)
        self.plan = list(self.planned)  # what works for this device, learnt from its answers
        self.unreadable: dict[str, str] = {}  # point -> the exception that refused it
        self.last = PollCounts()  # the latest poll's costs

    async def poll(self, link: ReadLink) -> dict[str, Value]:
        """Read every point of the plan once through `link`; returns point -> value.

        Raises the DriverError of a read that failed after its retries when the device is
        silent (timeout, bad frame, lost link, exception 10/11), and a DeviceException when
        the device answered but no read gave a value. A read refused or still busy while
        others answered is left out of this poll's values and noted in `last.failed`.
        """
        counts = self.last = PollCounts()
        values: dict[str, Value] = {}
        queue = deque(self.plan)
        kept: list[ReadRequest] = []
        refused: DeviceException | None = None
        learnt = False
        try:
            while queue:
                request = queue.popleft()
                try:
                    raw = await self._read(link, request, counts)
                except DeviceException as exc:
                    if exc.code in SILENT_CODES:
                        raise
                    if exc.code not in _REFUSED_CODES:
                        kept.append(request)
                        counts.failed.append(str(exc))
                        refused = exc
                        continue
                    learnt = True
                    refused = exc
                    parts = split_read(request)
                    if parts:
                        counts.split += 1
                        queue.extendleft(reversed(parts))
                    else:
                        for p in request.points:
                            self.unreadable[p.name] = f"exception {exc.code} at {request.address}"
                    continue
                kept.append(request)
                values.update(decode_response(request, raw))
        finally:
            if refused is not None and learnt:  # keep what was learnt even if a read failed
                self._learn([*kept, *queue], refused)
        if not values and refused is not None:
            if not self.plan:  # every point refused: forget, and start afresh next time
                self.plan, self.unreadable = list(self.planned), {}
            raise refused
        return values

    def _learn(self, plan: list[ReadRequest], why: DeviceException) -> None:
        """Keep the plan that works, and say so once (the next polls use it silently)."""
        self.plan = plan
        text = f"{self.name} refused a read ({why.detail}): now read as {describe_plan(plan)}"
        if self.unreadable:
            text += f"; points it refuses on their own: {', '.join(sorted(self.unreadable))}"
        log.warning("%s (the profile's plan was %s)", text, describe_plan(self.planned))

    async def _read(
        self, link: ReadLink, request: ReadRequest, counts: PollCounts
    ) -> list[int] | list[bool]:
        """One read, with its retries (silence) and busy backoff (exceptions 05/06)."""
        attempt = busy = 0
        while True:
            try:
                return await link.read(self.unit, request, self.timeout)
            except DeviceException as exc:
                if exc.code in BUSY_CODES:
                    counts.busy += 1
                    if busy >= self.busy_retries:
                        raise
                    await self._sleep(self.busy_backoff_s * 2**busy)
                    busy += 1
                    continue
                if exc.code not in SILENT_CODES:
                    raise
                counts.timeouts += 1
                if attempt >= self.retries:
                    raise
            except DeviceTimeout:
                counts.timeouts += 1
                if attempt >= self.retries:
                    raise
            except DriverError:
                if attempt >= self.retries:
                    raise
            attempt += 1
            counts.retried += 1
