"""Tests for gridmgmt.kernel.business_calendar (business-hours calendar for case deadlines)."""

import ast
import json
import random
import sys
import time as time_module
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gridmgmt.kernel import business_calendar
from gridmgmt.kernel.business_calendar import BusinessCalendar, CalendarError, LimitUnit

DATA_DIR = Path(business_calendar.__file__).resolve().parent.parent / "data"
SH = ZoneInfo("Asia/Shanghai")
LA = ZoneInfo("America/Los_Angeles")


def _raw(name: str) -> dict[str, Any]:
    with (DATA_DIR / name).open(encoding="utf-8") as fh:
        return json.load(fh)


CN = BusinessCalendar.from_dict(_raw("calendar_cn.json"))
US_LA = BusinessCalendar.from_dict(_raw("calendar_us_la.json"))


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def la(*args: int) -> datetime:
    return datetime(*args, tzinfo=LA)


def _span(first: str, last: str) -> list[str]:
    day, end = date.fromisoformat(first), date.fromisoformat(last)
    out = []
    while day <= end:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def _minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "work_periods": [["08:30", "12:00"], ["13:30", "17:30"]],
        "weekend": [6, 7],
        "holidays": {},
        "workdays": {},
    }
    data.update(overrides)
    return data


def _reference_add(cal: BusinessCalendar, start: datetime, minutes: int) -> datetime:
    """Slow minute-by-minute oracle (only for minute-aligned starts and positive minutes)."""
    zone = ZoneInfo(cal.timezone)
    cursor = start.astimezone(UTC)
    left = minutes
    while True:
        local = cursor.astimezone(zone)
        if cal.is_working_day(local.date()) and any(
            s <= local.time() < e for s, e in cal.work_periods
        ):
            left -= 1
            if left == 0:
                return cursor + timedelta(minutes=1)
        cursor += timedelta(minutes=1)


# --------------------------------------------------------------------------- shipped data

CN_HOLIDAY_SPANS = [
    ("2025-01-01", "2025-01-01"),
    ("2025-01-28", "2025-02-04"),
    ("2025-04-04", "2025-04-06"),
    ("2025-05-01", "2025-05-05"),
    ("2025-05-31", "2025-06-02"),
    ("2025-10-01", "2025-10-08"),
    ("2026-01-01", "2026-01-03"),
    ("2026-02-15", "2026-02-23"),
    ("2026-04-04", "2026-04-06"),
    ("2026-05-01", "2026-05-05"),
    ("2026-06-19", "2026-06-21"),
    ("2026-09-25", "2026-09-27"),
    ("2026-10-01", "2026-10-07"),
]
CN_HOLIDAYS = [d for first, last in CN_HOLIDAY_SPANS for d in _span(first, last)]
CN_MAKEUP_DAYS = [
    "2025-01-26",
    "2025-02-08",
    "2025-04-27",
    "2025-09-28",
    "2025-10-11",
    "2026-01-04",
    "2026-02-14",
    "2026-02-28",
    "2026-05-09",
    "2026-09-20",
    "2026-10-10",
]
US_HOLIDAYS = [
    "2025-01-01",
    "2025-01-20",
    "2025-02-17",
    "2025-05-26",
    "2025-06-19",
    "2025-07-04",
    "2025-09-01",
    "2025-10-13",
    "2025-11-11",
    "2025-11-27",
    "2025-12-25",
    "2026-01-01",
    "2026-01-19",
    "2026-02-16",
    "2026-05-25",
    "2026-06-19",
    "2026-07-03",
    "2026-09-07",
    "2026-10-12",
    "2026-11-11",
    "2026-11-26",
    "2026-12-25",
    "2027-01-01",
    "2027-01-18",
    "2027-02-15",
    "2027-05-31",
    "2027-06-18",
    "2027-07-05",
    "2027-09-06",
    "2027-10-11",
    "2027-11-11",
    "2027-11-25",
    "2027-12-24",
    "2027-12-31",
]


