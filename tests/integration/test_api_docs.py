"""docs/integration.md: every code block marked `test` runs against a live collector."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lifeline.collector.api import create_app
from lifeline.collector.assets import Asset
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Accepted, Role
from lifeline.collector.runtime import Runtime
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DeviceInfo,
    Kind,
    Severity,
    TopicParts,
)
from tests.integration.test_api_http import GW, fast_config, now_ms, raise_alarm, serve

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
COVER = "3101040111000077"
BLOCK = re.compile(r"^```(\w+) test\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_marked_examples_in_the_integration_guide_run(tmp_path: Path) -> None:
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert {lang for lang, _ in blocks} == {"sh", "python"}
    runtime = Runtime(fast_config(f"sqlite:///{tmp_path}/docs.db"))
    runtime.start()
    token = new_token()
    runtime.store.create_api_key("docs", Role.ADMIN.value, digest(token), display_prefix(token), 0)
    try:
        devices = (
            DeviceInfo("gas-7", "gas_detector", "gas", True),
            DeviceInfo("mh-7", "manhole_cover", "manhole", True),
        )
        birth = Birth(GW, "s1", 0, now_ms(), "1.0", "h", devices, epoch="e1")
        runtime.store.write([Accepted(TopicParts("xuhui", GW, Kind.BIRTH), birth)], now_ms())
        runtime.store.upsert_assets([Asset(code=COVER, owner="燃气公司", devices=("mh-7",))])
        raise_alarm(runtime, f"{GW}:1", AlarmState.ACTIVE_UNACKED)
        raise_alarm(runtime, f"{GW}:2", AlarmState.ACTIVE_UNACKED, device="gas-8")
        # A cover open (a case waiting for 派遣) and a device gone silent (a work order).
        for aid, device, point, kind in ((3, "mh-7", "cover_open", "state"),
                                         (4, "mh-7", "_device", "comm_loss")):  # fmt: skip
            ev = AlarmEvent(f"{GW}:{aid}", device, point, kind, Severity.HIGH,
                            AlarmState.ACTIVE_UNACKED, now_ms())  # fmt: skip
            batch = AlarmBatch(GW, "s1", 10_000 + aid, now_ms(), (ev,), epoch="e1")
            runtime.store.write([Accepted(TopicParts("xuhui", GW, Kind.ALARM), batch)], now_ms())
        runtime.after_commit()
        with serve(create_app(runtime.config, runtime)) as base:
            env = {
                **os.environ,
                "LIFELINE_URL": base,
                "LIFELINE_KEY": token,
                "POSITION_FILE": str(tmp_path / "position"),
                "STOP_AFTER": "2",
            }
            for lang, code in blocks:
                argv = ["bash", "-euo", "pipefail", "-c", code]
                if lang == "python":
                    argv = [sys.executable, "-c", code]
                done = subprocess.run(
                    argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
                )
                assert done.returncode == 0, f"{code}\n--- stderr:\n{done.stderr}"
                assert '"status":4' not in done.stdout, f"{code}\n--- stdout:\n{done.stdout}"
        # The SSE consumer handled both alarms and kept its position for a resume.
        assert (tmp_path / "position").read_text().strip().isdigit()
    finally:
        runtime.close()
