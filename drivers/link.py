"""Links to field devices: Modbus TCP, Modbus RTU on a serial port, RTU over TCP (4G DTUs).

pymodbus builds and parses the frames (MBAP or RTU with CRC); this module owns the bytes'
timing: one request in flight per link, the RTU inter-frame gap, per-request deadlines, and
turning every failure into one `DriverError`. This is the one place where pymodbus, pyserial
and OS errors are converted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.errors import BadFrame, DeviceException, DeviceTimeout, DriverError, LinkDown
from drivers.planner import ReadRequest, Value, decode_response, encode_value, write_function
from drivers.profile import PointSpec

__all__ = [
    "Link",
    "ModbusSerialLink",
    "ModbusTcpLink",
    "RtuOverTcpLink",
    "char_time",
    "poll_device",
]

_READ_PDU: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsRequest,
    2: ReadDiscreteInputsRequest,
    3: ReadHoldingRegistersRequest,
    4: ReadInputRegistersRequest,
}
_CONNECT_TIMEOUT_S = 3.0
_MAX_SILENCE_WAIT_S = 0.5


def char_time(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """Seconds one character takes on a serial line (start + data + parity + stop bits)."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return bits / baudrate


def rtu_gap(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """The RTU inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(baudrate, parity, stopbits, bytesize)


class Link:
    """One physical link (a bus or a connection) carrying one request at a time."""

    def __init__(self, framer: Literal["rtu", "socket"], gap_s: float, description: str) -> None:
        decoder = DecodePDU(is_server=False)
        self._framer: FramerBase = FramerRTU(decoder) if framer == "rtu" else FramerSocket(decoder)
        self._gap_s = gap_s
        self.description = description
        self._lock = asyncio.Lock()
        self._buf = bytearray()
        self._arrived = asyncio.Event()
        self._last_activity = 0.0
        self._tid = 0
        self._open = False
        self._dirty = False  # unread garbage may still be arriving: wait for silence first

    async def __aenter__(self) -> Self:
        with contextlib.suppress(LinkDown):
            await self._connect()  # a link that is down now is retried on the next request
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the link; the next request would open it again."""
        self._disconnect()

    @property
    def is_open(self) -> bool:
        """True while the underlying port or connection is open."""
        return self._open

    # -- transport hooks -------------------------------------------------------------------
    async def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _send(self, frame: bytes) -> None:
        raise NotImplementedError

    def _feed(self, data: bytes) -> None:
        self._buf += data
        self._last_activity = asyncio.get_running_loop().time()
        self._arrived.set()

    def _lost(self) -> None:
        self._open = False
        self._arrived.set()

    # -- requests ---------------------------------------------------------------------------
    # A per-request timeout is part of the API (each device has its own), hence ASYNC109 below.
    async def read(
        self,
        unit: int,
        request: ReadRequest,
        timeout: float,  # noqa: ASYNC109
    ) -> list[int] | list[bool]:
        """Read the registers (or bits) of `request` from device `unit`."""
        pdu = _READ_PDU[request.function](address=request.address, count=request.count)
        resp = await self._transact(unit, pdu, timeout, request.address)
        if request.table.is_bits:
            if len(resp.bits) < request.count:
                raise BadFrame(unit, request.address, request.function, "short bit response")
            return [bool(b) for b in resp.bits[: request.count]]
        if len(resp.registers) != request.count:
            raise BadFrame(
                unit,
                request.address,
                request.function,
                f"asked for {request.count} registers, got {len(resp.registers)}",
            )
        return [int(r) for r in resp.registers]

    async def write(
        self,
        unit: int,
        point: PointSpec,
        value: Value,
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        """Write `value` to a writable point of device `unit` (FC 5, 6 or 16)."""
        fc = write_function(point)
        data = encode_value(point, value)
        pdu: ModbusPDU
        if fc == 5:
            pdu = WriteSingleCoilRequest(address=point.address, bits=[bool(data[0])])
        elif fc == 6:
            pdu = WriteSingleRegisterRequest(address=point.address, registers=[int(data[0])])
        else:
            pdu = WriteMultipleRegistersRequest(
                address=point.address, registers=[int(w) for w in data]
            )
        await self._transact(unit, pdu, timeout, point.address)

    async def _transact(
        self,
        unit: int,
        pdu: ModbusPDU,
        timeout: float,  # noqa: ASYNC109
        address: int,
    ) -> ModbusPDU:
        fc = pdu.function_code
        async with self._lock:
            if not self._open:
                try:
                    await self._connect()
                except LinkDown as exc:
                    raise LinkDown(unit, address, fc, exc.detail) from None
            await self._quiet_line()
            self._tid = self._tid % 65535 + 1
            pdu.dev_id = unit
            pdu.transaction_id = self._tid
            self._buf.clear()
            self._arrived.clear()
            try:
                self._send(self._framer.buildFrame(pdu))
            except (ModbusException, ValueError) as exc:
                raise DriverError(unit, address, fc, f"cannot build request: {exc}") from None
            except OSError as exc:
                self._disconnect()
                raise LinkDown(unit, address, fc, f"{self.description}: {exc}") from None
            return await self._await_response(unit, fc, address, timeout)

    async def _await_response(
        self,
        unit: int,
        fc: int,
        address: int,
        timeout: float,  # noqa: ASYNC109
    ) -> ModbusPDU:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen_bytes = False
        while True:
            if self._buf:
                seen_bytes = True
                try:
                    used, resp = self._framer.handleFrame(bytes(self._buf), unit, self._tid)
                except ModbusException as exc:
                    self._dirty = True
                    raise BadFrame(unit, address, fc, f"undecodable answer: {exc}") from None
                del self._buf[:used]
                if resp is not None:
                    return self._check(resp, unit, fc, address)
                if used:  # pymodbus consumed bytes without a frame: CRC failure
                    self._dirty = True
                    raise BadFrame(unit, address, fc, "CRC check failed")
            if not self._open:
                raise LinkDown(unit, address, fc, f"{self.description}: connection lost")
            remaining = deadline - loop.time()
            if remaining <= 0:
                if seen_bytes:
                    self._dirty = True
                    raise BadFrame(unit, address, fc, "garbage or incomplete answer")
                raise DeviceTimeout(unit, address, fc, f"no answer within {timeout:.3f} s")
            self._arrived.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races with a reply, which hung gateway shutdown at high poll rates.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    def _check(self, resp: ModbusPDU, unit: int, fc: int, address: int) -> ModbusPDU:
        if isinstance(resp, ExceptionResponse):
            raise DeviceException(unit, address, fc, resp.exception_code)
        if resp.function_code != fc:
            self._dirty = True
            raise BadFrame(unit, address, fc, f"answer has function code {resp.function_code}")
        return resp

    async def _quiet_line(self) -> None:
        """Keep the inter-frame gap, and after a bad frame wait until the line falls silent."""
        loop = asyncio.get_running_loop()
        if self._dirty:
            stop = loop.time() + _MAX_SILENCE_WAIT_S
            gap = max(self._gap_s, 0.01)
            while loop.time() < stop:
                self._arrived.clear()
                try:
                    async with asyncio.timeout(gap):
                        await self._arrived.wait()
                except TimeoutError:
                    break
            self._dirty = False
        wait = self._last_activity + self._gap_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, link: _TcpTransportLink) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        self._link._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._lost()


class _TcpTransportLink(Link):
    def __init__(
        self, host: str, port: int, framer: Literal["rtu", "socket"], gap_s: float
    ) -> None:
        super().__init__(framer, gap_s, f"{host}:{port}")
        self.host = host
        self.port = port
        self._transport: asyncio.Transport | None = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                transport, _ = await loop.create_connection(
                    lambda: _StreamProtocol(self), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            raise LinkDown(0, None, None, f"cannot connect to {self.description}: {exc}") from None
        self._transport = transport
        self._open = True

    def _disconnect(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._open = False

    def _send(self, frame: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise OSError("connection closed")
        self._transport.write(frame)
        self._last_activity = asyncio.get_running_loop().time()

    async def _await_response(
        self,
        unit: int,
        fc: int,
        address: int,
        timeout: float,  # noqa: ASYNC109
    ) -> ModbusPDU:
        try:
            return await super()._await_response(unit, fc, address, timeout)
        except BadFrame:
            # A byte stream with garbage in it cannot be resynchronised: start a fresh one.
            self._disconnect()
            self._dirty = False
            raise


class ModbusTcpLink(_TcpTransportLink):
    """Modbus TCP (MBAP framing) to a device or gateway; several unit ids may share it."""

    def __init__(self, host: str, port: int = 502) -> None:
        super().__init__(host, port, "socket", 0.0)


class RtuOverTcpLink(_TcpTransportLink):
    """RTU frames through a transparent TCP tunnel, such as a 4G DTU in a street cabinet."""

    def __init__(self, host: str, port: int, gap_s: float = 0.0) -> None:
        super().__init__(host, port, "rtu", gap_s)


class ModbusSerialLink(Link):
    """Modbus RTU on an RS-485 serial port (any tty or pty path) shared by many unit ids."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        super().__init__("rtu", rtu_gap(baudrate, parity, stopbits, bytesize), port)
        self.port = port
        self.baudrate = baudrate
        self.char_time = char_time(baudrate, parity, stopbits, bytesize)
        self._settings: dict[str, Any] = {
            "baudrate": baudrate,
            "parity": parity,
            "stopbits": stopbits,
            "bytesize": bytesize,
        }
        self._serial: Any = None

    async def _connect(self) -> None:
        import termios

        import serial  # pyserial; imported here so TCP-only users never need a tty layer

        try:
            self._serial = serial.Serial(self.port, timeout=0, **self._settings)
        # termios.error is not an OSError: a pty refusing parity E on reopen raises it.
        except (OSError, ValueError, termios.error, serial.SerialException) as exc:
            raise LinkDown(0, None, None, f"cannot open {self.port}: {exc}") from None
        asyncio.get_running_loop().add_reader(self._serial.fileno(), self._readable)
        self._open = True

    def _readable(self) -> None:
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            self._disconnect()
            self._lost()
            return
        if data:
            self._feed(data)

    def _disconnect(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._serial.fileno())
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None
        self._open = False

    def _send(self, frame: bytes) -> None:
        if self._serial is None:
            raise OSError("port closed")
        os.write(self._serial.fileno(), frame)
        # The frame is on the wire until its last character has gone out.
        now = asyncio.get_running_loop().time()
        self._last_activity = now + len(frame) * self.char_time


async def poll_device(
    link: Link,
    unit: int,
    plan: Sequence[ReadRequest],
    timeout: float,  # noqa: ASYNC109
    retries: int = 1,
) -> dict[str, Value]:
    """Read every request of `plan` from `unit`; raises the last DriverError if any read fails.

    Timeouts, bad frames and a dropped link are retried `retries` times; a Modbus exception is
    the device's considered answer and is not retried.
    """
    values: dict[str, Value] = {}
    for request in plan:
        for attempt in range(retries + 1):
            try:
                raw = await link.read(unit, request, timeout)
                break
            except DeviceException:
                raise
            except DriverError:
                if attempt == retries:
                    raise
        values.update(decode_response(request, raw))
    return values
