"""A collector upgraded in place keeps its cases: a database at schema version 6 (before issue
14) with cases in every awkward state migrates to the current version, on SQLite and PostgreSQL."""

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lifeline.collector.assets import Asset
from lifeline.collector.cases.engine import CaseEngine
from lifeline.collector.cases.routing import default_routing_path, load_routing
from lifeline.collector.cases.workflow import CaseState, Place
from lifeline.collector.store import Store, open_store
from lifeline.collector.store.postgres import PARTITIONED, PARTITIONED_READINGS
from lifeline.collector.store.schema import (
    api_statements,
    core_statements,
    epoch_statements,
    order_statements,
    scope_statements,
)
from lifeline.collector.store.sqlite import MIGRATIONS

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
H = 3_600_000
WELL = Asset(
    code="3101040111000042", owner="燃气公司", grid="31010400100201", address="漕溪北路 88 号",
    lon=121.437, lat=31.187,
)  # fmt: skip
Exec = Callable[[str, tuple[Any, ...]], object]


def old_rows(run: Exec) -> None:
    """Cases as version 6 stored them, with the alarms attached to one of them."""
    cols = (
        "case_no, kind, subcategory, problem, asset, device, subject, state, urgency,"
        " department, grid, created_ms, updated_ms, deadline_ms, timed_from_ms, repeats,"
        " escalations, title, gateway_id"
    )
    marks = ", ".join(["?"] * 19)
    rows = [
        # 受理: the allowed duration sat in deadline_ms
        ("A", "事件", "0404", "flooding", None, "mh-1", "gw/mh-1", "受理", "normal", "中心",
         None, T0, T0, 48 * H, None, 0, 0, "水位", "gw"),
        # 挂账: a signed offset (time left) sat in deadline_ms
        ("B", "部件", "0118", "lamp", None, "sl-1", "gw/sl-1", "挂账", "normal", "路灯所",
         None, T0, T0 + H, 3 * H, None, 0, 0, "路灯", "gw"),
        # 结案 by the old auto-close
        ("C", "部件", "0117", "tilt", None, "t-1", "gw/t-1", "结案", "normal", "市政",
         None, T0, T0 + 2 * H, T0 + 72 * H, T0, 0, 0, "倾斜", "gw"),
        # 派遣 on an asset, with its alarm attached
        ("D", "部件", "0111", "gas_leak", WELL.code, "mh-2", WELL.code, "派遣", "urgent",
         "燃气公司", WELL.grid, T0, T0, T0 + 2 * H, T0, 0, 0, "燃气", "gw"),
    ]  # fmt: skip
    for r in rows:
        run(f"INSERT INTO cases ({cols}) VALUES ({marks})", r)  # noqa: S608 - constant
    for audit in (
        ("C", T0 + 2 * H, "system", "close", "核查", "结案", "auto-close"),
        ("D", T0, "值班长", "accept", "受理", "立案", ""),
        ("D", T0 + H, "派遣员", "dispatch", "立案", "派遣", ""),
    ):
        run(
            "INSERT INTO case_audit (case_no, ts_ms, actor, action, from_state, to_state, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            audit,
        )
    run(
        "INSERT INTO assets (code, subcategory, owner, maintainer, grid, doc)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (WELL.code, "0111", WELL.owner, WELL.maintainer, WELL.grid, WELL.model_dump_json()),
    )
    run(
        "INSERT INTO device_assets (gateway_id, device, asset) VALUES (?, ?, ?)",
        ("gw", "mh-2", WELL.code),
    )
    run(
        "INSERT INTO devices (gateway_id, device, profile, family, status, since_ms, reason)"
        " VALUES ('gw', 'mh-2', 'manhole_cover', 'manhole', 'online', ?, 'birth')",
        (T0,),
    )
    for state, ts, value in (("active_unacked", T0, "30.0"), ("cleared_unacked", T0 + H, "1.0")):
        run(
            "INSERT INTO alarm_events (gateway_id, device, point, alarm_type, alarm_id,"
            " severity, state, ts_ms, value, limit_value, message, historical, handled)"
            " VALUES ('gw', 'mh-2', 'ch4', 'hi', 'gw:e1:7', 1, ?, ?, ?, '20', 'methane',"
            " FALSE, TRUE)",
            (state, ts, value),
        )
        run(
            "INSERT INTO case_alarms (case_no, alarm_event_id)"
            " SELECT 'D', id FROM alarm_events WHERE state = ?",
            (state,),
        )