@pytest.mark.parametrize(
    ("name", "code", "timezone", "periods", "hours"),
    [
        ("calendar_cn.json", "cn", "Asia/Shanghai", ((8, 30, 12, 0), (13, 30, 17, 30)), 7.5),
        ("calendar_us_la.json", "us_la", "America/Los_Angeles", ((8, 0, 12, 0), (13, 0, 17, 0)), 8),
    ],
)
def test_shipped_calendar_loads(
    name: str, code: str, timezone: str, periods: tuple[tuple[int, ...], ...], hours: float
) -> None:
    raw = _raw(name)
    cal = BusinessCalendar.from_dict(raw)
    assert raw["code"] == code
    assert raw["name"]
    assert cal.timezone == timezone
    assert cal.work_periods == tuple((time(a, b), time(c, d)) for a, b, c, d in periods)
    assert cal.weekend == frozenset({6, 7})
    assert cal.hours_per_day == hours
    # Every holiday / make-up day carries a human-readable name.
    for key in ("holidays", "workdays"):
        assert all(isinstance(v, str) and v for v in raw[key].values())


@pytest.mark.parametrize("day", CN_HOLIDAYS)
def test_cn_holidays_listed_and_off(day: str) -> None:
    assert day in _raw("calendar_cn.json")["holidays"]
    assert not CN.is_working_day(date.fromisoformat(day))


@pytest.mark.parametrize("day", CN_MAKEUP_DAYS)
def test_cn_makeup_days_listed_and_worked(day: str) -> None:
    parsed = date.fromisoformat(day)
    assert day in _raw("calendar_cn.json")["workdays"]
    assert parsed.isoweekday() in (6, 7)  # every 调休 day falls on a weekend
    assert CN.is_working_day(parsed)


def test_cn_lists_nothing_else() -> None:
    raw = _raw("calendar_cn.json")
    assert set(raw["holidays"]) == set(CN_HOLIDAYS)
    assert set(raw["workdays"]) == set(CN_MAKEUP_DAYS)


def test_cn_working_day_counts() -> None:
    # 2025: 261 weekdays - 18 weekday holidays + 5 make-up days = 248 days actually worked.
    days = [date(2025, 1, 1) + timedelta(days=i) for i in range(365)]
    assert sum(CN.is_working_day(d) for d in days) == 248
    # Days adjacent to the breaks are ordinary working days.
    for day in ("2025-01-27", "2025-02-05", "2025-10-09", "2026-02-24", "2026-10-08"):
        assert CN.is_working_day(date.fromisoformat(day))


@pytest.mark.parametrize("day", US_HOLIDAYS)
def test_us_la_federal_holidays_off(day: str) -> None:
    parsed = date.fromisoformat(day)
    assert day in _raw("calendar_us_la.json")["holidays"]
    assert parsed.isoweekday() <= 5  # observed dates are always weekdays
    assert not US_LA.is_working_day(parsed)


def test_us_la_lists_exactly_the_federal_holidays() -> None:
    raw = _raw("calendar_us_la.json")
    assert set(raw["holidays"]) == set(US_HOLIDAYS)
    assert raw["workdays"] == {}
    assert US_LA.workdays == frozenset()


def test_us_la_juneteenth_and_observed_independence_day() -> None:
    # Juneteenth 2026 is a Friday; July 4 2026 is a Saturday, observed Friday July 3.
    assert not US_LA.is_working_day(date(2026, 6, 19))
    assert not US_LA.is_working_day(date(2026, 7, 3))
    assert US_LA.is_working_day(date(2026, 7, 2))
    # Thu 2026-06-18 16:00 + 2h: 1h on Thursday, then Fri 19th (Juneteenth) and the weekend
    # are skipped, landing Monday 09:00 PDT.
    assert US_LA.add_working_hours(la(2026, 6, 18, 16), 2) == la(2026, 6, 22, 9)
    # Thu 2026-07-02 16:30 + 1h skips the observed holiday and the weekend.
    assert US_LA.add_working_hours(la(2026, 7, 2, 16, 30), 1) == la(2026, 7, 6, 8, 30)
    assert US_LA.working_hours_between(la(2026, 7, 2, 17), la(2026, 7, 6, 8)) == 0


