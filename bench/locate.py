"""Benchmark `locate` on the real Los Angeles territory and check it against the city's record.

    .venv/bin/python bench/locate.py [--size 250] [--shared ../shared/data]

Builds the database `gridmgmt_bench_la` (99 neighborhood councils as communities, square cells
of --size metres), locates every geocoded case of la311_requests_2020-01.csv one call at a
time, and prints as its last line:
    locate: N points, X points/s, p95 Y ms, outside O, council agreement A %
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from shapely.geometry import mapping
from shapely.ops import unary_union
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridmgmt.config import DEFAULT_DATABASE_URL  # noqa: E402
from gridmgmt.errors import OutsideTerritory  # noqa: E402
from grids import services  # noqa: E402
from grids.geojson import load_layer, polygon_features  # noqa: E402

BENCH_DB = "gridmgmt_bench_la"
STREET = "990100006"


def fresh_database() -> str:
    """Drop and recreate the bench database from the PostGIS template, migrated."""
    server = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {BENCH_DB} TEMPLATE gridmgmt_postgis"))
    admin.dispose()
    url = server.set(database=BENCH_DB).render_as_string(hide_password=False)
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")
    return url


def main() -> None:
    """Build, locate, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=250.0, help="cell side in metres")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    url = fresh_database()
    engine = create_engine(url)
    layer = load_layer(args.shared / "la_neighborhood_councils.geojson")
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        whole = mapping(unary_union([f.geometry for f in polygon_features(layer)]))
        for level, code, parent in (("district", "990100", None), ("street", STREET, "990100")):
            feature = {"type": "Feature", "properties": {"code": code, "name": level}}
            one = {"type": "FeatureCollection", "features": [{**feature, "geometry": whole}]}
            services.import_units(session, one, level, "code", "name", parent_code=parent)
        services.import_units(session, layer, "community", "nc_id", "name", parent_code=STREET)
        cells = services.generate_cells(session, args.size)
    print(
        f"territory: 99 communities, {cells:,} cells of {args.size:g} m "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )

    with open(args.shared / "la311_requests_2020-01.csv", newline="") as fh:
        points = [
            (float(r["longitude"]), float(r["latitude"]), r["nc"])
            for r in csv.DictReader(fh)
            if r["latitude"] and r["longitude"]
        ]
    timings: list[float] = []
    outside = agree = 0
    with Session(engine) as session:
        started = time.perf_counter()
        for lon, lat, nc in points:
            t0 = time.perf_counter()
            try:
                where = services.locate(session, lon, lat)
                agree += where.community_code == STREET + nc.zfill(3)
            except OutsideTerritory:
                outside += 1
            timings.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    engine.dispose()
    p95 = statistics.quantiles(timings, n=20)[-1] * 1000
    inside = len(points) - outside
    print(
        f"locate: {len(points)} points, {len(points) / elapsed:,.0f} points/s, p95 {p95:.2f} ms, "
        f"outside {outside}, council agreement {100 * agree / inside:.1f} % ({agree}/{inside})"
    )


if __name__ == "__main__":
    main()
