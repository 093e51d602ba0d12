"""The working calendar that case time limits count in: 工作时 (work hours), 工作日 (work days)
and 自然时 (natural hours), as 数字城管 time-limit tables state them (GB/T 30428.1 §7 处置时限).

A city's calendar (config/calendars/*.yaml) names its work periods of a day, its working
weekdays, its public holidays and its make-up working days (调休上班), in local time. A 工作日 is
one day's worth of work time (the sum of the work periods), so "2 工作日" from Friday 16:00 ends
on Tuesday at 16:00 when Monday is a holiday. Pure code: times are UTC milliseconds, no clock.

A year is *listed* when the file names any holiday in it: the file then carries that year's
State Council notice (国务院办公厅关于部分节假日安排的通知), bridge days and 调休 included. For a
year it does not list, a calendar loaded from a file still keeps the statutory holidays of
《全国年节及纪念日放假办法》 (2024 revision), which are law whatever the notice says; only the
bridge days and make-up working days are then unknown. `unlisted_years` says when that is so.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml
from lunar_python import Lunar, Solar  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_MAX_DAYS = 3 * 366  # a limit that finds no work time within three years is a broken calendar
# The notice for a year comes out around November of the year before: warn this long before the
# last listed year ends, so a missing notice is seen before any due time falls after it.
NOTICE_WARN_DAYS = 60


class Unit(StrEnum):
    """What a time limit counts in."""

    WORK_HOURS = "工作时"
    WORK_DAYS = "工作日"
    NATURAL_HOURS = "自然时"


class CalendarError(ValueError):
    """A calendar file that cannot be used; the message names the file, field and reason."""


class _Period(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: time
    end: time


class CalendarFile(BaseModel):
    """The YAML form of a working calendar."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    utc_offset_hours: int = Field(default=8, ge=-12, le=14)
    work_hours: list[_Period] = Field(min_length=1, description="work periods of a day, local")
    weekdays: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], description="ISO weekdays worked (1 = Monday)"
    )
    holidays: list[date] = Field(default_factory=list, description="public holidays (休)")
    workdays: list[date] = Field(
        default_factory=list, description="make-up working days on a weekend (调休上班)"
    )

    @field_validator("work_hours")
    @classmethod
    def _ordered(cls, v: list[_Period]) -> list[_Period]:
        last = time(0)
        for p in v:
            if not last <= p.start < p.end:
                raise ValueError(
                    f"work periods must be ordered and not overlap ({p.start}-{p.end})"
                )
            last = p.end
        return v

    @field_validator("weekdays")
    @classmethod
    def _iso(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 or d > 7 for d in v):
            raise ValueError("weekdays are ISO numbers 1 (Monday) .. 7 (Sunday), at least one")
        return v


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """Work periods (local times of day), working weekdays, holidays and make-up days."""

    periods: tuple[tuple[time, time], ...] = (
        (time(8, 30), time(12, 0)),
        (time(13, 30), time(17, 30)),
    )
    weekdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})
    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)
    utc_offset_hours: int = 8
    name: str = ""
    # True for a city's calendar: outside the years its holidays list, the statutory holidays
    # apply. The built-in default lists no year and keeps no holidays at all.
    statutory: bool = False

    @property
    def listed_years(self) -> frozenset[int]:
        """The years whose holiday arrangement the calendar lists (any holiday in them)."""
        return frozenset(d.year for d in self.holidays)

    def unlisted_years(self, now_ms: int) -> list[int]:
        """The years, ascending, that a due time counted at `now_ms` (UTC ms) may reach within
        NOTICE_WARN_DAYS and whose arrangement the calendar does not list, so that only the
        statutory holidays are known there. Empty for the built-in default (no holidays)."""
        if not self.statutory:
            return []
        first = self._local_day(now_ms).year
        last = self._local_day(now_ms + NOTICE_WARN_DAYS * DAY_MS).year
        return [y for y in range(first, last + 1) if y not in self.listed_years]

    @property
    def day_ms(self) -> int:
        """The work time of one 工作日 (ms)."""
        return sum(_ms(e) - _ms(s) for s, e in self.periods)

    def is_workday(self, day: date) -> bool:
        """True if `day` (local) is worked: a make-up day, or a working weekday no holiday."""
        if day in self.workdays:
            return True
        if (
            self.statutory
            and day.year not in self.listed_years
            and day in statutory_holidays(day.year)
        ):
            return False
        return day not in self.holidays and day.isoweekday() in self.weekdays

    def _local_day(self, ts_ms: int) -> date:
        return (datetime.fromtimestamp(ts_ms / 1000, UTC) + self._offset).date()

    @property
    def _offset(self) -> timedelta:
        return timedelta(hours=self.utc_offset_hours)

    def _intervals(self, day: date) -> list[tuple[int, int]]:
        """The work intervals of a local day, as UTC ms."""
        if not self.is_workday(day):
            return []
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - self._offset
        base = int(midnight.timestamp() * 1000)
        return [(base + _ms(s), base + _ms(e)) for s, e in self.periods]

    def add_work(self, start_ms: int, work_ms: int) -> int:
        """The instant when `work_ms` of work time has passed after `start_ms`.

        Raises CalendarError if the calendar has no work time for years (all holidays)."""
        if work_ms <= 0:
            return start_ms
        left = work_ms
        day = self._local_day(start_ms)
        for _ in range(_MAX_DAYS):
            for s, e in self._intervals(day):
                if e <= start_ms:
                    continue
                begin = max(s, start_ms)
                if begin + left <= e:
                    return begin + left
                left -= e - begin
            day += timedelta(days=1)
        raise CalendarError(f"calendar {self.name!r}: no work time within {_MAX_DAYS} days")

    def work_between(self, start_ms: int, end_ms: int) -> int:
        """Work time (ms) between two instants (0 if `end_ms` is not after `start_ms`)."""
        total = 0
        day = self._local_day(start_ms)
        last = self._local_day(end_ms)
        while day <= last:
            for s, e in self._intervals(day):
                total += max(0, min(e, end_ms) - max(s, start_ms))
            day += timedelta(days=1)
        return total

    def due(self, start_ms: int, amount: float, unit: Unit) -> int:
        """When a limit of `amount` `unit`s that starts at `start_ms` runs out."""
        if unit is Unit.NATURAL_HOURS:
            return start_ms + round(amount * HOUR_MS)
        per = HOUR_MS if unit is Unit.WORK_HOURS else self.day_ms
        return self.add_work(start_ms, round(amount * per))

    def left(self, now_ms: int, due_ms: int, unit: Unit) -> int:
        """The time left until `due_ms`, counted as `unit` counts it (work or natural ms)."""
        if unit is Unit.NATURAL_HOURS:
            return due_ms - now_ms
        if due_ms < now_ms:
            return -self.work_between(due_ms, now_ms)
        return self.work_between(now_ms, due_ms)

    def resume(self, now_ms: int, left_ms: int, unit: Unit) -> int:
        """The new due time of a clock that had `left_ms` (as from `left`) and runs again now:
        a clock that was overdue is as much work time overdue again (so `left` gives it back).

        Raises CalendarError if the calendar has no work time for years (all holidays)."""
        if unit is Unit.NATURAL_HOURS:
            return now_ms + left_ms
        if left_ms < 0:
            return self.before_work(now_ms, -left_ms)
        return self.add_work(now_ms, left_ms)

    def before_work(self, end_ms: int, work_ms: int) -> int:
        """The instant `work_ms` of work time before `end_ms` (`add_work` run backwards).

        Raises CalendarError if the calendar has no work time for years (all holidays)."""
        if work_ms <= 0:
            return end_ms
        left = work_ms
        day = self._local_day(end_ms)
        for _ in range(_MAX_DAYS):
            for s, e in reversed(self._intervals(day)):
                if s >= end_ms:
                    continue
                finish = min(e, end_ms)
                if finish - left >= s:
                    return finish - left
                left -= finish - s
            day -= timedelta(days=1)
        raise CalendarError(f"calendar {self.name!r}: no work time within {_MAX_DAYS} days")


