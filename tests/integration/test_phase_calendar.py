"""Stage clocks on the shipped working calendar of 330106 (issue 19, part 2), through the case
engine and the store on SQLite and PostgreSQL: a 派遣 limit in 工作时 across 劳动节 and a
weekend, and a 处置 limit of one 工作日 ending on a make-up Saturday (调休上班). Due times are
worked out by hand in the comments, in Beijing time (UTC+8)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lifeline.collector.cases.calendar import Unit, load_calendar
from lifeline.collector.cases.engine import CaseEngine
from lifeline.collector.cases.phases import Stage
from lifeline.collector.cases.routing import Deadline, Routing
from lifeline.collector.cases.workflow import Action
from lifeline.collector.store import Store
from lifeline.wire import AlarmState
from tests.integration import test_collector_cases as suite

pytestmark = pytest.mark.integration

store_url, store, routing = suite.store_url, suite.store, suite.routing
CALENDAR = Path(__file__).resolve().parents[2] / "config" / "calendars" / "330106.yaml"
BEIJING = timezone(timedelta(hours=8))


def at(month: int, day: int, hour: int, minute: int = 0) -> int:
    """UTC ms of a Beijing wall time in 2026."""
    return int(datetime(2026, month, day, hour, minute, tzinfo=BEIJING).timestamp() * 1000)


def test_stage_clocks_skip_the_holiday_and_the_weekend_and_count_the_make_up_day(
    store: Store, routing: Routing
) -> None:
    three_work_hours = Deadline(
        urgent=3, normal=3, unit=Unit.WORK_HOURS, urgent_unit=Unit.WORK_HOURS
    )
    one_work_day = Deadline(urgent=1, normal=1, unit=Unit.WORK_DAYS, urgent_unit=Unit.WORK_DAYS)
    table = routing.model_copy(
        update={"stages": {Stage.DISPATCH: {"default": three_work_hours}},
                "deadlines": {"default": one_work_day}}
    )  # fmt: skip
    store.upsert_assets([suite.WELL])
    clock = suite.Clock()
    clock.now = at(4, 30, 16) / 1000  # Thursday 04-30 16:00, the eve of 劳动节
    engine = CaseEngine(store, table, clock, calendar=load_calendar(CALENDAR))
    suite.raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, "gw:1")
    engine.process_pending()
    (case,) = store.cases()
    # 派遣 in 3 工作时 from Thursday 16:00: 1.5 h that day (to 17:30), then 05-01..05-05 are
    # 劳动节 (Friday, the weekend, Monday, Tuesday); the other 1.5 h from Wednesday 05-06
    # 08:30: due 10:00.
    dispatch = store.phases(case.case_no)[-1]
    assert (dispatch.stage, dispatch.start_ms, dispatch.due_ms) == (
        "派遣",
        at(4, 30, 16),
        at(5, 6, 10),
    )
    assert not dispatch.overdue(at(5, 5, 23, 59))  # the whole holiday is not a minute of work
    assert dispatch.overdue(at(5, 6, 10, 1))

    clock.now = at(5, 8, 16) / 1000  # Friday 05-08 16:00: dispatched two days late
    engine.act(case.case_no, Action.DISPATCH, "op", "派遣")
    *_, dispatched, dispose = store.phases(case.case_no)
    assert (dispatched.end_ms, dispatched.overdue(at(5, 8, 16))) == (at(5, 8, 16), True)
    # 处置 in 1 工作日 = 7.5 work hours from Friday 16:00: 1.5 h to 17:30; Saturday 05-09 is a
    # make-up working day (调休上班): 08:30-12:00 (3.5 h, 5 h in all), 13:30-16:00 (2.5 h): due
    # Saturday 16:00, not Monday.
    assert (dispose.stage, dispose.start_ms, dispose.due_ms) == ("处置", at(5, 8, 16), at(5, 9, 16))
    assert dispose.unit == Unit.WORK_DAYS.value
    assert not dispose.overdue(at(5, 9, 15, 59))
    assert dispose.overdue(at(5, 10, 12))  # Sunday: overdue since Saturday 16:00
