"""Benchmark the supervisors' map and the evaluation at volume, on the real LA territory.

    .venv/bin/python bench/maps.py [-n 10000000] [--raw 100000]

Builds `gridmgmt_bench_maps` (99 LA councils, 250 m cells, the catalogue, one community unit
each) and loads N cases with COPY (progress on stderr): positions are the real LA 311 points
(within a few metres), reported over the last 365 days; cases older than two weeks are closed
but for a 0.5 % backlog, newer ones are 85 % closed. Then, in one run:

- the map page for the default filters (the last 30 days; what a supervisor opens) and for the
  whole year, built from PostGIS aggregates: build time and page size;
- the evaluation tables (units, communities, streets, districts, urgent, inspectors) for the
  last 30 days and for the year, counted live, then with the daily rollup refreshed;
- a plain Folium HeatMap of --raw raw points: build time and page size.

Last line:
    maps: N cases, build X s, page Y MB, raw-heatmap(100k) Z s W MB
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import folium
from folium.plugins import HeatMap
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_points, fresh_database, load_la_territory, owner_of

from cases.catalogue import load_catalogue
from gridmgmt import create_app
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import db
from maps import views
from maps.aggregate import Filters
from maps.evaluation import refresh_rollup
from maps.views import evaluation_tables

BENCH_DB = "gridmgmt_bench_maps"
COLUMNS = ("number", "source", "status", "category_id", "urgent", "location", "cell_id",
           "community_id", "unit_id", "reported_at", "filed_at", "dispatched_at", "deadline",
           "handled_at", "closed_at", "dispatch_state")  # fmt: skip
STATUSES = (
    ["closed"] * 85 + ["dispatched"] * 5 + ["in_progress"] * 5 + ["handled"] * 3 + ["reported"] * 2
)


def rows(n: int, points: list, categories: list[int], now: datetime):
    """N cases as COPY text lines."""
    rng = random.Random(10)
    for i in range(n):
        lon, lat, cell, community, unit = points[i % len(points)]
        lon += rng.uniform(-0.00003, 0.00003)
        lat += rng.uniform(-0.00003, 0.00003)
        reported = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
        # As in a working city: old cases are closed but for a small backlog.
        if now - reported > timedelta(days=14):
            status = "in_progress" if rng.random() < 0.005 else "closed"
        else:
            status = rng.choice(STATUSES)
        dispatched = reported + timedelta(minutes=rng.uniform(5, 120))
        deadline = dispatched + timedelta(hours=rng.choice((4, 8, 24, 40, 120)))
        handled = closed = None
        if status in ("closed", "handled"):
            handled = dispatched + timedelta(hours=rng.uniform(1, 60))
            closed = handled + timedelta(hours=rng.uniform(1, 24)) if status == "closed" else None
        reported_only = status == "reported"

        def ts(value: datetime | None) -> str:
            return value.isoformat() if value is not None else r"\N"

        yield "\t".join(
            (
                f"B{i:010d}", "open311", status, str(rng.choice(categories)),
                "t" if rng.random() < 0.05 else "f", f"SRID=4326;POINT({lon:.7f} {lat:.7f})",
                str(cell), str(community), r"\N" if reported_only else str(unit), ts(reported),
                r"\N" if reported_only else ts(reported),
                r"\N" if reported_only else ts(dispatched),
                r"\N" if reported_only else ts(deadline), ts(handled), ts(closed),
                "none" if reported_only else "done",
            )
        ) + "\n"  # fmt: skip


def load_cases(url: str, n: int) -> None:
    """COPY N cases in, with the indexes dropped and rebuilt around it (as a bulk load does)."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        points = base_points(session)
        categories = list(session.scalars(text("SELECT id FROM categories")))
        indexes = session.execute(
            text("""SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'cases'
                    AND indexname NOT IN ('pk_cases')""")
        ).all()
        session.commit()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, _ in indexes:
            cur.execute(f'ALTER TABLE cases DROP CONSTRAINT IF EXISTS "{name}"')
            cur.execute(f'DROP INDEX IF EXISTS "{name}"')
        raw.commit()
        started = time.perf_counter()
        chunk = 200_000
        generator = rows(n, points, categories, now)
        for done in range(0, n, chunk):
            buffer = io.StringIO("".join(next(generator) for _ in range(min(chunk, n - done))))
            cur.copy_expert(f"COPY cases ({', '.join(COLUMNS)}) FROM STDIN", buffer)
            raw.commit()
            share = (done + min(chunk, n - done)) / n
            bar = "#" * int(40 * share)
            print(f"\rCOPY [{bar:<40}] {share:6.1%} {time.perf_counter() - started:6.0f} s",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
        print(file=sys.stderr)
        started = time.perf_counter()
        for name, definition in indexes:
            cur.execute(definition)
            raw.commit()
            print(f"  index {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        cur.execute("SELECT setval('case_number_seq', 1)")
        raw.commit()
        raw.set_isolation_level(0)
        cur.execute("VACUUM ANALYZE cases")
    finally:
        raw.close()
    engine.dispose()


def timed(label: str, build) -> tuple[float, str]:
    """Run `build()` and say how long it took."""
    started = time.perf_counter()
    page = build()
    elapsed = time.perf_counter() - started
    print(f"{label}: {elapsed:.2f} s, {len(page.encode()) / 1e6:.2f} MB", file=sys.stderr)
    return elapsed, page


def main() -> None:
    """Build, load, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000_000, help="cases to load")
    parser.add_argument("--raw", type=int, default=100_000, help="raw points in the baseline")
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    args = parser.parse_args()

    url = make_url(Config.from_env().DATABASE_URL).set(database=BENCH_DB)
    url_text = url.render_as_string(hide_password=False)
    if not args.reuse:
        url_text = fresh_database(BENCH_DB)
        engine = create_engine(url_text)
        with Session(engine) as session, session.begin():
            load_la_territory(session)
            load_catalogue(session)
            load_calendar(session, shipped_calendar("us_la"))
        engine.dispose()
        load_cases(owner_of(url_text), args.n)  # a bulk load: the owner's

    engine = create_engine(url_text)
    with Session(engine) as session, session.begin():
        session.execute(text("DELETE FROM rollup_state"))  # first: everything counted live
        cases = session.scalar(text("SELECT count(*) FROM cases"))  # what is there (--reuse)
    engine.dispose()
    app = create_app({"DATABASE_URL": url_text})
    today = datetime.now(UTC).date()
    month = Filters(start=today - timedelta(days=29), end=today)
    year = Filters(start=today - timedelta(days=365), end=today)
    with app.test_request_context("/maps/frame"):
        views.build_page(month)  # warm the process caches (outlines, calendar), as a server is
        build, page = timed("map, last 30 days (default)", lambda: views.build_page(month))
        timed("map, whole year", lambda: views.build_page(year))
        for rollup in ("live", "with the rollup"):
            if rollup != "live":
                started = time.perf_counter()
                with db.transaction() as session:
                    refresh_rollup(session)  # what the scheduler does every 10 minutes
                print(f"rollup refresh: {time.perf_counter() - started:.2f} s", file=sys.stderr)
            for label, start in (("30 days", today - timedelta(days=29)), ("year", year.start)):
                period = views.evaluation.Period(start, today)
                started = time.perf_counter()
                evaluation_tables(period)
                elapsed = time.perf_counter() - started
                print(
                    f"evaluation ({label}, {rollup}): {cases} cases, {elapsed:.2f} s",
                    file=sys.stderr,
                )

    engine = create_engine(url_text)
    with engine.connect() as conn:
        points = conn.execute(
            text("SELECT ST_Y(location), ST_X(location) FROM cases LIMIT :n"), {"n": args.raw}
        ).all()
    engine.dispose()

    def raw_heatmap() -> str:
        m = folium.Map(location=[34.05, -118.3], zoom_start=11)
        HeatMap([[y, x] for y, x in points]).add_to(m)
        return m.get_root().render()

    raw_elapsed, raw_page = timed(f"raw Folium HeatMap of {len(points):,} points", raw_heatmap)
    print(
        f"maps: {cases} cases, build {build:.2f} s, page {len(page.encode()) / 1e6:.2f} MB, "
        f"raw-heatmap({len(points) // 1000}k) {raw_elapsed:.2f} s "
        f"{len(raw_page.encode()) / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
