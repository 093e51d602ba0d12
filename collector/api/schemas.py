"""What the API answers: one pydantic model per JSON document a route returns.

Routes build their answers as before (dicts from the store's records) and name one of these as
their `response_model`: FastAPI checks each answer against it and the OpenAPI document
describes it, so a client (and schemathesis) sees the fields, their types and their meaning.
Every model forbids keys it does not declare, so a field added to an answer without its model
fails the API tests instead of silently disappearing from the document.

Times are UTC milliseconds since the Unix epoch (`*_ms`); severities are 1 (一级, most severe)
... 4 (四级).
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lifeline.collector.cases.routing import Outcome
from lifeline.collector.cases.workflow import Audit, CaseState, Colour, Place
from lifeline.collector.cases.workorders import WorkOrderState
from lifeline.collector.models import DeviceState, GatewayClock, GatewayEpoch, Role, Status
from lifeline.collector.profiles import PointInfo
from lifeline.wire import AlarmState, Location, Quality
from lifeline.wire.messages import Value

__all__ = [
    "AckAccepted",
    "AlarmOut",
    "AlarmPage",
    "AlarmSnapshot",
    "AssetDetail",
    "AssetOut",
    "BindingOut",
    "BucketOut",
    "CaseDetail",
    "CaseOut",
    "CasePage",
    "CommandAccepted",
    "CommandReplyOut",
    "ConsoleConfigOut",
    "DeadLetterOut",
    "DeadLetterPage",
    "DepartmentOut",
    "DeviceDetail",
    "EventOut",
    "EventPage",
    "GatewayDetail",
    "IngestCounts",
    "KeyOut",
    "MeOut",
    "NewKeyOut",
    "NewWebhookOut",
    "PhaseOut",
    "ProfileOut",
    "ReadingOut",
    "ReadyOut",
    "ServiceOut",
    "ServiceRequestOut",
    "WebhookOut",
    "WorkOrderAuditOut",
    "WorkOrderDetail",
    "WorkOrderOut",
    "WorkOrderPage",
]


class Out(BaseModel):
    """An answer document: exactly the declared keys."""

    model_config = ConfigDict(extra="forbid")


# --- readings ---------------------------------------------------------------------------------


class ReadingOut(Out):
    """One reading; `ts_ms` is the UTC sample time at the edge in milliseconds."""

    gateway: str
    device: str
    point: str
    ts_ms: int
    value: Value
    quality: Quality
    historical: bool = Field(description="sampled before the current broker connection")
    received_ms: int | None = None  # only if ts_ms was implausible: when it reached us


class BucketOut(Out):
    """Aggregate of one time bucket starting at `ts_ms`."""

    ts_ms: int
    count: int
    min: float
    avg: float
    max: float


# --- alarms -----------------------------------------------------------------------------------


class AlarmOut(Out):
    """One alarm occurrence in its latest known state, and where it ended."""

    alarm_id: str = Field(description="the edge's id, `gateway:epoch:n` (n counts its alarms)")
    gateway: str
    device: str
    point: str
    alarm_type: str = Field(description="a wire.AlarmType value: hihi, hi, lo, lolo, on, ...")
    severity: int = Field(ge=1, le=4)
    state: AlarmState = Field(description="ISA-18.2 state")
    raised_ms: int
    state_ms: int
    value: Any = Field(description="the value that raised or last changed it")
    limit: Any = Field(description="the limit it crossed")
    message: str
    ack_by: str | None
    ack_note: str | None
    asset: str | None = Field(description="the 部件 its device is bound to")
    received_ms: int | None = Field(description="set only if state_ms was implausible")
    outcome: Outcome | None = Field(description="null while the case engine has not handled it")
    outcome_ref: str | None = Field(description="its case or work order number")
    outcome_reason: str | None = Field(description="why it became neither")


class AlarmPage(Out):
    """One page of alarms, newest first; pass `next_cursor` back for the next (null: done)."""

    items: list[AlarmOut]
    next_cursor: str | None


class AlarmSnapshot(Out):
    """An alarm occurrence as a case or work order shows it: id, what it measured, when."""

    alarm_id: str
    gateway: str
    device: str
    point: str
    alarm_type: str
    severity: int
    value: Any
    limit: Any
    unit: str
    message: str
    raised_ms: int
    cleared_ms: int | None
    active: bool


# --- gateways, devices, commands, dead letters ------------------------------------------------


class DeviceDetail(Out):
    """One device with its latest value of every point."""

    device: str
    gateway: str
    profile: str
    family: str
    asset: str | None
    status: Status
    since_ms: int
    reason: str
    location: Location | None = Field(description="its own install location, from its birth")
    grid: str | None = Field(description="the 单元网格 its install location stands in")
    latest: list[ReadingOut]


class GatewayDetail(Out):
    """One gateway with its buffer epochs (newest first: `epoch` is the current one) and its
    devices."""

    gateway: str
    site: str
    status: Status
    since_ms: int
    session: str
    software: str
    config_hash: str
    reason: str
    counters: dict[str, int | float]
    counters_ms: int | None
    clock: GatewayClock | None
    epoch: str | None
    epochs: list[GatewayEpoch]
    devices: list[DeviceState]


class CommandAccepted(Out):
    """A command on its way; poll `reply` for the gateway's answer."""

    command_id: str
    reply: str


