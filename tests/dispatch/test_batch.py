"""The dispatcher: the pure routing rules, the set-based batch on the demo city, the doorbell,
the periodic jobs (sweep, deadline watch, hotspots) and the failed jobs page.

Database tests work on their own clone of a database holding the committed demo city (see
`demo_db`): jobs commit as in production, and two connections see each other's work.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from cases import intake, lifecycle
from cases.intake import ReportInput
from cases.lifecycle import ActionInput
from cases.models import CaseSource
from cases.views import case_context
from dispatch import jobs
from dispatch.batch import BatchResult, dispatch_batch
from dispatch.jobs import dispatch_cases, find_hotspots, sweep_filed, watch_deadlines
from dispatch.routing import Route, RuleView, Unroutable, choose_unit
from dispatch.services import RoutingData
from gridmgmt import create_app
from gridmgmt.kernel.business_calendar import BusinessCalendar
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.doorbell import FLAG_TTL_SECONDS, PENDING_FLAG
from gridmgmt.kernel.models import User
from gridmgmt.kernel.queue import DISPATCH_QUEUE, queues
from tests.support import browser

# ================================================================ choose_unit: pure rules

CATEGORY = 7
COMMUNITY_AREA, STREET_AREA, DISTRICT_AREA = 30, 20, 10
AREAS = [COMMUNITY_AREA, STREET_AREA, DISTRICT_AREA]
COMMUNITY_UNIT = (500, True)
# (area level, area id) from the most to the least specific
LEVELS: list[tuple[str | None, int | None]] = [
    ("community", COMMUNITY_AREA),
    ("street", STREET_AREA),
    ("district", DISTRICT_AREA),
    (None, None),
]


def rule(
    rule_id: int,
    level: str | None = None,
    area_id: int | None = None,
    unit_id: int = 900,
    active: bool = True,
    priority: int = 100,
    category_id: int = CATEGORY,
) -> RuleView:
    return RuleView(rule_id, category_id, area_id, level, unit_id, active, priority)


def test_a_case_in_no_area_is_outside_every_cell() -> None:
    assert choose_unit(CATEGORY, [], [rule(1)], COMMUNITY_UNIT) == Unroutable(
        "outside every unit grid cell"
    )


def test_without_a_rule_the_community_unit_handles_the_case() -> None:
    assert choose_unit(CATEGORY, AREAS, [], COMMUNITY_UNIT) == Route(
        500, None, "default: the community that owns the cell"
    )


def test_rules_of_other_classes_and_other_areas_do_not_match() -> None:
    rules = [
        rule(1, category_id=CATEGORY + 1, unit_id=901),
        rule(2, "community", 31, unit_id=902),  # another community
        rule(3, "street", 21, unit_id=903),
    ]

    assert choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT).unit_id == 500


@pytest.mark.parametrize("most_specific", range(4), ids=["community", "street", "district", "city"])
def test_the_most_specific_rule_wins_at_equal_priority(most_specific: int) -> None:
    # Ids fall as rules get more general: the lowest-id tie-break alone would pick the last one.
    rules = [
        rule(10 - i, level, area, unit_id=100 + i)
        for i, (level, area) in enumerate(LEVELS)
        if i >= most_specific
    ]

    route = choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT)

    assert isinstance(route, Route)
    assert (route.unit_id, route.rule_id) == (100 + most_specific, 10 - most_specific)
    where = f"area {LEVELS[most_specific][1]}" if most_specific < 3 else "city-wide"
    assert route.reason == f"rule {10 - most_specific} ({where}, priority 100)"


def test_priority_beats_specificity() -> None:
    rules = [rule(1, "community", COMMUNITY_AREA, unit_id=901), rule(2, unit_id=902, priority=200)]

    assert choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT) == Route(
        902, 2, "rule 2 (city-wide, priority 200)"
    )


def test_equal_rules_are_decided_by_the_lowest_id() -> None:
    rules = [rule(8, "street", STREET_AREA, unit_id=908), rule(3, "street", STREET_AREA, 903)]

    assert choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT).rule_id == 3


def test_a_rule_whose_unit_is_inactive_is_skipped() -> None:
    rules = [
        rule(1, "community", COMMUNITY_AREA, unit_id=901, active=False),
        rule(2, "street", STREET_AREA, unit_id=902),
    ]

    assert choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT) == Route(
        902, 2, f"rule 2 (area {STREET_AREA}, priority 100)"
    )


def test_when_every_matching_unit_is_inactive_the_case_is_unroutable_naming_the_rules() -> None:
    rules = [
        rule(9, "community", COMMUNITY_AREA, unit_id=901, active=False),
        rule(4, unit_id=902, active=False),
        rule(5, category_id=CATEGORY + 1),  # does not match: not named
    ]

    # The class belongs to those units: its case goes to the board, not to the community.
    route = choose_unit(CATEGORY, AREAS, rules, COMMUNITY_UNIT)

    assert isinstance(route, Unroutable)
    assert "inactive" in route.reason
    assert sorted(int(n) for n in re.findall(r"\d+", route.reason)) == [4, 9]


def test_an_inactive_community_unit_makes_the_case_unroutable() -> None:
    route = choose_unit(CATEGORY, AREAS, [], (500, False))

    assert route == Unroutable("the community unit 500 owning the cell is inactive")


def test_no_rule_and_no_community_unit_is_unroutable() -> None:
    assert choose_unit(CATEGORY, AREAS, [], None) == Unroutable(
        "no routing rule and no community unit for this cell"
    )


def test_routing_data_walks_from_the_community_up_to_the_district() -> None:
    data = RoutingData(
        parents={COMMUNITY_AREA: STREET_AREA, STREET_AREA: DISTRICT_AREA, DISTRICT_AREA: None},
        rules=[rule(1, "district", DISTRICT_AREA, unit_id=901), rule(2, unit_id=902, priority=1)],
        community_units={COMMUNITY_AREA: COMMUNITY_UNIT},
        units={},
    )

    assert data.areas_of(COMMUNITY_AREA) == AREAS
    assert data.areas_of(None) == []
    assert data.route(CATEGORY, COMMUNITY_AREA).unit_id == 901
    assert data.route(CATEGORY + 1, COMMUNITY_AREA).unit_id == 500
    assert data.route(CATEGORY, None) == Unroutable("outside every unit grid cell")
    looped = RoutingData({1: 2, 2: 1}, [], {}, {})
    assert looped.areas_of(1) == [1, 2]


# ================================================================ the demo city

COMMUNITY = "990100006046"  # the `staff` login's community
GARBAGE = "E0102"  # exposed garbage: a community class, 1 working day, urgent 2 hours
WATER_COVER = "C0101"  # water supply manhole cover: DEPT-WATER, 2 hours, urgent 1 hour
START = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Los Angeles (PDT)
OUTSIDE = (-117.0, 33.0)  # in San Diego County: in no cell of the demo city
LIMITS = {GARBAGE: ((1, "days"), (2, "hours")), WATER_COVER: ((2, "hours"), (1, "hours"))}


@dataclass(frozen=True)
class Place:
    """A community of the demo city and a point inside exactly one of its cells."""

    code: str
    area_id: int
    unit_id: int
    cell_id: int
    lon: float
    lat: float


@dataclass(frozen=True)
class City:
    """This test's clone of the demo city."""

    url: URL
    engine: Engine
    calendar: BusinessCalendar
    categories: dict[str, int]
    units: dict[str, int]
    unit_codes: dict[int, str]
    water_rule_id: int
    community: Place
    other: Place


