"""A working calendar beyond the years its file lists (review 2, item 2): the statutory holidays
of 《全国年节及纪念日放假办法》 still count there, and the missing 调休 arrangement is reported.
Plain values with the time given (UTC ms)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from lifeline.collector.cases.calendar import (
    DEFAULT_CALENDAR,
    Unit,
    WorkCalendar,
    statutory_holidays,
)
from lifeline.collector.cases.routing import default_routing_path, load_routing, routing_calendar

pytestmark = pytest.mark.unit


def at(y: int, m: int, d: int, hh: int, mm: int = 0) -> int:
    """Local (UTC+8) wall time as UTC ms."""
    local = datetime(y, m, d, hh, mm, tzinfo=UTC) - timedelta(hours=8)
    return int(local.timestamp() * 1000)


def shipped() -> WorkCalendar:
    path = default_routing_path()
    return routing_calendar(load_routing(path), path)


def test_2027_new_years_day_is_a_holiday_though_the_file_lists_only_2026() -> None:
    cal = shipped()
    assert cal.listed_years == {2026}
    assert not cal.is_workday(date(2027, 1, 1))  # 元旦, a Friday
    assert cal.is_workday(date(2027, 1, 4))
    # The review's case: Thursday 2026-12-31 12:00 + 2 工作日 (15 h) is 4 h that afternoon, no
    # work on 元旦 or the weekend, 7.5 h on Monday and 3.5 h on Tuesday: Tuesday 12:00 (the old
    # code counted 元旦 and said Monday 12:00).
    assert cal.due(at(2026, 12, 31, 12), 2, Unit.WORK_DAYS) == at(2027, 1, 5, 12)


def test_the_2027_spring_festival_comes_from_the_lunar_calendar() -> None:
    # 2027 春节 (正月初一) is Saturday 6 February: 除夕 Friday 5th to 初三 Monday 8th.
    days = statutory_holidays(2027)
    assert {date(2027, 2, d) for d in range(5, 9)} <= days
    assert date(2027, 2, 4) not in days
    assert date(2027, 2, 9) not in days
    assert {date(2027, 4, 5), date(2027, 6, 9), date(2027, 9, 15)} <= days  # 清明 端午 中秋
    assert {date(2027, 5, 1), date(2027, 5, 2), date(2027, 10, 3)} <= days
    assert len(days) == 13
    # Thursday 2027-02-04 16:00 + 2 工作日: 1.5 h on Thursday, nothing until Tuesday 9th
    # (7.5 h), then 6 h on Wednesday: 16:00. The old code worked 除夕 and 初三: Monday 16:00.
    assert shipped().due(at(2027, 2, 4, 16), 2, Unit.WORK_DAYS) == at(2027, 2, 10, 16)


def test_a_listed_year_keeps_its_notice_and_the_law_matches_the_2026_notice() -> None:
    cal = shipped()
    # 2026's notice moves nothing the law fixes: each statutory day is among its holidays.
    assert statutory_holidays(2026) <= cal.holidays
    assert cal.is_workday(date(2026, 2, 14))  # 调休上班, known only from the notice
    # Two festivals on one day count once (2028: 中秋 is 3 October).
    assert len(statutory_holidays(2028)) == 12


def test_the_built_in_default_keeps_no_holidays_and_warns_of_none() -> None:
    assert DEFAULT_CALENDAR.is_workday(date(2027, 1, 1))
    assert DEFAULT_CALENDAR.unlisted_years(at(2027, 6, 1, 9)) == []


@pytest.mark.parametrize(
    ("now", "unlisted"),
    [
        (at(2026, 6, 1, 9), []),
        (at(2026, 11, 1, 9), []),  # 61 days before the end of 2026
        (at(2026, 11, 2, 9), [2027]),  # within 60 days: the 2027 notice is due
        (at(2027, 3, 1, 9), [2027]),
        (at(2027, 12, 15, 9), [2027, 2028]),
    ],
)
def test_unlisted_years_warn_60_days_before_the_last_listed_year_ends(
    now: int, unlisted: list[int]
) -> None:
    assert shipped().unlisted_years(now) == unlisted


def test_a_year_outside_the_dates_python_knows_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="no statutory holidays for year 0"):
        statutory_holidays(0)