# --------------------------------------------------------------------------- day rules


def test_is_working_day_precedence() -> None:
    cal = BusinessCalendar.from_dict(
        _minimal(holidays=["2025-03-12"], workdays=["2025-03-15", "2025-03-13"])
    )
    assert cal.is_working_day(date(2025, 3, 11))  # plain Tuesday
    assert not cal.is_working_day(date(2025, 3, 12))  # holiday on a Wednesday
    assert cal.is_working_day(date(2025, 3, 13))  # workday on a weekday: still worked
    assert cal.is_working_day(date(2025, 3, 15))  # make-up Saturday
    assert not cal.is_working_day(date(2025, 3, 16))  # plain Sunday


# --------------------------------------------------------------------------- China scenarios


def test_spring_festival_2025_one_working_day_from_monday() -> None:
    # Mon Jan 27 10:00: 6h left that day (10-12, 13:30-17:30); Jan 28 - Feb 4 is the
    # holiday, so the remaining 1.5h fall on Wed Feb 5 08:30-10:00.
    result = CN.add_working_time(sh(2025, 1, 27, 10), 1, LimitUnit.DAYS)
    assert result == datetime(2025, 2, 5, 2, 0, tzinfo=UTC)
    assert result.astimezone(SH) == sh(2025, 2, 5, 10)
    assert CN.working_hours_between(sh(2025, 1, 27, 10), result) == 7.5


def test_spring_festival_2025_makeup_sunday_and_saturday() -> None:
    # Fri Jan 24 16:00 + 7.5h: 1.5h Friday, Sat 25th off, Sun 26th is a make-up working day.
    assert CN.add_working_hours(sh(2025, 1, 24, 16), 7.5) == sh(2025, 1, 26, 16)
    # Fri Feb 7 17:00 + 1h: 0.5h Friday, Sat Feb 8 is a make-up working day.
    assert CN.add_working_hours(sh(2025, 2, 7, 17), 1) == sh(2025, 2, 8, 9)
    # Without the make-up Saturday it would have been Monday Feb 10.
    assert CN.add_working_hours(sh(2025, 2, 8, 17), 1) == sh(2025, 2, 10, 9)


def test_national_day_2025_lands_on_makeup_saturday() -> None:
    # Tue Sep 30 14:00 + 3 working days (22.5h): 3.5h on the 30th, Oct 1-8 off, then
    # Oct 9 (7.5h), Oct 10 (7.5h) and the make-up Saturday Oct 11 until 14:00.
    result = CN.add_working_time(sh(2025, 9, 30, 14), 3, "days")
    assert result == datetime(2025, 10, 11, 6, 0, tzinfo=UTC)
    assert result.astimezone(SH).isoweekday() == 6
    # Sep 28 (Sunday) is worked as well.
    assert CN.add_working_hours(sh(2025, 9, 26, 17), 1) == sh(2025, 9, 28, 9)


def test_fifteen_working_days_across_national_day() -> None:
    # Working days after Mon Sep 22: 23-26, 28 (Sun), 29, 30, Oct 9, 10, 11 (Sat), 13-17.
    result = CN.add_working_time(sh(2025, 9, 22, 9), 15, LimitUnit.DAYS)
    assert result == sh(2025, 10, 17, 9)


