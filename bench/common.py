"""Shared set-up of the benchmarks: a fresh migrated database and the real LA territory."""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from shapely.geometry import mapping
from shapely.ops import unary_union
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridmgmt.kernel.config import STACK_OWNER_ROLE, Config, stack_secret  # noqa: E402
from grids import services  # noqa: E402
from grids.geojson import load_layer, polygon_features  # noqa: E402
from grids.services import cell_at  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
LA_311 = "la311_requests_2020-01.csv"


def la_311_cases(shared: Path = SHARED) -> list[tuple[float, float, str]]:
    """The geocoded LA 311 cases of January 2020: (lon, lat, council the city recorded)."""
    with open(shared / LA_311, newline="") as fh:
        return [
            (float(r["longitude"]), float(r["latitude"]), r["nc"])
            for r in csv.DictReader(fh)
            if r["latitude"] and r["longitude"]
        ]


def bench_redis_url(database: int) -> str:
    """Database `database` of the Redis the app uses: each benchmark flushes its own."""
    return Config.from_env().REDIS_URL.rsplit("/", 1)[0] + f"/{database}"


STREET = "990100006"


def _server() -> URL:
    """The app's URL (DATABASE_URL, or the private stack's app role)."""
    return make_url(Config.from_env().DATABASE_URL)


def owner_of(url: str) -> str:
    """The same database as `url`, as the tables' owner (MIGRATE_DATABASE_URL's role, or the
    private stack's owner role): for migrations and bulk loads (COPY, indexes, ANALYZE)."""
    app = make_url(url)
    if "MIGRATE_DATABASE_URL" in os.environ:
        owner = make_url(os.environ["MIGRATE_DATABASE_URL"])
    elif app.username == Config.APP_ROLE and stack_secret("pg_owner"):
        owner = app.set(username=STACK_OWNER_ROLE, password=stack_secret("pg_owner"))
    else:
        return url
    owner_url = app.set(username=owner.username, password=owner.password)
    return owner_url.render_as_string(hide_password=False)


def fresh_database(name: str) -> str:
    """Drop and recreate database `name` from the PostGIS template, owned by the owner role and
    migrated as it; its URL as the app's role."""
    server = _server()
    # Creating databases is the superuser's: trusted on the private stack's loopback.
    admin = server._replace(username="postgres", password=None)
    if server.username != Config.APP_ROLE:
        admin = server
    owner = make_url(owner_of(server.render_as_string(hide_password=False))).username
    owned = f' OWNER "{owner}"' if owner != admin.username else ""
    engine = create_engine(admin.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}{owned} TEMPLATE gridmgmt_postgis"))
    engine.dispose()
    url = server.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    return url


def migrate(url: str) -> None:
    """Upgrade the database at `url` (the app's role) to the newest migration, as its owner
    (nothing to do when it is there already)."""
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", owner_of(url))
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")


def load_la_territory(session: Session, size: float = 250.0, shared: Path = SHARED) -> int:
    """The 99 LA neighborhood councils as communities under one street and district, cut into
    `size` m cells; returns the number of cells."""
    layer = load_layer(shared / "la_neighborhood_councils.geojson")
    started = time.perf_counter()
    whole = mapping(unary_union([f.geometry for f in polygon_features(layer)]))
    for level, code, parent in (("district", "990100", None), ("street", STREET, "990100")):
        feature = {"type": "Feature", "properties": {"code": code, "name": level}}
        one = {"type": "FeatureCollection", "features": [{**feature, "geometry": whole}]}
        services.import_units(session, one, level, "code", "name", parent_code=parent)
    services.import_units(session, layer, "community", "nc_id", "name", parent_code=STREET)
    cells = services.generate_cells(session, size)
    print(
        f"territory: 99 communities, {cells:,} cells of {size:g} m "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return cells


def base_points(session: Session) -> list[tuple[float, float, int, int, int]]:
    """The geocoded LA 311 points inside the territory with their cell, community and unit."""
    points = la_311_cases()
    rows = session.execute(
        text(f"""
            SELECT p.lon, p.lat, g.id, g.community_id, u.id
            FROM unnest(CAST(:lons AS float8[]), CAST(:lats AS float8[])) AS p(lon, lat)
            CROSS JOIN LATERAL ({cell_at("ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)")}) AS g
            JOIN units u ON u.community_id = g.community_id
        """),
        {"lons": [p[0] for p in points], "lats": [p[1] for p in points]},
    ).all()
    return [tuple(r) for r in rows]
