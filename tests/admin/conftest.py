"""Fixtures of the administration tests that drive the pages in headless Chromium: a clone of
the demo city of their own, the real app served on a free port, signed-in contexts.

Set GRIDMGMT_SCREENSHOTS to a folder to keep screenshots of the pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from tests.conftest import demo_clone
from tests.support import real_app, screenshot_keeper, serving, sign_in_page, signed_in_contexts

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
TIMEOUT_MS = 20_000  # a sign-in (a password hash) on a loaded 2-core machine can take 10 s
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


sign_in = sign_in_page


@pytest.fixture(scope="module")
def context_for(browser: Browser, admin_server: str) -> Iterator[ContextFor]:
    """`context_for(username, **options)`: a new context (phone-sized unless `options` say
    otherwise) signed in as the demo login `username` (None: anonymous)."""
    with signed_in_contexts(browser, admin_server, PHONE, TIMEOUT_MS) as make:
        yield make


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Page, str], None]:
    """`screenshot(page, name)`: keep a full-page PNG in $GRIDMGMT_SCREENSHOTS (when set)."""
    return screenshot_keeper()
