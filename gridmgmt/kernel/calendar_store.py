"""Business calendars in the database: load them from JSON files (or uploads), change their
days one at a time, read them back for deadlines.

`city_calendar` keeps the city's calendar in the process and checks, with one small query,
that the stored calendar is still the one it read (a fingerprint of its time zone, work
periods, weekend and days): a holiday added on `/admin/calendar`, or a file loaded by
`flask calendar load`, changes the next deadline computed in every web process and worker,
without a restart and without anyone having to tell them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import Text, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from gridmgmt.kernel.business_calendar import BusinessCalendar, CalendarError
from gridmgmt.kernel.errors import Conflict, InvalidInput, NotConfigured, NotFound
from gridmgmt.kernel.models import CalendarDay, CalendarRecord
from gridmgmt.kernel.settings import city_settings

CALENDAR_DIR = Path(__file__).parent.parent / "data"
MAX_UPLOAD_BYTES = 1024 * 1024  # a calendar of 50 years of holidays is ~100 KB
DAY_NAME_MAX = 100
FIRST_YEAR, LAST_YEAR = 1970, 2200  # days outside are typing mistakes
_CACHE_KEY = "gridmgmt.kernel.calendar_store"


def shipped_calendar(code: str) -> Path:
    """Path of a calendar file shipped with gridmgmt (`cn`, `us_la`)."""
    return CALENDAR_DIR / f"calendar_{code}.json"


def load_calendar(session: Session, path: str | Path) -> CalendarRecord:
    """Create or replace the calendar described by a JSON file (keyed by its `code`).

    Raises:
        InvalidInput: unreadable file or invalid calendar.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            "cannot read %(path)s: %(reason)s", path=path, reason=exc.strerror
        ) from None
    return load_calendar_bytes(session, raw, str(path))


def load_calendar_bytes(
    session: Session,
    raw: bytes,
    where: str,
    replacing: Callable[[dict[str, Any]], object] | None = None,
) -> CalendarRecord:
    """Create or replace the calendar in `raw` (a JSON file's bytes; `where` names it in the
    messages): the same checks as `load_calendar`, which reads the file and calls this.
    `replacing` hears the facts (`calendar_facts`) of a calendar about to be replaced.

    Raises:
        InvalidInput: not UTF-8 JSON, or not a valid calendar.
    """
    try:
        data = json.loads(raw.decode("utf-8"))
        calendar = BusinessCalendar.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, CalendarError) as exc:
        raise InvalidInput("%(path)s: %(error)s", path=where, error=exc) from None
    code = str(data.get("code") or "").strip()
    if not code:
        raise InvalidInput("%(path)s: a calendar needs a 'code'", path=where)
    if len(code) > 32:
        raise InvalidInput("%(path)s: a calendar's code is at most 32 characters", path=where)
    record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    if record is None:
        record = CalendarRecord(code=code)
        session.add(record)
    elif replacing is not None:
        replacing(calendar_facts(record))
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


def upload_calendar(
    session: Session, raw: bytes, where: str
) -> tuple[dict[str, Any] | None, CalendarRecord]:
    """Load an uploaded calendar file (`where`: its name) as `flask calendar load` would, in
    the caller's transaction; the replaced calendar's facts (None: a new one) and the record.

    Raises:
        InvalidInput: larger than `MAX_UPLOAD_BYTES`, or what `load_calendar_bytes` refuses.
    """
    if len(raw) > MAX_UPLOAD_BYTES:
        raise InvalidInput(
            "%(path)s is larger than %(most)s KB: not a calendar",
            path=where,
            most=MAX_UPLOAD_BYTES // 1024,
        )
    facts: list[dict[str, Any]] = []
    record = load_calendar_bytes(session, raw, where, facts.append)
    return (facts[0] if facts else None), record


def _day_names(days: object) -> dict[str, str]:
    """Names of listed days: a mapping {date: name} has them, a plain list does not."""
    return {str(k): str(v) for k, v in days.items()} if isinstance(days, dict) else {}


def find_record(session: Session, code: str, *, lock: bool = False) -> CalendarRecord:
    """The stored calendar `code` (locked for update when `lock`: one change at a time).

    Raises:
        NotFound: no such calendar.
    """
    query = select(CalendarRecord).where(CalendarRecord.code == code)
    record = session.scalar(query.with_for_update() if lock else query)
    if record is None:
        raise NotFound(
            "business calendar %(code)r is not loaded: flask calendar load FILE", code=code
        )
    return record


def get_calendar(session: Session, code: str) -> BusinessCalendar:
    """Return the business calendar stored under `code`.

    Raises:
        NotFound: no such calendar.
    """
    return BusinessCalendar.from_dict(find_record(session, code).to_dict())


