"""e2e through real processes: a methane leak under a gas company's manhole runs the case workflow.

firmware-sim (a manhole cover) -> gateway -> private broker -> collector on PostgreSQL -> HTTP API:
the leak raises an 事件 case at the well, dispatched to the well's owner with the routing
table's deadline; the leak clearing is evidence on the case, which still needs the
department's 反馈 and a 核查 before a dispatcher closes it (结案); the audit trail has every
step.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lifeline.broker import free_port
from lifeline.collector.cases.codes import conditions
from lifeline.demo import Child, http_json, spawn, start_simulator, wait_until
from lifeline.firmware_sim.control import SimControl

pytestmark = pytest.mark.e2e

ASSET = "3101040111000042"  # area 310104, 大类 01, 小类 11 (燃气井盖), serial 000042
GAS_COMPANY = "城市燃气公司"
DEVICE = "mh-001"
ASSETS_YAML = f"""
assets:
  - code: "{ASSET}"
    name: 燃气阀门井
    owner: {GAS_COMPANY}
    maintainer: 区排水所
    grid: "31010400100201"
    address: 漕溪北路 88 号
    lon: 121.437
    lat: 31.187
    datum: CGCS2000
    devices: [{DEVICE}]
"""


@pytest.fixture
def children(pg_url: str) -> Iterator[list[Child]]:
    """Processes to stop after the test; asks for the database first so it outlives them."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


def set_ch4(endpoints: dict[str, Any], value: float) -> None:
    """Pin the simulated cover's methane reading through the sim's control port."""

    async def pin() -> None:
        ctl = endpoints["control"]
        async with SimControl(ctl["host"], ctl["port"]) as sim:
            await sim.set_value(DEVICE, "ch4", value)

    asyncio.run(pin())


