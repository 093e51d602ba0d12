"""The health snapshot in the buffer: when it is written, what `status` reads back from it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from lifeline.edge.buffer import (
    HEALTH_EVERY_S,
    HEALTH_MIN_GAP_S,
    DeviceHealth,
    GatewayHealth,
    Outbox,
    health,
    views,
)
from lifeline.edge.config import parse_config
from lifeline.edge.daemon import Gateway
from lifeline.edge.scheduler import Health
from lifeline.wire import Quality
from tests.fakes import FakeUplink, fake_gateway

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
NO_SUCH_PID = 2**31 - 1  # above any kernel's pid_max


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshot(heartbeat_ms: int = T0, **kw: object) -> GatewayHealth:
    base = GatewayHealth(
        pid=os.getpid(),
        started_ms=T0 - 60_000,
        heartbeat_ms=heartbeat_ms,
        stopped_ms=None,
        uplink_connected=False,
        uplink_since_ms=T0 - 60_000,
        uplink_error="broker mqtt://b:1883 unreachable: refused",
        uplink_error_ms=T0 - 1000,
        last_puback_ms=None,
        devices=(
            DeviceHealth("mh-01", "online", T0 - 60_000, T0 - 200, "", None),
            DeviceHealth("sl-02", "offline", T0 - 5000, T0 - 9000, "unit 2: no answer", T0 - 300),
        ),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class Source:
    """The daemon's side: counts how often the outbox asked for a snapshot."""

    def __init__(self) -> None:
        self.current = snapshot()
        self.calls = 0

    def __call__(self) -> GatewayHealth:
        self.calls += 1
        return self.current


def open_box(tmp_path: Path, clock: Clock) -> tuple[Outbox, Source]:
    box = Outbox(tmp_path / "buf.sqlite", "gw", "s1", clock=clock)
    source = Source()
    box.health_source = source
    return box, source


def reading(ts: int) -> list[tuple[str, str, int, float, Quality]]:
    return [("mh-01", "tilt_x", ts, 1.0, Quality.GOOD)]


def test_written_with_the_flush_then_at_most_every_few_seconds(tmp_path: Path) -> None:
    clock = Clock()
    box, source = open_box(tmp_path, clock)
    path = tmp_path / "buf.sqlite"
    assert views.gateway_health(path) is None
    box.add(reading(T0))
    box.flush(None, 0)  # the backlog commit carries the snapshot: no commit of its own
    assert source.calls == 1
    assert views.gateway_health(path) == snapshot()

    source.current = snapshot(heartbeat_ms=T0 + 1000)
    for i in range(10):  # many flushes within the period: none rewrites it
        clock.now += HEALTH_EVERY_S / 20
        box.add(reading(T0 + i))
        box.flush(T0, 4)
    assert not box.save_health()
    assert source.calls == 1
    assert views.gateway_health(path) == snapshot()

    clock.now += HEALTH_EVERY_S / 2
    assert box.save_health()  # the heartbeat while no readings flow
    assert views.gateway_health(path) == snapshot(heartbeat_ms=T0 + 1000)
    box.close()


def test_a_state_change_is_written_soon_with_the_next_write(tmp_path: Path) -> None:
    clock = Clock()
    box, source = open_box(tmp_path, clock)
    assert box.save_health()
    source.current = snapshot(uplink_connected=True, uplink_since_ms=T0 + 50)
    clock.now += HEALTH_MIN_GAP_S / 2
    box.health_changed()
    assert not box.save_health()  # not twice within HEALTH_MIN_GAP_S, whatever changes
    clock.now += HEALTH_MIN_GAP_S / 2
    box.add(reading(T0))
    box.flush(T0, 4)  # a live batch freeze: the snapshot rides in its transaction
    got = views.gateway_health(tmp_path / "buf.sqlite")
    assert got is not None
    assert (got.uplink_connected, got.uplink_since_ms) == (True, T0 + 50)
    box.close()


def test_devices_dropped_by_a_reload_leave_the_snapshot(tmp_path: Path) -> None:
    clock = Clock()
    box, source = open_box(tmp_path, clock)
    box.save_health()
    source.current = snapshot(devices=snapshot().devices[:1])
    box.health_changed()
    clock.now += HEALTH_MIN_GAP_S
    assert box.save_health()
    got = views.gateway_health(tmp_path / "buf.sqlite")
    assert got is not None
    assert [d.device for d in got.devices] == ["mh-01"]
    box.close()


