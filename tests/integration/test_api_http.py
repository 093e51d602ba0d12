"""The command-center API over HTTP against real stores: keys and roles, every endpoint, paging,
SSE resume, webhooks, hostile input."""

from __future__ import annotations

import base64
import contextlib
import http.server
import itertools
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from lifeline.collector.api import create_app
from lifeline.collector.assets import Asset
from lifeline.collector.cli import app as collector_cli
from lifeline.collector.ingest import IngestConfig
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Accepted, Rejected, Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.collector.webhooks import WebhookConfig, verify
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    Command,
    DataBatch,
    DeviceInfo,
    Kind,
    Quality,
    Record,
    Severity,
    TopicParts,
    decode,
    subscription,
)
from tests.services import free_port

pytestmark = pytest.mark.integration

ASSET = "3101040111000042"
GW = "gw-api"


def fast_config(db_url: str, ingest: IngestConfig | None = None) -> CollectorConfig:
    """A collector whose background passes run often, so tests wait little."""
    return CollectorConfig(
        db_url=db_url,
        ingest=ingest,
        events_poll_s=0.05,
        # the receivers of these tests are on loopback: the explicit allow-list lets them in
        webhooks=WebhookConfig(
            retry_base_s=0.05, poll_s=0.05, timeout_s=2, allow=("127.0.0.1/32",)
        ),
    )


SEQ = itertools.count(1)  # one durable seq counter for the test gateway, across databases


def raise_alarm(
    runtime: Runtime, aid: str, state: AlarmState, device: str = "gas-7", value: float = 27.5
) -> None:
    """Store an alarm transition as ingest would, then run the post-commit hook."""
    ev = AlarmEvent(aid, device, "gas_concentration", "hi", Severity.HIGH, state, now_ms(),
                    value, 20, "combustible gas hi")  # fmt: skip
    batch = AlarmBatch(GW, "s1", next(SEQ), now_ms(), (ev,), epoch="e1")
    runtime.store.write([Accepted(TopicParts("xuhui", GW, Kind.ALARM), batch)], now_ms())
    runtime.after_commit()