# Where a routing table names no calendar: Monday to Friday, 08:30-12:00 and 13:30-17:30 (UTC+8),
# no holidays. Natural-hour limits never look at it.
DEFAULT_CALENDAR = WorkCalendar(name="default (Mon-Fri 08:30-12:00, 13:30-17:30)")


@cache
def statutory_holidays(year: int) -> frozenset[date]:
    """The statutory holidays (全体公民放假的节日) of a Gregorian `year`, 13 days or fewer when
    two fall together, under 《全国年节及纪念日放假办法》 as revised in 2024: 元旦 1 Jan;
    春节 4 days, 除夕 to 正月初三; 清明节 (the day of the 清明 solar term); 劳动节 1-2 May;
    端午节 (五月初五); 中秋节 (八月十五); 国庆节 1-3 Oct.
    Lunar dates and the solar term come from lunar_python (6tail).

    Raises ValueError for a year outside 1..9999 (the range of `date`)."""
    if not 1 <= year <= 9999:
        raise ValueError(f"no statutory holidays for year {year}")
    spring: date = _gregorian(Lunar.fromYmd(year, 1, 1).getSolar())
    qingming = _gregorian(Lunar.fromYmd(year, 3, 1).getJieQiTable()["清明"])
    days = {
        date(year, 1, 1),
        *(spring + timedelta(days=n) for n in range(-1, 3)),
        qingming,
        date(year, 5, 1),
        date(year, 5, 2),
        _gregorian(Lunar.fromYmd(year, 5, 5).getSolar()),
        _gregorian(Lunar.fromYmd(year, 8, 15).getSolar()),
        date(year, 10, 1),
        date(year, 10, 2),
        date(year, 10, 3),
    }
    return frozenset(days)


def _gregorian(solar: Solar) -> date:
    return date(solar.getYear(), solar.getMonth(), solar.getDay())


def _ms(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1000


def calendar_from(doc: CalendarFile) -> WorkCalendar:
    """A WorkCalendar from its checked YAML form."""
    return WorkCalendar(
        periods=tuple((p.start, p.end) for p in doc.work_hours),
        weekdays=frozenset(doc.weekdays),
        holidays=frozenset(doc.holidays),
        workdays=frozenset(doc.workdays),
        utc_offset_hours=doc.utc_offset_hours,
        name=doc.name,
        statutory=True,
    )


def load_calendar(path: Path) -> WorkCalendar:
    """Load a working calendar YAML; raise CalendarError naming the file, field and reason."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc = CalendarFile.model_validate(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CalendarError(f"{path}: {exc}") from None
    except ValidationError as exc:
        errors: Sequence[str] = [
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        ]
        raise CalendarError(f"{path}: {'; '.join(errors)}") from None
    both = set(doc.holidays) & set(doc.workdays)
    if both:
        raise CalendarError(f"{path}: {min(both)} is both a holiday and a make-up working day")
    return calendar_from(doc)
