"""City cases: filtered, cursor-paged list; detail with audit trail and alarms; workflow actions."""

import json
import re
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from lifeline.collector.api.auth import ScopedReader
from lifeline.collector.api.deps import NowMs, RuntimeDep, StoreDep
from lifeline.collector.api.paging import (
    CASE_NO_PATTERN,
    Cursor,
    Name,
    PageSize,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from lifeline.collector.api.routes.departments import registry, resolve
from lifeline.collector.api.schemas import CaseDetail, CaseOut, CasePage
from lifeline.collector.cases.codes import subcategory_name
from lifeline.collector.cases.duties import SCOPED, in_scope, may_act, refusal, sees_contact
from lifeline.collector.cases.engine import CaseNotFound
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.workflow import (
    TRANSITIONS,
    UNSEEN,
    Action,
    Case,
    CaseState,
    CheckResult,
    Closure,
    IllegalTransition,
    colour,
)
from lifeline.collector.departments import check_actor
from lifeline.collector.models import AlarmLink, Role
from lifeline.collector.store import Conflict, Store
from lifeline.wire.codes import SUBCATEGORY_PATTERN

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])

CaseNo = Annotated[str, Path(pattern=CASE_NO_PATTERN, description="case number (案件编号)")]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _plain(text: str) -> str:
    """Free text a person types: line breaks and tabs, but no other control characters."""
    if _CONTROL.search(text):
        raise ValueError("holds control characters (only line breaks and tabs are allowed)")
    return text


Plain = Annotated[str, AfterValidator(_plain)]
Department = Annotated[str, Field(min_length=1, max_length=100)]


class CaseAction(StrEnum):
    """The actions a key may post (the system's own — upgrade, rework, auto_close — are not)."""

    RECEIVE = "receive"  # 受理 by the 受理员 (a 公众 report after its 核实), before 立案
    ACCEPT = "accept"  # 受理 -> 立案; an unclassified case takes `kind` and `subcategory`
    VOID = "void"  # 作废 (受理, 立案): `reason`
    CONFIRM = "confirm"  # 核实: a 监督员 finds a 公众 report true (needed before its 受理)
    DISPATCH = "dispatch"  # 派遣 / 改派: `department` (主办), `assist` (协办)
    START = "start"  # 处置
    FEEDBACK = "feedback"  # 反馈, with the 处置意见 in `note`
    VERIFY = "verify"  # 核查
    CHECK = "check"  # 核查通过 (the 监督员): `note`, `media_url`; needed before 结案 处置完成
    CLOSE = "close"  # 结案 after 核查: `closure` 处置完成 (default) or 误报; `condition`
    RETURN = "return"  # 回退 to the 派遣员
    REJECT = "reject"  # 核查不通过: back to 处置, with its reason in `note`; `media_url`
    UNPARK = "unpark"  # 解除挂账 (挂账 and 延时 take effect by approve of an application)
    ESCALATE = "escalate"  # 督办
    REPLY = "reply"  # the department answers a 督办: its `note`
    APPLY = "apply"  # the department applies: `request` extend (with `extend_hours`), park, return
    APPROVE = "approve"  # the 派遣员 grants the pending application
    DENY = "deny"  # the 派遣员 refuses it


