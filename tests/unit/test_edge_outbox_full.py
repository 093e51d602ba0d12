"""A full disk under the buffer (issue 13 item 7): SQLite's SQLITE_FULL is a full buffer.

SQLite's `PRAGMA max_page_count` caps the database file: a write beyond it fails with the very
error a full filesystem gives ("database or disk is full", SQLITE_FULL), through the very same
path. The real filesystem case (a tmpfs that fills) is tests/e2e/test_edge_disk_full.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lifeline.edge.buffer import BufferFull, Outbox
from lifeline.wire import AlarmEvent, AlarmState, Quality, Severity

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def alarm(n: int) -> AlarmEvent:
    return AlarmEvent(
        f"gw:1:{n}", "d1", "gas", "hi", Severity.CRITICAL, AlarmState.ACTIVE_UNACKED, T0
    )


def cap_file(box: Outbox, extra_pages: int) -> None:
    """Let the database file grow by `extra_pages` more pages, then fail as a full disk does."""
    pages = box.db.execute("PRAGMA page_count").fetchone()[0]
    box.db.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def fill(box: Outbox, rounds: int, start: int = 0) -> None:
    for r in range(start, start + rounds):
        box.add(("d1", f"p{i % 10}", T0 + r * 1000 + i, float(i), Quality.GOOD) for i in range(200))
        box.flush(None, 0)


def test_a_full_disk_evicts_the_oldest_telemetry_and_keeps_every_alarm(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1", max_mb=256)
    cap_file(box, 60)
    fill(box, 200)  # on the old code: sqlite3.OperationalError "database or disk is full"
    assert box.disk_full_since_ms is not None
    assert box.evicted > 0
    assert box.cap_bytes < box.max_bytes
    for n in range(50):  # alarms still fit: eviction keeps free pages inside the file
        box.add_alarm_events([alarm(n)])
        fill(box, 5, start=1000 + n * 5)
    assert len(box.open_alarms()) == 50
    assert box.committed - box.evicted == box.backlog  # every reading accounted for
    assert box.disk_dropped == 0
    box.close()


def test_an_alarm_that_cannot_be_written_raises_buffer_full(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    box.full_wait_s = 0.2
    cap_file(box, 0)  # not one page more, and no telemetry to evict

    def write_alarms() -> None:
        for n in range(1000):
            box.add_alarm_events([alarm(n)])

    with pytest.raises(BufferFull, match="alarm or device event cannot be written"):
        write_alarms()
    box.close()


def test_telemetry_that_cannot_be_written_is_counted_not_raised(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    cap_file(box, 0)
    fill(box, 50)
    assert box.disk_dropped > 0
    assert box.committed + box.disk_dropped == 50 * 200
    box.close()


def test_other_database_errors_are_not_taken_for_a_full_disk(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite", "gw", "s1")
    box.db.execute("DROP TABLE chunks")
    box.add([("d1", "p", T0, 1.0, Quality.GOOD)])
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        box.flush(None, 0)
    box.db.close()
