"""上报: a 监督员's report from the field (城管通) and a 受理员's entry of a 12345 hotline call,
as cases in 受理 (POST /api/v1/cases).

Both open their case the way a citizen's Open311 report does (CaseEngine.report): placed in
its 单元网格, numbered, routed 事件先属地后属主, its 受理 stage started, audited under the
authenticated key. One retry id names a report: the Idempotency-Key header, `report_id` or
a 12345 call's 工单号 (`hotline.order_no`), which must agree when more than one is given; a
retry under it answers the case the first try made. Without any id a retry is a second case.
"""

import hashlib
import itertools
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifeline.collector.api.auth import ScopedReader
from lifeline.collector.api.deps import RuntimeDep
from lifeline.collector.api.routes.cases import Line, Text, case_doc
from lifeline.collector.api.routes.open311 import outside_service_area, service_kinds
from lifeline.collector.api.schemas import CaseOut
from lifeline.collector.cases.codes import COMPONENT_NAMES, EVENT_NAMES, subcategory_name
from lifeline.collector.cases.duties import CASE_REPORTERS, may_report, report_refusal
from lifeline.collector.cases.engine import ReportReused
from lifeline.collector.cases.routing import Routing
from lifeline.collector.cases.workflow import COMPONENT, EVENT, HOTLINE, INSPECTOR, Place
from lifeline.collector.errors import Conflict
from lifeline.collector.models import ApiKey, ReportClaim
from lifeline.wire.messages import DATUMS

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])

# A client's id for a report: what UUIDs, ULIDs and 12345 工单号 are made of.
_ID = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}"
REPORT_ID = f"^{_ID}$"
_HEADER_ID = f'^(?:"{_ID}"|{_ID})$'  # an RFC 8941 string, as the IETF draft has it, or bare
PHOTO = r"^https?://[^\s/?#]+\S*$"


class Caller(BaseModel):
    """The 12345 caller (来电人), kept on the case as its `contact` (never published)."""

    model_config = ConfigDict(extra="forbid")

    name: Line | None = Field(default=None, min_length=1, max_length=64)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9][0-9 ()\-]*$")


class Hotline(BaseModel):
    """What a 12345 call brings: the hotline's 工单号 and the caller."""

    model_config = ConfigDict(extra="forbid")

    order_no: str = Field(
        pattern=REPORT_ID,
        description="the 12345 hotline's 工单号: unique across the hotline, so the same 工单"
        " entered twice answers the case it already is",
    )
    caller: Caller = Field(default_factory=Caller)


