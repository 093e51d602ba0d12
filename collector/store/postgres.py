"""PostgreSQL backend (psycopg 3 + pool): binary COPY for readings, TimescaleDB when available.

Without the timescaledb extension, readings are natively range-partitioned by day, with
partitions created ahead automatically and a DEFAULT partition catching anything outside them.
"""

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import mul, sub
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from lifeline.collector.models import Bucket, Incoming, Reading, WriteResult
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.base import StoreDataError, StoreError, StoreUnavailable
from lifeline.collector.store.readings_sql import (
    V_FLOAT,
    FlaggedRow,
    ReadingRow,
    decode_value,
    encode_value,
)
from lifeline.collector.store.rows import Cursor
from lifeline.collector.store.schema import Migration, migrations
from lifeline.collector.store.sql import BatchKey, KeyedDigest, SqlStore
from lifeline.wire import DataBatch, Quality

log = logging.getLogger(__name__)
# The pool logs every failed reconnection attempt; the store logs the state change once itself.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
DAY_MS = 86_400_000
PARTITIONS_AHEAD_DAYS = 7
_LOCK_ID = 0x11FE11E  # advisory lock serializing migrations and partition creation
# Seconds to wait for a pooled connection: normally, and once the server is known unreachable
# (then API calls and /readyz answer 503 at once instead of after the normal wait).
POOL_TIMEOUT_S = 10.0
FAST_FAIL_S = 1.0
PING_TIMEOUT_S = 2.0
# SQLSTATE classes (PostgreSQL Appendix A) in which the server, not our data, is the problem:
# 08 connection exception, 40 transaction rollback (deadlock, serialization), 53 insufficient
# resources (disk full, out of memory, too many connections), 55 object not in prerequisite
# state (lock not available), 57 operator intervention (shutdown, cancel), 58 system error
# (I/O), XX internal error. Everything else (22 data exception, 23 integrity constraint
# violation, P0 a trigger's RAISE, 42 a statement the schema refuses) is about what we sent.
_SERVER_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})


def convert_error(exc: psycopg.Error) -> StoreError:
    """The StoreError for a psycopg error: StoreUnavailable or StoreDataError, by SQLSTATE."""
    state = exc.sqlstate or ""
    message = (exc.diag.message_primary if state else None) or str(exc).strip()
    message = (message or type(exc).__name__) + (f" (SQLSTATE {state})" if state else "")
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return StoreUnavailable(f"PostgreSQL unreachable: {message}")
    if state[:2] in _SERVER_CLASSES or (
        not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    ):
        return StoreUnavailable(f"PostgreSQL unavailable: {message}")
    return StoreDataError(f"PostgreSQL refused the data: {message}")


TIMESCALE = "timescaledb"
PARTITIONED = "postgres-partitioned"

_READING_COLUMNS = (
    "gateway_id TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,"
    " ts TIMESTAMPTZ NOT NULL, vtype SMALLINT NOT NULL, value_num DOUBLE PRECISION,"
    " value_text TEXT, quality TEXT NOT NULL, historical BOOLEAN NOT NULL"
)
_INSERT_COLS = "gateway_id, device, point, ts, vtype, value_num, value_text, quality, historical"
_COLS = f"{_INSERT_COLS}, received_ms"
_COPY = f"COPY readings ({_INSERT_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_FLAGGED = f"COPY readings ({_COLS}) FROM STDIN (FORMAT BINARY)"
# The binary wire format of timestamptz is int64 microseconds since 2000-01-01 UTC, so sending
# that integer as int8 skips building a datetime per row (the server reads the same 8 bytes).
COPY_TYPES = ["text", "text", "text", "int8", "int2", "float8", "text", "text", "bool"]
PG_EPOCH_MS = 946_684_800_000
_QUALITY = {q: q.value for q in Quality}
_INDEX = "CREATE INDEX IF NOT EXISTS readings_device_point_ts ON readings (device, point, ts)"

