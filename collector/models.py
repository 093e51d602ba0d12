"""Plain records the store reads and writes, shared by ingest, cases, the event log, webhooks,
API keys and the API: the store's results are defined here, below every module that uses them."""

from dataclasses import astuple, dataclass, field
from enum import StrEnum
from typing import Any

from lifeline.wire import Location, Message, TopicParts
from lifeline.wire.messages import Value

# Where a stored alarm event came from: the gateway's stream, or its birth's alarm picture.
ORIGIN_GATEWAY, ORIGIN_BIRTH = "gateway", "birth"
RECONCILED = "reconciled from birth"  # the note on what a birth's picture changed


class Status(StrEnum):
    """Online status of a gateway or device as derived from birth/death/device events."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # its gateway died, so nobody can tell


@dataclass(frozen=True, slots=True)
class Accepted:
    """A payload that decoded cleanly and whose topic matches its content.

    `digest` (of the payload bytes, for durable batches) tells a redelivery, which is
    byte-identical, from a different batch that reuses the key (gateway, epoch, seq).
    """

    topic: TopicParts
    message: Message
    digest: bytes | None = None
    topic_name: str = ""
    payload: bytes = b""  # as received: what a dead letter keeps if the database refuses it


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload for the dead-letter table, with the reason it was refused."""

    topic: str
    payload: bytes
    reason: str
    received_ms: int
    # The gateway that claimed what is not its own (an alarm id of another gateway): the
    # refusal is also reported as a `gateway.conflict` event of that gateway.
    conflict_of: str | None = None


Incoming = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class Reading:
    """One stored reading; `ts_ms` is the edge sample time, never rewritten."""

    gateway: str
    device: str
    point: str
    ts_ms: int
    value: Value
    quality: str
    historical: bool
    received_ms: int | None = None  # set only if `ts_ms` was implausible: when it arrived


@dataclass(frozen=True, slots=True)
class Bucket:
    """Aggregate of the numeric readings in one time bucket starting at `ts_ms`."""

    ts_ms: int
    count: int
    min: float
    avg: float
    max: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused payload as stored: at most DEAD_LETTER_PREFIX bytes of it, its whole size and
    its SHA-256 (hex; None for rows stored before they were kept)."""

    id: int
    topic: str
    payload: bytes
    reason: str
    received_ms: int
    size: int
    sha256: str | None


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What the collector knows about one gateway."""

    gateway: str
    site: str
    status: Status
    since_ms: int
    session: str
    software: str
    config_hash: str
    reason: str
    counters: dict[str, int | float] = field(default_factory=dict)
    counters_ms: int | None = None
    clock: "GatewayClock | None" = None  # from its last birth


@dataclass(frozen=True, slots=True)
class GatewayClock:
    """A gateway's wall clock as its last birth described it (wire.ClockInfo) and when that
    birth arrived here."""

    plausible: bool
    step_ms: int
    step_at_ms: int
    received_ms: int


