"""Changing a stored calendar: days added and removed one at a time, uploads, and deadlines
that follow the change at once (`city_calendar` notices it without a restart)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.calendar_store import (
    MAX_UPLOAD_BYTES,
    calendar_stamp,
    city_calendar,
    get_calendar,
    load_calendar,
    remove_day,
    set_day,
    shipped_calendar,
    upload_calendar,
)
from gridmgmt.kernel.errors import Conflict, InvalidInput, NotConfigured, NotFound
from gridmgmt.kernel.models import CalendarDay, CalendarRecord

LA = ZoneInfo("America/Los_Angeles")
# A Wednesday at 16:00 in Los Angeles; 8 working hours (08-12, 13-17) later is Thursday 16:00.
START = datetime(2026, 3, 11, 16, 0, tzinfo=LA)
THURSDAY, FRIDAY, SATURDAY = date(2026, 3, 12), date(2026, 3, 13), date(2026, 3, 14)


@pytest.fixture
def city(app: Flask, session: Session, monkeypatch: pytest.MonkeyPatch) -> Session:
    """The shipped Los Angeles calendar loaded, and the city using it."""
    monkeypatch.setitem(app.config, "CALENDAR_CODE", "us_la")
    load_calendar(session, shipped_calendar("us_la"))
    return session


def next_deadline(session: Session) -> datetime:
    """The deadline of an 8-working-hour limit from START, as the dispatcher computes it."""
    return city_calendar(session).add_working_time(START, 8, LimitUnit.HOURS).astimezone(LA)


def days_of(session: Session, code: str) -> list[tuple[date, bool, str]]:
    session.expire_all()
    return [
        (d.day, d.is_workday, d.name)
        for d in session.scalars(
            select(CalendarDay)
            .join(CalendarRecord)
            .where(CalendarRecord.code == code)
            .order_by(CalendarDay.day)
        )
    ]


# ---------------------------------------------------------------- deadlines follow at once


def test_a_new_holiday_moves_the_next_deadline(city: Session) -> None:
    assert next_deadline(city) == datetime(2026, 3, 12, 16, 0, tzinfo=LA)

    set_day(city, "us_la", THURSDAY, False, "Test holiday")

    assert next_deadline(city) == datetime(2026, 3, 13, 16, 0, tzinfo=LA)

    remove_day(city, "us_la", THURSDAY)

    assert next_deadline(city) == datetime(2026, 3, 12, 16, 0, tzinfo=LA)


def test_a_make_up_working_day_is_worked(city: Session) -> None:
    set_day(city, "us_la", THURSDAY, False)
    set_day(city, "us_la", FRIDAY, False)
    assert next_deadline(city) == datetime(2026, 3, 16, 16, 0, tzinfo=LA)  # Monday

    set_day(city, "us_la", SATURDAY, True, "Make-up day")

    assert next_deadline(city) == datetime(2026, 3, 14, 16, 0, tzinfo=LA)


def test_the_calendar_is_kept_while_nothing_changes(city: Session) -> None:
    first = city_calendar(city)

    assert city_calendar(city) is first  # no new read of the days


def test_a_change_made_elsewhere_is_noticed(city: Session) -> None:
    """Another process (a web worker, `flask calendar load`) changed the rows: this process
    never heard of it, and still computes with the new calendar."""
    before = city_calendar(city)
    city.execute(
        text(
            "INSERT INTO calendar_days (calendar_id, day, is_workday, name)"
            " SELECT id, :day, false, 'elsewhere' FROM business_calendars WHERE code = 'us_la'"
        ),
        {"day": THURSDAY},
    )

    after = city_calendar(city)

    assert after is not before
    assert THURSDAY in after.holidays
    assert next_deadline(city) == datetime(2026, 3, 13, 16, 0, tzinfo=LA)


def test_the_stamp_ignores_names_but_not_kinds(city: Session) -> None:
    set_day(city, "us_la", THURSDAY, False, "One name")
    stamp = calendar_stamp(city, "us_la")

    set_day(city, "us_la", THURSDAY, False, "Another name")
    assert calendar_stamp(city, "us_la") == stamp

    remove_day(city, "us_la", THURSDAY)
    assert calendar_stamp(city, "us_la") != stamp
    assert calendar_stamp(city, "atlantis") is None


def test_a_reload_of_the_file_is_noticed(city: Session, tmp_path: Any) -> None:
    city_calendar(city)
    data = json.loads(shipped_calendar("us_la").read_text(encoding="utf-8"))
    data["work_periods"] = [["09:00", "17:00"]]
    path = tmp_path / "la.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    load_calendar(city, path)

    # Wednesday 16-17, then Thursday 09:00 + 7 h.
    assert next_deadline(city) == datetime(2026, 3, 12, 16, 0, tzinfo=LA)
    assert city_calendar(city).hours_per_day == 8
    assert city_calendar(city).work_periods[0][0].hour == 9


def test_city_calendar_not_loaded(app: Flask, session: Session, monkeypatch: Any) -> None:
    monkeypatch.setitem(app.config, "CALENDAR_CODE", "atlantis")

    with pytest.raises(NotConfigured, match="not loaded"):  # a 503 for a person's action
        city_calendar(session)


# ---------------------------------------------------------------- days


def test_set_day_reports_before_and_after(city: Session) -> None:
    added = set_day(city, "us_la", THURSDAY, False, "  Spring   day ")

    assert added.before is None
    assert added.after == {
        "calendar": "us_la",
        "day": "2026-03-12",
        "kind": "holiday",
        "name": "Spring day",
    }

    changed = set_day(city, "us_la", SATURDAY, True, "Worked")
    assert changed.after is not None and changed.after["kind"] == "workday"

    renamed = set_day(city, "us_la", THURSDAY, False, "Renamed")
    assert renamed.before == added.after
    assert renamed.after is not None and renamed.after["name"] == "Renamed"

    removed = remove_day(city, "us_la", THURSDAY)
    assert removed.before == renamed.after and removed.after is None
    assert THURSDAY not in get_calendar(city, "us_la").holidays


@pytest.mark.parametrize(
    ("code", "day", "is_workday", "name", "error", "message"),
    [
        ("us_la", FRIDAY, True, "", InvalidInput, "working day of the week already"),
        ("us_la", date(1900, 1, 1), False, "", InvalidInput, "not between"),
        ("us_la", date(2999, 1, 1), False, "", InvalidInput, "not between"),
        ("us_la", THURSDAY, False, "x" * 101, InvalidInput, "at most 100"),
        ("atlantis", THURSDAY, False, "", NotFound, "not loaded"),
    ],
)
def test_set_day_refuses_and_writes_nothing(
    city: Session,
    code: str,
    day: date,
    is_workday: bool,
    name: str,
    error: type[Exception],
    message: str,
) -> None:
    days = days_of(city, "us_la")

    with pytest.raises(error, match=message):
        set_day(city, code, day, is_workday, name)

    assert days_of(city, "us_la") == days


def test_remove_an_unlisted_day(city: Session) -> None:
    days = days_of(city, "us_la")

    with pytest.raises(Conflict, match="neither a holiday"):
        remove_day(city, "us_la", THURSDAY)
    with pytest.raises(NotFound):
        remove_day(city, "atlantis", THURSDAY)

    assert days_of(city, "us_la") == days


# ---------------------------------------------------------------- uploads


def calendar_file(**changes: Any) -> bytes:
    data = json.loads(shipped_calendar("us_la").read_text(encoding="utf-8"))
    data.update(changes)
    return json.dumps(data).encode()


def test_upload_replaces_the_calendar_and_reports_before(city: Session) -> None:
    before, record = upload_calendar(
        city, calendar_file(holidays={"2026-03-12": "Only day"}), "la.json"
    )

    assert before is not None and before["code"] == "us_la" and before["holidays"] > 1
    assert record.code == "us_la"
    assert days_of(city, "us_la") == [(THURSDAY, False, "Only day")]
    assert next_deadline(city) == datetime(2026, 3, 13, 16, 0, tzinfo=LA)


def test_upload_of_a_new_calendar(city: Session) -> None:
    before, record = upload_calendar(city, calendar_file(code="test_new", workdays={}), "n.json")

    assert before is None and record.code == "test_new"
    assert get_calendar(city, "test_new").timezone == "America/Los_Angeles"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json at all", "bad.json: Expecting value"),
        (b"\xff\xfe\x00", "bad.json: 'utf-8' codec"),
        (b"[1, 2]", "must be a JSON object"),
        (calendar_file(timezone="Mars/Olympus"), "unknown timezone"),
        (calendar_file(work_periods=[["17:00", "08:00"]]), "start must be before end"),
        (calendar_file(holidays={"2026-02-30": "x"}), "invalid date"),
        (calendar_file(workdays={"2026-12-25": "x"}), "both as holiday and as make-up"),
        (calendar_file(code=""), "needs a 'code'"),
        (calendar_file(code="x" * 33), "at most 32 characters"),
        (calendar_file(colour="red"), "unknown key"),
        (b" " * (MAX_UPLOAD_BYTES + 1), "larger than"),
    ],
)
def test_bad_uploads_change_nothing(city: Session, raw: bytes, message: str) -> None:
    days = days_of(city, "us_la")
    calendars = city.scalar(select(func.count()).select_from(CalendarRecord))

    with pytest.raises(InvalidInput, match=message):
        upload_calendar(city, raw, "bad.json")

    assert days_of(city, "us_la") == days
    assert city.scalar(select(func.count()).select_from(CalendarRecord)) == calendars
