"""What an installer sees of a difficult device: `edge validate --plan`, `edge check`, `status`.

firmware-sim runs as its own process with a strict meter (exception 02 for its unmapped
registers) and an echoing RS-485 line behind a DTU; the commands run as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline.demo import spawn, wait_until
from lifeline.edge.buffer import DeviceHealth, GatewayHealth, Outbox

pytestmark = pytest.mark.integration


def lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from lifeline.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_plan_and_check_show_what_a_difficult_device_needs(tmp_path: Path) -> None:
    scenario = {
        "servers": [
            {"name": "dtu", "kind": "rtu_tcp", "baudrate": 38400, "devices": [
                {"id": "gas-m", "unit": 1, "profile": "gas_detector", "unmapped": "exception"},
                {"id": "tilt-e", "unit": 2, "profile": "tilt_sensor", "quirks": [{"kind": "echo"}]},
            ]},
        ],
    }  # fmt: skip
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    eps_file = tmp_path / "endpoints.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    sim = spawn(
        "sim",
        ["sim", "run", "--scenario", str(tmp_path / "scenario.yaml"), "--endpoints-file",
         str(eps_file)],
        logs,
    )  # fmt: skip
    try:
        eps = wait_until(
            "sim", lambda: eps_file.exists() and json.loads(eps_file.read_text()), 30, [sim]
        )
        server = eps["servers"][0]
        config: dict[str, Any] = {
            "gateway": "gw-q",
            "site": "s",
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [{"type": "rtu_over_tcp", "host": server["host"], "port": server["port"],
                       "devices": [{"id": "gas-m", "unit": 1, "profile": "gas_detector"},
                                   {"id": "tilt-e", "unit": 2, "profile": "tilt_sensor"}]}],
        }  # fmt: skip
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(config))
        check = lifeline("edge", "check", "--config", str(path), "--broker-timeout", "0.5")
        config["buses"][0]["devices"][0]["max_gap"] = 0
        config["buses"][0]["echo"] = True
        path.write_text(yaml.safe_dump(config))
        plan = lifeline("edge", "validate", "--config", str(path), "--plan")
        fixed = lifeline("edge", "check", "--config", str(path), "--broker-timeout", "0.5")
    finally:
        sim.stop()
    lines = {ln.split()[1]: ln for ln in check.stdout.splitlines() if ln.startswith("device")}
    assert "pass" in lines["gas-m"]
    assert "read as fc3 0+5, fc3 8+4" in lines["gas-m"]
    assert "merged read(s) refused and split" in lines["gas-m"]
    assert "pass" in lines["tilt-e"]
    assert "the line echoes requests (set echo: true on the bus)" in lines["tilt-e"]
    # With max_gap 0 and echo: true, the plan reads point by point and check has nothing to say.
    assert plan.returncode == 0, plan.stderr
    rows = [ln.split() for ln in plan.stdout.splitlines() if " gas-m " in ln]
    assert [r[5] for r in rows] == ["0+1", "1+1", "2+1", "3+1", "4+1", "8+4"]
    fixed_lines = [ln for ln in fixed.stdout.splitlines() if ln.startswith("device")]
    assert all("pass" in ln and "; " not in ln for ln in fixed_lines), fixed.stdout


def test_status_shows_a_degraded_device_with_its_timeout_count(tmp_path: Path) -> None:
    buf = tmp_path / "b.sqlite"
    outbox = Outbox(buf, "gw", "s1")
    degraded = DeviceHealth(
        "sl-1", "degraded", 1_700_000_000_000, 1_700_000_001_000, "", None,
        timeouts=7, detail="2 timeouts covered by retries",
    )  # fmt: skip
    online = DeviceHealth("sl-2", "online", 1_700_000_000_000, 1_700_000_001_000, "", None)
    outbox.health_source = lambda: GatewayHealth(
        os.getpid(), 1_700_000_000_000, 1_700_000_001_000, None, True, 1_700_000_000_000, "",
        None, None, (degraded, online),
    )  # fmt: skip
    outbox.save_health()
    outbox.close()
    table = lifeline("edge", "status", "--db", str(buf))
    as_json = json.loads(lifeline("edge", "status", "--db", str(buf), "--json").stdout)
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith("sl-1"))
    assert "degraded since" in row
    assert "2 timeouts covered by retries" in row
    devices = {d["device"]: d for d in as_json["devices"]}
    assert (devices["sl-1"]["timeouts_retried"], devices["sl-1"]["detail"]) == (
        7,
        "2 timeouts covered by retries",
    )
    assert (devices["sl-2"]["timeouts_retried"], devices["sl-2"]["detail"]) == (0, None)
