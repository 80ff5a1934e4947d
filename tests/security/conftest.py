"""Fixtures of the security tests: the real app on a clone of the demo city, served over HTTP
on a free port, attacked the way an outsider or a curious insider would (requests sessions,
no test client shortcuts)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from gridmgmt.app.demo import DEMO_PASSWORD
from tests.conftest import demo_clone
from tests.support import real_app, serving


@pytest.fixture(scope="session")
def security_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for the security tests: a clone of the committed demo city."""
    with demo_clone("security", demo_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def security_app(
    security_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The real app on the security tests' database."""
    with real_app(security_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        # Every client of this server is on loopback: generous limits, so that modules do not
        # starve each other (test_rate_limits sets its own for each test).
        app.config.update(
            {
                f"RATE_{w}_PER_{s}": 10_000
                for w in ("REPORTS", "ACTIONS", "READS")
                for s in ("CLIENT", "ACCOUNT")
            }
        )
        yield app


@pytest.fixture(scope="session")
def engine(security_db: URL) -> Iterator[Engine]:
    """An engine on the security tests' database, to check what an attack left behind."""
    engine = create_engine(security_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def inside(engine: Engine) -> tuple[float, float]:
    """A point (lon, lat) inside the demo city's first community (the demo `staff`'s unit)."""
    with engine.connect() as connection:
        lon, lat = connection.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p "
                "WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    return float(lon), float(lat)


@pytest.fixture(scope="session")
def server(security_app: Flask) -> Iterator[str]:
    """The base URL of the app served over HTTP."""
    with serving(security_app) as url:
        yield url


def sign_in(server: str, username: str, password: str = DEMO_PASSWORD) -> requests.Session:
    """A requests session signed in through the real login form (CSRF token and all)."""
    session = requests.Session()
    form = session.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None, "the login form carries a CSRF token"
    answer = session.post(
        f"{server}/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert answer.status_code in (302, 303), answer.text[:300]
    return session
