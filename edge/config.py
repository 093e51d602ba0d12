"""The gateway configuration: a strict schema, errors that name the file, field and reason."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifeline.drivers.baudrates import (
    MAX_BAUDRATE,
    MIN_BAUDRATE,
    STANDARD_BAUDRATES,
    baudrate_problem,
)
from lifeline.drivers.profile import (
    AlarmLadder,
    AlarmRuleSpec,
    PointSpec,
    Profile,
    ProfileError,
    builtin_profiles,
    check_point_rules,
    load_profile,
    yaml_problem,
)
from lifeline.wire import Location
from lifeline.wire.codes import ASSET_CODE_PATTERN
from lifeline.wire.messages import DATUMS
from lifeline.wire.topics import IDENT_RE

IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
assert IDENT_RE.pattern == IDENT  # one definition of an id, checked at import
Datum = Literal["CGCS2000", "WGS84", "GCJ-02", "BD-09"]
assert get_args(Datum) == DATUMS  # the wire's list of geodetic data, checked at import
MAX_ADDRESS = 256  # characters: the wire's limit on a string
# Control characters but tab, LF and CR (an address may have lines), C1 controls included:
# the wire refuses the former, and YAML does not keep U+0085 (NEL) through a dump and a load.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


Finite = Annotated[float, Field(allow_inf_nan=False)]

MAX_CONFIG_BYTES = 1024 * 1024  # ~10 000 devices; a real cabinet has a few hundred


class ConfigError(ValueError):
    """A gateway config that cannot be used; `problems` holds (field, reason) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {field}: {reason}" for field, reason in problems)
        super().__init__(f"{source}: invalid gateway config:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS towards the broker: a CA to trust, optionally a client certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both `cert` and `key`")
        return self


class LocationConfig(_Strict):
    """Where a cabinet or a device is installed: longitude and latitude in degrees in `datum`
    (CGCS2000, China's national datum, by default; WGS84 for raw GPS; GCJ-02 or BD-09 when
    read off a Chinese web map), and its address. The collector places cases by it."""

    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    datum: Datum = "CGCS2000"
    address: str = Field(default="", max_length=MAX_ADDRESS)

    @field_validator("address")
    @classmethod
    def _printable(cls, v: str) -> str:
        bad = _CONTROL.search(v)
        if bad is not None:
            raise ValueError(
                f"control character U+{ord(bad.group()):04X} at {bad.start()}; an address is text"
            )
        return v

    def to_wire(self) -> Location:
        """The location as the wire carries it in a birth's device row."""
        return Location(self.lon, self.lat, self.datum, self.address)


class MqttConfig(_Strict):
    """Where and how the gateway publishes."""

    url: str = "mqtt://127.0.0.1:1883"
    # More nodes of the same broker cluster, tried in turn after `url` when the one in use
    # cannot be reached or drops the connection (a node that dies).
    failover_urls: list[str] = Field(default_factory=list, max_length=16)
    root: str = "lifeline"
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    inflight: int = Field(default=8, ge=1, le=1000)  # unacknowledged batches (mids wrap at 65535)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    # MQTT 5 by default: its CONNACK says the broker's maximum packet size and its PUBACK says
    # why a publish was refused; "3.1.1" for brokers that speak nothing newer.
    protocol: Literal["5", "3.1.1"] = "5"
    # The largest MQTT packet the broker takes, when it cannot say so itself (MQTT 3.1.1, or
    # Mosquitto's message_size_limit): batches are cut to fit. None: no limit known beyond it.
    max_packet_bytes: int | None = Field(default=None, ge=1024, le=268_435_455)
    # Obey commands that change something (write, reload, ack) over a connection without
    # credentials? Anybody who reaches an open broker can send those; only the demo on
    # loopback (and tests) may say yes.
    allow_anonymous_commands: bool = False

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: object) -> object:
        # YAML reads `protocol: 5` as a number; it means the same as "5".
        return "5" if v == 5 and not isinstance(v, bool) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.username is not None or parts.password is not None:
            # Never echoed: pydantic's message would otherwise show the password.
            raise ValueError(
                "carries credentials: put them in mqtt.username and mqtt.password "
                "(`lifeline edge flash --username --password-file` writes both)"
            )
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return v

    @field_validator("failover_urls")
    @classmethod
    def _failover_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            parts = urlsplit(url)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(f"{url!r} must look like mqtt://host:1883 or mqtts://host:8883")
        return v

    @property
    def urls(self) -> list[str]:
        """Every broker URL, in the order they are tried: `url`, then `failover_urls`."""
        return [self.url, *self.failover_urls]

    @property
    def authenticated(self) -> bool:
        """Whether the broker knows who is speaking: a user name or a TLS client certificate,
        so that with its ACL only the collector can publish on this gateway's cmd topic."""
        return self.username is not None or (self.tls is not None and self.tls.cert is not None)

    @property
    def host(self) -> str:
        """Broker host name (of `url`)."""
        return host_port(self.url)[0]

    @property
    def port(self) -> int:
        """Broker port of `url` (1883, or 8883 for mqtts)."""
        return host_port(self.url)[1]