@dataclass
class Api:
    """A running app, its runtime and one key per role."""

    client: TestClient
    runtime: Runtime
    keys: dict[Role, str] = field(default_factory=dict)

    def h(self, role: Role = Role.VIEWER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def alarm(self, aid: str, state: AlarmState, device: str = "gas-7") -> None:
        raise_alarm(self.runtime, aid, state, device)


def now_ms() -> int:
    return int(time.time() * 1000)


def add_keys(runtime: Runtime) -> dict[Role, str]:
    keys = {}
    for role in Role:
        token = new_token()
        runtime.store.create_api_key(
            f"{role.value}-1", role.value, digest(token), display_prefix(token), now_ms()
        )
        keys[role] = token
    return keys


def seed(api: Api) -> None:
    """A gateway with a gas detector on a registered asset, some readings, an alarm."""
    store = api.runtime.store
    store.upsert_assets([
        Asset(code=ASSET, name="燃气阀门井", owner="城市燃气公司", grid="31010400100201",
              address="漕溪北路 88 号", lon=121.437, lat=31.187, devices=("gas-7",))
    ])  # fmt: skip
    birth = Birth(
        GW, "s1", 0, now_ms(), "1.0", "h", (DeviceInfo("gas-7", "gas_detector", "gas", True),)
    )
    store.write([Accepted(TopicParts("xuhui", GW, Kind.BIRTH), birth)], now_ms())
    t0 = now_ms() - 60_000
    records = tuple(
        Record("gas-7", "gas_concentration", t0 + i * 1000, float(i), Quality.GOOD)
        for i in range(30)
    )
    batch = DataBatch(GW, "s1", next(SEQ), now_ms(), records, epoch="e1")
    store.write(
        [
            Accepted(TopicParts("xuhui", GW, Kind.DATA), batch),
            Rejected("lifeline/x", b"\x01junk", "not msgpack", now_ms()),
        ],
        now_ms(),
    )
    api.alarm(f"{GW}:100", AlarmState.ACTIVE_UNACKED)


@contextlib.contextmanager
def running_api(db_url: str, ingest: IngestConfig | None = None) -> Iterator[Api]:
    app = create_app(fast_config(db_url, ingest))
    with TestClient(app) as client:
        runtime: Runtime = app.state.runtime
        yield Api(client, runtime, add_keys(runtime))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(f"sqlite:///{tmp_path}/api.db") as a:
        seed(a)
        yield a


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s; last {value!r}")
        time.sleep(0.02)


def problem_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# --- keys and roles ---------------------------------------------------------------------------

GETS = [
    "/api/v1/alarms",
    f"/api/v1/alarms/{GW}:100",
    "/api/v1/events",
    "/api/v1/events/stream",
    "/api/v1/cases",
    "/api/v1/gateways",
    f"/api/v1/gateways/{GW}",
    "/api/v1/devices",
    "/api/v1/devices/gas-7",
    "/api/v1/assets",
    f"/api/v1/assets/{ASSET}",
    "/api/v1/readings?device=gas-7",
    "/api/v1/latest",
    "/api/v1/dead-letters",
    "/api/v1/keys",
    "/api/v1/webhooks",
    "/metrics",
]


def test_every_endpoint_but_health_console_shell_and_open311_reads_needs_a_key(api: Api) -> None:
    for path in GETS:
        # Both ways of sending a key work, so the 401 names both (it named only Bearer).
        detail = problem_of(api.client.get(path), 401)["detail"]
        assert "X-API-Key: KEY" in detail, detail
        assert "Authorization: Bearer KEY" in detail, detail
        problem_of(api.client.get(path, headers={"X-API-Key": "llk_not-a-key"}), 401)
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200
    assert "<html" in api.client.get("/console").text
    # GeoReport v2 reads are anonymous, as the spec has it (tests/integration/test_open311.py)
    assert api.client.get("/open311/v2/requests.json").status_code == 200
    revoked = api.client.get("/api/v1/keys", headers=api.h(Role.ADMIN)).json()[0]["id"]
    assert (
        api.client.delete(f"/api/v1/keys/{revoked}", headers=api.h(Role.ADMIN)).status_code == 204
    )
    problem_of(api.client.get("/api/v1/alarms", headers=api.h(Role.VIEWER)), 401)


def test_x_api_key_header_works_as_well_as_bearer(api: Api) -> None:
    r = api.client.get("/api/v1/gateways", headers={"X-API-Key": api.keys[Role.VIEWER]})
    assert r.status_code == 200
    assert r.json()[0]["gateway"] == GW


WRITES: list[tuple[str, str, dict[str, Any] | None, Role]] = [
    ("POST", f"/api/v1/alarms/{GW}:100/ack", {"note": "seen"}, Role.OPERATOR),
    ("POST", f"/api/v1/gateways/{GW}/commands", {"name": "rebirth"}, Role.OPERATOR),
    ("POST", "/api/v1/keys", {"name": "x", "role": "viewer"}, Role.ADMIN),
    ("GET", "/api/v1/keys", None, Role.ADMIN),
    ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h", "events": ["*"]}, Role.ADMIN),
    ("GET", "/api/v1/webhooks", None, Role.ADMIN),
    ("PUT", f"/api/v1/assets/{ASSET}", {"code": ASSET, "owner": "燃气公司"}, Role.ADMIN),
    ("PUT", "/api/v1/devices/gas-9/asset", {"asset": ASSET}, Role.ADMIN),
]


def test_each_write_checks_the_role_and_roles_are_hierarchical(api: Api) -> None:
    # Case actions follow the duty matrix instead: tests/integration/test_duties.py walks it.
    for method, url, body, needed in WRITES:
        for role in Role:
            r = api.client.request(method, url, json=body, headers=api.h(role))
            if role.allows(needed):
                # Allowed: anything but an auth error (ack/commands answer 503 without MQTT).
                assert r.status_code not in (401, 403), (method, url, role, r.text)
            else:
                detail = problem_of(r, 403)["detail"]
                assert (needed.value if role is not Role.REPORTER else "reporter key") in detail


def test_a_case_action_is_audited_under_the_key_whatever_name_the_client_gives(
    api: Api,
) -> None:
    # Reproduced on main: a dispatcher key posted {"actor": "system"} and the audit showed the
    # action as taken by the system; any name was taken as given.
    (case,) = wait_for(lambda: api.client.get("/api/v1/cases", headers=api.h()).json()["items"])
    url = f"/api/v1/cases/{case['case_no']}/actions"
    problem_of(api.client.post(url, json={"action": "escalate"}, headers=api.h(Role.VIEWER)), 403)
    body = {"action": "escalate", "actor": "system", "note": "催办"}
    # `system` is reserved for the engine's own rows: refused as a name to act for.
    problem_of(api.client.post(url, json=body, headers=api.h(Role.SHIFT_LEAD)), 422)
    body["actor"] = "值班员张三"
    r = api.client.post(url, json=body, headers=api.h(Role.SHIFT_LEAD))
    assert r.status_code == 200, r.text
    audit = api.client.get(f"/api/v1/cases/{case['case_no']}", headers=api.h()).json()["audit"]
    keys = {
        k["name"]: k["id"] for k in api.client.get("/api/v1/keys", headers=api.h(Role.ADMIN)).json()
    }
    last = audit[-1]
    assert (last["actor"], last["role"], last["key_id"], last["on_behalf_of"]) == (
        "shift_lead-1",
        "shift_lead",
        keys["shift_lead-1"],
        "值班员张三",
    )
    assert (audit[0]["actor"], audit[0]["key_id"]) == ("system", None)  # the engine's own
    problem_of(api.client.post(url, json={"action": "dispatch"}, headers=api.h(Role.ADMIN)), 409)


def test_keys_are_stored_hashed_and_shown_once(api: Api, tmp_path: Path) -> None:
    created = api.client.post(
        "/api/v1/keys", json={"name": "大屏", "role": "viewer"}, headers=api.h(Role.ADMIN)
    ).json()
    token = created["key"]
    assert api.client.get("/api/v1/alarms", headers={"X-API-Key": token}).status_code == 200
    listed = api.client.get("/api/v1/keys", headers=api.h(Role.ADMIN)).text
    assert token not in listed
    assert created["prefix"] in listed
    raw = (tmp_path / "api.db").read_bytes() + (tmp_path / "api.db-wal").read_bytes()
    assert token.encode() not in raw
    assert digest(token).encode() in raw


# --- every endpoint with data -------------------------------------------------------------------


def test_every_endpoint_answers_with_the_seeded_district(api: Api) -> None:
    c, h = api.client, api.h()
    alarms = c.get("/api/v1/alarms?state=active&severity=2&asset=" + ASSET, headers=h).json()
    (alarm,) = alarms["items"]
    assert alarm["alarm_id"] == f"{GW}:100"
    assert alarm["asset"] == ASSET
    assert c.get(f"/api/v1/alarms/{GW}:100", headers=h).json()["state"] == "active_unacked"
    problem_of(c.get(f"/api/v1/alarms/{GW}:999", headers=h), 404)
    assert c.get("/api/v1/alarms?state=normal", headers=h).json()["items"] == []
    events = wait_for(lambda: c.get("/api/v1/events?types=alarm.*", headers=h).json()["items"])
    assert events[0]["type"] == "alarm.raised"
    assert events[0]["data"]["alarm_id"] == f"{GW}:100"
    # A gas leak seen at a gas well is an 事件 (0403 燃气管道破裂) at the well, not a 0111 部件.
    (case,) = wait_for(lambda: c.get("/api/v1/cases?subcategory=0403", headers=h).json()["items"])
    assert (case["kind"], case["asset"]) == ("事件", ASSET)
    assert case["subcategory_name"] == "燃气管道破裂"
    (snapshot,) = case["alarms"]
    assert (snapshot["alarm_id"], snapshot["value"], snapshot["limit"], snapshot["unit"]) == (
        f"{GW}:100",
        27.5,
        20,
        "%LEL",
    )
    assert case["location"] == {
        "lon": 121.437,
        "lat": 31.187,
        "datum": "CGCS2000",
        "address": "漕溪北路 88 号",
        "source": "asset",
    }
    assert c.get("/api/v1/cases?grid=nowhere", headers=h).json()["items"] == []
    assert c.get("/api/v1/cases?overdue=true", headers=h).json()["items"] == []
    assert len(c.get("/api/v1/cases?overdue=false&open_only=true", headers=h).json()["items"]) == 1
    dept = case["department"]
    assert c.get("/api/v1/cases", params={"department": dept}, headers=h).json()["items"]
    detail = c.get(f"/api/v1/cases/{case['case_no']}", headers=h).json()
    assert [a["action"] for a in detail["audit"]][:2] == ["report", "accept"]
    gw = c.get(f"/api/v1/gateways/{GW}", headers=h).json()
    assert gw["status"] == "online"
    assert gw["devices"][0]["device"] == "gas-7"
    dev = c.get("/api/v1/devices/gas-7", headers=h).json()
    assert dev["asset"] == ASSET
    assert dev["latest"][0]["value"] == 29.0
    asset = c.get(f"/api/v1/assets/{ASSET}", headers=h).json()
    assert asset["devices"][0]["status"] == "online"
    assert len(c.get("/api/v1/readings?device=gas-7&limit=10", headers=h).json()) == 10
    t0 = now_ms() - 120_000
    series = c.get(
        f"/api/v1/series?device=gas-7&point=gas_concentration&since={t0}&until={now_ms()}&bucket_ms=60000",
        headers=h,
    ).json()
    assert sum(b["count"] for b in series) == 30
    assert c.get("/api/v1/dead-letters", headers=h).json()["count"] == 1
    services = c.get("/open311/v2/services.json", headers=h).json()
    assert {"0111", "0403"} <= {s["service_code"] for s in services}
    (req,) = c.get("/open311/v2/requests.json?service_code=0403&status=open", headers=h).json()
    assert req["service_request_id"] == case["case_no"]
    assert req["lat"] == 31.187
    assert req["requested_datetime"].endswith("+08:00")
    one = c.get(f"/open311/v2/requests/{case['case_no']}.json", headers=h).json()
    assert one == [req]
    assert c.get("/open311/v2/requests.json?status=closed", headers=h).json() == []
    metrics = c.get("/metrics", headers=h).text
    assert "lifeline_dead_letters 1" in metrics
    assert 'lifeline_open_cases{state="派遣"} 1' in metrics
    assert "lifeline_sse_clients 0" in metrics


def test_admin_binds_a_device_and_registers_an_asset(api: Api) -> None:
    c, h = api.client, api.h(Role.ADMIN)
    other = "3101040118000007"
    r = c.put(f"/api/v1/assets/{other}", json={"code": other, "owner": "路灯所"}, headers=h)
    assert r.status_code == 200
    assert (
        c.put("/api/v1/devices/lamp-1/asset", json={"asset": other}, headers=h).status_code == 200
    )
    problem_of(c.put("/api/v1/devices/lamp-1/asset", json={"asset": "3" * 16}, headers=h), 404)
    problem_of(c.put(f"/api/v1/assets/{other}", json={"code": ASSET, "owner": "x"}, headers=h), 422)


# --- pagination -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_alarm_pages_have_no_gaps_or_repeats_while_alarms_arrive(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path}/p.db"
    )
    with running_api(url) as a:
        for i in range(60):
            a.alarm(f"{GW}:{i}", AlarmState.ACTIVE_UNACKED, device=f"gas-{i % 5}")
        a.runtime.event_pump.run_once()
        before = {
            x["alarm_id"]
            for x in a.client.get("/api/v1/alarms?limit=500", headers=a.h()).json()["items"]
        }
        assert len(before) == 60
        stop = threading.Event()

        def insert_more() -> None:
            i = 1000
            while not stop.is_set():
                a.alarm(f"{GW}:{i}", AlarmState.ACTIVE_UNACKED, device="gas-new")
                a.runtime.event_pump.run_once()
                i += 1

        writer = threading.Thread(target=insert_more)
        writer.start()
        seen: list[str] = []
        cursor = None
        try:
            while True:
                params: dict[str, Any] = {"limit": 7}
                if cursor:
                    params["cursor"] = cursor
                page = a.client.get("/api/v1/alarms", params=params, headers=a.h()).json()
                seen += [x["alarm_id"] for x in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        finally:
            stop.set()
            writer.join()
        assert len(seen) == len(set(seen)), "an alarm was returned twice"
        assert before <= set(seen), f"missing {sorted(before - set(seen))}"


def test_case_pages_are_keyset_cursors(api: Api) -> None:
    gas = tuple(DeviceInfo(f"gas-x{i}", "gas_detector", "gas", True) for i in range(5))
    birth = Birth(GW, "s2", 0, now_ms(), "1.0", "h", gas)
    api.runtime.store.write([Accepted(TopicParts("xuhui", GW, Kind.BIRTH), birth)], now_ms())
    for i in range(5):
        api.alarm(f"{GW}:{200 + i}", AlarmState.ACTIVE_UNACKED, device=f"gas-x{i}")
    wait_for(lambda: len(api.client.get("/api/v1/cases", headers=api.h()).json()["items"]) == 6)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/api/v1/cases", params=params, headers=api.h()).json()
        seen += [c["case_no"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 6
    problem_of(api.client.get("/api/v1/cases?cursor=%%%", headers=api.h()), 400)


# --- SSE ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` on a real uvicorn server in a thread (lifespan included)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def read_sse(resp: httpx.Response, want: int) -> list[dict[str, Any]]:
    """Read `want` events (id, type, data) from an open SSE response."""
    got: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    for line in resp.iter_lines():
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


@contextlib.contextmanager
def live_collector(url: str, ingest: IngestConfig | None = None) -> Iterator[tuple[str, Runtime]]:
    """A started runtime served over real HTTP; yields (base URL, runtime)."""
    runtime = Runtime(fast_config(url, ingest))
    runtime.start()
    try:
        with serve(create_app(runtime.config, runtime)) as base:
            yield base, runtime
    finally:
        runtime.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sse_resumes_from_last_event_id_across_a_disconnect_and_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path}/s.db"
    )
    with live_collector(url) as (base, runtime), httpx.Client(timeout=10) as http:
        key = add_keys(runtime)[Role.VIEWER]
        stream = f"{base}/api/v1/events/stream?types=alarm.*&api_key={key}"
        with http.stream("GET", stream) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            for i in range(5):
                raise_alarm(runtime, f"{GW}:{i}", AlarmState.ACTIVE_UNACKED, device=f"d{i}")
            first = read_sse(resp, 5)
        # Disconnected: these happen while nobody listens.
        for i in range(5, 12):
            raise_alarm(runtime, f"{GW}:{i}", AlarmState.ACTIVE_UNACKED, device=f"d{i}")
        headers = {"Last-Event-ID": first[-1]["id"], "X-API-Key": key}
        with http.stream(
            "GET", f"{base}/api/v1/events/stream?types=alarm.*", headers=headers
        ) as resp:
            second = read_sse(resp, 7)
    # The collector restarts on the same database; the client resumes where it stopped.
    with live_collector(url) as (base, runtime), httpx.Client(timeout=10) as http:
        raise_alarm(runtime, f"{GW}:99", AlarmState.ACTIVE_UNACKED, device="late")
        headers = {"Last-Event-ID": second[-1]["id"], "Authorization": f"Bearer {key}"}
        # (alarm.* only: these unknown devices' alarms also open 未分类 cases, case.* events)
        with http.stream(
            "GET", f"{base}/api/v1/events/stream?types=alarm.*", headers=headers
        ) as resp:
            third = read_sse(resp, 1)
    ids = [int(f["id"]) for f in first + second + third]
    assert ids == sorted(ids)
    assert len(set(ids)) == 13
    names = [json.loads(f["data"])["data"]["alarm_id"] for f in first + second + third]
    assert names == [f"{GW}:{i}" for i in range(12)] + [f"{GW}:99"]


# --- webhooks -------------------------------------------------------------------------------------


@contextlib.contextmanager
def receiver(fail_first: int) -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    """A local endpoint that answers 500 to its first `fail_first` requests, then 204."""
    got: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
    calls = itertools.count()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if next(calls) < fail_first:
                self.send_response(500)
            else:
                got.put((dict(self.headers.items()), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_deliveries_are_signed_and_retried_with_backoff(api: Api) -> None:
    with receiver(fail_first=2) as (url, got):
        hook = api.client.post(
            "/api/v1/webhooks",
            json={"url": url, "events": ["alarm.*"], "description": "指挥中心"},
            headers=api.h(Role.ADMIN),
        ).json()
        assert hook["secret"].startswith("whsec_")
        api.alarm(f"{GW}:300", AlarmState.ACTIVE_UNACKED, device="gas-7")
        headers, body = got.get(timeout=20)
    event = json.loads(body)
    assert event["type"] == "alarm.raised"
    assert event["data"]["alarm_id"] == f"{GW}:300"
    assert headers["Lifeline-Event-Id"] == str(event["id"])
    signature = headers["Lifeline-Signature"]
    assert verify(hook["secret"], signature, body, time.time())
    assert not verify(hook["secret"], signature, body + b" ", time.time())
    assert not verify("whsec_other", signature, body, time.time())
    assert not verify(hook["secret"], signature, body, time.time() + 3600)  # replayed later
    deliveries = wait_for(
        lambda: [
            d
            for d in api.client.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries", headers=api.h(Role.ADMIN)
            ).json()
            if d["status"] == "delivered"
        ]
    )
    assert deliveries[0]["attempts"] == 3
    assert deliveries[0]["response_code"] == 204
    assert "lifeline_webhook_failures_total 2" in api.client.get("/metrics", headers=api.h()).text
    r = api.client.delete(f"/api/v1/webhooks/{hook['id']}", headers=api.h(Role.ADMIN))
    assert r.status_code == 204
    problem_of(api.client.get(f"/api/v1/webhooks/{hook['id']}", headers=api.h(Role.ADMIN)), 404)


def test_a_dead_webhook_endpoint_does_not_hold_up_events(api: Api) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    api.client.post(
        "/api/v1/webhooks", json={"url": dead, "events": ["*"]}, headers=api.h(Role.ADMIN)
    )
    before = api.runtime.store.last_event_id()
    for i in range(20):
        api.alarm(f"{GW}:{400 + i}", AlarmState.ACTIVE_UNACKED, device="gas-7")
    # Every event is logged at once while the endpoint keeps failing in its own thread.
    wait_for(lambda: api.runtime.store.last_event_id() >= before + 20, timeout=5)
    wait_for(lambda: api.runtime.webhooks.failures >= 1)


# --- hostile input ------------------------------------------------------------------------------

HOSTILE: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/alarms?limit=100000", None),
    ("GET", "/api/v1/alarms?limit=-1", None),
    ("GET", "/api/v1/alarms?since=99999999999999999999999", None),
    ("GET", "/api/v1/alarms?state=burning", None),
    ("GET", "/api/v1/alarms?severity=9", None),
    ("GET", "/api/v1/alarms?cursor=not-base64!!", None),
    ("GET", "/api/v1/alarms?cursor=" + "QQ" * 50, None),
    ("GET", "/api/v1/alarms?gateway=%00", None),
    ("GET", "/api/v1/alarms?device=" + "x" * 5000, None),
    ("GET", "/api/v1/alarms/%00", None),
    ("GET", "/api/v1/cases?state=nonsense", None),
    ("GET", "/api/v1/cases?subcategory=1' OR '1'='1", None),
    ("GET", "/api/v1/events?types=alarm.*,../../etc", None),
    ("GET", "/api/v1/events/stream", None),  # no key at all
    ("GET", "/api/v1/readings?device=gas-7&limit=10000000", None),
    ("GET", "/api/v1/series?device=gas-7&point=p&since=10&until=5", None),
    (
        "GET",
        "/api/v1/series?device=gas-7&point=p&since=0&until=9007199254740992&bucket_ms=1000",
        None,
    ),
    ("POST", "/api/v1/cases/nope/actions", {"action": "start"}),
    ("POST", "/api/v1/cases/nope/actions", {"action": "fly"}),
    ("POST", "/api/v1/cases/nope/actions", "not json"),
    ("POST", "/api/v1/keys", {"name": "x", "role": "root"}),
    ("POST", "/api/v1/keys", {"name": "a\u0000b", "role": "viewer"}),
    ("POST", "/api/v1/keys", {"name": "x" * 70_000, "role": "viewer"}),
    ("POST", "/api/v1/webhooks", {"url": "file:///etc/passwd", "events": ["*"]}),
    ("POST", "/api/v1/webhooks", {"url": "http://x/h", "events": ["everything"]}),
    ("PUT", "/api/v1/assets/123", {"code": "123", "owner": "x"}),
    ("DELETE", "/api/v1/keys/99999999999999999999", None),
]


def test_hostile_requests_get_4xx_problem_json_never_500(api: Api) -> None:
    for method, path, body in HOSTILE:
        kwargs: dict[str, Any] = {"headers": api.h(Role.ADMIN)}
        if path.endswith("/stream"):
            kwargs = {}
        if isinstance(body, str):
            kwargs["content"] = body
            kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        r = api.client.request(method, path, **kwargs)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", (method, path)
        assert r.json()["detail"], (method, path)
    assert problem_of(
        api.client.post("/api/v1/keys", content=b"{" * 70_000, headers=api.h(Role.ADMIN)), 413
    )


ARABIC_AREA, FULLWIDTH_AREA = "٣٣٠١٠٦", "３３０１０６"  # 330106: Arabic-Indic, fullwidth digits
# Every code in a path or query is ASCII digits: in another script's digits it is malformed
# (422), not looked up and not found (404), nor a list that happens to be empty (200).
FOREIGN_DIGITS = [f"/api/v1/assets/{area}0111000001" for area in (ARABIC_AREA, FULLWIDTH_AREA)] + [
    f"/api/v1/assets?grid={ARABIC_AREA}00100101",
    "/api/v1/cases?subcategory=٠١١١",
    "/api/v1/cases?subcategory=０１１１",
    f"/api/v1/cases/{ARABIC_AREA}202611300001",
    f"/api/v1/cases/{FULLWIDTH_AREA}202611300001",
    f"/api/v1/work-orders/YW{ARABIC_AREA}202611300001",
]


def test_codes_in_other_scripts_digits_are_malformed_not_unknown(api: Api) -> None:
    for path in FOREIGN_DIGITS:
        problem_of(api.client.get(path, headers=api.h(Role.ADMIN)), 422)
    put = api.client.put(
        f"/api/v1/assets/{FULLWIDTH_AREA}0111000001",
        json={"code": f"{FULLWIDTH_AREA}0111000001", "owner": "燃气集团"},
        headers=api.h(Role.ADMIN),
    )
    problem_of(put, 422)
    # ² passed str.isdigit(), then int() raised: a 500 where the client sent a bad number.
    cursor = base64.urlsafe_b64encode("²".encode()).decode().rstrip("=")
    problem_of(api.client.get(f"/api/v1/alarms?cursor={cursor}", headers=api.h()), 400)
    stream = api.client.get(
        "/api/v1/events/stream",
        headers={**api.h(), "Last-Event-ID": b"\xb2"},  # ² in Latin-1
    )
    problem_of(stream, 400)
    # GeoReport v2 answers in its own error format: 400 for a malformed query parameter, and
    # 404 for a resource id no request can have (its errors keep 400 for a missing one).
    for path, code in (
        (f"/open311/v2/requests/{ARABIC_AREA}202611300001.json", 404),
        (f"/open311/v2/requests.json?service_request_id={FULLWIDTH_AREA}202611300001", 400),
        ("/open311/v2/requests.json?service_code=٠٤٠٣", 400),
    ):
        r = api.client.get(path)
        assert r.status_code == code, (path, r.status_code, r.text)
        assert r.json()[0]["code"] == code, path


# --- acknowledge through MQTT -------------------------------------------------------------------


def test_ack_is_sent_to_the_gateway_as_a_wire_command(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    commands: queue.Queue[Command] = queue.Queue()
    url = urlparse(mqtt_url)
    gw = mqtt.Client(CallbackAPIVersion.VERSION2)
    gw.on_message = lambda _c, _u, m: commands.put(decode(m.payload))  # type: ignore[arg-type]
    gw.connect(url.hostname or "127.0.0.1", url.port or 1883)
    gw.subscribe(subscription(Kind.CMD, root=topic_root), qos=1)
    gw.loop_start()
    ingest = IngestConfig(mqtt_url=mqtt_url, root=topic_root, client_id=f"c-{tmp_path.name}")
    try:
        with running_api(f"sqlite:///{tmp_path}/a.db", ingest) as a:
            seed(a)
            assert a.runtime.ingest is not None
            assert a.runtime.ingest.wait_ready(10)
            r = a.client.post(
                f"/api/v1/alarms/{GW}:100/ack",
                json={"note": "派人去看"},
                headers=a.h(Role.OPERATOR),
            )
            assert r.status_code == 202, r.text
            cmd = commands.get(timeout=10)
            assert isinstance(cmd, Command)
            assert cmd.gateway == GW
            assert (cmd.name, cmd.command_id) == ("ack", r.json()["command_id"])
            assert cmd.args == {"alarm_id": f"{GW}:100", "who": "operator-1", "note": "派人去看"}
            reply = a.client.get(r.json()["reply"], headers=a.h()).json()
            assert reply == {"state": "pending"}
            # Issue 17: a note the wire cannot carry was accepted (202) and its reply stayed
            # pending for ever; now every limit of the wire is the API's too.
            ack = f"/api/v1/alarms/{GW}:100/ack"
            for body in ({"note": "x" * 257}, {"note": "bell \x07"}):
                bad = a.client.post(ack, json=body, headers=a.h(Role.OPERATOR))
                assert problem_of(bad, 422)
            cmds = f"/api/v1/gateways/{GW}/commands"
            for args in ({"device": "d" * 300}, {"k" * 65: 1}):
                bad = a.client.post(cmds, json={"name": "write", "args": args},
                                    headers=a.h(Role.OPERATOR))  # fmt: skip
                assert problem_of(bad, 422)
                assert "the gateway could not read this command" in bad.json()["detail"]
            ok = a.client.post(cmds, json={"name": "rebirth"}, headers=a.h(Role.OPERATOR))
            assert ok.status_code == 202
            assert commands.get(timeout=10).name == "rebirth"  # nothing published in between
    finally:
        gw.loop_stop()
        gw.disconnect()


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_commands_but_migrate_and_run_refuse_a_database_without_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A typo in --db (or no --db in another folder) silently made a new, empty database and a
    # key the real collector rejects.
    monkeypatch.chdir(tmp_path)
    assets = Path(__file__).parents[2] / "config" / "assets" / "demo.yaml"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a SQLite file, but not a collector's
    for db, where in [
        ([], tmp_path / "lifeline-collector.db"),
        (["--db", f"sqlite:///{tmp_path}/typo.db"], tmp_path / "typo.db"),
        (["--db", f"sqlite:///{empty}"], empty),
    ]:
        for args in (
            ["keys", "create", "--role", "admin", "--name", "x"],
            ["keys", "list"],
            ["keys", "revoke", "1"],
            ["assets", "import", str(assets)],
        ):
            r = CliRunner().invoke(collector_cli, [*args, *db])
            assert r.exit_code == 1, (args, db, r.output)
            assert f"no collector database at {where}" in r.stderr, r.stderr
            assert "lifeline collector migrate --db" in r.stderr
        assert not (tmp_path / "lifeline-collector.db").exists()
        assert not (tmp_path / "typo.db").exists()
    assert empty.stat().st_size == 0
    missing = CliRunner().invoke(collector_cli, ["keys", "list", "--db", "sqlite:///no/dir.db"])
    assert missing.exit_code == 1
    assert f"no folder {tmp_path / 'no'} for the database" in missing.stderr


def test_cli_creates_a_key_printed_once_and_the_bootstrap_file_is_private(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/k.db"
    assert CliRunner().invoke(collector_cli, ["migrate", "--db", db]).exit_code == 0
    result = CliRunner().invoke(
        collector_cli, ["keys", "create", "--role", "dispatcher", "--name", "值班长", "--db", db]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("llk_")
    bad = CliRunner().invoke(
        collector_cli, ["keys", "create", "--role", "root", "--name", "x", "--db", db]
    )
    assert bad.exit_code == 2
    listed = CliRunner().invoke(collector_cli, ["keys", "list", "--db", db]).stdout
    assert "dispatcher" in listed
    assert token not in listed
    runtime = Runtime(fast_config(db))
    try:
        from lifeline.collector.keys import bootstrap_admin_key

        path = tmp_path / "admin.key"
        assert bootstrap_admin_key(runtime.store, path, now_ms())
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert not bootstrap_admin_key(runtime.store, tmp_path / "again.key", now_ms())
        admin = path.read_text().strip()
        with TestClient(create_app(runtime.config, runtime)) as client:
            assert client.get("/api/v1/keys", headers={"X-API-Key": admin}).status_code == 200
            r = client.get("/api/v1/keys", headers={"X-API-Key": token})
            assert r.status_code == 403
    finally:
        runtime.close()
