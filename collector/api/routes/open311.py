"""Open311 GeoReport v2 (read-only): cases as service requests, so existing city tools read them.

service_code is the case's 小类, status is open or closed (结案 and 作废 are closed), lat/long
and address come from the case's place (its asset, or its device's install location). Times
are ISO 8601 with the UTC offset, as the spec asks.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from lifeline.collector.api.auth import Viewer
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.schemas import ServiceOut, ServiceRequestOut
from lifeline.collector.cases.codes import EVENT_NAMES, subcategory_name
from lifeline.collector.cases.routing import RouteKind
from lifeline.collector.cases.workflow import COMPONENT, EVENT, Case, CaseState

router = APIRouter(prefix="/open311/v2", tags=["open311"])

CLOSED = {CaseState.CLOSED.value, CaseState.VOIDED.value}
OPEN_STATES = sorted(s.value for s in CaseState if s.value not in CLOSED)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _parse_iso(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def service_request(case: Case) -> dict[str, Any]:
    """One case as a GeoReport v2 service request."""
    closed = case.state.value in CLOSED
    return {
        "service_request_id": case.case_no,
        "status": "closed" if closed else "open",
        "status_notes": case.state.value,
        "service_name": subcategory_name(case.kind, case.subcategory),
        "service_code": case.subcategory,
        "description": case.title,
        "agency_responsible": case.department,
        "service_notice": case.urgency,
        "requested_datetime": _iso(case.created_ms),
        "updated_datetime": _iso(case.updated_ms),
        "expected_datetime": _iso(case.deadline_ms) if case.timed_from_ms else None,
        "address": case.location.address,
        "address_id": case.asset,
        "zipcode": None,
        "lat": case.location.lat,
        "long": case.location.lon,
        "media_url": None,
    }


@router.get("/services.json", response_model=list[ServiceOut])
def services(runtime: RuntimeDep, key: Viewer) -> list[dict[str, Any]]:
    """The service types: every 小类 the routing table names."""
    routing = runtime.cases.routing
    # The deadlines table names 小类 of both kinds (their 大类 numbers overlap): a code an
    # event route uses, or a 事件 code Lifeline knows, is an 事件 service; the rest 部件.
    events = {r.subcategory for r in routing.routes if r.kind is RouteKind.EVENT}
    codes = {c: EVENT for c in events if c}
    for c in routing.deadlines:
        if c != "default" and c not in codes:
            codes[c] = EVENT if c in EVENT_NAMES else COMPONENT
    return [
        {
            "service_code": code,
            "service_name": subcategory_name(kind, code),
            "description": f"数字城管 {kind} 小类 {code}",
            "metadata": False,
            "type": "realtime",
            "keywords": "lifeline",
            "group": kind,
        }
        for code, kind in sorted(codes.items())
    ]


@router.get("/requests.json", response_model=list[ServiceRequestOut])
def requests(
    store: StoreDep,
    key: Viewer,
    service_request_id: Annotated[str | None, Query(max_length=2000)] = None,
    service_code: Annotated[str | None, Query(pattern=r"^\d{4}$")] = None,
    status: Literal["open", "closed"] | None = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Service requests, newest first, by id list, 小类, status and requested time."""
    since, until = _parse_iso(start_date, "start_date"), _parse_iso(end_date, "end_date")
    states = {"open": OPEN_STATES, "closed": sorted(CLOSED), None: []}[status]
    if service_request_id is not None:
        wanted = [s.strip() for s in service_request_id.split(",") if s.strip()][:limit]
        found = [c for c in (store.case(n) for n in wanted) if c is not None]
    else:
        found = store.find_cases(states=states, subcategory=service_code, limit=limit * 4)
    out = []
    for c in found:
        if (since is not None and c.created_ms < since) or (
            until is not None and c.created_ms >= until
        ):
            continue
        out.append(service_request(c))
    return out[:limit]


@router.get("/requests/{request_id}.json", response_model=list[ServiceRequestOut])
def request(
    store: StoreDep, key: Viewer, request_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> list[dict[str, Any]]:
    """One service request (a list of one, as GeoReport v2 answers); 404 if there is none."""
    case = store.case(request_id)
    if case is None:
        raise HTTPException(404, f"no service request {request_id}")
    return [service_request(case)]
