"""`locate` on the real Los Angeles territory: 99 neighborhood councils as communities.

Ground truth is Shapely (GEOS) applying the same documented rule to the same cells: every
cell whose closed polygon holds the point, lowest code wins.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator

import pytest
import shapely
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from gridmgmt.kernel.errors import OutsideTerritory
from grids import services
from tests.conftest import LA_STREET, shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def la(la_database_url: URL) -> Iterator[Session]:
    """A session on the database holding the LA territory."""
    engine = create_engine(la_database_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture(scope="module")
def cells(la: Session) -> tuple[list[str], shapely.STRtree]:
    rows = la.execute(text("SELECT code, ST_AsBinary(geom) FROM grid_cells ORDER BY code")).all()
    codes = [code for code, _ in rows]
    geoms = shapely.from_wkb([bytes(wkb) for _, wkb in rows])
    return codes, shapely.STRtree(geoms)


def expected_cell(cells: tuple[list[str], shapely.STRtree], lon: float, lat: float) -> str | None:
    codes, tree = cells
    hits = tree.query(shapely.Point(lon, lat), predicate="intersects")
    return min((codes[i] for i in hits), default=None)


def located(session: Session, lon: float, lat: float) -> str | None:
    try:
        return services.locate(session, lon, lat).cell_code
    except OutsideTerritory:
        return None


def la_cases() -> list[tuple[float, float, str]]:
    with open(shared_file("la311_requests_2020-01.csv"), newline="") as fh:
        return [
            (float(row["longitude"]), float(row["latitude"]), row["nc"])
            for row in csv.DictReader(fh)
            if row["latitude"] and row["longitude"]
        ]


def test_the_territory_is_tiled_with_coded_cells(la: Session) -> None:
    communities, cells, biggest = la.execute(
        text("""
            SELECT (SELECT count(*) FROM areas WHERE level = 'community'), count(*),
                   max(n) FROM (SELECT community_id, count(*) AS n FROM grid_cells
                                GROUP BY community_id) AS per_community
            JOIN grid_cells USING (community_id)
        """)
    ).one()
    assert communities == 99
    assert 15_000 < cells < 30_000
    assert biggest <= 999
    # Every community is covered by its cells: no gap above 1 m² anywhere.
    assert services.check_territory(la, kinds=["community_gap", "cell_outside"]).ok


def test_locate_agrees_with_shapely_on_every_real_la_case(la: Session, cells) -> None:
    points = la_cases()
    assert len(points) > 9_900
    mismatches = []
    outside = 0
    for lon, lat, _nc in points:
        got = located(la, lon, lat)
        outside += got is None
        if got != expected_cell(cells, lon, lat):
            mismatches.append((lon, lat, got))
    assert mismatches == []
    assert 0 < outside < len(points) * 0.02  # a few cases lie outside every council


def test_located_council_matches_the_one_the_city_recorded(la: Session) -> None:
    points = la_cases()
    inside = agree = 0
    for lon, lat, nc in points:
        try:
            where = services.locate(la, lon, lat)
        except OutsideTerritory:
            continue
        inside += 1
        agree += where.community_code == LA_STREET + nc.zfill(3)
    assert agree / inside > 0.97


def test_locate_agrees_with_shapely_on_vertices_and_edge_points(la: Session, cells) -> None:
    """Cell corners (shared by up to four cells) and points on edges, where ties happen."""
    rows = la.execute(
        text("""
            SELECT ST_X(p1), ST_Y(p1), ST_X(p2), ST_Y(p2)
            FROM (SELECT (ST_DumpSegments(geom)).geom AS s FROM grid_cells
                  WHERE id % 23 = 0) AS segments,
                 ST_StartPoint(s) AS p1, ST_LineInterpolatePoint(s, 0.5) AS p2
        """)
    ).all()
    rng = random.Random(2020)
    sample = rng.sample(rows, min(len(rows), 2500))
    points = [(r[0], r[1]) for r in sample] + [(r[2], r[3]) for r in sample]
    codes, tree = cells
    shared = 0
    for lon, lat in points:
        holders = tree.query(shapely.Point(lon, lat), predicate="intersects")
        shared += len(holders) > 1
        assert located(la, lon, lat) == min((codes[i] for i in holders), default=None)
    assert shared > len(sample) // 2  # most corners are shared: the tie-break really ran
