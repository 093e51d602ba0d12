"""综合评价 on a seeded history (issue 19, part 4): three cases driven through the workflow with an
injected clock on SQLite and PostgreSQL; every count and rate checked against values worked out
by hand in the comments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.cases.engine import CaseEngine
from lifeline.collector.cases.phases import Stage
from lifeline.collector.cases.routing import Deadline, Routing
from lifeline.collector.cases.workflow import Action, Closure
from lifeline.collector.stats import COUNTS, NO_CASE, NO_GRID, RATES, csv_header, csv_row, report
from lifeline.collector.store import Store
from lifeline.wire import AlarmState, Severity
from tests.integration import test_collector_cases as suite
from tests.integration.test_api_http import problem_of, running_api
from tests.xlsx import read_xlsx

pytestmark = pytest.mark.integration

# The case suite's store (SQLite and PostgreSQL, a gateway with gas-1, mh-1 and lamp-1) and
# routing table, and its way of raising alarms.
store_url, store, routing = suite.store_url, suite.store, suite.routing
T0, WELL, Clock, raise_alarm = suite.T0, suite.WELL, suite.Clock, suite.raise_alarm

HMS = 3_600_000
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
A = Action


def seed(store: Store, routing: Routing) -> tuple[CaseEngine, suite.Clock]:
    """A: a cover case of 燃气运维站 (its maintainer), dispatched late, 延时, 挂账 7 h, 反馈 on
    time, 核查不通过, a second 处置 round late, 结案. B: a gas leak of the center, dispatched at
    once; the center takes 延时 and returns it (回退), 改派 to 燃气运维站, whose 反馈 is followed by
    the alarm coming back (返工); closed as 误报. C: an unclassified report of the center, voided
    as 误报. Natural hours: 派遣 1 h, 处置 4 h, 核查 1 h."""
    one, four = Deadline(urgent=1, normal=1), Deadline(urgent=4, normal=4)
    table = routing.model_copy(
        update={
            "stages": {Stage.DISPATCH: {"default": one}, Stage.VERIFY: {"default": one}},
            "deadlines": {"default": four},
        }
    )
    store.upsert_assets([WELL])
    clock = Clock()
    engine = CaseEngine(store, table, clock)
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, "gw:1")
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:2")
    raise_alarm(
        store, "mh-1", "temperature", "hi", AlarmState.ACTIVE_UNACKED, "gw:3", Severity.HIGH
    )
    engine.process_pending()
    return engine, clock


def test_every_figure_of_a_seeded_history_matches_the_hand_count(
    store_url: str, store: Store, routing: Routing
) -> None:
    engine, clock = seed(store, routing)
    # D: a 四级 alarm no route takes: recorded, no case (报警数 counts it, 报警转案件数 not).
    raise_alarm(store, "lamp-1", "voltage", "lo", AlarmState.ACTIVE_UNACKED, "gw:4", Severity.LOW)
    engine.process_pending()
    d = store.link("gw:4")
    assert d is not None
    assert d.outcome == "recorded"
    by_problem = {c.problem: c.case_no for c in store.cases()}
    a, b, c = by_problem["cover_displaced"], by_problem["gas_leak"], by_problem["unclassified"]

    def at(hours: float, no: str, action: Action, **kw: object) -> None:
        clock.now = T0 + hours * 3600
        engine.act(no, action, "op", "现场记录", **kw)  # type: ignore[arg-type]

    at(1, c, A.VOID, reason="误报")
    at(1, b, A.START)  # B: the center's 处置 stage from 0 (dispatched at once), due 4
    at(1.5, b, A.APPLY, request="extend", extend_hours=1)
    at(1.5, b, A.APPROVE)  # the center's 延时: due 5
    at(2, b, A.RETURN)  # the center's 回退: its 处置 stage 0..2 on time; a new 派遣 stage
    at(2, a, A.DISPATCH)  # 派遣 stage 0..2 h, due 1 h: late
    # 改派: the 派遣 stage 2..2.5 (the center's, opened by its 回退) on time
    at(2.5, b, A.DISPATCH, department="燃气运维站")
    at(2.5, a, A.START)
    at(2.6, a, A.APPLY, request="extend", extend_hours=1)
    at(2.6, a, A.APPROVE)  # 处置 due 6 -> 7
    at(3, a, A.APPLY, request="park")
    at(3, a, A.APPROVE)  # 挂账: 4 h left
    at(3, b, A.START)
    at(3, b, A.FEEDBACK)  # B 处置 2.5..3 h of 4: on time
    # The leak is back after 反馈 (gw:5): 返工, B 核查 3..3.2, a new 处置 round 3.2..4
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.CLEARED_UNACKED, "gw:2")
    clock.now = T0 + 3.2 * 3600
    raise_alarm(
        store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:5", at=clock.now
    )
    engine.process_pending()
    assert store.case(b).reworks == 1  # type: ignore[union-attr]
    at(4, b, A.FEEDBACK)  # on time
    at(4, b, A.VERIFY)
    at(4.5, b, A.CLOSE, closure=Closure.FALSE_ALARM)  # B 核查 4..4.5 h
    at(10, a, A.UNPARK)  # due 10 + 4 = 14
    at(12, a, A.FEEDBACK)  # A 处置 2..12 h less 7 h 挂账 = 3 h: on time
    at(12, a, A.VERIFY)
    at(13, a, A.REJECT)  # 返工: A 核查 12..13; a new 处置 round 13..17
    at(18, a, A.FEEDBACK)  # late: 5 h
    at(18, a, A.VERIFY)
    at(18.5, a, A.CHECK)  # 核查通过: no stage of its own
    at(19, a, A.CLOSE)  # A 核查 18..19

    window = (int(T0 * 1000), int(T0 * 1000) + 24 * HMS)
    rows, total = report(store.case_counts(*window, "department"))
    keyed = {r["key"]: r for r in rows}
    # the cover's maintainer, the center, and the alarm that became no case
    assert set(keyed) == {"燃气运维站", routing.default_department, NO_CASE}
    gas, center = keyed["燃气运维站"], keyed[routing.default_department]
    # A department is held to the stages it held: B's first 处置 stage, its 延时 and its 回退 are
    # the center's (its 主办 then); every 派遣 stage is the center's, as its 派遣员 holds it — A's
    # late one too (fails on the old code, which charged it to 燃气运维站); a 核查 stage is the
    # center's but its 应结案 counts for the department it verifies. B's case figures (上报, 立案,
    # 结案, alarms) are its 主办's, 燃气运维站 since the 改派.
    expected_gas = {
        "reported": 2, "registered": 2, "voided": 0,
        "to_dispatch": 0, "dispatched_on_time": 0,  # A's late 派遣 is the center's
        "dispatched_accurately": 1,  # A's; B was returned
        "to_dispose": 4, "disposed_on_time": 3, "disposed_late": 1,  # A 3 h, 5 h; B 0.5 h, 0.8 h
        "reworks": 2, "returns": 0, "extensions": 1, "parks": 1,  # 返工: B's, A's 核查不通过
        "to_close": 4, "closed": 2, "closed_on_time": 1,  # A: 12..13, 18..19; B: 3..3.2, 4..4.5
        "false_alarms": 1, "auto_closed": 0,  # B closed as 误报
        "closure_rate": 0.5, "on_time_closure_rate": 0.25, "on_time_disposal_rate": 0.75,
        "rework_rate": 0.5, "false_alarm_rate": 0.5,
        "mean_dispatch_ms": None,
        "mean_disposal_ms": 93 * HMS // 40,  # (3 + 5 + 0.5 + 0.8 h) / 4
        "alarms": 3, "alarms_to_cases": 3, "alarm_to_case_rate": 1.0,  # gw:1, gw:2, gw:5
    }  # fmt: skip
    expected_center = {
        "reported": 1, "registered": 0, "voided": 1,  # C
        # A's 0..2 h of 1 h (late); B's 0..0 h and, after its 回退, 2..2.5 h
        "to_dispatch": 3, "dispatched_on_time": 2,
        "dispatched_accurately": 0,
        "to_dispose": 1, "disposed_on_time": 1, "disposed_late": 0,  # B's 0..2 h, due 5 h
        "reworks": 0, "returns": 1, "extensions": 1, "parks": 0,
        "to_close": 0, "closed": 0, "closed_on_time": 0,
        "false_alarms": 1, "auto_closed": 0,  # C voided as 误报
        "closure_rate": None, "on_time_closure_rate": None, "on_time_disposal_rate": 1.0,
        "rework_rate": 0.0, "false_alarm_rate": 1.0,  # 1 of 0 结案 + 1 作废
        "mean_dispatch_ms": HMS * 5 // 6, "mean_disposal_ms": 2 * HMS,  # (2 + 0 + 0.5 h) / 3
        "alarms": 1, "alarms_to_cases": 1, "alarm_to_case_rate": 1.0,  # gw:3
    }  # fmt: skip
    assert {k: gas[k] for k in expected_gas} == expected_gas
    assert {k: center[k] for k in expected_center} == expected_center
    assert (total["reported"], total["closed"], total["to_close"]) == (3, 2, 4)
    assert (total["closure_rate"], total["on_time_closure_rate"]) == (0.5, 0.25)
    # 误报率: B (结案 as 误报) and C (作废 as 误报) of 2 结案 + 1 作废
    assert (total["on_time_disposal_rate"], total["false_alarm_rate"]) == (0.8, 0.6667)
    # 派遣 2 + 0 + 0.5 h of 3 stages; 处置 9.3 + 2 h of 5
    assert (total["mean_dispatch_ms"], total["mean_disposal_ms"]) == (HMS * 5 // 6, 113 * HMS // 50)
    assert (total["returns"], total["extensions"], total["reworks"]) == (1, 2, 2)
    no_case = keyed[NO_CASE]  # gw:4 alone
    assert (no_case["alarms"], no_case["alarms_to_cases"], no_case["reported"]) == (1, 0, 0)
    assert no_case["alarm_to_case_rate"] == 0.0
    assert (total["alarms"], total["alarms_to_cases"], total["alarm_to_case_rate"]) == (5, 4, 0.8)
    # A department key sees what is credited to its department: the center's 回退 and 延时, and
    # every 派遣 stage (A's too, a case of 燃气运维站's).
    (only,) = report(store.case_counts(*window, "department", [routing.default_department]))[0]
    assert {k: only[k] for k in expected_center} == expected_center
    # 燃气运维站's key sees its 应结案 though the center held those 核查 stages.
    (mine,) = report(store.case_counts(*window, "department", ["燃气运维站"]))[0]
    assert {k: mine[k] for k in expected_gas} == expected_gas
    # Outside the window nothing counts; a window of the first hour sees only the reports.
    assert store.case_counts(window[1], window[1] + HMS, "department") == {}
    first, _ = report(store.case_counts(window[0], window[0] + HMS, "subcategory"))
    assert sum(int(r["reported"]) for r in first) == 3  # type: ignore[call-overload]
    assert sum(int(r["closed"]) for r in first) == 0  # type: ignore[call-overload]
    assert len(csv_row(total)) == len(csv_header())
    # B's gas detector lies in no 单元网格 (no grid polygons here): a named group, never ""
    by_grid = {k: v.reported for k, v in store.case_counts(*window, "grid").items()}
    assert by_grid == {WELL.grid: 2, NO_GRID: 1, NO_CASE: 0}
    by_source = store.case_counts(*window, "source")  # every case reported by sensors
    assert set(by_source) == {"物联网感知", NO_CASE}
    assert by_source["物联网感知"].reported == 3
    voided = store.case(c)
    assert voided is not None
    assert voided.void_reason == "误报"
    with running_api(store_url) as api:
        params = {"from": window[0], "to": window[1]}
        doc = api.client.get("/api/v1/stats", params=params, headers=api.h()).json()
        got = api.client.get("/api/v1/stats", params={**params, "format": "xlsx"}, headers=api.h())
    assert_xlsx_holds(got.content, doc)


def assert_xlsx_holds(xlsx: bytes, doc: dict[str, Any]) -> None:
    """The workbook's table is the JSON answer `doc`: the CSV's header, every figure a number
    equal to the JSON's (rates formatted as percentages), an empty cell for a null."""
    sheets = read_xlsx(xlsx)
    assert list(sheets) == ["综合评价-专业部门", "指标说明"]
    header, *body = sheets["综合评价-专业部门"]
    assert [value for value, _ in header] == csv_header()
    rates = {key for key, _ in RATES if key.endswith("_rate")}
    json_rows = [*doc["groups"], doc["total"]]
    assert len(body) == len(json_rows)
    for cells, row in zip(body, json_rows, strict=True):
        assert cells[0] == (row["key"], "General")
        for (value, fmt), key in zip(cells[1:], [k for k, _ in (*COUNTS, *RATES)], strict=True):
            assert value == row[key], key  # None: an empty cell
            if value is not None:
                assert fmt == ("0.00%" if key in rates else "0"), key
    notes = sheets["指标说明"]
    assert notes[2][1] == ("专业部门", "General")
    assert [(n[0][0], n[1][0]) for n in notes[5:]] == [(name, k) for k, name in (*COUNTS, *RATES)]


