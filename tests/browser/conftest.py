"""Headless Chromium against the real app: a seeded database, a live server, logged-in contexts.

Everything here is module or session scoped: one demo city (about 2 s to seed), one server
thread and one browser for the whole run. Each role gets a fresh browser context that signs in
through the real /login form.

Set GRIDMGMT_SCREENSHOTS to a folder to keep screenshots of the pages the tests look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from tests.conftest import demo_clone
from tests.support import (
    point_in,
    real_app,
    screenshot_keeper,
    serving,
    sign_in_page,
    signed_in_contexts,
)

HERE = Path(__file__).resolve().parent
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "locale": "en-US",
}
TIMEOUT_MS = 20_000  # a sign-in (a password hash) on a loaded 2-core machine can take 10 s

ContextFor = Callable[..., BrowserContext]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder is a browser test (`-m "not browser"` leaves them out)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for the browser tests: a clone of the committed demo city."""
    with demo_clone("browser", demo_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def browser_engine(browser_db: URL) -> Iterator[Engine]:
    """An engine on the browser tests' database, for the tests' own queries."""
    engine = create_engine(browser_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def live_app(
    browser_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The real app on the browser database, storing photos in a temporary folder."""
    with real_app(browser_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


@pytest.fixture(scope="session")
def live_server(live_app: Flask) -> Iterator[str]:
    """The app served by werkzeug (a thread per request) on a free port; yields its base URL."""
    with serving(live_app) as url:
        yield url


sign_in = sign_in_page


@pytest.fixture(scope="module")
def context_for(browser: Browser, live_server: str) -> Iterator[ContextFor]:
    """`context_for(role, **options)`: a new phone-sized context signed in as the demo login
    `role` (None: anonymous); `options` override or extend Playwright's context options.

    No service worker unless asked (`service_workers="allow"`): the phone app's worker
    (tested in tests/offline) would keep pages in the background while these tests sign in
    again and again on a busy machine."""
    defaults = {**PHONE, "service_workers": "block"}
    with signed_in_contexts(browser, live_server, defaults, TIMEOUT_MS) as make:
        yield make


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Page, str], None]:
    """`screenshot(page, name)`: keep a full-page PNG in $GRIDMGMT_SCREENSHOTS (when set)."""
    return screenshot_keeper()


@pytest.fixture(scope="session")
def community_point(browser_engine: Engine) -> tuple[float, float]:
    """(lon, lat) of a point inside community 990100006046 (the `staff` login's unit)."""
    with Session(browser_engine) as session:
        return point_in(session, "990100006046")
