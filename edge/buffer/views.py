"""Read-only views of a gateway's buffer file, for the crew tools and the proof books.

Each view opens the file read-only (WAL: it never blocks the daemon, and works whether the
daemon runs or not) and asks the module that writes each table; stored readings are read through
wire's decoder. The one write, `request_ack`, queues an acknowledgement for the daemon to apply
(it owns the alarm state). Every view raises sqlite3.Error if the file cannot be read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeline.edge.buffer import alarmlog, health
from lifeline.edge.buffer.alarmlog import AlarmRow
from lifeline.edge.buffer.health import GatewayHealth
from lifeline.edge.buffer.outbox import backlog_readings
from lifeline.edge.buffer.packing import chunk_records, payload_records, record_rows
from lifeline.edge.buffer.schema import (
    LANE_ALARM,
    LANE_DATA,
    all_meta,
    connect,
    epoch_text,
    get_meta,
    tables_of,
)
from lifeline.wire import Record, WireError

__all__ = [
    "AlarmRow",
    "Books",
    "BufferStats",
    "Follower",
    "alarms",
    "books",
    "buffer_stats",
    "devices",
    "epoch",
    "frozen_data",
    "gateway_health",
    "open_alarm_counts",
    "request_ack",
]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """How much is waiting in the buffer."""

    backlog_readings: int
    pending_events: int
    frozen_batches: int
    next_seq: int
    evicted: int
    frozen_readings: int = 0  # readings in data batches awaiting their PUBACK
    oldest_unsent_ms: int | None = None  # sample time of the oldest reading not yet acknowledged


@dataclass(frozen=True, slots=True)
class Books:
    """What a buffer file holds for the proof books: its counters, what waits, what was split."""

    counters: dict[str, int]  # table meta by key: committed, evicted, next_seq, retired, ...
    backlog_readings: int  # readings not frozen into a batch yet
    queued_alarm_events: int  # alarm events not in a batch yet
    frozen: tuple[tuple[int, int, int], ...]  # (seq, lane, records) of batches awaiting PUBACK
    retired: tuple[int, ...]  # seqs of batches split for the broker (delivered under new seqs)
    alarm_log_entries: int


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    db = connect(path, readonly=True)
    try:
        yield db
    finally:
        db.close()


def alarms(path: str | Path, open_only: bool = False, limit: int = 100) -> list[AlarmRow]:
    """Alarm log, newest first, at most `limit` rows (-1: all); `open_only` keeps the latest
    event of alarms not yet normal."""
    with _reading(path) as db:
        return alarmlog.entries(db, open_only, limit)


def open_alarm_counts(path: str | Path) -> dict[str, int]:
    """How many alarms are open (not back to normal) per device that has any."""
    with _reading(path) as db:
        return alarmlog.open_by_device(db)


def devices(path: str | Path) -> list[str]:
    """The devices this buffer knows, sorted: those of the daemon's last health snapshot and
    those the alarm log names (a device since removed from the config among them)."""
    with _reading(path) as db:
        snapshot = health.read(db)
        seen = {d.device for d in snapshot.devices} if snapshot is not None else set()
        return sorted(seen.union(alarmlog.devices(db)))


def request_ack(path: str | Path, alarm_id: str, who: str, note: str = "") -> None:
    """Queue an acknowledgement; the running daemon applies it within about a second."""
    db = connect(path)
    try:
        alarmlog.queue_ack(db, alarm_id, who, note)
    finally:
        db.close()


def gateway_health(path: str | Path) -> GatewayHealth | None:
    """The health snapshot the daemon last wrote; None if no daemon ever wrote one."""
    with _reading(path) as db:
        return health.read(db)


def buffer_stats(path: str | Path) -> BufferStats:
    """Counts of what is waiting to be sent."""
    with _reading(path) as db:

        def one(sql: str, *args: Any) -> int:
            row = db.execute(sql, args).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return BufferStats(
            backlog_readings=backlog_readings(db),
            pending_events=one("SELECT count(*) FROM events"),
            frozen_batches=one("SELECT count(*) FROM batches"),
            next_seq=get_meta(db, "next_seq", 1),
            evicted=get_meta(db, "evicted", 0),
            frozen_readings=one(
                "SELECT coalesce(sum(n), 0) FROM batches WHERE lane = ?", LANE_DATA
            ),
            oldest_unsent_ms=_oldest_unsent(db),
        )


def _oldest_unsent(db: sqlite3.Connection) -> int | None:
    """Sample time of the oldest unacknowledged reading, without reading the whole buffer.

    Readings reach the buffer in arrival order: the oldest is in the first backlog chunk (frozen
    backlog batches still keep theirs in `chunks`) or in the first data batch frozen directly.
    What wire cannot decode gives no time.
    """
    times: list[int] = []
    first = db.execute("SELECT n, body FROM chunks ORDER BY id LIMIT 1").fetchone()
    if first is not None:
        with contextlib.suppress(WireError):
            times.extend(r.ts_ms for r in chunk_records(*first))
    live = db.execute(
        "SELECT payload FROM batches WHERE lane = ? AND payload IS NOT NULL ORDER BY seq LIMIT 1",
        (LANE_DATA,),
    ).fetchone()
    if live is not None:
        with contextlib.suppress(WireError):
            times.extend(r.ts_ms for r in payload_records(live[0]))
    return min(times, default=None)


def frozen_data(path: str | Path, after_seq: int = 0) -> list[tuple[int, list[list[Any]]]]:
    """Data batches frozen (seq given) but not yet acknowledged: (seq, wire record rows).

    A backlog batch keeps its records in `chunks` (its `payload` is NULL until published);
    this reads both forms, so crew tools need not know the difference. Raises WireError for
    a batch wire cannot decode.
    """
    with _reading(path) as db:
        out = []
        for seq, payload, lo, hi in db.execute(
            "SELECT seq, payload, lo, hi FROM batches WHERE lane = ? AND seq > ? ORDER BY seq",
            (LANE_DATA, after_seq),
        ).fetchall():
            if payload is not None:
                records = list(payload_records(payload))
            else:
                records = []
                for n, body in db.execute(
                    "SELECT n, body FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi)
                ):
                    records.extend(chunk_records(n, body))
            out.append((seq, record_rows(records)))
        return out


class Follower:
    """Follows what a gateway stores: each `poll` returns what is new since the last one.

    Opens the file read-only (sqlite3.Error if it cannot); `start` says where to begin. Alarm
    log entries are never missed; readings are seen while they wait in the buffer (with the
    uplink down all of them, with it up most). Use it as a context manager, or `close` it.
    """

    def __init__(self, path: str | Path) -> None:
        self._db = connect(path, readonly=True)
        self._alarm_id = self._chunk_id = self._seq = 0

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, alarms_since_ms: int | None = None) -> None:
        """Begin after what the file holds now, or with the alarm log entries sampled at or
        after `alarms_since_ms` (UTC ms)."""
        self._alarm_id = alarmlog.follow_from(self._db, alarms_since_ms)
        self._chunk_id = self._db.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0]
        self._seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM batches").fetchone()[0]

    def poll(self) -> list[AlarmRow | Record]:
        """New alarm log entries, then new readings, each oldest first."""
        out: list[AlarmRow | Record] = []
        for entry_id, row in alarmlog.entries_after(self._db, self._alarm_id):
            self._alarm_id = entry_id
            out.append(row)
        for chunk_id, n, body in self._db.execute(
            "SELECT id, n, body FROM chunks WHERE id > ? ORDER BY id", (self._chunk_id,)
        ).fetchall():
            self._chunk_id = chunk_id
            with contextlib.suppress(WireError):
                out.extend(chunk_records(n, body))
        # Backlog batches keep their records in `chunks` (payload NULL), shown above already.
        for seq, payload in self._db.execute(
            "SELECT seq, payload FROM batches WHERE seq > ? AND lane = ? AND payload IS NOT NULL"
            " ORDER BY seq",
            (self._seq, LANE_DATA),
        ).fetchall():
            self._seq = seq
            with contextlib.suppress(WireError):
                out.extend(payload_records(payload))
        return out

    def close(self) -> None:
        """Close the read-only connection."""
        self._db.close()


def epoch(path: str | Path) -> str | None:
    """The buffer's epoch as its batches carry it; None before the daemon created it."""
    with _reading(path) as db:
        number = get_meta(db, "epoch", 0)
    return epoch_text(number) if number else None


def books(path: str | Path) -> Books:
    """The buffer's counters and what it still holds, for the proof books (read after the
    gateway stopped, or while it runs: each figure is read on its own)."""
    with _reading(path) as db:
        counters = all_meta(db)
        backlog = backlog_readings(db)
        queued = db.execute("SELECT count(*) FROM events WHERE lane = ?", (LANE_ALARM,)).fetchone()
        frozen = tuple(
            (int(seq), int(lane), int(n))
            for seq, lane, n in db.execute("SELECT seq, lane, n FROM batches")
        )
        retired: tuple[int, ...] = ()
        if "retired" in tables_of(db):  # a buffer of a daemon older than splitting has none
            retired = tuple(int(seq) for (seq,) in db.execute("SELECT seq FROM retired"))
        return Books(counters, backlog, int(queued[0]), frozen, retired, alarmlog.count(db))
