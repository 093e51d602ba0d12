"""Device health, and the daemon's poll sink: rules, stale records, NaN, device events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeline.drivers.errors import DeviceTimeout
from lifeline.edge.clock import mono_ms
from lifeline.edge.config import HealthConfig, parse_config
from lifeline.edge.daemon import Gateway
from lifeline.edge.scheduler import Health, HealthTracker, Outcome
from lifeline.wire import Command, CommandReply, Quality
from tests.fakes import FakeBuffer, fake_gateway

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


C, T, R, S = Outcome.CLEAN, Outcome.TROUBLED, Outcome.REFUSED, Outcome.SILENT
ON, DEG, OFF = Health.ONLINE, Health.DEGRADED, Health.OFFLINE


@pytest.mark.parametrize(
    ("outcomes", "states"),
    [
        ([C], [None]),
        ([S, S, S], [DEG, None, OFF]),
        ([S, S, S, S, C], [DEG, None, OFF, None, ON]),  # offline: one good poll brings it back
        # degraded: online again after recover_after (3 here) clean polls in a row
        ([S, C, C, C], [DEG, None, None, ON]),
        ([S, C, C, T, C, C, C], [DEG, None, None, None, None, None, ON]),
        # answers only after retries or busy answers: degraded, never offline
        ([T, T, T, T, T], [DEG, None, None, None, None]),
        # answers with exceptions only (busy for ever, device failure): alive, never offline
        ([R, R, R, R, R], [DEG, None, None, None, None]),
        ([S, S, S, R], [DEG, None, OFF, DEG]),  # back from offline, but only with exceptions
        ([S, S, S, T], [DEG, None, OFF, DEG]),
        ([R, S, S, S], [DEG, None, None, OFF]),  # silence after exceptions: counted afresh
    ],
)
def test_health_transitions_reported_once(
    outcomes: list[Outcome], states: list[Health | None]
) -> None:
    tracker = HealthTracker(HealthConfig(degraded_after=1, offline_after=3, recover_after=3))
    assert [tracker.record(o, "why") for o in outcomes] == states


def test_timeouts_a_retry_covered_are_counted_and_explained() -> None:
    tracker = HealthTracker(HealthConfig(recover_after=2))
    tracker.record(Outcome.TROUBLED, "2 timeouts covered by retries", timeouts=2)
    tracker.record(Outcome.TROUBLED, "1 timeout covered by retries", timeouts=1)
    assert (tracker.state, tracker.timeouts) == (Health.DEGRADED, 3)
    assert tracker.detail == "1 timeout covered by retries"
    tracker.record(Outcome.CLEAN)
    tracker.record(Outcome.CLEAN)
    assert (tracker.state, tracker.timeouts, tracker.detail) == (Health.ONLINE, 3, "")


def test_reprobe_backoff_doubles_and_caps() -> None:
    tracker = HealthTracker(HealthConfig(offline_after=1, reprobe_min_s=5, reprobe_max_s=30))
    backoffs = []
    for _ in range(5):
        tracker.record(Outcome.SILENT)
        backoffs.append(tracker.backoff_s)
    assert backoffs == [5, 10, 20, 30, 30]
    tracker.record(Outcome.CLEAN)
    assert tracker.backoff_s == 0


def make_gateway(tmp_path: Path, mqtt: dict[str, Any] | None = None) -> tuple[Gateway, FakeBuffer]:
    cfg = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "mqtt": mqtt or {},
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [
                {
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "devices": [
                        {"id": "gas-1", "unit": 1, "profile": "gas_detector", "stale_after_s": 30}
                    ],
                }
            ],
        }
    )
    buffer = FakeBuffer()
    gw, _ = fake_gateway(cfg, tmp_path, buffer)
    return gw, buffer


def test_sink_raises_alarms_and_marks_nan_bad(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path)
    dev = gw.devices["gas-1"]
    gw.pipeline.values(dev, {"gas_concentration": 55.0, "temperature": float("nan")}, T0)
    rows = {(p, q) for _, p, _, _, q in buffer.samples}
    assert ("temperature", Quality.BAD) in rows
    assert ("gas_concentration", Quality.GOOD) in rows
    open_alarms = {(e.alarm_type, int(e.severity)) for e in buffer.open_alarms()}
    # The second stage (hihi, severity 1) has no on-delay; the first (hi, severity 2) waits 1 s.
    assert ("hihi", 1) in open_alarms
    assert ("hi", 2) not in open_alarms


def test_a_running_on_delay_raises_its_alarm_without_another_sample(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path)

    async def feed_once() -> set[tuple[str, int]]:
        # The 1 s on-delay of the first stage runs from the sample's arrival (monotonic clock),
        # not from its wall-clock stamp T0 (long past): a timer raises the alarm a second later.
        gw.pipeline.values(gw.devices["gas-1"], {"gas_concentration": 30.0}, T0)
        for _ in range(500):
            alarms = {(e.alarm_type, int(e.severity)) for e in buffer.open_alarms()}
            if ("hi", 2) in alarms:
                return alarms
            await asyncio.sleep(0.01)
        return set()

    assert ("hi", 2) in asyncio.run(feed_once())


def test_offline_emits_stale_records_comm_loss_and_device_event(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path)
    dev = gw.devices["gas-1"]
    error = DeviceTimeout(1, 0, 3, "no answer")
    gw.pipeline.transition(dev, Health.OFFLINE, str(error), T0)
    stale = [(p, v, q) for _, p, _, v, q in buffer.samples]
    assert {p for p, _, _ in stale} == set(dev.point_names)
    assert all(v is None and q is Quality.STALE for _, v, q in stale)
    (alarm,) = buffer.open_alarms()
    assert (alarm.alarm_type, alarm.device) == ("comm_loss", "gas-1")
    assert [(e.device, e.online) for e in buffer.device_events] == [("gas-1", False)]
    gw.pipeline.transition(dev, Health.ONLINE, "answering again", T0 + 5000)
    assert buffer.open_alarms()[0].state.value == "cleared_unacked"
    assert [(e.device, e.online) for e in buffer.device_events][1:] == [("gas-1", True)]


def runner(gw: Gateway) -> Callable[..., CommandReply]:
    def run(name: str, **args: object) -> CommandReply:
        cmd = Command("gw", "ops", 0, T0, command_id="c", name=name, args=args)  # type: ignore[arg-type]
        return asyncio.run(gw.commands.handle(cmd))

    return run


def test_commands_ack_unknown_and_bad_write(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path, {"username": "gw", "password": "pw"})
    gw.pipeline.values(gw.devices["gas-1"], {"gas_concentration": 55.0}, T0)
    (alarm,) = buffer.open_alarms()
    run = runner(gw)

    reply = run("ack", alarm_id=alarm.alarm_id, who="center", note="dispatched")
    assert (reply.ok, reply.result["state"]) == (True, "active_acked")
    (acked,) = buffer.open_alarms()
    assert (acked.ack_by, acked.ack_note) == ("center", "dispatched")
    again = run("ack", alarm_id=alarm.alarm_id)
    assert not again.ok
    assert "no unacknowledged alarm" in again.error
    unknown = run("selfdestruct")
    assert not unknown.ok
    assert "unknown command" in unknown.error
    bad_write = run("write", device="gas-1", point="gas_concentration", value=1)
    assert not bad_write.ok
    assert "not writable" in bad_write.error


def test_anonymous_connection_refuses_commands_that_change_something(tmp_path: Path) -> None:
    """Issue 17: on an open broker anybody could switch a streetlight off through a gateway."""
    gw, buffer = make_gateway(tmp_path)
    gw.pipeline.values(gw.devices["gas-1"], {"gas_concentration": 55.0}, T0)
    (alarm,) = buffer.open_alarms()
    run = runner(gw)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("write", {"device": "gas-1", "point": "gas_concentration", "value": 1}),
        ("ack", {"alarm_id": alarm.alarm_id}),
        ("reload", {}),
    ]
    for name, args in cases:
        reply = run(name, **args)
        assert not reply.ok
        assert f"refused {name!r}: this gateway's MQTT connection is anonymous" in reply.error
    assert buffer.open_alarms()[0].state.value == "active_unacked"
    (tmp_path / "demo").mkdir()
    allowed, _ = make_gateway(tmp_path / "demo", {"allow_anonymous_commands": True})
    write = runner(allowed)("write", device="gas-1", point="gas_concentration", value=1)
    assert "not writable" in write.error


def test_reload_reads_only_yaml_files_of_the_config_directory(tmp_path: Path) -> None:
    """Issue 17: `reload` read any path and its error quoted the file's lines into the reply."""
    (tmp_path / "etc").mkdir()
    secret = tmp_path / "etc" / "shadow.yaml"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n  daemon: x:1:1:SECRET-LINE\n")
    home = tmp_path / "gw"
    home.mkdir()
    (home / "link.yaml").symlink_to(secret)
    (home / "broken.yaml").write_text(secret.read_text())
    gw, _ = make_gateway(home, {"allow_anonymous_commands": True})
    run = runner(gw)
    for path in (str(secret), "../etc/shadow.yaml", "link.yaml", "/etc/passwd"):
        reply = run("reload", path=path)
        assert not reply.ok
        assert reply.error == f"reload reads only .yaml files in the config directory {home}"
    broken = run("reload", path="broken.yaml")
    assert "not valid YAML: mapping values are not allowed here at line 2, column 9" in broken.error
    assert "SECRET" not in broken.error
    assert "root:" not in broken.error


