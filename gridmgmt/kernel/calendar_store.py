"""Business calendars in the database: load them from JSON files, read them back for deadlines."""

from __future__ import annotations

import json
from pathlib import Path

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from gridmgmt.kernel.business_calendar import BusinessCalendar, CalendarError
from gridmgmt.kernel.errors import InvalidInput, NotFound
from gridmgmt.kernel.models import CalendarDay, CalendarRecord

CALENDAR_DIR = Path(__file__).parent.parent / "data"


def shipped_calendar(code: str) -> Path:
    """Path of a calendar file shipped with gridmgmt (`cn`, `us_la`)."""
    return CALENDAR_DIR / f"calendar_{code}.json"


def load_calendar(session: Session, path: str | Path) -> CalendarRecord:
    """Create or replace the calendar described by a JSON file (keyed by its `code`).

    Raises:
        InvalidInput: unreadable file or invalid calendar.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        calendar = BusinessCalendar.from_dict(data)
    except OSError as exc:
        raise InvalidInput(
            "cannot read %(path)s: %(reason)s", path=path, reason=exc.strerror
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, CalendarError) as exc:
        raise InvalidInput("%(path)s: %(error)s", path=path, error=exc) from None
    code = str(data.get("code") or "").strip()
    if not code:
        raise InvalidInput("%(path)s: a calendar needs a 'code'", path=path)
    record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    if record is None:
        record = CalendarRecord(code=code)
        session.add(record)
    serial = calendar.to_dict()
    record.name = str(data.get("name") or code)
    record.timezone = serial["timezone"]
    record.work_periods = serial["work_periods"]
    record.weekend = serial["weekend"]
    names = {**_day_names(data.get("holidays")), **_day_names(data.get("workdays"))}
    record.days = [
        CalendarDay(
            day=day, is_workday=day in calendar.workdays, name=names.get(day.isoformat(), "")
        )
        for day in sorted(calendar.holidays | calendar.workdays)
    ]
    session.flush()
    return record


def _day_names(days: object) -> dict[str, str]:
    """Names of listed days: a mapping {date: name} has them, a plain list does not."""
    return {str(k): str(v) for k, v in days.items()} if isinstance(days, dict) else {}


def get_calendar(session: Session, code: str) -> BusinessCalendar:
    """Return the business calendar stored under `code`.

    Raises:
        NotFound: no such calendar.
    """
    record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    if record is None:
        raise NotFound(
            "business calendar %(code)r is not loaded: flask calendar load FILE", code=code
        )
    return BusinessCalendar.from_dict(record.to_dict())


def city_calendar(session: Session) -> BusinessCalendar:
    """The calendar named by the app's `CALENDAR_CODE`, read once per process."""
    cache = current_app.extensions.setdefault("gridmgmt.kernel.calendar_store", {})
    code = current_app.config["CALENDAR_CODE"]
    if code not in cache:
        cache[code] = get_calendar(session, code)
    return cache[code]
