"""One simulated field device: a profile's register map backed by physics, plus injected faults."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lifeline.drivers.profile import DataType, PointSpec, Profile, Table
from lifeline.drivers.values import Value, decode_point, encode_value
from lifeline.firmware_sim.physics import PHYSICS, Physics, SimEventError

__all__ = ["ANSWER_FAULTS", "FAULT_KINDS", "QUIRKS", "Fault", "ModbusFault", "SimDevice"]

FaultKind = Literal[
    "none",
    "no_answer",
    "slow",
    "exception",
    "bad_crc",
    "garbage",
    "link_drop",
    "half_open",
    "gap_exceptions",
    "register_limit",
    "busy",
    "echo",
    "noise",
    "turnaround",
    "late",
]
# An answer fault replaces the previous one: what the device does instead of answering well.
ANSWER_FAULTS: tuple[str, ...] = (
    "no_answer",  # silence
    "slow",  # answers after delay_s (the connection waits)
    "exception",  # answers exception `code`
    "bad_crc",  # a corrupted CRC (garbage on Modbus TCP, which has none)
    "garbage",  # random bytes
    "link_drop",  # closes the TCP connection
    "half_open",  # TCP: this connection stays open and goes silent; a new one is served
)
# A quirk is how a real device or its line behaves; quirks add up (echo and noise together).
QUIRKS: tuple[str, ...] = (
    "gap_exceptions",  # exception 02 for a read touching an unmapped register
    "register_limit",  # exception 03 for a read of more than `limit` registers
    "busy",  # exception `code` (06 busy, 05 acknowledge) to a share `probability` of requests
    "echo",  # RTU: the request's own bytes come back before the answer
    "noise",  # RTU: `before` / `after` random bytes around the answer
    "turnaround",  # a request less than delay_s after the last answer on the link is dropped
    "late",  # answers after delay_s without holding up the next request
)
FAULT_KINDS: tuple[str, ...] = ("none", *ANSWER_FAULTS, *QUIRKS)
RTU_ONLY = ("echo", "noise")
TCP_ONLY = ("half_open",)
# The arguments each kind takes (`off` removes that one fault or quirk).
_ARGS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "no_answer": frozenset({"probability"}),
    "slow": frozenset({"delay_s", "probability"}),
    "exception": frozenset({"code", "probability"}),
    "bad_crc": frozenset({"probability"}),
    "garbage": frozenset({"probability"}),
    "link_drop": frozenset({"probability"}),
    "half_open": frozenset(),
    "gap_exceptions": frozenset(),
    "register_limit": frozenset({"limit"}),
    "busy": frozenset({"code", "probability"}),
    "echo": frozenset(),
    "noise": frozenset({"before", "after", "probability"}),
    "turnaround": frozenset({"delay_s"}),
    "late": frozenset({"delay_s", "probability"}),
}
_DEFAULT_CODE = {"exception": 4, "busy": 6}


class ModbusFault(Exception):
    """Answer the request with this Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"modbus exception {code}")
        self.code = code


