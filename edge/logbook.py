"""Read-only views of a running gateway's buffer for crew tools (alarm log, buffer depth).

Opens the database read-only in WAL mode, so it never blocks the daemon; acknowledgements
are queued for the daemon to apply (it owns the alarm state).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edge.outbox import LANE_DATA, connect


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm log entry."""

    alarm_id: str
    device: str
    point: str
    alarm_type: str
    severity: int
    state: str
    ts_ms: int
    value: object
    limit: object
    message: str
    ack_by: str | None
    ack_note: str | None


@dataclass(frozen=True, slots=True)
class BufferStats:
    """How much is waiting in the buffer."""

    backlog_readings: int
    pending_events: int
    frozen_batches: int
    next_seq: int
    evicted: int


_ALARM_COLUMNS = (
    "alarm_id, device, point, alarm_type, severity, state, ts_ms, value, limit_value,"
    " message, ack_by, ack_note"
)


def alarms(path: str | Path, open_only: bool = False, limit: int = 100) -> list[AlarmRow]:
    """Alarm log, newest first; `open_only` keeps the latest event of alarms not yet normal."""
    db = connect(path, readonly=True)
    # The only interpolated text is the constant column list; values are bound parameters.
    try:
        if open_only:
            sql = (
                f"SELECT {_ALARM_COLUMNS} FROM alarm_log WHERE id IN"  # noqa: S608
                " (SELECT max(id) FROM alarm_log GROUP BY alarm_id) AND state != 'normal'"
                " ORDER BY id DESC LIMIT ?"
            )
        else:
            sql = f"SELECT {_ALARM_COLUMNS} FROM alarm_log ORDER BY id DESC LIMIT ?"  # noqa: S608
        return [AlarmRow(*r) for r in db.execute(sql, (limit,))]
    finally:
        db.close()


def buffer_stats(path: str | Path) -> BufferStats:
    """Counts of what is waiting to be sent."""
    db = connect(path, readonly=True)
    try:

        def one(sql: str) -> int:
            row = db.execute(sql).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return BufferStats(
            backlog_readings=one(
                "SELECT coalesce(sum(n), 0) FROM chunks"
                " WHERE id > (SELECT coalesce(max(hi), 0) FROM batches)"
            ),
            pending_events=one("SELECT count(*) FROM events"),
            frozen_batches=one("SELECT count(*) FROM batches"),
            next_seq=one("SELECT value FROM meta WHERE key = 'next_seq'") or 1,
            evicted=one("SELECT value FROM meta WHERE key = 'evicted'"),
        )
    finally:
        db.close()


def request_ack(path: str | Path, alarm_id: str, who: str, note: str = "") -> None:
    """Queue an acknowledgement; the running daemon applies it within about a second."""
    db = connect(path)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO ack_requests (alarm_id, who, note, requested_ms) VALUES (?, ?, ?, ?)",
                (alarm_id, who, note, time.time_ns() // 1_000_000),
            )
    finally:
        db.close()


def frozen_data(path: str | Path, after_seq: int = 0) -> list[tuple[int, list[list[Any]]]]:
    """Data batches frozen (seq given) but not yet acknowledged: (seq, wire record rows).

    A backlog batch keeps its records in `chunks` (its `payload` is NULL until published);
    this reads both forms, so crew tools need not know the difference.
    """
    db = connect(path, readonly=True)
    try:
        out = []
        for seq, payload, lo, hi in db.execute(
            "SELECT seq, payload, lo, hi FROM batches WHERE lane = ? AND seq > ? ORDER BY seq",
            (LANE_DATA, after_seq),
        ).fetchall():
            if payload is not None:
                rows = list(msgpack.unpackb(payload, raw=False)["b"])
            else:
                rows = []
                for (body,) in db.execute(
                    "SELECT body FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi)
                ):
                    rows.extend(msgpack.Unpacker(io.BytesIO(body), raw=False))
            out.append((seq, rows))
        return out
    finally:
        db.close()
