"""The buffer file's tables, the columns added to older files, its counters and connections.

One SQLite database in WAL mode per gateway (`buffer.path`). Its tables, by the module that
writes them:
- `meta`: counters that outlive the process (the epoch, next seq, next alarm number, readings
  committed, evicted, batches retired) -- this module;
- `chunks`, `events`, `batches`, `retired`: the outbox (outbox.py);
- `alarm_log`, `ack_requests`: the alarm log and its acknowledgement queue (alarmlog.py);
- `daemon`, `health`: the health snapshot (health.py).
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

# The `lane` of an event or a batch: alarms go first, then device events, then telemetry.
LANE_ALARM, LANE_DEVICE, LANE_DATA = 0, 1, 2
MMAP_BYTES = 64 * 1024 * 1024  # of the buffer file read through a memory map

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- AUTOINCREMENT: ids are never reused once the buffer drains empty, because frozen batches and
-- the in-memory high-water mark of frozen chunks refer to chunks by id.
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, lane INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, lane INTEGER NOT NULL, n INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, session TEXT NOT NULL,
    payload BLOB,  -- NULL: the records are chunks lo..hi, wrapped at publish time
    lo INTEGER, hi INTEGER);
-- (batches.place, added to older buffers by create(): see BATCH_COLUMNS)
CREATE TABLE IF NOT EXISTS alarm_log (
    id INTEGER PRIMARY KEY, alarm_id TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,
    alarm_type TEXT NOT NULL, severity INTEGER NOT NULL, state TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, value, limit_value, message TEXT NOT NULL,
    ack_by TEXT, ack_note TEXT);
CREATE INDEX IF NOT EXISTS alarm_log_alarm ON alarm_log (alarm_id, id);
CREATE INDEX IF NOT EXISTS alarm_log_ts ON alarm_log (ts_ms);
-- Frozen batches the broker refused as too large, split into batches first_seq..last_seq: their
-- own seqs are never delivered (the books count them here, beside the batches still waiting).
CREATE TABLE IF NOT EXISTS retired (
    seq INTEGER PRIMARY KEY, lane INTEGER NOT NULL, n INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, retired_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ack_requests (
    id INTEGER PRIMARY KEY, alarm_id TEXT NOT NULL, who TEXT NOT NULL, note TEXT NOT NULL,
    requested_ms INTEGER NOT NULL);
-- The health snapshot: one row about the daemon and its uplink, one per device.
CREATE TABLE IF NOT EXISTS daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL, stopped_ms INTEGER,  -- NULL while it runs
    uplink_connected INTEGER NOT NULL, uplink_since_ms INTEGER NOT NULL,
    uplink_error TEXT NOT NULL, uplink_error_ms INTEGER, last_puback_ms INTEGER);
-- Columns added after the first release are also in DAEMON_COLUMNS (added to older buffers).
CREATE TABLE IF NOT EXISTS health (
    device TEXT PRIMARY KEY, state TEXT NOT NULL, since_ms INTEGER NOT NULL,
    last_ok_ms INTEGER, last_error TEXT NOT NULL, last_error_ms INTEGER,
    timeouts INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '');
"""
# Columns of `health` newer than its first schema: added to an older buffer when opened.
HEALTH_COLUMNS = {"timeouts": "INTEGER NOT NULL DEFAULT 0", "detail": "TEXT NOT NULL DEFAULT ''"}

# Columns of `daemon` newer than the first schema: added to an older buffer when opened.
DAEMON_COLUMNS = {
    "clock_plausible": "INTEGER NOT NULL DEFAULT 1",
    "clock_step_ms": "INTEGER NOT NULL DEFAULT 0",
    "clock_step_at_ms": "INTEGER",
    "clock_steps": "INTEGER NOT NULL DEFAULT 0",
    "disk_full_since_ms": "INTEGER",
    "disk_dropped": "INTEGER NOT NULL DEFAULT 0",
    "buffer_cap_bytes": "INTEGER",
}

# Columns of `batches` newer than the first schema. `place` orders a lane where it is not the
# seq: the batches a split made take the split batch's place (NULL: the seq is the place).
BATCH_COLUMNS = {"place": "REAL"}


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the buffer database (WAL; readers in other processes do not block the daemon).

    `readonly` opens it for a crew tool: no file is created, nothing can be written. Returns a
    connection in autocommit mode (transactions are begun explicitly); raises sqlite3.Error.
    """
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=4000")  # fewer checkpoints (each one syncs)
        # Some SQLite builds (this Python's among them) default to secure_delete=ON, which
        # rewrites every deleted reading with zeros: that doubled the cost of draining and
        # wears the SD card. FAST zeroes only pages that are written anyway.
        conn.execute("PRAGMA secure_delete=FAST")
        # Draining reads every chunk once: through a map, not a read() per 4 KiB page (about
        # 15 % less CPU per drained batch). The mapped pages are the kernel's page cache.
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def create(db: sqlite3.Connection) -> None:
    """Create what the file lacks of this schema: tables, and the columns an older daemon did
    not have (new columns only; nothing is ever dropped or rewritten). Raises sqlite3.Error."""
    db.executescript(SCHEMA)
    added = (("daemon", DAEMON_COLUMNS), ("batches", BATCH_COLUMNS), ("health", HEALTH_COLUMNS))
    for table, columns in added:
        have = columns_of(db, table)
        for name, decl in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def tables_of(db: sqlite3.Connection) -> set[str]:
    """Names of the tables (and indexes) the file has: an older daemon's file lacks some."""
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}


def columns_of(db: sqlite3.Connection, table: str) -> set[str]:
    """Names of the columns `table` has in this file (an older daemon's file has fewer)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def get_meta(db: sqlite3.Connection, key: str, default: int) -> int:
    """The counter `key` of table `meta`, or `default` if it was never written."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else default


def set_meta(db: sqlite3.Connection, key: str, value: int) -> None:
    """Write counter `key`; inside the caller's transaction (it decides the sync level)."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def all_meta(db: sqlite3.Connection) -> dict[str, int]:
    """Every counter of table `meta` by key (what the proof books account against)."""
    return {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}


def new_epoch_number() -> int:
    """A fresh epoch for a new buffer: random, never 0, always 11 hex digits."""
    return secrets.randbits(40) | 1 << 40


def epoch_text(number: int) -> str:
    """The epoch as batches carry it (hex), from its number in `meta`."""
    return f"{number:x}"
