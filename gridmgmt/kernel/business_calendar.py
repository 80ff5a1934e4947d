"""Business-hours calendar used to compute case deadlines in working hours / working days.

Pure module: standard library only (no Flask, no SQLAlchemy), so it can be used from the web
app, background workers and scripts alike.

All computations happen in the calendar's local timezone: work periods are local wall-clock
times, and each period is converted to UTC per day with :mod:`zoneinfo`, so daylight-saving
transitions are handled correctly.  Working time is measured as real elapsed time inside the
work periods (a period that spans a DST transition is one hour shorter or longer that day).
Every datetime passed in must be timezone-aware; results are aware datetimes in UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BusinessCalendar", "CalendarError", "LimitUnit"]

# Give up after this many consecutive days without any working time (e.g. a calendar whose
# weekend covers all seven days and which has no make-up working days left).
_MAX_IDLE_DAYS = 3 * 366

_TIME_RE = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_REQUIRED_KEYS = frozenset({"timezone", "work_periods"})
_OPTIONAL_KEYS = frozenset({"weekend", "holidays", "workdays"})
# Descriptive keys accepted (and ignored) by from_dict; anything else is rejected as a typo.
_METADATA_KEYS = frozenset({"code", "name", "description", "source", "notes"})
_ONE_HOUR = timedelta(hours=1)


class CalendarError(ValueError):
    """Invalid calendar data or invalid arguments to a calendar computation."""


class LimitUnit(str, Enum):
    """Unit of a case time limit."""

    HOURS = "hours"
    DAYS = "days"


@dataclass(frozen=True)
class BusinessCalendar:
    """Working periods, weekend, public holidays and make-up working days of one locale."""

    timezone: str
    work_periods: tuple[tuple[time, time], ...]
    weekend: frozenset[int]
    holidays: frozenset[date]
    workdays: frozenset[date]

    def __post_init__(self) -> None:
        """Normalise container types and validate the calendar."""
        try:
            periods = tuple((start, end) for start, end in self.work_periods)
        except (TypeError, ValueError) as exc:
            raise CalendarError("work_periods must be a sequence of (start, end) pairs") from exc
        object.__setattr__(self, "work_periods", periods)
        try:
            object.__setattr__(self, "weekend", frozenset(self.weekend))
            object.__setattr__(self, "holidays", frozenset(self.holidays))
            object.__setattr__(self, "workdays", frozenset(self.workdays))
        except TypeError as exc:
            raise CalendarError("weekend, holidays and workdays must be collections") from exc

        _zone(self.timezone)
        if not periods:
            raise CalendarError("work_periods must contain at least one period")
        for start, end in periods:
            for value in (start, end):
                if not isinstance(value, time):
                    raise CalendarError(f"work period bound {value!r} is not a datetime.time")
                if value.tzinfo is not None:
                    raise CalendarError(f"work period bound {value} must be a naive local time")
            if start >= end:
                raise CalendarError(
                    f"work period {_fmt_time(start)}-{_fmt_time(end)}: start must be before end"
                )
        for (s1, e1), (s2, e2) in pairwise(periods):
            if s2 < s1:
                raise CalendarError("work_periods must be sorted by start time")
            if s2 < e1:
                raise CalendarError(
                    f"work periods {_fmt_time(s1)}-{_fmt_time(e1)} and "
                    f"{_fmt_time(s2)}-{_fmt_time(e2)} overlap"
                )
        for day in self.weekend:
            if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 7:
                raise CalendarError(f"weekend day {day!r} is not an ISO weekday (1=Mon .. 7=Sun)")
        for name, days in (("holidays", self.holidays), ("workdays", self.workdays)):
            for day in days:
                if isinstance(day, datetime) or not isinstance(day, date):
                    raise CalendarError(f"{name} entry {day!r} is not a datetime.date")
        both = self.holidays & self.workdays
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise CalendarError(f"dates listed both as holiday and as make-up workday: {listed}")

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BusinessCalendar:
        """Build a calendar from its JSON form, raising CalendarError on invalid data."""
        if not isinstance(data, Mapping):
            raise CalendarError(f"calendar data must be a JSON object, not {type(data).__name__}")
        missing = sorted(_REQUIRED_KEYS - data.keys())
        if missing:
            raise CalendarError(f"calendar data is missing required key(s): {', '.join(missing)}")
        unknown = sorted(str(k) for k in data.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
        unknown = [k for k in unknown if k not in _METADATA_KEYS]
        if unknown:
            raise CalendarError(f"calendar data has unknown key(s): {', '.join(unknown)}")

        timezone = data["timezone"]
        if not isinstance(timezone, str) or not timezone:
            raise CalendarError("timezone must be a non-empty IANA timezone name")

        raw_periods = data["work_periods"]
        if not isinstance(raw_periods, list | tuple):
            raise CalendarError("work_periods must be a list of [start, end] pairs")
        periods: list[tuple[time, time]] = []
        for raw in raw_periods:
            if not isinstance(raw, list | tuple) or len(raw) != 2:
                raise CalendarError(f"work period {raw!r} must be a [start, end] pair")
            periods.append((_parse_time(raw[0]), _parse_time(raw[1])))
        periods.sort()

        raw_weekend = data.get("weekend", [6, 7])
        if not isinstance(raw_weekend, list | tuple):
            raise CalendarError("weekend must be a list of ISO weekdays (1=Mon .. 7=Sun)")

        try:
            weekend = frozenset(raw_weekend)
        except TypeError as exc:
            raise CalendarError(f"weekend {raw_weekend!r} must list ISO weekdays") from exc

        return cls(
            timezone=timezone,
            work_periods=tuple(periods),
            weekend=weekend,
            holidays=_parse_dates(data.get("holidays", {}), "holidays"),
            workdays=_parse_dates(data.get("workdays", {}), "workdays"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (dates as sorted lists; from_dict accepts lists or mappings)."""
        return {
            "timezone": self.timezone,
            "work_periods": [[_fmt_time(s), _fmt_time(e)] for s, e in self.work_periods],
            "weekend": sorted(self.weekend),
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "workdays": sorted(d.isoformat() for d in self.workdays),
        }

    # ------------------------------------------------------------------ queries

    @property
    def hours_per_day(self) -> float:
        """Nominal working hours of one working day (sum of the work period lengths)."""
        total = sum(
            (_seconds_of_day(end) - _seconds_of_day(start) for start, end in self.work_periods),
            0.0,
        )
        return total / 3600

    def is_working_day(self, day: date) -> bool:
        """Tell whether ``day`` is worked: make-up workdays first, then holidays, then weekend."""
        if isinstance(day, datetime):
            raise CalendarError("is_working_day expects a date, not a datetime")
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.isoweekday() not in self.weekend

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """Return the UTC instant ``hours`` working hours after ``start`` (negative: before)."""
        return _add_working_hours(self, start, hours)

    def _add_working_hours(self, start: datetime, hours: float) -> datetime:
        cursor = _to_utc(start, "start")
        remaining = _hours_to_timedelta(hours)
        if remaining > timedelta(0):
            return self._forward(cursor, remaining)
        if remaining < timedelta(0):
            return self._backward(cursor, -remaining)
        return cursor

    def add_working_time(self, start: datetime, value: float, unit: LimitUnit | str) -> datetime:
        """Return the UTC deadline ``value`` working hours or working days after ``start``."""
        if isinstance(unit, LimitUnit):
            parsed = unit
        else:
            try:
                parsed = LimitUnit(str(unit).strip().lower())
            except ValueError:
                choices = ", ".join(u.value for u in LimitUnit)
                raise CalendarError(
                    f"unknown time limit unit {unit!r} (expected one of: {choices})"
                ) from None
        _check_number(value, "value")
        hours = value * self.hours_per_day if parsed is LimitUnit.DAYS else value
        return self.add_working_hours(start, hours)

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Return the working hours from ``start`` to ``end`` (negative if end < start)."""
        a = _to_utc(start, "start")
        b = _to_utc(end, "end")
        if b < a:
            return -self.working_hours_between(b, a)
        zone = _zone(self.timezone)
        total = timedelta(0)
        day = a.astimezone(zone).date() - timedelta(days=1)
        last = b.astimezone(zone).date() + timedelta(days=1)
        while day <= last:
            for p_start, p_end in self._periods_utc(day, zone):
                lo = max(p_start, a)
                hi = min(p_end, b)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total / _ONE_HOUR

    # ------------------------------------------------------------------ internals

    def _periods_utc(self, day: date, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
        """UTC bounds of the work periods on local ``day`` (empty on non-working days)."""
        if not self.is_working_day(day):
            return []
        return [
            (
                datetime.combine(day, start, tzinfo=zone).astimezone(UTC),
                datetime.combine(day, end, tzinfo=zone).astimezone(UTC),
            )
            for start, end in self.work_periods
        ]

    def _days(self, first: date, step: int) -> Iterator[date]:
        """Yield days from ``first`` in direction ``step``, giving up after a long idle run."""
        day = first
        delta = timedelta(days=step)
        idle = 0
        while True:
            if self.is_working_day(day):
                idle = 0
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise CalendarError(
                        f"no working time within {_MAX_IDLE_DAYS} days of {first.isoformat()}"
                    )
            yield day
            day += delta

    def _forward(self, cursor: datetime, remaining: timedelta) -> datetime:
        """Walk forward period by period consuming ``remaining`` working time."""
        zone = _zone(self.timezone)
        # Start one day early so that no period containing the cursor can be missed.
        for day in self._days(cursor.astimezone(zone).date() - timedelta(days=1), 1):
            for p_start, p_end in self._periods_utc(day, zone):
                if p_end <= cursor:
                    continue
                begin = max(p_start, cursor)
                available = p_end - begin
                if remaining <= available:
                    # Exactly-at-the-end lands on this period's end, not the next start.
                    return begin + remaining
                remaining -= available
        raise AssertionError("unreachable")  # pragma: no cover

    def _backward(self, cursor: datetime, remaining: timedelta) -> datetime:
        """Walk backward period by period consuming ``remaining`` working time."""
        zone = _zone(self.timezone)
        for day in self._days(cursor.astimezone(zone).date() + timedelta(days=1), -1):
            for p_start, p_end in reversed(self._periods_utc(day, zone)):
                if p_start >= cursor:
                    continue
                finish = min(p_end, cursor)
                available = finish - p_start
                if remaining <= available:
                    return finish - remaining
                remaining -= available
        raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------- helpers


def _zone(name: str) -> ZoneInfo:
    """Resolve an IANA timezone name, raising CalendarError if unknown."""
    if not isinstance(name, str) or not name:
        raise CalendarError(f"timezone {name!r} is not a valid IANA timezone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise CalendarError(f"unknown timezone {name!r}") from exc


def _to_utc(value: datetime, label: str) -> datetime:
    """Convert an aware datetime to UTC, rejecting naive values and plain dates."""
    if not isinstance(value, datetime):
        raise CalendarError(f"{label} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise CalendarError(f"{label} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _check_number(value: float, label: str) -> None:
    """Reject booleans, non-numbers and non-finite numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalendarError(f"{label} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise CalendarError(f"{label} must be finite, got {value!r}")


def _hours_to_timedelta(hours: float) -> timedelta:
    """Convert a finite number of hours to a timedelta (microsecond resolution)."""
    _check_number(hours, "hours")
    try:
        return timedelta(hours=hours)
    except OverflowError as exc:
        raise CalendarError(f"hours value {hours!r} is out of range") from exc


def _parse_time(raw: object) -> time:
    """Parse an "HH:MM" or "HH:MM:SS" string into a naive time."""
    if not isinstance(raw, str) or not _TIME_RE.match(raw):
        raise CalendarError(f"invalid time {raw!r}: expected 'HH:MM' (24-hour clock)")
    try:
        return time.fromisoformat(raw)
    except ValueError as exc:
        raise CalendarError(f"invalid time {raw!r}: {exc}") from exc


def _parse_dates(raw: object, label: str) -> frozenset[date]:
    """Parse a mapping {"YYYY-MM-DD": name} or a list of "YYYY-MM-DD" strings."""
    items: Iterable[object]
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if not isinstance(value, str):
                raise CalendarError(f"{label}[{key!r}]: name must be a string, got {value!r}")
        items = raw.keys()
    elif isinstance(raw, list | tuple):
        items = raw
    else:
        raise CalendarError(f"{label} must be an object of 'YYYY-MM-DD': name, or a list")
    days: set[date] = set()
    for item in items:
        if not isinstance(item, str) or not _DATE_RE.match(item):
            raise CalendarError(f"{label}: invalid date {item!r}, expected 'YYYY-MM-DD'")
        try:
            days.add(date.fromisoformat(item))
        except ValueError as exc:
            raise CalendarError(f"{label}: invalid date {item!r}: {exc}") from exc
    return frozenset(days)


def _seconds_of_day(value: time) -> float:
    """Seconds since midnight of a naive wall-clock time."""
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


def _fmt_time(value: time) -> str:
    """Format a time as HH:MM, or HH:MM:SS when it has seconds."""
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


# The cases of a dispatch batch share their start (the batch's time) and a few class limits:
# remembering the answers halves the Python time of a batch of 1,000 (bench/dispatch.py).
@lru_cache(maxsize=4096)
def _add_working_hours(calendar: BusinessCalendar, start: datetime, hours: float) -> datetime:
    return calendar._add_working_hours(start, hours)