def test_stale_data_alarm_from_config(tmp_path: Path) -> None:
    gw, _ = make_gateway(tmp_path)
    gw.pipeline.values(gw.devices["gas-1"], {"temperature": float("nan")}, T0)  # bad: not fresh
    now = mono_ms()
    gw.engine.tick(T0, now)
    events = gw.engine.tick(T0 + 30_000, now + 30_000)
    assert ("temperature", "stale", 4) in {(e.point, e.alarm_type, int(e.severity)) for e in events}


def test_a_device_back_from_offline_but_degraded_clears_comm_loss(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path)
    dev = gw.devices["gas-1"]
    gw.pipeline.transition(dev, Health.OFFLINE, "no answer", T0)
    gw.pipeline.transition(dev, Health.DEGRADED, "1 timeout covered by retries", T0 + 5000)
    (alarm,) = buffer.open_alarms()
    assert (alarm.alarm_type, alarm.state.value) == ("comm_loss", "cleared_unacked")


def test_the_health_snapshot_carries_the_timeout_count_and_why(tmp_path: Path) -> None:
    gw, buffer = make_gateway(tmp_path)
    dev = gw.devices["gas-1"]
    dev.health.record(Outcome.TROUBLED, "2 timeouts covered by retries", timeouts=2)
    assert buffer.save_health()
    (row,) = buffer.snapshots[-1].devices
    assert (row.state, row.timeouts, row.detail) == ("degraded", 2, "2 timeouts covered by retries")
