"""Links to field devices: Modbus TCP, Modbus RTU on a serial port, RTU over TCP (4G DTUs).

pymodbus builds the request frames and decodes answer PDUs; `drivers.frames` finds the answer
among the bytes received (an echo, noise, stale answers); this module owns the bytes' timing:
one request in flight per link, the RTU inter-frame gap, the pacing a bus needs (a delay
between an answer and the next request, a delay after connecting), per-request deadlines,
reconnecting a connection that went silent, backoff while an endpoint is down, and turning
every failure into one `DriverError`. This is the one place where pymodbus, pyserial and OS
errors are converted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
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

from lifeline.drivers.errors import BadFrame, DeviceException, DeviceTimeout, DriverError, LinkDown
from lifeline.drivers.frames import find_mbap_answer, find_rtu_answer
from lifeline.drivers.planner import ReadRequest
from lifeline.drivers.profile import PointSpec
from lifeline.drivers.values import Value, decode_response, encode_value, write_function

__all__ = [
    "Link",
    "LinkSettings",
    "LinkStats",
    "ModbusSerialLink",
    "ModbusTcpLink",
    "RtuOverTcpLink",
    "char_time",
    "poll_device",
]

log = logging.getLogger("lifeline.drivers")

_READ_PDU: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsRequest,
    2: ReadDiscreteInputsRequest,
    3: ReadHoldingRegistersRequest,
    4: ReadInputRegistersRequest,
}
_CONNECT_TIMEOUT_S = 3.0
_MAX_SILENCE_WAIT_S = 0.5
_DOWN_BACKOFF_MIN_S = 0.5  # after a failed connect or open, no new attempt before this ...
_DOWN_BACKOFF_MAX_S = 30.0  # ... doubling up to this, with jitter
# TCP keepalive: a converter that vanished (power, 4G cell change) is noticed within about
# idle + count x interval seconds even when no request is outstanding.
_KEEPALIVE_IDLE_S = 10
_KEEPALIVE_INTERVAL_S = 5
_KEEPALIVE_COUNT = 3


def char_time(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """Seconds one character takes on a serial line (start + data + parity + stop bits)."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return bits / baudrate