def place(conn: Connection, code: str) -> Place:
    """The community `code`, its unit, and its first cell whose inner point no other cell holds."""
    row = conn.execute(
        text("""
            SELECT a.id, u.id, g.id, ST_X(p), ST_Y(p)
            FROM areas a JOIN units u ON u.community_id = a.id
            JOIN grid_cells g ON g.community_id = a.id, ST_PointOnSurface(g.geom) p
            WHERE a.code = :code AND NOT EXISTS (
                SELECT 1 FROM grid_cells o WHERE o.id <> g.id AND ST_Intersects(o.geom, p))
            ORDER BY g.code LIMIT 1
        """),
        {"code": code},
    ).one()
    return Place(code, row[0], row[1], row[2], float(row[3]), float(row[4]))


@pytest.fixture
def city(demo_db: URL) -> Iterator[City]:
    engine = create_engine(demo_db)
    with engine.connect() as conn:
        categories = dict(conn.execute(text("SELECT code, id FROM categories")).tuples().all())
        units = dict(conn.execute(text("SELECT code, id FROM units")).tuples().all())
        water_rule_id = conn.execute(
            text("SELECT id FROM routing_rules WHERE category_id = :c"),
            {"c": categories[WATER_COVER]},
        ).scalar_one()
        other = conn.execute(
            text("""SELECT code FROM areas WHERE level = 'community' AND code <> :c
                    ORDER BY code LIMIT 1"""),
            {"c": COMMUNITY},
        ).scalar_one()
        community, other_place = place(conn, COMMUNITY), place(conn, other)
    with Session(engine) as session:
        calendar = get_calendar(session, "us_la")
    yield City(
        demo_db,
        engine,
        calendar,
        categories,
        units,
        {v: k for k, v in units.items()},
        water_rule_id,
        community,
        other_place,
    )
    engine.dispose()


def add_case(
    conn: Connection | Session,
    city: City,
    category: str = GARBAGE,
    where: Place | tuple[float, float] | None = None,
    *,
    located: bool = True,
    status: str = "filed",
    state: str = "queued",
    urgent: bool = False,
    filed_at: datetime | None = START,
    reported_at: datetime | None = None,
    deadline: datetime | None = None,
    unit_id: int | None = None,
) -> int:
    """Insert a case as the channels leave it; located in its cell (lowest code) unless not."""
    where = where or city.community
    lon, lat = (where.lon, where.lat) if isinstance(where, Place) else where
    return conn.execute(
        text("""
            INSERT INTO cases (source, status, category_id, urgent, location, cell_id,
                               community_id, filed_at, dispatch_state, reported_at, deadline,
                               unit_id)
            SELECT 'operator', :status, :category_id, :urgent, p.geom, c.id, c.community_id,
                   :filed_at, :state, COALESCE(:reported_at, now()), :deadline, :unit_id
            FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geom) p
            LEFT JOIN LATERAL (
                SELECT g.id, g.community_id FROM grid_cells g
                WHERE :located AND ST_Intersects(g.geom, p.geom) ORDER BY g.code LIMIT 1
            ) c ON true
            RETURNING id
        """),
        {"status": status, "category_id": city.categories[category], "urgent": urgent,
         "lon": lon, "lat": lat, "located": located, "filed_at": filed_at, "state": state,
         "reported_at": reported_at, "deadline": deadline, "unit_id": unit_id},
    ).scalar_one()  # fmt: skip