@pytest.fixture(params=["sqlite", "postgres"])
def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A version-6 database with old cases, migrated by today's store."""
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_ms INTEGER NOT NULL)"
        )
        for m in MIGRATIONS[:6]:
            for stmt in m.statements:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
        old_rows(lambda sql, p: conn.execute(sql, p) and None)
        conn.close()
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_ms BIGINT NOT NULL)"
            )
            pg.execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            pg.execute("INSERT INTO store_meta VALUES ('readings_layout', %s)", (PARTITIONED,))
            versions = (
                core_statements("postgres"),
                PARTITIONED_READINGS,
                api_statements("postgres"),
                epoch_statements("postgres"),
                order_statements("postgres"),
                scope_statements("postgres"),
            )
            for version, statements in enumerate(versions, start=1):
                for stmt in statements:
                    pg.execute(stmt)
                pg.execute("INSERT INTO schema_migrations VALUES (%s, 'v', 0)", (version,))
            old_rows(lambda sql, p: pg.execute(sql.replace("?", "%s"), p) and None)
    store = open_store(url)
    assert store.migrate() == [m.version for m in MIGRATIONS if m.version >= 7]
    yield store
    store.close()


def test_an_upgraded_collector_keeps_its_cases_with_honest_times(upgraded: Store) -> None:
    a, b, c, d = (upgraded.case(n) for n in "ABCD")
    assert a is not None
    assert (a.state, a.deadline_ms, a.allowed_ms) == (CaseState.REPORTED, None, 48 * H)
    assert b is not None
    assert (b.state, b.remaining_ms, b.deadline_ms) == (CaseState.PARKED, 3 * H, T0 + 4 * H)
    assert c is not None
    assert (c.closure, c.allowed_ms) == ("自动恢复", 72 * H)
    assert d is not None
    assert (d.severity, d.allowed_ms, d.deadline_ms) == (1, 2 * H, T0 + 2 * H)
    assert d.location == Place(121.437, 31.187, "CGCS2000", "漕溪北路 88 号", "asset")
    (link,) = upgraded.links("D")
    assert (link.alarm_id, link.value, link.limit, link.cleared_ms) == ("gw:e1:7", 30.0, 20, T0 + H)
    # Open cases carry over as one running phase in the stage of their state, on the clock
    # they had; a parked one keeps the time it had left.
    (parked,) = upgraded.phases("B")
    assert (parked.stage, parked.due_ms, parked.left_ms, parked.end_ms) == (
        "处置",
        T0 + 4 * H,
        3 * H,
        None,
    )
    assert parked.parked_since_ms is not None
    assert [p.stage for p in upgraded.phases("A")] == ["立案"]
    assert upgraded.phases("C") == []  # finished before the phase table existed
    # Rows from before keys were recorded say so: no key, role unknown, nobody "on behalf of".
    old = upgraded.audit("C")[-1]
    assert (old.actor, old.key_id, old.role, old.on_behalf_of) == ("system", None, "", "")
    # The statistics count old cases by the times their audit trail gives (migration 22): C's
    # 结案 (the old auto-close was a close), D's 立案 and its 派遣, never returned.
    counts = upgraded.case_counts(T0, T0 + 3 * H, "department")
    figures = {
        k: (v.reported, v.registered, v.dispatched_accurately, v.closed, v.closed_on_time)
        for k, v in counts.items()
    }
    assert figures == {
        "中心": (1, 0, 0, 0, 0),
        "路灯所": (1, 0, 0, 0, 0),
        "市政": (1, 0, 0, 1, 1),
        "燃气公司": (1, 1, 1, 0, 0),
    }


def test_an_old_cases_alarm_acknowledged_after_the_upgrade_is_no_new_occurrence(
    upgraded: Store,
) -> None:
    from lifeline.collector.models import Accepted
    from lifeline.wire import AlarmBatch, AlarmEvent, AlarmState, Kind, Severity, TopicParts

    # The cleared alarm acknowledged (ISA-18.2: cleared-unacknowledged -> normal).
    ev = AlarmEvent(
        "gw:e1:7", "mh-2", "ch4", "hi", Severity.CRITICAL, AlarmState.NORMAL, T0 + 2 * H, 1.0
    )
    batch = AlarmBatch("gw", "s", 1, T0 + 2 * H, (ev,), epoch="e1")
    upgraded.write([Accepted(TopicParts("site", "gw", Kind.ALARM), batch)], T0 + 2 * H)
    engine = CaseEngine(upgraded, load_routing(default_routing_path()), time.time)
    assert engine.process_pending() == 1
    assert sorted(c.case_no for c in upgraded.cases()) == ["A", "B", "C", "D"]
    assert [k.activation for k in upgraded.links("D")] == [0]
    assert upgraded.pending_alarm_transitions() == []
