"""Modbus slaves for simulated devices: TCP, RTU over TCP, and an RTU bus on a pty pair.

pymodbus parses requests and builds responses; these servers own the timing (line-rate
emulation on serial) and the injected faults, which a stock server cannot produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Mapping
from dataclasses import dataclass

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsResponse,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsResponse,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from drivers.link import char_time, rtu_gap
from drivers.profile import Table
from firmware_sim.device import ModbusFault, SimDevice

__all__ = ["PtyBus", "Reply", "TcpServer", "answer", "close_connections"]

_READ_TABLE = {1: Table.COIL, 2: Table.DISCRETE_INPUT, 3: Table.HOLDING, 4: Table.INPUT}
_READ_RESPONSE: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}
_GATEWAY_TARGET_FAILED = 11


@dataclass(frozen=True)
class Reply:
    """What to send back for one request, and when."""

    frame: bytes | None  # None: stay silent
    delay_s: float = 0.0
    drop_link: bool = False


def _execute(device: SimDevice, pdu: ModbusPDU) -> ModbusPDU:
    """Run one request against a device's registers."""
    fc = pdu.function_code
    try:
        if fc in _READ_TABLE:
            data = device.read(_READ_TABLE[fc], pdu.address, pdu.count)
            if fc in (1, 2):
                return _READ_RESPONSE[fc](bits=[bool(b) for b in data])
            return _READ_RESPONSE[fc](registers=[int(w) for w in data])
        if fc == 5:
            device.write(Table.COIL, pdu.address, [bool(pdu.bits[0])])
            return WriteSingleCoilResponse(address=pdu.address, bits=[bool(pdu.bits[0])])
        if fc == 6:
            device.write(Table.HOLDING, pdu.address, [int(pdu.registers[0])])
            return WriteSingleRegisterResponse(address=pdu.address, registers=list(pdu.registers))
        if fc == 15:
            device.write(Table.COIL, pdu.address, [bool(b) for b in pdu.bits[: pdu.count]])
            return WriteMultipleCoilsResponse(address=pdu.address, count=pdu.count)
        if fc == 16:
            device.write(Table.HOLDING, pdu.address, [int(r) for r in pdu.registers])
            return WriteMultipleRegistersResponse(address=pdu.address, count=pdu.count)
    except ModbusFault as fault:
        return ExceptionResponse(fc, fault.code)
    return ExceptionResponse(fc, 1)


def answer(
    devices: Mapping[int, SimDevice],
    framer: FramerBase,
    pdu: ModbusPDU,
    request_len: int,
    char_s: float,
    answer_unknown: bool,
) -> Reply:
    """Decide the reply to one request: normal, faulty or silent, with its line-rate delay."""
    unit = pdu.dev_id
    device = devices.get(unit)
    if device is None:
        if not answer_unknown:
            return Reply(None)
        resp: ModbusPDU = ExceptionResponse(pdu.function_code, _GATEWAY_TARGET_FAILED)
        return _framed(framer, resp, pdu, request_len, char_s, 0.0)
    device.stats.requests += 1
    fault = device.draw_fault()
    if fault is None or fault.kind == "slow":
        resp = _execute(device, pdu)
        if isinstance(resp, ExceptionResponse):
            device.stats.exceptions += 1
        device.stats.answered += 1
        return _framed(framer, resp, pdu, request_len, char_s, fault.delay_s if fault else 0.0)
    device.stats.faulted += 1
    if fault.kind == "no_answer":
        return Reply(None)
    if fault.kind == "link_drop":
        return Reply(None, drop_link=True)
    if fault.kind == "exception":
        resp = ExceptionResponse(pdu.function_code, fault.code)
        return _framed(framer, resp, pdu, request_len, char_s, 0.0)
    normal = _framed(framer, _execute(device, pdu), pdu, request_len, char_s, 0.0)
    assert normal.frame is not None
    if fault.kind == "bad_crc" and isinstance(framer, FramerRTU):
        frame = normal.frame[:-1] + bytes([normal.frame[-1] ^ 0x5A])
    else:  # garbage (and "bad CRC" on MBAP, which has no CRC)
        size = device.rng.randint(6, 24)
        frame = bytes([device.rng.randrange(256) for _ in range(size)])
    return Reply(frame, (request_len + len(frame) + 3.5) * char_s)