class CommandReplyOut(Out):
    """A gateway's reply to a command: only `state` while it is pending."""

    state: Literal["pending", "done"]
    ok: bool | None = None
    result: Any = None
    error: str | None = None
    sent_ms: int | None = None
    received_ms: int | None = None


class DeadLetterOut(Out):
    """A refused payload with the reason."""

    id: int
    topic: str
    reason: str
    received_ms: int
    size: int = Field(description="bytes received")
    sha256: str | None = Field(description="of the whole payload, hex (null: stored before)")
    truncated: bool = Field(description="payload_b64 holds only the first 4 KiB")
    payload_b64: str = Field(description="the bytes as received (the first 4 KiB), base64")


class DeadLetterPage(Out):
    """The total count and one page of refused payloads, newest first."""

    count: int
    items: list[DeadLetterOut]
    next_cursor: str | None


class BindingOut(Out):
    """A device bound to an asset (gateway null: waits for the first gateway announcing it)."""

    gateway: str | None
    device: str
    asset: str


# --- cases and work orders --------------------------------------------------------------------


class CaseOut(Out):
    """A 数字城管 case with its deadline colour now, the name of its 小类 and its alarms."""

    case_no: str
    kind: str = Field(description="部件, 事件 or 未分类")
    subcategory: str = Field(description="小类 code, '' while 未分类")
    problem: str
    asset: str | None
    device: str | None
    state: CaseState
    urgency: str
    department: str = Field(description="主办 department")
    grid: str | None = Field(description="单元网格")
    created_ms: int
    updated_ms: int
    deadline_ms: int | None
    timed_from_ms: int | None
    repeats: int
    escalations: int
    title: str
    gateway: str | None
    allowed_ms: int | None
    severity: int | None
    assist: list[str] = Field(description="协办 departments")
    reworks: int = Field(description="返工")
    returns: int = Field(description="回退")
    closure: str | None = Field(description="处置完成 or 误报, once 结案")
    recurrence_of: str | None = Field(description="the case this one recurs (反复发生)")
    remaining_ms: int | None = Field(description="while 挂账: the time that was left")
    location: Place
    pending: str | None = Field(
        description="an application awaiting the 派遣员: extend (延时), park (挂账) or"
        " return (回退)"
    )
    pending_hours: float = Field(description="the 延时 applied for, hours on the stage's clock")
    source: str = Field(description="案件来源: 物联网感知, 监督员, 12345 or 公众")
    void_reason: str | None = Field(description="once 作废: 误报, 重复, 非管理范围 or 设备故障")
    media_url: str = Field(description="a photo of the problem, from a 公众 report ('' if none)")
    contact: dict[str, str] | None = Field(
        description="a 公众 reporter's or 12345 caller's contact fields (email, phone, ...);"
        " null for a role that may not see them (viewer, leader, operator, department)"
    )
    confirmed_by: str | None = Field(description="the 监督员 whose 核实 a 公众 report had")
    received_by: str | None = Field(
        description="who received it (受理): a 受理员's key, or `system` for a sensor's case"
        " (null: waits for 受理)"
    )
    received_ms: int | None = Field(description="when it was received (受理)")
    register_condition: str = Field(
        description="立案条件 met at 立案: the 小类's (立案标准) or the 值班长's words ('' before)"
    )
    close_condition: str = Field(description="结案条件 met at 结案 ('' before, or none given)")
    disposal_note: str = Field(description="处置意见: what the department did, from its 反馈")
    check_result: str | None = Field(
        description="核查结果 of the current round: 通过, 不通过 or 误报 (null: not checked"
        " since the last 反馈)"
    )
    check_note: str = Field(description="the 监督员's finding; the reason when 不通过")
    check_media_url: str = Field(description="a photo taken at 核查 ('' if none)")
    checked_by: str | None = Field(description="who recorded the 核查结果")
    checked_ms: int | None = Field(description="when")
    colour: Colour = Field(description="the deadline light now")
    subcategory_name: str | None
    alarms: list[AlarmSnapshot]
    actions: list[str] = Field(
        description="the actions the workflow allows on it now (the key's role may post fewer:"
        " GET /api/v1/me lists those)"
    )