@pytest.mark.parametrize(
    "start",
    [
        sh(2025, 3, 7, 19),  # Friday evening
        sh(2025, 3, 7, 17, 30),  # Friday, exactly at closing time
        sh(2025, 3, 8, 11),  # Saturday
        sh(2025, 3, 10, 7),  # Monday before opening
        sh(2025, 3, 10, 8, 30),  # Monday, exactly at opening
    ],
)
def test_filing_outside_hours_counts_from_monday_0830(start: datetime) -> None:
    assert CN.add_working_hours(start, 2) == sh(2025, 3, 10, 10, 30)
    assert CN.add_working_hours(start, 2) == datetime(2025, 3, 10, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        (sh(2025, 3, 10, 11), 2, sh(2025, 3, 10, 14, 30)),  # crosses lunch
        (sh(2025, 3, 10, 12, 30), 1, sh(2025, 3, 10, 14, 30)),  # filed during lunch
        (sh(2025, 3, 10, 12), 0.5, sh(2025, 3, 10, 14)),  # filed at 12:00 sharp
        (sh(2025, 3, 10, 11, 45), 0.25, sh(2025, 3, 10, 12)),  # exactly to lunch
    ],
)
def test_lunch_break_is_skipped(start: datetime, hours: float, expected: datetime) -> None:
    assert CN.add_working_hours(start, hours) == expected


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        # Runs out exactly at a period end -> that end, not the next period's start.
        (sh(2025, 3, 10, 10), 2, sh(2025, 3, 10, 12)),
        (sh(2025, 3, 10, 16, 30), 1, sh(2025, 3, 10, 17, 30)),
        (sh(2025, 3, 10, 8, 30), 7.5, sh(2025, 3, 10, 17, 30)),
        (sh(2025, 3, 10, 6), 3.5, sh(2025, 3, 10, 12)),
        (sh(2025, 3, 7, 16), 1.5, sh(2025, 3, 7, 17, 30)),  # Friday: not next Monday
        # Backwards, running out exactly at a period start -> that start.
        (sh(2025, 3, 10, 14, 30), -1, sh(2025, 3, 10, 13, 30)),
        (sh(2025, 3, 10, 9, 30), -1, sh(2025, 3, 10, 8, 30)),
    ],
)
def test_exact_end_of_period(start: datetime, hours: float, expected: datetime) -> None:
    assert CN.add_working_hours(start, hours) == expected


def test_negative_hours_walk_backwards() -> None:
    # Mon 09:00 - 1h: 0.5h on Monday morning, then Friday 17:30 - 0.5h.
    assert CN.add_working_hours(sh(2025, 3, 10, 9), -1) == sh(2025, 3, 7, 17)
    # Back across the Spring Festival: Wed Feb 5 09:00 - 1h -> Mon Jan 27 17:00.
    assert CN.add_working_hours(sh(2025, 2, 5, 9), -1) == sh(2025, 1, 27, 17)
    assert CN.working_hours_between(sh(2025, 2, 5, 9), sh(2025, 1, 27, 17)) == -1


def test_zero_hours_returns_start_in_utc() -> None:
    for start in (sh(2025, 3, 8, 3, 17, 42, 123456), la(2026, 3, 8, 2, 30), sh(2025, 3, 10, 9)):
        result = CN.add_working_hours(start, 0)
        # Compare against the UTC conversion: la(2026, 3, 8, 2, 30) is a non-existent local
        # time (spring-forward gap) and PEP 495 makes gap times unequal to other zones.
        assert result == start.astimezone(UTC)
        assert result.timestamp() == start.timestamp()
        assert result.tzinfo is UTC
        assert US_LA.add_working_time(start, 0, "days") == start.astimezone(UTC)


def test_results_are_utc() -> None:
    for result in (
        CN.add_working_hours(sh(2025, 3, 10, 9), 3),
        CN.add_working_time(sh(2025, 3, 10, 9), 2, "days"),
        US_LA.add_working_hours(la(2026, 3, 6, 16), 2),
        CN.add_working_hours(sh(2025, 3, 10, 9), -3),
    ):
        assert result.tzinfo is UTC


def test_add_working_time_units() -> None:
    start = sh(2025, 3, 10, 9)
    assert CN.add_working_time(start, 3, LimitUnit.HOURS) == sh(2025, 3, 10, 12)
    assert CN.add_working_time(start, 4, "hours") == sh(2025, 3, 10, 14, 30)
    assert CN.add_working_time(start, 4, "HOURS") == sh(2025, 3, 10, 14, 30)
    assert CN.add_working_time(start, 1, "days") == sh(2025, 3, 11, 9)
    assert CN.add_working_time(start, 0.5, LimitUnit.DAYS) == sh(2025, 3, 10, 14, 15)
    assert US_LA.add_working_time(la(2026, 3, 10, 9), 2, "days") == la(2026, 3, 12, 9)
    assert LimitUnit("days") is LimitUnit.DAYS
    assert LimitUnit.HOURS == "hours"
    with pytest.raises(CalendarError, match="unit"):
        CN.add_working_time(start, 1, "weeks")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3", None, True])
