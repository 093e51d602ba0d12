"""The working calendar that case time limits count in: 工作时 (work hours), 工作日 (work days)
and 自然时 (natural hours), as 数字城管 time-limit tables state them (GB/T 30428.1 §7 处置时限).

A city's calendar (config/calendars/*.yaml) names its work periods of a day, its working
weekdays, its public holidays and its make-up working days (调休上班), in local time. A 工作日 is
one day's worth of work time (the sum of the work periods), so "2 工作日" from Friday 16:00 ends
on Tuesday at 16:00 when Monday is a holiday. Pure code: times are UTC milliseconds, no clock.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_MAX_DAYS = 3 * 366  # a limit that finds no work time within three years is a broken calendar


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

    @property
    def day_ms(self) -> int:
        """The work time of one 工作日 (ms)."""
        return sum(_ms(e) - _ms(s) for s, e in self.periods)

    def is_workday(self, day: date) -> bool:
        """True if `day` (local) is worked: a make-up day, or a working weekday no holiday."""
        if day in self.workdays:
            return True
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
        """The new due time of a clock that had `left_ms` (as from `left`) and runs again now."""
        if unit is Unit.NATURAL_HOURS or left_ms <= 0:
            return now_ms + left_ms
        return self.add_work(now_ms, left_ms)


# Where a routing table names no calendar: Monday to Friday, 08:30-12:00 and 13:30-17:30 (UTC+8),
# no holidays. Natural-hour limits never look at it.
DEFAULT_CALENDAR = WorkCalendar(name="default (Mon-Fri 08:30-12:00, 13:30-17:30)")


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
