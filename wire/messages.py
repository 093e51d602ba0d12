"""Message types carried between gateway and collector, independent of their encoding."""

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple

from lifeline.wire.topics import Kind

Value = bool | int | float | str | None


class Quality(StrEnum):
    """How far a sampled value can be trusted (OPC UA / Sparkplug style)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"  # decoded, but outside the sensor's plausible range
    BAD = "bad"  # the device answered but the value could not be decoded
    STALE = "stale"  # no fresh value: comm loss or the device is offline; value is None


class Severity(IntEnum):
    """The national four alarm levels: 1 = 一级/红 critical ... 4 = 四级/蓝 low."""

    CRITICAL = 1  # 一级 红
    HIGH = 2  # 二级 橙
    MEDIUM = 3  # 三级 黄
    LOW = 4  # 四级 蓝


class AlarmState(StrEnum):
    """ISA-18.2 alarm lifecycle states."""

    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    CLEARED_UNACKED = "cleared_unacked"
    NORMAL = "normal"


class Record(NamedTuple):
    """One sampled point value: sample time is UTC milliseconds taken at the edge."""

    # A NamedTuple, not a dataclass: millions are built per minute at the collector and
    # tuple construction costs half of a frozen dataclass's.

    device: str
    point: str
    ts_ms: int
    value: Value
    quality: Quality = Quality.GOOD
    historical: bool = False


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm; `alarm_id` is stable over its lifecycle.

    Gateways number alarms `<gateway>:<epoch>:<n>`, n counting up within a buffer epoch, so an
    id never repeats even when the buffer (and its counter) is lost.
    """

    alarm_id: str
    device: str
    point: str
    alarm_type: str  # an AlarmType value (checked at decode)
    severity: Severity
    state: AlarmState
    ts_ms: int
    value: Value = None
    limit: Value = None
    message: str = ""
    ack_by: str | None = None
    ack_note: str | None = None
    historical: bool = False


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device going online or offline as seen by its gateway."""

    device: str
    online: bool
    ts_ms: int
    reason: str = ""
    historical: bool = False


class AlarmType(StrEnum):
    """The kinds of alarm rule a gateway evaluates (ISA-18.2 / IEC 62682 vocabulary)."""

    HIHI = "hihi"  # high-high limit
    HI = "hi"  # high limit
    LO = "lo"  # low limit
    LOLO = "lolo"  # low-low limit
    ROC = "roc"  # rate of change
    STATE = "state"  # a boolean or bit-field state (cover open, lamp failure)
    STALE = "stale"  # no fresh value for too long
    COMM_LOSS = "comm_loss"  # the device stopped answering


DATUMS = ("CGCS2000", "WGS84", "GCJ-02", "BD-09")  # geodetic data a location may be given in


@dataclass(frozen=True, slots=True)
class Location:
    """Where a device is installed: longitude and latitude (degrees) in `datum`, an address."""

    lon: float
    lat: float
    datum: str = "CGCS2000"  # China's national datum; GPS (WGS84) differs by centimetres
    address: str = ""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as announced in a gateway birth; `location` is its own install location."""

    device: str
    profile: str
    family: str
    online: bool
    asset: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """What a gateway knows about its own wall clock, announced in its birth.

    `plausible` is False while the clock reads a time before the gateway's software was built
    (no RTC, NTP not yet synced): samples stamped then carry that implausible time. `step_ms`
    is the last step of the wall clock against the monotonic clock seen by this process
    (signed; 0 if none) and `step_at_ms` the wall time just after it: samples taken before the
    step, in this process, are off by about `step_ms`, so they can be re-stamped.
    """

    plausible: bool = True
    step_ms: int = 0
    step_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class _Header:
    gateway: str
    session: str  # this run of the gateway process (births and deaths are matched by it)
    seq: int
    sent_ms: int
    # The gateway buffer's epoch: created with the buffer, so a new SD card or a deleted buffer
    # starts a new one. Durable batches are keyed (gateway, epoch, seq).
    epoch: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class DataBatch(_Header):
    """A batch of telemetry records (durable lane)."""

    records: tuple[Record, ...] = ()
    kind: Kind = field(default=Kind.DATA, init=False)


@dataclass(frozen=True, slots=True)
class AlarmBatch(_Header):
    """A batch of alarm transitions (durable lane, published ahead of telemetry)."""

    events: tuple[AlarmEvent, ...] = ()
    kind: Kind = field(default=Kind.ALARM, init=False)


@dataclass(frozen=True, slots=True)
class DeviceEventBatch(_Header):
    """A batch of device online/offline transitions (durable lane)."""

    events: tuple[DeviceEvent, ...] = ()
    kind: Kind = field(default=Kind.DEVICE, init=False)


@dataclass(frozen=True, slots=True)
class Birth(_Header):
    """Retained announcement of a gateway session: what it runs, its devices, its open alarms.

    Published on every (re)connect and on `rebirth` (Sparkplug's NBIRTH). `alarms` is the
    gateway's alarm picture: the latest event of every alarm not back to normal. `high_water`
    is the last seq of this epoch frozen when the picture was taken: device and alarm states in
    the birth are newer than any durable batch of the epoch up to that seq.
    """

    software: str = ""
    config_hash: str = ""
    devices: tuple[DeviceInfo, ...] = ()
    alarms: tuple[AlarmEvent, ...] = ()
    high_water: int = 0
    clock: ClockInfo = ClockInfo()
    # Sparkplug's bdSeq: counts the gateway process's broker connections; a death (the last
    # will of one connection) ends only the birth with the same session and bd_seq.
    bd_seq: int = 0
    kind: Kind = field(default=Kind.BIRTH, init=False)


@dataclass(frozen=True, slots=True)
class Death(_Header):
    """A gateway connection ending (its MQTT last will, or a clean shutdown's message).

    It ends the birth with the same session and `bd_seq` only: brokers publish a will on their
    own shutdown too, so an older connection's retained death outlives the next birth.
    """

    reason: str = ""
    bd_seq: int = 0
    kind: Kind = field(default=Kind.DEATH, init=False)


@dataclass(frozen=True, slots=True)
class Status(_Header):
    """Periodic gateway health counters."""

    counters: dict[str, int | float] = field(default_factory=dict)
    kind: Kind = field(default=Kind.STATUS, init=False)


@dataclass(frozen=True, slots=True)
class Command(_Header):
    """A command sent down to a gateway; `gateway` names the target, seq is 0."""

    command_id: str = ""
    name: str = ""
    args: dict[str, Value] = field(default_factory=dict)
    kind: Kind = field(default=Kind.CMD, init=False)


@dataclass(frozen=True, slots=True)
class CommandReply(_Header):
    """A gateway's answer to one command."""

    command_id: str = ""
    ok: bool = False
    result: dict[str, Value] = field(default_factory=dict)
    error: str = ""
    kind: Kind = field(default=Kind.CMD_REPLY, init=False)


Message = (
    DataBatch | AlarmBatch | DeviceEventBatch | Birth | Death | Status | Command | CommandReply
)
