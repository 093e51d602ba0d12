"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2): cases as service requests, so
standard city tools read them, and citizens' reports (POST requests) as 公众 cases.

Reads are anonymous, as the spec has it; a report needs an `api_key` of the reporting app
(role `reporter`, 公众上报应用). Every resource answers
as `.json` or `.xml` (the format suffix); errors are the spec's `[{code, description}]` (XML
`<errors><error>`), not problem+json. service_code is the case's 小类; status is open or
closed (结案 and 作废 are closed); lat/long and address come from the case's place (its
asset, or its device's install location, else a point inside its 单元网格); times are ISO 8601
with the working calendar's UTC offset (+08:00 by default). The endpoint serves one
jurisdiction, the collector's district: `jurisdiction_id`, optional as the spec has it for a
single-jurisdiction endpoint, is refused (400) when it names another.
"""

import json
import logging
import math
import re
import secrets
import threading
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta, timezone
from email.message import Message
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.paging import CASE_NO_PATTERN
from lifeline.collector.api.schemas import ServiceOut, ServiceRequestOut
from lifeline.collector.cases.codes import EVENT_NAMES, subcategory_name
from lifeline.collector.cases.duties import OPEN311_REPORTERS
from lifeline.collector.cases.routing import RouteKind, Routing
from lifeline.collector.cases.workflow import (
    COMPONENT,
    EVENT,
    UNSEEN,
    Case,
    CaseState,
    Place,
)
from lifeline.collector.grids import GridError, GridMap
from lifeline.collector.keys import digest
from lifeline.collector.models import ApiKey
from lifeline.collector.text import check_text
from lifeline.wire.codes import is_subcategory

log = logging.getLogger(__name__)

SPEC = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-30T00:00:00Z"  # when this façade's behaviour last changed (discovery)
WINDOW = timedelta(days=90)  # the spec's default window and the widest one a query may span
MAX_REQUESTS = 1000  # the spec's cap on one answer
MAX_ID = 64  # the longest token looked up (a longer one is not found), and ids in messages
CLOSED = {CaseState.CLOSED.value, CaseState.VOIDED.value}
OPEN_STATES = sorted(s.value for s in CaseState if s.value not in CLOSED)
FORMATS = {"json": "application/json", "xml": "text/xml"}
_CASE_NO = re.compile(CASE_NO_PATTERN)
# Characters XML 1.0 cannot carry: dropped rather than written into an unparseable document.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Open311Error(Exception):
    """A request the spec's error format answers: HTTP `code`, a one-line description and
    any headers the answer needs (Retry-After on a 429)."""

    def __init__(self, code: int, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.headers = headers or {}


def _xml(tag: str, value: Any) -> ET.Element:
    el = ET.Element(tag)
    if isinstance(value, dict):
        for k, v in value.items():
            el.append(_xml(k, v))
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = _NOT_XML.sub("", str(value))
    return el


def render(fmt: str, body: Any, root: str, item: str, status: int = 200) -> Response:
    """`body` (a dict, or a list of dicts each named `item` under `root`) as JSON or as the
    spec's XML (UTF-8 with its declaration); `fmt` is `json` or `xml`."""
    if fmt != "xml":
        return JSONResponse(body, status_code=status)
    if isinstance(body, list):
        top = ET.Element(root)
        top.extend(_xml(item, b) for b in body)
    else:
        top = _xml(root, body)
    text = ET.tostring(top, encoding="utf-8", xml_declaration=True)
    return Response(text, status_code=status, media_type="text/xml; charset=utf-8")


def format_of(path: str) -> str:
    """`xml` if `path` asks for XML (its suffix), else `json`."""
    return "xml" if path.endswith(".xml") else "json"


def error(fmt: str, code: int, description: str, headers: dict[str, str] | None = None) -> Response:
    """The spec's error answer: `[{code, description}]`, or `<errors><error>` in XML, with
    `headers` added."""
    answer = render(fmt, [{"code": code, "description": description}], "errors", "error", code)
    answer.headers.update(headers or {})
    return answer


