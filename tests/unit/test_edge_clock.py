"""The watch on the wall clock against the monotonic clock: steps and plausibility."""

from __future__ import annotations

import pytest

from lifeline.edge.clock import ClockChange, ClockWatch
from lifeline.wire import EARLIEST_PLAUSIBLE_MS, ClockInfo

pytestmark = pytest.mark.unit

NOW = EARLIEST_PLAUSIBLE_MS + 86_400_000
HOUR = 3_600_000


def test_a_steady_clock_changes_nothing() -> None:
    w = ClockWatch()
    assert w.look(NOW, 1_000) == []
    assert w.look(NOW + 1_000, 2_000) == []
    assert w.look(NOW + 2_000 + 400, 3_000) == []  # NTP slewing (or scheduling) is no step
    assert w.info() == ClockInfo(True, 0, 0)


def test_a_step_back_is_seen_once_with_its_size() -> None:
    w = ClockWatch()
    w.look(NOW, 1_000)
    assert w.look(NOW + 1_000 - HOUR, 2_000) == [ClockChange.STEPPED]
    assert w.look(NOW + 2_000 - HOUR, 3_000) == []
    assert (w.steps, w.step_ms, w.step_at_ms) == (1, -HOUR, NOW + 1_000 - HOUR)
    assert w.info() == ClockInfo(True, -HOUR, NOW + 1_000 - HOUR)


def test_a_boot_at_1970_is_implausible_until_ntp_steps_it() -> None:
    w = ClockWatch()
    assert w.look(12_000, 1_000) == [ClockChange.IMPLAUSIBLE]
    assert w.look(13_000, 2_000) == []
    assert not w.info().plausible
    assert w.look(NOW, 3_000) == [ClockChange.STEPPED, ClockChange.PLAUSIBLE]
    assert w.info() == ClockInfo(True, NOW - 3_000 - 11_000, NOW)