def host_port(url: str) -> tuple[str, int]:
    """Host and port of a broker URL: mqtt://host (port 1883) or mqtts://host (8883)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


class BufferConfig(_Strict):
    """The on-disk store-and-forward buffer and the batching of what leaves it."""

    path: str = "/var/lib/lifeline/edge.sqlite"
    max_mb: float = Field(default=256, gt=0)
    batch_records: int = Field(default=2000, ge=1, le=20000)
    batch_bytes: int = Field(default=128 * 1024, ge=1024, le=256 * 1024)
    flush_s: float = Field(default=0.05, gt=0, le=10)  # the longest a sample waits for a commit
    alarm_retention_days: float = Field(default=365, gt=0)


class ReportConfig(_Strict):
    """Report-by-exception: send on a change beyond `deadband`, else every `heartbeat_s`."""

    deadband: float | None = Field(default=None, ge=0)  # None: every sample is sent
    heartbeat_s: float = Field(default=300, gt=0)


class HealthConfig(_Strict):
    """When a device counts as degraded / offline, and how often an offline one is re-probed."""

    degraded_after: int = Field(default=1, ge=1)
    offline_after: int = Field(default=3, ge=1)
    reprobe_min_s: float = Field(default=5, gt=0)
    reprobe_max_s: float = Field(default=300, gt=0)
    comm_loss_severity: int = Field(default=3, ge=1, le=4)
    # A degraded device is online again after this many clean polls in a row (no retry, no
    # busy answer): a device busy 40 % of the time does not flap between the two states.
    recover_after: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="after")
    def _order(self) -> HealthConfig:
        if self.offline_after < self.degraded_after:
            raise ValueError("offline_after must be >= degraded_after")
        return self


class DeviceConfig(_Strict):
    """One field device on a bus."""

    id: str = Field(pattern=IDENT)
    unit: int = Field(ge=0, le=247)
    profile: str  # a built-in profile name, or a path to a profile YAML file
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=0.5, gt=0)
    retries: int = Field(default=1, ge=0, le=5)  # after a timeout, a bad frame or a lost link
    # Exception 05/06 (acknowledge / device busy): asked again this often, after busy_backoff_s,
    # doubling each time; the device is alive, so it turns degraded, never offline.
    busy_retries: int = Field(default=3, ge=0, le=10)
    busy_backoff_s: float = Field(default=0.05, gt=0, le=5)
    # Read planning, overriding the profile's: the most registers one read may ask for, and the
    # most unused registers a merged read may span (0 = never merge: one read per point).
    max_registers: int | None = Field(default=None, ge=1, le=125)
    max_gap: int | None = Field(default=None, ge=0, le=124)
    asset: str | None = Field(default=None, pattern=ASSET_CODE_PATTERN)  # 部件标识码
    alarms: dict[str, AlarmLadder] = {}  # per point: replaces the profile's rules
    # The installed zero of a point whose rules judge the deviation from it (`deviation: true`),
    # in the point's unit: a cover seated at 1.5 degrees alarms at 11.5 and at -8.5, not at 10.
    baselines: dict[str, Finite] = {}
    # A stale-data alarm per point when no good value arrived for this long (None: off).
    stale_after_s: float | None = Field(default=None, gt=0)
    stale_severity: int = Field(default=4, ge=1, le=4)
    report: ReportConfig = ReportConfig()
    location: LocationConfig | None = None  # where the device itself is; else the cabinet's


class _Bus(_Strict):
    name: str | None = None
    devices: list[DeviceConfig] = Field(min_length=1)
    # Silence kept after an answer before the next request (converters that drop a request
    # arriving too soon after their last reply), and after opening the link before the first.
    request_delay_s: float = Field(default=0.0, ge=0, le=10)
    connect_delay_s: float = Field(default=0.0, ge=0, le=60)
    # Where the bus's own cabinet or DTU box stands, when it is not the gateway's cabinet.
    location: LocationConfig | None = None


class _TcpLink(_Strict):
    # Consecutive timeouts (no byte from anyone) after which the connection is reopened: a
    # converter or 4G DTU can keep a dead connection open for ever. 0 = never.
    reconnect_after: int = Field(default=3, ge=0, le=1000)


class TcpBus(_Bus, _TcpLink):
    """Modbus TCP: one connection, devices polled one after the other."""

    type: Literal["tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)


class RtuOverTcpBus(_Bus, _TcpLink):
    """Modbus RTU frames through a serial-to-Ethernet converter."""

    type: Literal["rtu_over_tcp"]
    host: str
    port: int = Field(ge=1, le=65535)
    echo: bool = False  # the converter's RS-485 side echoes each request before the answer


class RtuBus(_Bus):
    """Modbus RTU on a serial port (RS-485): one request in flight at a time."""

    type: Literal["rtu"]
    echo: bool = False  # the adapter echoes each request before the answer (no echo cancel)
    port: str
    baudrate: int = 9600  # a non-standard rate is valid but suspect: see config_warnings
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1

    @field_validator("baudrate")
    @classmethod
    def _line_rate(cls, value: int) -> int:
        if not MIN_BAUDRATE <= value <= MAX_BAUDRATE:
            raise ValueError(
                f"{value} is no serial line rate ({MIN_BAUDRATE}-{MAX_BAUDRATE}); standard: "
                + ", ".join(map(str, STANDARD_BAUDRATES))
            )
        return value


Bus = Annotated[TcpBus | RtuBus | RtuOverTcpBus, Field(discriminator="type")]


class GatewayConfig(_Strict):
    """A whole gateway: identity, uplink, buffer and the buses it polls."""

    gateway: str = Field(pattern=IDENT)
    site: str = Field(pattern=IDENT)
    mqtt: MqttConfig = MqttConfig()
    buffer: BufferConfig = BufferConfig()
    health: HealthConfig = HealthConfig()
    status_interval_s: float = Field(default=30, gt=0)
    location: LocationConfig | None = None  # the cabinet's: its devices' unless they have one
    buses: list[Bus] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        seen: set[str] = set()
        lines: dict[str, int] = {}  # a serial line (RS-485 port, or behind a DTU) -> its bus
        units: dict[tuple[str, int], str] = {}  # (line or Modbus TCP endpoint, unit) -> device
        for index, bus in enumerate(self.buses):
            if isinstance(bus, RtuBus):
                where = f"serial port {bus.port}"
            else:
                where = f"{bus.type} {bus.host}:{bus.port}"
            # One serial line has one master: a second bus on it would open it again and poll
            # its devices twice, under other ids.
            if not isinstance(bus, TcpBus):
                if where in lines:
                    raise ValueError(
                        f"buses[{lines[where]}] and buses[{index}] are both on {where}: a serial"
                        " line has one master, so list all its devices under one bus"
                    )
                lines[where] = index
            for dev in bus.devices:
                if dev.id in seen:
                    raise ValueError(f"device id {dev.id!r} is used twice")
                seen.add(dev.id)
                # Two ids for one device would report its readings and alarms twice.
                other = units.setdefault((where, dev.unit), dev.id)
                if other != dev.id:
                    raise ValueError(
                        f"devices {other!r} and {dev.id!r} are both unit {dev.unit} on {where}: "
                        "a unit id names one device on a line"
                    )
        return self

    def devices(self) -> list[DeviceConfig]:
        """Every device of every bus."""
        return [d for bus in self.buses for d in bus.devices]

    def locations(self) -> dict[str, LocationConfig | None]:
        """Device id -> where it is installed: its own location, else its bus's cabinet's,
        else the gateway's cabinet's, else None."""
        return {
            dev.id: dev.location or bus.location or self.location
            for bus in self.buses
            for dev in bus.devices
        }

    def hash(self) -> str:
        """A stable hash of the effective config (key order and comments do not matter)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_BUS_MODELS: dict[str, type[BaseModel]] = {
    "tcp": TcpBus,
    "rtu": RtuBus,
    "rtu_over_tcp": RtuOverTcpBus,
}


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that owns the key at `loc`, to suggest the closest valid key."""
    model: type[BaseModel] = GatewayConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in ("tcp", "rtu", "rtu_over_tcp"):
            model = _BUS_MODELS[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        stack: list[Any] = [field.annotation]
        found = None
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                found = t
                break
            stack.extend(get_args(t))
        if found is not None:
            model = found
    return model


def yaml_path(loc: Sequence[int | str]) -> str:
    """A place in the config as the YAML path a person edits, e.g. `buses[1].devices[0].unit`.

    `loc` is a pydantic error location (keys and list indexes; the bus type tag pydantic adds
    after a bus's index is left out: it is the value of `type`, not a key) or one built by
    hand. Returns "(top level)" for the config itself.
    """
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i >= 2 and loc[i - 2] == "buses" and part in _BUS_MODELS:
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _explain(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = yaml_path(loc)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            valid = list(model.model_fields) if model else []
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            reason = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        else:
            reason = err["msg"].removeprefix("Value error, ")
        problems.append((field, reason))
    return problems


def config_warnings(cfg: GatewayConfig) -> list[tuple[str, str]]:
    """(field, reason) pairs for what is valid but most likely a mistake: a bus at a
    non-standard baud rate (a typo such as 96000 or 9601 that no device would answer)."""
    out = []
    for i, bus in enumerate(cfg.buses):
        if isinstance(bus, RtuBus) and (problem := baudrate_problem(bus.baudrate)):
            out.append((yaml_path(("buses", i, "baudrate")), problem))
    return out


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate parsed YAML as a gateway config (schema only, profiles not resolved).

    Raises ConfigError naming `source`, each field and why it is wrong.
    """
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _explain(exc)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read, validate and cross-check a gateway config file; raise ConfigError."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:  # a mistake, and pure-Python YAML is slow
            reason = f"{p.stat().st_size} bytes; a gateway config is at most {MAX_CONFIG_BYTES}"
            raise ConfigError(str(p), [("(file)", reason)])
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError(str(p), [("(file)", reason)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [("(file)", yaml_problem(exc))]) from None
    cfg = parse_config(data, str(p))
    resolve_profiles(cfg, p.parent, str(p))
    return cfg


def resolve_profiles(
    cfg: GatewayConfig, base: Path, source: str = "<config>"
) -> dict[str, Profile]:
    """Map device id -> profile; check alarm overrides name real points. Raise ConfigError."""
    builtin = builtin_profiles()
    out: dict[str, Profile] = {}
    problems: list[tuple[str, str]] = []
    for b, bus in enumerate(cfg.buses):
        for d, dev in enumerate(bus.devices):
            where = yaml_path(("buses", b, "devices", d))
            profile = builtin.get(dev.profile)
            if profile is None and dev.profile.endswith((".yaml", ".yml")):
                try:
                    profile = load_profile(base / dev.profile)
                except ProfileError as exc:
                    problems.append((f"{where}.profile", str(exc)))
                    continue
            if profile is None:
                hint = difflib.get_close_matches(dev.profile, list(builtin), n=1)
                reason = f"unknown profile {dev.profile!r}" + (
                    f" (did you mean {hint[0]!r}?)" if hint else f"; built-in: {sorted(builtin)}"
                )
                problems.append((f"{where}.profile", reason))
                continue
            names = [pt.name for pt in profile.points]
            for pt in profile.points:  # a read cannot be smaller than the point it reads
                if dev.max_registers is not None and pt.register_count > dev.max_registers:
                    reason = f"point {pt.name!r} alone takes {pt.register_count} registers"
                    problems.append((f"{where}.max_registers", reason))
                    break
            for point, rules in dev.alarms.items():
                if point not in names:
                    hint = difflib.get_close_matches(point, names, n=1)
                    reason = f"profile {profile.name!r} has no point {point!r}" + (
                        f" (did you mean {hint[0]!r}?)" if hint else ""
                    )
                    problems.append((f"{where}.alarms.{point}", reason))
                elif reason := check_point_rules(profile.point(point), rules):
                    problems.append((f"{where}.alarms.{point}", reason))
            problems += [(f"{where}.baselines.{p}", r) for p, r in _baseline_problems(dev, profile)]
            out[dev.id] = profile
    if problems:
        raise ConfigError(source, problems)
    return out


def point_rules(dev: DeviceConfig, point: PointSpec) -> list[AlarmRuleSpec]:
    """The alarm rules a device's point runs: the site's override, else the profile's."""
    return dev.alarms.get(point.name, point.alarms)


def deviation_points(dev: DeviceConfig, profile: Profile) -> list[PointSpec]:
    """The points of a device with a rule that judges the deviation from a baseline."""
    return [p for p in profile.points if any(r.deviation for r in point_rules(dev, p))]


def _baseline_problems(dev: DeviceConfig, profile: Profile) -> list[tuple[str, str]]:
    """(point, reason) for each baseline that names no point or that no rule would use."""
    names = [p.name for p in profile.points]
    judged = {p.name for p in deviation_points(dev, profile)}
    problems = []
    for point in dev.baselines:
        if point not in names:
            hint = difflib.get_close_matches(point, names, n=1)
            problems.append(
                (
                    point,
                    f"profile {profile.name!r} has no point {point!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            )
        elif point not in judged:
            problems.append(
                (
                    point,
                    f"no alarm rule of point {point!r} judges a deviation (`deviation: true`), "
                    "so a baseline would change nothing",
                )
            )
    return problems
