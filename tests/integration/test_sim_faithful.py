"""firmware-sim as a faithful slave over real sockets and a pty, byte for byte.

Hand-built frames, so that what is tested is the slave and not our master: exception 01 for
unknown functions, 03 for quantities out of range and a write-multiple whose byte count lies,
02 past 65535 and for unmapped registers where the scenario says so, a malformed MBAP header
closing the connection, broadcast writes applied and not answered, and on RTU a silence inside
a frame ending it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
from pymodbus.framer import FramerRTU

from lifeline.drivers.errors import DeviceTimeout
from lifeline.drivers.link import ModbusSerialLink, poll_device
from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import builtin_profiles
from lifeline.firmware_sim.scenario import Scenario
from lifeline.firmware_sim.servers import PtyBus
from lifeline.firmware_sim.simulation import Simulation

pytestmark = pytest.mark.integration

SILENT = b""


def u16(*words: int) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


def scenario(kind: str, unmapped: str = "zero") -> Scenario:
    server: dict[str, Any] = {
        "name": "s",
        "kind": kind,
        "devices": [
            {"id": "sl-1", "unit": 1, "profile": "streetlight"},
            {"id": "sl-2", "unit": 2, "profile": "streetlight"},
            {"id": "gas-3", "unit": 3, "profile": "gas_detector"},
        ],
    }
    if unmapped != "zero":
        server["devices"][2]["unmapped"] = unmapped
    if kind != "tcp":
        server["baudrate"] = 19200
    return Scenario.model_validate({"seed": 1, "servers": [server]})


class Mbap:
    """A raw Modbus TCP client: one frame out, whatever comes back within a deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tid = 0

    async def ask(self, unit: int, pdu: bytes, wait: float = 0.5) -> bytes:
        self.tid += 1
        self.writer.write(u16(self.tid, 0, len(pdu) + 1) + bytes([unit]) + pdu)
        return await self.read(wait)

    async def read(self, wait: float) -> bytes:
        try:
            header = await asyncio.wait_for(self.reader.readexactly(7), wait)
        except TimeoutError:
            return SILENT
        length = int.from_bytes(header[4:6], "big")
        return await self.reader.readexactly(length - 1)


@asynccontextmanager
async def mbap_client(sim: Simulation) -> AsyncIterator[Mbap]:
    server = sim.endpoints["servers"][0]
    reader, writer = await asyncio.open_connection(server["host"], server["port"])
    try:
        yield Mbap(reader, writer)
    finally:
        writer.close()


def test_modbus_tcp_slave_refuses_what_the_standard_refuses() -> None:
    asyncio.run(_modbus_tcp_slave_refuses_what_the_standard_refuses())


async def _modbus_tcp_slave_refuses_what_the_standard_refuses() -> None:
    async with Simulation(scenario("tcp", unmapped="exception"), control_port=None) as sim:
        async with mbap_client(sim) as c:
            assert await c.ask(1, b"\x41\x00\x01") == b"\xc1\x01"  # unknown function
            assert await c.ask(1, b"\x03" + u16(1, 0)) == b"\x83\x03"  # quantity 0
            assert await c.ask(1, b"\x03" + u16(0, 126)) == b"\x83\x03"  # quantity 126
            assert await c.ask(1, b"\x03" + u16(65535, 2)) == b"\x83\x02"  # past 65535
            assert await c.ask(1, b"\x03" + u16(900, 1)) == b"\x03\x02\x00\x00"  # zeros
            assert await c.ask(3, b"\x03" + u16(5, 1)) == b"\x83\x02"  # unmapped: exception
            # write-multiple: byte count 4 for one register is refused, nothing written
            before = sim.devices["sl-1"].values()["dimming"]
            refused = await c.ask(1, b"\x10" + u16(1, 1) + b"\x04" + u16(7, 7))
            assert refused == b"\x90\x03"
            assert sim.devices["sl-1"].values()["dimming"] == before
            # broadcast: applied to every device, answered by none
            assert await c.ask(0, b"\x06" + u16(1, 35), wait=0.3) == SILENT
            assert [sim.devices[d].values()["dimming"] for d in ("sl-1", "sl-2")] == [35, 35]
        async with mbap_client(sim) as c:
            c.writer.write(u16(1, 7, 6) + b"\x01\x03" + u16(0, 1))  # protocol id 7
            closed = await asyncio.wait_for(c.reader.read(100), 2.0)
            assert closed == b"", "a malformed MBAP header closes the connection"


