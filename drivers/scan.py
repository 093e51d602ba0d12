"""Bus scan: find the devices answering on a link and recognise them by their profiles' id blocks.

A unit id is probed with one read of each profile's identification registers; the first
profile whose vendor and model ids match names the device. Silence on the first read means
nobody is at that address (one timeout per empty address, no more); a Modbus exception means
someone is there but does not have that register map. A Modbus TCP gateway answers for absent
units with exception 10/11 ("gateway path unavailable / target failed"), which also means
"nobody there".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lifeline.drivers.errors import DeviceException, DeviceTimeout, DriverError, LinkDown
from lifeline.drivers.link import Link, ModbusSerialLink, ModbusTcpLink, RtuOverTcpLink, poll_device
from lifeline.drivers.planner import plan_reads
from lifeline.drivers.profile import Profile
from lifeline.drivers.values import Value

__all__ = [
    "Found",
    "LineSettings",
    "ScanResult",
    "Target",
    "firmware_text",
    "parse_units",
    "scan",
]

_ABSENT_CODES = (10, 11)  # gateway path unavailable / gateway target failed to respond

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line settings to try (ignored for Modbus TCP)."""

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}1"


@dataclass(frozen=True, slots=True)
class Target:
    """What to scan: a serial port, a Modbus TCP endpoint, or RTU over TCP."""

    kind: Literal["rtu", "tcp", "rtu_over_tcp"]
    port: str = ""  # serial device path (rtu)
    host: str = ""
    tcp_port: int = 502

    def describe(self) -> str:
        """A human name for the target."""
        if self.kind == "rtu":
            return self.port
        scheme = "modbus-tcp" if self.kind == "tcp" else "rtu-over-tcp"
        return f"{scheme}://{self.host}:{self.tcp_port}"

    def link(self, line: LineSettings) -> Link:
        """A drivers link to the target with `line` settings."""
        if self.kind == "rtu":
            return ModbusSerialLink(self.port, line.baudrate, line.parity)
        if self.kind == "tcp":
            return ModbusTcpLink(self.host, self.tcp_port)
        return RtuOverTcpLink(self.host, self.tcp_port)


@dataclass(frozen=True, slots=True)
class Found:
    """A device that answered: where, what it is (profile None if unrecognised), sample values."""

    unit: int
    line: LineSettings | None  # None on Modbus TCP
    profile: Profile | None
    firmware: int | None = None
    values: dict[str, Value] = field(default_factory=dict)
    error: str = ""  # why values (or identification) could not be read

    def as_json(self) -> dict[str, Any]:
        """A JSON-able description (what `scan --json` prints and `commission` reads)."""
        p = self.profile
        return {
            "unit": self.unit,
            "baudrate": self.line.baudrate if self.line else None,
            "parity": self.line.parity if self.line else None,
            "profile": p.name if p else None,
            "family": p.family if p else None,
            "vendor": p.vendor if p else None,
            "model": p.model if p else None,
            "firmware": firmware_text(self.firmware),
            "values": self.values,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Everything a scan found on one target."""

    target: Target
    found: list[Found]
    probes: int
    # Line settings the port could not be used at (the tty refused them, or it went away),
    # with the reason; the rest of the scan went on without them.
    skipped: list[tuple[LineSettings, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able description of the target, the devices found and the settings skipped."""
        t = self.target
        target: dict[str, Any] = {"type": t.kind}
        if t.kind == "rtu":
            target["port"] = t.port
        else:
            target.update(host=t.host, port=t.tcp_port)
        skipped = [
            {"baudrate": line.baudrate, "parity": line.parity, "error": why}
            for line, why in self.skipped
        ]
        return {
            "target": target,
            "devices": [f.as_json() for f in self.found],
            "skipped": skipped,
        }


def firmware_text(version: int | None) -> str | None:
    """0x0102 -> '1.2' (the id block's firmware register is 0xMMmm)."""
    if version is None:
        return None
    return f"{version >> 8}.{version & 0xFF}"


def parse_units(text: str) -> list[int]:
    """Parse '1-32', '1,5,7-9' into unit ids 1..247; ValueError says what is wrong."""
    units: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"{part!r} is not a unit id or a range like 1-32") from None
        if not 1 <= a <= b <= 247:
            raise ValueError(f"{part!r}: unit ids run from 1 to 247, low before high")
        units.update(range(a, b + 1))
    return sorted(units)


