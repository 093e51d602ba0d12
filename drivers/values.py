"""The value codec: a point's registers (or bits) to its engineering value and back; pure.

Byte orders are named ABCD / DCBA / BADC / CDAB (Telegraf's naming); scale and offset map raw
to engineering units. Planning which registers to read is drivers/planner.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from lifeline.drivers.planner import ReadRequest
from lifeline.drivers.profile import ByteOrder, DataType, PointSpec, Table

__all__ = ["Value", "decode_point", "decode_response", "encode_value", "write_function"]

Value = bool | int | float | str

# Register strings are byte strings padded with NULs or spaces; a device that leaves a NUL or
# other control byte inside one (`C\0H4`) must not poison what the gateway sends on: every C0
# and C1 control character (and DEL) is dropped when decoding.
_CONTROL_CHARS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])
_INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


def _canonical(wire: bytes, order: ByteOrder) -> bytes:
    """Reorder wire bytes to big-endian ABCD; the same call maps ABCD back to wire order."""
    if order is ByteOrder.ABCD:
        return wire
    if order is ByteOrder.DCBA:
        return wire[::-1]
    if order is ByteOrder.BADC:
        return b"".join(wire[i : i + 2][::-1] for i in range(0, len(wire), 2))
    return wire[2:4] + wire[0:2]  # CDAB


def _swap16(order: ByteOrder) -> bool:
    return order in (ByteOrder.BADC, ByteOrder.DCBA)


def _words_to_bytes(words: Sequence[int]) -> bytes:
    return b"".join(int(w).to_bytes(2, "big") for w in words)


def _scaled(point: PointSpec, raw: float) -> int | float:
    if point.scale == 1 and point.offset == 0:
        return raw
    # Rounding hides binary noise (2345 * 0.1 = 234.50000000000003) without losing precision.
    return round(raw * point.scale + point.offset, 9)


def decode_point(point: PointSpec, raw: Sequence[int] | Sequence[bool]) -> Value:
    """Decode one point from its own registers (or its one bit for coil/discrete tables).

    Returns the engineering value (scale and offset applied; NaN for a float32 NaN). Raises
    ValueError when `raw` holds fewer registers than the point spans.
    """
    if len(raw) < point.register_count:
        raise ValueError(f"{point.name}: needs {point.register_count} registers, got {len(raw)}")
    dtype = point.dtype
    if point.table.is_bits:
        return bool(raw[0])
    if dtype is DataType.BOOL:
        return int(raw[0]) != 0
    if dtype is DataType.BIT:
        return bool((int(raw[0]) >> (point.bit or 0)) & 1)
    wire = _words_to_bytes([int(w) for w in raw[: point.register_count]])
    if dtype is DataType.STRING:
        if _swap16(point.byte_order):
            wire = _canonical(wire, ByteOrder.BADC)
        return wire.decode("latin-1").translate(_CONTROL_CHARS).strip(" ")
    if dtype in (DataType.INT16, DataType.UINT16):
        data = wire[::-1] if _swap16(point.byte_order) else wire
        return _scaled(point, int.from_bytes(data, "big", signed=dtype is DataType.INT16))
    data = _canonical(wire, point.byte_order)
    if dtype is DataType.FLOAT32:
        f = float(struct.unpack(">f", data)[0])
        if math.isnan(f):
            return f
        # float32 carries ~7 significant digits: drop the noise of widening it to a double.
        return _scaled(point, float(f"{f:.7g}"))
    return _scaled(point, int.from_bytes(data, "big", signed=dtype is DataType.INT32))


def decode_response(request: ReadRequest, raw: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
    """Decode every point of `request` from the registers (or bits) a device returned.

    Returns point name -> value. Raises ValueError when `raw` is shorter than the request.
    """
    if len(raw) < request.count:
        raise ValueError(f"response has {len(raw)} values, request asked for {request.count}")
    values: dict[str, Value] = {}
    for p in request.points:
        offset = p.address - request.address
        values[p.name] = decode_point(p, raw[offset : offset + p.register_count])
    return values


def write_function(point: PointSpec) -> int:
    """The Modbus function code that writes `point` (5 coil, 6 one register, 16 several).

    Raises ValueError when the point is not writable.
    """
    if not point.writable:
        raise ValueError(f"point {point.name!r} is not writable")
    if point.table is Table.COIL:
        return 5
    return 6 if point.register_count == 1 else 16


def encode_value(point: PointSpec, value: Value, *, exact: bool = False) -> list[int] | list[bool]:
    """Encode an engineering value into the point's registers (or one bit for a coil).

    Returns the register words (or `[bit]`) in the point's byte order. An integer register
    holds whole steps of `point.scale`: a value between two steps is rounded to the nearest
    (a simulated reading), or with `exact` refused (a write: the device must hold what was
    asked). Raises ValueError for a bit field (not writable alone), a string too long, text for
    a number, a number out of the data type's range, or with `exact` one between two steps.
    """
    dtype = point.dtype
    if point.table.is_bits:
        return [bool(value)]
    if dtype is DataType.BIT:
        raise ValueError(f"{point.name}: a single bit cannot be written without its register")
    if dtype is DataType.BOOL:
        return [1 if value else 0]
    if dtype is DataType.STRING:
        text = str(value).encode("latin-1")
        size = 2 * point.register_count
        if len(text) > size:
            raise ValueError(f"{point.name}: {value!r} is longer than {size} bytes")
        wire = text.ljust(size, b"\x00")
        if _swap16(point.byte_order):
            wire = _canonical(wire, ByteOrder.BADC)
        return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, size, 2)]
    if isinstance(value, str):
        raise ValueError(f"{point.name}: expects a number, not {value!r}")
    engineering = float(value)
    raw_f = (engineering - point.offset) / point.scale
    if dtype is DataType.FLOAT32:
        data = struct.pack(">f", raw_f)
    else:
        raw = round(raw_f)
        if exact and abs(raw_f - raw) > 1e-6:
            below = math.floor(raw_f) * point.scale + point.offset
            steps = f"{round(below, 9):g} or {round(below + point.scale, 9):g}"
            raise ValueError(
                f"{point.name}: {value} is between two of the steps it holds "
                f"({steps}{' ' + point.unit if point.unit else ''})"
            )
        lo, hi = _INT_RANGES[dtype]
        if not lo <= raw <= hi:
            raise ValueError(f"{point.name}: {value} is out of range for {dtype}")
        data = raw.to_bytes(2 * point.register_count, "big", signed=lo < 0)
    if point.register_count == 1:
        wire = data[::-1] if _swap16(point.byte_order) else data
    else:
        wire = _canonical(data, point.byte_order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
