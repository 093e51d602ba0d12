"""The gateway's two clocks: wall-clock UTC for data, monotonic for timing, and a watch on both.

Samples and events are stamped with the wall clock (they are data: when it happened). Delays,
intervals, backoffs and timeouts run on the monotonic clock, which no NTP step or missing RTC
can move. The wall clock is still watched, because its stamps go upstream: a step (NTP
correcting it, an operator setting it) and an implausible reading (a cabinet without an RTC
boots at 1970 until NTP syncs) are announced in the birth (`wire.ClockInfo`), counted and shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from lifeline.wire import EARLIEST_PLAUSIBLE_MS, ClockInfo

# A step is a change of (wall - monotonic) beyond this between two looks. NTP slews at most
# 0.5 ms/s, so looks a second apart never see a slew as a step.
STEP_MS = 1000


def wall_ms() -> int:
    """UTC wall-clock milliseconds (stamps samples and events)."""
    return time.time_ns() // 1_000_000


def mono_ms() -> int:
    """Monotonic milliseconds (times delays, intervals and timeouts; arbitrary origin)."""
    return time.monotonic_ns() // 1_000_000


class ClockChange(Enum):
    """What a look at the clocks found different from the last one."""

    STEPPED = "stepped"  # the wall clock jumped against the monotonic clock
    IMPLAUSIBLE = "implausible"  # it now reads before EARLIEST_PLAUSIBLE_MS
    PLAUSIBLE = "plausible"  # it reads a plausible time again


@dataclass(slots=True)
class ClockWatch:
    """Pure watch on the wall clock against the monotonic clock; both readings passed in."""

    earliest_ms: int = EARLIEST_PLAUSIBLE_MS
    step_threshold_ms: int = STEP_MS
    plausible: bool = True
    steps: int = 0  # steps seen since the process started
    step_ms: int = 0  # the last step, signed (wall time gained); 0 if none
    step_at_ms: int = 0  # wall time just after the last step
    _offset_ms: int | None = None  # wall - monotonic at the last look

    def look(self, wall: int, mono: int) -> list[ClockChange]:
        """Compare a pair of readings taken together with the last pair; return what changed.

        The first look only sets the reference and reports an implausible clock.
        """
        changes: list[ClockChange] = []
        offset = wall - mono
        if self._offset_ms is not None and abs(offset - self._offset_ms) > self.step_threshold_ms:
            self.steps += 1
            self.step_ms = offset - self._offset_ms
            self.step_at_ms = wall
            changes.append(ClockChange.STEPPED)
        self._offset_ms = offset
        plausible = wall >= self.earliest_ms
        if plausible != self.plausible:
            self.plausible = plausible
            changes.append(ClockChange.PLAUSIBLE if plausible else ClockChange.IMPLAUSIBLE)
        return changes

    def info(self) -> ClockInfo:
        """What the birth announces about this clock."""
        return ClockInfo(self.plausible, self.step_ms, self.step_at_ms)
