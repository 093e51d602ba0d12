"""The value codec (drivers/values.py): every type and byte order, table-driven."""

import math
import struct

import pytest

from lifeline.drivers.profile import PointSpec
from lifeline.drivers.values import decode_point, encode_value

pytestmark = pytest.mark.unit


def pt(name: str = "p", **kw: object) -> PointSpec:
    base: dict[str, object] = {"name": name, "table": "holding", "address": 0, "dtype": "uint16"}
    return PointSpec.model_validate({**base, **kw})


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


F = struct.pack(">f", -12.5)  # A B C D of a negative float32
I32 = (-123456).to_bytes(4, "big", signed=True)

DECODE_CASES = [
    # (point fields, registers, expected value)
    ({"dtype": "uint16"}, [0xFFFE], 65534),
    ({"dtype": "int16"}, [0xFFFE], -2),
    ({"dtype": "int16", "byte_order": "BADC"}, [0xFEFF], -2),
    ({"dtype": "int16", "byte_order": "DCBA"}, [0xFEFF], -2),
    ({"dtype": "int16", "byte_order": "CDAB"}, [0xFFFE], -2),
    ({"dtype": "uint16", "scale": 0.1}, [2345], 234.5),
    ({"dtype": "int16", "scale": 0.01, "offset": -40}, [0xFF9C], -41.0),
    ({"dtype": "uint32"}, [0x0001, 0x0002], 65538),
    ({"dtype": "uint32", "byte_order": "CDAB"}, [0x0002, 0x0001], 65538),
    ({"dtype": "int32"}, words(I32), -123456),
    ({"dtype": "int32", "byte_order": "CDAB"}, words(I32[2:] + I32[:2]), -123456),
    (
        {"dtype": "int32", "byte_order": "BADC"},
        words(bytes([I32[1], I32[0], I32[3], I32[2]])),
        -123456,
    ),
    ({"dtype": "int32", "byte_order": "DCBA"}, words(I32[::-1]), -123456),
    ({"dtype": "float32"}, words(F), -12.5),
    ({"dtype": "float32", "byte_order": "CDAB"}, words(F[2:] + F[:2]), -12.5),
    ({"dtype": "float32", "byte_order": "BADC"}, words(bytes([F[1], F[0], F[3], F[2]])), -12.5),
    ({"dtype": "float32", "byte_order": "DCBA"}, words(F[::-1]), -12.5),
    ({"dtype": "float32", "scale": 2}, words(F), -25.0),
    ({"dtype": "string", "length": 3}, words(b"CH4\x00\x00\x00"), "CH4"),
    ({"dtype": "string", "length": 2, "byte_order": "BADC"}, words(b"HC\x004"), "CH4"),
    # control bytes inside a string (NUL, bell, escape, C1) are dropped, not sent on
    ({"dtype": "string", "length": 3}, words(b"C\x00H4\x00\x00"), "CH4"),
    ({"dtype": "string", "length": 4}, words(b"\x1b[2JOK\x07\x85"), "[2JOK"),
    ({"dtype": "string", "length": 3}, words(b"  LEL \x00"), "LEL"),
    ({"dtype": "bit", "bit": 3}, [0b1000], True),
    ({"dtype": "bit", "bit": 2}, [0b1000], False),
    ({"dtype": "bool"}, [7], True),
    ({"dtype": "bool"}, [0], False),
    ({"dtype": "bool", "table": "coil"}, [True], True),
    ({"dtype": "bool", "table": "discrete_input"}, [False], False),
]


@pytest.mark.parametrize(("fields", "registers", "expected"), DECODE_CASES)
def test_decode_every_type_and_byte_order(
    fields: dict[str, object], registers: list[int], expected: object
) -> None:
    value = decode_point(pt("p", **fields), registers)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_float32_nan_decodes_to_nan(order: str) -> None:
    p = pt(dtype="float32", byte_order=order, scale=0.5)
    nan_words = encode_value(pt(dtype="float32", byte_order=order), float("nan"))
    value = decode_point(p, nan_words)
    assert isinstance(value, float)
    assert math.isnan(value)


ROUND_TRIP = [
    ({"dtype": "int16", "scale": 0.1}, -12.3),
    ({"dtype": "uint16"}, 40),
    ({"dtype": "int32", "byte_order": "CDAB"}, -70000),
    ({"dtype": "uint32", "byte_order": "DCBA", "scale": 0.01}, 123456.78),
    ({"dtype": "float32", "byte_order": "BADC"}, 3.25),
    ({"dtype": "string", "length": 4}, "LL-1"),
    ({"dtype": "bool"}, True),
    ({"dtype": "bool", "table": "coil", "writable": True}, False),
]


@pytest.mark.parametrize(("fields", "value"), ROUND_TRIP)
def test_encode_then_decode_round_trips(fields: dict[str, object], value: object) -> None:
    p = pt("p", **fields)
    assert decode_point(p, encode_value(p, value)) == value  # type: ignore[arg-type]


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_value(pt(dtype="uint16"), -1)
    with pytest.raises(ValueError, match="out of range"):
        encode_value(pt(dtype="int16", scale=0.1), 4000)


def test_a_write_between_two_steps_is_refused_a_reading_is_rounded() -> None:
    # `edge write ... dimming 40.5` used to write 40 and only then complain about the read-back.
    dimming = pt("dimming", unit="%")
    with pytest.raises(ValueError, match=r"dimming: 40\.5 is between two of the steps it holds "):
        encode_value(dimming, 40.5, exact=True)
    with pytest.raises(ValueError, match=r"\(230\.1 or 230\.2 V\)"):
        encode_value(pt("voltage", scale=0.1, unit="V"), 230.15, exact=True)
    assert encode_value(pt(scale=0.1), 230.1, exact=True) == [2301]  # 2300.9999...: one step
    assert encode_value(pt(scale=0.5, offset=-40), -39.5, exact=True) == [1]
    assert encode_value(dimming, 40.4) == [40]  # firmware-sim's physics: nearest step