def test_add_rejects_bad_amounts(bad: Any) -> None:
    with pytest.raises(CalendarError):
        CN.add_working_hours(sh(2025, 3, 10, 9), bad)


def test_naive_datetimes_rejected() -> None:
    naive = datetime(2025, 3, 10, 9)
    aware = sh(2025, 3, 10, 9)
    with pytest.raises(CalendarError, match="timezone-aware"):
        CN.add_working_hours(naive, 1)
    with pytest.raises(CalendarError, match="timezone-aware"):
        CN.add_working_hours(naive, 0)
    with pytest.raises(CalendarError, match="timezone-aware"):
        CN.add_working_time(naive, 1, "days")
    with pytest.raises(CalendarError, match="timezone-aware"):
        CN.working_hours_between(naive, aware)
    with pytest.raises(CalendarError, match="timezone-aware"):
        CN.working_hours_between(aware, naive)
    with pytest.raises(CalendarError):
        CN.add_working_hours(date(2025, 3, 10), 1)  # type: ignore[arg-type]


def test_start_in_another_timezone_is_converted() -> None:
    # 2025-03-10 01:00 UTC is 09:00 in Shanghai.
    start = datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
    assert CN.add_working_hours(start, 1) == sh(2025, 3, 10, 10)
    # Friday 12:00 UTC is Friday 20:00 in Shanghai: counted from Monday 08:30.
    assert CN.add_working_hours(datetime(2025, 3, 7, 12, tzinfo=UTC), 1) == sh(2025, 3, 10, 9, 30)


# --------------------------------------------------------------------------- DST (Los Angeles)


def test_dst_spring_forward_2026() -> None:
    # DST starts Sun 2026-03-08: Friday is UTC-8, Monday is UTC-7.
    start = la(2026, 3, 6, 16)
    assert start.utcoffset() == timedelta(hours=-8)
    result = US_LA.add_working_hours(start, 2)
    assert result == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)  # Mon 09:00 PDT
    assert result.astimezone(LA).hour == 9
    assert US_LA.working_hours_between(start, result) == 2
    # A whole week of working days keeps the local wall-clock time.
    assert US_LA.add_working_time(la(2026, 3, 5, 10), 5, "days") == la(2026, 3, 12, 10)
    assert US_LA.working_hours_between(la(2026, 3, 6, 8), la(2026, 3, 9, 17)) == 16


def test_dst_fall_back_2026() -> None:
    # DST ends Sun 2026-11-01: Friday Oct 30 is UTC-7, Monday Nov 2 is UTC-8.
    start = la(2026, 10, 30, 16)
    assert start.utcoffset() == timedelta(hours=-7)
    result = US_LA.add_working_hours(start, 2)
    assert result == datetime(2026, 11, 2, 17, 0, tzinfo=UTC)  # Mon 09:00 PST
    assert result.astimezone(LA).hour == 9
    assert US_LA.working_hours_between(start, result) == 2
    assert US_LA.add_working_time(la(2026, 10, 29, 10), 5, "days") == la(2026, 11, 5, 10)
    assert US_LA.working_hours_between(la(2026, 10, 30, 8), la(2026, 11, 2, 17)) == 16


