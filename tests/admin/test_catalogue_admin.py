"""The catalogue's administration pages (`/admin/catalogue`): through the app on a seeded demo
city rolled back after each test (who may see them, each change and its audit row, bad
values and bad files refused with nothing written), then in headless Chromium on a clone of
the demo city of their own, as the admin on a phone and a desktop, in English and Chinese."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from redis import Redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from cases.catalogue import DEFAULT_CATALOGUE, category_facts
from cases.models import Category
from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.db import db
from tests.admin.conftest import DESKTOP, PHONE, TIMEOUT_MS, ContextFor, sign_in
from tests.conftest import demo_clone
from tests.support import Web, browser, nested, real_app, seeded_demo, serving

OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
CODE = "C0101"  # water supply manhole cover: 2 working hours, urgent 1
GOOD = {
    "limit_value": "3.5",
    "limit_unit": "hours",
    "urgent_limit_value": "1",
    "urgent_limit_unit": "hours",
    "duplicate_radius_m": "40",
    "duplicate_window_hours": "48",
    "active": "1",
}


def shipped() -> dict[str, Any]:
    return json.loads(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))


def upload(raw: bytes, name: str = "catalogue.json") -> dict[str, Any]:
    return {"file": (io.BytesIO(raw), name)}


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


def audit_rows(session: Session, action: AuditAction) -> list[AdminAudit]:
    session.expire_all()
    query = select(AdminAudit).where(AdminAudit.action == action.value).order_by(AdminAudit.id)
    return list(session.scalars(query))


def facts(session: Session, code: str = CODE) -> dict[str, Any]:
    session.expire_all()
    category = session.scalar(select(Category).where(Category.code == code))
    assert category is not None
    return category_facts(category)


def all_classes(session: Session) -> list[dict[str, Any]]:
    session.expire_all()
    return [category_facts(c) for c in session.scalars(select(Category).order_by(Category.code))]


# ---------------------------------------------------------------- in Chromium
# First in the module: the test-client tests below bind the app's session to their
# rolled-back connection for the rest of the module (`seeded_demo`), and a live server
# running then would write there instead of into its clone.


@pytest.fixture(scope="module")
def clone_url(demo_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city of this module's own."""
    with demo_clone("catalogue", demo_database_url) as url:
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
def test_pages_render(
    context_for: ContextFor, screenshot: Callable[[Page, str], None], size: str, lang: str
) -> None:
    page = context_for("admin", **options(size, lang)).new_page()

    for path, name in (("/admin/catalogue", "list"), (f"/admin/catalogue/{CODE}", "class")):
        answer = page.goto(path)
        assert answer is not None and answer.status == 200
        assert page.locator("html").get_attribute("lang") == lang
        no_sideways_scroll(page)
        screenshot(page, f"catalogue-{name}-{size}-{lang}")
    assert page.locator("#limit-value").input_value() == "2"