class PhaseOut(Out):
    """One row of a case's phase table: a stage with its own clock (docs/integration.md)."""

    seq: int
    stage: str = Field(description="受理, 立案, 派遣, 处置 or 核查")
    department: str
    start_ms: int
    due_ms: int | None = Field(description="null: the stage is untimed")
    end_ms: int | None = Field(description="null: the case is in this stage now")
    unit: str = Field(description="工作时, 工作日 or 自然时")
    parked_ms: int = Field(description="挂账 time inside the stage (never overdue)")
    parked: bool
    extended_hours: float = Field(description="延时 granted, hours on the stage's clock")
    overdue: bool = Field(description="ended after its due time, or runs past it now")


class CaseDetail(CaseOut):
    """A case with its audit trail (oldest first) and its phase table."""

    audit: list[Audit]
    phases: list[PhaseOut]


class CasePage(Out):
    """One page of cases, newest first; pass `next_cursor` back for the next (null: done)."""

    items: list[CaseOut]
    next_cursor: str | None


class WorkOrderOut(Out):
    """A 设备运维工单 with its deadline colour now and its alarms."""

    order_no: str
    problem: str
    title: str
    gateway: str
    device: str
    asset: str | None
    state: WorkOrderState
    severity: int
    urgency: str
    department: str = Field(description="the device's maintainer")
    created_ms: int
    updated_ms: int
    deadline_ms: int
    allowed_ms: int
    repeats: int
    closure: str | None
    recurrence_of: str | None
    location: Place
    colour: Colour
    alarms: list[AlarmSnapshot]


class WorkOrderAuditOut(Out):
    """One audit row of a work order."""

    order_no: str
    ts_ms: int
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    key_id: int | None = Field(description="the acting key's id (null: the system)")
    role: str = Field(description="the acting key's role ('' for the system)")
    on_behalf_of: str = Field(description="a name the client gave; nothing vouches for it")


class WorkOrderDetail(WorkOrderOut):
    """A work order with its audit trail, oldest first."""

    audit: list[WorkOrderAuditOut]


class WorkOrderPage(Out):
    """One page of work orders, newest first; pass `next_cursor` back (null: done)."""

    items: list[WorkOrderOut]
    next_cursor: str | None


# --- event log, keys, webhooks ----------------------------------------------------------------


class EventOut(Out):
    """One entry of the event log."""

    id: int = Field(description="strictly increasing: resume after it")
    type: str = Field(description="alarm.raised, case.opened, device.offline, ...")
    ts_ms: int
    created_ms: int
    subject: str
    data: dict[str, Any]


class EventPage(Out):
    """Event log entries, oldest first; poll again with after = `last_id`."""

    items: list[EventOut]
    last_id: int | None


class KeyOut(Out):
    """A stored API key, never its secret: `prefix` tells keys apart."""

    id: int
    name: str
    role: Role
    prefix: str
    created_ms: int
    revoked_ms: int | None
    departments: list[str] = Field(description="a 专业部门 key's departments (codes)")