def test_dst_inside_a_period_counts_real_elapsed_time() -> None:
    # A night-shift calendar working 00:00-06:00 every day: on transition days the
    # period is 5 (spring) or 7 (autumn) real hours long.
    cal = BusinessCalendar.from_dict(
        {"timezone": "America/Los_Angeles", "work_periods": [["00:00", "06:00"]], "weekend": []}
    )
    assert cal.hours_per_day == 6
    assert cal.working_hours_between(la(2026, 3, 8, 0), la(2026, 3, 8, 6)) == 5
    assert cal.working_hours_between(la(2026, 11, 1, 0), la(2026, 11, 1, 6)) == 7
    assert cal.add_working_hours(la(2026, 3, 8, 0), 5) == la(2026, 3, 8, 6)
    assert cal.add_working_hours(la(2026, 3, 8, 0), 5) == datetime(2026, 3, 8, 13, tzinfo=UTC)
    assert cal.add_working_hours(la(2026, 11, 1, 0), 7) == datetime(2026, 11, 1, 14, tzinfo=UTC)
    assert cal.add_working_hours(la(2026, 3, 8, 0), 6) == la(2026, 3, 9, 1)


# --------------------------------------------------------------------------- between / round trip


def test_working_hours_between_basics() -> None:
    assert CN.working_hours_between(sh(2025, 3, 10, 9), sh(2025, 3, 10, 9)) == 0
    assert CN.working_hours_between(sh(2025, 3, 10, 8), sh(2025, 3, 10, 18)) == 7.5
    assert CN.working_hours_between(sh(2025, 3, 10, 12), sh(2025, 3, 10, 13, 30)) == 0
    assert CN.working_hours_between(sh(2025, 3, 7, 17, 30), sh(2025, 3, 10, 8, 30)) == 0
    assert CN.working_hours_between(sh(2025, 3, 10, 14), sh(2025, 3, 10, 11)) == -1.5
    # The whole Spring Festival break: only Monday Jan 27 counts.
    assert CN.working_hours_between(sh(2025, 1, 27, 8, 30), sh(2025, 2, 5, 8, 30)) == 7.5
    # A full 2025 calendar year of the China calendar: 248 working days.
    assert CN.working_hours_between(sh(2025, 1, 1), sh(2026, 1, 1)) == 248 * 7.5


@pytest.mark.parametrize(
    ("start", "hours"),
    [
        (sh(2025, 1, 27, 10), 1.5),
        (sh(2025, 9, 30, 9, 45), 40),
        (sh(2025, 3, 10, 11, 59), 0.05),
        (sh(2025, 12, 31, 17), 123.25),
        (la(2026, 3, 6, 16, 20), 9.75),
        (la(2026, 10, 30, 11), 30),
        (la(2026, 7, 2, 9), -12.5),
    ],
)
def test_round_trip(start: datetime, hours: float) -> None:
    cal = CN if start.tzinfo is SH else US_LA
    end = cal.add_working_hours(start, hours)
    assert cal.working_hours_between(start, end) == hours


@pytest.mark.parametrize(("cal", "zone"), [(CN, SH), (US_LA, LA)])
def test_random_round_trip(cal: BusinessCalendar, zone: ZoneInfo) -> None:
    rng = random.Random(20250127)
    base = datetime(2024, 12, 20, tzinfo=zone)
    for _ in range(400):
        start = base + timedelta(minutes=rng.randrange(0, 60 * 24 * 740))
        minutes = rng.randrange(-60 * 200, 60 * 200)
        hours = minutes / 60
        end = cal.add_working_hours(start, hours)
        assert cal.working_hours_between(start, end) == hours, (start, hours, end)
        # Landing points are always inside (or on the edge of) working time.
        if hours:
            local = end.astimezone(zone)
            assert cal.is_working_day(local.date())
            assert any(s <= local.time() <= e for s, e in cal.work_periods)
        # Arbitrary (non minute-aligned) float amounts round-trip to within a microsecond.
        fuzzy = rng.uniform(0, 80)
        end = cal.add_working_hours(start, fuzzy)
        assert cal.working_hours_between(start, end) == pytest.approx(fuzzy, abs=1e-9)


