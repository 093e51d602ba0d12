"""The PostgreSQL store's TimescaleDB layout against a real TimescaleDB engine (tests/tsdb).

The engine is PGlite with TimescaleDB 2.23: it has no background workers, so each test runs the
policy jobs the store configured itself, with CALL run_job, exactly as the scheduler would.
"""

import math
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from lifeline.collector.models import Accepted
from lifeline.collector.store.postgres import PostgresStore, dt_to_ms
from lifeline.wire import DataBatch, Kind, Quality, Record, TopicParts

pytestmark = pytest.mark.integration

GW = "gw-1"
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# What TIMESCALE_READINGS configures (collector/store/postgres.py).
CHUNK_INTERVAL = timedelta(days=1)
COMPRESS_AFTER = timedelta(days=7)
DROP_AFTER = timedelta(days=400)
REFRESH = (timedelta(days=3), timedelta(hours=1), timedelta(minutes=30))  # start, end, every

Sql = Callable[..., list[tuple[Any, ...]]]  # the `sql` fixture: (query, params=None) -> rows


@pytest.fixture
def store(tsdb_fresh_url: str) -> Iterator[PostgresStore]:
    """A migrated PostgresStore on the TimescaleDB engine, in a schema of its own."""
    s = PostgresStore(tsdb_fresh_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def sql(tsdb_fresh_url: str) -> Iterator[Sql]:
    """Run a statement on its own autocommit connection (CALL run_job needs one); return rows."""
    with psycopg.connect(tsdb_fresh_url, autocommit=True) as conn:

        def run(query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

        yield run


def data(seq: int, records: list[Record], now_ms: int) -> Accepted:
    """A data batch as ingest hands it to the store."""
    return Accepted(
        TopicParts("site-a", GW, Kind.DATA),
        DataBatch(GW, "s1", seq, now_ms, tuple(records), epoch="e1"),
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def floor(ms: int, unit: int) -> int:
    return ms - ms % unit


def run_job(sql: Sql, proc: str) -> None:
    """Run one of this schema's policy jobs now, as the (absent) background scheduler would."""
    ((job_id,),) = sql(
        "SELECT job_id FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = current_schema() AND proc_name = %s",
        (proc,),
    )
    sql("CALL run_job(%s)", (job_id,))


def chunks(sql: Sql) -> list[tuple[int, int, bool]]:
    """(range start ms, range end ms, is compressed) of every readings chunk, oldest first."""
    rows = sql(
        "SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
        " ORDER BY range_start"
    )
    return [(dt_to_ms(a), dt_to_ms(b), c) for a, b, c in rows]


def catalog(sql: Sql) -> list[Any]:
    """Everything migrate() creates in TimescaleDB's catalog for this schema."""
    return [
        sql(
            "SELECT hypertable_name, compression_enabled, num_dimensions"
            " FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()"
        ),
        sql(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
        ),
        sql(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
            " ORDER BY segmentby_column_index NULLS LAST, orderby_column_index"
        ),
        sql(
            "SELECT job_id, proc_name, hypertable_name, schedule_interval,"
            " (config->>'compress_after')::interval, (config->>'drop_after')::interval,"
            " (config->>'start_offset')::interval, (config->>'end_offset')::interval"
            " FROM timescaledb_information.jobs WHERE hypertable_schema = current_schema()"
            " ORDER BY proc_name"
        ),
        sql(
            "SELECT view_name, hypertable_name, materialized_only"
            " FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema()"
        ),
    ]


def test_migrate_builds_hypertable_compression_policies_and_hourly_aggregate(
    store: PostgresStore, sql: Sql
) -> None:
    assert store.backend == "timescaledb"
    hypertables, dimensions, compression, jobs, caggs = catalog(sql)
    assert hypertables == [("readings", True, 1)]
    assert dimensions == [("ts", CHUNK_INTERVAL)]
    assert compression == [
        ("device", 1, None, None),
        ("point", 2, None, None),
        ("ts", None, 1, True),
    ]
    by_proc = {j[1]: j[2:] for j in jobs}
    assert set(by_proc) == {
        "policy_compression",
        "policy_retention",
        "policy_refresh_continuous_aggregate",
    }
    assert by_proc["policy_compression"][0] == "readings"
    assert by_proc["policy_compression"][2:] == (COMPRESS_AFTER, None, None, None)
    assert by_proc["policy_retention"][0] == "readings"
    assert by_proc["policy_retention"][2:] == (None, DROP_AFTER, None, None)
    start, end, every = REFRESH
    assert by_proc["policy_refresh_continuous_aggregate"] == (
        "readings_hourly",
        every,
        None,
        None,
        start,
        end,
    )
    assert caggs == [("readings_hourly", "readings", True)]


def test_migrate_twice_and_reopening_change_nothing(
    store: PostgresStore, sql: Sql, tsdb_fresh_url: str
) -> None:
    before = catalog(sql)
    assert store.migrate() == []
    reopened = PostgresStore(tsdb_fresh_url)
    try:
        assert reopened.migrate() == []
        assert reopened.backend == "timescaledb"
    finally:
        reopened.close()
    assert catalog(sql) == before


def test_batches_dedup_by_gateway_and_seq_and_both_queries_answer(store: PostgresStore) -> None:
    now = now_ms()
    base = floor(now - 3 * HOUR, HOUR)
    floats = [Record("dev", "a", base + i * 10 * MINUTE, float(i)) for i in range(12)]
    mixed = [
        Record("dev", "b", base, 7),
        Record("dev", "b", base + 1, True),
        Record("dev", "b", base + 2, "ON"),
        Record("dev", "b", base + 3, None, Quality.BAD),
        Record("dev", "b", base + 4, 2**60 + 1, historical=True),
    ]
    first = store.write(
        [data(1, floats[:6], now), data(2, floats[6:], now), data(1, floats[:6], now)], now
    )
    again = store.write([data(2, floats[6:], now), data(3, mixed, now)], now)
    assert (first.readings, first.duplicates) == (12, 1)
    assert (again.readings, again.duplicates) == (5, 1)
    assert store.count_readings() == 17

    assert [(r.ts_ms, r.value) for r in store.readings("dev", "a")] == [
        (r.ts_ms, r.value) for r in floats
    ]
    got = store.readings("dev", "b")
    assert [(r.value, type(r.value), r.quality, r.historical) for r in got] == [
        (7, int, "good", False),
        (True, bool, "good", False),
        ("ON", str, "good", False),
        (None, type(None), "bad", False),
        (2**60 + 1, int, "good", True),
    ]
    window = store.readings("dev", "a", since_ms=base + 10 * MINUTE, until_ms=base + 30 * MINUTE)
    assert [r.value for r in window] == [1.0, 2.0]

    hourly = store.series("dev", "a", base, base + 2 * HOUR, HOUR)
    assert [(b.ts_ms, b.count, b.min, b.avg, b.max) for b in hourly] == [
        (base, 6, 0.0, 2.5, 5.0),
        (base + HOUR, 6, 6.0, 8.5, 11.0),
    ]
    half_hourly = store.series("dev", "a", base, base + HOUR, 30 * MINUTE)
    assert [(b.ts_ms, b.count, b.avg) for b in half_hourly] == [
        (base, 3, 1.0),
        (base + 30 * MINUTE, 3, 4.0),
    ]
    (numeric,) = store.series("dev", "b", base, base + MINUTE, MINUTE)  # text and null excluded
    assert (numeric.count, numeric.min, numeric.max) == (3, 1.0, float(2**60 + 1))
    assert [(r.point, r.value) for r in store.latest("dev")] == [("a", 11.0), ("b", 2**60 + 1)]


def test_chunks_past_seven_days_compress_and_still_answer_and_take_late_rows(
    store: PostgresStore, sql: Sql
) -> None:
    now = now_ms()
    old = floor(now - 10 * DAY, DAY) + HOUR
    recent = floor(now - 3 * HOUR, HOUR)
    old_recs = [Record("dev", p, old + i * MINUTE, float(i)) for i in range(120) for p in "ab"]
    new_recs = [Record("dev", "a", recent + i * MINUTE, float(-i)) for i in range(60)]
    store.write([data(1, old_recs, now), data(2, new_recs, now)], now)
    raw = store.readings("dev", limit=10_000)
    series = store.series("dev", "a", old, now, HOUR)
    latest = store.latest()

    run_job(sql, "policy_compression")

    horizon = now - COMPRESS_AFTER // timedelta(milliseconds=1)
    states = {(end <= horizon, compressed) for _, end, compressed in chunks(sql)}
    assert states == {(True, True), (False, False)}  # exactly the chunks past 7 days
    assert store.readings("dev", limit=10_000) == raw
    assert store.series("dev", "a", old, now, HOUR) == series
    assert store.latest() == latest  # timescale/timescaledb#10447 broke this on 2.22-2.29.1

    # A gateway replaying its outbox after a long outage writes into a compressed chunk.
    late = Record("dev", "a", old + 30_500, 99.0, historical=True)
    assert store.write([data(3, [late], now)], now).readings == 1
    got = store.readings("dev", "a", since_ms=old, until_ms=old + MINUTE)
    assert [(r.ts_ms, r.value, r.historical) for r in got] == [
        (old, 0.0, False),
        (old + 30_500, 99.0, True),
    ]
    assert store.count_readings() == len(raw) + 1


def test_retention_job_drops_rows_past_the_retention_interval_only(
    store: PostgresStore, sql: Sql
) -> None:
    now = now_ms()
    keep_ms = DROP_AFTER // timedelta(milliseconds=1)
    ancient = now - keep_ms - 2 * DAY  # its whole daily chunk lies past the interval
    kept_old = now - keep_ms + 2 * DAY
    recent = now - HOUR
    recs = [Record("dev", "a", t, 1.0) for t in (ancient, kept_old, recent)]
    store.write([data(1, recs, now)], now)
    assert len(chunks(sql)) == 3

    run_job(sql, "policy_retention")

    assert [r.ts_ms for r in store.readings("dev")] == [kept_old, recent]
    assert len(chunks(sql)) == 2


def test_hourly_aggregate_after_its_policy_ran_agrees_with_the_bucketed_query(
    store: PostgresStore, sql: Sql
) -> None:
    now = now_ms()
    base = floor(now - 2 * DAY, HOUR)  # inside the policy's window: 3 days to 1 hour ago
    hours = 6

    def value(i: int) -> float | int | bool | str | None:
        # Mostly floats, with ints, bools, text and nulls: only numbers and bools aggregate.
        kinds: list[float | int | bool | str | None] = [i * 0.37 - 20, i, i % 2 == 0, "text", None]
        return kinds[i % 5] if i % 3 == 0 else i * 1.5

    recs = [
        Record(dev, pt, base + i * 7 * MINUTE + k, value(i + k))
        for k, (dev, pt) in enumerate([("d1", "a"), ("d1", "b"), ("d2", "a")])
        for i in range(hours * 60 // 7)
    ]
    store.write([data(1, recs, now)], now)

    run_job(sql, "policy_refresh_continuous_aggregate")

    for dev, pt in (("d1", "a"), ("d1", "b"), ("d2", "a")):
        cagg = sql(
            "SELECT bucket, n, min, avg, max FROM readings_hourly"
            " WHERE device = %s AND point = %s ORDER BY bucket",
            (dev, pt),
        )
        series = store.series(dev, pt, base, base + hours * HOUR, HOUR)
        assert len(series) == hours
        assert [(dt_to_ms(b), n, lo, hi) for b, n, lo, _, hi in cagg] == [
            (s.ts_ms, s.count, s.min, s.max) for s in series
        ]
        assert all(
            math.isclose(row[3], s.avg, rel_tol=1e-12) for row, s in zip(cagg, series, strict=True)
        )
