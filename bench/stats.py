"""Benchmark: 综合评价 (GET /api/v1/stats) over a year of one million cases on PostgreSQL.

Fills the collector's own tables in a fresh database (cases spread evenly over 365 days, 20
departments, 100 grids, 8 小类, each closed with five audit rows and three phases: 派遣, 处置 and
核查, one in ten 处置 late; the case record as the store keeps it), then times the store's
`case_counts` + the rates, as the endpoint runs them, for a month window by department, grid and
小类, and for the whole year by department. The target (issue 19) is an answer in under 2 s for
any window the API allows (up to 400 days), so for the year too. The tables are vacuumed after
the fill, as autovacuum would have done to a year of history. The last line printed is one JSON
object.

    python bench/stats.py [--cases 1000000] [--rounds 5]

Uses PostgreSQL from $LIFELINE_BENCH_DB_URL or postgresql://postgres@127.0.0.1:5432/postgres,
creating and dropping its own database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import psycopg

from lifeline.collector.stats import report
from lifeline.collector.store.postgres import PostgresStore

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY_MS = 86_400_000
T0 = 1_767_196_800_000  # 2026-01-01 00:00 +08:00

FILL = """
INSERT INTO cases (case_no, kind, subcategory, problem, asset, device, subject, state, urgency,
    department, grid, created_ms, updated_ms, deadline_ms, timed_from_ms, repeats, escalations,
    title, closure, registered_ms, dispatched_ms, closed_ms, late_disposal)
SELECT 'C' || i, '部件', lpad((111 + mod(i, 8))::text, 4, '0'), 'p', NULL, 'd' || i, 's' || i,
    '结案', 'normal', '部门' || mod(i, 20), '330106001' || lpad(mod(i, 100)::text, 5, '0'),
    b.at, b.at + 30 * 3600000, NULL, NULL, 0, 0, 't',
    CASE WHEN mod(i, 25) = 0 THEN '误报' ELSE '处置完成' END,
    b.at, b.at + 3600000, b.at + 30 * 3600000, mod(i, 10) = 0
FROM generate_series(1, %(n)s) AS i,
    LATERAL (SELECT %(t0)s::bigint + i::bigint * %(step)s AS at) AS b;
INSERT INTO case_audit (case_no, ts_ms, actor, action, from_state, to_state, note, evented)
SELECT 'C' || i, b.at + a.h * 3600000, 'k', a.action, a.f, a.t, '', TRUE
FROM generate_series(1, %(n)s) AS i,
    LATERAL (SELECT %(t0)s::bigint + i::bigint * %(step)s AS at) AS b,
    (VALUES (0, 'report', NULL, '受理'), (0, 'accept', '受理', '立案'),
            (1, 'dispatch', '立案', '派遣'), (20, 'feedback', '处置', '反馈'),
            (30, 'close', '核查', '结案')) AS a(h, action, f, t);
INSERT INTO case_phases (case_no, seq, stage, department, start_ms, due_ms, unit, end_ms)
SELECT 'C' || i, p.seq, p.stage, '部门' || mod(i, 20), b.at + p.s * 3600000,
    b.at + p.due * 3600000, '自然时',
    b.at + (CASE WHEN p.stage = '处置' AND mod(i, 10) = 0 THEN 30 ELSE p.e END) * 3600000
FROM generate_series(1, %(n)s) AS i,
    LATERAL (SELECT %(t0)s::bigint + i::bigint * %(step)s AS at) AS b,
    (VALUES (1, '派遣', 0, 1, 1), (2, '处置', 1, 24, 20), (3, '核查', 20, 44, 30))
        AS p(seq, stage, s, due, e);
VACUUM ANALYZE cases; VACUUM ANALYZE case_audit; VACUUM ANALYZE case_phases
"""


def timed(store: PostgresStore, window: tuple[int, int], group_by: str, rounds: int) -> float:
    """Median seconds of the statistics of a window, as the endpoint computes them."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        report(store.case_counts(window[0], window[1], group_by))
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    admin = os.environ.get("LIFELINE_BENCH_DB_URL", DEFAULT_DB)
    name = f"lifeline_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{admin.rsplit('/', 1)[0]}/{name}"
    try:
        store = PostgresStore(db_url)
        try:
            store.migrate()
            step = 365 * DAY_MS // args.cases
            t = time.perf_counter()
            params = {"t0": T0, "step": step, "n": args.cases}
            with psycopg.connect(db_url, autocommit=True) as conn:
                for statement in filter(str.strip, FILL.split(";")):
                    conn.execute(statement, params)
            fill_s = round(time.perf_counter() - t, 1)
            month = (T0 + 180 * DAY_MS, T0 + 210 * DAY_MS)
            year = (T0, T0 + 366 * DAY_MS)
            result = {
                "cases": args.cases,
                "fill_s": fill_s,
                "month_by_department_s": timed(store, month, "department", args.rounds),
                "month_by_grid_s": timed(store, month, "grid", args.rounds),
                "month_by_subcategory_s": timed(store, month, "subcategory", args.rounds),
                "year_by_department_s": timed(store, year, "department", args.rounds),
            }
            rows, total = report(store.case_counts(*month, "department"))
            result["month_cases"] = total["reported"]
            result["month_groups"] = len(rows)
        finally:
            store.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for k, v in result.items():
        print(f"{k:<28}{v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
