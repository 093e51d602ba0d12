"""Freezing a window of backlog batches in one commit: crash safety, alarm priority, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline.edge.buffer import LANE_ALARM, LANE_DATA, Outbox
from lifeline.wire import AlarmEvent, AlarmState, DataBatch, Quality, Severity, decode

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
LIVE = T0 + 10_000_000  # a connection that started after every sample


def backlog_box(path: Path, readings: int, max_mb: float = 64) -> Outbox:
    box = Outbox(path / "buf.sqlite", "gw", "s1", max_mb=max_mb, batch_records=100)
    box.add(("d1", "p", T0 + i, float(i), Quality.GOOD) for i in range(readings))
    box.flush(None, 0)
    return box


def values(payload: bytes) -> list[float]:
    msg = decode(payload)
    assert isinstance(msg, DataBatch)
    return [float(r.value) for r in msg.records]  # type: ignore[arg-type]


def test_one_commit_freezes_a_window_beyond_what_is_published(tmp_path: Path) -> None:
    box = backlog_box(tmp_path, 5000)
    published = box.ready(set(), limit=2, live_since_ms=LIVE)
    assert [b.seq for b in published] == [1, 2]
    assert box.frozen_count() == 50  # the whole backlog got its seqs in that one commit
    assert box.backlog == 0
    assert box.next_seq == 51
    box.close()


def test_crash_after_freezing_a_window_resends_same_seqs_and_bytes(tmp_path: Path) -> None:
    box = backlog_box(tmp_path, 5000)
    box.ready(set(), limit=2, live_since_ms=LIVE)  # seqs 1 and 2 go out, 3..50 wait
    before = {b.seq: b.payload for b in box.ready(set(), limit=100, live_since_ms=LIVE)}
    assert sorted(before) == list(range(1, 51))
    box.acked([1])  # PUBACKed, but the process dies before the delete is committed
    box.db.close()  # kill -9: no orderly close

    again = Outbox(tmp_path / "buf.sqlite", "gw", "s1", max_mb=64, batch_records=100)
    after = {b.seq: b.payload for b in again.ready(set(), limit=100, live_since_ms=LIVE)}
    assert after == before  # every frozen batch again, same seq, byte for byte (1 included)
    got = [v for seq in sorted(after) for v in values(after[seq])]
    assert got == [float(i) for i in range(5000)]  # each reading under exactly one seq
    again.add([("d1", "p", LIVE + 1, 1.0, Quality.GOOD)])
    again.flush(LIVE, room=1)
    assert again.next_seq == 52  # new data never reuses a frozen seq
    again.close()


def test_alarm_overtakes_a_frozen_data_window_mid_drain(tmp_path: Path) -> None:
    box = backlog_box(tmp_path, 5000)
    inflight = {b.seq for b in box.ready(set(), limit=4, live_since_ms=LIVE)}
    box.add_alarm_events(
        [AlarmEvent("gw:1", "d1", "p", "hi", Severity.CRITICAL, AlarmState.ACTIVE_UNACKED, LIVE)]
    )
    (first,) = box.ready(inflight, limit=1, live_since_ms=LIVE)
    assert first.lane == LANE_ALARM  # ahead of the 46 data batches frozen before it
    assert first.seq == 51
    rest = box.ready(inflight | {first.seq}, limit=100, live_since_ms=LIVE)
    assert {b.lane for b in rest} == {LANE_DATA}
    box.close()


def test_window_is_capped_by_the_buffer_share_but_serves_the_caller(tmp_path: Path) -> None:
    # 1 MB buffer: an eighth is less than one 128 KiB batch, so only what is asked is frozen,
    # and the rest stays evictable.
    box = backlog_box(tmp_path, 5000, max_mb=1)
    assert len(list(box.ready(set(), limit=3, live_since_ms=LIVE))) == 3
    assert box.frozen_count() == 3
    assert box.backlog == 4700
    box.close()


def test_backlog_after_a_fully_drained_buffer_is_sent_not_stranded(tmp_path: Path) -> None:
    box = backlog_box(tmp_path, 500)
    first = box.ready(set(), limit=100, live_since_ms=LIVE)
    box.acked([b.seq for b in first])
    box.commit_acks()  # the buffer is empty now: every chunk deleted
    box.add(("d1", "p", LIVE + i, float(i), Quality.GOOD) for i in range(300))
    box.flush(None, 0)  # no room to publish live: it all goes to the backlog
    again = box.ready(set(), limit=100, live_since_ms=LIVE + 10_000)
    got = [v for b in again for v in values(b.payload)]
    assert got == [float(i) for i in range(300)]
    box.close()


def test_refill_across_two_frozen_windows_offers_each_batch_once(tmp_path: Path) -> None:
    box = backlog_box(tmp_path, 10_000)  # 100 batches; a window is 64 (1/8 of 64 MB)
    first = box.ready(set(), limit=62, live_since_ms=LIVE)
    assert box.frozen_count() == 64
    in_flight = {b.seq for b in first}
    # Two of the first window are left; the refill freezes the next window for the rest.
    refill = [b.seq for b in box.ready(in_flight, limit=10, live_since_ms=LIVE)]
    assert refill == list(range(63, 73))
    box.close()