def case_row(conn: Connection | Session, case_id: int) -> dict[str, Any]:
    """Every column of a case."""
    return dict(
        conn.execute(text("SELECT * FROM cases WHERE id = :id"), {"id": case_id}).mappings().one()
    )


def case_events(
    conn: Connection | Session, case_id: int, action: str | None = None
) -> list[dict[str, Any]]:
    """A case's events (of one action), oldest first."""
    rows = conn.execute(
        text("""SELECT * FROM case_events WHERE case_id = :id
                AND (CAST(:action AS text) IS NULL OR action = :action) ORDER BY id"""),
        {"id": case_id, "action": action},
    ).mappings()
    return [dict(r) for r in rows]


def run_batch(city: City, now: datetime = START, **kwargs: Any) -> BatchResult:
    """One batch in its own committed transaction, as the job runs it."""
    with Session(city.engine) as session, session.begin():
        return dispatch_batch(session, city.calendar, now, **kwargs)


def expected_deadline(city: City, category: str, urgent: bool, now: datetime = START) -> datetime:
    """The class's limit (urgent or normal) in working time after `now`."""
    value, unit = LIMITS[category][1 if urgent else 0]
    return city.calendar.add_working_time(now, value, unit)


# ---------------------------------------------------------------- dispatch_batch


def test_batch_dispatches_waiting_cases_in_one_statement_one_event_each(city: City) -> None:
    with city.engine.begin() as conn:
        waiting = [
            add_case(conn, city),
            add_case(conn, city, urgent=True),
            add_case(conn, city, WATER_COVER),
            add_case(conn, city, where=city.other),
        ]
        not_waiting = [
            add_case(conn, city, status="reported", state="none", filed_at=None),
            add_case(conn, city, state="manual"),
            add_case(conn, city, status="dispatched", state="done"),
        ]
        before = {i: case_row(conn, i) for i in waiting + not_waiting}
    statements: list[str] = []

    @event.listens_for(city.engine, "before_cursor_execute")
    def record(*args: Any) -> None:
        statements.append(" ".join(args[2].split()))

    result = run_batch(city)

    event.remove(city.engine, "before_cursor_execute", record)
    assert sorted(result.dispatched) == sorted(waiting)
    assert result.unroutable == {}
    writes = [s for s in statements if s.startswith(("WITH", "UPDATE", "INSERT"))]
    assert len(writes) == 1, "one statement writes the whole batch"
    assert "UPDATE cases" in writes[0] and "INSERT INTO case_events" in writes[0]
    with city.engine.connect() as conn:
        for case_id in waiting:
            row = case_row(conn, case_id)
            category = {v: k for k, v in city.categories.items()}[row["category_id"]]
            assert row["status"] == "dispatched"
            assert row["dispatch_state"] == "done"
            assert row["version"] == before[case_id]["version"] + 1
            assert row["dispatched_at"] == START
            assert row["deadline"] == expected_deadline(city, category, row["urgent"])
            [dispatch] = case_events(conn, case_id)
            assert dispatch["action"] == "dispatch"
            assert (dispatch["from_status"], dispatch["to_status"]) == ("filed", "dispatched")
            assert (dispatch["actor_role"], dispatch["actor_id"]) == ("system", None)
            data = dispatch["data"]
            assert set(data) >= {"unit", "unit_name", "why", "deadline"}
            assert data["unit"] == city.unit_codes[row["unit_id"]]
            assert data.get("rule") == row["routing_rule_id"]  # none: the owning community
            assert datetime.fromisoformat(data["deadline"]) == row["deadline"]
        for case_id in not_waiting:
            assert case_row(conn, case_id) == before[case_id]
            assert case_events(conn, case_id) == []


def test_case_ids_past_two_to_the_31_are_dispatched(city: City) -> None:
    with city.engine.begin() as conn:
        big = 3_000_000_000  # cases.id is a bigint
        conn.execute(text("UPDATE cases SET id = :big WHERE id = :id"),
                     {"big": big, "id": add_case(conn, city)})  # fmt: skip
        lost = conn.execute(text("UPDATE cases SET id = :big WHERE id = :id"),
                            {"big": big + 1, "id": add_case(conn, city, where=OUTSIDE,
                                                             located=False)})  # fmt: skip
        assert lost.rowcount == 1

    result = run_batch(city)

    assert result.dispatched == [big] and list(result.unroutable) == [big + 1]
    with city.engine.connect() as conn:
        assert case_row(conn, big)["status"] == "dispatched"
        assert [e["action"] for e in case_events(conn, big)] == ["dispatch"]
        assert case_row(conn, big + 1)["dispatch_state"] == "manual"


