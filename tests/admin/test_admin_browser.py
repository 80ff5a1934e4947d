"""The administration pages in headless Chromium, as the demo admin on a phone and a desktop,
in English and Chinese; every other role refused; changes made through the forms land in the
audit log."""

from __future__ import annotations

import gettext
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page
from redis import Redis
from rq import Worker
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dispatch.jobs import HEARTBEAT_KEY
from gridmgmt.kernel.audit import AdminAudit
from gridmgmt.kernel.models import ApiKey, User
from tests.admin.conftest import DESKTOP, PHONE, ContextFor

PAGES = {
    "setup": ("/admin/setup", {"en": "Setup check", "zh": "配置检查"}),
    "people": ("/admin/people", {"en": "People", "zh": "人员"}),
    "keys": ("/admin/keys", {"en": "API keys", "zh": "API 密钥"}),
    "audit": ("/admin/audit", {"en": "Audit log", "zh": "管理审计日志"}),
    "settings": ("/admin/settings", {"en": "City settings", "zh": "城市设置"}),
}
LOCALES = {"en": "en-US", "zh": "zh-CN"}
TIMEOUT = 5_000
CATALOGUE = Path(__file__).resolve().parents[2] / "gridmgmt" / "translations" / "zh" / "LC_MESSAGES"


def translated(message: str) -> bool:
    """Whether the compiled Chinese catalogue translates `message`."""
    mo = CATALOGUE / "messages.mo"
    if not mo.exists():
        return False
    with mo.open("rb") as fh:
        return gettext.GNUTranslations(fh).gettext(message) != message


OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]


pytestmark = pytest.mark.browser


@pytest.fixture
def worker_alive(redis_conn: Redis) -> Iterator[None]:
    """A registered RQ worker with a fresh heartbeat, and the scheduler's heartbeat."""
    Worker(
        ["dispatch", "periodic"], connection=redis_conn, name="admin-page-worker"
    ).register_birth()
    redis_conn.set(HEARTBEAT_KEY, datetime.now(UTC).isoformat(timespec="seconds"))
    yield


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport + 1, f"{page.url} scrolls sideways: {width} > {viewport}"


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
@pytest.mark.parametrize("name", list(PAGES))
def test_admin_pages_render(
    context_for: ContextFor,
    screenshot: Callable[[Page, str], None],
    worker_alive: None,
    name: str,
    size: str,
    lang: str,
) -> None:
    path, titles = PAGES[name]
    options = {**(PHONE if size == "phone" else DESKTOP), "locale": LOCALES[lang]}
    if size == "desktop":
        options |= {"is_mobile": False, "has_touch": False}
    page = context_for("admin", **options).new_page()

    answer = page.goto(path)

    assert answer is not None and answer.status == 200
    assert page.locator("html").get_attribute("lang", timeout=TIMEOUT) == lang
    # The Chinese heading once the catalogue has it (the translators add the new messages).
    expected = titles[lang] if lang == "en" or translated(titles["en"]) else titles["en"]
    assert page.locator("h1").first.inner_text().startswith(expected)
    no_sideways_scroll(page)
    screenshot(page, f"admin-{name}-{size}-{lang}")


def test_setup_page_lists_every_check(context_for: ContextFor, worker_alive: None) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/setup")

    names = page.locator("[data-check]").evaluate_all("els => els.map(e => e.dataset.check)")
    assert names[:7] == [
        "territory",
        "cells",
        "cell_coverage",
        "catalogue",
        "calendar",
        "calendar_coverage",
        "routing",
    ]
    assert {"worker", "scheduler", "failed_jobs", "people_operator"} <= set(names)
    assert page.locator(".setup-summary").get_attribute("data-blocked") == "0"
    assert page.locator("[data-check=routing]").get_attribute("data-state") == "ok"
    assert page.locator("[data-check=cell_coverage]").get_attribute("data-state") == "ok"


