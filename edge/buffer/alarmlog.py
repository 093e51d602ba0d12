"""The gateway's local alarm log and the queue of acknowledgements the crew made at the cabinet.

`alarm_log` keeps every alarm event (ISA-18.2 state changes) the rules raised, in the order they
were raised, for as long as `alarm_retention_days` (an alarm still open is never pruned); it is
written in the same FULL-sync transaction as the event's lane (outbox.py), so an alarm sent is
an alarm logged. The daemon restores its alarm picture from it after a restart. `ack_requests`
is filled by the crew tool (`lifeline edge ack`, another process) and emptied by the daemon,
which owns the alarm state and applies them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lifeline.edge.buffer.file import BufferFile
from lifeline.edge.buffer.schema import get_meta, set_meta
from lifeline.edge.clock import wall_ms
from lifeline.wire import AlarmEvent, AlarmState, Severity, alarm_fields

_COLUMNS = (
    "alarm_id, device, point, alarm_type, severity, state, ts_ms, value, limit_value,"
    " message, ack_by, ack_note"
)
# The latest entry of every alarm that is not back to normal: the alarm picture. Every question
# about open alarms selects from it (restoring the rules, pruning, `alarms --active`, status).
_OPEN = (
    "(SELECT * FROM alarm_log WHERE id IN (SELECT max(id) FROM alarm_log GROUP BY alarm_id)"
    " AND state != 'normal')"
)


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm log entry, as the crew tools show it."""

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


class AlarmLog:
    """The alarm log and the acknowledgement queue, as the daemon writes and reads them."""

    def __init__(self, file: BufferFile) -> None:
        self.file = file

    def log(self, events: Sequence[AlarmEvent]) -> None:
        """Append alarm events, inside the caller's transaction (the outbox's FULL one)."""
        self.file.db.executemany(
            "INSERT INTO alarm_log (alarm_id, device, point, alarm_type, severity, state,"
            " ts_ms, value, limit_value, message, ack_by, ack_note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [alarm_fields(e) for e in events],
        )

    def open_alarms(self) -> list[AlarmEvent]:
        """The latest event of every alarm not back to normal (to restore rules after restart),
        in the order they were logged."""
        # The only interpolated text is constant SQL of this module.
        rows = self.file.db.execute(f"SELECT {_COLUMNS} FROM {_OPEN} ORDER BY id").fetchall()  # noqa: S608
        return [_event(r) for r in rows]

    def next_alarm_number(self) -> int:
        """Take the next alarm number from a persisted counter (ids never repeat in an epoch).

        Raises BufferFull if even that cannot be written.
        """

        def take() -> int:
            n = get_meta(self.file.db, "next_alarm", 1)
            set_meta(self.file.db, "next_alarm", n + 1)
            return n

        return self.file.write(take, "FULL")

    def take_ack_requests(self) -> list[tuple[str, str, str]]:
        """Acknowledgements queued by the crew CLI: (alarm id, who, note), removed once read.

        Returns [] while the disk is full (they stay queued for the next look).
        """
        db = self.file.db

        def take() -> list[tuple[str, str, str]]:
            rows = db.execute(
                "SELECT id, alarm_id, who, note FROM ack_requests ORDER BY id"
            ).fetchall()
            if rows:
                db.execute("DELETE FROM ack_requests WHERE id <= ?", (rows[-1][0],))
            return [(a, w, n) for _, a, w, n in rows]

        done, taken = self.file.attempt(take, "NORMAL")
        return taken if done and taken is not None else []

    def prune(self, retention_days: float) -> int:
        """Delete entries older than the retention, except those of alarms still open; how many
        went (0 while the disk is full)."""
        cutoff = wall_ms() - int(retention_days * 86_400_000)

        def delete() -> int:
            return self.file.db.execute(
                f"DELETE FROM alarm_log WHERE ts_ms < ? AND alarm_id NOT IN"  # noqa: S608
                f" (SELECT alarm_id FROM {_OPEN})",
                (cutoff,),
            ).rowcount

        done, deleted = self.file.attempt(delete, "NORMAL")
        return deleted if done and deleted is not None else 0


def _event(r: Sequence[Any]) -> AlarmEvent:
    return AlarmEvent(
        alarm_id=r[0],
        device=r[1],
        point=r[2],
        alarm_type=r[3],
        severity=Severity(r[4]),
        state=AlarmState(r[5]),
        ts_ms=r[6],
        value=r[7],
        limit=r[8],
        message=r[9],
        ack_by=r[10],
        ack_note=r[11],
    )


# --- read by crew tools from another process (through views.py) --------------------------------


def entries(db: sqlite3.Connection, open_only: bool, limit: int) -> list[AlarmRow]:
    """Alarm log entries, newest first, at most `limit` (-1: all); `open_only` keeps the latest
    of alarms not yet normal."""
    source = _OPEN if open_only else "alarm_log"
    # The only interpolated text is constant SQL of this module; values are bound parameters.
    sql = f"SELECT {_COLUMNS} FROM {source} ORDER BY id DESC LIMIT ?"  # noqa: S608
    return [AlarmRow(*r) for r in db.execute(sql, (limit,))]


def open_by_device(db: sqlite3.Connection) -> dict[str, int]:
    """How many alarms are open (not back to normal) per device that has any."""
    rows = db.execute(f"SELECT device, count(*) FROM {_OPEN} GROUP BY device")  # noqa: S608
    return dict(rows.fetchall())


def devices(db: sqlite3.Connection) -> list[str]:
    """Every device the log has an entry of, sorted."""
    return [r[0] for r in db.execute("SELECT DISTINCT device FROM alarm_log ORDER BY device")]


def entries_after(db: sqlite3.Connection, after_id: int) -> list[tuple[int, AlarmRow]]:
    """Entries logged after entry `after_id`, oldest first, each with its own id."""
    rows = db.execute(
        f"SELECT id, {_COLUMNS} FROM alarm_log WHERE id > ? ORDER BY id",  # noqa: S608
        (after_id,),
    ).fetchall()
    return [(row[0], AlarmRow(*row[1:])) for row in rows]


def follow_from(db: sqlite3.Connection, since_ms: int | None) -> int:
    """Where a reader that follows the log starts (`entries_after` this id): after the latest
    entry, or with `since_ms` (UTC) before the first entry sampled at or after it, if any."""
    latest = int(db.execute("SELECT coalesce(max(id), 0) FROM alarm_log").fetchone()[0])
    if since_ms is not None:
        first = db.execute("SELECT min(id) FROM alarm_log WHERE ts_ms >= ?", (since_ms,)).fetchone()
        if first[0] is not None:
            return int(first[0]) - 1
    return latest


def count(db: sqlite3.Connection) -> int:
    """Entries in the alarm log."""
    return int(db.execute("SELECT count(*) FROM alarm_log").fetchone()[0])


def queue_ack(db: sqlite3.Connection, alarm_id: str, who: str, note: str) -> None:
    """Queue an acknowledgement for the daemon, in its own transaction (`db` may be another
    process's connection). Raises sqlite3.Error."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO ack_requests (alarm_id, who, note, requested_ms) VALUES (?, ?, ?, ?)",
            (alarm_id, who, note, wall_ms()),
        )