def calendar_facts(record: CalendarRecord) -> dict[str, Any]:
    """What the audit log keeps of a whole calendar: its rules and how many days it lists."""
    days = [d.day for d in record.days]
    return {
        "code": record.code,
        "name": record.name,
        "timezone": record.timezone,
        "work_periods": ", ".join(f"{start}-{end}" for start, end in record.work_periods),
        "weekend": ", ".join(str(d) for d in record.weekend),
        "holidays": sum(1 for d in record.days if not d.is_workday),
        "workdays": sum(1 for d in record.days if d.is_workday),
        "first_day": min(days).isoformat() if days else None,
        "last_day": max(days).isoformat() if days else None,
    }


def day_facts(code: str, day: CalendarDay) -> dict[str, Any]:
    """What the audit log keeps of one listed day."""
    return {
        "calendar": code,
        "day": day.day.isoformat(),
        "kind": "workday" if day.is_workday else "holiday",
        "name": day.name,
    }


@dataclass(frozen=True)
class DayChange:
    """A listed day's facts before and after a change (None: not listed)."""

    code: str
    day: date
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def set_day(session: Session, code: str, day: date, is_workday: bool, name: str = "") -> DayChange:
    """List `day` in calendar `code` as a holiday or a make-up working day (调休) named
    `name`, in the caller's transaction; a day already listed takes the new kind and name.

    Raises:
        NotFound: no such calendar.
        InvalidInput: a day out of range, a name too long, a make-up working day that is
            a working day of the week anyway.
    """
    name = " ".join(name.split())
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInput(
            "%(day)s is not between %(first)s and %(last)s",
            day=day.isoformat(),
            first=FIRST_YEAR,
            last=LAST_YEAR,
        )
    if len(name) > DAY_NAME_MAX:
        raise InvalidInput("a day's name is at most %(max)s characters", max=DAY_NAME_MAX)
    record = find_record(session, code, lock=True)
    if is_workday and day.isoweekday() not in record.weekend:
        raise InvalidInput(
            "%(day)s is a working day of the week already: a make-up working day is a "
            "weekend day that is worked",
            day=day.isoformat(),
        )
    listed = session.get(CalendarDay, (record.id, day))
    before = day_facts(code, listed) if listed is not None else None
    if listed is None:
        listed = CalendarDay(calendar_id=record.id, day=day, is_workday=is_workday, name=name)
        session.add(listed)
    else:
        listed.is_workday, listed.name = is_workday, name
    session.flush()
    session.expire(record, ["days"])
    return DayChange(code, day, before, day_facts(code, listed))


def remove_day(session: Session, code: str, day: date) -> DayChange:
    """Take `day` off calendar `code`'s list (it follows the week again), in the caller's
    transaction.

    Raises:
        NotFound: no such calendar.
        Conflict: the day is not listed.
    """
    record = find_record(session, code, lock=True)
    listed = session.get(CalendarDay, (record.id, day))
    if listed is None:
        raise Conflict(
            "%(day)s is neither a holiday nor a make-up working day of this calendar",
            day=day.isoformat(),
        )
    before = day_facts(code, listed)
    session.delete(listed)
    session.flush()
    session.expire(record, ["days"])
    return DayChange(code, day, before, None)


def calendar_stamp(session: Session, code: str) -> str | None:
    """A fingerprint of what deadlines read from calendar `code` (time zone, work periods,
    weekend, the days and their kind; not the names), computed by the database in one
    query over the calendar's own rows; None when there is no such calendar."""
    days = (
        select(
            func.string_agg(
                cast(CalendarDay.day, Text) + cast(CalendarDay.is_workday, Text),
                aggregate_order_by(literal_column("','"), CalendarDay.day),
            )
        )
        .where(CalendarDay.calendar_id == CalendarRecord.id)
        .scalar_subquery()
    )
    return session.scalar(
        select(
            func.md5(
                func.concat_ws(
                    "|",
                    CalendarRecord.timezone,
                    cast(CalendarRecord.work_periods, Text),
                    cast(CalendarRecord.weekend, Text),
                    days,
                )
            )
        ).where(CalendarRecord.code == code)
    )


def city_calendar(session: Session) -> BusinessCalendar:
    """The city's calendar (its code from the city settings), kept in the process and read
    again when its stored fingerprint changes (one small query a call: `calendar_stamp`).

    Raises:
        NotConfigured: the city's calendar is not loaded (no deadline can be computed).
    """
    cache = current_app.extensions.setdefault(_CACHE_KEY, {})
    code = city_settings().calendar_code
    stamp = calendar_stamp(session, code)
    kept = cache.get(code)
    if stamp is None or kept is None or kept[0] != stamp:
        try:
            calendar = get_calendar(session, code)
        except NotFound:
            raise NotConfigured(
                "the city's business calendar %(code)s is not loaded: flask calendar load FILE"
                " (or /admin/calendar)",
                code=code,
            ) from None
        cache[code] = kept = (stamp, calendar)
    return kept[1]