def test_gas_leak_case_is_dispatched_verified_and_closed_with_its_audit(
    pg_url: str,
    tmp_path: Path,
    mqtt_url: str,
    topic_root: str,
    children: list[Child],
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    endpoints = start_simulator("single-manhole", tmp_path, logs, children)
    (server,) = endpoints["servers"]

    assets_file = tmp_path / "assets.yaml"
    assets_file.write_text(ASSETS_YAML, encoding="utf-8")
    api = f"http://127.0.0.1:{free_port()}"
    children.append(
        spawn(
            "collector",
            [
                "collector",
                "run",
                "--mqtt",
                mqtt_url,
                "--root",
                topic_root,
                "--db",
                pg_url,
                "--http",
                api.removeprefix("http://"),
                "--client-id",
                f"col-{tmp_path.name}",
                "--assets",
                str(assets_file),
                "--bootstrap-key-file",
                str(tmp_path / "admin.key"),
            ],
            logs,
        )
    )
    wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
    admin = (tmp_path / "admin.key").read_text().strip()
    created = subprocess.run(
        [
            *(sys.executable, "-m", "lifeline", "collector", "keys", "create"),
            *("--role", "shift_lead", "--name", "值班长 张三", "--db", pg_url),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    shift_lead = created.stdout.strip()
    # The well's owner is a registered department: routing hands cases to no other.
    put = httpx.put(
        f"{api}/api/v1/departments/GAS", json={"name": GAS_COMPANY},
        headers={"X-API-Key": admin}, timeout=10,
    )  # fmt: skip
    assert put.status_code == 201, put.text

    conf = yaml.safe_load(
        (files("lifeline.config") / "examples" / "gateway-single.yaml").read_text()
    )
    conf["mqtt"] = {"url": mqtt_url, "root": topic_root}
    conf["buffer"]["path"] = str(tmp_path / "edge.sqlite")
    conf["buses"][0]["host"], conf["buses"][0]["port"] = server["host"], server["port"]
    (device,) = conf["buses"][0]["devices"]
    device["interval_s"] = 0.2
    device["asset"] = ASSET  # the gateway's binding agrees with the asset registry
    gw_file = tmp_path / "gateway.yaml"
    gw_file.write_text(yaml.safe_dump(conf, allow_unicode=True))
    children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
    wait_until(
        "the first reading at the API",
        lambda: http_json(f"{api}/api/v1/readings?device={DEVICE}&point=ch4&limit=1", admin),
        30,
        children,
    )

    # 30 %LEL is over the profile's 一级 limit (20, severity 1) and under 二级 (50).
    before_ms = int(time.time() * 1000)
    set_ch4(endpoints, 30.0)

    def cases() -> list[dict[str, Any]] | None:
        page = http_json(f"{api}/api/v1/cases", admin)
        return page["items"] if page else None

    (case,) = wait_until("a case for the leak", cases, 30, children)
    # The shipped routing table: methane at a gas well is the 事件 0403 (燃气管道破裂) located
    # at the well, auto-立案 and dispatched at once to the well's owner.
    assert case["state"] == "派遣"
    assert (case["kind"], case["subcategory"], case["asset"], case["device"]) == (
        "事件",
        "0403",
        ASSET,
        DEVICE,
    )
    assert case["department"] == GAS_COMPANY  # route says `department: owner`
    assert case["urgency"] == "urgent"  # severity 1 <= urgent_severity 2
    assert case["deadline_ms"] - case["timed_from_ms"] == 3_600_000  # 0403 urgent: 1 h
    assert case["colour"] == "green"
    assert (case["location"]["lon"], case["location"]["address"]) == (121.437, "漕溪北路 88 号")
    (snapshot,) = case["alarms"]
    assert (snapshot["point"], snapshot["unit"], snapshot["active"]) == ("ch4", "%LEL", True)
    no = case["case_no"]
    local_day = time.strftime("%Y%m%d", time.gmtime(case["created_ms"] / 1000 + 8 * 3600))
    assert no == f"310104{local_day}0001"  # the well's area code + local (UTC+8) date + serial

    set_ch4(endpoints, 0.5)
    cleared = wait_until(
        "the leak's alarm cleared on the case",
        lambda: (
            (c := http_json(f"{api}/api/v1/cases/{no}", admin))
            and not c["alarms"][0]["active"]
            and c
        ),
        30,
        children,
    )
    assert cleared["state"] == "派遣"  # evidence, not a step past 处置

    # Each step by the duty that owns it: the gas company's own key handles it (处置, 反馈 with
    # its 处置意见), the 受理员 sends it to 核查, the 监督员 finds it done (核查通过), the 值班长
    # (a key made by the CLI) closes it.
    with httpx.Client(base_url=api, headers={"X-API-Key": admin}, timeout=10) as client:
        body = {"name": "燃气公司 抢修班", "role": "department", "departments": ["GAS"]}
        crew = client.post("/api/v1/keys", json=body).json()["key"]
        intake = client.post("/api/v1/keys", json={"name": "受理员 李四", "role": "intake"})
        inspector = client.post("/api/v1/keys", json={"name": "监督员 王五", "role": "inspector"})
    for action, key, note in (
        ("start", crew, ""),
        ("feedback", crew, "已关阀，更换密封圈"),
        ("verify", intake.json()["key"], ""),
        ("check", inspector.json()["key"], "复测无泄漏"),
    ):
        moved = httpx.post(
            f"{api}/api/v1/cases/{no}/actions",
            json={"action": action, "note": note},
            headers={"X-API-Key": key},
            timeout=10,
        )
        assert moved.status_code == 200, moved.text
    with httpx.Client(base_url=api, headers={"X-API-Key": shift_lead}, timeout=10) as client:
        closed = client.post(
            f"/api/v1/cases/{no}/actions", json={"action": "close", "note": "现场核查无泄漏"}
        )
        assert closed.status_code == 200, closed.text
        assert (closed.json()["state"], closed.json()["closure"]) == ("结案", "处置完成")
        again = client.post(f"/api/v1/cases/{no}/actions", json={"action": "close"})
        assert again.status_code == 409, again.text
        final = client.get(f"/api/v1/cases/{no}")
    assert final.status_code == 200, final.text
    audit = final.json()["audit"]
    steps = [(a["actor"], a["action"], a["from_state"], a["to_state"]) for a in audit]
    assert steps == [
        ("system", "report", None, "受理"),
        ("system", "accept", "受理", "立案"),
        ("system", "dispatch", "立案", "派遣"),
        ("system", "alarm_cleared", "派遣", "派遣"),
        ("燃气公司 抢修班", "start", "派遣", "处置"),
        ("燃气公司 抢修班", "feedback", "处置", "反馈"),
        ("受理员 李四", "verify", "反馈", "核查"),
        ("监督员 王五", "check", "核查", "核查"),
        ("值班长 张三", "close", "核查", "结案"),
    ]
    assert [a["role"] for a in audit[4:]] == [
        "department", "department", "intake", "inspector", "shift_lead",
    ]  # fmt: skip
    met = conditions("事件", "0403")[1]
    assert audit[-1]["note"] == f"结案: 处置完成, 结案条件: {met}: 现场核查无泄漏"
    record = final.json()
    assert (record["disposal_note"], record["check_result"]) == ("已关阀，更换密封圈", "通过")
    stamps = [a["ts_ms"] for a in audit]
    assert stamps == sorted(stamps)
    assert stamps[0] >= before_ms
    assert final.json()["state"] == "结案"
