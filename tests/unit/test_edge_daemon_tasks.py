"""The gateway's tasks under one TaskGroup (issue 13 item 7): a part that dies takes the gateway
down (never a zombie), a clean stop stays clean even on a full disk.

The pollers here are hand-written fakes that feed the real poll sink; outbox, rules and uplink
are the real ones (the uplink points at a closed port: the broker is simply down).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from drivers.link import LinkStats
from edge.buffer import BufferFull
from edge.clock import wall_ms
from edge.config import parse_config, resolve_profiles
from edge.daemon import Gateway, GatewayFailed
from tests.services import free_port
from wire import AlarmEvent, AlarmState, Severity

pytestmark = pytest.mark.unit


def make_gateway(tmp_path: Path) -> Gateway:
    cfg = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "reconnect_max_s": 1.0},
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
    return Gateway(cfg, resolve_profiles(cfg, tmp_path), tmp_path / "gw.yaml")


class FakePoller:
    """Feeds one gas reading to the gateway, then either fails or waits to be cancelled."""

    name = "fake"
    link = None
    link_stats = LinkStats()  # what a real bus poller counts about its link

    def __init__(self, gw: Gateway, gas: float, fail: bool) -> None:
        self.gw, self.gas, self.fail = gw, gas, fail
        self.devices = [gw.devices["gas-1"]]

    async def run(self) -> None:
        # Half a second in: a 1 s on-delay then expires between two housekeeping ticks (1 s
        # apart), so its own timer raises the alarm, not housekeeping.
        await asyncio.sleep(0.5)
        self.gw.values(self.gw.devices["gas-1"], {"gas_concentration": self.gas}, wall_ms())
        if self.fail:
            raise RuntimeError("the serial adapter was unplugged")
        await asyncio.Event().wait()


def fill_disk(gw: Gateway) -> None:
    """Leave no room for another alarm: the file may not grow, its pages are full of events."""
    box = gw.outbox
    box.full_wait_s = 0.2
    pages = box.db.execute("PRAGMA page_count").fetchone()[0]
    box.db.execute(f"PRAGMA max_page_count = {pages}")
    event = AlarmEvent("x", "gas-1", "p", "hi", Severity.LOW, AlarmState.ACTIVE_UNACKED, 0)
    with contextlib.suppress(BufferFull):
        for _ in range(100_000):
            box.add_alarm_events([event])


def run_until_stopped(gw: Gateway, stop_after_s: float | None) -> float:
    """Run the gateway (stopped after `stop_after_s`, if given); return how long it ran."""

    async def main() -> None:
        stop = asyncio.Event()
        if stop_after_s is not None:
            asyncio.get_running_loop().call_later(stop_after_s, stop.set)
        await asyncio.wait_for(gw.run(stop), 10)

    started = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        gw.close()
    return time.monotonic() - started


def test_a_poller_that_dies_stops_the_gateway(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    gw.pollers = [FakePoller(gw, 0.0, fail=True)]  # type: ignore[list-item]
    with pytest.raises(GatewayFailed, match="bus fake failed: RuntimeError: the serial adapter"):
        run_until_stopped(gw, None)


def test_an_alarm_the_full_disk_cannot_take_stops_the_gateway(tmp_path: Path) -> None:
    """The 1 s on-delay expires in a loop timer callback, whose failure used to vanish."""
    gw = make_gateway(tmp_path)
    fill_disk(gw)  # and no telemetry to evict
    gw.pollers = [FakePoller(gw, 30.0, fail=False)]  # type: ignore[list-item]
    with pytest.raises(GatewayFailed, match="alarm delay timer failed: BufferFull"):
        run_until_stopped(gw, None)


def test_a_clean_stop_on_a_full_disk_is_clean(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    fill_disk(gw)
    gw.pollers = [FakePoller(gw, 0.0, fail=False)]  # type: ignore[list-item]
    assert run_until_stopped(gw, 1.5) < 5  # returned, no exception