class ActionIn(BaseModel):
    """An action on a case, with the arguments of the actions that take any."""

    action: CaseAction
    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="who acts for the key (a person at the desk), kept in the audit as"
        " `on_behalf_of`; the audit's actor is always the authenticated key",
    )
    note: Plain = Field(
        default="",
        max_length=2000,
        description="kept in the audit; for feedback the 处置意见 (required), for reject the"
        " reason (required), for check the finding, for reply the reply",
    )
    condition: Plain | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="for accept: the 立案条件 met, for close: the 结案条件 met, in the"
        " 值班长's words (default: the 小类's 立案标准 / 结案标准)",
    )
    media_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\s/?#]+\S*$",
        description="for check or reject: a photo taken at 核查 (http or https URL)",
    )
    extend_hours: float = Field(
        default=0,
        ge=0,
        le=24 * 365,
        description="for apply with request extend: hours on the stage's clock, in steps of"
        " 0.5 h, at most the stage's own limit",
    )
    request: Literal["extend", "park", "return"] | None = Field(
        default=None, description="for apply: 延时 (extend), 挂账 (park) or 回退 (return)"
    )
    reason: Literal["误报", "重复", "非管理范围", "设备故障"] | None = Field(
        default=None, description="for void (required): why it is no case"
    )
    department: Department | None = Field(
        default=None,
        description="for dispatch: the 主办 department, a code or name of the department"
        " registry (required after a 回退)",
    )
    assist: list[Department] = Field(
        default_factory=list,
        max_length=10,
        description="for dispatch: 协办 departments (registry codes or names)",
    )
    closure: Literal["处置完成", "误报"] | None = Field(
        default=None, description="for close: 处置完成 (default) or 误报"
    )
    kind: Literal["部件", "事件"] | None = Field(
        default=None, description="for accept of a 未分类 case: its kind"
    )
    subcategory: str | None = Field(
        default=None,
        pattern=SUBCATEGORY_PATTERN,
        description="for accept of a 未分类 case: its 小类",
    )

    @field_validator("actor")
    @classmethod
    def _actor(cls, v: str | None) -> str | None:
        return None if v is None else check_actor(v)

    @model_validator(mode="after")
    def _arguments_fit(self) -> "ActionIn":
        given = {
            "department": (self.department is not None, CaseAction.DISPATCH),
            "assist": (bool(self.assist), CaseAction.DISPATCH),
            "closure": (self.closure is not None, CaseAction.CLOSE),
            "kind": (self.kind is not None, CaseAction.ACCEPT),
            "subcategory": (self.subcategory is not None, CaseAction.ACCEPT),
            "request": (self.request is not None, CaseAction.APPLY),
            "reason": (self.reason is not None, CaseAction.VOID),
        }
        for name, (present, action) in given.items():
            if present and self.action is not action:
                raise ValueError(f"`{name}` goes with {action.value}, not {self.action.value}")
        pairs = {
            "condition": (self.condition, (CaseAction.ACCEPT, CaseAction.CLOSE)),
            "media_url": (self.media_url, (CaseAction.CHECK, CaseAction.REJECT)),
        }
        for name, (value, actions) in pairs.items():
            if value is not None and self.action not in actions:
                raise ValueError(
                    f"`{name}` goes with {' or '.join(a.value for a in actions)},"
                    f" not {self.action.value}"
                )
        if self.extend_hours > 0 and self.action is not CaseAction.APPLY:
            raise ValueError(f"`extend_hours` goes with apply, not {self.action.value}")
        if self.action is CaseAction.APPLY and self.request is None:
            raise ValueError("apply needs its `request`: extend, park or return")
        if (self.kind is None) != (self.subcategory is None):
            raise ValueError("`kind` and `subcategory` go together")
        return self


def alarm_snapshot(k: AlarmLink) -> dict[str, Any]:
    """An alarm occurrence as a case or work order shows it: id, what it measured, when."""
    return {
        "alarm_id": k.alarm_id,
        "gateway": k.gateway,
        "device": k.device,
        "point": k.point,
        "alarm_type": k.alarm_type,
        "severity": k.severity,
        "value": k.value,
        "limit": k.limit,
        "unit": k.unit,
        "message": k.message,
        "raised_ms": k.raised_ms,
        "cleared_ms": k.cleared_ms,
        "active": k.cleared_ms is None,
    }


def case_doc(
    case: Case, now_ms: int, role: Role, alarms: list[AlarmLink] | None = None
) -> dict[str, Any]:
    """The JSON form of a case as a key of `role` sees it: its fields, its deadline colour now,
    the name of its 小类, its alarms (each by id, with a snapshot) and the `actions` a key may
    post to it now. A 公众 reporter's `contact` is null for a role that may not see it
    (duties.CONTACT_ROLES), else its fields ({} when the case has none)."""
    body = asdict(case)
    body["state"] = case.state.value
    body["assist"] = list(case.assist)
    shown = sees_contact(role)
    body["contact"] = (json.loads(case.contact) if case.contact else {}) if shown else None
    del body["token"]  # the reporting app's handle, not the staff's business
    del body["version"]  # the store's guard against lost updates, not part of the record
    body["colour"] = colour(case, now_ms).value
    body["subcategory_name"] = subcategory_name(case.kind, case.subcategory) or None
    body["alarms"] = [alarm_snapshot(k) for k in alarms or []]
    body["actions"] = allowed_actions(case)
    return body


def phase_doc(p: Phase, now_ms: int) -> dict[str, Any]:
    """A row of the phase table: stage, department, start, due, end (ms; due null: untimed),
    its unit, 挂账 time, 延时 hours, and whether it is (or ended) overdue."""
    return {
        "seq": p.seq,
        "stage": p.stage,
        "department": p.department,
        "start_ms": p.start_ms,
        "due_ms": p.due_ms,
        "end_ms": p.end_ms,
        "unit": p.unit,
        "parked_ms": p.parked_ms,
        "parked": p.parked_since_ms is not None,
        "extended_hours": p.extended,
        "overdue": p.overdue(now_ms),
    }


