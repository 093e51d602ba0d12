"""The gateway with both its clocks injected: a wall-clock step is seen, counted, put in the health
snapshot and the birth, and does not move an on-delay that is running."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline.edge.config import parse_config
from lifeline.edge.daemon import Gateway
from lifeline.wire import EARLIEST_PLAUSIBLE_MS
from tests.fakes import FakeBuffer, FakeUplink, fake_gateway

pytestmark = pytest.mark.unit

HOUR = 3_600_000


class Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = EARLIEST_PLAUSIBLE_MS + 10 * 86_400_000
        self.mono = 1_000

    def tick(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def make_gateway(tmp_path: Path, clocks: Clocks) -> tuple[Gateway, FakeBuffer, FakeUplink]:
    cfg = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [
                {
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "devices": [{"id": "gas-1", "unit": 1, "profile": "gas_detector"}],
                }
            ],
        }
    )
    buffer = FakeBuffer()
    gw, uplink = fake_gateway(
        cfg, tmp_path, buffer, wall=lambda: clocks.wall, mono=lambda: clocks.mono
    )
    return gw, buffer, uplink


def test_a_step_back_during_an_on_delay_is_seen_and_the_alarm_comes_on_time(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    gw, buffer, uplink = make_gateway(tmp_path, clocks)
    gas = gw.devices["gas-1"]
    gw.pipeline.values(gas, {"gas_concentration": 30.0}, clocks.wall)  # 一级 waits its 1 s on-delay
    clocks.tick(400)
    clocks.wall -= HOUR  # NTP steps the wall clock back an hour
    gw.watch_clock()
    assert (gw.clock.steps, gw.clock.step_ms) == (1, -HOUR)
    assert uplink.step_ms == -HOUR  # live_since_ms moved onto the clock's new scale
    assert uplink.births[-1].clock.step_ms == -HOUR  # announced at once
    clocks.tick(600)
    gw.pipeline.values(gas, {"gas_concentration": 30.0}, clocks.wall)
    hi = [e for e in buffer.open_alarms() if e.alarm_type == "hi"]
    assert [e.ts_ms for e in hi] == [clocks.wall]  # raised 1 s after the leak, stamped as it is
    health = gw.health()
    assert (health.clock_steps, health.clock_step_ms) == (1, -HOUR)
    assert gw.counters()["clock_steps"] == 1
    assert gw.birth().clock.step_ms == -HOUR


def test_a_clock_at_1970_is_implausible_and_said_so(tmp_path: Path) -> None:
    clocks = Clocks()
    clocks.wall = 86_400_000
    gw, _, _ = make_gateway(tmp_path, clocks)
    assert not gw.health().clock_plausible
    assert gw.counters()["clock_plausible"] == 0
    assert not gw.birth().clock.plausible
