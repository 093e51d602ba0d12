"""The SQLite outbox: seq persistence, frozen batches, PUBACK-before-delete, lanes, eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline.edge.buffer import LANE_ALARM, LANE_DATA, LANE_DEVICE, Outbox, Sample, views
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    DataBatch,
    DeviceEvent,
    Quality,
    Record,
    Severity,
    decode,
    encode,
    encode_data,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def samples(n: int, start: int = 0, device: str = "d1") -> list[Sample]:
    return [(device, "p", T0 + start + i, float(start + i), Quality.GOOD) for i in range(n)]


def alarm(n: int = 1) -> AlarmEvent:
    return AlarmEvent(f"gw:{n}", "d1", "p", "hi", Severity.CRITICAL, AlarmState.ACTIVE_UNACKED, T0)


def open_box(path: Path, **kw: object) -> Outbox:
    return Outbox(path / "buf.sqlite", "gw", "s1", **kw)  # type: ignore[arg-type]


def data(payload: bytes) -> DataBatch:
    msg = decode(payload)
    assert isinstance(msg, DataBatch)
    return msg


def alarms(payload: bytes) -> AlarmBatch:
    msg = decode(payload)
    assert isinstance(msg, AlarmBatch)
    return msg


def records(payloads: list[bytes]) -> list[float]:
    return [float(r.value) for p in payloads for r in data(p).records]  # type: ignore[arg-type]


def test_encode_data_matches_wire_codec() -> None:
    recs = (
        Record("d1", "a", T0, 1.5),
        Record("d1", "b", T0, True, Quality.GOOD, True),
        Record("d1", "c", T0, None, Quality.STALE),
        Record("d1", "d", T0, "text", Quality.UNCERTAIN),
    )
    rows = [[r.device, r.point, r.ts_ms, r.value, r.quality.value, r.historical] for r in recs]
    batch = DataBatch("gw", "s", 7, T0, recs, epoch="e1")
    assert encode_data("gw", "s", "e1", 7, T0, rows) == encode(batch)


def test_backlog_frozen_in_order_and_deleted_only_after_ack(tmp_path: Path) -> None:
    box = open_box(tmp_path, batch_records=100)
    box.add(samples(250))
    assert box.flush(live_since_ms=None, room=0) == 0  # offline: into the backlog
    assert box.backlog == 250
    ready = list(box.ready(set(), limit=8, live_since_ms=T0 + 10_000))
    assert [(b.seq, b.lane, b.n) for b in ready] == [
        (1, LANE_DATA, 100),
        (2, LANE_DATA, 100),
        (3, LANE_DATA, 50),
    ]
    assert records([b.payload for b in ready]) == [float(i) for i in range(250)]
    assert all(r.historical for b in ready for r in data(b.payload).records)
    box.acked([1, 3])
    assert [b.seq for b in box.ready(set(), 8, T0)] == [2]
    assert [b.seq for b in box.ready({2}, 8, T0)] == []
    box.close()


def test_frozen_batch_survives_restart_with_same_seq_and_payload(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    box.add(samples(10))
    assert box.flush(live_since_ms=T0, room=4) == 1  # live: frozen directly
    (before,) = box.ready(set(), 8, T0)
    box.db.close()  # as after kill -9: no orderly close
    again = open_box(tmp_path)
    (after,) = again.ready(set(), 8, T0)
    assert (after.seq, after.payload) == (before.seq, before.payload)
    again.add(samples(1, start=100))
    again.flush(live_since_ms=T0, room=4)
    assert [b.seq for b in again.ready({1}, 8, T0)] == [2]
    again.close()


def test_alarm_lane_before_telemetry_backlog(tmp_path: Path) -> None:
    box = open_box(tmp_path, batch_records=100)
    box.add(samples(1000))
    box.flush(None, 0)
    box.add_alarm_events([alarm()])
    box.add_device_events([DeviceEvent("d1", False, T0, "timeout")])
    ready = list(box.ready(set(), limit=3, live_since_ms=T0))
    assert [b.lane for b in ready] == [LANE_ALARM, LANE_DEVICE, LANE_DATA]
    assert alarms(ready[0].payload).events[0].alarm_id == "gw:1"


def test_eviction_drops_oldest_telemetry_never_alarms(tmp_path: Path) -> None:
    box = open_box(tmp_path, max_mb=0.25, batch_records=20000)
    box.add_alarm_events([alarm(i) for i in range(1, 201)])
    for chunk in range(20):
        box.add(samples(1000, start=chunk * 1000))
        box.flush(None, 0)
    assert box.evicted > 0
    assert box.backlog + box.evicted == 20_000
    assert box.used_bytes() <= 0.25 * 1024 * 1024
    ready = list(box.ready(set(), limit=50, live_since_ms=T0))
    alarm_ids = [
        e.alarm_id for b in ready if b.lane == LANE_ALARM for e in alarms(b.payload).events
    ]
    assert len(alarm_ids) == 200
    values = records([b.payload for b in ready if b.lane == LANE_DATA])
    assert values == sorted(values)
    assert values[-1] == 19_999.0  # the newest survived; the oldest went
    box.close()


def test_seq_and_alarm_numbers_persist(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    assert [box.next_alarm_number(), box.next_alarm_number()] == [1, 2]
    box.add(samples(5))
    box.flush(T0, 1)
    box.close()
    again = open_box(tmp_path)
    assert again.next_alarm_number() == 3
    assert again.next_seq == 2


def test_alarm_log_readable_and_acks_queued_from_another_connection(tmp_path: Path) -> None:
    box = open_box(tmp_path)
    box.add_alarm_events([alarm(1)])
    acked = AlarmEvent(
        "gw:1", "d1", "p", "hi", Severity.CRITICAL, AlarmState.ACTIVE_ACKED, T0 + 1, ack_by="crew"
    )
    box.add_alarm_events([acked, alarm(2)])
    path = tmp_path / "buf.sqlite"
    rows = views.alarms(path, open_only=True)
    assert [(r.alarm_id, r.state, r.ack_by) for r in rows] == [
        ("gw:2", "active_unacked", None),
        ("gw:1", "active_acked", "crew"),
    ]
    assert [e.alarm_id for e in box.open_alarms()] == ["gw:1", "gw:2"]
    views.request_ack(path, "gw:2", "crew-3", "checked")
    assert box.take_ack_requests() == [("gw:2", "crew-3", "checked")]
    assert box.take_ack_requests() == []
    stats = views.buffer_stats(path)
    assert (stats.pending_events, stats.next_seq) == (3, 1)
    box.close()


def test_frozen_data_reads_both_batch_forms(tmp_path: Path) -> None:
    box = open_box(tmp_path, batch_records=100)
    box.add(samples(150))
    box.flush(None, 0)  # backlog: frozen later as chunk ranges
    box.ready(set(), 8, T0)
    box.add(samples(3, start=1000))
    box.flush(T0, 4)  # live: frozen with its payload
    got = views.frozen_data(tmp_path / "buf.sqlite")
    assert [(seq, len(rows)) for seq, rows in got] == [(1, 100), (2, 50), (3, 3)]
    assert got[2][1][0][:4] == ["d1", "p", T0 + 1000, 1000.0]
    assert views.frozen_data(tmp_path / "buf.sqlite", after_seq=2)[0][0] == 3
    box.close()