class Open311Route(APIRoute):
    """Answers this router's errors in the spec's format instead of problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            fmt = format_of(request.url.path)
            try:
                return await handler(request)
            except Open311Error as e:
                return error(fmt, e.code, e.description, e.headers)
            except HTTPException as e:
                return error(fmt, e.status_code, str(e.detail))
            except RequestValidationError as e:
                where = "; ".join(
                    f"{'.'.join(str(p) for p in x.get('loc', ()))}: {x.get('msg')}"
                    for x in e.errors()
                )
                return error(fmt, 400, where or "invalid request")

        return handle


def check_jurisdiction(runtime: RuntimeDep, given: str | None) -> None:
    """Raise Open311Error 400 unless `given` (a request's jurisdiction_id, None if absent) is
    the jurisdiction this endpoint serves: the collector's district, its 6-digit area code
    (GB/T 2260). GeoReport v2's jurisdiction_id names the city a request is for; an endpoint
    serving one may go without it, but a request naming another city is not for us."""
    if given is None:
        return
    served = runtime.cases.routing.district
    if given != served:
        where = f"this endpoint serves {served} only" if served else "no jurisdiction is set here"
        raise Open311Error(
            400,
            f"jurisdiction_id {given[:MAX_ID]!r} is not served: {where} (omit it, or give"
            " the collector's district area code)",
        )


def _jurisdiction(
    runtime: RuntimeDep,
    jurisdiction_id: Annotated[str | None, Query(max_length=200)] = None,
) -> None:
    check_jurisdiction(runtime, jurisdiction_id)


router = APIRouter(
    prefix="/open311/v2",
    tags=["open311"],
    route_class=Open311Route,
    dependencies=[Depends(_jurisdiction)],
)


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Open311Error(404, f"unknown format {fmt[:20]!r}: use .json or .xml")
    return fmt


def _tz(runtime: RuntimeDep) -> timezone:
    return timezone(timedelta(hours=runtime.cases.calendar.utc_offset_hours))


def _iso(ms: int | None, tz: timezone) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz).isoformat()


def _parse_iso(text: str | None, name: str, tz: timezone) -> int | None:
    """An ISO 8601 date-time as ms; one without an offset is read in the city's time zone."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise Open311Error(400, f"{name} must be an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return int(dt.timestamp() * 1000)


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:.1f}".removesuffix(".0")


def service_notice(case: Case, dept: str) -> str:
    """Where the case stands, in words a citizen reads (e.g. 已派遣至区水务局，2小时内处置);
    `dept` is the name of its 主办 department."""
    state = case.state
    if state in (CaseState.DISPATCHED, CaseState.HANDLING):
        verb = "已派遣至" if state is CaseState.DISPATCHED else "处置中："
        limit = f"，{_hours(case.allowed_ms)}小时内处置" if case.allowed_ms else ""
        return f"{verb}{dept}{limit}"
    if state is CaseState.VOIDED:
        return f"已作废（{case.void_reason}）" if case.void_reason else "已作废"
    if state is CaseState.REPORTED:  # 核实, then 受理, then 立案
        if case.received_by is not None:
            return "已受理，待立案"
        if case.source in UNSEEN and case.confirmed_by is None:
            return "已上报，待核实"
        return "已上报，待受理"
    return {
        CaseState.REGISTERED: "已立案，待派遣",
        CaseState.FEEDBACK: f"{dept}已反馈处置完毕，待核查",
        CaseState.VERIFYING: "核查中",
        CaseState.CLOSED: "已结案",
        CaseState.PARKED: "已挂账，暂缓处置",
    }[state]


def status_notes(case: Case) -> str:
    """The case's state, with the department's 处置意见 once it reported the work done (反馈,
    核查, 结案 处置完成): what a citizen wants to read about their report."""
    shown = (CaseState.FEEDBACK, CaseState.VERIFYING, CaseState.CLOSED)
    if case.disposal_note and case.state in shown and case.closure != "误报":
        return f"{case.state.value}：{case.disposal_note}"
    return case.state.value