class PtyMaster:
    """A raw RTU master on the pty: writes bytes, collects what arrives."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    async def ask(self, unit: int, pdu: bytes, wait: float = 0.3) -> bytes:
        frame = bytes([unit]) + pdu
        return await self.send(frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big"), wait)

    async def send(self, data: bytes, wait: float) -> bytes:
        os.write(self.fd, data)
        await asyncio.sleep(wait)
        try:
            got = os.read(self.fd, 4096)
        except BlockingIOError:
            return SILENT
        assert FramerRTU.check_CRC(got[:-2], int.from_bytes(got[-2:], "big"))
        return got[1:-2]

    def close(self) -> None:
        os.close(self.fd)


def test_rtu_slave_on_a_pty_is_faithful_and_a_silence_ends_a_frame() -> None:
    asyncio.run(_rtu_slave_on_a_pty_is_faithful_and_a_silence_ends_a_frame())


async def _rtu_slave_on_a_pty_is_faithful_and_a_silence_ends_a_frame() -> None:
    async with Simulation(scenario("serial"), control_port=None) as sim:
        master = PtyMaster(sim.endpoints["servers"][0]["path"])
        try:
            assert await master.ask(1, b"\x41\x00\x01") == b"\xc1\x01"
            assert await master.ask(1, b"\x04" + u16(0, 200)) == b"\x84\x03"
            assert await master.ask(1, b"\x10" + u16(1, 2) + b"\x02" + u16(9)) == b"\x90\x03"
            assert await master.ask(0, b"\x06" + u16(1, 35)) == SILENT
            assert [sim.devices[d].values()["dimming"] for d in ("sl-1", "sl-2")] == [35, 35]
            # Half a request, a pause of many characters, the other half: two fragments,
            # neither of them a request, so no answer; the next whole request is answered.
            frame = b"\x01\x03" + u16(1, 1)
            frame += FramerRTU.compute_CRC(frame).to_bytes(2, "big")
            assert await master.send(frame[:3], 0.05) == SILENT
            assert await master.send(frame[3:], 0.2) == SILENT
            assert await master.send(frame, 0.2) == b"\x03\x02\x00\x23"
        finally:
            master.close()


def test_a_pty_bus_hears_only_a_master_at_its_line_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asyncio.run(_a_pty_bus_hears_only_a_master_at_its_line_settings(caplog))


async def _a_pty_bus_hears_only_a_master_at_its_line_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A 9600 8E1 bus answered at 19200 8N1 and at 9601 8N1: a wrong setting could be neither
    # practised nor tested. The pty shows the master's termios; Linux ptys drop PARENB, so
    # no parity and even parity look alike there and only odd parity is told apart.
    bus = {"name": "b", "kind": "serial", "baudrate": 9600, "parity": "E"}
    bus["devices"] = [{"id": "sl-1", "unit": 1, "profile": "streetlight"}]
    ident = plan_reads(builtin_profiles()["streetlight"].identification.as_points())
    scenario = Scenario.model_validate({"seed": 1, "servers": [bus]})
    async with Simulation(scenario, control_port=None) as sim:
        path = sim.endpoints["servers"][0]["path"]

        async def answers(baud: int, parity: Literal["N", "E", "O"], stopbits: int = 1) -> bool:
            link = ModbusSerialLink(path, baud, parity, stopbits)
            try:
                await poll_device(link, 1, ident, 0.3, retries=0)
            except DeviceTimeout:
                return False
            finally:
                await link.aclose()
            return True

        with caplog.at_level(logging.WARNING, "lifeline.sim"):
            assert not await answers(19200, "N")
            assert not await answers(9601, "N")
            assert not await answers(9600, "O")
            assert not await answers(9600, "E", stopbits=2)
            assert await answers(9600, "E")
        (pty_bus,) = [impl for _, impl in sim._servers if isinstance(impl, PtyBus)]
        assert pty_bus.refused_reads >= 4
    said = [r.getMessage() for r in caplog.records if r.name == "lifeline.sim"]
    assert said == [
        f"{path}: a master at {what} on a 9600 8E1 bus: not heard (noise on a real line)"
        for what in ("19200 baud", "9601 baud", "parity O", "2 stop bits")
    ]


def test_rtu_over_tcp_slave_refuses_unknown_functions_and_bad_quantities() -> None:
    asyncio.run(_rtu_over_tcp_slave_refuses_unknown_functions_and_bad_quantities())


async def _rtu_over_tcp_slave_refuses_unknown_functions_and_bad_quantities() -> None:
    async with Simulation(scenario("rtu_tcp"), control_port=None) as sim:
        server = sim.endpoints["servers"][0]
        reader, writer = await asyncio.open_connection(server["host"], server["port"])
        try:
            for pdu, expected in [
                (b"\x41\x00\x01", b"\xc1\x01"),
                (b"\x03" + u16(1, 0), b"\x83\x03"),
            ]:
                frame = b"\x01" + pdu
                writer.write(frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big"))
                got = await asyncio.wait_for(reader.readexactly(5), 2.0)
                assert got[1:3] == expected
        finally:
            writer.close()


def test_quirks_are_set_through_the_control_port_with_clear_refusals() -> None:
    asyncio.run(_quirks_through_the_control_port())


async def _quirks_through_the_control_port() -> None:
    from lifeline.firmware_sim.control import ControlError, SimControl

    async with Simulation(scenario("tcp")) as sim:
        ctl = sim.endpoints["control"]
        async with SimControl(ctl["host"], ctl["port"]) as c, mbap_client(sim) as m:
            await c.fault("sl-1", "register_limit", limit=4)
            await c.fault("sl-1", "gap_exceptions")
            assert await m.ask(1, b"\x03" + u16(0, 5)) == b"\x83\x03"
            assert await m.ask(1, b"\x03" + u16(900, 1)) == b"\x83\x02"
            await c.fault("sl-1", "register_limit", off=True)
            assert (await m.ask(1, b"\x03" + u16(0, 5)))[:2] == b"\x03\x0a"
            with pytest.raises(ControlError, match="RTU line effect"):
                await c.fault("sl-1", "echo")
            with pytest.raises(ControlError, match="register_limit takes limit"):
                await c.fault("sl-1", "register_limit", size=4)
            await c.fault("sl-1", "none")
            assert await m.ask(1, b"\x03" + u16(900, 1)) == b"\x03\x02\x00\x00"
