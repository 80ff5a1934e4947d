"""The supervisors' pages in headless Chromium, on a phone and a desktop, in both languages:
the figures a leader came for are on screen without scrolling sideways, counted from the
rollups once the scheduler has refreshed them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from playwright.sync_api import Page
from sqlalchemy.engine import URL

from gridmgmt.kernel.db import db
from maps.evaluation import refresh_rollup
from tests.browser import conftest as browser_tests
from tests.browser.conftest import ContextFor
from tests.conftest import demo_clone

# The browser tests' fixtures (a clone of the demo city served live, signed-in contexts), on
# a clone of its own: tests/browser's may be open in the same run, under the name it gives.
live_app = browser_tests.live_app
live_server = browser_tests.live_server
context_for = browser_tests.context_for
screenshot = browser_tests.screenshot

pytestmark = pytest.mark.browser

LOCALES = {"en": "en-US", "zh": "zh-CN"}
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}
YEAR = f"start={(datetime.now(UTC).date() - timedelta(days=364)).isoformat()}"
PAGES = {
    "evaluation-year": (f"/evaluation?{YEAR}", "table"),
    "dashboard": ("/dashboard", "svg.chart"),
    "map-year": (f"/maps?{YEAR}", "iframe"),
}


@pytest.fixture(scope="session")
def browser_db(demo_database_url: URL) -> Iterator[URL]:
    """This module's clone of the committed demo city."""
    with demo_clone("maps_browser", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def rolled_up(live_app: Flask) -> None:
    """The rollups filled, as the scheduler keeps them."""
    with live_app.app_context(), db.transaction() as session:
        refresh_rollup(session)


@pytest.mark.parametrize("lang", LOCALES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PAGES)
def test_supervisor_pages_fit_the_screen(
    context_for: ContextFor,
    screenshot: Callable[[Page, str], None],
    name: str,
    size: str,
    lang: str,
) -> None:
    path, figure = PAGES[name]
    options = {"locale": LOCALES[lang], "viewport": SIZES[size]}
    if size == "desktop":
        options.update(is_mobile=False, has_touch=False)
    page = context_for("leader", **options).new_page()

    answer = page.goto(path)

    assert answer is not None and answer.status == 200
    page.wait_for_selector(figure, state="attached")
    assert page.locator("html").get_attribute("lang", timeout=1000) in (lang, LOCALES[lang])
    sideways = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert sideways <= 1, f"{name} scrolls {sideways}px sideways"
    screenshot(page, f"maps-{name}-{size}-{lang}")
