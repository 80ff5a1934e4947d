"""The case search page in headless Chromium, on a clone of the demo city of its own: the
operator searches by address and by phone on a phone and a desktop, in English and Chinese;
the results (and the CSV link) are on screen without sideways scrolling; unit staff see no
contact fields; axe finds no serious or critical violation. Screenshots go to
$GRIDMGMT_SCREENSHOTS (`search-*.png`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import create_engine, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import Unit
from grids.models import Area
from tests.browser.conftest import PHONE, TIMEOUT_MS, sign_in
from tests.browser.test_accessibility import AXE, LOCALES, SIZES, violations
from tests.cases.test_search import EMAIL, OTHER_COMMUNITY, STAFF_COMMUNITY, place, report
from tests.conftest import demo_clone
from tests.support import real_app, serving

pytestmark = pytest.mark.browser
SEARCH_PHONE = "+1 (213) 555-0199"


@pytest.fixture(scope="module")
def search_browser_db(demo_database_url: URL) -> Iterator[URL]:
    with demo_clone("searchbrowser", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def numbers(
    search_browser_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """The server's base URL and the numbers of the cases it holds: a few on Spring Street in
    the `staff` login's unit (one with a reporter's phone), one elsewhere."""
    engine: Engine = create_engine(search_browser_db)
    with real_app(search_browser_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        found = seed(app, engine)
        with serving(app) as url:
            yield url, found
    engine.dispose()


def seed(app: Flask, engine: Engine) -> dict[str, str]:
    addresses = [
        "120 Spring Street",
        "122 Spring Street",
        "7 Spring Street, rear lane by the market",
    ]
    with app.app_context(), db.transaction() as session:
        made = {
            address: report(
                session,
                STAFF_COMMUNITY,
                "C0101" if i else "C0102",
                address,
                {"phone": SEARCH_PHONE, "email": EMAIL} if i == 0 else {},
            )
            for i, address in enumerate(addresses)
        }
        made["77 Pico Boulevard"] = report(
            session, OTHER_COMMUNITY, "C0102", "77 Pico Boulevard", {}
        )
    with Session(engine) as session:
        units = dict(
            session.execute(select(Area.code, Unit.id).join(Unit.community)).tuples().all()
        )
    with engine.begin() as connection:
        for i, address in enumerate(addresses):
            place(
                connection,
                made[address],
                "dispatched",
                units[STAFF_COMMUNITY],
                f"2026-05-1{i}T18:00:00Z",
            )
        place(
            connection,
            made["77 Pico Boulevard"],
            "closed",
            units[OTHER_COMMUNITY],
            "2026-05-20T18:00:00Z",
        )
    return made


@pytest.fixture(scope="module")
def open_page(
    browser: Browser, numbers: tuple[str, dict[str, str]]
) -> Iterator[Callable[[str, str, str], Page]]:
    """`open_page(login, size, lang)`: a new page signed in as that demo login."""
    base, _found = numbers
    contexts: list[BrowserContext] = []

    def make(login: str, size: str, lang: str) -> Page:
        options: dict[str, Any] = {**PHONE, **SIZES[size], "locale": LOCALES[lang]}
        context = browser.new_context(base_url=base, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        sign_in(page, base, login)
        return page

    yield make
    for context in contexts:
        context.close()


def no_sideways_scroll(page: Page) -> None:
    """Neither the page nor the results table scrolls sideways: every column is on screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport + 1, f"{page.url} scrolls sideways: {width} > {viewport}"
    table = page.evaluate(
        "(() => { const w = document.querySelector('.table-wrap');"
        " return w ? [w.scrollWidth, w.clientWidth] : [0, 0]; })()"
    )
    assert table[0] <= table[1] + 1, f"the results scroll sideways: {table}"


@pytest.mark.parametrize("lang", list(LOCALES))
@pytest.mark.parametrize("size", list(SIZES))
def test_operator_searches_by_address_and_phone(
    open_page: Callable[[str, str, str], Page],
    numbers: tuple[str, dict[str, str]],
    screenshot: Callable[[Page, str], None],
    size: str,
    lang: str,
) -> None:
    _base, made = numbers
    page = open_page("operator", size, lang)
    page.goto("/cases/search")
    page.locator("nav.site-nav a[href='/cases/search']").wait_for()
    screenshot(page, f"search-form-{size}-{lang}")

    page.fill("#address", "spring st")
    with page.expect_navigation():
        page.locator("form.search-form button[type=submit]").click()
    rows = page.locator("table.search-results tbody tr")
    expect(rows).to_have_count(3)
    expected = [
        made[a]
        for a in (
            "7 Spring Street, rear lane by the market",
            "122 Spring Street",
            "120 Spring Street",
        )
    ]
    assert [rows.nth(i).get_attribute("data-case") for i in range(3)] == expected
    assert made["77 Pico Boulevard"] not in page.content()
    expect(page.locator("a[href^='/cases/search.csv']")).to_be_in_viewport()
    no_sideways_scroll(page)
    assert violations(page, AXE.read_text(encoding="utf-8")) == []
    screenshot(page, f"search-results-{size}-{lang}")

    page.fill("#address", "")
    page.fill("#phone", SEARCH_PHONE)
    with page.expect_navigation():
        page.locator("form.search-form button[type=submit]").click()
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-case") == made["120 Spring Street"]
    assert "555-0199" not in page.locator("table.search-results").inner_text()


@pytest.mark.parametrize("size", list(SIZES))
def test_unit_staff_search_their_unit_without_contact_fields(
    open_page: Callable[[str, str, str], Page],
    numbers: tuple[str, dict[str, str]],
    screenshot: Callable[[Page, str], None],
    size: str,
) -> None:
    _base, made = numbers
    page = open_page("staff", size, "en")
    page.goto(f"/cases/search?number={made['77 Pico Boulevard']}")
    expect(page.locator("p.empty")).to_be_visible()  # another unit's case: not found
    assert page.locator("#phone").count() == 0 and page.locator("#unit_id").count() == 0

    page.goto("/cases/search?status=dispatched")
    expect(page.locator("table.search-results tbody tr")).to_have_count(3)
    no_sideways_scroll(page)
    screenshot(page, f"search-staff-{size}-en")


def test_bad_date_shows_the_form_again(
    open_page: Callable[[str, str, str], Page], screenshot: Callable[[Page, str], None]
) -> None:
    page = open_page("dispatcher", "phone", "en")
    answer = page.goto("/cases/search?reported_from=2026-02-30")
    assert answer is not None and answer.status == 400
    expect(page.locator(".flash-error")).to_contain_text("YYYY-MM-DD")
    expect(page.locator("form.search-form")).to_be_visible()
    screenshot(page, "search-bad-date-phone-en")