@pytest.mark.browser
@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused_in_the_browser(context_for: ContextFor, role: str) -> None:
    page = context_for(role).new_page()

    for path in ("/admin/catalogue", f"/admin/catalogue/{CODE}"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, (role, path)


@pytest.mark.browser
def test_change_a_class_in_the_browser(
    context_for: ContextFor, clone_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin").new_page()
    page.goto("/admin/catalogue?q=C0102")
    with page.expect_navigation():
        page.click("a:text('C0102')")

    page.fill("#limit-value", "0")
    page.evaluate("document.querySelector('.catalogue-form').noValidate = true")
    with page.expect_navigation():
        page.click(".catalogue-form button[type=submit]")
    error = page.locator(".flash-error")
    assert "limit: a number above 0" in error.inner_text()
    no_sideways_scroll(page)
    screenshot(page, "catalogue-class-refused-phone-en")

    page.fill("#limit-value", "6")
    page.select_option("#limit-unit", "hours")
    page.fill("#radius", "25")
    page.uncheck("#active")
    with page.expect_navigation():
        page.click(".catalogue-form button[type=submit]")
    assert "C0102 was saved" in page.locator(".flash-ok").inner_text()
    assert page.locator("[data-fact=limit]").inner_text() == "6 working hours"
    assert page.locator("[data-fact=state]").inner_text() == "Inactive"
    screenshot(page, "catalogue-class-saved-phone-en")

    with Session(clone_engine) as session:
        category = session.scalar(select(Category).where(Category.code == "C0102"))
        assert category is not None
        assert category.limit_value == Decimal("6.00") and category.duplicate_radius_m == 25
        assert not category.active
        rows = list(
            session.scalars(
                select(AdminAudit).where(
                    AdminAudit.target_type == "category", AdminAudit.target_id == "C0102"
                )
            )
        )
        assert len(rows) == 1 and rows[0].actor == "admin"
        assert rows[0].after is not None and rows[0].after["active"] is False
        count = session.scalar(
            select(func.count()).select_from(AdminAudit).where(AdminAudit.target_id == "C0102")
        )
        assert count == 1  # the refused change wrote nothing


@pytest.mark.browser
def test_bad_file_in_the_browser(
    context_for: ContextFor, tmp_path: Any, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/catalogue")
    bad = tmp_path / "broken.json"
    bad.write_bytes(broken_late())
    page.click("summary:has-text('Load a catalogue file')")
    page.set_input_files("#catalogue-file", str(bad))
    with page.expect_navigation() as answer:
        page.click("form[enctype] button[type=submit]")

    assert answer.value is not None and answer.value.status == 400
    assert "unknown unit_type" in page.locator(".flash-error").inner_text()
    screenshot(page, "catalogue-load-refused-desktop-en")


# ---------------------------------------------------------------- who may see the pages


def test_admin_sees_the_pages(admin: Web) -> None:
    listing = admin.get("/admin/catalogue")
    one = admin.get(f"/admin/catalogue/{CODE}")

    assert listing.status_code == 200 and one.status_code == 200
    assert listing.headers["Cache-Control"] == "no-store"
    page = listing.get_data(as_text=True)
    assert f'data-code="{CODE}"' in page
    assert "上水井盖" in page and "Water supply manhole cover" in page  # both languages
    assert "2 working hours" in page and "within 30 m and 72 h" in page
    assert 'name="csrf_token"' in one.get_data(as_text=True)


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(app: Flask, session: Session, role: str) -> None:
    web = browser(app, role)
    before = all_classes(session)

    assert web.get("/admin/catalogue").status_code == 403
    assert web.get(f"/admin/catalogue/{CODE}").status_code == 403
    assert web.post(f"/admin/catalogue/{CODE}", GOOD).status_code == 403
    file = upload(DEFAULT_CATALOGUE.read_bytes())
    assert web.post("/admin/catalogue/load", file).status_code == 403
    assert all_classes(session) == before
    assert audit_rows(session, AuditAction.CATEGORY_CHANGED) == []


def test_anonymous_goes_to_login(app: Flask, session: Session) -> None:
    web = browser(app)

    for path in ("/admin/catalogue", f"/admin/catalogue/{CODE}"):
        answer = web.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_filters(admin: Web, session: Session) -> None:
    found = admin.get("/admin/catalogue?q=井盖").get_data(as_text=True)
    events = admin.get("/admin/catalogue?kind=event").get_data(as_text=True)
    nothing = admin.get("/admin/catalogue?q=%25_nothing").get_data(as_text=True)

    assert f'data-code="{CODE}"' in found and 'data-code="E' not in found
    assert 'data-code="C' not in events and 'data-code="E' in events
    assert "No class matches." in nothing
    admin.post(f"/admin/catalogue/{CODE}", {**GOOD, "active": ""})
    inactive = admin.get("/admin/catalogue?state=inactive").get_data(as_text=True)
    assert inactive.count("data-code=") == 1 and f'data-code="{CODE}"' in inactive


# ---------------------------------------------------------------- changing a class


def test_change_is_saved_and_audited(admin: Web, session: Session) -> None:
    before = facts(session)

    answer = admin.post(f"/admin/catalogue/{CODE}", GOOD)

    assert answer.status_code == 303
    after = facts(session)
    assert after["limit_value"] == "3.5" and after["duplicate_radius_m"] == 40
    assert after["duplicate_window_hours"] == 48 and after["urgent_limit_value"] == "1"
    (row,) = audit_rows(session, AuditAction.CATEGORY_CHANGED)
    assert row.actor == "admin" and row.target_type == "category" and row.target_id == CODE
    assert row.before == before and row.after == after
    page = admin.get(f"/admin/catalogue/{CODE}").get_data(as_text=True)
    assert "3.5 working hours" in page and "Class changed" in page


def test_deactivate_and_drop_the_urgent_limit(admin: Web, session: Session) -> None:
    answer = admin.post(
        f"/admin/catalogue/{CODE}",
        {**GOOD, "urgent_limit_value": "", "urgent_limit_unit": "hours", "active": ""},
    )

    assert answer.status_code == 303
    after = facts(session)
    assert after["active"] is False
    assert after["urgent_limit_value"] is None and after["urgent_limit_unit"] is None


def test_the_same_values_write_no_audit_row(admin: Web, session: Session) -> None:
    now = facts(session)
    same = {
        "limit_value": now["limit_value"],
        "limit_unit": now["limit_unit"],
        "urgent_limit_value": now["urgent_limit_value"],
        "urgent_limit_unit": now["urgent_limit_unit"],
        "duplicate_radius_m": str(now["duplicate_radius_m"]),
        "duplicate_window_hours": str(now["duplicate_window_hours"]),
        "active": "1",
    }

    answer = admin.post(f"/admin/catalogue/{CODE}", same)

    assert answer.status_code == 303
    assert facts(session) == now
    assert audit_rows(session, AuditAction.CATEGORY_CHANGED) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit_value": "0"}, "limit: a number above 0 and at most 8760 hours"),
        ({"limit_value": "-2"}, "limit: a number above 0"),
        ({"limit_value": ""}, "limit: a number above 0"),
        ({"limit_value": "abc"}, "limit: abc is not a number"),
        ({"limit_value": "NaN"}, "limit: NaN is not a number"),
        ({"limit_value": "1.234"}, "limit: at most two decimals"),
        ({"limit_value": "9000"}, "at most 8760 hours"),
        ({"limit_value": "400", "limit_unit": "days"}, "at most 365 days"),
        ({"limit_unit": "weeks"}, "limit: the unit is hours or days"),
        ({"urgent_limit_value": "3.5"}, "shorter than the normal limit"),
        ({"urgent_limit_value": "1", "urgent_limit_unit": ""}, "give both a number and a unit"),
        ({"duplicate_radius_m": "-1"}, "duplicate radius (m): a whole number from 0 up"),
        ({"duplicate_radius_m": "1e3"}, "duplicate radius (m): a whole number"),
        ({"duplicate_radius_m": "5000"}, "a whole number from 0 to 2000"),
        ({"duplicate_window_hours": "9999"}, "a whole number from 0 to 8760"),
    ],
)
def test_bad_values_change_nothing(
    admin: Web, session: Session, changes: dict[str, str], message: str
) -> None:
    before = facts(session)

    answer = admin.post(f"/admin/catalogue/{CODE}", {**GOOD, **changes})

    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert "Nothing was changed" in page and message in page, page[:2000]
    assert 'id="limit-value"' in page  # the form again, with what was typed
    assert facts(session) == before
    assert audit_rows(session, AuditAction.CATEGORY_CHANGED) == []


def test_unknown_class(admin: Web, session: Session) -> None:
    assert admin.get("/admin/catalogue/X9999").status_code == 404
    answer = admin.post("/admin/catalogue/X9999", GOOD)

    assert answer.status_code == 404
    assert "no class X9999" in answer.get_data(as_text=True)
    assert audit_rows(session, AuditAction.CATEGORY_CHANGED) == []


# ---------------------------------------------------------------- loading a file


def test_load_a_catalogue_file(admin: Web, session: Session) -> None:
    data = shipped()
    data["majors"][0]["minors"][0]["limit"] = {"value": 4, "unit": "hours"}
    data["majors"][0]["minors"].append(
        {**data["majors"][0]["minors"][0], "code": "98", "name_en": "Test class", "name_zh": "测试"}
    )
    total = len(all_classes(session))

    answer = admin.post("/admin/catalogue/load", upload(json.dumps(data).encode(), "mine.json"))

    assert answer.status_code == 303
    assert facts(session)["limit_value"] == "4"
    assert facts(session, "C0198")["name"] == "Test class"
    (row,) = audit_rows(session, AuditAction.CATALOGUE_LOADED)
    assert row.target_id == "mine.json" and row.before == {"classes": total}
    assert row.after is not None
    assert (row.after["created"], row.after["updated"]) == (1, 1)
    assert row.after["classes"] == total + 1 and row.after["changed"] == "C0101, C0198"
    page = admin.get("/admin/catalogue").get_data(as_text=True)
    assert "mine.json was loaded: 1 classes created, 1 changed" in page


def broken_late() -> bytes:
    """The first class changed, a later one wrong: a half load would keep the first."""
    data = shipped()
    data["majors"][0]["minors"][0]["limit"] = {"value": 4, "unit": "hours"}
    data["majors"][-1]["minors"][-1]["unit_type"] = "spaceport"
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{ not json", 400, "bad.json is not valid JSON"),
        (b"\xff\xfe", 400, "bad.json is not valid JSON"),
        (b'{"classes": []}', 400, "bad.json is not a category catalogue"),
        (json.dumps({"majors": [], "urgent_roles": ["citizen"]}).encode(), 400, "may not name"),
        (broken_late(), 400, "unknown unit_type"),
        (b" " * (3 * 1024 * 1024), 400, "bad.json is larger than 2 MB"),
    ],
)
def test_bad_files_load_nothing(
    admin: Web, session: Session, raw: bytes, status: int, message: str
) -> None:
    before = all_classes(session)

    answer = admin.post("/admin/catalogue/load", upload(raw, "bad.json"))

    assert answer.status_code == status
    page = answer.get_data(as_text=True)
    assert "Nothing was loaded" in page and message in page, page[:2000]
    assert all_classes(session) == before
    assert audit_rows(session, AuditAction.CATALOGUE_LOADED) == []


def test_no_file(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/catalogue/load", {})

    assert answer.status_code == 400
    assert "Choose a catalogue file" in answer.get_data(as_text=True)
