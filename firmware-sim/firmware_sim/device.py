"""One simulated field device: a profile's register map backed by physics, plus injected faults."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from drivers.planner import Value, decode_point, encode_value
from drivers.profile import DataType, PointSpec, Profile, Table
from firmware_sim.physics import PHYSICS, Physics, SimEventError

__all__ = ["FAULT_KINDS", "Fault", "ModbusFault", "SimDevice"]

FaultKind = Literal["none", "no_answer", "slow", "exception", "bad_crc", "garbage", "link_drop"]
FAULT_KINDS: tuple[str, ...] = (
    "none",
    "no_answer",
    "slow",
    "exception",
    "bad_crc",
    "garbage",
    "link_drop",
)


class ModbusFault(Exception):
    """Answer the request with this Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"modbus exception {code}")
        self.code = code


@dataclass(frozen=True)
class Fault:
    """How a device misbehaves: kind plus its parameters; `probability` of hitting a request."""

    kind: FaultKind = "none"
    delay_s: float = 0.5  # slow: extra delay before answering
    code: int = 4  # exception: Modbus exception code (4 = device failure)
    probability: float = 1.0

    @classmethod
    def from_args(cls, kind: str, args: dict[str, Any]) -> Fault:
        """Build a fault from a kind name and loose arguments (control interface, scenarios)."""
        if kind not in FAULT_KINDS:
            raise SimEventError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        unknown = set(args) - {"delay_s", "code", "probability"}
        if unknown:
            raise SimEventError(f"unknown fault argument(s): {', '.join(sorted(unknown))}")
        return cls(
            kind=kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
            delay_s=float(args.get("delay_s", 0.5)),
            code=int(args.get("code", 4)),
            probability=float(args.get("probability", 1.0)),
        )


@dataclass
class DeviceStats:
    """Request counters, for tests and the demo."""

    requests: int = 0
    answered: int = 0
    faulted: int = 0
    exceptions: int = 0


@dataclass
class SimDevice:
    """A simulated device at `unit` speaking the register map of `profile`."""

    device_id: str
    unit: int
    profile: Profile
    rng: random.Random
    start: datetime
    firmware_version: int = 0x0102
    fault: Fault = field(default_factory=Fault)
    stats: DeviceStats = field(default_factory=DeviceStats)
    physics: Physics = field(init=False)
    pinned: dict[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.physics = PHYSICS[self.profile.family](self.rng)
        self.physics.step(self.start, 0.0)
        ident = self.profile.identification
        self._ident_words: dict[tuple[Table, int], int] = {
            (ident.vendor_id.table, ident.vendor_id.address): ident.vendor_id.expect or 0,
            (ident.model_id.table, ident.model_id.address): ident.model_id.expect or 0,
            (ident.firmware_version.table, ident.firmware_version.address): self.firmware_version,
        }

    # -- state --------------------------------------------------------------------------------
    def step(self, now: datetime, dt: float) -> None:
        """Advance the physics by `dt` simulated seconds."""
        self.physics.step(now, dt)

    def values(self) -> dict[str, Value]:
        """Current engineering values of every point (pinned values win)."""
        return {**self.physics.values, **self.pinned}

    def trigger(self, event: str, args: dict[str, Any]) -> None:
        """Apply a physics event, or the generic set / release / fault events."""
        if event == "set":
            self.set_value(str(args.get("point")), args.get("value"))
        elif event == "release":
            self.release(args.get("point"))
        elif event == "fault":
            params = {k: v for k, v in args.items() if k != "kind"}
            self.fault = Fault.from_args(str(args.get("kind", "none")), params)
        else:
            self.physics.event(event, args)

    def set_value(self, point: str, value: Any) -> None:
        """Pin a point to `value` (physics no longer moves it) until released."""
        spec = self._point(point)
        if not isinstance(value, bool | int | float | str):
            raise SimEventError(f"{self.device_id}.{point}: unsupported value {value!r}")
        if spec.dtype is not DataType.BIT:
            try:
                encode_value(spec, value)
            except (ValueError, TypeError) as exc:
                raise SimEventError(f"{self.device_id}.{point}: {exc}") from None
        self.pinned[point] = value

    def release(self, point: Any = None) -> None:
        """Unpin one point, or all points when `point` is None."""
        if point is None:
            self.pinned.clear()
        else:
            self.pinned.pop(str(point), None)

    def _point(self, name: str) -> PointSpec:
        try:
            return self.profile.point(name)
        except KeyError as exc:
            raise SimEventError(str(exc.args[0])) from None

    def draw_fault(self) -> Fault | None:
        """The fault hitting this request, if any (draws from the seeded generator)."""
        f = self.fault
        if f.kind == "none" or (f.probability < 1.0 and self.rng.random() >= f.probability):
            return None
        return f

    # -- registers ---------------------------------------------------------------------------
    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        """Serve a read; unmapped registers read as 0 like most sensor firmware does."""
        if table.is_bits:
            bits = dict.fromkeys(range(address, address + count), False)
            for p, value in self._points_in(table, address, count):
                bits[p.address] = bool(value)
            return list(bits.values())
        words = {a: self._ident_words.get((table, a), 0) for a in range(address, address + count)}
        for p, value in self._points_in(table, address, count):
            if p.dtype is DataType.BIT:
                if value:
                    words[p.address] = words.get(p.address, 0) | (1 << (p.bit or 0))
                continue
            for i, w in enumerate(encode_value(p, value)):
                if p.address + i in words:
                    words[p.address + i] = int(w)
        return list(words.values())

    def _points_in(self, table: Table, address: int, count: int) -> list[tuple[PointSpec, Value]]:
        values = self.values()
        return [
            (p, values[p.name])
            for p in self.profile.points
            if p.table is table and p.address < address + count and p.end > address
            if p.name in values
        ]

    def write(self, table: Table, address: int, data: list[int] | list[bool]) -> None:
        """Serve a write: only whole writable points may be written (else exception 2)."""
        end = address + len(data)
        hit = [
            p
            for p in self.profile.points
            if p.table is table and p.address < end and p.end > address
        ]
        if not hit or any(not p.writable or p.address < address or p.end > end for p in hit):
            raise ModbusFault(2)
        for p in hit:
            offset = p.address - address
            value = decode_point(p, data[offset : offset + p.register_count])
            try:
                self.physics.written(p.name, value)
            except SimEventError:
                raise ModbusFault(3) from None
            self.pinned.pop(p.name, None)