@pytest.mark.parametrize(("cal", "zone"), [(CN, SH), (US_LA, LA)])
def test_matches_minute_by_minute_oracle(cal: BusinessCalendar, zone: ZoneInfo) -> None:
    rng = random.Random(7)
    # Starts around the Spring Festival / National Day breaks and both DST changes.
    anchors = [
        datetime(2025, 1, 23, tzinfo=zone),
        datetime(2025, 9, 25, tzinfo=zone),
        datetime(2026, 3, 5, tzinfo=zone),
        datetime(2026, 10, 29, tzinfo=zone),
    ]
    for anchor in anchors:
        for _ in range(6):
            start = anchor + timedelta(minutes=rng.randrange(0, 60 * 24 * 6))
            minutes = rng.randrange(1, 60 * 16)
            expected = _reference_add(cal, start, minutes)
            assert cal.add_working_hours(start, minutes / 60) == expected, (start, minutes)


def test_large_amounts_are_fast_and_exact() -> None:
    # 2000 working hours from Thu 2025-01-02 09:00: 7h on Jan 2, 265 full days (1987.5h),
    # then 5.5h into the next working day. 247 working days remain in 2025 after Jan 2, so
    # this is the 19th working day of 2026 (Jan 4 make-up Sunday counts): Wed Jan 28 15:30.
    started = time_module.perf_counter()
    result = CN.add_working_hours(sh(2025, 1, 2, 9), 2000)
    assert result == sh(2026, 1, 28, 15, 30)
    assert CN.working_hours_between(sh(2025, 1, 2, 9), result) == 2000
    # Ten years' worth of working hours must not be computed minute by minute.
    far = US_LA.add_working_hours(la(2025, 1, 2, 9), 20_000)
    assert US_LA.working_hours_between(la(2025, 1, 2, 9), far) == 20_000
    assert US_LA.add_working_hours(far, -20_000) == la(2025, 1, 2, 9)
    assert time_module.perf_counter() - started < 2.0


def test_calendar_without_any_working_day_raises_instead_of_hanging() -> None:
    cal = BusinessCalendar.from_dict(_minimal(weekend=[1, 2, 3, 4, 5, 6, 7]))
    with pytest.raises(CalendarError, match="no working time"):
        cal.add_working_hours(sh(2025, 3, 10, 9), 1)
    assert cal.working_hours_between(sh(2025, 3, 10), sh(2025, 4, 10)) == 0
    only_makeup = BusinessCalendar.from_dict(
        _minimal(weekend=[1, 2, 3, 4, 5, 6, 7], workdays=["2025-03-15"])
    )
    # The single make-up Saturday provides exactly 7.5 working hours, and no more.
    assert only_makeup.add_working_hours(sh(2025, 3, 10, 9), 7.5) == sh(2025, 3, 15, 17, 30)
    assert only_makeup.add_working_hours(sh(2025, 3, 20, 9), -7.5) == sh(2025, 3, 15, 8, 30)
    with pytest.raises(CalendarError, match="no working time"):
        only_makeup.add_working_hours(sh(2025, 3, 10, 9), 8)


# --------------------------------------------------------------------------- (de)serialisation


def test_to_dict_round_trip_and_hashable() -> None:
    for cal in (CN, US_LA):
        data = cal.to_dict()
        assert json.loads(json.dumps(data)) == data
        again = BusinessCalendar.from_dict(data)
        assert again == cal
        assert hash(again) == hash(cal)
    assert CN.to_dict()["work_periods"] == [["08:30", "12:00"], ["13:30", "17:30"]]
    assert "2025-10-11" in CN.to_dict()["workdays"]


