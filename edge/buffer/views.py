"""Read-only views of a running gateway's buffer for crew tools (alarm log, buffer, health).

Opens the database read-only in WAL mode, so it never blocks the daemon; acknowledgements
are queued for the daemon to apply (it owns the alarm state).
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edge.buffer.outbox import HEALTH_EVERY_S, DeviceHealth, GatewayHealth
from edge.buffer.schema import DAEMON_COLUMNS, LANE_DATA, columns_of, connect, tables_of

# A daemon whose heartbeat is this old is gone (killed, hung or powered off): it rewrites
# the snapshot every HEALTH_EVERY_S.
DAEMON_STALE_MS = int(4 * HEALTH_EVERY_S * 1000)


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
    frozen_readings: int = 0  # readings in data batches awaiting their PUBACK
    oldest_unsent_ms: int | None = None  # sample time of the oldest reading not yet acknowledged


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

        def one(sql: str, *args: Any) -> int:
            row = db.execute(sql, args).fetchone()
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
            frozen_readings=one(
                "SELECT coalesce(sum(n), 0) FROM batches WHERE lane = ?", LANE_DATA
            ),
            oldest_unsent_ms=_oldest_unsent(db),
        )
    finally:
        db.close()


def _oldest_unsent(db: sqlite3.Connection) -> int | None:
    """Sample time of the oldest unacknowledged reading, without reading the whole buffer.

    Readings reach the buffer in arrival order: the oldest is in the first backlog chunk (frozen
    backlog batches still keep theirs in `chunks`) or in the first data batch frozen directly.
    """
    times: list[int] = []
    first = db.execute("SELECT body FROM chunks ORDER BY id LIMIT 1").fetchone()
    if first is not None:
        times.extend(row[2] for row in msgpack.Unpacker(io.BytesIO(first[0]), raw=False))
    live = db.execute(
        "SELECT payload FROM batches WHERE lane = ? AND payload IS NOT NULL ORDER BY seq LIMIT 1",
        (LANE_DATA,),
    ).fetchone()
    if live is not None:
        times.extend(row[2] for row in msgpack.unpackb(live[0], raw=False)["b"])
    return min(times, default=None)


_HEALTH_QUERY_V1 = (
    "SELECT device, state, since_ms, last_ok_ms, last_error, last_error_ms"
    " FROM health ORDER BY device"
)
_HEALTH_QUERY = (
    "SELECT device, state, since_ms, last_ok_ms, last_error, last_error_ms, timeouts, detail"
    " FROM health ORDER BY device"
)


def gateway_health(path: str | Path) -> GatewayHealth | None:
    """The health snapshot the daemon last wrote; None if no daemon ever wrote one."""
    db = connect(path, readonly=True)
    try:
        if not {"daemon", "health"} <= tables_of(db):  # a buffer written by an older daemon
            return None
        have = columns_of(db, "daemon")
        newer = [c for c in DAEMON_COLUMNS if c in have]  # an older daemon wrote fewer
        columns = ", ".join(
            [
                "pid, started_ms, heartbeat_ms, stopped_ms, uplink_connected, uplink_since_ms,"
                " uplink_error, uplink_error_ms, last_puback_ms",
                *newer,
            ]
        )
        # The only interpolated text is column names from DAEMON_COLUMNS, a constant.
        sql = f"SELECT {columns} FROM daemon WHERE id = 1"  # noqa: S608
        row = db.execute(sql).fetchone()
        if row is None:
            return None
        query = (  # an older daemon's buffer has no timeouts and detail yet
            _HEALTH_QUERY
            if {"timeouts", "detail"} <= columns_of(db, "health")
            else _HEALTH_QUERY_V1
        )
        devices = tuple(DeviceHealth(*r) for r in db.execute(query))
        pid, started, heartbeat, stopped, connected, since, error, error_ms, puback = row[:9]
        extra: dict[str, Any] = dict(zip(newer, row[9:], strict=True))
        if "clock_plausible" in extra:
            extra["clock_plausible"] = bool(extra["clock_plausible"])
        return GatewayHealth(
            pid,
            started,
            heartbeat,
            stopped,
            bool(connected),
            since,
            error,
            error_ms,
            puback,
            devices,
            **extra,
        )
    finally:
        db.close()


def daemon_running(h: GatewayHealth | None, now_ms: int) -> tuple[bool, str]:
    """Whether the daemon that wrote `h` still runs, and why we think so (or not)."""
    if h is None:
        return False, "no daemon has written a heartbeat to this buffer"
    if h.stopped_ms is not None:
        return False, "stopped"
    age_s = (now_ms - h.heartbeat_ms) // 1000
    if now_ms - h.heartbeat_ms > DAEMON_STALE_MS:
        return False, f"no heartbeat for {age_s} s (killed or hung?)"
    if not _pid_alive(h.pid):
        return False, f"process {h.pid} is gone (killed?)"
    return True, f"pid {h.pid}, heartbeat {age_s} s ago"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user (the gateway's service account)
        return True
    return True


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
