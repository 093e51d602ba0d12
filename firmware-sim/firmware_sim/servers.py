"""Modbus slaves for simulated devices: TCP, RTU over TCP, and an RTU bus on a pty pair.

A faithful slave, as the Modbus Application Protocol V1.1b3 and Modbus over Serial Line V1.02
describe one: exception 01 for a function it does not implement, 03 for a quantity out of range
or a byte count that does not match it, 02 for an address range past 65535 (and for unmapped
registers where the scenario says `unmapped: exception`); broadcast writes (unit 0) applied and
not answered; on RTU, a silence above 3.5 characters ends a frame and a frame with a bad CRC is
ignored; on Modbus TCP, a malformed MBAP header closes the connection.

pymodbus builds the answer PDUs and the RTU CRC; these servers parse requests from the raw PDU
(so that they can refuse what pymodbus's decoder would accept) and own the timing (line-rate
emulation on serial) and the injected faults and quirks, which a stock server cannot produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import termios
import tty
from collections.abc import Mapping
from dataclasses import dataclass

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

from lifeline.drivers.link import char_time, rtu_gap
from lifeline.drivers.profile import Table
from lifeline.firmware_sim.device import ModbusFault, SimDevice

__all__ = ["PtyBus", "Reply", "Request", "RtuRequestFramer", "TcpServer", "close_connections"]

log = logging.getLogger("lifeline.sim")

_READ_TABLE = {1: Table.COIL, 2: Table.DISCRETE_INPUT, 3: Table.HOLDING, 4: Table.INPUT}
_READ_RESPONSE: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}
_MAX_QUANTITY = {1: 2000, 2: 2000, 3: 125, 4: 125}  # per read function (MODBUS AP §6.1-6.4)
_WRITES = (5, 6, 15, 16)
_ILLEGAL_FUNCTION, _ILLEGAL_ADDRESS, _ILLEGAL_VALUE = 1, 2, 3
_GATEWAY_TARGET_FAILED = 11
_REQUESTS = DecodePDU(is_server=True)  # sizes of the RTU requests pymodbus knows


@dataclass(frozen=True)
class Request:
    """One request as received: unit id, PDU (function code + data), its size on the line."""

    unit: int
    pdu: bytes
    size: int  # bytes of the whole frame (for the line-rate delay)
    raw: bytes  # the whole frame (RTU: what an echoing adapter sends back)
    tid: int = 0  # MBAP transaction id


@dataclass(frozen=True)
class Reply:
    """What to send back for one request, and when."""

    frame: bytes | None  # None: stay silent
    delay_s: float = 0.0
    drop_link: bool = False  # close the connection
    mute_link: bool = False  # keep the connection open and never answer on it again
    late: bool = False  # send after delay_s without holding up the next request


def _u16(pdu: bytes, at: int) -> int:
    return int.from_bytes(pdu[at : at + 2], "big")


def _execute(device: SimDevice, pdu: bytes) -> ModbusPDU:
    """Run one request PDU against a device's registers, refusing what a real slave refuses."""
    fc = pdu[0]
    try:
        if fc in _READ_TABLE:
            if len(pdu) != 5:
                raise ModbusFault(_ILLEGAL_VALUE)
            address, count = _u16(pdu, 1), _u16(pdu, 3)
            if not 1 <= count <= _MAX_QUANTITY[fc]:
                raise ModbusFault(_ILLEGAL_VALUE)
            if address + count > 0x10000:
                raise ModbusFault(_ILLEGAL_ADDRESS)
            table = _READ_TABLE[fc]
            device.check_read(table, address, count)
            data = device.read(table, address, count)
            if fc in (1, 2):
                return _READ_RESPONSE[fc](bits=[bool(b) for b in data])
            return _READ_RESPONSE[fc](registers=[int(w) for w in data])
        if fc in _WRITES:
            return _write(device, pdu)
    except ModbusFault as fault:
        return ExceptionResponse(fc, fault.code)
    return ExceptionResponse(fc, _ILLEGAL_FUNCTION)


