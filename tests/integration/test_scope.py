"""A 专业部门 key sees only its own, everywhere, on SQLite and PostgreSQL: two departments each
with a gateway, devices, readings, an alarm that became its case and a work order; the key of
one walks every GET route of the app and must see its own and none of the other's. The walk
is driven by the app's own list of routes, so a new route without a scope decision here fails."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Route

from lifeline.collector.api import create_app
from lifeline.collector.api.routes.console import vendored
from lifeline.collector.assets import Asset
from lifeline.collector.cases.workorders import open_work_order
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Accepted, Role
from lifeline.collector.runtime import Runtime
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DataBatch,
    DeviceInfo,
    Kind,
    Quality,
    Record,
    Severity,
    Status,
    TopicParts,
)
from tests.integration.test_api_http import (
    add_keys,
    fast_config,
    now_ms,
    problem_of,
    serve,
    wait_for,
)

pytestmark = pytest.mark.integration

GAS, LAMPS = ("GAS", "燃气集团"), ("LAMPS", "路灯管理所")
GRID = "31010400100201"
SEQ = itertools.count(1)


@dataclass(frozen=True)
class Side:
    """What one department has: its gateway, the device of its case, another device on the
    case's asset, the device of its work order, a device of its gateway that is none of
    these, its asset, alarm, case and work order."""

    gateway: str
    device: str
    cover: str
    pump: str
    spare: str
    asset: str
    alarm: str
    case: str
    order: str

    def subjects(self) -> set[str]:
        """The event subjects that are this side's."""
        devices = {f"{self.gateway}/{d}" for d in (self.device, self.cover, self.pump)}
        return {self.gateway, self.alarm, self.case, self.order} | devices


def _write(runtime: Runtime, gateway: str, kind: Kind, message: Any) -> None:
    runtime.store.write([Accepted(TopicParts("xuhui", gateway, kind), message)], now_ms())


def seed_side(runtime: Runtime, tag: str, serial: int, owner: str) -> Side:
    """A gateway `gw-{tag}` with four devices, two on an asset: readings of the first, an alarm
    on it that becomes a case of `owner` (the asset's owner: the routing table's 部件先属主),
    and a work order of `owner` on the third."""
    store = runtime.store
    gw, dev, cover = f"gw-{tag}", f"gas-{tag}", f"cover-{tag}"
    pump, spare = f"pump-{tag}", f"spare-{tag}"
    asset = f"310104011100{serial:04d}"
    store.upsert_assets([
        Asset(code=asset, name="燃气阀门井", owner=owner, grid=GRID, address=f"{tag} 路 1 号",
              lon=121.437, lat=31.187, devices=(dev, cover))
    ])  # fmt: skip
    devices = tuple(DeviceInfo(d, "gas_detector", "gas", True) for d in (dev, cover, pump, spare))
    _write(runtime, gw, Kind.BIRTH, Birth(gw, "s1", 0, now_ms(), "1.0", "h", devices))
    counters: dict[str, int | float] = {"polls": 40, **{f"errors.{d.device}": 1 for d in devices}}
    _write(runtime, gw, Kind.STATUS, Status(gw, "s1", 0, now_ms(), counters=counters))
    t0 = now_ms() - 60_000
    records = tuple(
        Record(dev, "gas_concentration", t0 + i * 1000, float(i), Quality.GOOD) for i in range(5)
    )
    _write(runtime, gw, Kind.DATA, DataBatch(gw, "s1", next(SEQ), now_ms(), records, epoch="e1"))
    alarm = f"{gw}:e1:1"
    state = AlarmState.ACTIVE_UNACKED
    ev = AlarmEvent(alarm, dev, "gas_concentration", "hi", Severity.HIGH, state, now_ms(),
                    27.5, 20, "combustible gas hi")  # fmt: skip
    _write(runtime, gw, Kind.ALARM, AlarmBatch(gw, "s1", next(SEQ), now_ms(), (ev,), epoch="e1"))
    runtime.after_commit()
    link = wait_for(lambda: store.link(alarm))
    order_no = f"YW{serial:014d}"
    order, audit = open_work_order(
        order_no=order_no, problem="comm_loss", title="设备通信中断", gateway=gw, device=pump,
        asset=None, severity=3, urgent=False, department=owner, allowed_ms=86_400_000,
        now_ms=now_ms(),
    )  # fmt: skip
    store.save_work_order(order, [audit], expect_state=None)
    return Side(gw, dev, cover, pump, spare, asset, alarm, link.ref, order_no)