@dataclass(frozen=True, slots=True)
class GatewayEpoch:
    """One buffer epoch of a gateway: its batches are numbered from 1 within it."""

    epoch: str
    first_ms: int  # when the collector first saw it


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the collector knows about one device."""

    device: str
    gateway: str
    profile: str
    family: str
    asset: str | None
    status: Status
    since_ms: int
    reason: str
    location: Location | None = None  # its own install location, from its gateway's birth
    grid: str | None = None  # the 单元网格 its install location stands in


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One logged status change of a gateway's device (online, offline, unknown), at `ts_ms`."""

    gateway: str
    device: str
    status: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """An alarm deduplicated by source (gateway, device, point) and type."""

    gateway: str
    device: str
    point: str
    alarm_type: str
    alarm_id: str
    severity: int
    state: str
    count: int
    first_ms: int
    last_ms: int
    state_ms: int
    value: Value
    limit: Value
    message: str
    ack_by: str | None
    ack_note: str | None


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One stored alarm event not yet handed to the case engine."""

    id: int
    gateway: str
    device: str
    point: str
    alarm_type: str
    alarm_id: str
    severity: int
    state: str
    ts_ms: int
    value: Value
    message: str
    origin: str = "gateway"  # or "birth": set from a birth's alarm picture (reconciled)
    limit: Value = None


@dataclass(frozen=True, slots=True)
class AlarmLink:
    """Where one alarm occurrence ended, with a snapshot of it: a case or a work order (`ref` is
    its number), an explicit ignore or a record (`reason` says why).

    An occurrence is one activation of an edge alarm id: ISA-18.2 lets an alarm that cleared
    while unacknowledged become active again under the same id, and that return is the next
    `activation` (0, 1, ...). An occurrence belongs to one case or work order only: a later
    transition of it (acknowledged, cleared) never opens another.
    """

    alarm_id: str
    gateway: str
    device: str
    point: str
    alarm_type: str
    severity: int
    value: Value
    limit: Value
    unit: str
    raised_ms: int
    message: str
    outcome: str  # a collector.cases.routing.Outcome value
    ref: str | None
    reason: str
    decided_ms: int
    cleared_ms: int | None = None
    activation: int = 0


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did."""

    readings: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alarm_events: int = 0
    conflicts: int = 0  # a key seen before with different content: dead-lettered, logged
    new_epochs: int = 0  # a known gateway started a new buffer epoch
    gateway_conflicts: int = 0  # claims refused to a gateway (another's alarm id or asset)

    def __add__(self, other: "WriteResult") -> "WriteResult":
        """The effect of two commits together."""
        return WriteResult(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


class Role(StrEnum):
    """What a key may do.

    The technical ladder viewer < dispatcher < operator < admin: each includes every role below
    it for the endpoints outside the case workflow (reads, work orders, alarm acknowledgement,
    gateway commands, keys and webhooks). The duty roles of a 数字城管 command center — 监督员,
    受理员, 值班长, 专业部门, 领导 — read like a viewer; what each may do to a case is the
    permission matrix of collector.cases.duties (docs/integration.md), where `dispatcher` is the
    派遣员. A `reporter` key (公众上报应用) is below the ladder: it posts Open311 reports and reads
    nothing an anonymous client cannot, because a citizen app's key ships inside the app.
    """

    VIEWER = "viewer"  # read-only (a wall screen)
    DISPATCHER = "dispatcher"  # 派遣员: 派遣, 改派, approves 延时 and 挂账
    OPERATOR = "operator"  # 运维: acknowledges alarms, commands gateways, works device orders
    ADMIN = "admin"  # technical: keys, webhooks, the asset and department registries
    INSPECTOR = "inspector"  # 监督员: reports and 核查 on site
    INTAKE = "intake"  # 受理员: takes reports in, sends a 监督员 to 核查
    SHIFT_LEAD = "shift_lead"  # 值班长: 立案, 作废, 结案, 督办
    DEPARTMENT = "department"  # 专业部门: 处置, 反馈 of its cases; 接单, 完工 of its work orders
    LEADER = "leader"  # 领导: reads everything, acts on nothing
    REPORTER = "reporter"  # 公众上报应用: posts Open311 reports, reads nothing

    @property
    def rank(self) -> int:
        """Position on the technical ladder, viewer = 0; every duty role reads like a viewer;
        a reporter is -1, below every rung."""
        return _LADDER.get(self, 0)

    def allows(self, needed: "Role") -> bool:
        """True if a key with this role may use an endpoint that needs `needed` (a rung of the
        technical ladder)."""
        return self.rank >= needed.rank


_LADDER = {Role.REPORTER: -1, Role.VIEWER: 0, Role.DISPATCHER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key without its secret: `prefix` is the first characters, to tell keys apart;
    `departments` are the department codes a 专业部门 key is scoped to (empty for every other
    role)."""

    id: int
    name: str
    role: Role
    prefix: str
    created_ms: int
    revoked_ms: int | None
    departments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportClaim:
    """A reporting client's own id for one report, so a retry answers the case the first try
    made (idempotency): `scope` is whose ids these are (`key:<id>` for a key's Idempotency-Key,
    `12345` for the hotline's 工单号, which is unique across the hotline), `report_id` the id,
    `fingerprint` a digest of what was reported (a reused id with other fields is refused)."""

    scope: str
    report_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Department:
    """One entry of the department registry: a short code and the department's name."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the event log; `id` is strictly increasing in the order readers see them."""

    id: int
    type: str
    ts_ms: int
    created_ms: int
    subject: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlarmView:
    """One alarm occurrence (an edge alarm id `gateway:epoch:n`) in its latest known state."""

    id: int
    alarm_id: str
    gateway: str
    device: str
    point: str
    alarm_type: str
    severity: int
    state: str
    raised_ms: int
    state_ms: int
    value: Any
    limit: Any
    message: str
    ack_by: str | None
    ack_note: str | None
    asset: str | None
    received_ms: int | None = None  # set only if the state's time was implausible
    # Where the occurrence ended (collector.cases.routing.Outcome), once the engine handled it:
    # its case or work order number, or why it became neither.
    outcome: str | None = None
    outcome_ref: str | None = None
    outcome_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    """A registered endpoint and the event types it wants (patterns like `alarm.*`; its JSON
    form names them `events`)."""

    id: int
    url: str
    event_types: tuple[str, ...]
    description: str
    created_ms: int
    cursor: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event sent (or to be sent) to one webhook, with its outcome so far."""

    id: int
    webhook_id: int
    event_id: int
    status: str  # pending, delivered, failed (gave up)
    attempts: int
    next_ms: int
    response_code: int | None
    error: str
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A pending delivery claimed for sending, with what sending needs."""

    id: int
    webhook_id: int
    url: str
    secret: str
    attempts: int
    event: EventRecord