def allowed_actions(case: Case) -> list[str]:
    """The actions a key may post to `case` now (the workflow's table, without the system's
    own; in 受理 only the next step: confirm while a 公众 or 12345 report waits for its 核实, then
    receive, then accept; check until 核查通过), so a client offers only those."""
    posted = {a.value for a in CaseAction}
    if case.state is CaseState.REPORTED:
        if case.source in UNSEEN and case.confirmed_by is None:
            step = Action.CONFIRM
        else:
            step = Action.RECEIVE if case.received_by is None else Action.ACCEPT
        posted -= {a.value for a in (Action.CONFIRM, Action.RECEIVE, Action.ACCEPT)} - {step.value}
    if case.check_result == CheckResult.PASSED.value:
        posted.discard(Action.CHECK.value)  # once per round of 核查
    return sorted(a.value for (a, s) in TRANSITIONS if s is case.state and a.value in posted)


def _with_alarms(store: Store, cases: list[Case], now: int, role: Role) -> list[dict[str, Any]]:
    links = store.links_for([c.case_no for c in cases])
    return [case_doc(c, now, role, links.get(c.case_no, [])) for c in cases]


@router.get("", response_model=CasePage)
def list_cases(
    store: StoreDep,
    reader: ScopedReader,
    now: NowMs,
    state: Annotated[list[CaseState], Query(description="any of these states")] = [],  # noqa: B006 - FastAPI copies defaults
    open_only: bool = False,
    department: Name = None,
    subcategory: Annotated[
        str | None, Query(pattern=SUBCATEGORY_PATTERN, description="小类")
    ] = None,
    grid: Name = None,
    overdue: Annotated[bool | None, Query(description="deadline passed (red) or not")] = None,
    limit: PageSize = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Cases, newest first, with their deadline colour and alarms; `next_cursor` pages on
    (null: done). A 专业部门 key sees only the cases its departments are 主办 or 协办 of."""
    states = {s.value for s in state}
    if open_only:
        finished = {CaseState.CLOSED.value, CaseState.VOIDED.value}
        states = (states or {s.value for s in CaseState}) - finished
        if not states:
            return {"items": [], "next_cursor": None}
    before = None
    if cursor:
        created, case_no = decode_cursor(cursor, 2)
        before = (cursor_int(created), case_no)
    rows = store.find_cases(
        states=sorted(states),
        department=department,
        subcategory=subcategory,
        grid=grid,
        overdue_at_ms=now if overdue is not None else None,
        overdue=bool(overdue),
        before=before,
        limit=limit + 1,
        scope=reader.scope,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": _with_alarms(store, rows, now, reader.key.role),
        "next_cursor": encode_cursor(rows[-1].created_ms, rows[-1].case_no) if more else None,
    }


@router.get("/{case_no}", response_model=CaseDetail)
def get_case(store: StoreDep, reader: ScopedReader, now: NowMs, case_no: CaseNo) -> dict[str, Any]:
    """One case with its alarms and audit trail (who — the key's name, id and role, and whom
    it acted for —, when, from, to, note). 404 also for a case outside a 专业部门 key's scope."""
    case = store.case(case_no)
    if case is None or not in_scope(case, reader.scope):
        raise HTTPException(404, f"no case {case_no}")
    body = case_doc(case, now, reader.key.role, store.links(case_no))
    body["audit"] = [asdict(a) for a in store.audit(case_no)]
    body["phases"] = [phase_doc(p, now) for p in store.phases(case_no)]
    return body


@router.post("/{case_no}/actions", response_model=CaseOut)
def act(
    runtime: RuntimeDep, reader: ScopedReader, case_no: CaseNo, body: ActionIn
) -> dict[str, Any]:
    """Apply a workflow action as the permission matrix allows the key's role (403 otherwise;
    docs/integration.md); a 专业部门 key acts only on cases its departments are 主办 of (404
    for others). 409 with the reason if the workflow does not allow it now, 422 if its
    arguments do not fit the case (a department outside the registry, for one)."""
    key, scope = reader.key, reader.scope
    action = Action(body.action.value)
    if not may_act(key.role, action):
        raise HTTPException(403, refusal(key, action))
    store = runtime.store
    if scope is not None:
        found = store.case(case_no)
        if found is None or not in_scope(found, scope, as_lead=action in SCOPED):
            raise HTTPException(404, f"no case {case_no}")
    try:
        department, assist = body.department, body.assist
        if department is not None or assist:
            names = registry(store)
            department = resolve(names, department) if department is not None else None
            assist = [resolve(names, a) for a in assist]
        case = runtime.cases.act(
            case_no,
            action,
            key.name,
            body.note,
            extend_hours=body.extend_hours,
            request=body.request,
            reason=body.reason,
            condition=body.condition,
            media_url=body.media_url or "",
            department=department,
            assist=assist,
            closure=Closure(body.closure) if body.closure else None,
            kind=body.kind,
            subcategory=body.subcategory,
            key_id=key.id,
            role=key.role.value,
            on_behalf_of=body.actor or "",
        )
    except CaseNotFound:
        raise HTTPException(404, f"no case {case_no}") from None
    except (IllegalTransition, Conflict) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.event_pump.kick()
    return case_doc(case, runtime.cases.now_ms(), key.role, runtime.store.links(case_no))