def _write(device: SimDevice, pdu: bytes) -> ModbusPDU:
    """Serve FC 5, 6, 15 or 16; ModbusFault for a malformed one."""
    fc = pdu[0]
    if len(pdu) < 5:
        raise ModbusFault(_ILLEGAL_VALUE)
    address, value = _u16(pdu, 1), _u16(pdu, 3)
    if fc == 5:
        if len(pdu) != 5 or value not in (0x0000, 0xFF00):
            raise ModbusFault(_ILLEGAL_VALUE)
        device.write(Table.COIL, address, [value == 0xFF00])
        return WriteSingleCoilResponse(address=address, bits=[value == 0xFF00])
    if fc == 6:
        if len(pdu) != 5:
            raise ModbusFault(_ILLEGAL_VALUE)
        device.write(Table.HOLDING, address, [value])
        return WriteSingleRegisterResponse(address=address, registers=[value])
    count = value
    byte_count = pdu[5] if len(pdu) > 5 else -1
    data = pdu[6:]
    if fc == 15:
        if not 1 <= count <= 1968 or byte_count != (count + 7) // 8 or len(data) != byte_count:
            raise ModbusFault(_ILLEGAL_VALUE)
        if address + count > 0x10000:
            raise ModbusFault(_ILLEGAL_ADDRESS)
        bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
        device.write(Table.COIL, address, bits)
        return WriteMultipleCoilsResponse(address=address, count=count)
    if not 1 <= count <= 123 or byte_count != 2 * count or len(data) != byte_count:
        raise ModbusFault(_ILLEGAL_VALUE)
    if address + count > 0x10000:
        raise ModbusFault(_ILLEGAL_ADDRESS)
    device.write(Table.HOLDING, address, [_u16(data, 2 * i) for i in range(count)])
    return WriteMultipleRegistersResponse(address=address, count=count)


def respond(
    devices: Mapping[int, SimDevice],
    request: Request,
    framer: FramerBase,
    char_s: float,
    since_reply_s: float,
    answer_unknown: bool,
) -> Reply:
    """Decide the reply to one request: normal, faulty or silent, with its line-rate delay.

    `since_reply_s` is the time since the link's last answer ended (for the turnaround quirk);
    `answer_unknown` makes an absent unit answer exception 11, as a Modbus TCP gateway does.
    """
    unit, pdu = request.unit, request.pdu
    if pdu[0] & 0x80:
        return Reply(None)  # an exception code is no request: ignored
    if unit == 0:  # broadcast: writes reach every device, nobody answers (Serial Line §2.2)
        if pdu[0] in _WRITES:
            for each in devices.values():
                _execute(each, pdu)
        return Reply(None)
    device = devices.get(unit)
    if device is None:
        if not answer_unknown:
            return Reply(None)
        return _framed(framer, ExceptionResponse(pdu[0], _GATEWAY_TARGET_FAILED), request, char_s)
    device.stats.requests += 1
    turnaround = device.quirks.get("turnaround")
    if turnaround is not None and since_reply_s < turnaround.delay_s:
        device.stats.dropped += 1  # the converter was not listening yet
        return Reply(None)
    fault = device.draw_fault()
    if fault is not None and fault.kind != "slow":
        return _faulty(device, fault.kind, fault.code, request, framer, char_s)
    busy = device.draw_quirk("busy")
    if busy is not None:
        device.stats.busy += 1
        resp: ModbusPDU = ExceptionResponse(pdu[0], busy.code)
    else:
        resp = _execute(device, pdu)
    if isinstance(resp, ExceptionResponse):
        device.stats.exceptions += 1
    device.stats.answered += 1
    reply = _framed(framer, resp, request, char_s, fault.delay_s if fault else 0.0)
    return _decorated(device, reply, request, char_s)


def _faulty(
    device: SimDevice, kind: str, code: int, request: Request, framer: FramerBase, char_s: float
) -> Reply:
    device.stats.faulted += 1
    if kind == "no_answer":
        return Reply(None)
    if kind == "link_drop":
        return Reply(None, drop_link=True)
    if kind == "half_open":
        device.set_fault("half_open", {"off": True})  # one connection dies; the next is served
        return Reply(None, mute_link=True)
    if kind == "exception":
        return _framed(framer, ExceptionResponse(request.pdu[0], code), request, char_s)
    normal = _framed(framer, _execute(device, request.pdu), request, char_s)
    assert normal.frame is not None
    if kind == "bad_crc" and isinstance(framer, FramerRTU):
        frame = normal.frame[:-1] + bytes([normal.frame[-1] ^ 0x5A])
    else:  # garbage (and "bad CRC" on MBAP, which has no CRC)
        size = device.rng.randint(6, 24)
        frame = bytes([device.rng.randrange(256) for _ in range(size)])
    return Reply(frame, (request.size + len(frame) + 3.5) * char_s)


def _decorated(device: SimDevice, reply: Reply, request: Request, char_s: float) -> Reply:
    """Apply the line quirks to a normal reply: echo, noise, a late answer."""
    frame = reply.frame
    assert frame is not None
    delay = reply.delay_s
    if "echo" in device.quirks:
        frame = request.raw + frame
        delay += len(request.raw) * char_s
    noise = device.draw_quirk("noise")
    if noise is not None:
        before = bytes(device.rng.randrange(256) for _ in range(noise.before))
        after = bytes(device.rng.randrange(256) for _ in range(noise.after))
        frame = before + frame + after
    late = device.draw_quirk("late")
    if late is not None:
        return Reply(frame, delay + late.delay_s, late=True)
    return Reply(frame, delay)