@dataclass
class World:
    """A running collector with both departments' things and the keys to read them."""

    base: str
    http: httpx.Client
    runtime: Runtime
    app: FastAPI
    keys: dict[Role, str]
    own: dict[str, str]  # the headers of a key scoped to GAS
    token: str  # that key itself
    a: Side  # GAS's
    b: Side  # LAMPS's

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(self.base + path, params=params, headers=self.own)

    def events(self, role: Role | None = None) -> list[dict[str, Any]]:
        headers = self.own if role is None else {"Authorization": f"Bearer {self.keys[role]}"}
        r = self.http.get(f"{self.base}/api/v1/events", params={"limit": 500}, headers=headers)
        items: list[dict[str, Any]] = r.json()["items"]
        return items


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = (
        f"sqlite:///{tmp_path}/scope.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    runtime = Runtime(fast_config(url))
    runtime.start()
    try:
        store = runtime.store
        for code, name in (GAS, LAMPS):
            store.put_department(code, name, now_ms())
        keys = add_keys(runtime)
        token = new_token()
        store.create_api_key(
            "燃气集团 抢修班", Role.DEPARTMENT.value, digest(token), display_prefix(token),
            now_ms(), (GAS[0],),
        )  # fmt: skip
        a = seed_side(runtime, "a", 1, GAS[1])
        b = seed_side(runtime, "b", 2, LAMPS[1])
        app = create_app(runtime.config, runtime)
        with serve(app) as base, httpx.Client(timeout=10) as http:
            w = World(base, http, runtime, app, keys, {"X-API-Key": token}, token, a, b)
            # Everything of both sides is in the event log before anyone reads it.
            wait_for(
                lambda: a.subjects() | b.subjects() <= {e["subject"] for e in w.events(Role.LEADER)}
            )
            yield w
    finally:
        runtime.close()


# --- what a GAS key must get from each GET route ------------------------------------------------


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, (r.request.url, r.text)
    return r.json()


def only(w: World, path: str, field: str, want: set[str], **params: Any) -> None:
    body = ok(w.get(path, **params))
    items = body["items"] if isinstance(body, dict) else body
    assert {i[field] for i in items} == want, (path, items)


def own_and_not_theirs(
    path: str, mine: Callable[[Side], dict[str, str]]
) -> Callable[[World], None]:
    """A route of one object: 200 for GAS's, 404 for LAMPS's (existence does not leak)."""

    def check(w: World) -> None:
        ok(w.get(path.format(**mine(w.a))))
        problem_of(w.get(path.format(**mine(w.b))), 404)

    return check


def refused(path: str) -> Callable[[World], None]:
    """A route a department key may not use at all: 403, whatever it names."""

    def check(w: World) -> None:
        detail = problem_of(w.get(path), 403)["detail"]
        assert "department" in detail, detail

    return check


def public(path: str, status: int = 200) -> Callable[[World], None]:
    """A route that answers a department key as it answers no key at all."""

    def check(w: World) -> None:
        with_key = w.http.get(w.base + path, headers=w.own, follow_redirects=False)
        without = w.http.get(w.base + path, follow_redirects=False)
        assert with_key.status_code == without.status_code == status, (path, with_key.text)
        assert with_key.content == without.content, path

    return check


def check_events(w: World) -> None:
    mine = w.events()
    assert {e["subject"] for e in mine} == w.a.subjects()  # all of its own, none of theirs
    leader = {e["subject"] for e in w.events(Role.LEADER)}
    assert w.b.subjects() <= leader
    assert {e["type"] for e in mine} >= {"case.opened", "alarm.raised", "work_order.opened"}
    # Paging on with last_id: a short page moves past the events of others, not back to them.
    page = ok(w.get("/api/v1/events", after=0, limit=500))
    assert page["last_id"] >= max(e["id"] for e in w.events(Role.LEADER))
    assert ok(w.get("/api/v1/events", after=page["last_id"]))["items"] == []


def check_stats(w: World) -> None:
    now = now_ms()
    body = ok(w.get("/api/v1/stats", **{"from": now - 3_600_000, "to": now + 60_000}))
    assert [g["key"] for g in body["groups"]] == [GAS[1]]
    assert body["total"]["reported"] == 1
    leader = w.http.get(
        f"{w.base}/api/v1/stats",
        params={"from": now - 3_600_000, "to": now + 60_000},
        headers={"Authorization": f"Bearer {w.keys[Role.LEADER]}"},
    ).json()
    assert {GAS[1], LAMPS[1]} <= {g["key"] for g in leader["groups"]}


def check_gateway(w: World) -> None:
    own_and_not_theirs("/api/v1/gateways/{gateway}", lambda s: {"gateway": s.gateway})(w)
    detail = ok(w.get(f"/api/v1/gateways/{w.a.gateway}"))
    mine = {w.a.device, w.a.cover, w.a.pump}  # not its spare
    assert {d["device"] for d in detail["devices"]} == mine
    assert set(detail["counters"]) == {"polls"} | {f"errors.{d}" for d in mine}


def check_gateways(w: World) -> None:
    only(w, "/api/v1/gateways", "gateway", {w.a.gateway})
    (listed,) = ok(w.get("/api/v1/gateways"))
    mine = {w.a.device, w.a.cover, w.a.pump}
    assert set(listed["counters"]) == {"polls"} | {f"errors.{d}" for d in mine}
    leader = {"Authorization": f"Bearer {w.keys[Role.LEADER]}"}
    every = w.http.get(f"{w.base}/api/v1/gateways/{w.a.gateway}", headers=leader).json()
    assert f"errors.{w.a.spare}" in every["counters"]  # an unscoped key sees the whole gateway


def check_gateway_device(w: World) -> None:
    path = "/api/v1/gateways/{gateway}/devices/{device}"
    own_and_not_theirs(path, lambda s: {"gateway": s.gateway, "device": s.device})(w)
    problem_of(w.get(f"/api/v1/gateways/{w.a.gateway}/devices/{w.a.spare}"), 404)


def check_readings(w: World) -> None:
    assert len(ok(w.get("/api/v1/readings", device=w.a.device))) == 5
    problem_of(w.get("/api/v1/readings", device=w.b.device), 404)
    problem_of(w.get("/api/v1/readings", device=w.b.device, gateway=w.b.gateway), 404)


def check_series(w: World) -> None:
    window = {"point": "gas_concentration", "since": now_ms() - 3_600_000, "until": now_ms()}
    assert ok(w.get("/api/v1/series", device=w.a.device, **window))
    problem_of(w.get("/api/v1/series", device=w.b.device, **window), 404)


def check_latest(w: World) -> None:
    assert {r["device"] for r in ok(w.get("/api/v1/latest"))} == {w.a.device}
    problem_of(w.get("/api/v1/latest", device=w.b.device), 404)


def check_online_rate(w: World) -> None:
    assert ok(w.get("/api/v1/stats/online-rate"))["devices"] == 3  # its case's, asset's, order's


def check_me(w: World) -> None:
    me = ok(w.get("/api/v1/me"))
    assert (me["role"], me["departments"], me["acknowledge"]) == ("department", ["GAS"], False)


def check_readyz(w: World) -> None:
    assert set(w.get("/readyz").json()) == {"status"}  # what the public learns, no more


def check_departments(w: World) -> None:
    assert {d["code"] for d in ok(w.get("/api/v1/departments"))} >= {GAS[0], LAMPS[0]}


def the_stream(w: World) -> None:
    pass  # an endless response: test_the_event_stream_of_a_department_key_is_its_own


def vendor_path() -> str:
    return "/console/vendor/" + next(iter(vendored()))


GET_ROUTES: dict[str, Callable[[World], None]] = {
    # its own work, filtered
    "/api/v1/cases": lambda w: only(w, "/api/v1/cases", "case_no", {w.a.case}),
    "/api/v1/cases/{case_no}": own_and_not_theirs(
        "/api/v1/cases/{case_no}", lambda s: {"case_no": s.case}
    ),
    "/api/v1/alarms": lambda w: only(w, "/api/v1/alarms", "alarm_id", {w.a.alarm}),
    "/api/v1/alarms/{alarm_id}": own_and_not_theirs(
        "/api/v1/alarms/{alarm_id}", lambda s: {"alarm_id": s.alarm}
    ),
    "/api/v1/work-orders": lambda w: only(w, "/api/v1/work-orders", "order_no", {w.a.order}),
    "/api/v1/work-orders/{order_no}": own_and_not_theirs(
        "/api/v1/work-orders/{order_no}", lambda s: {"order_no": s.order}
    ),
    "/api/v1/events": check_events,
    "/api/v1/events/stream": the_stream,
    "/api/v1/stats": check_stats,
    "/api/v1/stats/online-rate": check_online_rate,
    "/api/v1/gateways": check_gateways,
    "/api/v1/gateways/{gateway}": check_gateway,
    "/api/v1/devices": lambda w: only(
        w, "/api/v1/devices", "device", {w.a.device, w.a.cover, w.a.pump}
    ),
    "/api/v1/devices/{device}": own_and_not_theirs(
        "/api/v1/devices/{device}", lambda s: {"device": s.device}
    ),
    "/api/v1/gateways/{gateway}/devices/{device}": check_gateway_device,
    "/api/v1/assets": lambda w: only(w, "/api/v1/assets", "code", {w.a.asset}),
    "/api/v1/assets/{code}": own_and_not_theirs(
        "/api/v1/assets/{code}", lambda s: {"code": s.asset}
    ),
    "/api/v1/readings": check_readings,
    "/api/v1/series": check_series,
    "/api/v1/latest": check_latest,
    # reference data, the same for every key
    "/api/v1/me": check_me,
    "/api/v1/departments": check_departments,
    "/api/v1/profiles": lambda w: ok(w.get("/api/v1/profiles")),
    "/api/v1/grids": lambda w: ok(w.get("/api/v1/grids")),
    # the technical side of the platform: not a department's business
    "/api/v1/dead-letters": refused("/api/v1/dead-letters"),
    "/api/v1/gateways/{gateway}/commands/{command_id}": refused(
        "/api/v1/gateways/gw-a/commands/" + "0" * 32
    ),
    "/api/v1/keys": refused("/api/v1/keys"),
    "/api/v1/webhooks": refused("/api/v1/webhooks"),
    "/api/v1/webhooks/{hook_id}": refused("/api/v1/webhooks/1"),
    "/api/v1/webhooks/{hook_id}/deliveries": refused("/api/v1/webhooks/1/deliveries"),
    "/metrics": refused("/metrics"),
    "/readyz": check_readyz,
    # public: the same as without a key (GeoReport v2 reads are the city's public face)
    "/healthz": public("/healthz"),
    "/": public("/", 307),
    "/console": public("/console"),
    "/console/config.json": public("/console/config.json"),
    "/console/{name}": public("/console/console.js"),
    "/console/vendor/{folder}/{name}": lambda w: public(vendor_path())(w),
    "/docs": public("/docs"),
    "/openapi.json": public("/openapi.json"),
    "/open311/v2/discovery.{fmt}": public("/open311/v2/discovery.json"),
    "/open311/v2/services.{fmt}": public("/open311/v2/services.json"),
    "/open311/v2/services/{code}.{fmt}": public("/open311/v2/services/0403.json"),
    "/open311/v2/requests.{fmt}": public("/open311/v2/requests.json"),
    "/open311/v2/requests/{request_id}.{fmt}": lambda w: public(
        f"/open311/v2/requests/{w.a.case}.json"
    )(w),
    "/open311/v2/tokens/{token}.{fmt}": public("/open311/v2/tokens/nope.json", 404),
}
# The one write a reporter key makes: its key travels in the form (api_key), not a header.
REPORT = ("POST", "/open311/v2/requests.{fmt}")
# The writes a department key may make; every other one answers it 403.
DEPARTMENT_WRITES = {
    ("POST", "/api/v1/cases/{case_no}/actions"),  # its own cases: tests/integration/test_duties.py
    # 接单 and 完工 of the work orders it maintains: tests/integration/test_duties.py
    ("POST", "/api/v1/work-orders/{order_no}/actions"),
    REPORT,  # refused too, but by the form's api_key: test_a_reporter_key_gets_what_no_key_gets
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        inner = getattr(route, "original_router", None)  # an included router
        for r in inner.routes if inner is not None else [route]:
            assert isinstance(r, Route), r  # a mount would need walking too
            found |= {(m, r.path) for m in r.methods or () if m != "HEAD"}
    return found


def test_a_department_key_sees_its_own_and_none_of_the_others_on_every_route(
    world: World,
) -> None:
    routes = app_routes(world.app)
    gets = {path for method, path in routes if method == "GET"}
    # A new GET route must be given its scope decision above (and in docs/integration.md).
    assert gets == set(GET_ROUTES), gets ^ set(GET_ROUTES)
    for check in GET_ROUTES.values():
        check(world)
    values = {"case_no": world.a.case, "code": "3101040111000001", "fmt": "json"}
    for method, path in sorted(routes - {("GET", p) for p in gets} - DEPARTMENT_WRITES):
        url = world.base + path.format_map(_AnyValue(values))
        r = world.http.request(method, url, json={}, headers=world.own)
        assert r.status_code == 403, (method, path, r.text)


def test_a_reporter_key_gets_what_no_key_gets_and_posts_reports_only(world: World) -> None:
    reporter = world.keys[Role.REPORTER]
    values = {
        "case_no": world.a.case, "alarm_id": world.a.alarm, "order_no": world.a.order,
        "gateway": world.a.gateway, "device": world.a.device, "code": world.a.asset,
        "request_id": world.a.case, "fmt": "json", "name": "console.js",
    }  # fmt: skip
    for method, path in sorted(app_routes(world.app) - {REPORT}):
        url = world.base + path.format_map(_AnyValue(values))
        body: dict[str, Any] | None = {} if method != "GET" else None
        mine = world.http.request(method, url, json=body, headers={"X-API-Key": reporter})
        anyone = world.http.request(method, url, json=body)
        if mine.status_code == 403:  # where no key gets a 401
            assert anyone.status_code == 401, (method, path, anyone.text)
            assert "reporter key" in problem_of(mine, 403)["detail"], (method, path)
        else:  # a public answer: the same as without a key
            assert (mine.status_code, mine.content) == (anyone.status_code, anyone.content), path
    form = {"service_code": "0403", "lat": "30.27", "long": "120.14"}
    report = f"{world.base}/open311/v2/requests.json"
    posted = world.http.post(report, data={**form, "api_key": reporter})
    assert posted.status_code == 201, posted.text
    refused = world.http.post(report, data={**form, "api_key": world.token})  # a department's
    assert refused.status_code == 403, refused.text


class _AnyValue(dict[str, str]):
    """A path parameter nobody named: "1" (a valid id of every kind the routes take)."""

    def __missing__(self, key: str) -> str:
        return "1"


def read_frames(lines: Iterator[str], want: int) -> list[dict[str, str]]:
    """Read `want` SSE events (id, event, data) from the lines of an open stream."""
    got: list[dict[str, str]] = []
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if "id" in frame:
                got.append(frame)
                if len(got) == want:
                    return got
            frame = {}
        elif line.startswith(("id:", "event:", "data:")):
            name, _, value = line.partition(":")
            frame[name] = value.strip()
    raise AssertionError(f"stream ended after {len(got)} events")


def test_the_event_stream_of_a_department_key_is_its_own(world: World) -> None:
    own = world.events()
    url = f"{world.base}/api/v1/events/stream?after=0&api_key={world.token}"
    with world.http.stream("GET", url) as resp:
        lines = resp.iter_lines()
        history = read_frames(lines, len(own))
        assert [int(f["id"]) for f in history] == [e["id"] for e in own]
        # Live: a case action of the other department, then one of its own; only its own comes.
        shift_lead = {"Authorization": f"Bearer {world.keys[Role.SHIFT_LEAD]}"}
        for side in (world.b, world.a):
            r = world.http.post(
                f"{world.base}/api/v1/cases/{side.case}/actions",
                json={"action": "escalate"},
                headers=shift_lead,
            )
            assert r.status_code == 200, r.text
        world.runtime.event_pump.kick()
        (live,) = read_frames(lines, 1)
    doc = json.loads(live["data"])
    assert (doc["subject"], doc["data"]["action"]) == (world.a.case, "escalate")
