"""Finding the answer to a request in the bytes a link received: RTU resynchronisation, MBAP.

pymodbus builds and sizes frames (`FramerRTU`, the PDU classes' RTU sizes, its CRC); what it
does not do is hunt for an answer among bytes that are not one. Its RTU decoder gives up on the
whole buffer at the first plausible frame start whose CRC fails, so an adapter's echo of the
request, a few noise bytes before the answer, or a stale answer of another unit turn a good
answer into "CRC check failed"; and its MBAP decoder waits for ever on a bad protocol id. The
two functions here scan a buffer the way the standard's framing allows (Modbus over Serial Line
V1.02 §2.5.1: a frame is address, function, data, CRC-16; Modbus Messaging on TCP/IP V1.0b
§3.1.3: the MBAP header's transaction id pairs an answer with its request), and say what they
skipped so that the link can report it. Pure functions of bytes: table-tested.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

__all__ = ["MbapScan", "RtuScan", "find_mbap_answer", "find_rtu_answer"]

_ANSWERS = DecodePDU(is_server=False)  # knows the size of every answer pymodbus can parse
_RTU_MIN = 4  # unit, function, CRC
_MBAP_HEADER = 7  # transaction id, protocol id, length, unit id
_MBAP_MAX_LENGTH = 254  # unit id + a PDU of at most 253 bytes


@dataclass(frozen=True, slots=True)
class RtuScan:
    """Where the answer is in a buffer of RTU bytes, and what came before it.

    `pdu` is the answer's function code and data (CRC checked), `end` the offset just past it;
    both are None/0 while no answer is complete. `noise` counts bytes before the answer that
    belong to no frame of this transaction (an echo is not noise), `echo` says the request's
    own bytes came back first, `bad_crc` that a complete frame of this unit and function failed
    its CRC, and `expected` the size of the longest incomplete candidate (0: none).
    """

    pdu: bytes | None
    end: int
    noise: int
    echo: bool
    bad_crc: bool
    expected: int


@dataclass(frozen=True, slots=True)
class MbapScan:
    """Where the answer is in a Modbus TCP byte stream.

    `pdu` is the answer's function code and data once the frame carrying the request's
    transaction id is complete, `end` the offset past everything consumed (the answer, or the
    stale frames skipped so far), `stale` the transaction ids of the frames skipped (answers to
    earlier requests), `malformed` why the stream cannot be read further ("" if it can).
    """

    pdu: bytes | None
    end: int
    stale: tuple[int, ...]
    malformed: str


def find_rtu_answer(
    buf: bytes,
    unit: int,
    function: int,
    request: bytes,
    echo_expected: bool,
    data_bytes: int | None = None,
) -> RtuScan:
    """Find the answer of `unit` to `request` (function `function`) in `buf`.

    A candidate is a frame of `unit` with `function` (or its exception, function + 0x80) whose
    size, from pymodbus's PDU table, fits in `buf` and whose CRC-16 is right; bytes before it
    are skipped. A read's answer must also carry `data_bytes` bytes when given: a late answer
    to an earlier read of another size is not taken for this one. The request's own bytes (an
    RS-485 adapter's echo) are skipped once; for function 5 and 6, whose normal answer repeats
    the request byte for byte, only when `echo_expected` says the link echoes. Returns the
    first candidate found.
    """
    accepts = (function, function | 0x80)
    echo = False
    echo_at = -1
    bad_crc = False
    expected = 0
    answer_is_echo = function in (5, 6)
    i = 0
    n = len(buf)
    while n - i >= _RTU_MIN:
        if not echo and buf[i] == unit and buf.startswith(request[: n - i], i):
            if n - i < len(request):  # the start of an echo, or of an answer: wait and see
                expected = max(expected, len(request))
                break
            if echo_expected or not answer_is_echo:
                echo, echo_at = True, i
                i += len(request)
                continue
        if buf[i] == unit and buf[i + 1] in accepts:
            size = _rtu_size(buf, i)
            if size and i + size <= n:
                crc = int.from_bytes(buf[i + size - 2 : i + size], "big")
                other_size = data_bytes is not None and buf[i + 1] == function
                other_size = other_size and buf[i + 2] != data_bytes
                if not other_size and FramerRTU.check_CRC(buf[i : i + size - 2], crc):
                    noise = i - (len(request) if echo_at >= 0 else 0)
                    return RtuScan(buf[i + 1 : i + size - 2], i + size, noise, echo, bad_crc, 0)
                bad_crc = True
            else:
                expected = max(expected, size or _RTU_MIN + 1)
        i += 1
    noise = n - (len(request) if echo else 0)
    return RtuScan(None, 0, max(0, noise), echo, bad_crc, expected)


def _rtu_size(buf: bytes, i: int) -> int:
    """Size of the RTU frame starting at `buf[i]` per pymodbus's PDU table; 0 if unknown yet."""
    pdu_class = _ANSWERS.lookupPduClass(buf[i:])
    if pdu_class is None:
        return 0
    return int(pdu_class.calculateRtuFrameSize(buf[i:]))


def find_mbap_answer(buf: bytes, tid: int) -> MbapScan:
    """Find the frame with transaction id `tid` in a Modbus TCP stream, skipping earlier ones.

    Frames with another transaction id are answers to earlier requests that timed out: they
    are consumed and listed in `stale`. A protocol id other than 0 or a length outside 2..254
    means the stream is out of step (nothing after it can be trusted): `malformed` says so.
    The unit id of the answer is not checked: the transaction id pairs it with the request,
    and some devices answer with unit 0 or 255 whatever they were asked as.
    """
    pos = 0
    stale: list[int] = []
    while len(buf) - pos >= _MBAP_HEADER:
        t, protocol, length = struct.unpack_from(">HHH", buf, pos)
        if protocol != 0 or not 2 <= length <= _MBAP_MAX_LENGTH:
            why = f"malformed MBAP header (transaction {t}, protocol id {protocol}, "
            why += f"length {length}): the stream is out of step"
            return MbapScan(None, pos, tuple(stale), why)
        end = pos + 6 + length
        if end > len(buf):
            break
        if t != tid:
            stale.append(t)
            pos = end
            continue
        return MbapScan(buf[pos + _MBAP_HEADER : end], end, tuple(stale), "")
    return MbapScan(None, pos, tuple(stale), "")