def _framed(
    framer: FramerBase,
    resp: ModbusPDU,
    request: ModbusPDU,
    request_len: int,
    char_s: float,
    extra_s: float,
) -> Reply:
    resp.dev_id = request.dev_id
    resp.transaction_id = request.transaction_id
    frame = framer.buildFrame(resp)
    # Request and answer both cross the line, plus the 3.5-character turnaround silence.
    return Reply(frame, (request_len + len(frame) + 3.5) * char_s + extra_s)


class TcpServer:
    """Modbus TCP (MBAP) or RTU-over-TCP slave for many unit ids on one port."""

    def __init__(
        self,
        devices: Mapping[int, SimDevice],
        host: str = "127.0.0.1",
        port: int = 0,
        rtu: bool = False,
        baudrate: int | None = None,
        parity: str = "E",
        stopbits: int = 1,
    ) -> None:
        self.devices = devices
        self.host = host
        self.port = port
        self.rtu = rtu
        self.char_s = char_time(baudrate, parity, stopbits) if baudrate else 0.0
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        """Listen; `port` is the real port afterwards (when 0 was asked for)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        await close_connections(self._conns)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        framer: FramerBase = (FramerRTU if self.rtu else FramerSocket)(DecodePDU(is_server=True))
        buf = bytearray()
        try:
            while data := await reader.read(4096):
                buf += data
                while buf:
                    try:
                        used, pdu = framer.handleFrame(bytes(buf), 0, 0)
                    except ModbusException:
                        buf.clear()
                        break
                    request_len = used
                    del buf[:used]
                    if pdu is None:
                        if not used:
                            break
                        continue
                    reply = answer(
                        self.devices, framer, pdu, request_len, self.char_s, not self.rtu
                    )
                    if reply.drop_link:
                        return
                    if reply.frame is None:
                        continue
                    if reply.delay_s > 0:
                        await asyncio.sleep(reply.delay_s)
                    writer.write(reply.frame)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.transport.abort()


async def close_connections(conns: dict[asyncio.Task[None], asyncio.StreamWriter]) -> None:
    """Abort every connection and let its handler finish (cancelling a stream handler task
    makes asyncio log a spurious error in Python 3.11)."""
    for writer in list(conns.values()):
        writer.transport.abort()
    tasks = list(conns)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=2.0)
        for task in pending:
            task.cancel()


class PtyBus:
    """An RS-485 bus of RTU slaves on a pty pair; masters open `path` like a serial port.

    The line rate is emulated: each answer leaves after request + answer + turnaround would
    have taken at `baudrate`, so a 9600-baud bus is as slow as a real one.
    """

    def __init__(
        self,
        devices: Mapping[int, SimDevice],
        baudrate: int = 9600,
        parity: str = "E",
        stopbits: int = 1,
    ) -> None:
        self.devices = devices
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.char_s = char_time(baudrate, parity, stopbits)
        self._gap_s = rtu_gap(baudrate, parity, stopbits)
        self.path = ""
        self._master = self._slave = -1
        self._buf = bytearray()
        self._last_rx = 0.0
        self._frames: asyncio.Queue[tuple[float, int, ModbusPDU]] = asyncio.Queue()
        self._framer = FramerRTU(DecodePDU(is_server=True))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the pty pair and start answering."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass through untouched
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        self._task = asyncio.create_task(self._answer_loop(), name=f"pty-bus {self.path}")

    async def stop(self) -> None:
        """Stop answering and close both ends of the pty."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the master closed its side: keep the bus up for the next one
        now = asyncio.get_running_loop().time()
        if now - self._last_rx > self._gap_s:
            self._buf.clear()  # silence ends a frame: leftovers were noise
        self._last_rx = now
        self._buf += data
        while self._buf:
            try:
                used, pdu = self._framer.handleFrame(bytes(self._buf), 0, 0)
            except ModbusException:
                self._buf.clear()
                return
            del self._buf[:used]
            if pdu is not None:
                self._frames.put_nowait((now, used, pdu))
            elif not used:
                return

    async def _answer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            arrived, request_len, pdu = await self._frames.get()
            reply = answer(self.devices, self._framer, pdu, request_len, self.char_s, False)
            if reply.frame is None:
                continue
            wait = arrived + reply.delay_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            with contextlib.suppress(BlockingIOError):  # master not reading: the bytes are lost
                os.write(self._master, reply.frame)
