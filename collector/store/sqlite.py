"""SQLite backend: the embedded default for a demo or a small district."""

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lifeline.collector.models import Bucket, Reading
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.base import StoreDataError, StoreError, StoreUnavailable
from lifeline.collector.store.readings_sql import FlaggedRow, ReadingRow, decode_value
from lifeline.collector.store.rows import Cursor
from lifeline.collector.store.schema import Migration, migrations
from lifeline.collector.store.sql import BatchKey, KeyedDigest, SqlStore

log = logging.getLogger(__name__)

_READINGS = (
    "CREATE TABLE IF NOT EXISTS readings (gateway_id TEXT NOT NULL, device TEXT NOT NULL,"
    " point TEXT NOT NULL, ts_ms INTEGER NOT NULL, vtype INTEGER NOT NULL, value_num REAL,"
    " value_text TEXT, quality TEXT NOT NULL, historical INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS readings_device_point_ts ON readings (device, point, ts_ms)",
)
MIGRATIONS = migrations("sqlite", Migration(2, "readings", _READINGS))
_INSERT_COLS = "gateway_id, device, point, ts_ms, vtype, value_num, value_text, quality, historical"
_COLS = f"{_INSERT_COLS}, received_ms"
_INSERT_READING = f"INSERT INTO readings ({_INSERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_INSERT_FLAGGED = f"INSERT INTO readings ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_MIN_MS, _MAX_MS = -(2**62), 2**62
# Primary result codes (sqlite.org/rescode.html) in which the file, the disk or another
# process is the problem, not what we wrote: BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR,
# CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB. Others (CONSTRAINT, MISMATCH, TOOBIG, a plain
# ERROR from a statement the schema refuses) are about the data or the statement.
_SERVER_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def convert_error(exc: sqlite3.Error) -> StoreError:
    """The StoreError for an sqlite3 error: StoreUnavailable or StoreDataError, by result code."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if (code is not None and code & 0xFF in _SERVER_CODES) or (
        code is None and isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError)
    ):
        return StoreUnavailable(f"SQLite unavailable: {exc} ({name})")
    return StoreDataError(f"SQLite refused the data: {exc} ({name})")


def _reading(r: Any) -> Reading:
    value = decode_value(r[4], r[5], r[6])
    return Reading(r[0], r[1], r[2], r[3], value, r[7], bool(r[8]), r[9])


class SqliteStore(SqlStore):
    """One connection, serialized by a lock; WAL with synchronous=FULL.

    FULL rather than NORMAL because the collector acknowledges a batch to the broker right
    after the commit: a commit lost on power failure would be data the edge already deleted.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._known_epochs = {}
        self._lock = threading.RLock()
        try:
            if path != ":memory:" and not path.startswith("file:"):
                # The file holds webhook secrets and key digests: the service user's alone.
                # SQLite gives its -wal and -shm files the database file's mode.
                with contextlib.suppress(FileExistsError, FileNotFoundError):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=10000")
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {path}: {exc}") from exc

    @property
    def backend(self) -> str:
        """Which engine and layout."""
        return "sqlite"

    @property
    def write_concurrency(self) -> int:
        """One: SQLite has a single writer."""
        return 1

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._lock:
            try:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                    cur.execute("COMMIT")
                finally:
                    if self._conn.in_transaction:  # the body or the COMMIT failed
                        self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise convert_error(exc) from exc

    def ping(self) -> None:
        """Return if the database file answers a trivial query."""
        self._query("SELECT 1")

    def _sql(self, sql: str) -> str:
        return sql

    def migrate(self) -> list[int]:
        """Apply pending migrations in one transaction each; safe to run twice."""
        applied: list[int] = []
        with self._tx() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
            )
        for m in MIGRATIONS:
            with self._tx() as cur:
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,))
                if cur.fetchall():
                    continue
                for stmt in m.statements:
                    cur.execute(stmt)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (m.version, m.name, int(time.time() * 1000)),
                )
                applied.append(m.version)
        log.info("sqlite store %s: schema ready (applied %s)", self._path, applied or "nothing")
        return applied

    def _claim_keys(self, cur: Cursor, keys: list[KeyedDigest], now_ms: int) -> set[BatchKey]:
        fresh = set()
        for gw, epoch, seq, digest in keys:
            cur.execute(
                "INSERT INTO batch_keys (gateway_id, epoch, seq, received_ms, digest)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (gw, epoch, seq, now_ms, digest),
            )
            if cur.rowcount == 1:
                fresh.add((gw, epoch, seq))
        return fresh

    def _insert_readings(self, cur: Cursor, rows: list[ReadingRow]) -> None:
        cur.executemany(_INSERT_READING, rows)

    def _insert_flagged_readings(self, cur: Cursor, rows: list[FlaggedRow]) -> None:
        cur.executemany(_INSERT_FLAGGED, rows)

    def readings(
        self,
        device: str,
        point: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
        gateway: str | None = None,
        newest_first: bool = False,
    ) -> list[Reading]:
        """Raw readings of a device (of one gateway, if given; optionally one point) in
        [since, until), oldest first, or newest first (the `limit` newest) if asked."""
        direction = "DESC" if newest_first else "ASC"
        rows = self._query(
            f"SELECT {_COLS} FROM readings WHERE device = :dev"  # noqa: S608 - constant columns
            " AND (:gw IS NULL OR gateway_id = :gw)"
            " AND (:pt IS NULL OR point = :pt) AND ts_ms >= :since AND ts_ms < :until"
            f" ORDER BY ts_ms {direction}, point LIMIT :n",
            {
                "dev": device,
                "gw": gateway,
                "pt": point,
                "since": _MIN_MS if since_ms is None else since_ms,
                "until": _MAX_MS if until_ms is None else until_ms,
                "n": limit,
            },
        )
        return [_reading(r) for r in rows]

    def series(
        self,
        device: str,
        point: str,
        since_ms: int,
        until_ms: int,
        bucket_ms: int,
        gateway: str | None = None,
    ) -> list[Bucket]:
        """Numeric readings bucketed (aligned to the epoch) into min/avg/max; ValueError if
        bucket_ms is not positive."""
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        rows = self._query(
            "SELECT (ts_ms / :b) * :b AS bucket, count(*), min(value_num), avg(value_num),"
            " max(value_num) FROM readings WHERE device = :dev AND point = :pt"
            " AND (:gw IS NULL OR gateway_id = :gw)"
            " AND ts_ms >= :since AND ts_ms < :until AND vtype IN (1, 2, 3)"
            " GROUP BY bucket ORDER BY bucket",
            {
                "b": bucket_ms,
                "dev": device,
                "pt": point,
                "gw": gateway,
                "since": since_ms,
                "until": until_ms,
            },
        )
        return [Bucket(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def latest(
        self,
        device: str | None = None,
        gateway: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[Reading]:
        """The newest reading of every (gateway, device, point), optionally for one device
        and/or one gateway; with `scope`, of the devices in scope only (scope_sql)."""
        params: dict[str, Any] = {"dev": device, "gw": gateway}
        mine = ""
        if scope is not None:
            mine = f" AND {scoped.device_in('gateway_id', 'device', scope, params)}"
        # SQLite fills bare columns from the row holding max(): exactly the newest reading.
        rows = self._query(
            "SELECT gateway_id, device, point, max(ts_ms), vtype, value_num, value_text,"  # noqa: S608 - placeholders only
            " quality, historical, received_ms FROM readings WHERE (:dev IS NULL OR device = :dev)"
            f" AND (:gw IS NULL OR gateway_id = :gw){mine}"
            " GROUP BY gateway_id, device, point ORDER BY device, gateway_id, point",
            params,
        )
        return [_reading(r) for r in rows]

    def count_readings(self) -> int:
        """Total stored readings."""
        return int(self._query("SELECT count(*) FROM readings")[0][0])