class ReportIn(BaseModel):
    """A 上报: what, where, and (for 12345) the call."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["部件", "事件"]
    subcategory: str = Field(pattern=r"^\d{4}$", description="小类 code of `kind`")
    lon: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    lat: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    datum: str = Field(
        default="CGCS2000", max_length=16, description=f"of lon/lat: {', '.join(DATUMS)}"
    )
    address: Text = Field(default="", max_length=200)
    description: Text = Field(min_length=1, max_length=4000)
    media_url: str | None = Field(
        default=None, max_length=2000, pattern=PHOTO, description="a photo (http or https)"
    )
    report_id: str | None = Field(
        default=None,
        pattern=REPORT_ID,
        description="the client's own id for this report (as the Idempotency-Key header)",
    )
    hotline: Hotline | None = Field(
        default=None, description="a 12345 call (受理员 and admin only): 工单号 and caller"
    )

    @model_validator(mode="after")
    def _fits(self) -> "ReportIn":
        if self.datum not in DATUMS:
            raise ValueError(f"datum {self.datum!r} is not one of {', '.join(DATUMS)}")
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither")
        if self.lon is None and not self.address.strip():
            raise ValueError("a place is required: lon and lat, or address")
        if not self.description.strip():
            raise ValueError("description says what was found")
        return self


def _reporter(reader: ScopedReader) -> ApiKey:
    if not may_report(reader.key.role):
        raise HTTPException(403, report_refusal(reader.key))
    return reader.key


Reporter = Annotated[ApiKey, Depends(_reporter)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=_HEADER_ID,
        description="the client's id for this report: a retry with it answers the same case",
    ),
]


def check_subcategory(routing: Routing, kind: str, code: str) -> None:
    """Raise HTTPException 422 unless `code` is a 小类 of `kind` in the catalogue: the 小类
    Lifeline names (collector.cases.codes) and the services the routing table offers."""
    offered = service_kinds(routing)
    names = {COMPONENT: COMPONENT_NAMES, EVENT: EVENT_NAMES}

    def known(k: str) -> bool:
        return code in names[k] or offered.get(code) == k

    if known(kind):
        return
    other = EVENT if kind == COMPONENT else COMPONENT
    if known(other):
        raise HTTPException(
            422,
            f"小类 {code} is a {other} 小类 ({subcategory_name(other, code)}), not a {kind}:"
            f" give kind {other} or a {kind} 小类",
        )
    raise HTTPException(
        422, f"小类 {code} is no {kind} 小类 the collector knows (see /open311/v2/services.json)"
    )


def _source(key: ApiKey, body: ReportIn) -> str:
    """The 案件来源 of a report by `key`: its duty's, or for admin the body's (12345 with a
    hotline call, else 监督员). 422 if the body does not fit the duty."""
    source = CASE_REPORTERS.get(key.role, HOTLINE if body.hotline is not None else INSPECTOR)
    if source == INSPECTOR and body.hotline is not None:
        raise HTTPException(
            422, "a 监督员's 上报 has no `hotline`: a 12345 call is entered by a 受理员"
        )
    if source == HOTLINE and body.hotline is None:
        raise HTTPException(
            422, "a 受理员 enters 12345 calls: give `hotline` with the call's `order_no`"
        )
    return source


def _claims(key: ApiKey, body: ReportIn, header: str | None, source: str) -> list[ReportClaim]:
    """The report's retry id as a claim with the fingerprint of what was reported: none if the
    client gave no id. The Idempotency-Key header, `report_id` and `hotline.order_no` are
    three names of one id, so each one given must agree (HTTPException 422 naming the two that
    differ). A 12345 工单号 is unique across the hotline, so a hotline id is claimed for the
    whole hotline (any 受理员 entering the same 工单 gets its case); another for the key only."""
    given = {
        "the Idempotency-Key header": header.strip('"') if header is not None else None,
        "`report_id`": body.report_id,
        "`hotline.order_no`": body.hotline.order_no if body.hotline is not None else None,
    }
    named = [(name, value) for name, value in given.items() if value is not None]
    for (first, a), (second, b) in itertools.pairwise(named):
        if a != b:
            raise HTTPException(
                422,
                f"{first} ({a!r}) and {second} ({b!r}) differ: they name one retry id, so give"
                " one of them or the same id in each",
            )
    if not named:
        return []
    fields = body.model_dump(exclude={"report_id"}, mode="json")
    text = json.dumps([source, fields], ensure_ascii=False, sort_keys=True)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    scope = HOTLINE if body.hotline is not None else f"key:{key.id}"
    return [ReportClaim(scope, named[0][1], fingerprint)]


@router.post(
    "",
    response_model=CaseOut,
    status_code=201,
    responses={200: {"model": CaseOut, "description": "a retry: the case the first try made"}},
)
def report(
    runtime: RuntimeDep,
    key: Reporter,
    body: ReportIn,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """上报 a case: a 监督员 key reports from the field (案件来源 监督员: the reporter saw it,
    so no 核实; it waits for the 受理员's receive), a 受理员 key enters a 12345 call (source
    12345, with `hotline`: like a citizen's report it needs a 监督员's 核实 before its 受理),
    admin either. The case opens in 受理 in the 单元网格 its point lies in, routed
    事件先属地后属主 and numbered as every reported case; 201 with the case and its `Location`.

    A retry under the same id — the Idempotency-Key header, `report_id` (per key) or a 12345
    call's 工单号 (across the hotline), which must agree when more than one is given — answers
    200 with that case and stores nothing; with no id a retry opens a second case. 403 for
    other roles (the permission matrix), 422 for a field that does not fit: an unknown 小类 or
    one of the other kind, coordinates out of range or outside the service area (the grid
    registry's 单元网格 with a ~500 m margin), text too long or with control characters, ids
    that differ, or an id reused for a different report."""
    check_subcategory(runtime.cases.routing, body.kind, body.subcategory)
    if body.lon is not None and body.lat is not None:
        outside = outside_service_area(runtime.cases.grids, body.lon, body.lat, body.datum)
        if outside:
            raise HTTPException(422, outside)
    source = _source(key, body)
    claims = _claims(key, body, idempotency_key, source)
    caller = body.hotline.caller.model_dump(exclude_none=True) if body.hotline else {}
    hotline = body.hotline
    note = f"12345 热线工单 {hotline.order_no}" if hotline is not None else f"{source}上报"
    place = Place(
        lon=body.lon,
        lat=body.lat,
        datum=body.datum if body.lon is not None else "",
        address=body.address.strip(),
        source="report",
    )
    try:
        case, new = runtime.cases.report(
            kind=body.kind,
            subcategory=body.subcategory,
            description=body.description.strip(),
            place=place,
            media_url=body.media_url or "",
            contact=json.dumps(caller, ensure_ascii=False) if caller else "",
            key=key,
            source=source,
            note=note,
            claims=claims,
        )
    except ReportReused as exc:
        raise HTTPException(422, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    response.status_code = 201 if new else 200
    response.headers["Location"] = f"/api/v1/cases/{case.case_no}"
    if new:
        runtime.event_pump.kick()
    return case_doc(case, runtime.cases.now_ms(), key.role)