PARTITIONED_READINGS = (
    f"CREATE TABLE IF NOT EXISTS readings ({_READING_COLUMNS}) PARTITION BY RANGE (ts)",
    "CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings DEFAULT",
    _INDEX,
)
TIMESCALE_READINGS = (
    f"CREATE TABLE IF NOT EXISTS readings ({_READING_COLUMNS})",
    "SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',"
    " if_not_exists => TRUE)",
    _INDEX,
    "ALTER TABLE readings SET (timescaledb.compress,"
    " timescaledb.compress_segmentby = 'device, point', timescaledb.compress_orderby = 'ts')",
    "SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE)",
    "SELECT add_retention_policy('readings', INTERVAL '400 days', if_not_exists => TRUE)",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly WITH (timescaledb.continuous) AS"
    " SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, device, point, count(value_num) AS n,"
    " min(value_num) AS min, avg(value_num) AS avg, max(value_num) AS max FROM readings"
    " WHERE vtype IN (1, 2, 3) GROUP BY bucket, device, point WITH NO DATA",
    "SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => INTERVAL '3 days',"
    " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes',"
    " if_not_exists => TRUE)",
)


@lru_cache(maxsize=512)
def _to_pyformat(sql: str) -> str:
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql)


def ms_to_dt(ms: int) -> datetime:
    """UTC milliseconds to an aware datetime, exactly."""
    return EPOCH + timedelta(milliseconds=ms)


def dt_to_ms(dt: datetime) -> int:
    """An aware datetime to UTC milliseconds, exactly."""
    return (dt - EPOCH) // _MS


def _reading(r: Any) -> Reading:
    value = decode_value(r[4], r[5], r[6])
    return Reading(r[0], r[1], r[2], dt_to_ms(r[3]), value, r[7], bool(r[8]), r[9])


