"""The calendar's administration pages (`/admin/calendar`): through the app on a seeded demo
city rolled back after each test (who may see them, days added and removed with their audit
rows, uploads good and bad, deadlines following at once), then in headless Chromium on a
clone of the demo city of their own, as the admin on a phone and a desktop, in English and
Chinese."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from redis import Redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.calendar_store import city_calendar, shipped_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import CalendarDay, CalendarRecord
from gridmgmt.kernel.settings import city_settings
from tests.admin.conftest import DESKTOP, PHONE, TIMEOUT_MS, ContextFor, sign_in
from tests.conftest import demo_clone
from tests.support import Web, browser, nested, real_app, seeded_demo, serving

OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
LA = ZoneInfo("America/Los_Angeles")
THURSDAY, SATURDAY = "2026-03-12", "2026-03-14"


def upload(raw: bytes, name: str = "calendar.json") -> dict[str, Any]:
    return {"file": (io.BytesIO(raw), name)}


def calendar_file(shipped: str = "us_la", **changes: Any) -> bytes:
    """A shipped calendar's file with `changes`."""
    data = json.loads(shipped_calendar(shipped).read_text(encoding="utf-8"))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[Connection]:
    with seeded_demo() as connection:
        yield connection


@pytest.fixture
def session(city: Connection, redis_conn: Redis) -> Iterator[Session]:
    db.session.remove()
    with nested(city) as session:
        yield session


@pytest.fixture
def admin(app: Flask, session: Session) -> Web:
    return browser(app, "admin")


@pytest.fixture
def code(app: Flask, session: Session) -> str:
    """The city's calendar (the demo's is loaded)."""
    return city_settings().calendar_code


def audit_rows(session: Session, action: AuditAction) -> list[AdminAudit]:
    session.expire_all()
    query = select(AdminAudit).where(AdminAudit.action == action.value).order_by(AdminAudit.id)
    return list(session.scalars(query))


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


# ---------------------------------------------------------------- in Chromium
# First in the module: the test-client tests below bind the app's session to their
# rolled-back connection for the rest of the module (`seeded_demo`), and a live server
# running then would write there instead of into its clone.


