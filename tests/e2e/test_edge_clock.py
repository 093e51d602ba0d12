"""Wrong clocks at the edge (issue 13 item 5): a gateway whose wall clock NTP steps, or that boots
at 1970, still raises its alarms on time and says what its clock did.

The gateway process runs under libfaketime (the Debian `faketime` package): its wall clock
follows an offset file the test rewrites, its monotonic clock is left alone
(FAKETIME_DONT_FAKE_MONOTONIC), exactly what an NTP step or a missing RTC does to a real cabinet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifeline.edge.buffer import views
from lifeline.wire import EARLIEST_PLAUSIBLE_MS, AlarmBatch, Birth, DataBatch
from tests.e2e.test_edge_gateway import (
    Subscriber,
    gateway_config,
    set_sim_value,
    simulator,
    subscribed,
    wait_for,
)
from tests.services import faketime_env

pytestmark = [pytest.mark.e2e]

HOUR_MS = 3_600_000


def faked_gateway(config: Path, log: Path, offset_file: Path) -> subprocess.Popen[bytes]:
    """`lifeline edge run` with its wall clock read from `offset_file` (re-read every second)."""
    env = {**os.environ, **faketime_env(offset_file)}
    argv = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "run",
        "--config",
        str(config),
    ]
    with open(log, "ab") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)


def gas_device(on_delay_s: float) -> dict[str, object]:
    # The rate-of-change rule has no delay: its alarm marks the sample that starts the on-delay.
    rules = [
        {"type": "hi", "limit": 20, "on_delay_s": on_delay_s, "severity": 1},
        {"type": "roc", "limit": 2, "severity": 3},
    ]
    return {
        "id": "gas-01",
        "unit": 1,
        "profile": "gas_detector",
        "interval_s": 0.2,
        "alarms": {"gas_concentration": rules},
    }


def polled_clean(sub: Subscriber) -> bool:
    """A reading of 0 %LEL arrived: the rate rule has a sample to compare the leak with."""
    return any(
        r.point == "gas_concentration" and r.value == 0
        for m in list(sub.messages)
        if isinstance(m, DataBatch)
        for r in m.records
    )


def status_json(config: Path) -> dict[str, object]:
    argv = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "status",
        "-c",
        str(config),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    result: dict[str, object] = json.loads(
        subprocess.run([*argv, "--json"], capture_output=True, text=True, check=False).stdout
    )
    result["text"] = out
    return result


def test_on_delayed_gas_alarm_is_raised_on_time_when_ntp_steps_the_clock_back(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    """Reproduced on main: a step back of an hour during the on-delay held the alarm an hour."""
    on_delay_s = 3.0
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    sim_devices = [{"id": "gas-01", "unit": 1, "profile": "gas_detector"}]
    with simulator(tmp_path, sim_devices) as eps, subscribed(mqtt_url, topic_root) as sub:
        port = eps["servers"][0]["port"]
        config = gateway_config(tmp_path, mqtt_url, topic_root, port, [gas_device(on_delay_s)])
        proc = faked_gateway(config, tmp_path / "gateway.log", offset)
        buffer = tmp_path / "buffer.sqlite"
        try:
            wait_for(lambda: polled_clean(sub), 20, "a poll before the leak")
            set_sim_value(eps, "gas-01", "gas_concentration", 30.0)

            def by_type(kind: str) -> list[views.AlarmRow]:
                return [r for r in views.alarms(buffer) if r.alarm_type == kind]

            wait_for(lambda: bool(by_type("roc")), 20, "the first sample over the limit", 0.01)
            offset.write_text("-1h\n")  # NTP steps the clock back, the on-delay is running
            seen = time.monotonic()
            wait_for(lambda: bool(by_type("hi")), 15, "the on-delayed 一级 alarm")
            late_s = time.monotonic() - seen
            roc, hi = by_type("roc")[-1], by_type("hi")[-1]  # the first of each (log order)
            assert hi.ts_ms < roc.ts_ms - HOUR_MS + 60_000, "the step landed after the alarm"
            assert late_s < on_delay_s + 2.0
            # Announced: a new birth with the step, and the status shows it.
            wait_for(
                lambda: any(
                    isinstance(m, Birth) and m.clock.step_ms < -HOUR_MS + 60_000
                    for m in sub.messages
                ),
                10,
                "a birth announcing the step",
            )
            st = status_json(config)
            clock = st["clock"]
            assert isinstance(clock, dict)
            assert clock["plausible"] is True
            assert clock["steps"] == 1
            assert -HOUR_MS - 60_000 < clock["last_step_ms"] < -HOUR_MS + 60_000
            assert "stepped" in str(st["text"])
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("wall clock stepped by -3") == 1, log


def test_a_gateway_booting_at_1970_raises_its_alarm_and_says_its_clock_is_wrong(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    """No RTC, NTP not synced: the birth says so, the alarm goes out at once, then NTP syncs."""
    offset = tmp_path / "faketime.rc"
    offset.write_text("@1970-01-02 00:00:00\n")
    sim_devices = [{"id": "gas-01", "unit": 1, "profile": "gas_detector"}]
    with simulator(tmp_path, sim_devices) as eps, subscribed(mqtt_url, topic_root) as sub:
        port = eps["servers"][0]["port"]
        config = gateway_config(tmp_path, mqtt_url, topic_root, port, [gas_device(0.5)])
        proc = faked_gateway(config, tmp_path / "gateway.log", offset)
        try:
            wait_for(lambda: any(isinstance(m, Birth) for m in sub.messages), 20, "the birth")
            first = next(m for m in sub.messages if isinstance(m, Birth))
            assert not first.clock.plausible
            assert first.sent_ms < EARLIEST_PLAUSIBLE_MS
            st = status_json(config)
            problems = st["problems"]
            assert isinstance(problems, list)
            assert any("clock" in p for p in problems), st
            set_sim_value(eps, "gas-01", "gas_concentration", 30.0)

            def alarms() -> list[tuple[str, int]]:
                return [
                    (e.alarm_type, e.ts_ms)
                    for m in sub.messages
                    if isinstance(m, AlarmBatch)
                    for e in m.events
                ]

            wait_for(lambda: any(k == "hi" for k, _ in alarms()), 15, "the 一级 alarm")
            assert all(ts < EARLIEST_PLAUSIBLE_MS for _, ts in alarms())  # stamped as it was
            offset.write_text("+0\n")  # NTP syncs: a step of about 56 years

            def plausible_birth() -> Birth | None:
                births = [m for m in sub.messages if isinstance(m, Birth) and m.clock.plausible]
                return births[-1] if births else None

            wait_for(lambda: plausible_birth() is not None, 10, "a birth after the sync")
            birth = plausible_birth()
            assert birth is not None
            assert birth.clock.step_ms > 50 * 365 * 24 * HOUR_MS
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("wall clock implausible") == 1, log
    assert log.count("wall clock plausible again") == 1, log