def rtu_gap(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """The RTU inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(baudrate, parity, stopbits, bytesize)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What one physical link needs beyond the standard (from the bus's gateway config).

    `request_delay_s`: silence kept after the last byte received before the next request
    (a converter that drops requests arriving too soon after its last reply); `connect_delay_s`:
    wait after opening the link before the first request; `echo`: the RS-485 adapter repeats
    each request before the answer (RTU only); `reconnect_after`: consecutive timeouts with no
    byte from anyone after which a TCP connection is reopened (0 = never).
    """

    request_delay_s: float = 0.0
    connect_delay_s: float = 0.0
    echo: bool = False
    reconnect_after: int = 3


@dataclass(slots=True)
class LinkStats:
    """What the link had to put up with since it was made (counters only grow)."""

    requests: int = 0
    timeouts: int = 0
    echoes: int = 0  # the request's own bytes received before the answer, and skipped
    noise_bytes: int = 0  # bytes before or after an answer that were part of no answer
    stale_answers: int = 0  # Modbus TCP answers to earlier requests, skipped
    reconnects: int = 0  # connections reopened after `reconnect_after` silent timeouts
    connect_failures: int = 0


class Link:
    """One physical link (a bus or a connection) carrying one request at a time."""

    def __init__(
        self,
        framer: Literal["rtu", "socket"],
        gap_s: float,
        description: str,
        settings: LinkSettings | None = None,
    ) -> None:
        decoder = DecodePDU(is_server=False)
        self._framer: FramerBase = FramerRTU(decoder) if framer == "rtu" else FramerSocket(decoder)
        self._decoder = decoder
        self._rtu = framer == "rtu"
        self._gap_s = gap_s
        self.description = description
        self.settings = settings or LinkSettings()
        self.stats = LinkStats()
        self._lock = asyncio.Lock()
        self._buf = bytearray()
        self._arrived = asyncio.Event()
        self._last_activity = 0.0
        self._ready_at = 0.0  # no request before this (delay after connect)
        self._tid = 0
        self._open = False
        self._dirty = False  # unread garbage may still be arriving: wait for silence first
        self._silent_timeouts = 0  # consecutive timeouts with no byte received
        self._down_backoff_s = 0.0
        self._retry_at = 0.0  # while the endpoint is down: no attempt before this
        self._down_reason = ""
        self._noticed: set[str] = set()

    async def __aenter__(self) -> Self:
        with contextlib.suppress(LinkDown):
            await self._open_link()  # a link that is down now is retried on the next request
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

    def _notice(self, kind: str, text: str) -> None:
        """Log a quirk of this link once (its counter in `stats` keeps counting)."""
        if kind not in self._noticed:
            self._noticed.add(kind)
            log.warning("%s: %s", self.description, text)

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

    def _after_timeout(self) -> None:
        """Called after each timeout with no byte received (TCP links reconnect here)."""

    async def _open_link(self) -> None:
        """Open the port or connection, unless it failed recently (then LinkDown at once)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._retry_at:
            raise LinkDown(
                0,
                None,
                None,
                f"{self._down_reason}; next attempt in {self._retry_at - now:.1f} s",
            )
        try:
            await self._connect()
        except LinkDown as exc:
            self.stats.connect_failures += 1
            self._down_backoff_s = min(
                _DOWN_BACKOFF_MAX_S, max(_DOWN_BACKOFF_MIN_S, 2 * self._down_backoff_s)
            )
            self._retry_at = loop.time() + self._down_backoff_s * random.uniform(0.8, 1.2)
            self._down_reason = exc.detail
            raise
        self._down_backoff_s = 0.0
        self._retry_at = 0.0
        self._silent_timeouts = 0
        self._ready_at = loop.time() + self.settings.connect_delay_s

    # -- requests ---------------------------------------------------------------------------
    # A per-request timeout is part of the API (each device has its own), hence ASYNC109 below.
    async def read(
        self,
        unit: int,
        request: ReadRequest,
        timeout: float,  # noqa: ASYNC109
    ) -> list[int] | list[bool]:
        """Read the registers (or bits) of `request` from device `unit`.

        Raises DeviceTimeout (no answer), DeviceException (a Modbus exception response),
        BadFrame (an answer of the wrong size or shape) or LinkDown (the link is not usable).
        """
        pdu = _READ_PDU[request.function](address=request.address, count=request.count)
        resp = await self._transact(unit, pdu, timeout, request.address, request.rtu_bytes[1] - 5)
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
        """Write `value` to a writable point of device `unit` (FC 5, 6 or 16).

        Raises ValueError when the point is not writable or `value` does not fit it, and the
        DriverError family as `read` does.
        """
        fc = write_function(point)
        data = encode_value(point, value, exact=True)
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
        data_bytes: int | None = None,
    ) -> ModbusPDU:
        """Send `pdu` to `unit` and return its answer; `data_bytes`: a read answer's size."""
        fc = pdu.function_code
        async with self._lock:
            if not self._open:
                try:
                    await self._open_link()
                except LinkDown as exc:
                    raise LinkDown(unit, address, fc, exc.detail) from None
            await self._quiet_line()
            self._tid = self._tid % 65535 + 1
            pdu.dev_id = unit
            pdu.transaction_id = self._tid
            self._discard_leftovers()
            self._arrived.clear()
            try:
                frame = self._framer.buildFrame(pdu)
                self._send(frame)
            except (ModbusException, ValueError) as exc:
                raise DriverError(unit, address, fc, f"cannot build request: {exc}") from None
            except OSError as exc:
                self._disconnect()
                raise LinkDown(unit, address, fc, f"{self.description}: {exc}") from None
            self.stats.requests += 1
            try:
                return await self._await_response(unit, fc, address, timeout, frame, data_bytes)
            except DeviceTimeout:
                self.stats.timeouts += 1
                if not self._buf:
                    self._silent_timeouts += 1
                    self._after_timeout()
                raise

    async def _await_response(
        self,
        unit: int,
        fc: int,
        address: int,
        timeout: float,  # noqa: ASYNC109
        request: bytes,
        data_bytes: int | None,
    ) -> ModbusPDU:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._buf:
                self._silent_timeouts = 0
                pdu = self._take_answer(unit, fc, address, request, data_bytes)
                if pdu is not None:
                    return self._check(pdu, unit, fc, address)
            if not self._open:
                raise LinkDown(unit, address, fc, f"{self.description}: connection lost")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._no_answer(unit, fc, address, timeout, request, data_bytes)
            self._arrived.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races with a reply, which hung gateway shutdown at high poll rates.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    def _discard_leftovers(self) -> None:
        """Drop what arrived between transactions (late answers, noise), counted."""
        if not self._buf:
            return
        if self._rtu:
            self.stats.noise_bytes += len(self._buf)
        else:
            self._count_stale(find_mbap_answer(bytes(self._buf), -1).stale)
        self._buf.clear()

    def _count_stale(self, tids: tuple[int, ...]) -> None:
        if tids:
            self.stats.stale_answers += len(tids)
            self._notice(
                "stale",
                "answers to earlier requests arrived late (transaction ids "
                f"{', '.join(map(str, tids))}) and were skipped: the device answers after "
                "the timeout; raise timeout_s",
            )

    def _take_answer(
        self, unit: int, fc: int, address: int, request: bytes, data_bytes: int | None
    ) -> ModbusPDU | None:
        """The answer's PDU once it is complete in the buffer (consumed with what came first)."""
        if self._rtu:
            scan = find_rtu_answer(
                bytes(self._buf), unit, fc, request, self.settings.echo, data_bytes
            )
            if scan.pdu is None:
                return None
            if scan.echo:
                self.stats.echoes += 1
                if not self.settings.echo:
                    self._notice(
                        "echo",
                        "the adapter echoes every request before the answer (skipped; set "
                        "`echo: true` on this bus so that writes are confirmed by the device)",
                    )
            trailing = len(self._buf) - scan.end
            if scan.noise or trailing:
                self.stats.noise_bytes += scan.noise + trailing
                self._notice(
                    "noise",
                    f"{scan.noise + trailing} byte(s) of line noise around an answer of unit "
                    f"{unit} skipped (the answer was found by its CRC)",
                )
            self._dirty = trailing > 0
            self._buf.clear()
            payload = scan.pdu
        else:
            mbap = find_mbap_answer(bytes(self._buf), self._tid)
            self._count_stale(mbap.stale)
            if mbap.malformed:
                self._disconnect()  # nothing after a bad header can be framed: a fresh stream
                raise BadFrame(unit, address, fc, f"{mbap.malformed}; reconnecting")
            del self._buf[: mbap.end]
            if mbap.pdu is None:
                return None
            payload = mbap.pdu
        resp = self._decoder.decode(payload)
        if resp is None:
            self._dirty = True
            raise BadFrame(unit, address, fc, f"undecodable answer {payload.hex(' ')}")
        resp.dev_id = unit
        return resp

    def _no_answer(
        self,
        unit: int,
        fc: int,
        address: int,
        timeout: float,
        request: bytes,
        data_bytes: int | None,
    ) -> DriverError:
        """The error that names why nothing usable arrived before the deadline."""
        waited = f"no answer within {timeout:.3f} s"
        if not self._buf:
            return DeviceTimeout(unit, address, fc, waited)
        self._dirty = True
        if not self._rtu:
            return BadFrame(unit, address, fc, f"incomplete answer ({len(self._buf)} bytes)")
        scan = find_rtu_answer(bytes(self._buf), unit, fc, request, self.settings.echo, data_bytes)
        if scan.echo and not scan.noise and not scan.expected:
            return DeviceTimeout(
                unit, address, fc, f"{waited} (only the adapter's echo of the request came back)"
            )
        if scan.bad_crc:
            return BadFrame(unit, address, fc, f"CRC check failed ({len(self._buf)} bytes)")
        if scan.expected:
            got = len(self._buf) - (len(request) if scan.echo else 0)
            return BadFrame(
                unit, address, fc, f"incomplete answer: {got} bytes, expected {scan.expected}"
            )
        return BadFrame(
            unit, address, fc, f"{scan.noise} bytes received, none of them an answer of unit {unit}"
        )

    def _check(self, resp: ModbusPDU, unit: int, fc: int, address: int) -> ModbusPDU:
        if isinstance(resp, ExceptionResponse):
            raise DeviceException(unit, address, fc, resp.exception_code)
        if resp.function_code != fc:
            self._dirty = True
            raise BadFrame(unit, address, fc, f"answer has function code {resp.function_code}")
        return resp

    async def _quiet_line(self) -> None:
        """Keep the inter-frame gap and the bus's pacing; after noise, wait for silence."""
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
        pause = max(self._gap_s, self.settings.request_delay_s)
        wait = max(self._last_activity + pause, self._ready_at) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, link: _TcpTransportLink) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        if self._link._protocol is self:  # bytes of a connection already given up are dropped
            self._link._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._link._protocol is self:
            self._link._lost()