@pytest.fixture(scope="module")
def clone_url(demo_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city of this module's own."""
    with demo_clone("calendar", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def clone_engine(clone_url: URL) -> Iterator[Engine]:
    engine = create_engine(clone_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(
    clone_url: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    photos = tmp_path_factory.mktemp("photos")
    with real_app(clone_url, redis_url, photos) as live, serving(live) as url:
        yield url


@pytest.fixture(scope="module")
def context_for(browser: Browser, server: str) -> Iterator[ContextFor]:
    """`context_for(username, **options)`: a context signed in on this module's server."""
    opened: list[BrowserContext] = []

    def make(username: str | None, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=server, **{**PHONE, **options})
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        if username is not None:
            page = context.new_page()
            sign_in(page, server, username)
            page.close()
        return context

    yield make
    for context in opened:
        context.close()


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport + 1, f"{page.url} scrolls sideways: {width} > {viewport}"


LOCALES = {"en": "en-US", "zh": "zh-CN"}


def options(size: str, lang: str) -> dict[str, Any]:
    chosen = {**(PHONE if size == "phone" else DESKTOP), "locale": LOCALES[lang]}
    if size == "desktop":
        chosen |= {"is_mobile": False, "has_touch": False}
    return chosen


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_page_renders(
    context_for: ContextFor, screenshot: Callable[[Page, str], None], size: str, lang: str
) -> None:
    page = context_for("admin", **options(size, lang)).new_page()

    answer = page.goto("/admin/calendar?year=2026")

    assert answer is not None and answer.status == 200
    assert page.locator("html").get_attribute("lang") == lang
    assert page.locator("table.calendar-month").count() == 12
    no_sideways_scroll(page)
    screenshot(page, f"calendar-{size}-{lang}")
    if size == "desktop":  # four months a row
        tops = page.locator("table.calendar-month").evaluate_all(
            "els => els.slice(0, 4).map(e => Math.round(e.getBoundingClientRect().top))"
        )
        assert len(set(tops)) == 1, tops


@pytest.mark.browser
@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused_in_the_browser(context_for: ContextFor, role: str) -> None:
    answer = context_for(role).new_page().goto("/admin/calendar")

    assert answer is not None and answer.status == 403


@pytest.mark.browser
def test_add_and_remove_a_day_in_the_browser(
    context_for: ContextFor, clone_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin").new_page()
    page.goto("/admin/calendar?year=2026")
    cell = page.locator(f"td[data-day='{THURSDAY}']")
    assert cell.get_attribute("data-kind") == "working"

    page.click("summary:has-text('Add a day')")
    page.fill("#day", THURSDAY)
    page.select_option("#kind", "holiday")
    page.fill("#day-name", "Browser holiday")
    with page.expect_navigation():
        page.click(".calendar-day-form button[type=submit]")

    assert "is now a holiday" in page.locator(".flash-ok").inner_text()
    assert cell.get_attribute("data-kind") == "holiday"
    assert "Browser holiday" in (cell.get_attribute("title") or "")
    row = page.locator(f".calendar-day-row[data-day='{THURSDAY}']")
    assert "Browser holiday" in row.inner_text()
    no_sideways_scroll(page)
    screenshot(page, "calendar-day-added-phone-en")

    with page.expect_navigation():
        row.locator("button").click()
    assert "follows the week again" in page.locator(".flash-ok").inner_text()
    assert page.locator(f"td[data-day='{THURSDAY}']").get_attribute("data-kind") == "working"

    with Session(clone_engine) as session:
        rows = list(
            session.scalars(
                select(AdminAudit)
                .where(AdminAudit.action == AuditAction.CALENDAR_DAY_CHANGED.value)
                .order_by(AdminAudit.id)
            )
        )
        assert [(r.before is None, r.after is None) for r in rows] == [(True, False), (False, True)]
        assert {r.actor for r in rows} == {"admin"}


@pytest.mark.browser
def test_bad_upload_in_the_browser(
    context_for: ContextFor, tmp_path: Any, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/calendar")
    bad = tmp_path / "bad-calendar.json"
    bad.write_bytes(calendar_file(timezone="Mars/Olympus"))
    page.set_input_files("#calendar-file", str(bad))
    with page.expect_navigation() as answer:
        page.click("form[enctype] button[type=submit]")

    assert answer.value is not None and answer.value.status == 400
    assert "unknown timezone" in page.locator(".flash-error").inner_text()
    screenshot(page, "calendar-load-refused-desktop-en")


# ---------------------------------------------------------------- who may see the pages


def test_admin_sees_the_year(admin: Web, code: str) -> None:
    answer = admin.get("/admin/calendar?year=2026")

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    page = answer.get_data(as_text=True)
    assert f'data-calendar="{code}"' in page
    assert page.count('class="calendar-month"') == 12
    assert page.count("data-day=") >= 365
    assert 'data-day="2026-01-01" data-kind="holiday"' in page  # New Year's Day
    assert 'data-day="2026-01-03" data-kind="weekend"' in page  # a Saturday
    assert 'data-day="2026-01-05" data-kind="working"' in page
    assert 'rel="prev"' in page and 'rel="next"' in page


def test_other_years_and_calendars(admin: Web, code: str) -> None:
    earlier = admin.get("/admin/calendar?year=2025").get_data(as_text=True)
    other = "cn" if code != "cn" else "us_la"
    cn = admin.get(f"/admin/calendar?code={other}&year=2026").get_data(as_text=True)
    missing = admin.get("/admin/calendar?code=atlantis")
    silly = admin.get("/admin/calendar?year=99999")

    assert '<h2 class="calendar-year-title">2025</h2>' in earlier
    assert f'data-calendar="{other}"' in cn
    assert missing.status_code == 404
    assert "There is no calendar atlantis." in missing.get_data(as_text=True)
    assert silly.status_code == 200  # an impossible year shows this one


def test_the_cn_year_shows_make_up_working_days(admin: Web) -> None:
    page = admin.get("/admin/calendar?code=cn&year=2026").get_data(as_text=True)

    assert 'data-kind="workday"' in page  # 调休: weekend days worked
    assert 'data-day="2026-10-01" data-kind="holiday"' in page


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(app: Flask, session: Session, code: str, role: str) -> None:
    web = browser(app, role)
    before = days_of(session, code)

    assert web.get("/admin/calendar").status_code == 403
    holiday = {"day": THURSDAY, "kind": "holiday"}
    assert web.post(f"/admin/calendar/{code}/days", holiday).status_code == 403
    assert web.post(f"/admin/calendar/{code}/days/2026-01-01/remove").status_code == 403
    assert web.post("/admin/calendar/load", upload(calendar_file())).status_code == 403
    assert days_of(session, code) == before
    assert audit_rows(session, AuditAction.CALENDAR_DAY_CHANGED) == []


def test_anonymous_goes_to_login(app: Flask, session: Session) -> None:
    answer = browser(app).get("/admin/calendar")

    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


# ---------------------------------------------------------------- days


def test_add_and_remove_a_holiday(admin: Web, session: Session, code: str) -> None:
    added = admin.post(
        f"/admin/calendar/{code}/days", {"day": THURSDAY, "kind": "holiday", "name": "Test day"}
    )

    assert added.status_code == 303 and "year=2026" in added.headers["Location"]
    assert (date(2026, 3, 12), False, "Test day") in days_of(session, code)
    page = admin.get("/admin/calendar?year=2026").get_data(as_text=True)
    assert f'data-day="{THURSDAY}" data-kind="holiday"' in page
    assert "is now a holiday" in page

    removed = admin.post(f"/admin/calendar/{code}/days/{THURSDAY}/remove")

    assert removed.status_code == 303
    assert all(day != date(2026, 3, 12) for day, _w, _n in days_of(session, code))
    first, second = audit_rows(session, AuditAction.CALENDAR_DAY_CHANGED)
    assert first.target_type == "calendar_day" and first.target_id == f"{code}:{THURSDAY}"
    assert first.actor == "admin" and first.before is None
    assert first.after == {"calendar": code, "day": THURSDAY, "kind": "holiday", "name": "Test day"}
    assert second.before == first.after and second.after is None


def test_a_holiday_moves_the_deadline_at_once(
    app: Flask, admin: Web, session: Session, code: str
) -> None:
    start = datetime(2026, 3, 11, 16, 0, tzinfo=LA)  # a Wednesday
    before = city_calendar(session).add_working_time(start, 3, LimitUnit.DAYS)

    admin.post(f"/admin/calendar/{code}/days", {"day": THURSDAY, "kind": "holiday"})
    session.expire_all()
    after = city_calendar(session).add_working_time(start, 3, LimitUnit.DAYS)

    assert (after - before).days == 1


def test_a_make_up_working_day(admin: Web, session: Session, code: str) -> None:
    answer = admin.post(
        f"/admin/calendar/{code}/days", {"day": SATURDAY, "kind": "workday", "name": "调休"}
    )

    assert answer.status_code == 303
    assert (date(2026, 3, 14), True, "调休") in days_of(session, code)
    page = admin.get("/admin/calendar?year=2026").get_data(as_text=True)
    assert f'data-day="{SATURDAY}" data-kind="workday"' in page


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"day": "2026-02-30", "kind": "holiday"}, 400, "2026-02-30 is not a date"),
        ({"day": "", "kind": "holiday"}, 400, "is not a date"),
        ({"day": THURSDAY, "kind": "party"}, 400, "choose a holiday or a make-up working day"),
        ({"day": THURSDAY, "kind": "workday"}, 400, "working day of the week already"),
        ({"day": "1900-01-01", "kind": "holiday"}, 400, "not between 1970 and 2200"),
        ({"day": THURSDAY, "kind": "holiday", "name": "x" * 101}, 400, "at most 100"),
    ],
)
def test_bad_days_change_nothing(
    admin: Web, session: Session, code: str, form: dict[str, str], status: int, message: str
) -> None:
    before = days_of(session, code)

    answer = admin.post(f"/admin/calendar/{code}/days", form)

    assert answer.status_code == status
    page = answer.get_data(as_text=True)
    assert "Nothing was changed" in page and message in page, page[:3000]
    assert 'id="day"' in page  # the form again
    assert days_of(session, code) == before
    assert audit_rows(session, AuditAction.CALENDAR_DAY_CHANGED) == []


def test_removing_bad_days(admin: Web, session: Session, code: str) -> None:
    before = days_of(session, code)

    unlisted = admin.post(f"/admin/calendar/{code}/days/2026-03-12/remove")
    not_a_date = admin.post(f"/admin/calendar/{code}/days/someday/remove")
    unknown = admin.post("/admin/calendar/atlantis/days/2026-01-01/remove")

    assert unlisted.status_code == 409
    assert "neither a holiday nor a make-up working day" in unlisted.get_data(as_text=True)
    assert not_a_date.status_code == 400 and unknown.status_code == 404
    assert days_of(session, code) == before
    assert audit_rows(session, AuditAction.CALENDAR_DAY_CHANGED) == []


# ---------------------------------------------------------------- uploads


def test_upload_replaces_a_calendar(admin: Web, session: Session) -> None:
    answer = admin.post(
        "/admin/calendar/load",
        upload(calendar_file("cn", holidays={"2026-10-01": "国庆节"}), "cn.json"),
    )

    assert answer.status_code == 303
    assert [d for d in days_of(session, "cn") if not d[1]] == [(date(2026, 10, 1), False, "国庆节")]
    (row,) = audit_rows(session, AuditAction.CALENDAR_LOADED)
    assert row.target_type == "calendar" and row.target_id == "cn"
    assert row.before is not None and row.before["holidays"] > 1
    assert row.after is not None and row.after["holidays"] == 1 and row.after["file"] == "cn.json"


def test_upload_a_new_calendar(admin: Web, session: Session) -> None:
    answer = admin.post(
        "/admin/calendar/load", upload(calendar_file("us_la", code="test_city", name="Test"))
    )

    assert answer.status_code == 303 and "code=test_city" in answer.headers["Location"]
    (row,) = audit_rows(session, AuditAction.CALENDAR_LOADED)
    assert row.before is None and row.after is not None and row.after["code"] == "test_city"
    page = admin.get(answer.headers["Location"]).get_data(as_text=True)
    assert "The city uses" in page and 'data-calendar="test_city"' in page


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"holidays: yes", "bad.json: Expecting value"),
        (b"\xff\xfe\xfd", "bad.json: &#39;utf-8&#39; codec"),
        (calendar_file(timezone="Mars/Olympus"), "unknown timezone"),
        (calendar_file(holidays={"2026-13-01": "x"}), "invalid date"),
        (calendar_file(code=""), "needs a &#39;code&#39;"),
        (b"{" + b" " * (1024 * 1024) + b"}", "bad.json is larger than 1024 KB"),
    ],
)
def test_bad_uploads_change_nothing(
    admin: Web, session: Session, code: str, raw: bytes, message: str
) -> None:
    before = days_of(session, code)
    calendars = session.scalar(select(func.count()).select_from(CalendarRecord))

    answer = admin.post("/admin/calendar/load", upload(raw, "bad.json"))

    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert "Nothing was loaded" in page and message in page, page[:3000]
    assert days_of(session, code) == before
    assert session.scalar(select(func.count()).select_from(CalendarRecord)) == calendars
    assert audit_rows(session, AuditAction.CALENDAR_LOADED) == []


def test_a_file_over_the_request_limit(app: Flask, admin: Web, session: Session) -> None:
    """Beyond MAX_CONTENT_LENGTH the request itself is refused (413), before any view."""
    raw = b" " * (int(app.config["MAX_CONTENT_LENGTH"]) + 1)

    answer = admin.post("/admin/calendar/load", upload(raw, "huge.json"))

    assert answer.status_code == 413
    assert audit_rows(session, AuditAction.CALENDAR_LOADED) == []


def test_no_file(admin: Web) -> None:
    answer = admin.post("/admin/calendar/load", {})

    assert answer.status_code == 400
    assert "Choose a calendar file" in answer.get_data(as_text=True)