async def _identify(
    link: Link,
    unit: int,
    profiles: Sequence[Profile],
    timeout: float,  # noqa: ASYNC109 - per request, as in drivers.link
) -> tuple[bool, Profile | None, int | None]:
    """(present, profile, firmware) for one unit; LinkDown propagates."""
    present = False
    for profile in profiles:
        plan = plan_reads(profile.identification.as_points())
        try:
            values = await poll_device(link, unit, plan, timeout, retries=0)
        except DeviceException as exc:
            if exc.code in _ABSENT_CODES:
                return False, None, None
            present = True
            continue
        except LinkDown:
            raise
        except DeviceTimeout:
            if not present:
                return False, None, None
            continue
        except DriverError:
            present = True  # a garbled answer: someone is there
            continue
        present = True
        if profile.identification.matches(values):
            fw = values.get("firmware_version")
            return True, profile, fw if isinstance(fw, int) else None
    return present, None, None


async def _sample(
    link: Link,
    unit: int,
    profile: Profile,
    timeout: float,  # noqa: ASYNC109 - per request, as in drivers.link
) -> Found | str:
    try:
        return Found(
            unit,
            None,
            profile,
            values=await poll_device(link, unit, plan_reads(profile.points), timeout, retries=1),
        )
    except DriverError as exc:
        return str(exc)


async def scan(
    target: Target,
    profiles: Iterable[Profile],
    units: Sequence[int],
    lines: Sequence[LineSettings] = (LineSettings(),),
    timeout: float = 0.2,  # noqa: ASYNC109 - per probe, not for the whole scan
    progress: Progress | None = None,
) -> ScanResult:
    """Probe every unit at every line setting; a unit found once is not probed again.

    `progress` is called once per probe with a short description. A serial line setting the
    port cannot be used at (a tty refusing a parity, an adapter unplugged mid-scan) is skipped
    and listed in `ScanResult.skipped`; what was found at the other settings is kept. LinkDown
    propagates only when no setting could be used and nothing was found (no such port,
    connection refused): then nothing on the target can be scanned.
    """
    ordered = sorted(profiles, key=lambda p: p.name)
    settings: Sequence[LineSettings | None] = list(lines) if target.kind == "rtu" else [None]
    found: dict[int, Found] = {}
    skipped: list[tuple[LineSettings, str]] = []
    first_down: LinkDown | None = None
    probes = 0
    for line in settings:
        link = target.link(line or LineSettings())
        try:
            for unit in units:
                if progress is not None:
                    progress(f"{line or target.describe()} unit {unit}")
                if unit in found:
                    continue
                probes += 1
                present, profile, fw = await _identify(link, unit, ordered, timeout)
                if not present:
                    continue
                if profile is None:
                    found[unit] = Found(unit, line, None, error="answers, but matches no profile")
                    continue
                sampled = await _sample(link, unit, profile, timeout)
                if isinstance(sampled, str):
                    found[unit] = Found(unit, line, profile, fw, error=sampled)
                else:
                    found[unit] = Found(unit, line, profile, fw, sampled.values)
        except LinkDown as exc:
            if line is None:
                raise
            skipped.append((line, exc.detail))
            first_down = first_down or exc
        finally:
            await link.aclose()
    if first_down is not None and len(skipped) == len(settings) and not found:
        raise first_down
    return ScanResult(target, [found[u] for u in sorted(found)], probes, skipped)