def test_the_stats_endpoint_answers_json_csv_and_xlsx_and_refuses_a_bad_window(
    tmp_path: Path,
) -> None:
    with running_api(f"sqlite:///{tmp_path}/stats.db") as api:
        url = "/api/v1/stats"
        ok = api.client.get(url, params={"from": 0, "to": 86_400_000}, headers=api.h())
        assert ok.status_code == 200, ok.text
        assert ok.json()["total"]["key"] == "合计"
        got = api.client.get(
            url, params={"from": 0, "to": 86_400_000, "format": "csv"}, headers=api.h()
        )
        assert got.headers["content-type"].startswith("text/csv")
        assert got.text.lstrip("\ufeff").splitlines()[0].startswith("分组,上报数,立案数")
        # An XLSX of an empty window has the header and the total; so has one in the far future
        # (past the year 9999, where datetime stops).
        for start in (0, 2**62 - 86_400_000):
            window = {"from": start, "to": start + 86_400_000}
            doc = api.client.get(url, params=window, headers=api.h()).json()
            xlsx = api.client.get(url, params={**window, "format": "xlsx"}, headers=api.h())
            assert xlsx.status_code == 200, xlsx.text
            assert xlsx.headers["content-type"] == XLSX
            assert 'filename="stats-department-' in xlsx.headers["content-disposition"]
            assert_xlsx_holds(xlsx.content, doc)
        for params in ({"from": 10, "to": 10}, {"from": 0, "to": 500 * 86_400_000},
                       {"from": 0, "to": 10, "group_by": "colour"},
                       {"from": 0, "to": 10, "format": "pdf"}):  # fmt: skip
            problem_of(api.client.get(url, params=params, headers=api.h()), 422)
