"""Shared plumbing of the Open311 and OpenAPI tests (plain functions, no fixtures).

`seeded_city` seeds the demo city once in a transaction that is rolled back at the end
(`tests.support.seeded_demo`): the app's scoped session is bound to that connection, so
requests made with the Flask test client (or by schemathesis through WSGI) see and change the
test's data; tests run in savepoints of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from cases.models import Category
from gridmgmt.app import demo
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import Unit
from tests.support import point_in, seeded_demo

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
def seeded_city(samples: int = 40) -> Iterator[City]:
    """Seed the demo city in a transaction that is rolled back when the block ends."""
    with seeded_demo() as connection:
        session = db.session()
        lon, lat = point_in(session, COMMUNITY)
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
        db.session.remove()
        yield City(connection, lon, lat, inside, codes, units, names)
