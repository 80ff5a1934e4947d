"""The administrators' calendar pages (`/admin/calendar`): the city's business calendar (its
time zone, work periods and weekend), a year at a glance (twelve small months, each day
working or not and why), holidays and make-up working days added and removed one at a time,
a calendar file uploaded with the checks of `flask calendar load`, and the other calendars.

Every change goes through `gridmgmt.kernel.calendar_store` and writes its `admin_audit` row
in the same transaction. Deadlines follow at once in every process (`city_calendar` notices
the change). Administrators only: anyone else gets 403, the anonymous the login page.
"""

from __future__ import annotations

import calendar as monthly
from dataclasses import dataclass
from datetime import date
from pathlib import PurePath
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import get_day_names
from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gridmgmt.kernel import clock, web
from gridmgmt.kernel.audit import AuditAction, record_change
from gridmgmt.kernel.business_calendar import BusinessCalendar
from gridmgmt.kernel.calendar_store import (
    DAY_NAME_MAX,
    FIRST_YEAR,
    LAST_YEAR,
    MAX_UPLOAD_BYTES,
    calendar_facts,
    remove_day,
    set_day,
    upload_calendar,
)
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, DomainError, InvalidInput
from gridmgmt.kernel.i18n import format_date
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import CalendarDay, CalendarRecord, Role, User
from gridmgmt.kernel.settings import city_settings

bp = Blueprint("calendar_admin", __name__, url_prefix="/admin/calendar")
NO_STORE = {"Cache-Control": "no-store"}

# A day of the year view: what it is, and the words that say so (colour is never alone).
DAY_KINDS = {
    "working": N_("Working day"),
    "weekend": N_("Weekend"),
    "holiday": N_("Holiday"),
    "workday": N_("Make-up working day"),
}
LISTED_KINDS = {"holiday": N_("Holiday"), "workday": N_("Make-up working day")}


@dataclass(frozen=True)
class Day:
    """One day of a month grid."""

    day: date
    kind: str  # a key of DAY_KINDS
    name: str
    today: bool


@dataclass(frozen=True)
class Month:
    """One month of the year view: its name and its weeks (None outside the month)."""

    number: int
    name: str
    weeks: list[list[Day | None]]
    working: int


def year_view(
    calendar: BusinessCalendar, names: dict[date, str], year: int, today: date
) -> list[Month]:
    """The twelve months of `year`, each day working or not as `calendar` has it."""
    grid = monthly.Calendar(firstweekday=0)  # weeks start on Monday (ISO, and in China)
    months = []
    for number in range(1, 13):
        weeks: list[list[Day | None]] = []
        working = 0
        for week in grid.monthdatescalendar(year, number):
            row: list[Day | None] = []
            for day in week:
                if day.month != number:
                    row.append(None)
                    continue
                if day in calendar.workdays:
                    kind = "workday"
                elif day in calendar.holidays:
                    kind = "holiday"
                elif day.isoweekday() in calendar.weekend:
                    kind = "weekend"
                else:
                    kind = "working"
                working += kind in ("working", "workday")
                row.append(Day(day, kind, names.get(day, ""), day == today))
            weeks.append(row)
        months.append(Month(number, format_date(date(year, number, 1), "LLLL"), weeks, working))
    return months


def weekday_names(width: str = "abbreviated") -> list[str]:
    """Monday to Sunday in the reader's language ("abbreviated" or "narrow")."""
    names = get_day_names(width, locale=get_locale())
    return [names[i] for i in range(7)]


def _actor(session: Session) -> User | None:
    return session.get(User, current_user.id)


def _year(default: int) -> int:
    raw = request.args.get("year", "")
    if raw.isascii() and raw.isdigit() and FIRST_YEAR <= int(raw) <= LAST_YEAR:
        return int(raw)
    return default


def _calendar_page(
    code: str | None = None, form: dict[str, Any] | None = None, status: int = 200
) -> ResponseReturnValue:
    session = db.session()
    city_code = city_settings().calendar_code
    code = code or request.args.get("code", "").strip()[:32] or city_code
    record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    if record is None and code != city_code:
        flash(_("There is no calendar %(code)s.", code=code), "error")
        status = max(status, 404)
        code = city_code
        record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    others = list(
        session.execute(
            select(
                CalendarRecord,
                func.count(CalendarDay.day).filter(~CalendarDay.is_workday),
                func.count(CalendarDay.day).filter(CalendarDay.is_workday),
                func.min(CalendarDay.day),
                func.max(CalendarDay.day),
            )
            .outerjoin(CalendarDay, CalendarDay.calendar_id == CalendarRecord.id)
            .group_by(CalendarRecord.id)
            .order_by(CalendarRecord.code)
        )
    )
    context: dict[str, Any] = {}
    if record is not None:
        calendar = BusinessCalendar.from_dict(record.to_dict())
        zone = ZoneInfo(record.timezone)
        today = clock.now_utc().astimezone(zone).date()
        year = _year(today.year)
        listed = [d for d in record.days if d.day.year == year]
        months = year_view(calendar, {d.day: d.name for d in listed}, year, today)
        context = {
            "calendar": calendar,
            "year": year,
            "months": months,
            "listed": listed,
            "working_days": sum(m.working for m in months),
            "weekend_names": [weekday_names()[d - 1] for d in sorted(record.weekend)],
            "prev_year": year - 1 if year > FIRST_YEAR else None,
            "next_year": year + 1 if year < LAST_YEAR else None,
            "this_year": today.year,
        }
    page = render_template(
        "admin/calendar.html",
        record=record,
        code=code,
        city_code=city_code,
        others=others,
        weekdays=weekday_names(),
        narrow_weekdays=weekday_names("narrow"),
        kinds=DAY_KINDS,
        listed_kinds=[(value, _(label)) for value, label in LISTED_KINDS.items()],
        form=form or {},
        name_max=DAY_NAME_MAX,
        max_upload_kb=MAX_UPLOAD_BYTES // 1024,
        **context,
    )
    return page, status, NO_STORE


