"""e2e: a gas leak under a gas-company manhole: an 事件 case that runs to 结案 with its audit."""

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.collector.cases.codes import conditions
from lifeline.collector.ingest import parse_mqtt_url
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DeviceInfo,
    Message,
    Severity,
    encode,
    topic,
)
from tests.services import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ASSET = "3101040111000042"  # area 310104, 大类 01, 小类 11 (燃气井盖), serial 000042
ASSETS_YAML = f"""
assets:
  - code: "{ASSET}"
    name: 燃气阀门井
    owner: 城市燃气公司
    maintainer: 区排水所
    grid: "31010400100201"
    address: 漕溪北路 88 号
    lon: 121.437
    lat: 31.187
    datum: CGCS2000
    devices: [gas-7]
"""


def poll(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached; last value {value!r}")
        time.sleep(0.1)


@pytest.fixture
def collector(tmp_path: Path, mqtt_url: str, topic_root: str) -> Iterator[httpx.Client]:
    (tmp_path / "assets.yaml").write_text(ASSETS_YAML, encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifeline.collector", "run", "--mqtt", mqtt_url,
         "--db", f"sqlite:///{tmp_path}/c.db", "--http", f"127.0.0.1:{port}",
         "--root", topic_root, "--client-id", f"c-{uuid.uuid4().hex[:8]}",
         "--assets", str(tmp_path / "assets.yaml"),
         "--bootstrap-key-file", str(tmp_path / "admin.key")],
        cwd=REPO,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def ready() -> int:
        try:
            return client.get("/readyz").status_code
        except httpx.HTTPError:
            return 0

    try:
        poll(ready, lambda code: code == 200)
        client.headers["X-API-Key"] = (tmp_path / "admin.key").read_text().strip()
        yield client
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        client.close()


def test_gas_leak_becomes_a_case_that_is_dispatched_verified_and_closed(
    collector: httpx.Client, mqtt_url: str, topic_root: str
) -> None:
    # The well's owner is a registered department: routing hands cases to no other.
    put = collector.put("/api/v1/departments/GAS", json={"name": "城市燃气公司"})
    assert put.status_code == 201, put.text
    host, port = parse_mqtt_url(mqtt_url)
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, f"gw-{uuid.uuid4().hex[:8]}")
    gw.connect(host, port)
    gw.loop_start()

    def send(msg: Message) -> None:
        gw.publish(
            topic("xuhui", "gw-9", msg.kind, root=topic_root), encode(msg), qos=1
        ).wait_for_publish(10)

    now = int(time.time() * 1000)
    send(
        Birth("gw-9", "s1", 0, now, "1.0", "h", (DeviceInfo("gas-7", "gas_detector", "gas", True),))
    )

    def alarm(seq: int, aid: str, kind: str, state: AlarmState, value: float) -> AlarmBatch:
        sev = Severity.CRITICAL if kind == "hihi" else Severity.HIGH
        ev = AlarmEvent(aid, "gas-7", "gas_concentration", kind, sev, state,
                        int(time.time() * 1000), value, 20, f"combustible gas {kind}")  # fmt: skip
        return AlarmBatch("gw-9", "s1", seq, int(time.time() * 1000), (ev,), epoch="e1")

    send(alarm(1, "gw-9:1", "hi", AlarmState.ACTIVE_UNACKED, 27.5))
    cases = poll(lambda: collector.get("/api/v1/cases").json()["items"], lambda c: len(c) == 1)
    case = cases[0]
    assert case["state"] == "派遣"
    # A leak seen at the gas well is the 事件 0403 located at the well, dispatched to its owner.
    assert (case["kind"], case["subcategory"], case["asset"], case["department"]) == (
        "事件", "0403", ASSET, "城市燃气公司",
    )  # fmt: skip
    assert case["urgency"] == "urgent"
    assert case["deadline_ms"] - case["timed_from_ms"] == 3_600_000  # 0403 urgent: 1 h
    assert case["colour"] == "green"
    assert case["case_no"].startswith("310104")  # the well's area code
    assert len(case["case_no"]) == 18
    no = case["case_no"]

    # The leak worsens before anyone arrives: the worse alarm attaches and upgrades the case.
    send(alarm(2, "gw-9:2", "hihi", AlarmState.ACTIVE_UNACKED, 55.0))
    poll(lambda: collector.get(f"/api/v1/cases/{no}").json(), lambda c: c["repeats"] == 1)
    assert collector.get(f"/api/v1/cases/{no}").json()["severity"] == 1
    r = collector.post(
        f"/api/v1/cases/{no}/actions", json={"action": "start", "actor": "燃气抢修班"}
    )
    assert r.status_code == 200, r.text

    # Both alarms clear: evidence on the case, which stays with the crew until their 反馈.
    send(alarm(3, "gw-9:2", "hihi", AlarmState.NORMAL, 30.0))
    send(alarm(4, "gw-9:1", "hi", AlarmState.NORMAL, 3.0))
    case = poll(
        lambda: collector.get(f"/api/v1/cases/{no}").json(),
        lambda c: all(not a["active"] for a in c["alarms"]),
    )
    assert case["state"] == "处置"
    assert len(collector.get("/api/v1/cases").json()["items"]) == 1
    for action, actor, note in (
        ("feedback", "燃气抢修班", "已关阀，更换密封圈"),  # the 处置意见
        ("verify", "受理员 李四", ""),
        ("check", "监督员 张三", "复测无泄漏"),  # 核查通过, which 结案 needs
    ):
        body = {"action": action, "actor": actor, "note": note}
        r = collector.post(f"/api/v1/cases/{no}/actions", json=body)
        assert r.status_code == 200, r.text

    refused = collector.post(
        f"/api/v1/cases/{no}/actions", json={"action": "dispatch", "actor": "x"}
    )
    assert refused.status_code == 409
    assert "cannot dispatch a case in state 核查" in refused.json()["detail"]

    r = collector.post(
        f"/api/v1/cases/{no}/actions",
        json={"action": "close", "actor": "值班长 王五", "note": "现场核查无泄漏"},
    )
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["closure"]) == ("结案", "处置完成")

    audit = collector.get(f"/api/v1/cases/{no}").json()["audit"]
    # The audit names the key that acted (here the bootstrap admin's) and keeps the name the
    # client gave apart, as `on_behalf_of`.
    steps = [
        (a["actor"], a["on_behalf_of"], a["action"], a["from_state"], a["to_state"]) for a in audit
    ]
    admin = "bootstrap-admin"
    assert steps == [
        ("system", "", "report", None, "受理"),
        ("system", "", "accept", "受理", "立案"),
        ("system", "", "dispatch", "立案", "派遣"),
        ("system", "", "attach", "派遣", "派遣"),
        ("system", "", "upgrade", "派遣", "派遣"),
        (admin, "燃气抢修班", "start", "派遣", "处置"),
        ("system", "", "alarm_cleared", "处置", "处置"),
        ("system", "", "alarm_cleared", "处置", "处置"),
        (admin, "燃气抢修班", "feedback", "处置", "反馈"),
        (admin, "受理员 李四", "verify", "反馈", "核查"),
        (admin, "监督员 张三", "check", "核查", "核查"),
        (admin, "值班长 王五", "close", "核查", "结案"),
    ]
    met = conditions("事件", "0403")[1]
    assert audit[-1]["note"] == f"结案: 处置完成, 结案条件: {met}: 现场核查无泄漏"
    assert all(a["ts_ms"] >= now for a in audit)
    gw.disconnect()
    gw.loop_stop()
