"""Read planning: coalescing a device's points into as few Modbus requests as the limits allow.

Pure; table-driven tests. Decoding the registers a read returned is drivers/values.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

from lifeline.drivers.profile import PointSpec, Table

__all__ = ["MAX_BITS", "MAX_REGISTERS", "ReadRequest", "plan_reads", "split_read"]

MAX_REGISTERS = 125  # Modbus limit for FC03/FC04
MAX_BITS = 2000  # Modbus limit for FC01/FC02
_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}


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