@dataclass(frozen=True)
class Fault:
    """How a device misbehaves: kind plus its parameters; `probability` of hitting a request."""

    kind: FaultKind = "none"
    delay_s: float = 0.5  # slow, late: extra delay before answering; turnaround: the minimum
    code: int = 4  # exception: Modbus exception code (4 = device failure); busy: 6 or 5
    probability: float = 1.0
    limit: int = 16  # register_limit: the most registers one read may ask for
    before: int = 3  # noise: random bytes before the answer ...
    after: int = 0  # ... and after it

    @classmethod
    def from_args(cls, kind: str, args: dict[str, Any]) -> Fault:
        """Build a fault from a kind name and loose arguments (control interface, scenarios)."""
        if kind not in FAULT_KINDS:
            raise SimEventError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        unknown = set(args) - _ARGS[kind] - {"off"}
        if unknown:
            takes = ", ".join(sorted(_ARGS[kind])) or "no arguments"
            raise SimEventError(
                f"unknown argument(s) for {kind}: {', '.join(sorted(unknown))} ({kind} takes "
                f"{takes})"
            )
        try:
            fault = cls(
                kind=kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
                delay_s=float(args.get("delay_s", 0.05 if kind == "turnaround" else 0.5)),
                code=int(args.get("code", _DEFAULT_CODE.get(kind, 4))),
                probability=float(args.get("probability", 1.0)),
                limit=int(args.get("limit", 16)),
                before=int(args.get("before", 3)),
                after=int(args.get("after", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise SimEventError(f"bad argument for {kind}: {exc}") from None
        if not 0 <= fault.probability <= 1 or fault.delay_s < 0:
            raise SimEventError("probability is 0..1 and delay_s >= 0")
        if not 1 <= fault.code <= 255 or not 1 <= fault.limit <= 2000:
            raise SimEventError("code is 1..255 and limit 1..2000")
        if not 0 <= fault.before <= 64 or not 0 <= fault.after <= 64:
            raise SimEventError("before and after are 0..64 bytes")
        return fault


@dataclass
class DeviceStats:
    """Request counters, for tests and the demo."""

    requests: int = 0
    answered: int = 0
    faulted: int = 0
    exceptions: int = 0
    busy: int = 0  # busy / acknowledge answers given
    dropped: int = 0  # requests dropped for arriving inside the turnaround time


@dataclass
class SimDevice:
    """A simulated device at `unit` speaking the register map of `profile`."""

    device_id: str
    unit: int
    profile: Profile
    rng: random.Random
    start: datetime
    firmware_version: int = 0x0102
    fault: Fault = field(default_factory=Fault)  # the answer fault (one at a time)
    quirks: dict[str, Fault] = field(default_factory=dict)  # by kind; they add up
    transport: Literal["tcp", "rtu_tcp", "serial"] = "tcp"
    unmapped: Literal["zero", "exception"] = "zero"  # what a read of an unmapped register gets
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
        self._mapped: dict[Table, set[int]] = {table: set() for table in Table}
        for p in self.profile.points:
            self._mapped[p.table].update(range(p.address, p.end))
        for table, address in self._ident_words:
            self._mapped[table].add(address)

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
            self.set_fault(str(args.get("kind", "none")), params)
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

    def set_fault(self, kind: str, args: dict[str, Any]) -> None:
        """Inject a fault or a quirk (`none` clears them all; `off: true` clears one kind).

        Raises SimEventError for an unknown kind or argument, or a kind this device's
        transport cannot show (echo and noise are RTU line effects; half_open needs TCP).
        """
        fault = Fault.from_args(kind, args)
        if kind == "none":
            self.fault, self.quirks = Fault(), {}
            return
        if kind in RTU_ONLY and self.transport == "tcp":
            raise SimEventError(f"{kind} is an RTU line effect; {self.device_id} is on Modbus TCP")
        if kind in TCP_ONLY and self.transport == "serial":
            raise SimEventError(f"{kind} needs a TCP connection; {self.device_id} is on a pty")
        off = bool(args.get("off", False))
        if kind in QUIRKS:
            if off:
                self.quirks.pop(kind, None)
            else:
                self.quirks[kind] = fault
        elif off:
            if self.fault.kind == kind:
                self.fault = Fault()
        else:
            self.fault = fault

    def draw_fault(self) -> Fault | None:
        """The answer fault hitting this request, if any (draws from the seeded generator)."""
        f = self.fault
        if f.kind == "none" or (f.probability < 1.0 and self.rng.random() >= f.probability):
            return None
        return f

    def draw_quirk(self, kind: str) -> Fault | None:
        """The quirk `kind` if it is set and hits this request (seeded draw)."""
        q = self.quirks.get(kind)
        if q is None or (q.probability < 1.0 and self.rng.random() >= q.probability):
            return None
        return q

    # -- registers ---------------------------------------------------------------------------
    def check_read(self, table: Table, address: int, count: int) -> None:
        """Raise ModbusFault as this device would refuse the read (register limit, gaps)."""
        limit = self.quirks.get("register_limit")
        if limit is not None and count > limit.limit:
            raise ModbusFault(3)
        if self.unmapped == "exception" or "gap_exceptions" in self.quirks:
            mapped = self._mapped[table]
            if any(a not in mapped for a in range(address, address + count)):
                raise ModbusFault(2)

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        """Serve a read; unmapped registers read as 0 (see `check_read` for the strict kind)."""
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