def _keepalive(sock: socket.socket) -> None:
    """Turn TCP keepalive on, with short probes where the OS lets us choose them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", _KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", _KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", _KEEPALIVE_COUNT),
    ):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _TcpTransportLink(Link):
    def __init__(
        self,
        host: str,
        port: int,
        framer: Literal["rtu", "socket"],
        gap_s: float,
        settings: LinkSettings | None,
    ) -> None:
        super().__init__(framer, gap_s, f"{host}:{port}", settings)
        self.host = host
        self.port = port
        self._transport: asyncio.Transport | None = None
        self._protocol: _StreamProtocol | None = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                transport, protocol = await loop.create_connection(
                    lambda: _StreamProtocol(self), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or "no answer to the connection request"
            raise LinkDown(
                0, None, None, f"cannot connect to {self.description}: {reason}"
            ) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                _keepalive(sock)
        self._transport = transport
        self._protocol = protocol
        self._open = True

    def _disconnect(self) -> None:
        self._protocol = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._open = False

    def _send(self, frame: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise OSError("connection closed")
        self._transport.write(frame)
        self._last_activity = asyncio.get_running_loop().time()

    def _after_timeout(self) -> None:
        after = self.settings.reconnect_after
        if after and self._silent_timeouts >= after:
            # A converter or 4G DTU can keep a connection open that no longer carries
            # anything (half-open): a fresh connection is served again.
            self._disconnect()
            self._silent_timeouts = 0
            self.stats.reconnects += 1
            self._notice(
                "half-open",
                f"{after} timeouts in a row with nothing received: the connection is "
                "reopened (and again whenever that happens; see the reconnects counter)",
            )


class ModbusTcpLink(_TcpTransportLink):
    """Modbus TCP (MBAP framing) to a device or gateway; several unit ids may share it."""

    def __init__(self, host: str, port: int = 502, settings: LinkSettings | None = None) -> None:
        super().__init__(host, port, "socket", 0.0, settings)


class RtuOverTcpLink(_TcpTransportLink):
    """RTU frames through a transparent TCP tunnel, such as a 4G DTU in a street cabinet."""

    def __init__(
        self, host: str, port: int, gap_s: float = 0.0, settings: LinkSettings | None = None
    ) -> None:
        super().__init__(host, port, "rtu", gap_s, settings)


class ModbusSerialLink(Link):
    """Modbus RTU on an RS-485 serial port (any tty or pty path) shared by many unit ids."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        settings: LinkSettings | None = None,
    ) -> None:
        super().__init__("rtu", rtu_gap(baudrate, parity, stopbits, bytesize), port, settings)
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