def service_request(
    case: Case, tz: timezone, names: dict[str, str], grids: GridMap | None
) -> dict[str, Any]:
    """One case as a GeoReport v2 service request; times with the offset of `tz`, its
    department by name from `names` (department code -> name; an unregistered one as is).
    A case without an address answers its 单元网格's 街道 and 社区 (from `grids`); one without
    a point, a point inside that grid, so clients that map requests get lat/long whenever the
    case has a known grid. A report given by address alone has no grid (nothing geocodes it)
    and answers null lat/long. A closed request expects nothing: expected_datetime is null."""
    closed = case.state.value in CLOSED
    dept = names.get(case.department, case.department)
    lon, lat, address = case.location.lon, case.location.lat, case.location.address
    grid = grids.get(case.grid) if case.grid and grids is not None else None
    if grid is not None and grids is not None:
        address = address or f"{grid.street}{grid.community}"
        inside = grids.point(grid.code)
        if (lon is None or lat is None) and inside is not None:
            lon, lat = inside
    return {
        "service_request_id": case.case_no,
        "status": "closed" if closed else "open",
        "status_notes": status_notes(case),
        "service_name": subcategory_name(case.kind, case.subcategory),
        "service_code": case.subcategory,
        "description": case.title,
        "agency_responsible": dept,
        "service_notice": service_notice(case, dept),
        "requested_datetime": _iso(case.created_ms, tz),
        "updated_datetime": _iso(case.updated_ms, tz),
        "expected_datetime": (
            _iso(case.deadline_ms, tz) if case.timed_from_ms and not closed else None
        ),
        "address": address,
        "address_id": case.asset,
        "zipcode": None,
        "lat": lat,
        "long": lon,
        "media_url": case.media_url or None,
    }


def service_kinds(routing: Routing) -> dict[str, str]:
    """The services: every 小类 the routing table names, with its kind (部件 or 事件)."""
    # The deadlines table names 小类 of both kinds (their 大类 numbers overlap): a code an
    # event route uses, or a 事件 code Lifeline knows, is an 事件 service; the rest 部件.
    events = {r.subcategory for r in routing.routes if r.kind is RouteKind.EVENT}
    codes = {c: EVENT for c in events if c}
    for c in routing.deadlines:
        if c != "default" and c not in codes:
            codes[c] = EVENT if c in EVENT_NAMES else COMPONENT
    return codes


def _services(runtime: RuntimeDep) -> list[dict[str, Any]]:
    codes = service_kinds(runtime.cases.routing)
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


def _list(text: str | None, name: str, ok: Callable[[str], bool]) -> list[str]:
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    bad = [s for s in items if not ok(s)]
    if bad:
        raise Open311Error(400, f"{name} has an unknown value {bad[0][:20]!r}")
    return items


def _window(since: int | None, until: int | None, now: int) -> tuple[int, int | None]:
    """[from, to) of a query: 90 days back from now by default, and never wider than 90 days."""
    span = int(WINDOW.total_seconds() * 1000)
    if since is None and until is None:
        return now - span, None
    if since is None:
        assert until is not None
        return until - span, until
    if until is None:
        return since, since + span
    if until <= since:
        raise Open311Error(400, "end_date must be after start_date")
    if until - since > span:
        raise Open311Error(400, "start_date to end_date may not span more than 90 days")
    return since, until


@router.get("/discovery.{fmt}")
def discovery(runtime: RuntimeDep, fmt: str) -> Response:
    """The spec's service discovery document: this endpoint, its formats and changeset. The
    endpoint's `url` is the configured `public_url` followed by /open311/v2, or the relative
    /open311/v2 without one — never built from the request's Host header, which any client
    sets (a cached discovery document would send others' apps to that host)."""
    base = f"{runtime.config.public_url or ''}{router.prefix}"
    endpoint = {
        "specification": SPEC,
        "url": base,
        "changeset": CHANGESET,
        "type": "production",
        "formats": list(FORMATS.values()),
    }
    body = {
        "changeset": CHANGESET,
        "contact": "the collector's operators",
        "key_service": "an API key from the collector's admin (POST /api/v1/keys)",
        "endpoints": [endpoint],
    }
    if _format(fmt) == "json":
        return JSONResponse(body)
    root = _xml("discovery", {k: v for k, v in body.items() if k != "endpoints"})
    endpoints = ET.SubElement(root, "endpoints")
    el = _xml("endpoint", {k: v for k, v in endpoint.items() if k != "formats"})
    formats = ET.SubElement(el, "formats")
    for f in FORMATS.values():
        ET.SubElement(formats, "format").text = f
    endpoints.append(el)
    text = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(text, media_type="text/xml; charset=utf-8")


@router.get("/services.{fmt}", response_model=list[ServiceOut])
def services(runtime: RuntimeDep, fmt: str) -> Response:
    """The service types: every 小类 the routing table names."""
    return render(_format(fmt), _services(runtime), "services", "service")