def _framed(
    framer: FramerBase,
    resp: ModbusPDU,
    request: Request,
    char_s: float,
    extra_s: float = 0.0,
) -> Reply:
    resp.dev_id = request.unit
    resp.transaction_id = request.tid
    frame = framer.buildFrame(resp)
    # Request and answer both cross the line, plus the 3.5-character turnaround silence.
    return Reply(frame, (request.size + len(frame) + 3.5) * char_s + extra_s)


class RtuRequestFramer:
    """Cuts RTU requests out of received bytes as a slave's receiver does.

    A silence longer than `gap_s` ends a frame: bytes left from before it are dropped (a
    request cut by a pause is not joined to what follows). A frame is sized from its function
    code by pymodbus's request table; for a function code it does not know, the bytes received
    form one frame when their CRC is right (so that it can be refused with exception 01).
    Frames with a bad CRC are ignored, as on a real line.
    """

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self._buf = bytearray()
        self._last = -1e9

    def feed(self, data: bytes, now: float) -> list[Request]:
        """The complete requests in `data` (received at `now`), with what was left before."""
        if now - self._last > self.gap_s:
            self._buf.clear()
        self._last = now
        self._buf += data
        out: list[Request] = []
        while len(self._buf) >= 4:
            size = self._size()
            if size == 0 or len(self._buf) < size:
                break
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            if FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big")):
                out.append(Request(frame[0], frame[1:-2], size, frame))
        return out

    def _size(self) -> int:
        buf = bytes(self._buf)
        pdu_class = _REQUESTS.lookupPduClass(buf)
        if pdu_class is not None and not buf[1] & 0x80:
            return int(pdu_class.calculateRtuFrameSize(buf))
        if FramerRTU.check_CRC(buf[:-2], int.from_bytes(buf[-2:], "big")):
            return len(buf)  # an unknown function: the frame is what came before the silence
        return 0


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
        # Behind a converter the serial line's gap ends a frame; without a baud rate, 5 ms.
        self._gap_s = rtu_gap(baudrate, parity, stopbits) if baudrate else 0.005
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
        loop = asyncio.get_running_loop()
        framer: FramerBase = (FramerRTU if self.rtu else FramerSocket)(DecodePDU(is_server=True))
        rtu = RtuRequestFramer(self._gap_s)
        buf = bytearray()
        muted = False
        last_reply = -1e9
        try:
            while data := await reader.read(4096):
                if muted:
                    continue  # half-open: the bytes go nowhere
                if self.rtu:
                    requests = rtu.feed(data, loop.time())
                else:
                    buf += data
                    parsed = _mbap_requests(buf)
                    if parsed is None:
                        return  # a malformed MBAP header: the stream is lost, close it
                    requests = parsed
                for request in requests:
                    reply = respond(
                        self.devices,
                        request,
                        framer,
                        self.char_s,
                        loop.time() - last_reply,
                        not self.rtu,
                    )
                    if reply.drop_link:
                        return
                    if reply.mute_link:
                        muted = True
                        break
                    if reply.frame is None:
                        continue
                    if reply.late:
                        loop.call_later(reply.delay_s, _write_if_open, writer, reply.frame)
                        continue
                    if reply.delay_s > 0:
                        await asyncio.sleep(reply.delay_s)
                    writer.write(reply.frame)
                    await writer.drain()
                    last_reply = loop.time()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.transport.abort()


def _mbap_requests(buf: bytearray) -> list[Request] | None:
    """Complete MBAP requests taken from `buf`; None when a header is malformed."""
    out: list[Request] = []
    while len(buf) >= 7:
        tid, protocol, length = struct.unpack_from(">HHH", buf)
        if protocol != 0 or not 2 <= length <= 254:
            return None
        if len(buf) < 6 + length:
            break
        frame = bytes(buf[: 6 + length])
        del buf[: 6 + length]
        out.append(Request(frame[6], frame[7:], len(frame), frame, tid))
    return out


def _write_if_open(writer: asyncio.StreamWriter, frame: bytes) -> None:
    if not writer.transport.is_closing():
        writer.write(frame)


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


_TCGETS2 = 0x802C542A  # Linux _IOR('T', 0x2A, struct termios2): the exact rate of a BOTHER line
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400,
                 460800, 921600)
    if hasattr(termios, f"B{rate}")
}  # fmt: skip


