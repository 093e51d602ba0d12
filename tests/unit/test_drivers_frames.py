"""Finding the answer among received bytes: RTU resynchronisation and MBAP pairing, table-driven.

The frames are built by pymodbus's own framers, so the cases are byte-exact Modbus.
"""

from __future__ import annotations

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from lifeline.drivers.frames import find_mbap_answer, find_rtu_answer

pytestmark = pytest.mark.unit

_RTU = FramerRTU(DecodePDU(is_server=False))
_MBAP = FramerSocket(DecodePDU(is_server=False))


def rtu(pdu: ModbusPDU, unit: int = 1) -> bytes:
    pdu.dev_id = unit
    return _RTU.buildFrame(pdu)


def mbap(pdu: ModbusPDU, tid: int, unit: int = 1) -> bytes:
    pdu.dev_id, pdu.transaction_id = unit, tid
    return _MBAP.buildFrame(pdu)


REQ = rtu(ReadHoldingRegistersRequest(address=0x14, count=2))
ANS = rtu(ReadHoldingRegistersResponse(registers=[0x0102, 0x0304]))
ANS_PDU = ANS[1:-2]
EXC = rtu(ExceptionResponse(3, 2))
OTHER = rtu(ReadHoldingRegistersResponse(registers=[9]), unit=2)  # another unit's answer
BAD = ANS[:-1] + bytes([ANS[-1] ^ 0xFF])
W_REQ = rtu(WriteSingleRegisterRequest(address=5, registers=[7]))
W_ANS = rtu(WriteSingleRegisterResponse(address=5, registers=[7]))

RTU_CASES = [
    # (id, received bytes, request, echo configured, (pdu, end, noise, echo, bad_crc, expected))
    ("clean", ANS, REQ, False, (ANS_PDU, len(ANS), 0, False, False, 0)),
    ("exception", EXC, REQ, False, (EXC[1:-2], 5, 0, False, False, 0)),
    ("echo unannounced", REQ + ANS, REQ, False, (ANS_PDU, 17, 0, True, False, 0)),
    ("echo announced", REQ + ANS, REQ, True, (ANS_PDU, 17, 0, True, False, 0)),
    ("noise before", b"\x00\xff\x7e" + ANS, REQ, False, (ANS_PDU, 12, 3, False, False, 0)),
    ("noise after", ANS + b"\x00\x13", REQ, False, (ANS_PDU, 9, 0, False, False, 0)),
    # a noise byte equal to our unit followed by our function code: a false start, skipped
    ("false header", b"\x01\x03\xff" + ANS, REQ, False, (ANS_PDU, 12, 3, False, False, 0)),
    ("other unit first", OTHER + ANS, REQ, False, (ANS_PDU, len(OTHER) + 9, 7, False, False, 0)),
    ("echo, noise, answer", REQ + b"\xaa" + ANS, REQ, False, (ANS_PDU, 18, 1, True, False, 0)),
    ("bad CRC", BAD, REQ, False, (None, 0, 9, False, True, 0)),
    ("bad then good", BAD + ANS, REQ, False, (ANS_PDU, 18, 9, False, True, 0)),
    ("echo only", REQ, REQ, False, (None, 0, 0, True, False, 0)),
    ("half an answer", ANS[:5], REQ, False, (None, 0, 5, False, False, 9)),
    ("half an echo", REQ[:5], REQ, False, (None, 0, 5, False, False, 8)),
    ("another unit only", OTHER, REQ, False, (None, 0, 7, False, False, 0)),
    # FC 6: the answer repeats the request. Unannounced, the first copy is the answer ...
    ("write, no echo", W_ANS, W_REQ, False, (W_ANS[1:-2], 8, 0, False, False, 0)),
    # ... announced, the first copy is the echo and the second the answer
    ("write, echo", W_REQ + W_ANS, W_REQ, True, (W_ANS[1:-2], 16, 0, True, False, 0)),
    ("write, echo only", W_REQ, W_REQ, True, (None, 0, 0, True, False, 0)),
]


@pytest.mark.parametrize(
    ("buf", "request_", "echo", "expected"),
    [case[1:] for case in RTU_CASES],
    ids=[case[0] for case in RTU_CASES],
)
def test_rtu_answer_is_found_among_echo_and_noise(
    buf: bytes,
    request_: bytes,
    echo: bool,
    expected: tuple[bytes | None, int, int, bool, bool, int],
) -> None:
    fc = request_[1]
    scan = find_rtu_answer(buf, 1, fc, request_, echo)
    got = (scan.pdu, scan.end, scan.noise, scan.echo, scan.bad_crc, scan.expected)
    assert got == expected


READ = ReadHoldingRegistersResponse(registers=[0x0102])


MBAP_CASES = [
    # (id, stream, expected transaction id, (pdu found?, end, stale ids, malformed?))
    ("clean", mbap(READ, 7), 7, (True, 11, (), False)),
    ("stale first", mbap(READ, 6) + mbap(READ, 7), 7, (True, 22, (6,), False)),
    ("stale only", mbap(READ, 5) + mbap(READ, 6), 7, (False, 22, (5, 6), False)),
    ("stale then half", mbap(READ, 6) + mbap(READ, 7)[:9], 7, (False, 11, (6,), False)),
    ("header only", mbap(READ, 7)[:7], 7, (False, 0, (), False)),
    ("unit 255 answers", mbap(READ, 7, unit=255), 7, (True, 11, (), False)),
    ("bad protocol id", b"\x00\x07\x00\x01\x00\x05\x01\x03\x02\x01\x02", 7, (False, 0, (), True)),
    ("length 300", b"\x00\x07\x00\x00\x01\x2c\x01\x03", 7, (False, 0, (), True)),
    (
        "stale then garbage",
        mbap(READ, 6) + b"\xde\xad\xbe\xef\x00\x00\x00",
        7,
        (False, 11, (6,), True),
    ),
]


@pytest.mark.parametrize(
    ("stream", "tid", "expected"),
    [case[1:] for case in MBAP_CASES],
    ids=[case[0] for case in MBAP_CASES],
)
def test_mbap_answer_is_paired_by_transaction_id(
    stream: bytes, tid: int, expected: tuple[bool, int, tuple[int, ...], bool]
) -> None:
    scan = find_mbap_answer(stream, tid)
    assert (scan.pdu is not None, scan.end, scan.stale, bool(scan.malformed)) == expected
    if scan.pdu is not None:
        assert scan.pdu == b"\x03\x02\x01\x02"


def test_a_late_rtu_answer_to_a_read_of_another_size_is_not_taken() -> None:
    late = rtu(ReadHoldingRegistersResponse(registers=[1, 2, 3]))  # 6 data bytes, not 4
    scan = find_rtu_answer(late + ANS, 1, 3, REQ, False, data_bytes=4)
    assert (scan.pdu, scan.noise) == (ANS_PDU, len(late))
    assert find_rtu_answer(late, 1, 3, REQ, False, data_bytes=4).pdu is None
    assert find_rtu_answer(EXC, 1, 3, REQ, False, data_bytes=4).pdu == EXC[1:-2]