def test_demo_rules_send_the_water_class_to_the_water_department(city: City) -> None:
    with city.engine.begin() as conn:
        water = add_case(conn, city, WATER_COVER)
        garbage = add_case(conn, city, GARBAGE)
        elsewhere = add_case(conn, city, GARBAGE, city.other)

    run_batch(city)

    with city.engine.connect() as conn:
        row = case_row(conn, water)
        assert (row["unit_id"], row["routing_rule_id"]) == (
            city.units["DEPT-WATER"],
            city.water_rule_id,
        )
        why = case_events(conn, water)[0]["data"]["why"]
        assert why == f"rule {city.water_rule_id} (city-wide, priority 100)"
        row = case_row(conn, garbage)
        assert (row["unit_id"], row["routing_rule_id"]) == (city.community.unit_id, None)
        assert case_events(conn, garbage)[0]["data"]["why"] == (
            "default: the community that owns the cell"
        )
        assert case_row(conn, elsewhere)["unit_id"] == city.other.unit_id


def test_a_street_rule_beats_the_city_wide_rule(city: City) -> None:
    with city.engine.begin() as conn:
        street = conn.execute(
            text("SELECT parent_id FROM areas WHERE id = :id"), {"id": city.community.area_id}
        ).scalar_one()
        conn.execute(
            text("""INSERT INTO routing_rules (category_id, area_id, unit_id, priority)
                    VALUES (:c, :a, :u, 100), (:c, :other, :w, 100)"""),
            {"c": city.categories[WATER_COVER], "a": street, "u": city.units["DEPT-ROADS"],
             "other": city.other.area_id, "w": city.units["DEPT-GAS"]},
        )  # fmt: skip
        water = add_case(conn, city, WATER_COVER)

    run_batch(city)

    with city.engine.connect() as conn:
        assert case_row(conn, water)["unit_id"] == city.units["DEPT-ROADS"]


def test_the_deadline_counts_working_time_from_the_dispatch_urgent_limit_when_urgent(
    city: City,
) -> None:
    with city.engine.begin() as conn:
        cases = {
            (category, urgent): add_case(conn, city, category, urgent=urgent)
            for category in LIMITS
            for urgent in (False, True)
        }

    run_batch(city)

    with city.engine.connect() as conn:
        deadlines = {key: case_row(conn, i)["deadline"] for key, i in cases.items()}
    for (category, urgent), deadline in deadlines.items():
        assert deadline == expected_deadline(city, category, urgent), (category, urgent)
    # Tuesday 10:00 in Los Angeles + 1 working hour; the normal limit is longer
    assert deadlines[WATER_COVER, True] == START + timedelta(hours=1)
    assert deadlines[WATER_COVER, False] > deadlines[WATER_COVER, True]
    assert deadlines[GARBAGE, False] > deadlines[GARBAGE, True]


def test_a_second_run_changes_nothing(city: City) -> None:
    with city.engine.begin() as conn:
        ids = [
            add_case(conn, city),
            add_case(conn, city, WATER_COVER),
            add_case(conn, city, urgent=True),
        ]
        ids.append(add_case(conn, city, where=OUTSIDE, located=False))
    first = run_batch(city)
    with city.engine.connect() as conn:
        after_first = [case_row(conn, i) for i in ids]
        events = conn.execute(text("SELECT count(*) FROM case_events")).scalar_one()

    second = run_batch(city, START + timedelta(minutes=5))

    assert first.taken == 4
    assert second.taken == 0
    with city.engine.connect() as conn:
        assert [case_row(conn, i) for i in ids] == after_first
        assert conn.execute(text("SELECT count(*) FROM case_events")).scalar_one() == events


def test_only_and_limit_take_the_named_and_the_oldest_cases(city: City) -> None:
    with city.engine.begin() as conn:
        ids = [add_case(conn, city, filed_at=START - timedelta(minutes=m)) for m in (1, 3, 2)]

    assert run_batch(city, only=[ids[0]]).dispatched == [ids[0]]
    assert run_batch(city, limit=1).dispatched == [ids[1]]  # filed 3 minutes before START
    assert run_batch(city).dispatched == [ids[2]]


def test_cases_filed_without_a_cell_are_located_lowest_code_first_then_dispatched(
    city: City,
) -> None:
    with city.engine.begin() as conn:
        # a corner shared by four cells: the cell with the lowest code owns it
        lon, lat, owner, owner_community = conn.execute(
            text("""
                SELECT ST_X(v), ST_Y(v), (array_agg(o.id ORDER BY o.code))[1],
                       (array_agg(o.community_id ORDER BY o.code))[1]
                FROM grid_cells g, ST_PointN(ST_ExteriorRing(g.geom), 1) v, grid_cells o
                WHERE g.community_id = :community AND ST_Intersects(o.geom, v)
                GROUP BY g.code, v HAVING count(*) = 4 ORDER BY g.code LIMIT 1
            """),
            {"community": city.community.area_id},
        ).one()
        inside = add_case(conn, city, located=False)
        corner = add_case(conn, city, where=(lon, lat), located=False)
        assert case_row(conn, inside)["cell_id"] is None

    assert run_batch(city).dispatched == [inside, corner]

    with city.engine.connect() as conn:
        row = case_row(conn, inside)
        assert (row["cell_id"], row["community_id"]) == (
            city.community.cell_id,
            city.community.area_id,
        )
        assert (row["status"], row["unit_id"]) == ("dispatched", city.community.unit_id)
        row = case_row(conn, corner)
        assert (row["cell_id"], row["community_id"]) == (owner, owner_community)
        assert row["status"] == "dispatched"


