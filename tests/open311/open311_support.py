"""Shared plumbing of the Open311 and OpenAPI tests (plain functions, no fixtures).

`seeded_city` seeds the demo city once in a transaction that is rolled back at the end, and binds
the app's scoped session to that connection, so requests made with the Flask test client (or by
schemathesis through WSGI) see and change the test's data; tests run in savepoints of it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from cases.models import Category
from dispatch.models import Unit
from gridmgmt import demo
from gridmgmt.db import db
from tests.conftest import fresh_request_globals

COMMUNITY = "990100006046"  # the demo community of the `staff` login
DEMO_KEY = demo.DEMO_API_KEY
OPEN311 = "/open311/v2"


@dataclass(frozen=True)
class City:
    """What the tests need of the seeded demo city."""

    connection: Connection
    lon: float  # a point inside COMMUNITY
    lat: float
    inside: list[tuple[float, float]]  # points inside cells all over the city (lon, lat)
    codes: list[str]  # the active catalogue's codes, sorted
    units: dict[str, int]  # unit code -> id
    unit_names: dict[int, str]  # unit id -> name


@contextmanager
def seeded_city(app: Flask, samples: int = 40) -> Iterator[City]:
    """Seed the demo city in a transaction that is rolled back when the block ends."""
    connection = db.engine.connect()
    outer = connection.begin()
    db.session.remove()
    db.session.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        session = db.session()
        assert not demo.is_seeded(session)
        demo.seed_demo(session, say=lambda _line: None)
        lon, lat = session.execute(
            text("SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p WHERE code = :c"),
            {"c": COMMUNITY},
        ).one()
        inside = [
            (float(x), float(y))
            for x, y in session.execute(
                text(
                    "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p, code"
                    " FROM grid_cells ORDER BY md5(code) LIMIT :n) s"
                ),
                {"n": samples},
            )
        ]
        codes = sorted(session.scalars(select(Category.code).where(Category.active)))
        units = dict(session.execute(select(Unit.code, Unit.id)).tuples().all())
        names = dict(session.execute(select(Unit.id, Unit.name)).tuples().all())
        session.commit()  # releases the savepoint: the outer transaction keeps the city
        db.session.remove()
        yield City(connection, float(lon), float(lat), inside, codes, units, names)
    finally:
        fresh_request_globals()
        db.session.remove()
        db.session.configure(bind=None, join_transaction_mode="conservative_savepoint")
        outer.rollback()
        connection.close()


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 32)) -> bytes:
    """A real JPEG made by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the client's session, read from the login page."""
    fresh_request_globals()
    page = client.get("/login")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    assert found, "no CSRF token on the login page"
    return found.group(1)


def sign_in(client: FlaskClient, username: str) -> str:
    """Sign the client in as a demo login; return its CSRF token."""
    token = csrf_token(client)
    fresh_request_globals()
    signed = client.post(
        "/login",
        data={"username": username, "password": demo.DEMO_PASSWORD, "csrf_token": token},
    )
    assert signed.status_code == 302, signed.get_data(as_text=True)[:300]
    return token
