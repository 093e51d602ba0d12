"""The gateway's tasks under one TaskGroup (issue 13 item 7): a part that dies takes the gateway
down (never a zombie), a clean stop stays clean even on a full disk.

The gateway is built over in-memory fakes of its ports (tests/fakes.py): a poller that feeds
the real pipeline, a buffer that can be full, an uplink that is always connected.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline.drivers.link import Link, LinkStats
from lifeline.edge.clock import wall_ms
from lifeline.edge.config import Bus, load_config, parse_config, resolve_profiles
from lifeline.edge.daemon import Gateway, GatewayFailed
from lifeline.edge.scheduler import Device, PollSink
from lifeline.wire import Command, CommandReply
from tests.fakes import FakeBuffer, FakeUplink, fake_gateway

pytestmark = pytest.mark.unit


def make_gateway(
    tmp_path: Path, gas: float, fail: bool, full: bool = False
) -> tuple[Gateway, FakeUplink]:
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
    buffer.full = full

    def poller(bus: Bus, devices: list[Device], sink: PollSink) -> FakePoller:
        return FakePoller(devices, sink, gas, fail)

    return fake_gateway(cfg, tmp_path, buffer, poller)


class FakePoller:
    """Feeds one gas reading to the sink, then either fails or waits to be cancelled."""

    name = "fake"
    link: Link | None = None
    link_stats = LinkStats()  # what a real bus poller counts about its link

    def __init__(self, devices: list[Device], sink: PollSink, gas: float, fail: bool) -> None:
        self.devices, self.sink, self.gas, self.fail = devices, sink, gas, fail

    async def run(self) -> None:
        # Half a second in: a 1 s on-delay then expires between two housekeeping ticks (1 s
        # apart), so its own timer raises the alarm, not housekeeping.
        await asyncio.sleep(0.5)
        self.sink.values(self.devices[0], {"gas_concentration": self.gas}, wall_ms())
        if self.fail:
            raise RuntimeError("the serial adapter was unplugged")
        await asyncio.Event().wait()


def run_until_stopped(gw: Gateway, stop_after_s: float | None) -> float:
    """Run the gateway (stopped after `stop_after_s`, if given); return how long it ran."""

    async def main() -> None:
        stop = asyncio.Event()
        if stop_after_s is not None:
            asyncio.get_running_loop().call_later(stop_after_s, stop.set)
        await asyncio.wait_for(gw.run(stop), 10)

    started = time.monotonic()
    with gw:
        asyncio.run(main())
    return time.monotonic() - started


def test_a_poller_that_dies_stops_the_gateway(tmp_path: Path) -> None:
    gw, _ = make_gateway(tmp_path, 0.0, fail=True)
    with pytest.raises(GatewayFailed, match="bus fake failed: RuntimeError: the serial adapter"):
        run_until_stopped(gw, None)


def test_an_alarm_the_full_disk_cannot_take_stops_the_gateway(tmp_path: Path) -> None:
    """The 1 s on-delay expires in a loop timer callback, whose failure used to vanish."""
    gw, _ = make_gateway(tmp_path, 30.0, fail=False, full=True)
    with pytest.raises(GatewayFailed, match="alarm delay timer failed: BufferFull"):
        run_until_stopped(gw, None)


def test_a_clean_stop_on_a_full_disk_is_clean(tmp_path: Path) -> None:
    gw, uplink = make_gateway(tmp_path, 0.0, fail=False, full=True)
    assert run_until_stopped(gw, 1.5) < 5  # returned, no exception
    assert uplink.closed == "shutdown"  # death published, then DISCONNECT
    assert isinstance(gw.buffer, FakeBuffer)
    assert gw.buffer.closed


class IdlePoller:
    """A bus poller that polls nothing and waits to be cancelled; counts its runs."""

    name = "idle"
    link: Link | None = None
    link_stats = LinkStats()
    runs = 0

    def __init__(self, bus: Bus, devices: list[Device], sink: PollSink) -> None:
        self.devices = devices

    async def run(self) -> None:
        IdlePoller.runs += 1
        await asyncio.Event().wait()


def test_reload_rebuilds_the_pollers_and_keeps_what_it_should(tmp_path: Path) -> None:
    """A reload swaps devices and rules in place: an unchanged rule keeps its open alarm, a
    kept device keeps what `status` shows, a removed device takes its rules along."""

    def device(dev_id: str, unit: int) -> dict[str, Any]:
        return {"id": dev_id, "unit": unit, "profile": "gas_detector"}

    def write(*devices: dict[str, Any]) -> None:
        data = {
            "gateway": "gw",
            "site": "s",
            "mqtt": {"allow_anonymous_commands": True},
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [{"type": "tcp", "host": "127.0.0.1", "devices": list(devices)}],
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")

    path = tmp_path / "gw.yaml"
    write(device("gas-1", 1), device("gas-2", 2))
    cfg = load_config(path)
    buffer = FakeBuffer()
    gw = Gateway(
        cfg,
        resolve_profiles(cfg, tmp_path),
        path,
        session="s1",
        buffer=buffer,
        uplink=FakeUplink,
        poller=IdlePoller,
    )
    uplink = gw.uplink
    assert isinstance(uplink, FakeUplink)
    gw.pipeline.values(gw.devices["gas-1"], {"gas_concentration": 55.0}, wall_ms())
    gw.devices["gas-1"].last_ok_ms = 1234
    (alarm,) = {e.alarm_id for e in buffer.open_alarms() if e.alarm_type == "hihi"}
    write(device("gas-1", 1))
    IdlePoller.runs = 0

    async def main() -> CommandReply:
        stop = asyncio.Event()
        running = asyncio.create_task(gw.run(stop))
        await asyncio.sleep(0.1)
        reply = await gw.commands.handle(Command("gw", "ops", 0, 0, "r", "reload"))
        await asyncio.sleep(0.1)
        stop.set()
        await running
        return reply

    with gw:
        reply = asyncio.run(main())
    assert (reply.ok, reply.result) == (True, {"config_hash": gw.cfg.hash(), "devices": 1})
    assert gw.cfg.hash() != cfg.hash()
    assert IdlePoller.runs == 2  # the bus's poller before the reload, its new one after
    assert list(gw.devices) == ["gas-1"]
    assert gw.devices["gas-1"].last_ok_ms == 1234
    assert not gw.engine.has_rules("gas-2", "gas_concentration")
    assert [e.alarm_id for e in buffer.alarm_events].count(alarm) == 1  # not raised again
    assert alarm in {alarm_id for alarm_id, *_ in gw.engine.active()}  # and still active
    assert [d.device for d in uplink.births[-1].devices] == ["gas-1"]
