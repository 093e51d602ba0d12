"""Frozen batches too large for the broker are split under new seqs; the old seqs are retired."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lifeline.edge.buffer import Outbox
from lifeline.wire import AlarmBatch, AlarmEvent, AlarmState, DataBatch, Quality, Severity, decode

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def filled(tmp_path: Path, readings: int) -> Outbox:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", batch_records=2000)
    box.add(("d1", "p", T0 + i, float(i), Quality.GOOD) for i in range(readings))
    box.flush(None, 0)
    return box


def values(payloads: list[bytes]) -> list[float]:
    out: list[float] = []
    for p in payloads:
        msg = decode(p)
        assert isinstance(msg, DataBatch)
        out.extend(float(r.value) for r in msg.records)  # type: ignore[arg-type]
    return out


def test_oversize_batches_are_split_in_place_and_their_seqs_retired(tmp_path: Path) -> None:
    box = filled(tmp_path, 6000)
    first = list(box.ready(set(), 100, T0))
    assert [b.seq for b in first] == [1, 2, 3]
    assert max(len(b.payload) for b in first) > 40_000
    box.set_batch_bytes(16_000)
    offered = list(box.ready({1}, 100, T0))  # seq 1 is in flight: the broker may still take it
    assert 1 not in {s for (s,) in box.db.execute("SELECT seq FROM retired")}  # not split
    assert all(len(b.payload) <= 16_000 for b in offered)
    again = list(box.ready(set(), 100, T0))  # no longer in flight: now it is split too
    assert all(len(b.payload) <= 16_000 for b in again)
    assert values([b.payload for b in again]) == [float(i) for i in range(6000)]  # order kept
    retired = {s for (s,) in box.db.execute("SELECT seq FROM retired")}
    assert retired == {1, 2, 3}
    assert {b.seq for b in again} | retired == set(range(1, box.next_seq))
    assert box.retired == 3
    box.close()
    reopened = Outbox(tmp_path / "b.sqlite", "gw", "s1", batch_records=2000)
    assert reopened.retired == 3
    assert values([b.payload for b in reopened.ready(set(), 100, T0)]) == [
        float(i) for i in range(6000)
    ]
    reopened.close()


def test_alarm_batches_are_cut_to_the_byte_budget(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    box.set_batch_bytes(2_000)
    state = AlarmState.ACTIVE_UNACKED
    box.add_alarm_events(
        [
            AlarmEvent(f"gw:e:{n}", "d1", "gas", "hi", Severity.CRITICAL, state, T0)
            for n in range(100)
        ]
    )
    batches = list(box.ready(set(), 100, T0))
    assert len(batches) > 1
    assert all(len(b.payload) <= 2_000 for b in batches)
    ids: list[str] = []
    for b in batches:
        msg = decode(b.payload)
        assert isinstance(msg, AlarmBatch)
        ids.extend(e.alarm_id for e in msg.events)
    assert ids == [f"gw:e:{n}" for n in range(100)]
    box.close()


def test_a_single_reading_is_never_split(tmp_path: Path) -> None:
    box = filled(tmp_path, 1)
    box.set_batch_bytes(10)  # below any batch: nothing to cut
    (only,) = list(box.ready(set(), 10, T0))
    assert only.seq == 1
    assert not sqlite3.connect(tmp_path / "b.sqlite").execute("SELECT * FROM retired").fetchall()
    box.close()
