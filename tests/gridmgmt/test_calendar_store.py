"""Stored business calendars: gridmgmt.kernel.calendar_store and `flask calendar load`."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gridmgmt.kernel.business_calendar import BusinessCalendar, LimitUnit
from gridmgmt.kernel.calendar_store import get_calendar, load_calendar, shipped_calendar
from gridmgmt.kernel.errors import InvalidInput, NotFound
from gridmgmt.kernel.models import CalendarDay, CalendarRecord

SHIPPED = ["cn", "us_la"]
SHANGHAI = ZoneInfo("Asia/Shanghai")


def shipped_data(code: str) -> dict[str, Any]:
    return json.loads(shipped_calendar(code).read_text(encoding="utf-8"))


def stored_days(session: Session, code: str) -> list[tuple[date, bool, str]]:
    return [
        (d.day, d.is_workday, d.name)
        for d in session.scalars(
            select(CalendarDay)
            .join(CalendarRecord)
            .where(CalendarRecord.code == code)
            .order_by(CalendarDay.day)
        )
    ]


def calendar_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CalendarRecord)) or 0


def day_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CalendarDay)) or 0


@pytest.mark.parametrize("code", SHIPPED)
def test_load_shipped_calendar(session: Session, code: str) -> None:
    data = shipped_data(code)

    record = load_calendar(session, shipped_calendar(code))

    assert record.id is not None
    assert record.code == code
    assert record.name == data["name"]
    assert record.timezone == data["timezone"]
    assert record.work_periods == data["work_periods"]
    assert record.weekend == data["weekend"]
    days = stored_days(session, code)
    expected = sorted(
        [(date.fromisoformat(d), False, n) for d, n in data["holidays"].items()]
        + [(date.fromisoformat(d), True, n) for d, n in data["workdays"].items()]
    )
    assert days == expected
    assert days, "a shipped calendar has holidays"


@pytest.mark.parametrize("code", SHIPPED)
def test_get_calendar_equals_file(session: Session, code: str) -> None:
    load_calendar(session, shipped_calendar(code))
    session.expire_all()  # read it back from the rows, not from the objects just made

    calendar = get_calendar(session, code)

    assert isinstance(calendar, BusinessCalendar)
    assert calendar == BusinessCalendar.from_dict(shipped_data(code))


def test_get_calendar_unknown_code(session: Session) -> None:
    with pytest.raises(NotFound, match="not loaded"):
        get_calendar(session, "atlantis")


@pytest.mark.parametrize("code", SHIPPED)
def test_loading_twice_keeps_one_row(session: Session, code: str) -> None:
    first = load_calendar(session, shipped_calendar(code))
    days = stored_days(session, code)
    calendars, all_days = calendar_count(session), day_count(session)

    second = load_calendar(session, shipped_calendar(code))
    session.expire_all()

    assert second.id == first.id
    assert calendar_count(session) == calendars
    assert day_count(session) == all_days
    assert stored_days(session, code) == days


def test_reload_replaces_changed_days(session: Session, tmp_path: Path) -> None:
    load_calendar(session, shipped_calendar("cn"))
    data = shipped_data("cn")
    del data["holidays"]["2025-10-08"]
    data["holidays"]["2025-12-31"] = "test holiday"
    path = tmp_path / "cn.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    load_calendar(session, path)
    session.expire_all()

    calendar = get_calendar(session, "cn")
    assert date(2025, 10, 8) not in calendar.holidays
    assert date(2025, 12, 31) in calendar.holidays
    assert calendar_count(session) == 1


def test_cli_load_shipped(cli: FlaskCliRunner, session: Session) -> None:
    result = cli.invoke(args=["calendar", "load", "--shipped", "cn"])

    assert result.exit_code == 0, result.output
    data = shipped_data("cn")
    n_days = len(data["holidays"]) + len(data["workdays"])
    assert f"calendar cn: Asia/Shanghai, {n_days} holidays and make-up days" in result.output
    assert get_calendar(session, "cn") == BusinessCalendar.from_dict(data)


def test_cli_load_file(cli: FlaskCliRunner, session: Session) -> None:
    result = cli.invoke(args=["calendar", "load", str(shipped_calendar("us_la"))])

    assert result.exit_code == 0, result.output
    assert "calendar us_la: America/Los_Angeles" in result.output
    assert get_calendar(session, "us_la").timezone == "America/Los_Angeles"


@pytest.mark.parametrize("args", [[], ["x.json", "--shipped", "cn"]], ids=["neither", "both"])
def test_cli_needs_file_or_shipped(cli: FlaskCliRunner, session: Session, args: list[str]) -> None:
    result = cli.invoke(args=["calendar", "load", *args])

    assert result.exit_code == 2
    assert "give either FILE or --shipped" in result.output
    assert calendar_count(session) == 0


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


BAD_FILES: dict[str, tuple[str | None, str]] = {
    # name: (file content, or None for no file; expected words in the error)
    "malformed-json": ('{"code": "bad", "timezone": ', "Expecting value"),
    "missing-timezone": (
        json.dumps({**_without(shipped_data("cn"), "timezone"), "code": "bad"}),
        "missing required key(s): timezone",
    ),
    "unknown-timezone": (
        json.dumps({**shipped_data("cn"), "code": "bad", "timezone": "Mars/Olympus"}),
        "unknown timezone 'Mars/Olympus'",
    ),
    "missing-code": (json.dumps(_without(shipped_data("cn"), "code")), "needs a 'code'"),
    "not-an-object": ("[1, 2, 3]", "must be a JSON object"),
    "no-such-file": (None, "cannot read"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_refused(cli: FlaskCliRunner, session: Session, tmp_path: Path, name: str) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / f"{name}.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")

    with pytest.raises(InvalidInput, match=re.escape(str(path))) as excinfo:
        load_calendar(session, path)
    assert message in excinfo.value.message

    result = cli.invoke(args=["calendar", "load", str(path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "nothing was changed" in result.output
    assert calendar_count(session) == 0
    assert day_count(session) == 0


def test_bad_file_leaves_loaded_calendar_alone(
    cli: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    load_calendar(session, shipped_calendar("cn"))
    session.commit()
    days = stored_days(session, "cn")
    data = shipped_data("cn")
    data["holidays"]["2025-10-11"] = "clash with the make-up day"  # both holiday and workday
    path = tmp_path / "cn-broken.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    result = cli.invoke(args=["calendar", "load", str(path)])

    assert result.exit_code == 1
    assert "2025-10-11" in result.output
    session.expire_all()
    assert stored_days(session, "cn") == days


def test_load_calendar_with_list_form_days(session: Session, tmp_path: Path) -> None:
    data = {"code": "listed", **BusinessCalendar.from_dict(shipped_data("cn")).to_dict()}
    path = tmp_path / "listed.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    load_calendar(session, path)

    assert get_calendar(session, "listed") == BusinessCalendar.from_dict(shipped_data("cn"))


def test_non_utf8_file_is_invalid_input(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"code": "x", "name": "Fête"}'.encode("latin-1"))

    with pytest.raises(InvalidInput):
        load_calendar(session, path)


def test_deadline_from_db_calendar_lands_on_makeup_saturday(session: Session) -> None:
    load_calendar(session, shipped_calendar("cn"))
    session.expire_all()
    calendar = get_calendar(session, "cn")
    assert calendar.is_working_day(date(2025, 10, 11))  # a Saturday, 调休 make-up day
    assert not calendar.is_working_day(date(2025, 10, 8))  # last day of the Golden Week

    # Tue 30 Sep 16:00: 1.5 h that day, then 1-8 Oct off, Thu 9 and Fri 10 Oct (7.5 h each)
    # leave 6 of the 22.5 working hours of 3 working days for Saturday 11 Oct.
    start = datetime(2025, 9, 30, 16, 0, tzinfo=SHANGHAI)
    deadline = calendar.add_working_time(start, 3, LimitUnit.DAYS)

    assert deadline.astimezone(SHANGHAI) == datetime(2025, 10, 11, 16, 0, tzinfo=SHANGHAI)
    assert deadline.astimezone(SHANGHAI).isoweekday() == 6
