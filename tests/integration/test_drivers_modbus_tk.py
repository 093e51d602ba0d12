"""The field's kinds against a slave that is not ours: modbus_tk's TCP and RTU servers.

modbus_tk serves the field's meter (registers 11174, 11176, 11177, nothing at 11175) as its
own server does, and answers busy or refuses long reads through its request hook. The line
quirks (echo, noise, turnaround, a silent connection) come from `tests.fieldbus.Line`, the
converter or adapter between the gateway and the slave, which is where they live in the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest

from lifeline.drivers.reader import describe_plan
from lifeline.edge.config import Bus
from lifeline.edge.scheduler import BusPoller, Health
from tests.fieldbus import (
    METER,
    METER_VALUES,
    TRANSPORTS,
    Line,
    TkSlave,
    Transport,
    bus_config,
    run_poller,
)

pytestmark = pytest.mark.integration

PROFILES = {"gap_meter": METER}


def meter(**extra: Any) -> list[dict[str, Any]]:
    return [{"id": "meter", "unit": 1, "profile": "gap_meter", "interval_s": 0.1,
             "timeout_s": 0.25, "retries": 1, **extra}]  # fmt: skip


@asynccontextmanager
async def tk_bus(
    transport: Transport, slave: TkSlave, line: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[Line | None, Bus]]:
    """A gateway bus to `slave` over `transport`, through a Line when `line` is given."""
    devices = settings.pop("devices", meter())
    with slave:
        if transport == "tcp" and line is None:
            yield None, bus_config("tcp", {"host": "127.0.0.1", "port": slave.port},
                                   devices, **settings)  # fmt: skip
            return
        front: Literal["pty", "tcp"] = "pty" if transport == "serial" else "tcp"
        fd, port = (slave.line_fd, 0) if slave.rtu else (-1, slave.port)
        async with Line(front, fd, port, **(line or {})) as wire:
            where = {"path": wire.path, "host": "127.0.0.1", "port": wire.port}
            yield wire, bus_config(transport, where, devices, **settings)


def rtu(transport: Transport) -> bool:
    return transport != "tcp"


@pytest.mark.parametrize("limit", [125, 1])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_fields_meter_is_read_by_splitting_at_its_gap(transport: Transport, limit: int) -> None:
    async def go() -> tuple[BusPoller, Any]:
        async with tk_bus(transport, TkSlave(rtu(transport), limit=limit)) as (_, bus):
            return await run_poller(bus, 1.5, PROFILES)

    poller, sink = asyncio.run(go())
    expected = "fc3 11174+1, fc3 11176+2" if limit > 1 else "fc3 11174+1, fc3 11176+1, fc3 11177+1"
    assert describe_plan(poller.devices[0].reader.plan) == expected
    assert len(sink.polls["meter"]) >= 6
    assert all(p == METER_VALUES for p in sink.polls["meter"])
    assert Health.OFFLINE not in sink.states("meter")
    assert not sink.failures


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_busy_answers_of_modbus_tk_are_waited_out(transport: Transport) -> None:
    slave = TkSlave(rtu(transport), busy=0.4)

    async def go() -> tuple[BusPoller, Any]:
        async with tk_bus(transport, slave, devices=meter(max_gap=0, busy_backoff_s=0.02)) as (
            _,
            bus,
        ):
            return await run_poller(bus, 2.0, PROFILES)

    poller, sink = asyncio.run(go())
    dev = poller.devices[0]
    assert slave.busy_answers >= 5
    # a poll cut short when the test stops has not counted its busy answers yet
    assert slave.busy_answers - 4 <= dev.busy <= slave.busy_answers
    # Every poll gave values (the last one may be cut short by the end of the test); a read
    # still busy after its retries (0.4^4 of them) leaves out only its own points.
    polls = sink.polls["meter"]
    assert len(polls) >= dev.polls - 1
    assert sum(len(p) for p in polls) >= 0.85 * len(METER_VALUES) * len(polls)
    assert Health.OFFLINE not in sink.states("meter")
    assert dev.health.state is Health.DEGRADED or sink.states("meter")[0] is Health.DEGRADED


@pytest.mark.parametrize("transport", ["serial", "rtu_tcp"])
def test_a_converters_turnaround_in_front_of_modbus_tk(transport: Transport) -> None:
    async def go(**settings: Any) -> tuple[BusPoller, Any, int]:
        line = {"turnaround_s": 0.05}
        devices = meter(max_gap=0)  # three reads a poll, each right after the last answer
        async with tk_bus(transport, TkSlave(True), line, devices=devices, **settings) as (
            wire,
            bus,
        ):
            poller, sink = await run_poller(bus, 1.5, PROFILES)
            assert wire is not None
            return poller, sink, wire.dropped

    hidden, _, dropped = asyncio.run(go())
    assert dropped > 3
    assert hidden.devices[0].health.timeouts > 0
    paced, sink, dropped_paced = asyncio.run(go(request_delay_s=0.06))
    assert dropped_paced == 0
    assert (paced.devices[0].health.timeouts, paced.devices[0].health.state) == (0, Health.ONLINE)
    assert all(p == METER_VALUES for p in sink.polls["meter"])


@pytest.mark.parametrize("transport", ["serial", "rtu_tcp"])
def test_an_echoing_noisy_line_in_front_of_modbus_tk(transport: Transport) -> None:
    async def go() -> tuple[BusPoller, Any]:
        line = {"echo": True, "noise": 3}
        async with tk_bus(transport, TkSlave(True), line) as (_, bus):
            return await run_poller(bus, 1.5, PROFILES)

    poller, sink = asyncio.run(go())
    assert poller.link_stats.echoes >= 5
    assert poller.link_stats.noise_bytes >= 15
    assert len(sink.polls["meter"]) >= 6
    assert all(p == METER_VALUES for p in sink.polls["meter"])
    assert not sink.failures


def test_late_modbus_tk_answers_are_skipped_by_transaction_id() -> None:
    async def go() -> tuple[BusPoller, Any]:
        slave = TkSlave(False, late_s=0.3)
        async with tk_bus("tcp", slave, devices=meter(max_gap=0, retries=2)) as (_, bus):
            return await run_poller(bus, 2.5, PROFILES)

    poller, sink = asyncio.run(go())
    assert poller.link_stats.stale_answers >= 1
    assert poller.link_stats.reconnects == 0
    assert len(sink.polls["meter"]) >= 3
    assert all(p == METER_VALUES for p in sink.polls["meter"])


@pytest.mark.parametrize("transport", ["tcp", "rtu_tcp"])
def test_a_silent_connection_to_modbus_tk_is_reopened(transport: Transport) -> None:
    before: list[int] = []

    async def go() -> tuple[BusPoller, Any]:
        async with tk_bus(transport, TkSlave(rtu(transport)), {}, reconnect_after=2) as (
            wire,
            bus,
        ):
            assert wire is not None

            def go_silent(poller: BusPoller) -> None:
                before.append(len(poller.sink.polls["meter"]))  # type: ignore[attr-defined]
                wire.mute()

            return await run_poller(bus, 3.0, PROFILES, during=go_silent)

    poller, sink = asyncio.run(go())
    assert poller.link_stats.reconnects >= 1
    assert len(sink.polls["meter"]) >= before[0] + 5
    assert Health.OFFLINE not in sink.states("meter")