def assert_on_the_board(conn: Connection, case_id: int, reason: str) -> None:
    """Filed, waiting for the dispatcher with `reason`, not dispatched, no event."""
    row = case_row(conn, case_id)
    assert (row["status"], row["dispatch_state"]) == ("filed", "manual")
    assert row["dispatch_error"] == reason
    assert (row["unit_id"], row["deadline"], row["dispatched_at"]) == (None, None, None)
    assert case_events(conn, case_id) == []


def test_a_case_outside_every_cell_goes_to_the_board_with_the_reason(city: City) -> None:
    with city.engine.begin() as conn:
        outside = add_case(conn, city, where=OUTSIDE, located=False)
        inside = add_case(conn, city)

    result = run_batch(city)

    assert result.dispatched == [inside]
    assert result.unroutable == {outside: "outside every unit grid cell"}
    with city.engine.connect() as conn:
        assert_on_the_board(conn, outside, "outside every unit grid cell")
        assert case_row(conn, outside)["cell_id"] is None
    assert run_batch(city).taken == 0  # the board's cases wait for the dispatcher, not the job


def test_a_rule_whose_unit_is_inactive_sends_the_case_to_the_board(city: City) -> None:
    with city.engine.begin() as conn:
        conn.execute(text("UPDATE units SET active = false WHERE code = 'DEPT-WATER'"))
        water = add_case(conn, city, WATER_COVER)
        garbage = add_case(conn, city, GARBAGE)

    result = run_batch(city)

    assert result.dispatched == [garbage]
    reason = f"the units of the matching routing rules ({city.water_rule_id}) are inactive"
    assert result.unroutable == {water: reason}
    with city.engine.connect() as conn:
        assert_on_the_board(conn, water, reason)


def test_an_inactive_community_unit_sends_its_cases_to_the_board(city: City) -> None:
    with city.engine.begin() as conn:
        conn.execute(
            text("UPDATE units SET active = false WHERE id = :id"), {"id": city.other.unit_id}
        )
        orphan = add_case(conn, city, where=city.other)

    run_batch(city)

    with city.engine.connect() as conn:
        assert_on_the_board(
            conn, orphan, f"the community unit {city.other.unit_id} owning the cell is inactive"
        )


def add_many(city: City, count: int) -> list[int]:
    """`count` cases waiting at the same point, filed a millisecond apart, committed."""
    with city.engine.begin() as conn:
        return list(
            conn.execute(
                text("""
                    INSERT INTO cases (source, status, category_id, location, filed_at,
                                       dispatch_state)
                    SELECT 'open311', 'filed', :category_id,
                           ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),
                           :start + n * interval '1 millisecond', 'queued'
                    FROM generate_series(1, :count) n
                    RETURNING id
                """),
                {"category_id": city.categories[GARBAGE], "lon": city.community.lon,
                 "lat": city.community.lat, "start": START, "count": count},
            ).scalars()
        )  # fmt: skip


def dispatch_event_counts(city: City) -> dict[int, int]:
    """case id → its number of dispatch events."""
    with city.engine.connect() as conn:
        return dict(
            conn.execute(
                text("""SELECT case_id, count(*) FROM case_events WHERE action = 'dispatch'
                        GROUP BY case_id""")
            )
            .tuples()
            .all()
        )


def test_a_batch_skips_the_cases_another_batch_holds_instead_of_waiting_or_taking_them(
    city: City,
) -> None:
    ids = add_many(city, 40)

    with Session(city.engine) as first, Session(city.engine) as second:
        held = dispatch_batch(first, city.calendar, START, limit=15)  # not committed yet
        second.execute(text("SET LOCAL lock_timeout = '3s'"))  # waiting would fail the test
        rest = dispatch_batch(second, city.calendar, START, limit=100)
        second.commit()
        first.commit()

    assert len(held.dispatched) == 15
    assert set(held.dispatched).isdisjoint(rest.dispatched)
    assert sorted(held.dispatched + rest.dispatched) == sorted(ids)
    assert dispatch_event_counts(city) == dict.fromkeys(ids, 1)


def test_two_concurrent_batches_dispatch_each_case_exactly_once(city: City) -> None:
    ids = add_many(city, 300)
    start = threading.Barrier(2)

    def drain(_: int) -> list[int]:
        taken: list[int] = []
        start.wait()
        while True:
            result = run_batch(city, limit=10)
            taken += result.dispatched
            if not result.taken:
                return taken

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.map(drain, range(2))

    assert one and two, "both connections took part"
    assert set(one).isdisjoint(two)
    assert sorted(one + two) == sorted(ids)
    assert dispatch_event_counts(city) == dict.fromkeys(ids, 1)


# ---------------------------------------------------------------- the app: doorbell and jobs


@pytest.fixture
def city_app(city: City, redis_url: str, redis_conn: Redis, tmp_path: Path) -> Iterator[Flask]:
    """The app on this test's demo city and the (flushed) test Redis; no context pushed."""
    application = create_app(
        {
            "DATABASE_URL": city.url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "PHOTO_DIR": str(tmp_path / "photos"),
        }
    )
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
        queues.redis.close()