class PostgresStore(SqlStore):
    """PostgreSQL through a psycopg connection pool."""

    def __init__(self, url: str, pool_size: int = 4) -> None:
        self._url = url
        self._known_epochs = {}
        self._down: str | None = None  # why the server is unreachable, while it is
        self._down_lock = threading.Lock()
        try:
            # One direct attempt first: it fails fast with the server's own reason.
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            self._pool = ConnectionPool(
                url,
                # A new connection to a host that drops packets must not hang for minutes.
                kwargs={"connect_timeout": 5},
                min_size=1,
                max_size=pool_size,
                open=True,
                timeout=POOL_TIMEOUT_S,
                name="collector",
                # After a database restart pooled connections are dead: test before handing out.
                check=ConnectionPool.check_connection,
            )
            self._pool.wait(timeout=30)
        except psycopg.Error as exc:  # PoolTimeout names the server's reason
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        self._layout = ""
        self._horizon_ms = 0

    @property
    def backend(self) -> str:
        """Which engine and layout: timescaledb or postgres-partitioned."""
        return self._layout or "postgres"

    @property
    def write_concurrency(self) -> int:
        """Two, leaving the rest of the pool to the API."""
        # A second transaction keeps the server busy while ingest prepares the next batch.
        return max(1, min(2, self._pool.max_size - 1))

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()

    @contextmanager
    def _connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in one transaction (committed on normal exit); psycopg errors
        leave as StoreError. Once the server is known unreachable, waits only FAST_FAIL_S."""
        wait = timeout if timeout is not None else (FAST_FAIL_S if self._down else POOL_TIMEOUT_S)
        try:
            with self._pool.connection(timeout=wait) as conn:
                yield conn
        except psycopg.Error as exc:
            error = convert_error(exc)
            if isinstance(error, StoreUnavailable):
                self._set_down(str(error))
            raise error from exc
        if self._down:
            self._set_down(None)

    def _set_down(self, reason: str | None) -> None:
        """Record (and log once) that the server became unreachable, or reachable again."""
        with self._down_lock:
            was, self._down = self._down, reason
        if reason is not None and was is None:
            log.warning("database unreachable: %s", reason)
        elif reason is None and was is not None:
            log.warning("database reachable again")

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._connection() as conn, conn.cursor() as cur:
            yield cur

    def ping(self) -> None:
        """Return if the server answers a trivial query within PING_TIMEOUT_S."""
        with self._connection(PING_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")

    def _sql(self, sql: str) -> str:
        return _to_pyformat(sql)

    # --- schema -------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations under an advisory lock; safe to run twice or concurrently."""
        applied: list[int] = []
        with self._connection(30) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT value FROM store_meta WHERE key = 'readings_layout'")
            row = cur.fetchone()
            layout = row[0] if row else self._detect_layout(cur)
            every = migrations(
                "postgres",
                Migration(
                    2,
                    f"readings ({layout})",
                    TIMESCALE_READINGS if layout == TIMESCALE else PARTITIONED_READINGS,
                ),
            )
            for m in every:
                if m.version in done:
                    continue
                for stmt in m.statements:
                    cur.execute(stmt)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (m.version, m.name, int(time.time() * 1000)),
                )
                applied.append(m.version)
            cur.execute(
                "INSERT INTO store_meta VALUES ('readings_layout', %s) ON CONFLICT DO NOTHING",
                (layout,),
            )
        self._layout = layout
        log.info("postgres store: readings layout %s, applied %s", layout, applied or "nothing")
        if layout == PARTITIONED:
            self.ensure_partitions(int(time.time() * 1000))
        return applied

    @staticmethod
    def _detect_layout(cur: psycopg.Cursor[Any]) -> str:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        if not cur.fetchone():
            log.info("timescaledb is not available: using native range partitioning")
            return PARTITIONED
        cur.execute("SAVEPOINT tsdb")
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            # Installed but not preloaded (shared_preload_libraries) or not permitted.
            cur.execute("ROLLBACK TO SAVEPOINT tsdb")
            log.warning("timescaledb present but unusable (%s): using partitioning", exc)
            return PARTITIONED
        log.info("timescaledb available: using a hypertable")
        return TIMESCALE

    def ensure_partitions(self, now_ms: int, ahead_days: int = PARTITIONS_AHEAD_DAYS) -> None:
        """Create daily partitions from yesterday to `ahead_days` ahead (partitioned layout)."""
        first = now_ms // DAY_MS - 1
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            for day in range(first, first + ahead_days + 2):
                start = ms_to_dt(day * DAY_MS)
                name = f"readings_p{start:%Y%m%d}"
                cur.execute("SAVEPOINT part")
                try:
                    # DDL takes no parameters; the bounds are our own ISO timestamps.
                    end = ms_to_dt((day + 1) * DAY_MS)
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings"
                        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                except psycopg.errors.CheckViolation:
                    # Rows for that day already sit in the DEFAULT partition: leave them there.
                    cur.execute("ROLLBACK TO SAVEPOINT part")
                    log.warning("partition %s skipped: the default partition holds its rows", name)
        self._horizon_ms = (first + ahead_days + 2) * DAY_MS

    # --- ingest -------------------------------------------------------------------------------

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        """Commit a batch in one transaction, first extending partitions if the horizon nears."""
        if self._layout == PARTITIONED and now_ms > self._horizon_ms - 3 * DAY_MS:
            self.ensure_partitions(now_ms)
        return super().write(items, now_ms)

    def _claim_keys(self, cur: Cursor, keys: list[KeyedDigest], now_ms: int) -> set[BatchKey]:
        # Sorted so that concurrent collectors lock keys in the same order (no deadlocks).
        keys = sorted(keys, key=lambda k: k[:3])
        cur.execute(
            "INSERT INTO batch_keys (gateway_id, epoch, seq, received_ms, digest)"
            " SELECT g, e, s, %s, d FROM unnest(%s::text[], %s::text[], %s::bigint[],"
            " %s::bytea[]) AS k(g, e, s, d) ON CONFLICT DO NOTHING"
            " RETURNING gateway_id, epoch, seq",
            (
                now_ms,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
            ),
        )
        return {(r[0], r[1], r[2]) for r in cur.fetchall()}

    def _stored_digests(self, cur: Cursor, keys: list[BatchKey]) -> dict[BatchKey, bytes | None]:
        if not keys:
            return {}
        cur.execute(
            "SELECT b.gateway_id, b.epoch, b.seq, b.digest FROM batch_keys b"
            " JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS k(g, e, s)"
            " ON b.gateway_id = k.g AND b.epoch = k.e AND b.seq = k.s",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        return {(r[0], r[1], r[2]): None if r[3] is None else bytes(r[3]) for r in cur.fetchall()}

    @staticmethod
    def _reading_rows(msg: DataBatch) -> Iterator[ReadingRow]:
        # The hot path: a batch of floats (most telemetry) becomes rows in a few C-level
        # passes over its columns, with no Python code per reading; others go one by one.
        if not msg.records:
            return iter(())
        devices, points, stamps, values, qualities, hists = zip(*msg.records, strict=True)
        if set(map(type, values)) != {float}:
            return PostgresStore._mixed_rows(msg)
        micros = map(mul, map(sub, stamps, repeat(PG_EPOCH_MS)), repeat(1000))
        return zip(
            repeat(msg.gateway),
            devices,
            points,
            micros,
            repeat(V_FLOAT),
            values,
            repeat(None),
            map(_QUALITY.__getitem__, qualities),
            hists,
            strict=False,  # the repeats are endless; the columns are equally long
        )

    @staticmethod
    def _mixed_rows(msg: DataBatch) -> Iterator[ReadingRow]:
        # Floats skip encode_value, enums skip their descriptor.
        gw = msg.gateway
        for r in msg.records:
            v = r.value
            us = (r.ts_ms - PG_EPOCH_MS) * 1000
            if type(v) is float:
                yield (
                    gw,
                    r.device,
                    r.point,
                    us,
                    V_FLOAT,
                    v,
                    None,
                    _QUALITY[r.quality],
                    r.historical,
                )
            else:
                tag, num, text = encode_value(v)
                yield (gw, r.device, r.point, us, tag, num, text, _QUALITY[r.quality], r.historical)

    def _insert_readings(self, cur: Cursor, rows: list[ReadingRow]) -> None:
        assert isinstance(cur, psycopg.Cursor)
        with cur.copy(_COPY) as copy:
            copy.set_types(COPY_TYPES)
            for r in rows:
                copy.write_row(r)

    def _insert_flagged_readings(self, cur: Cursor, rows: list[FlaggedRow]) -> None:
        assert isinstance(cur, psycopg.Cursor)
        with cur.copy(_COPY_FLAGGED) as copy:
            copy.set_types([*COPY_TYPES, "int8"])
            for r in rows:
                copy.write_row(r)  # built by _reading_rows: the time is already in microseconds

    # --- reads --------------------------------------------------------------------------------

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
            " AND (CAST(:gw AS TEXT) IS NULL OR gateway_id = :gw)"
            " AND (CAST(:pt AS TEXT) IS NULL OR point = :pt)"
            " AND (CAST(:since AS TIMESTAMPTZ) IS NULL OR ts >= :since)"
            " AND (CAST(:until AS TIMESTAMPTZ) IS NULL OR ts < :until)"
            f" ORDER BY ts {direction}, point LIMIT :n",
            {
                "dev": device,
                "gw": gateway,
                "pt": point,
                "since": None if since_ms is None else ms_to_dt(since_ms),
                "until": None if until_ms is None else ms_to_dt(until_ms),
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
            "SELECT div(CAST(extract(epoch FROM ts) * 1000 AS BIGINT), :b) * :b AS bucket,"
            " count(*), min(value_num), avg(value_num), max(value_num) FROM readings"
            " WHERE device = :dev AND point = :pt AND ts >= :since AND ts < :until"
            " AND (CAST(:gw AS TEXT) IS NULL OR gateway_id = :gw)"
            " AND vtype IN (1, 2, 3) GROUP BY bucket ORDER BY bucket",
            {
                "b": bucket_ms,
                "dev": device,
                "pt": point,
                "gw": gateway,
                "since": ms_to_dt(since_ms),
                "until": ms_to_dt(until_ms),
            },
        )
        return [Bucket(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

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
        sql = (
            f"SELECT DISTINCT ON (device, gateway_id, point) {_COLS} FROM readings"  # noqa: S608
            " WHERE (CAST(:dev AS TEXT) IS NULL OR device = :dev)"
            f" AND (CAST(:gw AS TEXT) IS NULL OR gateway_id = :gw){mine}"
            " ORDER BY device, gateway_id, point, ts DESC"
        )
        with self._tx() as cur:
            if self._layout == TIMESCALE:
                # Once some chunks are compressed, TimescaleDB 2.22 to 2.29.1 plan this with a
                # SkipScan under a per-chunk Sort and silently return the OLDEST row of each
                # uncompressed chunk (timescale/timescaledb#10447, fixed in 2.29.2 by #10430).
                cur.execute("SET LOCAL timescaledb.enable_skipscan = off")
            rows = self._run(cur, sql, params)
        return [_reading(r) for r in rows]

    def count_readings(self) -> int:
        """Total stored readings."""
        return int(self._query("SELECT count(*) FROM readings")[0][0])