def test_from_dict_defaults_and_sorting() -> None:
    cal = BusinessCalendar.from_dict(
        {"timezone": "UTC", "work_periods": [["13:00", "17:00"], ["09:00", "12:00"]]}
    )
    assert cal.work_periods == ((time(9), time(12)), (time(13), time(17)))
    assert cal.weekend == frozenset({6, 7})
    assert cal.holidays == frozenset()
    assert cal.workdays == frozenset()
    assert cal.hours_per_day == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "unknown timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 8}, "timezone"),
        ({"work_periods": [["25:00", "26:00"]]}, "invalid time"),
        ({"work_periods": [["8:30", "12:00"]]}, "invalid time"),
        ({"work_periods": [["08:60", "12:00"]]}, "invalid time"),
        ({"work_periods": [[830, 1200]]}, "invalid time"),
        ({"work_periods": [["08:30"]]}, "pair"),
        ({"work_periods": "08:30-12:00"}, "work_periods"),
        ({"work_periods": []}, "at least one"),
        ({"work_periods": [["12:00", "08:30"]]}, "start must be before end"),
        ({"work_periods": [["08:30", "08:30"]]}, "start must be before end"),
        ({"work_periods": [["08:30", "12:00"], ["11:30", "17:30"]]}, "overlap"),
        ({"work_periods": [["13:30", "17:30"], ["08:00", "14:00"]]}, "overlap"),
        ({"weekend": [0]}, "weekday"),
        ({"weekend": [8]}, "weekday"),
        ({"weekend": ["6"]}, "weekday"),
        ({"weekend": 6}, "weekend"),
        ({"holidays": {"2025-02-30": "x"}}, "invalid date"),
        ({"holidays": {"2025/01/01": "x"}}, "invalid date"),
        ({"holidays": {"2025-01-01": 1}}, "name must be a string"),
        ({"holidays": "2025-01-01"}, "holidays"),
        ({"workdays": ["20250126"]}, "invalid date"),
        (
            {"holidays": {"2025-01-26": "x"}, "workdays": {"2025-01-26": "y"}},
            "both as holiday and as make-up workday: 2025-01-26",
        ),
        ({"holiday": {"2025-01-01": "typo"}}, "unknown key"),
    ],
)
def test_from_dict_validation(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        BusinessCalendar.from_dict(_minimal(**overrides))


@pytest.mark.parametrize("missing", ["timezone", "work_periods"])
def test_from_dict_missing_required_key(missing: str) -> None:
    data = _minimal()
    del data[missing]
    with pytest.raises(CalendarError, match=f"missing required key.*{missing}"):
        BusinessCalendar.from_dict(data)


def test_from_dict_rejects_non_object() -> None:
    with pytest.raises(CalendarError, match="JSON object"):
        BusinessCalendar.from_dict(["timezone", "UTC"])  # type: ignore[arg-type]


def test_calendar_error_is_value_error() -> None:
    assert issubclass(CalendarError, ValueError)
    with pytest.raises(ValueError, match="unknown timezone"):
        BusinessCalendar.from_dict(_minimal(timezone="Nowhere/Land"))


def test_direct_construction_is_validated() -> None:
    ok = BusinessCalendar(
        timezone="Asia/Shanghai",
        work_periods=((time(8, 30), time(12)), (time(13, 30), time(17, 30))),
        weekend=frozenset({6, 7}),
        holidays=frozenset({date(2025, 1, 1)}),
        workdays=frozenset(),
    )
    assert not ok.is_working_day(date(2025, 1, 1))
    with pytest.raises(CalendarError, match="overlap"):
        BusinessCalendar(
            timezone="Asia/Shanghai",
            work_periods=((time(8), time(12)), (time(11), time(17))),
            weekend=frozenset({6, 7}),
            holidays=frozenset(),
            workdays=frozenset(),
        )
    with pytest.raises(CalendarError, match="unknown timezone"):
        BusinessCalendar(
            timezone="Asia/Atlantis",
            work_periods=((time(8), time(12)),),
            weekend=frozenset({6, 7}),
            holidays=frozenset(),
            workdays=frozenset(),
        )
    with pytest.raises(CalendarError, match="both as holiday"):
        BusinessCalendar(
            timezone="UTC",
            work_periods=((time(8), time(12)),),
            weekend=frozenset({6, 7}),
            holidays=frozenset({date(2025, 1, 4)}),
            workdays=frozenset({date(2025, 1, 4)}),
        )


def test_module_is_pure_stdlib() -> None:
    tree = ast.parse(Path(business_calendar.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "expected some imports"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