def _master_line(fd: int) -> tuple[int | None, str, int]:
    """(baud rate, parity, stop bits) a master set on the pty whose slave side is `fd`.

    A pty carries no line settings of its own, but the termios the master set through its
    tcsetattr are kept on the tty and visible from this side. The baud rate is exact (a
    non-standard one through TCGETS2; None if that is not available). Parity is "O" or "E"
    when the tty keeps PARENB, else "O" when PARODD is set, else "N?": Linux ptys clear PARENB
    (and force CS8), so no parity and even parity cannot be told apart there.
    """
    attrs = termios.tcgetattr(fd)
    cflag, speed = attrs[2], attrs[4]
    baud = _SPEEDS.get(speed)
    if baud is None and speed == getattr(termios, "BOTHER", 0o10000):
        with contextlib.suppress(OSError):
            baud = struct.unpack_from("I", fcntl.ioctl(fd, _TCGETS2, bytes(44)), 36)[0]
    if cflag & termios.PARENB:
        parity = "O" if cflag & termios.PARODD else "E"
    else:
        parity = "O" if cflag & termios.PARODD else "N?"
    return baud, parity, 2 if cflag & termios.CSTOPB else 1


class PtyBus:
    """An RS-485 bus of RTU slaves on a pty pair; masters open `path` like a serial port.

    The line rate is emulated: each answer leaves after request + answer + turnaround would
    have taken at `baudrate`, so a 9600-baud bus is as slow as a real one. A master whose line
    settings differ from the bus's (baud rate, odd parity against none or even, stop bits:
    what the pty shows, see `_master_line`) is not heard, as a real UART at another setting
    hears only noise: its bytes are dropped, counted in `refused_reads`, and each change
    between heard and not heard is one log line.
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
        self.path = ""
        self._master = self._slave = -1
        self._rtu = RtuRequestFramer(rtu_gap(baudrate, parity, stopbits))
        self._frames: asyncio.Queue[tuple[float, Request]] = asyncio.Queue()
        self._framer = FramerRTU(DecodePDU(is_server=True))
        self._task: asyncio.Task[None] | None = None
        self._last_reply = -1e9
        self.refused_reads = 0  # reads dropped: the master's line settings are not the bus's
        self._mismatch = ""  # why the master is not heard now, "" while it is

    async def start(self) -> None:
        """Create the pty pair and start answering."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass through untouched
        tty.setraw(self._master)
        # The port comes up at the bus's settings; a master that sets others is not heard.
        attrs = termios.tcgetattr(self._slave)
        speed = next((k for k, v in _SPEEDS.items() if v == self.baudrate), attrs[4])
        attrs[4] = attrs[5] = speed
        attrs[2] &= ~(termios.PARENB | termios.PARODD | termios.CSTOPB)
        attrs[2] |= (termios.PARODD if self.parity == "O" else 0) | (
            termios.CSTOPB if self.stopbits == 2 else 0
        )
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
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

    def _line_mismatch(self) -> str:
        """'' if a master at the pty's current settings would be heard, else what differs."""
        baud, parity, stopbits = _master_line(self._slave)
        wrong = []
        if baud != self.baudrate:
            wrong.append(f"{baud or 'a non-standard rate'} baud")
        if (parity == "N?" and self.parity == "O") or parity not in ("N?", self.parity):
            wrong.append("no or even parity" if parity == "N?" else f"parity {parity}")
        if stopbits != self.stopbits:
            wrong.append(f"{stopbits} stop bits")
        return ", ".join(wrong)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the master closed its side: keep the bus up for the next one
        mismatch = self._line_mismatch()
        if mismatch != self._mismatch:
            if mismatch:
                log.warning(
                    "%s: a master at %s on a %d 8%s%d bus: not heard (noise on a real line)",
                    self.path, mismatch, self.baudrate, self.parity, self.stopbits,
                )  # fmt: skip
            else:
                log.info("%s: the master's line settings match the bus again", self.path)
            self._mismatch = mismatch
        if mismatch:
            self.refused_reads += 1
            return
        now = asyncio.get_running_loop().time()
        for request in self._rtu.feed(data, now):
            self._frames.put_nowait((now, request))

    async def _answer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            arrived, request = await self._frames.get()
            reply = respond(
                self.devices,
                request,
                self._framer,
                self.char_s,
                arrived - self._last_reply,
                False,
            )
            if reply.frame is None:
                continue
            if reply.late:
                loop.call_later(reply.delay_s, self._send, reply.frame)
                continue
            wait = arrived + reply.delay_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._send(reply.frame)

    def _send(self, frame: bytes) -> None:
        if self._master < 0:
            return
        with contextlib.suppress(BlockingIOError):  # master not reading: the bytes are lost
            os.write(self._master, frame)
        self._last_reply = asyncio.get_running_loop().time()