class NewKeyOut(KeyOut):
    """A key just made, with its secret: shown this once."""

    key: str


class WebhookOut(Out):
    """A registered webhook (never its secret)."""

    id: int
    url: str
    events: list[str] = Field(description="event type patterns it receives")
    description: str
    created_ms: int
    cursor: int = Field(description="the last event id fanned out to it")


class NewWebhookOut(WebhookOut):
    """A webhook just registered, with its signing secret: shown this once."""

    secret: str


# --- Open311 GeoReport v2 ---------------------------------------------------------------------


class ServiceOut(Out):
    """A GeoReport v2 service: one 小类 the routing table names."""

    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str
    group: str


class ServiceRequestOut(Out):
    """A case as a GeoReport v2 service request."""

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str
    service_name: str
    service_code: str
    description: str
    agency_responsible: str
    service_notice: str
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None
    address: str
    address_id: str | None
    zipcode: None
    lat: float | None
    long: float | None
    media_url: str | None


# --- assets -----------------------------------------------------------------------------------


class _Asset(Out):
    """A 部件's record, placed in its 单元网格."""

    code: str = Field(description="16-digit 部件标识码")
    subcategory: str = Field(description="4-digit 大类+小类 code")
    name: str
    owner: str = Field(description="权属单位")
    maintainer: str = Field(description="养护单位")
    grid: str = Field(
        description="the 单元网格 it is placed in: the grid polygon holding its point, else"
        " declared_grid ('' if none)"
    )
    declared_grid: str = Field(description="the 单元网格 its record names ('' if none)")
    address: str
    lon: float | None
    lat: float | None
    datum: str


class AssetOut(_Asset):
    """One 部件 as registered, placed in its 单元网格."""

    devices: list[str] = Field(description="the devices its record names")


class AssetDetail(_Asset):
    """One 部件 with its bound devices, each with its status and latest values."""

    devices: list[DeviceDetail]


# --- health -----------------------------------------------------------------------------------


class IngestCounts(Out):
    """What ingest did since the collector started."""

    received: int
    readings: int
    duplicates: int
    dead_letters: int
    store_errors: int = Field(description="commits that failed (and were retried)")
    poisoned: int = Field(description="messages the database refused, dead-lettered")


class PartitionsOut(Out):
    """A partitioned collector's share of the sites (docs/brokers.md)."""

    held: list[str] = Field(description="the partitions this collector ingests now")
    handovers: int = Field(description="partitions taken or given back since start")


class ReadyOut(Out):
    """Readiness: 200 `ready`, or 503 `not ready`. Without a key only `status`; with one also
    the backend and every reason, `dead_letters` while the database answers, the MQTT and
    ingest fields while ingesting, and `warnings` when something is degraded but works."""

    status: Literal["ready", "not ready"]
    backend: str | None = None
    reasons: list[str] | None = None
    warnings: list[str] | None = None
    dead_letters: int | None = None
    mqtt_connected: bool | None = None
    mqtt_subscribed: bool | None = None
    ingest: IngestCounts | None = None
    partitions: PartitionsOut | None = None


# --- who asks, what the devices measure, the registry, the console -------------------------------


class AckAccepted(Out):
    """An acknowledgement on its way to the gateway; poll `reply` for its answer."""

    alarm_id: str
    gateway: str
    command_id: str
    reply: str


class MeOut(Out):
    """The calling key and what its role may do."""

    name: str
    role: Role
    departments: list[str] = Field(
        description="the department codes a 专业部门 key is scoped to (empty for other roles)"
    )
    acknowledge: bool = Field(description="whether it may acknowledge alarms")
    case_actions: list[str] = Field(description="the case actions its role may post")


class ProfileOut(Out):
    """A device profile: its family and its points, each with its unit and default rules."""

    name: str
    family: str
    points: list[PointInfo]


class DepartmentOut(Out):
    """One entry of the department registry."""

    code: str
    name: str


class ConsoleConfigOut(Out):
    """What the console needs before it has a key: the map's base layer."""

    tiles_url: str | None
    tiles_datum: str
    tiles_max_zoom: int