def test_daemon_running_from_heartbeat_pid_and_clean_stop(tmp_path: Path) -> None:
    clock = Clock()
    box, _ = open_box(tmp_path, clock)
    box.save_health()
    got = views.gateway_health(tmp_path / "buf.sqlite")
    stale = T0 + health.DAEMON_STALE_MS + 1000
    assert health.daemon_running(got, T0 + 2000) == (True, f"pid {os.getpid()}, heartbeat 2 s ago")
    assert health.daemon_running(got, stale)[0] is False
    assert "no heartbeat for" in health.daemon_running(got, stale)[1]
    gone = replace(snapshot(), pid=NO_SUCH_PID)
    assert health.daemon_running(gone, T0) == (False, f"process {NO_SUCH_PID} is gone (killed?)")
    assert health.daemon_running(None, T0)[0] is False

    box.close()  # a clean stop says so at once, no waiting for the heartbeat to age
    got = views.gateway_health(tmp_path / "buf.sqlite")
    assert got is not None
    assert got.stopped_ms == T0
    assert health.daemon_running(got, T0 + 10) == (False, "stopped")


def test_buffer_depth_and_oldest_unsent_reading(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "buf.sqlite", "gw", "s1", batch_records=2)
    path = tmp_path / "buf.sqlite"
    assert views.buffer_stats(path).oldest_unsent_ms is None
    box.add(reading(T0 + 5) + reading(T0 + 3))
    box.flush(T0 + 100, 4)  # live batch, frozen directly
    stats = views.buffer_stats(path)
    assert (stats.frozen_readings, stats.backlog_readings) == (2, 0)
    assert stats.oldest_unsent_ms == T0 + 3
    box.add(reading(T0 + 1) + reading(T0 + 7) + reading(T0 + 9))
    box.flush(None, 0)  # uplink down: backlog chunks
    stats = views.buffer_stats(path)
    assert (stats.frozen_readings, stats.backlog_readings) == (2, 3)
    assert stats.oldest_unsent_ms == T0 + 1
    box.acked([1])
    box.commit_acks()
    box.ready(set(), 1, T0 + 100)  # the backlog's first batch frozen; its rows stay in chunks
    stats = views.buffer_stats(path)
    assert stats.oldest_unsent_ms == T0 + 1
    box.close()


def make_gateway(tmp_path: Path, clock: Clock | None = None) -> tuple[Gateway, Outbox, FakeUplink]:
    """A gateway over a real buffer (timed by `clock`) and a fake uplink."""
    cfg = parse_config(
        {
            "gateway": "gw",
            "site": "s",
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "buses": [
                {
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "devices": [{"id": "gas-1", "unit": 1, "profile": "gas_detector"}],
                }
            ],
        }
    )
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", clock=clock or Clock())
    gw, uplink = fake_gateway(cfg, tmp_path, box)
    return gw, box, uplink


def test_the_gateway_reports_device_and_uplink_state(tmp_path: Path) -> None:
    gw, box, uplink = make_gateway(tmp_path)
    uplink.live_since_ms, uplink.last_error = None, "broker mqtt://b:1883 unreachable: refused"
    dev = gw.devices["gas-1"]
    dev.last_ok_ms, dev.last_error, dev.last_error_ms = T0, "unit 1: no answer", T0 + 900
    dev.health.state, dev.state_since_ms = Health.OFFLINE, T0 + 900
    gw.pipeline.transition(dev, Health.OFFLINE, "unit 1: no answer", T0 + 900)
    assert box.save_health()  # a transition makes the snapshot due at once
    got = views.gateway_health(tmp_path / "b.sqlite")
    assert got is not None
    assert got.devices == (
        DeviceHealth("gas-1", "offline", T0 + 900, T0, "unit 1: no answer", T0 + 900),
    )
    assert (got.pid, got.stopped_ms, got.uplink_connected) == (os.getpid(), None, False)
    assert got.uplink_error == "broker mqtt://b:1883 unreachable: refused"
    box.close()
    got = views.gateway_health(tmp_path / "b.sqlite")
    assert got is not None
    assert got.stopped_ms is not None


def test_a_first_answer_makes_the_snapshot_due(tmp_path: Path) -> None:
    clock = Clock()
    gw, box, _ = make_gateway(tmp_path, clock)
    dev = gw.devices["gas-1"]
    assert box.save_health()
    clock.now += HEALTH_MIN_GAP_S
    assert not box.save_health()
    gw.pipeline.values(dev, {"temperature": 21.0}, T0)  # never answered before: worth saving soon
    dev.last_ok_ms = T0  # what the poller does after the sink
    assert box.save_health()
    clock.now += HEALTH_MIN_GAP_S
    gw.pipeline.values(dev, {"temperature": 21.5}, T0 + 1000)
    assert not box.save_health()  # later answers wait for the next period
    box.close()