@bp.get("")
@web.role_required(Role.ADMIN)
def calendar_page() -> ResponseReturnValue:
    """The city's calendar (or `?code=` another), a year at a glance (`?year=`)."""
    return _calendar_page()


def _back(code: str, year: int | None = None) -> ResponseReturnValue:
    args: dict[str, Any] = {"year": year} if year else {}
    if code != city_settings().calendar_code:
        args["code"] = code
    return redirect(url_for("calendar_admin.calendar_page", **args), 303)


def _day_from_form() -> date:
    raw = request.form.get("day", "").strip()[:10]
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("%(value)s is not a date (YYYY-MM-DD)", value=raw or "—") from None


@bp.post("/<code>/days")
@web.role_required(Role.ADMIN)
def add_day(code: str) -> ResponseReturnValue:
    """List a day as a holiday or a make-up working day (or change a listed one)."""
    code = code[:32]
    kind = request.form.get("kind", "")
    try:
        if kind not in LISTED_KINDS:
            raise InvalidInput("choose a holiday or a make-up working day")
        day = _day_from_form()
        with db.transaction() as session:
            change = set_day(
                session, code, day, kind == "workday", request.form.get("name", "")[:500]
            )
            record_change(
                session,
                _actor(session),
                AuditAction.CALENDAR_DAY_CHANGED,
                "calendar_day",
                f"{code}:{day.isoformat()}",
                change.before,
                change.after,
            )
    except DomainError as err:
        flash(_("Nothing was changed: %(error)s", error=err.render(_)), "error")
        form = {k: str(v)[:200] for k, v in request.form.items() if k != "csrf_token"}
        return _calendar_page(code, form=form, status=err.status)
    shown = format_date(day, "full")
    if kind == "workday":
        flash(_("%(day)s is now a make-up working day; deadlines follow it.", day=shown), "ok")
    else:
        flash(_("%(day)s is now a holiday; deadlines follow it.", day=shown), "ok")
    return _back(code, day.year)


@bp.post("/<code>/days/<day>/remove")
@web.role_required(Role.ADMIN)
def delete_day(code: str, day: str) -> ResponseReturnValue:
    """Take a day off the list: it follows the week again."""
    code = code[:32]
    try:
        try:
            parsed = date.fromisoformat(day[:10])
        except ValueError:
            raise InvalidInput("%(value)s is not a date (YYYY-MM-DD)", value=day[:10]) from None
        with db.transaction() as session:
            change = remove_day(session, code, parsed)
            record_change(
                session,
                _actor(session),
                AuditAction.CALENDAR_DAY_CHANGED,
                "calendar_day",
                f"{code}:{parsed.isoformat()}",
                change.before,
                change.after,
            )
    except DomainError as err:
        flash(_("Nothing was changed: %(error)s", error=err.render(_)), "error")
        return _calendar_page(code, status=err.status)
    flash(
        _("%(day)s follows the week again.", day=format_date(parsed, "full")),
        "ok",
    )
    return _back(code, parsed.year)


@bp.post("/load")
@web.role_required(Role.ADMIN)
def load() -> ResponseReturnValue:
    """Create or replace a calendar from an uploaded JSON file (its `code` says which)."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash(_("Choose a calendar file (JSON) to load."), "error")
        return _calendar_page(status=400)
    name = PurePath(upload.filename.replace("\\", "/")).name[:100] or "calendar.json"
    raw = upload.stream.read(MAX_UPLOAD_BYTES + 1)
    try:
        with db.transaction() as session:
            before, record = upload_calendar(session, raw, name)
            record_change(
                session,
                _actor(session),
                AuditAction.CALENDAR_LOADED,
                "calendar",
                record.code,
                before,
                {**calendar_facts(record), "file": name},
            )
            code = record.code
    except DomainError as err:
        flash(_("Nothing was loaded: %(error)s", error=err.render(_)), "error")
        return _calendar_page(status=err.status)
    if code == city_settings().calendar_code:
        flash(
            _("The calendar %(code)s was loaded; deadlines follow it from now on.", code=code), "ok"
        )
    else:
        flash(
            _(
                "The calendar %(code)s was loaded. The city uses %(city)s: choose the calendar "
                "on the settings page to use this one.",
                code=code,
                city=city_settings().calendar_code,
            ),
            "ok",
        )
    return _back(code)


def init_app(app: Flask) -> None:
    """Register the calendar pages."""
    app.register_blueprint(bp)
