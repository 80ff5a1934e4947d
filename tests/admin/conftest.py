"""Fixtures of the administration tests that drive the pages in headless Chromium: a clone of
the demo city of their own, the real app served on a free port, signed-in contexts.

Set GRIDMGMT_SCREENSHOTS to a folder to keep screenshots of the pages."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from gridmgmt.app.demo import DEMO_PASSWORD
from tests.conftest import demo_clone
from tests.support import real_app, serving

# No service worker: the phone app's worker (tests/offline) keeps pages of other roles in the
# background after a test has moved on, and these modules bind the app's session to their own
# transaction once their browser tests are done.
NO_WORKER: dict[str, Any] = {"service_workers": "block"}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    **NO_WORKER,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1366, "height": 900}, **NO_WORKER}
TIMEOUT_MS = 10_000
ContextFor = Callable[..., BrowserContext]


@pytest.fixture(scope="session")
def admin_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for the administration pages: a clone of the demo city."""
    with demo_clone("admin", demo_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def admin_engine(admin_db: URL) -> Iterator[Engine]:
    """An engine on that database, for the tests' own queries."""
    engine = create_engine(admin_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def admin_live_app(
    admin_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The real app on the administration database."""
    with real_app(admin_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


@pytest.fixture(scope="session")
def admin_server(admin_live_app: Flask) -> Iterator[str]:
    """The app served on a free port; its base URL."""
    with serving(admin_live_app) as url:
        yield url


def sign_in(page: Page, base_url: str, username: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the real login form."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "/login" not in page.url, f"{username} could not sign in"


@pytest.fixture(scope="module")
def context_for(browser: Browser, admin_server: str) -> Iterator[ContextFor]:
    """`context_for(username, **options)`: a new context (phone-sized unless `options` say
    otherwise) signed in as the demo login `username` (None: anonymous)."""
    opened: list[BrowserContext] = []

    def make(username: str | None, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=admin_server, **{**PHONE, **options})
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        if username is not None:
            page = context.new_page()
            sign_in(page, admin_server, username)
            page.close()
        return context

    yield make
    for context in opened:
        context.close()


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Page, str], None]:
    """`screenshot(page, name)`: keep a full-page PNG in $GRIDMGMT_SCREENSHOTS (when set)."""
    folder = os.environ.get("GRIDMGMT_SCREENSHOTS")

    def take(page: Page, name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return take