@router.get("/services/{code}.{fmt}")
def service_definition(runtime: RuntimeDep, code: str, fmt: str) -> Response:
    """One service's definition: it asks no attributes beyond the standard fields; 404 if
    the routing table names no such 小类."""
    fmt = _format(fmt)
    if code not in {s["service_code"] for s in _services(runtime)}:
        raise Open311Error(404, f"no service {code[:20]!r}")
    if fmt == "json":
        return JSONResponse({"service_code": code, "attributes": []})
    root = _xml("service_definition", {"service_code": code})
    ET.SubElement(root, "attributes")
    text = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(text, media_type="text/xml; charset=utf-8")


@router.get("/requests.{fmt}", response_model=list[ServiceRequestOut])
def requests(
    store: StoreDep,
    runtime: RuntimeDep,
    fmt: str,
    service_request_id: Annotated[str | None, Query(max_length=20_000)] = None,
    service_code: Annotated[str | None, Query(max_length=2000)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Service requests, newest first, at most 1 000. With `service_request_id` (a comma list)
    those requests, each once in the order first named, and no other filter; else by
    `service_code` and `status` (comma lists) and requested time in [start_date, end_date),
    the past 90 days by default, 90 days at most."""
    fmt, tz = _format(fmt), _tz(runtime)
    found: Sequence[Case]
    if service_request_id is not None:
        ids = _list(service_request_id, "service_request_id", lambda s: bool(_CASE_NO.fullmatch(s)))
        unique = list(dict.fromkeys(ids))[:MAX_REQUESTS]  # each once, in the order first named
        found = [c for c in (store.case(n) for n in unique) if c is not None]
    else:
        codes = _list(service_code, "service_code", is_subcategory)
        wanted = set(_list(status, "status", lambda s: s in ("open", "closed")))
        states = [] if wanted in (set(), {"open", "closed"}) else sorted(CLOSED)
        if wanted == {"open"}:
            states = OPEN_STATES
        since, until = _window(
            _parse_iso(start_date, "start_date", tz),
            _parse_iso(end_date, "end_date", tz),
            runtime.cases.now_ms(),
        )
        found = store.find_cases(
            states=states,
            subcategories=codes,
            created_from_ms=since,
            created_to_ms=until,
            limit=MAX_REQUESTS,
        )
    names = {d.code: d.name for d in store.departments()}
    body = [service_request(c, tz, names, runtime.cases.grids) for c in found]
    return render(fmt, body, "service_requests", "request")


@router.get("/requests/{request_id}.{fmt}", response_model=list[ServiceRequestOut])
def request(store: StoreDep, runtime: RuntimeDep, request_id: str, fmt: str) -> Response:
    """One service request (a list of one, as GeoReport v2 answers); 404 if there is none (an
    id no case can have is one of those: the spec's errors keep 400 for a missing parameter)."""
    fmt = _format(fmt)
    case = store.case(request_id) if _CASE_NO.fullmatch(request_id) else None
    if case is None:
        raise Open311Error(404, f"no service request {request_id[:MAX_ID]!r}")
    names = {d.code: d.name for d in store.departments()}
    body = [service_request(case, _tz(runtime), names, runtime.cases.grids)]
    return render(fmt, body, "service_requests", "request")


# --- citizen reports (POST requests) ------------------------------------------------------------

REPORTS_PER_KEY = 30  # reports one key may post in any REPORT_WINDOW_MS
REPORT_WINDOW_MS = 60_000
MAX_DESCRIPTION = 4000
_TEXT = {  # the contact and reference fields: (most characters, a pattern they must match)
    "email": (254, re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")),
    "phone": (32, re.compile(r"^\+?[0-9][0-9 ()\-]*$")),
    "first_name": (64, None),
    "last_name": (64, None),
    "device_id": (128, None),
    "account_id": (128, None),
    "address_string": (200, None),
}


_MAKING = threading.Lock()


class RateLimit:
    """At most `limit` reports per key within any `window_ms` (a sliding window, in memory:
    each collector process counts its own). One log line when a key starts being refused."""

    def __init__(self, limit: int = REPORTS_PER_KEY, window_ms: int = REPORT_WINDOW_MS) -> None:
        self.limit, self.window_ms = limit, window_ms
        self._seen: dict[int, deque[int]] = {}
        self._limited: set[int] = set()
        self._lock = threading.Lock()
        self.refused = 0  # reports refused since start

    def wait_ms(self, key: ApiKey, now_ms: int) -> int:
        """0, counting it, if `key` may post a report at `now_ms`; else the ms until it may
        (when the oldest report in its window leaves it), at least 1."""
        with self._lock:
            seen = self._seen.setdefault(key.id, deque())
            while seen and seen[0] <= now_ms - self.window_ms:
                seen.popleft()
            if len(seen) >= self.limit:
                self.refused += 1
                if key.id not in self._limited:
                    self._limited.add(key.id)
                    log.warning("Open311 key %r is over %d reports a minute", key.name, self.limit)
                return max(1, seen[0] + self.window_ms - now_ms)
            self._limited.discard(key.id)
            seen.append(now_ms)
            return 0


def limiter(request: Request) -> RateLimit:
    """This app's report rate limit (one per app, made on first use)."""
    state = request.app.state
    with _MAKING:
        if not hasattr(state, "open311_limit"):
            state.open311_limit = RateLimit()
    limiter: RateLimit = state.open311_limit
    return limiter


# A form's declared charset (its label, as the WHATWG Encoding Standard lists them) -> the
# codec that decodes it: UTF-8, and GBK / GB 2312 / GB 18030 that Chinese clients still send.
# The GBK labels decode as GB 18030, their superset, as browsers do.
CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "gb18030": "gb18030",
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "x-gbk": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
}


def form_charset(content_type: str) -> str:
    """The codec of a report's form from its Content-Type header: UTF-8 unless the header
    declares another charset of CHARSETS (GeoReport v2 assumes UTF-8). Raises Open311Error 400
    for a body that is not application/x-www-form-urlencoded, or a charset outside CHARSETS,
    naming it."""
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "application/x-www-form-urlencoded":
        raise Open311Error(400, "send the report as application/x-www-form-urlencoded")
    label = str(header.get_param("charset", "utf-8")).strip().lower()
    if label not in CHARSETS:
        raise Open311Error(
            400, f"charset {label[:40]!r} is not supported: send UTF-8 (or GBK, GB18030)"
        )
    return CHARSETS[label]


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Open311Error(400, f"{name} is given {len(values)} times")
    text = values[0].strip()
    try:
        check_text(text, name, multiline=name in ("description", "address_string"))
    except ValueError as exc:
        raise Open311Error(400, str(exc)) from None
    return text or None


def _coordinate(text: str | None, name: str, bound: float) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number of degrees") from None
    if not math.isfinite(value) or abs(value) > bound:
        raise Open311Error(400, f"{name} must be within ±{bound:g} degrees")
    return value


def _media_url(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) > 2000 or not re.match(r"^https?://[^\s/?#]+[^\s]*$", text):
        raise Open311Error(400, "media_url must be an http or https URL of at most 2000 characters")
    return text


def outside_service_area(grids: GridMap | None, lon: float, lat: float, datum: str) -> str:
    """Why (lon, lat) degrees in `datum` is no place this collector serves — a sentence for
    the error answer — or "" if it is served: inside the grid registry's service area
    (GridMap.serves: every 单元网格 with a margin of about 500 m). Without a grid registry
    every point in range is served (the district draws no boundary then). A datum outside
    wire.messages.DATUMS is explained the same way."""
    if grids is None:
        return ""
    try:
        if grids.serves(lon, lat, datum=datum):
            return ""
    except GridError as exc:
        return str(exc)
    return (
        f"the place ({lon:g}, {lat:g}) is outside the service area: it lies in none of the"
        " district's 单元网格 (nor within about 500 m of one); check lat/long (a report from"
        " another city goes to that city's platform)"
    )


def parse_report(form: dict[str, list[str]], services: dict[str, str]) -> dict[str, Any]:
    """A citizen's POST (its form fields, each a list of values) checked field by field:
    returns kind, subcategory, description, place, media_url and contact (a JSON object as
    text). `services` maps each service_code to its kind. Raises Open311Error 400 naming the
    first field that does not fit (missing, repeated, too long, out of range, not a URL)."""
    code = _one(form, "service_code")
    if code is None:
        raise Open311Error(400, "service_code is required")
    if code not in services:
        raise Open311Error(400, f"service_code {code[:20]!r} is no service (see services.json)")
    description = _one(form, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise Open311Error(400, f"description is over {MAX_DESCRIPTION} characters")
    fields: dict[str, str] = {}
    for name, (most, pattern) in _TEXT.items():
        value = _one(form, name)
        if value is None:
            continue
        if len(value) > most or (pattern is not None and not pattern.match(value)):
            raise Open311Error(400, f"{name} is not a valid value (at most {most} characters)")
        fields[name] = value
    lat = _coordinate(_one(form, "lat"), "lat", 90)
    lon = _coordinate(_one(form, "long"), "long", 180)
    address = fields.pop("address_string", "")
    if (lat is None) != (lon is None):
        raise Open311Error(400, "lat and long go together")
    if lat is None and not address:
        raise Open311Error(400, "a location is required: lat and long, or address_string")
    place = Place(lon=lon, lat=lat, datum="WGS84" if lat is not None else "", address=address,
                  source="report")  # fmt: skip
    return {
        "kind": services[code],
        "subcategory": code,
        "description": description or subcategory_name(services[code], code),
        "place": place,
        "media_url": _media_url(_one(form, "media_url")),
        "contact": json.dumps(fields, ensure_ascii=False) if fields else "",
    }


@router.post("/requests.{fmt}", status_code=201)
async def report(request: Request, runtime: RuntimeDep, fmt: str) -> Response:
    """A citizen's report (form-encoded, as the spec's POST Service Request): `api_key` (the
    reporting app's `reporter` key, or an admin's), `service_code`, `lat` and `long` or
    `address_string`, `description`, `media_url`, and the contact fields `email`, `phone`,
    `first_name`, `last_name`, `device_id`, `account_id`. Opens a 受理 case of source 公众
    that a 监督员 must 核实 before its 立案; answers 201 with its service_request_id and a
    token. 403 for a missing or invalid key or one of another role, 429 over 30 reports a
    minute per key, 400 for a field that does not fit."""
    fmt = _format(fmt)
    charset = form_charset(request.headers.get("content-type", ""))
    try:
        # The percent-escapes are bytes in the same charset: decoded strictly, never replaced.
        text = (await request.body()).decode(charset)
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=64,
            encoding=charset,
            errors="strict",
        )
    except UnicodeDecodeError:
        raise Open311Error(400, f"the form is not valid {charset}") from None
    except ValueError:
        raise Open311Error(400, "the form has too many fields (64 at most)") from None
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    token = _one(form, "api_key")
    store = runtime.store
    key = None
    if token is not None and len(token) <= 200:
        key = await run_in_threadpool(store.api_key_by_hash, digest(token))
    if key is None:
        raise Open311Error(403, "a valid api_key is required to post a report")
    if key.role not in OPEN311_REPORTERS:
        raise Open311Error(
            403,
            f"api_key {key.name!r} is a {key.role.value} key: reports take a reporter key"
            " (公众上报应用), made with `lifeline collector keys create --role reporter`",
        )
    check_jurisdiction(runtime, _one(form, "jurisdiction_id"))
    fields = parse_report(form, service_kinds(runtime.cases.routing))
    place: Place = fields["place"]
    if place.lon is not None and place.lat is not None:
        outside = outside_service_area(runtime.cases.grids, place.lon, place.lat, place.datum)
        if outside:
            raise Open311Error(400, outside)
    wait_ms = limiter(request).wait_ms(key, runtime.cases.now_ms())
    if wait_ms:
        raise Open311Error(
            429,
            f"over {REPORTS_PER_KEY} reports a minute for this api_key",
            {"Retry-After": str(math.ceil(wait_ms / 1000))},  # RFC 9110 §10.2.3: whole seconds
        )
    handle = secrets.token_urlsafe(16)
    case, _ = await run_in_threadpool(lambda: runtime.cases.report(**fields, token=handle, key=key))
    names = {d.code: d.name for d in await run_in_threadpool(store.departments)}
    body = {
        "service_request_id": case.case_no,
        "token": handle,
        "service_notice": service_notice(case, names.get(case.department, case.department)),
        "account_id": json.loads(case.contact).get("account_id") if case.contact else None,
    }
    return render(fmt, [body], "service_requests", "request", 201)


@router.get("/tokens/{token}.{fmt}")
def token_status(store: StoreDep, token: str, fmt: str) -> Response:
    """What became of a report by the token its POST answered: `[{token, service_request_id}]`
    (the case is numbered when it is made, so the id is there from the start); 404 if no
    report had this token (one longer than any token is none)."""
    fmt = _format(fmt)
    case = store.case_by_token(token) if len(token) <= MAX_ID else None
    if case is None:
        raise Open311Error(404, "no report has this token")
    body = [{"token": token, "service_request_id": case.case_no}]
    return render(fmt, body, "service_requests", "request")