@pytest.fixture
def in_app(city_app: Flask) -> Iterator[Flask]:
    """Inside an app context of `city_app`, as the worker command runs jobs."""
    with city_app.app_context():
        yield city_app


@contextmanager
def transaction() -> Iterator[Session]:
    """One use case: a transaction of the app's session, then a fresh session (as a request)."""
    try:
        with db.transaction() as session:
            yield session
    finally:
        db.session.remove()


def login(session: Session, username: str) -> User:
    """A demo login's user."""
    user = session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


def report(where: Place, category: str = GARBAGE) -> int:
    """An operator's report (status reported), committed."""
    with transaction() as session:
        return intake.report_case(
            session,
            ReportInput(category, where.lon, where.lat),
            login(session, "operator"),
            CaseSource.OPERATOR,
            case_context(session).photo_root,
        ).case.id


def act(session: Session, case_id: int, action: str, username: str, **data: Any) -> None:
    """Apply an action as a demo login, with the app's case context."""
    lifecycle.act(
        session,
        case_id,
        action,
        login(session, username),
        ActionInput(**data),
        case_context(session),
    )


def dispatch_queue(redis_conn: Redis) -> Queue:
    """The dispatch queue of the test Redis."""
    return Queue(DISPATCH_QUEUE, connection=redis_conn)


def test_filing_rings_the_doorbell_once_after_the_commit(
    in_app: Flask, city: City, redis_conn: Redis
) -> None:
    queue = dispatch_queue(redis_conn)
    first, second, third = (report(city.community) for _ in range(3))
    assert queue.count == 0, "a report is not filed yet: nothing to dispatch"

    with transaction() as session:
        act(session, first, "file", "operator")
        assert queue.count == 0, "rung before the commit"

    [job] = queue.get_jobs()
    assert job.func_name == "dispatch.jobs.dispatch_cases"
    assert job.args == ([first],)
    assert redis_conn.get(PENDING_FLAG) == b"1"
    assert 0 < redis_conn.ttl(PENDING_FLAG) <= FLAG_TTL_SECONDS

    with transaction() as session:
        act(session, second, "file", "operator")
    assert queue.job_ids == [job.id], "a job is already waiting: no second one"

    assert SimpleWorker([queue], connection=redis_conn).work(burst=True)

    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == {"dispatched": 2, "unroutable": 0, "rang": 1}
    with city.engine.connect() as conn:
        assert [case_row(conn, i)["status"] for i in (first, second)] == ["dispatched"] * 2
    assert redis_conn.get(PENDING_FLAG) is None, "the job frees the flag"
    with transaction() as session:
        act(session, third, "file", "operator")
    [again] = queue.get_jobs()
    assert again.args == ([third],)


def test_a_rolled_back_filing_rings_nothing(in_app: Flask, city: City, redis_conn: Redis) -> None:
    case_id = report(city.community)
    session = db.session()

    act(session, case_id, "file", "operator")
    session.rollback()
    session.execute(text("SELECT 1"))
    session.commit()  # a later commit of the same session does not ring for the forgotten case
    db.session.remove()

    assert dispatch_queue(redis_conn).count == 0
    assert redis_conn.get(PENDING_FLAG) is None
    with city.engine.connect() as conn:
        assert case_row(conn, case_id)["status"] == "reported"