def test_setup_page_shows_a_dead_worker(context_for: ContextFor, redis_conn: Redis) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/setup")

    assert page.locator(".setup-summary").get_attribute("data-blocked") == "1"
    worker = page.locator("[data-check=worker]")
    assert worker.get_attribute("data-state") == "problem"
    assert "flask dispatch worker" in worker.inner_text()


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(context_for: ContextFor, role: str) -> None:
    page = context_for(role).new_page()

    for path, _titles in PAGES.values():
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, (role, path)


def test_anonymous_is_sent_to_login(context_for: ContextFor) -> None:
    page = context_for(None).new_page()

    page.goto("/admin/people")

    assert "/login" in page.url


def test_people_forms_change_and_audit(
    context_for: ContextFor, admin_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin").new_page()
    page.goto("/admin/people")
    page.click("summary:has-text('Add a person')")
    page.fill("#new-username", "browser-op")
    page.fill("#new-name", "Browser Operator")
    page.select_option("#new-role", "operator")
    with page.expect_navigation():
        page.click("form.admin-form button[type=submit]")
    password = page.locator("[data-secret=password]").inner_text()
    assert len(password) >= 12
    screenshot(page, "admin-person-created-phone-en")

    page.select_option("#role", "dispatcher")
    with page.expect_navigation():
        page.click("text=Change role")
    assert page.locator("[data-fact=role]").inner_text() == "Dispatcher"
    with page.expect_navigation():
        page.click("button:has-text('Deactivate')")
    assert page.locator("[data-fact=active]").inner_text() == "Deactivated"
    no_sideways_scroll(page)
    screenshot(page, "admin-person-phone-en")

    page.goto("/admin/audit?who=browser-op")
    actions = page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions == ["user_deactivated", "user_role_changed", "user_created"]
    no_sideways_scroll(page)
    screenshot(page, "admin-audit-rows-phone-en")
    with Session(admin_engine) as session:
        user = session.scalar(select(User).where(User.username == "browser-op"))
        assert user is not None and user.role == "dispatcher" and not user.active
        rows = session.scalars(select(AdminAudit).where(AdminAudit.target_id == str(user.id)))
        assert {row.actor for row in rows} == {"admin"}


def test_key_forms_change_and_audit(
    context_for: ContextFor, admin_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/keys")
    page.click("summary:has-text('Make a key')")
    page.fill("#new-key-name", "browser-key")
    page.check("#new-key-trusted")
    with page.expect_navigation():
        page.click("button:has-text('Make the key')")
    secret = page.locator("[data-secret=api-key]").inner_text()
    assert len(secret) > 20

    row = page.locator("[data-key=browser-key]")
    row.locator("summary").click()
    with page.expect_navigation():
        row.locator("button:has-text('Revoke')").click()
    assert page.locator("[data-key=browser-key] .badge-off").inner_text() == "Revoked"
    assert secret not in page.content()

    with Session(admin_engine) as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == "browser-key"))
        assert key is not None and key.trusted and key.revoked_at is not None
    page.goto("/admin/audit?who=browser-key")
    actions = page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions == ["api_key_revoked", "api_key_created"]
    assert re.search(r"Revoked\s*: no → yes", page.locator("table").inner_text())
    screenshot(page, "admin-audit-rows-desktop-en")


def test_settings_form_changes_the_city_and_is_audited(
    context_for: ContextFor, admin_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin", **DESKTOP).new_page()
    page.goto("/admin/settings")
    page.fill("#setting-name", "Browser City")
    page.fill("#setting-attribution", "© Browser GIS")
    try:
        with page.expect_navigation():
            page.click("form.settings-form button[type=submit]")
        assert page.locator(".brand .city").inner_text() == "Browser City"
        assert page.locator("[data-setting=tile_attribution]").inner_text() == "© Browser GIS"
        screenshot(page, "admin-settings-saved-desktop-en")
        page.goto("/admin/audit?action=settings_changed")
        assert "Browser City" in page.locator("table").inner_text()
    finally:
        page.goto("/admin/settings")
        page.fill("#setting-name", "")
        page.fill("#setting-attribution", "")
        with page.expect_navigation():
            page.click("form.settings-form button[type=submit]")
    assert page.locator(".brand .city").inner_text() != "Browser City"
