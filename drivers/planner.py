"""Read planning (coalescing points into Modbus requests) and value decoding/encoding; pure."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from drivers.profile import ByteOrder, DataType, PointSpec, Table

__all__ = [
    "MAX_BITS",
    "MAX_REGISTERS",
    "ReadRequest",
    "Value",
    "decode_point",
    "decode_response",
    "encode_value",
    "plan_reads",
    "split_read",
    "write_function",
]

Value = bool | int | float | str

MAX_REGISTERS = 125  # Modbus limit for FC03/FC04
MAX_BITS = 2000  # Modbus limit for FC01/FC02
# Register strings are byte strings padded with NULs or spaces; a device that leaves a NUL or
# other control byte inside one (`C\0H4`) must not poison what the gateway sends on: every C0
# and C1 control character (and DEL) is dropped when decoding.
_CONTROL_CHARS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])
_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}
_INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read covering `count` registers (or bits) from `address`, and the points in it."""

    table: Table
    address: int
    count: int
    points: tuple[PointSpec, ...]

    @property
    def function(self) -> int:
        """The Modbus function code of this read (1, 2, 3 or 4)."""
        return _READ_FUNCTION[self.table]

    @property
    def rtu_bytes(self) -> tuple[int, int]:
        """Bytes on an RTU line for (request, normal response)."""
        data = (self.count + 7) // 8 if self.table.is_bits else 2 * self.count
        return 8, 5 + data


def plan_reads(
    points: Iterable[PointSpec],
    max_gap: int = 16,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[ReadRequest]:
    """Coalesce points into as few reads as possible, filling gaps of at most `max_gap` units.

    `max_gap` 0 never merges: every point is read on its own (points sharing a register, bit
    fields, still share its read). `max_registers` / `max_bits` cap one read (Modbus allows
    125 registers, 2000 bits). Raises ValueError for limits out of range or a point larger
    than one read.
    """
    if max_gap < 0 or not 1 <= max_registers <= MAX_REGISTERS or not 1 <= max_bits <= MAX_BITS:
        raise ValueError("max_gap >= 0, 1 <= max_registers <= 125, 1 <= max_bits <= 2000")
    by_table: dict[Table, list[PointSpec]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    plan: list[ReadRequest] = []
    for table in Table:
        pts = sorted(by_table.get(table, []), key=lambda p: (p.address, p.end))
        limit = max_bits if table.is_bits else max_registers
        group: list[PointSpec] = []
        start = end = 0
        for p in pts:
            if p.register_count > limit:
                raise ValueError(f"point {p.name!r} is larger than one request ({limit})")
            near = p.address < end or (max_gap > 0 and p.address - end <= max_gap)
            if group and near and max(end, p.end) - start <= limit:
                group.append(p)
                end = max(end, p.end)
                continue
            if group:
                plan.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [p], p.address, p.end
        if group:
            plan.append(ReadRequest(table, start, end - start, tuple(group)))
    return plan


def split_read(request: ReadRequest) -> list[ReadRequest]:
    """The smaller reads to try when a device refuses `request` (exception 02 or 03).

    A read that spans unused registers is split at its gaps, into runs of adjacent points
    (a device may have nothing at an address between two points: ILLEGAL DATA ADDRESS). A read
    without gaps is split in two halves at a point boundary (a device may take fewer registers
    per request than Modbus allows: ILLEGAL DATA VALUE). Points sharing registers stay
    together. Returns [] when `request` reads a single point (or registers shared by bit
    points): nothing smaller can be asked for.
    """
    blocks: list[list[PointSpec]] = []
    end = -1
    for p in sorted(request.points, key=lambda p: (p.address, p.end)):
        if blocks and p.address < end:
            blocks[-1].append(p)
            end = max(end, p.end)
        else:
            blocks.append([p])
            end = p.end
    if len(blocks) < 2:
        return []
    runs: list[list[PointSpec]] = [list(blocks[0])]
    for block in blocks[1:]:
        if block[0].address == max(p.end for p in runs[-1]):
            runs[-1].extend(block)
        else:
            runs.append(list(block))
    if len(runs) == 1:
        half = len(blocks) // 2
        runs = [list(chain.from_iterable(blocks[:half])), list(chain.from_iterable(blocks[half:]))]
    return [_read_of(request.table, run) for run in runs]


def _read_of(table: Table, points: list[PointSpec]) -> ReadRequest:
    start = min(p.address for p in points)
    end = max(p.end for p in points)
    return ReadRequest(table, start, end - start, tuple(points))


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
    """Decode one point from its own registers (or its one bit for coil/discrete tables)."""
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
    """Decode every point of `request` from the registers (or bits) a device returned."""
    if len(raw) < request.count:
        raise ValueError(f"response has {len(raw)} values, request asked for {request.count}")
    values: dict[str, Value] = {}
    for p in request.points:
        offset = p.address - request.address
        values[p.name] = decode_point(p, raw[offset : offset + p.register_count])
    return values


def write_function(point: PointSpec) -> int:
    """The Modbus function code that writes `point` (5 coil, 6 one register, 16 several)."""
    if not point.writable:
        raise ValueError(f"point {point.name!r} is not writable")
    if point.table is Table.COIL:
        return 5
    return 6 if point.register_count == 1 else 16


def encode_value(point: PointSpec, value: Value) -> list[int] | list[bool]:
    """Encode an engineering value into the point's registers (or one bit for a coil)."""
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
        lo, hi = _INT_RANGES[dtype]
        if not lo <= raw <= hi:
            raise ValueError(f"{point.name}: {value} is out of range for {dtype}")
        data = raw.to_bytes(2 * point.register_count, "big", signed=lo < 0)
    if point.register_count == 1:
        wire = data[::-1] if _swap16(point.byte_order) else data
    else:
        wire = _canonical(data, point.byte_order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