def test_filing_succeeds_when_redis_is_down(
    city: City, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_redis = create_app(
        {
            "DATABASE_URL": city.url.render_as_string(hide_password=False),
            "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "PHOTO_DIR": str(tmp_path),
        }
    )
    with no_redis.app_context():
        case_id = report(city.community)
        with (
            caplog.at_level(logging.WARNING, logger="gridmgmt.kernel.doorbell"),
            transaction() as s,
        ):
            act(s, case_id, "file", "operator")
        db.engine.dispose()

    with city.engine.connect() as conn:
        row = case_row(conn, case_id)
        assert (row["status"], row["dispatch_state"]) == ("filed", "queued")
        assert row["filed_at"] is not None
        assert [e["action"] for e in case_events(conn, case_id)] == ["report", "file"]
    assert "dispatch doorbell failed" in caplog.text
    assert str(case_id) in caplog.text


def test_dispatch_cases_drains_every_waiting_case_and_frees_the_flag(
    in_app: Flask, city: City, redis_conn: Redis
) -> None:
    with city.engine.begin() as conn:
        ids = [add_case(conn, city), add_case(conn, city, WATER_COVER)]
        outside = add_case(conn, city, where=OUTSIDE, located=False)
    redis_conn.set(PENDING_FLAG, "1")

    assert dispatch_cases([ids[0]]) == {"dispatched": 2, "unroutable": 1, "rang": 1}

    assert redis_conn.get(PENDING_FLAG) is None
    assert dispatch_cases([]) == {"dispatched": 0, "unroutable": 0, "rang": 0}
    with city.engine.connect() as conn:
        assert [case_row(conn, i)["status"] for i in ids] == ["dispatched"] * 2
        assert case_row(conn, outside)["dispatch_state"] == "manual"


def test_a_drain_right_after_another_gathers_the_stream_into_one_batch(
    in_app: Flask, city: City, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_app.config["DISPATCH_GATHER_MS"] = 40
    waits: list[float] = []
    late: list[int] = []

    def gather(seconds: float) -> None:
        # A report filed while the drain waits finds the flag up (it rings nothing) and is
        # taken by this drain.
        waits.append(seconds)
        assert redis_conn.get(PENDING_FLAG) == b"1"
        with city.engine.begin() as conn:
            late.append(add_case(conn, city))

    monkeypatch.setattr("dispatch.jobs._sleep", gather)
    monkeypatch.setattr("dispatch.jobs._LastDrain.ended", float("-inf"))
    with city.engine.begin() as conn:
        first = add_case(conn, city)
    redis_conn.set(PENDING_FLAG, "1")
    assert dispatch_cases([first])["dispatched"] == 1
    assert waits == [], "a lone report is dispatched at once"
    redis_conn.set(PENDING_FLAG, "1")
    monkeypatch.setattr("dispatch.jobs._LastDrain.ended", time.monotonic() - 1)
    dispatch_cases([])
    assert waits == [], "a trickle (a drain a second after the last) is dispatched at once"

    redis_conn.set(PENDING_FLAG, "1")
    monkeypatch.setattr("dispatch.jobs._LastDrain.ended", time.monotonic())  # just drained
    assert dispatch_cases([])["dispatched"] == 1

    assert waits == [0.04]
    with city.engine.connect() as conn:
        assert case_row(conn, late[0])["status"] == "dispatched"
    assert redis_conn.get(PENDING_FLAG) is None

    in_app.config["DISPATCH_GATHER_MS"] = 0
    monkeypatch.setattr("dispatch.jobs._LastDrain.ended", time.monotonic())
    dispatch_cases([])
    assert waits == [0.04], "DISPATCH_GATHER_MS=0 never waits"


def test_the_sweep_rings_only_for_cases_older_than_the_grace_period(
    in_app: Flask, city: City, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(in_app.config, "DISPATCH_GRACE_SECONDS", 30)
    queue = dispatch_queue(redis_conn)
    now = jobs.now_utc()
    long_ago = now - timedelta(minutes=5)
    with city.engine.begin() as conn:
        add_case(conn, city, filed_at=now - timedelta(seconds=5))
        add_case(conn, city, filed_at=long_ago, state="manual")  # on the board: not the job's
        add_case(conn, city, filed_at=long_ago, status="dispatched", state="done")

    assert sweep_filed() == 0
    assert queue.count == 0

    with city.engine.begin() as conn:
        add_case(conn, city, filed_at=long_ago)
    redis_conn.set(PENDING_FLAG, "1")  # a job seems to be waiting: the sweep rings anyway

    assert sweep_filed() == 1
    [job] = queue.get_jobs()
    assert job.func_name == "dispatch.jobs.dispatch_cases"
    assert sweep_filed() == 1
    assert queue.count == 2


def test_deadline_watch_warns_and_marks_overdue_once(in_app: Flask, city: City) -> None:
    now = jobs.now_utc()
    unit = city.community.unit_id
    with city.engine.begin() as conn:
        late = add_case(conn, city, status="dispatched", state="done", unit_id=unit,
                        deadline=now - timedelta(hours=1))  # fmt: skip
        late_in_progress = add_case(conn, city, status="in_progress", state="done",
                                    unit_id=unit, deadline=now - timedelta(minutes=1))  # fmt: skip
        soon = add_case(conn, city, status="dispatched", state="done", unit_id=unit,
                        deadline=now + timedelta(hours=1))  # fmt: skip
        later = add_case(conn, city, status="dispatched", state="done", unit_id=unit,
                         deadline=now + timedelta(days=2))  # fmt: skip
        handled = add_case(conn, city, status="handled", state="done", unit_id=unit,
                           deadline=now - timedelta(hours=1))  # fmt: skip
        ids = [late, late_in_progress, soon, later, handled]
        before = {i: case_row(conn, i) for i in ids}

    assert watch_deadlines() == {"warned": 1, "overdue": 2}
    assert watch_deadlines() == {"warned": 0, "overdue": 0}

    with city.engine.connect() as conn:
        rows = {i: case_row(conn, i) for i in ids}
        events = {i: case_events(conn, i) for i in ids}
    for case_id in (late, late_in_progress):
        assert rows[case_id]["overdue_at"] is not None
        assert rows[case_id]["warned_at"] is None
        assert rows[case_id]["status"] == before[case_id]["status"]
        [mark] = events[case_id]
        assert mark["action"] == "mark_overdue"
        assert mark["from_status"] == mark["to_status"] == before[case_id]["status"]
        assert (mark["actor_role"], mark["data"]["unit_id"]) == ("system", unit)
    assert rows[soon]["warned_at"] is not None
    assert rows[soon]["overdue_at"] is None
    assert [(e["action"], e["to_status"]) for e in events[soon]] == [
        ("warn_deadline", "dispatched")
    ]
    for case_id in (later, handled):
        assert rows[case_id] == before[case_id]
        assert events[case_id] == []


def test_an_extension_clears_the_overdue_mark(in_app: Flask, city: City) -> None:
    case_id = report(city.community)
    with transaction() as session:
        act(session, case_id, "file", "operator")
    assert dispatch_cases([case_id])["dispatched"] == 1
    with transaction() as session:
        act(session, case_id, "accept", "staff")
    with transaction() as session:
        act(session, case_id, "request_extension", "staff", reason="parts on order",
            extra_value="3", extra_unit="days")  # fmt: skip
    now = jobs.now_utc()
    with city.engine.begin() as conn:
        conn.execute(
            text("UPDATE cases SET deadline = :d WHERE id = :id"),
            {"d": now - timedelta(hours=1), "id": case_id},
        )
    assert watch_deadlines()["overdue"] == 1
    with city.engine.connect() as conn:
        assert case_row(conn, case_id)["overdue_at"] is not None

    with transaction() as session:
        act(session, case_id, "approve_extension", "dispatcher")

    with city.engine.connect() as conn:
        row = case_row(conn, case_id)
    assert (row["warned_at"], row["overdue_at"]) == (None, None)
    assert row["deadline"] == city.calendar.add_working_time(now - timedelta(hours=1), 3, "days")
    assert row["deadline"] > now + timedelta(hours=2)
    assert watch_deadlines() == {"warned": 0, "overdue": 0}
    with city.engine.connect() as conn:
        assert len(case_events(conn, case_id, "mark_overdue")) == 1


def test_hotspots_are_cells_and_communities_far_above_their_own_baseline(
    in_app: Flask, city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = jobs.now_utc()
    monkeypatch.setattr(jobs, "now_utc", lambda: now)  # both runs in the same minute
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(hours=1)
    with city.engine.begin() as conn:
        for where in (city.community, city.other):
            for _ in range(6):
                add_case(conn, city, where=where, status="reported", state="none",
                         filed_at=None, reported_at=now - timedelta(minutes=10))  # fmt: skip
        # 1,400 cases over the 4 weeks before: about 2.1 an hour, so 6 is not 3 times as many
        conn.execute(
            text("""
                INSERT INTO cases (source, status, category_id, location, cell_id,
                                   community_id, reported_at)
                SELECT 'operator', 'reported', :category_id, ST_PointOnSurface(g.geom), g.id,
                       g.community_id, :start - n * interval '27 days' / 1400
                FROM grid_cells g, generate_series(1, 1400) n WHERE g.id = :cell
            """),
            {"category_id": city.categories[GARBAGE], "start": start,
             "cell": city.other.cell_id},
        )  # fmt: skip

    assert find_hotspots() == {"cells": 1, "communities": 1}
    assert find_hotspots() == {"cells": 0, "communities": 0}

    with city.engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT cell_id, area_id, window_start, window_end, count, baseline
                    FROM hotspots ORDER BY id""")
        ).all()
    assert [tuple(r) for r in rows] == [
        (city.community.cell_id, None, start, end, 6, 0.0),
        (None, city.community.area_id, start, end, 6, 0.0),
    ]


# ---------------------------------------------------------------- the failed jobs page


def test_failed_jobs_page_shows_the_reason_and_retries_for_dispatchers_only(
    city_app: Flask, redis_conn: Redis
) -> None:
    queue = dispatch_queue(redis_conn)
    job = queue.enqueue("tests.dispatch.failing_jobs.boom", 4242, job_id="dispatch-test-boom")
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    failed = FailedJobRegistry(queue=queue)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert failed.get_job_ids() == [job.id]

    staff = browser(city_app, "staff")
    assert staff.get("/board/failed").status_code == 403
    assert staff.post(f"/board/failed/{job.id}/retry").status_code == 403
    assert failed.get_job_ids() == [job.id]

    dispatcher = browser(city_app, "dispatcher")
    page = dispatcher.get("/board/failed")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    row = re.search(rf'<tr data-job="{job.id}">(.*?)</tr>', html, re.S)
    assert row, html[:2000]
    assert "<code>RuntimeError: no route to unit</code>" in row.group(1)
    assert "<td>4242</td>" in row.group(1)
    assert "tests.dispatch.failing_jobs.boom" in row.group(1)
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', row.group(1))
    assert form_token, row.group(1)
    the_form = {"csrf_token": form_token.group(1)}  # the token the page's form carries

    assert dispatcher.post("/board/failed/no-such-job/retry", the_form).status_code == 404
    retried = dispatcher.post(f"/board/failed/{job.id}/retry", the_form)

    assert retried.status_code == 302
    assert retried.headers["Location"].endswith("/board/failed")
    assert failed.get_job_ids() == []
    assert queue.job_ids == [job.id]
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    after = dispatcher.get("/board/failed").get_data(as_text=True)
    assert f"Job {job.id} is queued again." in after
    assert f'data-job="{job.id}"' not in after


def test_the_dispatch_event_names_the_unit_the_rule_why_and_the_deadline(city: City) -> None:
    with city.engine.begin() as conn:
        case_id = add_case(conn, city, WATER_COVER, urgent=True)

    run_batch(city)

    with city.engine.connect() as conn:
        [dispatch] = case_events(conn, case_id)
    assert dispatch["data"] == {
        "unit": "DEPT-WATER",
        "unit_name": "Water department",
        "rule": city.water_rule_id,
        "why": f"rule {city.water_rule_id} (city-wide, priority 100)",
        "deadline": (START + timedelta(hours=1)).isoformat(),
    }
