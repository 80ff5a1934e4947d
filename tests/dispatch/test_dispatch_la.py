"""Every geocoded MyLA311 request of 1-3 January 2020, dispatched on the real LA territory.

Ground truth is Shapely (GEOS) applying the documented rule to the same cells: a case belongs
to the cell with the lowest code among those whose closed polygon holds it, and goes to the
community unit of that cell's council. The city's own record (`nc`) is a second, independent
check: the council the dispatcher chose agrees with it for nearly every case.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import shapely
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from dispatch.jobs import dispatch_cases
from gridmgmt import create_app
from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import queues
from tests.conftest import analyze_cases
from tests.dispatch.conftest import insert_filed, la_requests

pytestmark = pytest.mark.slow

COMMUNITY_CLASS = "E0102"  # exposed garbage: no routing rule, the council's community unit
OUTSIDE = "outside every unit grid cell"
MIN_CITY_AGREEMENT = 0.97


def test_every_la_case_goes_to_its_council_or_to_the_board(
    la_db: URL, redis_url: str, redis_conn: Redis
) -> None:
    requests = la_requests()
    engine = create_engine(la_db)
    with engine.begin() as conn:
        insert_filed(conn, requests, COMMUNITY_CLASS)
        cells = conn.execute(
            text("""SELECT g.code, a.code, ST_AsBinary(g.geom) FROM grid_cells g
                    JOIN areas a ON a.id = g.community_id ORDER BY g.code""")
        ).all()
    analyze_cases(la_db)
    codes = [code for code, _, _ in cells]
    council_of_cell = {code: council for code, council, _ in cells}
    tree = shapely.STRtree(shapely.from_wkb([bytes(wkb) for _, _, wkb in cells]))

    app = create_app(
        {
            "DATABASE_URL": la_db.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
        }
    )
    started = time.perf_counter()
    with app.app_context():
        runs = [dispatch_cases([])]
        while runs[-1]["dispatched"] + runs[-1]["unroutable"] and len(runs) < 10:
            runs.append(dispatch_cases([]))  # a run hands over after DRAIN_SECONDS
        db.engine.dispose()
        queues.redis.close()
    elapsed = time.perf_counter() - started

    with engine.connect() as conn:
        rows = conn.execute(
            text("""
                SELECT c.description, c.status, c.dispatch_state, c.dispatch_error,
                       g.code AS cell, unit_area.code AS unit_council,
                       (SELECT count(*) FROM case_events e
                        WHERE e.case_id = c.id AND e.action = 'dispatch') AS events
                FROM cases c
                LEFT JOIN grid_cells g ON g.id = c.cell_id
                LEFT JOIN units u ON u.id = c.unit_id
                LEFT JOIN areas unit_area ON unit_area.id = u.community_id
            """)
        ).all()
    engine.dispose()
    cases = {row.description: row for row in rows}

    expected_cell: dict[str, str | None] = {}
    for request in requests:
        hits = tree.query(shapely.Point(request.lon, request.lat), predicate="intersects")
        expected_cell[request.srnumber] = min((codes[i] for i in hits), default=None)
    inside = [r for r in requests if expected_cell[r.srnumber] is not None]
    outside = [r for r in requests if expected_cell[r.srnumber] is None]
    dispatched = [row for row in rows if row.status == "dispatched"]
    manual = [row for row in rows if row.status == "filed" and row.dispatch_state == "manual"]
    wrong_unit = [
        r.srnumber
        for r in inside
        if (cases[r.srnumber].status, cases[r.srnumber].cell, cases[r.srnumber].unit_council)
        != ("dispatched", expected_cell[r.srnumber], council_of_cell[expected_cell[r.srnumber]])
    ]
    not_on_board = [
        r.srnumber
        for r in outside
        if (cases[r.srnumber].status, cases[r.srnumber].dispatch_state) != ("filed", "manual")
        or cases[r.srnumber].dispatch_error != OUTSIDE
    ]
    agree = sum(
        1
        for r in inside
        if cases[r.srnumber].status == "dispatched"
        and cases[r.srnumber].unit_council == r.council_code
    )
    share = agree / len(dispatched) if dispatched else 0.0
    figures = (
        f"LA 311 dispatch: {len(requests)} cases in {elapsed:.2f} s ({len(runs)} job runs); "
        f"{len(dispatched)} dispatched, {len(manual)} on the board; Shapely: {len(inside)} "
        f"inside a council cell, {len(outside)} outside; {len(wrong_unit)} not in Shapely's "
        f"cell or not sent to its council's unit, {len(not_on_board)} outside cases not on "
        f"the board; council = the city's nc for {agree}/{len(dispatched)} = {share:.2%} "
        f"({sum(1 for r in requests if not r.council_code)} cases have no nc)"
    )
    print(figures)

    assert len(rows) == len(cases) == len(requests), figures
    assert wrong_unit == [], f"{figures}; first: {wrong_unit[:10]}"
    assert not_on_board == [], f"{figures}; first: {not_on_board[:10]}"
    assert len(dispatched) == len(inside), figures
    assert len(manual) == len(outside), figures
    assert len(dispatched) + len(manual) == len(requests), figures
    assert Counter(row.events for row in dispatched) == {1: len(dispatched)}, figures
    assert all(row.events == 0 for row in manual), figures
    assert share >= MIN_CITY_AGREEMENT, figures
