"""Scenario files: which simulated devices run on which servers, and a timeline of events."""

from __future__ import annotations

import importlib.resources
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lifeline.drivers.profile import builtin_profiles
from lifeline.firmware_sim.device import ANSWER_FAULTS, QUIRKS, RTU_ONLY, TCP_ONLY, Fault
from lifeline.firmware_sim.physics import PHYSICS, SimEventError

__all__ = ["Scenario", "ScenarioError", "builtin_scenario_path", "load_scenario"]

GENERIC_EVENTS = ("set", "release", "fault")
_DEFAULT_START = datetime.fromisoformat("2026-11-01T17:55:00+08:00")


class ScenarioError(ValueError):
    """A scenario that cannot run, with the file and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FaultConfig(_Strict):
    """A fault or quirk a device starts with (see firmware_sim.device.Fault for the kinds)."""

    kind: str
    delay_s: float | None = Field(default=None, ge=0)
    code: int | None = Field(default=None, ge=1, le=255)
    probability: float | None = Field(default=None, ge=0, le=1)
    limit: int | None = Field(default=None, ge=1, le=2000)
    before: int | None = Field(default=None, ge=0, le=64)
    after: int | None = Field(default=None, ge=0, le=64)

    @model_validator(mode="after")
    def _check(self) -> Self:
        try:
            Fault.from_args(self.kind, self.args())
        except SimEventError as exc:
            raise ValueError(str(exc)) from None
        return self

    def args(self) -> dict[str, Any]:
        """The arguments given (for `Fault.from_args`)."""
        return self.model_dump(exclude={"kind"}, exclude_none=True)


class DeviceConfig(_Strict):
    """One simulated device on a server."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    unit: int = Field(ge=1, le=247)
    profile: str
    firmware_version: int = Field(default=0x0102, ge=0, le=0xFFFF)
    fault: FaultConfig | None = None  # an answer fault (no_answer, exception, ...)
    quirks: list[FaultConfig] = []  # how this device and its line behave (echo, busy, ...)
    unmapped: Literal["zero", "exception"] | None = None  # None: the scenario's
    set: dict[str, bool | int | float | str] = {}  # pinned point values


class ServerConfig(_Strict):
    """A Modbus TCP port, an RTU-over-TCP port (a DTU) or an RTU bus on a pty."""

    name: str
    kind: Literal["tcp", "rtu_tcp", "serial"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 = pick a free port
    baudrate: int | None = Field(default=None, ge=300)  # serial: 9600 if unset
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        for dev in self.devices:
            if dev.fault is not None and dev.fault.kind not in ANSWER_FAULTS:
                raise ValueError(
                    f"device {dev.id!r}: fault {dev.fault.kind!r} is not an answer fault "
                    f"({', '.join(ANSWER_FAULTS)}); list quirks under `quirks`"
                )
            for q in dev.quirks:
                if q.kind not in QUIRKS:
                    raise ValueError(
                        f"device {dev.id!r}: {q.kind!r} is not a quirk ({', '.join(QUIRKS)})"
                    )
            kinds = [q.kind for q in dev.quirks] + ([dev.fault.kind] if dev.fault else [])
            for kind in kinds:
                if kind in RTU_ONLY and self.kind == "tcp":
                    raise ValueError(f"device {dev.id!r}: {kind} is an RTU line effect")
                if kind in TCP_ONLY and self.kind == "serial":
                    raise ValueError(f"device {dev.id!r}: {kind} needs a TCP server")
        units = [d.unit for d in self.devices]
        dupes = sorted({u for u in units if units.count(u) > 1})
        if dupes:
            raise ValueError(f"unit id(s) {dupes} used twice on server {self.name!r}")
        return self


class TimelineEntry(_Strict):
    """At `at` simulated seconds after start, apply `event` to `device`."""

    at: float = Field(ge=0)
    device: str
    event: str
    args: dict[str, Any] = {}


class Scenario(_Strict):
    """A whole simulated district: servers, devices, and a timeline, reproducible by `seed`."""

    seed: int = 0
    start: Annotated[datetime, Field(strict=False)] = _DEFAULT_START  # simulated clock start
    time_scale: float = Field(default=1.0, gt=0)  # simulated seconds per real second
    tick_s: float = Field(default=0.2, gt=0)  # physics update period (real seconds)
    # A read touching a register no point maps: zeros (most sensor firmware), or exception 02
    # (ILLEGAL DATA ADDRESS) as strict meters do. Devices may say otherwise.
    unmapped: Literal["zero", "exception"] = "zero"
    servers: list[ServerConfig] = Field(min_length=1)
    timeline: list[TimelineEntry] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        profiles = builtin_profiles()
        families: dict[str, str] = {}
        for server in self.servers:
            for dev in server.devices:
                if dev.id in families:
                    raise ValueError(f"device id {dev.id!r} used twice")
                if dev.profile not in profiles:
                    raise ValueError(
                        f"device {dev.id!r}: unknown profile {dev.profile!r}; "
                        f"known: {', '.join(sorted(profiles))}"
                    )
                families[dev.id] = profiles[dev.profile].family
        for entry in self.timeline:
            if entry.device not in families:
                raise ValueError(f"timeline at {entry.at}: unknown device {entry.device!r}")
            known = PHYSICS[families[entry.device]].events + GENERIC_EVENTS
            if entry.event not in known:
                raise ValueError(
                    f"timeline at {entry.at}: device {entry.device!r} has no event "
                    f"{entry.event!r}; known: {', '.join(known)}"
                )
        return self


def builtin_scenario_path(name: str) -> Path | None:
    """The shipped scenario config/scenarios/NAME.yaml, if there is one."""
    root = importlib.resources.files("lifeline.config") / "scenarios"
    candidate = root / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file (or the name of a shipped one, e.g. `demo`)."""
    p = Path(path)
    if not p.exists() and (shipped := builtin_scenario_path(str(path))) is not None:
        p = shipped
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return Scenario.model_validate(data)
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(x) for x in e['loc']) or 'scenario'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise ScenarioError(f"{p}: invalid scenario:\n  " + "\n  ".join(lines)) from None
