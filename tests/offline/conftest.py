"""The phone app in headless Chromium against a live server on a clone of the demo city of its
own: persistent browser profiles (IndexedDB and the service worker survive only in one), a
phone's screen and position, and the app's test client on the same database for what other
people do meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page, Playwright
from redis import Redis
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from gridmgmt.app.demo import DEMO_PASSWORD
from gridmgmt.kernel.db import db
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, demo_clone
from tests.support import Web, browser, nested, point_in, real_app, require, seeded_demo, serving

HERE = Path(__file__).resolve().parent
TIMEOUT_MS = 15_000
COMMUNITY = "990100006046"  # the `staff` login's unit: cases there route to it
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "locale": "en-US",
}

PhoneFor = Callable[..., BrowserContext]


# The server's rules through the app's test client, on the demo city seeded once for a module
# (each test in a savepoint of it): tests/offline/test_submissions.py, test_queued_actions.py.
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
def inspector(app: Flask, session: Session, photo_dir: Path) -> Web:
    return browser(app, "inspector")


@pytest.fixture
def here(session: Session) -> tuple[float, float]:
    return point_in(session, COMMUNITY)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests of this folder are marked (`-m "not browser"` leaves them out)."""
    for item in items:
        if item.path.is_relative_to(HERE) and item.path.name.endswith("_browser.py"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def offline_db(demo_database_url: URL) -> Iterator[URL]:
    with demo_clone("offline", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def offline_engine(offline_db: URL) -> Iterator[Engine]:
    engine = create_engine(offline_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def offline_app(
    offline_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    with real_app(offline_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


@pytest.fixture(scope="module")
def offline_server(offline_app: Flask) -> Iterator[str]:
    with serving(offline_app) as url:
        yield url


@pytest.fixture(scope="module")
def spot(offline_engine: Engine) -> tuple[float, float]:
    """(lon, lat) inside the staff's community."""
    with Session(offline_engine) as session:
        return point_in(session, COMMUNITY)


def sign_in(page: Page, username: str) -> None:
    """Sign in through the real login form."""
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "/login" not in page.url, f"{username} could not sign in"


@pytest.fixture
def phone_for(
    playwright: Playwright,
    offline_server: str,
    spot: tuple[float, float],
    tmp_path: Path,
) -> Iterator[PhoneFor]:
    """`phone_for(profile="a", **options)`: a phone's Chromium on a persistent profile (the
    same name is the same phone: its storage, service worker and cookies survive a close)."""
    require("browser", Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")
    opened: list[BrowserContext] = []

    def make(profile: str = "a", **options: Any) -> BrowserContext:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / f"profile-{profile}"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            base_url=offline_server,
            permissions=["geolocation"],
            geolocation={"longitude": spot[0], "latitude": spot[1], "accuracy": 9},
            **{**PHONE, **options},
        )
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        return context

    yield make
    for context in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            context.close()
