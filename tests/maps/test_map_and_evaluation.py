"""Maps, evaluation, dashboard and open data on the demo city, against numbers built by hand.

The demo city and 15 cases with known statuses, deadlines, handling and closing times, rework
counts and urgency (in two communities, for two units) are committed once for the module in a
database of its own (the open-data export reads through its own connection, so its cases must
be committed). Each test runs in a transaction of its own that is rolled back; the app's
session is bound to it, so pages see what a test changes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from geoalchemy2.shape import from_shape, to_shape
from redis import Redis
from shapely.geometry import Point
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from cases import intake, lifecycle
from cases.intake import ReportInput
from cases.lifecycle import ActionInput, CaseContext
from cases.models import Case, CaseEvent, CaseSource, CaseStatus, Category, MajorClass
from gridmgmt import create_app
from gridmgmt.app import demo
from gridmgmt.kernel.auth import create_user
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import Role, Unit, User
from grids.models import Area
from grids.services import locate
from maps import aggregate, evaluation, views
from maps import services as stats
from maps.aggregate import STATUS_GROUPS, Filters, Tally, parse_filters, plan_rollup
from maps.evaluation import InspectorRow, Period
from maps.services import NOT_OPEN, PlaceStats
from tests.conftest import (
    ROOT,
    cached_database,
    clone_database,
    drop_database,
    fingerprint,
    template_lock,
)
from tests.support import Web, browser, rolled_back

COMMUNITY_A = "990100006046"  # its community unit is `staff`'s
COMMUNITY_B = "990100006054"
EMPTY_COMMUNITY = "990100006055"  # no case at all
TODAY = datetime.now(UTC).date()
BASE = datetime.combine(TODAY, time(), UTC)  # today 00:00 UTC: every case is before now
EVALUATED = Period(TODAY - timedelta(days=20), TODAY - timedelta(days=1))

# What the citizen gave with the one report made through the service: never published.
CONTACT = {
    "name": "Xu Meilan-7Q",
    "phone": "+1-213-555-0147",
    "email": "meilan.xu.7q@example.org",
}
DESCRIPTION = "Bags left behind the blue door of flat 7Q, the neighbour knows who did it"
REPORTER = "reporter-7q"


def at(days_ago: int, hour: float) -> datetime:
    """`hour` o'clock (UTC) `days_ago` days before today."""
    return BASE - timedelta(days=days_ago) + timedelta(hours=hour)


@dataclass(frozen=True)
class Spec:
    """A case to insert, with every time that matters (None: not reached)."""

    tag: str
    spot: str  # A1, A2 (two cells of community A) or B1
    category: str
    source: str
    status: str
    unit: str | None  # A: community A's unit, W: the water department
    reported: datetime
    dispatched: datetime | None = None
    deadline: datetime | None = None
    handled: datetime | None = None
    closed: datetime | None = None
    rework: int = 0
    urgent: bool = False
    reporter: str | None = None
    filed: bool = True


FUTURE = BASE + timedelta(days=2, hours=10)
SPECS = [
    # tag, cell, class, source, status, unit, reported, dispatched, deadline, handled, closed
    # Handled 2 h before its deadline, closed 2 h after: on time (the unit was on time).
    Spec("a_closed_on_time", "A1", "E0102", "citizen", "closed", "A", at(10, 9), at(10, 10),
         at(9, 10), at(9, 8), at(9, 12)),
    Spec("a_closed_late", "A1", "E0102", "inspector", "closed", "A", at(8, 9), at(8, 10),
         at(7, 10), at(6, 10), at(6, 12), rework=1, reporter="inspector"),
    Spec("a_closed_reworked", "A2", "E0108", "hotline", "closed", "A", at(6, 9), at(6, 10),
         at(3, 10), at(4, 10), at(4, 12), rework=2),
    Spec("a_overdue", "A2", "E0102", "citizen", "dispatched", "A", at(5, 9), at(5, 10),
         at(4, 10), urgent=True),
    Spec("a_in_progress", "A1", "E0102", "inspector", "in_progress", "A", at(1, 9), at(1, 10),
         FUTURE, reporter="inspector2"),
    Spec("a_suspended", "A1", "E0108", "citizen", "suspended", "A", at(12, 9), at(12, 10)),
    Spec("a_water_handled", "A1", "E0402", "citizen", "handled", "W", at(3, 9), at(3, 10),
         at(3, 14), at(3, 13), urgent=True),
    Spec("b_water_closed", "B1", "C0101", "open311", "closed", "W", at(15, 9), at(15, 10),
         at(15, 12), at(15, 11), at(14, 9), urgent=True),
    Spec("b_water_overdue", "B1", "E0402", "citizen", "in_progress", "W", at(2, 9), at(2, 10),
         at(2, 14)),
    Spec("b_reported", "B1", "E0102", "citizen", "reported", None, at(1, 20), filed=False),
    Spec("b_rejected", "B1", "E0102", "citizen", "rejected", None, at(4, 9), filed=False),
    Spec("a_old_closed", "A1", "E0102", "citizen", "closed", "A", at(40, 9), at(40, 10),
         at(39, 10), at(39, 9), at(39, 12)),
    Spec("b_water_late", "B1", "E0402", "hotline", "closed", "W", at(11, 9), at(11, 10),
         at(11, 14), at(10, 10), at(10, 12)),
    Spec("a_invalid", "A2", "E0102", "inspector", "invalid", None, at(7, 9),
         reporter="inspector", filed=False),
]  # fmt: skip
REPORTED_BY_SERVICE = "b_citizen_report"  # reported today through cases.intake.report_case
ALL_TAGS = {s.tag for s in SPECS} | {REPORTED_BY_SERVICE}
IN_DEFAULT_WINDOW = ALL_TAGS - {"a_old_closed"}
# (action, days ago, hour, actor, case): returns and on-site checks, for evaluation.
EVENTS = [
    ("return", 5, 11.0, "staff", "a_overdue"),
    ("assign_check", 9, 9.0, "operator", "a_closed_on_time"),
    ("check_pass", 9, 11.0, "inspector", "a_closed_on_time"),  # 2 h after: on time
    ("assign_check", 7, 20.0, "operator", "a_closed_late"),
    ("check_fail", 7, 22.0, "inspector2", "a_closed_late"),  # 2 h: on time
    ("assign_check", 6, 11.0, "operator", "a_closed_late"),
    ("check_pass", 5, 12.0, "inspector", "a_closed_late"),  # 25 h: late
    ("assign_check", 4, 11.0, "operator", "a_closed_reworked"),
    ("check_pass", 4, 11.5, "inspector2", "a_closed_reworked"),  # 30 min: on time
]


# ---------------------------------------------------------------- the city and its cases


@dataclass(frozen=True)
class City:
    """The module's app and the ids tests need."""

    app: Flask
    url: URL
    cases: dict[str, int]  # tag -> case id
    numbers: dict[str, str]  # tag -> case number
    areas: dict[str, int]  # code -> area id
    unit_a: str  # "code name" of community A's unit, as the evaluation names it
    unit_w: str
    categories: dict[str, int]  # code -> id
    majors: dict[tuple[str, str], int]  # (kind, code) -> id
    active_units: int


def make_app(url: URL, redis_url: str, **config: Any) -> Flask:
    """An app on the module's database."""
    return create_app(
        {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "maps-test-secret",
            **config,
        }
    )


def spots(session: Session) -> dict[str, tuple[float, float]]:
    """A point inside two cells of community A and one cell of community B."""
    rows = session.execute(
        text("""
            SELECT a.code, g.code, ST_X(p), ST_Y(p)
            FROM grid_cells g JOIN areas a ON a.id = g.community_id,
            ST_PointOnSurface(g.geom) AS p
            WHERE a.code IN (:a, :b) ORDER BY a.code, g.code
        """),
        {"a": COMMUNITY_A, "b": COMMUNITY_B},
    ).all()
    a = [(float(x), float(y)) for code, _, x, y in rows if code == COMMUNITY_A]
    b = [(float(x), float(y)) for code, _, x, y in rows if code == COMMUNITY_B]
    return {"A1": a[0], "A2": a[len(a) // 2], "B1": b[len(b) // 3]}


def seed_cases(session: Session, photo_root: Path) -> dict[str, int]:
    """Insert SPECS and EVENTS; report one case through the service. Returns tag -> id."""
    users = {u.username: u for u in session.scalars(select(User))}
    units = dict(session.execute(select(Unit.code, Unit.id)).tuples().all())
    unit_ids = {"A": units[COMMUNITY_A], "W": units["DEPT-WATER"], None: None}
    categories = dict(session.execute(select(Category.code, Category.id)).tuples().all())
    points = spots(session)
    ids: dict[str, int] = {}
    for spec in SPECS:
        lon, lat = points[spec.spot]
        where = locate(session, lon, lat)
        case = Case(
            source=spec.source,
            status=spec.status,
            category_id=categories[spec.category],
            urgent=spec.urgent,
            description=f"case {spec.tag}",
            location=from_shape(Point(lon, lat), srid=4326),
            cell_id=where.cell_id,
            community_id=where.community_id,
            unit_id=unit_ids[spec.unit],
            reporter_id=users[spec.reporter].id if spec.reporter else None,
            deadline=spec.deadline,
            rework_count=spec.rework,
            reported_at=spec.reported,
            filed_at=spec.reported + timedelta(minutes=30) if spec.filed else None,
            dispatched_at=spec.dispatched,
            handled_at=spec.handled,
            closed_at=spec.closed,
        )
        session.add(case)
        session.flush()
        ids[spec.tag] = case.id
    for action, days_ago, hour, actor, tag in EVENTS:
        user = users[actor]
        session.add(
            CaseEvent(
                case_id=ids[tag],
                action=action,
                from_status="in_progress",
                to_status="returned" if action == "return" else "checking",
                actor_id=user.id,
                actor_role=user.role,
                created_at=at(days_ago, hour),
            )
        )
    lon, lat = points["B1"]
    reported = intake.report_case(
        session,
        ReportInput("E0102", lon, lat, description=DESCRIPTION, contact=CONTACT),
        users[REPORTER],
        CaseSource.CITIZEN,
        photo_root,
    )
    ids[REPORTED_BY_SERVICE] = reported.case.id
    session.flush()
    return ids


# The seeded city is kept between runs while these files (and the migrations) stay the same.
CITY_SOURCES = [  # what seeds the city: the code and data of the demo's packages
    path
    for package in ("gridmgmt", "grids", "cases", "dispatch")
    for path in sorted((ROOT / package).rglob("*"))
    if path.suffix in (".py", ".json", ".geojson")
]
EXTRA_USERS = [("inspector2", Role.INSPECTOR, "Ana"), (REPORTER, Role.CITIZEN, "Meilan 7Q")]


def build_city(url: URL) -> None:
    """The demo city and two more users (hashing ten passwords is most of its 3 s)."""
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        demo.seed_demo(session, say=lambda _line: None)
        for username, role, display in EXTRA_USERS:
            create_user(session, username, demo.DEMO_PASSWORD, role, None, display)
    engine.dispose()


@pytest.fixture(scope="module")
def city(
    request: pytest.FixtureRequest,
    database_url: URL,  # the migrated template exists once this does
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[City]:
    seeded = cached_database(
        "gridmgmt_test_maps_city", fingerprint(*CITY_SOURCES, repr(EXTRA_USERS)), build_city
    )
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"gridmgmt_test_maps_{os.getpid()}_{worker}"
    with template_lock():
        assert seeded.database is not None
        url = clone_database(name, seeded.database)
    app = make_app(url, redis_url, PHOTO_DIR=str(tmp_path_factory.mktemp("photos")))
    db.session.remove()
    try:
        with app.app_context():
            session = db.session()
            ids = seed_cases(session, Path(app.config["PHOTO_DIR"]))
            # As the scheduler does: the rollups count the events of past days seeded here (a
            # case's own events are made at their moment, after the last refresh).
            evaluation.refresh_rollup(session)
            numbers = dict(session.execute(select(Case.id, Case.number)).tuples().all())
            units = {u.code: f"{u.code} {u.name}" for u in session.scalars(select(Unit))}
            areas = dict(session.execute(select(Area.code, Area.id)).tuples().all())
            categories = dict(session.execute(select(Category.code, Category.id)).tuples().all())
            majors = {(m.kind, m.code): m.id for m in session.scalars(select(MajorClass))}
            session.commit()
            db.session.remove()
        yield City(
            app=app,
            url=url,
            cases=ids,
            numbers={tag: numbers[i] for tag, i in ids.items()},
            areas=areas,
            unit_a=units[COMMUNITY_A],
            unit_w=units["DEPT-WATER"],
            categories=categories,
            majors=majors,
            active_units=len(units),
        )
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        drop_database(name)


@pytest.fixture(scope="module")
def logins(city: City) -> dict[str, Web]:
    """One signed-in browser per role, made once (each sign-in hashes a password: 0.3 s)."""
    with city.app.app_context():
        return {
            name: browser(city.app, name) for name in ("leader", "staff", "operator", "dispatcher")
        }


@pytest.fixture(autouse=True)
def city_context(city: City) -> Iterator[None]:
    """A fresh app context of the module's app for every test."""
    with city.app.app_context():
        yield


@pytest.fixture
def session(city: City, city_context: None) -> Iterator[Session]:
    """The app's session in a transaction rolled back after the test (commits: savepoints)."""
    with rolled_back():
        yield db.session()


@pytest.fixture
def ctx(session: Session, tmp_path: Path) -> CaseContext:
    return CaseContext(calendar=get_calendar(session, "us_la"), photo_root=tmp_path)


def user(session: Session, username: str) -> User:
    found = session.scalar(select(User).where(User.username == username))
    assert found is not None
    return found


# ---------------------------------------------------------------- the same numbers in Python


@dataclass(frozen=True)
class Row:
    """A case as the recomputation sees it."""

    id: int
    cell_id: int | None
    community_id: int | None
    category_id: int
    major_id: int
    kind: str
    status: str
    source: str
    reported_at: datetime
    deadline: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None


def load_rows(session: Session) -> list[Row]:
    rows = session.execute(
        select(
            Case.id,
            Case.cell_id,
            Case.community_id,
            Case.category_id,
            Category.major_id,
            MajorClass.kind,
            Case.status,
            Case.source,
            Case.reported_at,
            Case.deadline,
            Case.handled_at,
            Case.closed_at,
        )
        .join(Category, Category.id == Case.category_id)
        .join(MajorClass, MajorClass.id == Category.major_id)
    )
    return [Row(*r) for r in rows]


def communities_under(session: Session, area_id: int) -> set[int]:
    """The communities an area covers, walking the parent links in Python."""
    areas = session.execute(select(Area.id, Area.parent_id, Area.level)).all()
    parents = {a: p for a, p, _ in areas}
    found: set[int] = set()
    for area, _, level in areas:
        node: int | None = area
        while node is not None and node != area_id:
            node = parents[node]
        if node == area_id and level == "community":
            found.add(area)
    return found


def selected(session: Session, f: Filters, now: datetime) -> list[Row]:
    """The cases the filters describe, chosen in Python."""
    start = datetime.combine(f.start, time(), UTC)
    end = datetime.combine(f.end + timedelta(days=1), time(), UTC)
    under = communities_under(session, f.area_id) if f.area_id is not None else set()

    def keep(r: Row) -> bool:
        if not start <= r.reported_at < end:
            return False
        if f.category_id is not None and r.category_id != f.category_id:
            return False
        if f.major_id is not None and r.major_id != f.major_id:
            return False
        if f.kind is not None and r.kind != f.kind:
            return False
        if f.status == "overdue":
            if not (r.status in ("dispatched", "in_progress") and r.deadline and r.deadline < now):
                return False
        elif f.status in STATUS_GROUPS:
            if r.status not in STATUS_GROUPS[f.status]:
                return False
        elif f.status is not None and r.status != f.status:
            return False
        if f.source is not None and r.source != f.source:
            return False
        return f.area_id is None or r.community_id in under

    return [r for r in load_rows(session) if keep(r)]


def measures(rows: list[Row], now: datetime) -> tuple[int, int, int, int, int]:
    """(cases, open, overdue, due, on time) as the map defines them."""
    is_open = [r.status not in NOT_OPEN for r in rows]
    overdue = [
        r.status in ("dispatched", "in_progress") and r.deadline is not None and r.deadline < now
        for r in rows
    ]
    due = [
        r.deadline is not None and (r.closed_at is not None or (r.deadline < now and o))
        for r, o in zip(rows, is_open, strict=True)
    ]
    on_time = [
        r.closed_at is not None
        and r.deadline is not None
        and (r.handled_at or r.closed_at) <= r.deadline
        for r in rows
    ]
    return len(rows), sum(is_open), sum(overdue), sum(due), sum(on_time)


def by_key(rows: list[Row], key: Callable[[Row], int | None]) -> dict[int | None, list[Row]]:
    groups: dict[int | None, list[Row]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def values(place: PlaceStats) -> tuple[int, int, int, int, int]:
    return place.n, place.open, place.overdue, place.due, place.on_time


def tags_of(city: City, rows: list[Row]) -> set[str]:
    names = {i: tag for tag, i in city.cases.items()}
    return {names[r.id] for r in rows}


# ---------------------------------------------------------------- map aggregation


def filter_cases() -> list[tuple[str, dict[str, str], set[str]]]:
    """(name, query arguments with placeholders, the cases it selects)."""
    open_ = {
        "a_overdue",
        "a_in_progress",
        "a_suspended",
        "a_water_handled",
        "b_water_overdue",
        "b_reported",
        REPORTED_BY_SERVICE,
    }
    closed = {"a_closed_on_time", "a_closed_late", "a_closed_reworked", "b_water_closed"}
    closed |= {"b_water_late"}
    in_a = {
        "a_closed_on_time",
        "a_closed_late",
        "a_closed_reworked",
        "a_overdue",
        "a_in_progress",
        "a_suspended",
        "a_water_handled",
        "a_invalid",
    }
    event_01 = {"a_closed_on_time", "a_closed_late", "a_closed_reworked", "a_overdue"}
    event_01 |= {"a_in_progress", "a_suspended", "a_invalid", "b_reported", "b_rejected"}
    event_01 |= {REPORTED_BY_SERVICE}
    return [
        ("default: last 30 days", {}, IN_DEFAULT_WINDOW),
        ("longer period", {"start": "-45"}, ALL_TAGS),
        (
            "period",
            {"start": "-9", "end": "-5"},
            {"a_closed_late", "a_closed_reworked", "a_overdue", "a_invalid"},
        ),
        ("category", {"category": "E0402"}, {"a_water_handled", "b_water_overdue", "b_water_late"}),
        ("major class", {"major": "event:01"}, event_01),
        ("component major class", {"major": "component:01"}, {"b_water_closed"}),
        ("kind component", {"kind": "component"}, {"b_water_closed"}),
        ("kind event", {"kind": "event"}, IN_DEFAULT_WINDOW - {"b_water_closed"}),
        ("status open", {"status": "open"}, open_),
        ("status closed", {"status": "closed"}, closed),
        ("status overdue", {"status": "overdue"}, {"a_overdue", "b_water_overdue"}),
        ("one status", {"status": "rejected"}, {"b_rejected"}),
        ("source", {"source": "hotline"}, {"a_closed_reworked", "b_water_late"}),
        ("community", {"area": COMMUNITY_A}, in_a),
        ("street", {"area": demo.STREET_CODE}, IN_DEFAULT_WINDOW),
        ("district", {"area": demo.DISTRICT_CODE}, IN_DEFAULT_WINDOW),
        ("empty community", {"area": EMPTY_COMMUNITY}, set()),
        (
            "community and status",
            {"area": COMMUNITY_B, "status": "closed"},
            {"b_water_closed", "b_water_late"},
        ),
    ]


def query_args(city: City, args: dict[str, str]) -> dict[str, str]:
    """Resolve placeholders: day offsets, category and area codes, (kind, major code)."""
    resolved = dict(args)
    for name in ("start", "end"):
        if name in args:
            resolved[name] = (TODAY + timedelta(days=int(args[name]))).isoformat()
    if "category" in args:
        resolved["category"] = str(city.categories[args["category"]])
    if "area" in args:
        resolved["area"] = str(city.areas[args["area"]])
    if "major" in args:
        kind, code = args["major"].split(":")
        resolved["major"] = str(city.majors[(kind, code)])
    return resolved


def filters(city: City, args: dict[str, str]) -> Filters:
    return parse_filters(
        query_args(city, args),
        TODAY,
        [s.value for s in CaseStatus],
        [s.value for s in CaseSource],
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [(args, expected) for _, args, expected in filter_cases()],
    ids=[name for name, _, _ in filter_cases()],
)
def test_stats_match_a_python_recomputation(
    city: City, session: Session, args: dict[str, str], expected: set[str]
) -> None:
    f = filters(city, args)
    now = datetime.now(UTC)

    cells = stats.cell_stats(session, f)
    communities = stats.community_stats(stats.territory(session), cells)
    rows = selected(session, f, now)

    assert tags_of(city, rows) == expected  # the filter does what it says
    assert sum(c.n for c in communities) == sum(c.n for c in cells) == len(expected)
    per_community = by_key(rows, lambda r: r.community_id)
    assert {c.id: values(c) for c in communities} == {
        area_id: measures(per_community.get(area_id, []), now)
        for area_id in (city.areas[code] for code in city.areas if len(code) == 12)
    }
    assert [c.code for c in communities] == sorted(code for code in city.areas if len(code) == 12)
    per_cell = by_key(rows, lambda r: r.cell_id)
    assert {c.id: values(c) for c in cells} == {
        cell: measures(group, now) for cell, group in per_cell.items()
    }


def test_default_window_counts_by_community(city: City, session: Session) -> None:
    """The recomputation's numbers, written out: what a supervisor reads in the tooltips."""
    f = filters(city, {})
    communities = stats.community_stats(stats.territory(session), stats.cell_stats(session, f))
    found = {c.code: values(c) for c in communities}

    # A: 8 cases; open: overdue, in progress, suspended, handled; overdue: 1 (dispatched);
    # due: the 3 closed + the 2 open past their deadline (dispatched, handled); on time: the
    # on-time and the reworked ones (handled by their deadline).
    assert found[COMMUNITY_A] == (8, 4, 1, 5, 2)
    # B: 6 cases; open: in progress, 2 reported; due: 2 closed + the overdue; on time: 1.
    assert found[COMMUNITY_B] == (6, 3, 1, 3, 1)
    assert found[EMPTY_COMMUNITY] == (0, 0, 0, 0, 0)
    on_time_rate = {c.code: c.on_time_rate for c in communities}
    assert on_time_rate[COMMUNITY_A] == 0.4
    assert on_time_rate[EMPTY_COMMUNITY] is None


def test_cells_have_their_centre_inside_their_community(city: City, session: Session) -> None:
    cells = stats.cell_stats(session, filters(city, {}))

    assert len(cells) == 3  # A1, A2, B1
    for cell in cells:
        inside = session.scalar(
            text(
                "SELECT ST_Contains(geom, ST_SetSRID(ST_Point(:x, :y), 4326)) FROM grid_cells"
                " WHERE id = :id"
            ),
            {"x": cell.lon, "y": cell.lat, "id": cell.id},
        )
        assert inside, cell


def test_raw_points_only_when_few(city: City, session: Session) -> None:
    f = filters(city, {})
    cases = session.scalars(select(Case).where(Case.id.in_(city.cases.values()))).all()
    positions = Counter(
        (to_shape(c.location).x, to_shape(c.location).y)
        for c in cases
        if c.id != city.cases["a_old_closed"]
    )

    assert len(IN_DEFAULT_WINDOW) == 14
    exact = stats.raw_points(session, f, limit=14)
    assert exact is not None and Counter(exact) == positions
    assert stats.raw_points(session, f, limit=13) is None
    assert stats.raw_points(session, f, limit=2) is None
    narrow = filters(city, {"status": "overdue"})
    assert stats.raw_points(session, narrow, limit=2) is not None
    assert len(stats.raw_points(session, narrow, limit=2) or []) == 2


def test_overdue_cases_lists_the_most_overdue_first(city: City, session: Session) -> None:
    markers = stats.overdue_cases(session, filters(city, {}))

    assert [m.number for m in markers] == [
        city.numbers["a_overdue"],  # 4 days past its deadline
        city.numbers["b_water_overdue"],  # 2 days
    ]
    assert markers[0].deadline == at(4, 10)
    assert markers[1].category == "Burst water main"
    short = stats.overdue_cases(session, filters(city, {}), limit=1)
    assert [m.number for m in short] == [city.numbers["a_overdue"]]
    assert stats.overdue_cases(session, filters(city, {"source": "hotline"})) == []


def test_generation_moves_when_a_case_changes(
    city: City, session: Session, ctx: CaseContext
) -> None:
    before = stats.cases_generation(session)
    lifecycle.act(
        session,
        city.cases["b_reported"],
        "verify",
        user(session, "inspector"),
        ActionInput(),
        ctx,
    )

    assert stats.cases_generation(session) > before


def test_territory_is_simplified_once_per_change(city: City, session: Session) -> None:
    """The communities' outlines are kept until a community changes: a page after a change
    of the territory draws the new one, a page before any change reads no geometry."""
    first = stats.territory(session)
    code = next(code for code in city.areas if len(code) == 12)

    assert sorted(first.shapes) == sorted(c for c in city.areas if len(c) == 12)
    assert first.shapes[code]["type"] in ("Polygon", "MultiPolygon")
    assert [p[1] for p in first.places] == sorted(first.shapes)
    sql = read_relations(session, lambda: stats.territory(session))
    assert "ST_Simplify" not in sql and stats.territory(session) is first

    session.execute(
        text("UPDATE areas SET name = 'Renamed', geom = ST_Multi(ST_Buffer(geom, 0.001))"
             " WHERE code = :code"),
        {"code": code},
    )  # fmt: skip
    changed = stats.territory(session)

    assert changed is not first
    assert dict((p[1], p[2]) for p in changed.places)[code] == "Renamed"
    assert changed.shapes[code] != first.shapes[code]
    assert stats.territory(session) is changed


def test_overdue_markers_are_found_in_their_index(city: City, session: Session) -> None:
    """The most overdue are read from the running cases' index of deadlines alone: it holds
    what picks a period's and what a marker shows, and the query names the deadline order."""
    sql = read_relations(session, lambda: stats.overdue_cases(session, filters(city, {})))

    assert "ORDER BY c.deadline, c.id LIMIT" in sql
    plan = "\n".join(
        session.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_cases_running_deadline'")
        ).scalars()
    )
    assert "INCLUDE (reported_at, id, number, category_id, location)" in plan
    assert "dispatched" in plan


# ---------------------------------------------------------------- evaluation


UNIT_A = Tally(
    due=5,  # on time, late, reworked, overdue (deadlines in the period) + the suspended one
    suspended=1,
    closed=3,
    closed_on_time=2,  # handled by the deadline (one of them closed after it)
    handled=3,
    reworked=2,
    rework_count=3,
    overdue_open=1,
    returns=1,
    handling_hours=22.0 + 48.0 + 48.0,
)
UNIT_W = Tally(
    due=4,
    suspended=0,
    closed=2,
    closed_on_time=1,
    handled=3,
    reworked=0,
    rework_count=0,
    overdue_open=1,
    returns=0,
    handling_hours=3.0 + 1.0 + 24.0,
)


def test_by_unit(city: City, session: Session) -> None:
    rows = evaluation.by_unit(session, EVALUATED, datetime.now(UTC))
    tallies = dict(rows)

    assert len(rows) == city.active_units
    assert tallies[city.unit_a] == UNIT_A
    assert tallies[city.unit_w] == UNIT_W
    assert {name for name, t in rows if t != Tally()} == {city.unit_a, city.unit_w}
    assert UNIT_A.closure_rate == 0.75 and UNIT_A.on_time_rate == 0.5
    assert UNIT_A.rework_rate == 2 / 3 and UNIT_A.score() == 47.0
    assert UNIT_W.closure_rate == 0.5 and UNIT_W.on_time_rate == 0.25
    assert UNIT_W.average_handling_hours == 28 / 3


def test_by_unit_urgent_only(city: City, session: Session) -> None:
    tallies = dict(evaluation.by_unit(session, EVALUATED, datetime.now(UTC), urgent=True))

    assert tallies[city.unit_a] == Tally(due=1, overdue_open=1, returns=1)
    assert tallies[city.unit_w] == Tally(
        due=2, closed=1, closed_on_time=1, handled=2, handling_hours=4.0
    )


def test_by_unit_period_bounds(city: City, session: Session) -> None:
    """An earlier period: the old case and the suspended one (dispatched 12 days ago) for A,
    the closed water case of 15 days ago for W; cases dispatched after it are not its own."""
    period = Period(TODAY - timedelta(days=39), TODAY - timedelta(days=12))
    tallies = dict(evaluation.by_unit(session, period, datetime.now(UTC)))

    assert tallies[city.unit_a] == Tally(
        due=2, suspended=1, closed=1, closed_on_time=1, handled=1, handling_hours=23.0
    )
    assert tallies[city.unit_w] == Tally(
        due=1, closed=1, closed_on_time=1, handled=1, handling_hours=1.0
    )
    assert tallies[city.unit_a].closure_rate == 1.0


COMMUNITY_A_TALLY = Tally(
    due=6,
    suspended=1,
    closed=3,
    closed_on_time=2,
    handled=4,
    reworked=2,
    rework_count=3,
    overdue_open=1,
    returns=1,
    handling_hours=121.0,
)
COMMUNITY_B_TALLY = Tally(
    due=3, closed=2, closed_on_time=1, handled=2, overdue_open=1, handling_hours=25.0
)
WHOLE_CITY = Tally(
    due=9,
    suspended=1,
    closed=5,
    closed_on_time=3,
    handled=6,
    reworked=2,
    rework_count=3,
    overdue_open=2,
    returns=1,
    handling_hours=146.0,
)


def test_by_area(city: City, session: Session) -> None:
    now = datetime.now(UTC)
    areas = evaluation.by_area(session, EVALUATED, now)
    communities, streets, districts = areas["community"], areas["street"], areas["district"]
    names = {code: name for code, name in session.execute(select(Area.code, Area.name))}

    assert len(communities) == 8
    found = dict(communities)
    assert found[f"{COMMUNITY_A} {names[COMMUNITY_A]}"] == COMMUNITY_A_TALLY
    assert found[f"{COMMUNITY_B} {names[COMMUNITY_B]}"] == COMMUNITY_B_TALLY
    assert sum(1 for t in found.values() if t != Tally()) == 2
    assert streets == [(f"{demo.STREET_CODE} Central 2", WHOLE_CITY)]
    assert districts == [(f"{demo.DISTRICT_CODE} Los Angeles", WHOLE_CITY)]
    assert evaluation.add(COMMUNITY_A_TALLY, COMMUNITY_B_TALLY) == WHOLE_CITY


def test_by_area_urgent_only(city: City, session: Session) -> None:
    now = datetime.now(UTC)
    streets = evaluation.by_area(session, EVALUATED, now, urgent=True)["street"]

    # a_overdue and a_water_handled in A, b_water_closed in B.
    assert streets == [
        (
            f"{demo.STREET_CODE} Central 2",
            Tally(
                due=3,
                closed=1,
                closed_on_time=1,
                handled=2,
                overdue_open=1,
                returns=1,
                handling_hours=4.0,
            ),
        )
    ]


def test_by_inspector(city: City, session: Session) -> None:
    rows = evaluation.by_inspector(session, EVALUATED)

    assert rows == [
        # a_closed_late (filed) and a_invalid; checks: on time once, 25 h once.
        InspectorRow("inspector", reports=2, valid=1, checks=2, checks_on_time=1),
        # a_in_progress; two checks within 24 h of their assignment.
        InspectorRow("Ana", reports=1, valid=1, checks=2, checks_on_time=2),
    ]
    assert rows[0].valid_rate == 0.5 and rows[1].checks_on_time_rate == 1.0
    strict = evaluation.by_inspector(session, EVALUATED, check_hours=1.0)
    assert [(r.checks, r.checks_on_time) for r in strict] == [(2, 0), (2, 1)]


def test_trend_queries(city: City, session: Session) -> None:
    period = Period(TODAY - timedelta(days=89), TODAY)
    per_day = evaluation.cases_per_day(session, period)
    weekly = dict(evaluation.on_time_per_week(session, period))

    assert sum(d.count for d in per_day) == len(ALL_TAGS)
    water = {(d.day, d.count) for d in per_day if d.major == "component Public utilities"}
    assert water == {((BASE - timedelta(days=15)).date(), 1)}
    due = [s for s in SPECS if s.unit and s.deadline and s.deadline < BASE]
    on_time = [s for s in due if s.closed and (s.handled or s.closed) <= (s.deadline or BASE)]
    assert len(due) == 9 and len(on_time) == 4
    for week, rate in weekly.items():
        in_week = [s for s in due if s.deadline and week <= s.deadline.date() < week + timedelta(7)]
        good = [s for s in in_week if s in on_time]
        assert rate == len(good) / len(in_week), week


# ---------------------------------------------------------------- the rollups


def read_relations(session: Session, run: Callable[[], object]) -> str:
    """The SQL `run` sends on the session's connection, all of it as one text."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return "\n".join(sent)


ROLLED_PERIODS = {"month": {}, "45 days": {"start": "-45"}, "a year": {"start": "-364"}}


@pytest.mark.parametrize("days_kept", [stats.MAP_DAYS_KEPT, 12])
@pytest.mark.parametrize("period", ROLLED_PERIODS, ids=list(ROLLED_PERIODS))
@pytest.mark.parametrize("area", [None, COMMUNITY_A, demo.STREET_CODE, EMPTY_COMMUNITY], ids=str)
def test_map_from_the_rollups_counts_what_the_cases_say(
    city: City,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    period: str,
    area: str | None,
    days_kept: int,
) -> None:
    """Refreshed, the rollups give every cell the live counts: whole months from the monthly
    one, kept days from the daily one, older edges and today live (fewer days kept: more
    edges live), open and overdue cases always live."""
    monkeypatch.setattr(stats, "MAP_DAYS_KEPT", days_kept)
    evaluation.refresh_rollup(session)
    args = {**ROLLED_PERIODS[period], **({"area": area} if area else {})}
    f = filters(city, args)
    now = datetime.now(UTC)

    cells: list[PlaceStats] = []
    sql = read_relations(session, lambda: cells.extend(stats.cell_stats(session, f)))
    rows = selected(session, f, now)

    assert "map_cell_sums" in sql or "map_cell_months" in sql
    per_cell = by_key(rows, lambda r: r.cell_id)
    assert {c.id: values(c) for c in cells} == {
        cell: measures(group, now) for cell, group in per_cell.items()
    }
    if area is None and period != "month":
        assert sum(c.n for c in cells) == len(ALL_TAGS)


@pytest.mark.parametrize("days_kept", [stats.MAP_DAYS_KEPT, 0])
def test_map_rollups_take_the_days_outside_the_period_off_a_month(
    city: City, session: Session, monkeypatch: pytest.MonkeyPatch, days_kept: int
) -> None:
    """A month read whole less the days before the period (from the daily rollup, or live
    when it keeps none): the counts are the period's, whatever cases those days hold, open
    or closed (an open case on a day taken off is neither counted nor taken off twice)."""
    monkeypatch.setattr(stats, "MAP_DAYS_KEPT", days_kept)
    # Take a month whole whenever the period holds some of it, however few of its days.
    monkeypatch.setattr(aggregate, "MONTH_ROW_COST", -1000)
    evaluation.refresh_rollup(session)
    now = datetime.now(UTC)
    days = sorted(
        {r.reported_at.date() for r in selected(session, filters(city, {"start": "-400"}), now)}
    )
    subtracted = 0
    for day in days:
        if day >= TODAY:
            continue
        f = filters(city, {"start": str((day - TODAY).days + 1)})
        plan = plan_rollup(f.start, f.end, TODAY, days_kept)
        subtracted += any(a <= day < b for a, b in plan.less_days + plan.less_live)
        rows = by_key(selected(session, f, now), lambda r: r.cell_id)

        assert {c.id: values(c) for c in stats.cell_stats(session, f)} == {
            cell: measures(group, now) for cell, group in rows.items()
        }, (day, plan)
    assert subtracted  # some period took a day holding cases off its month


def test_map_rollups_follow_a_working_city(city: City, session: Session) -> None:
    """What a case's status or the clock changes is never rolled up: a case past its deadline
    or closed after the refresh shows at once (a closing's due and on-time counts at the next
    refresh, as the evaluation's)."""
    evaluation.refresh_rollup(session)
    f = filters(city, {"start": "-45"})
    case_id = city.cases["a_in_progress"]

    def counts(fields: slice = slice(None)) -> tuple[dict[int, tuple[int, ...]], ...]:
        now = datetime.now(UTC)
        rows = by_key(selected(session, f, now), lambda r: r.cell_id)
        return (
            {c.id: values(c)[fields] for c in stats.cell_stats(session, f)},
            {cell: measures(group, now)[fields] for cell, group in rows.items()},
        )

    past = datetime.now(UTC) - timedelta(minutes=1)
    changes = [
        ("UPDATE cases SET status = 'dispatched', deadline = :past WHERE id = :id", slice(None)),
        ("UPDATE cases SET status = 'closed', closed_at = :past WHERE id = :id", slice(0, 3)),
    ]
    for change, fields in changes:
        before = counts(fields)[0]
        session.execute(text(change), {"past": past, "id": case_id})
        found, expected = counts(fields)
        assert found == expected != before, change
    evaluation.refresh_rollup(session)
    found, expected = counts()
    assert found == expected


@pytest.mark.parametrize(
    "period",
    [EVALUATED, Period(TODAY - timedelta(days=364), TODAY), Period(TODAY, TODAY)],
    ids=["evaluated", "a year", "today"],
)
def test_evaluation_and_trends_from_the_rollups_are_the_live_counts(
    city: City, session: Session, period: Period
) -> None:
    now = datetime.now(UTC)

    def everything() -> tuple[object, ...]:
        cube = evaluation.tally_cube(session, period, now)
        return (
            evaluation.by_unit(session, period, now, cube=cube),
            evaluation.by_unit(session, period, now, urgent=True, cube=cube),
            evaluation.by_area(session, period, now, cube=cube),
            evaluation.by_area(session, period, now, urgent=False),
            evaluation.cases_per_day(session, period),
            evaluation.on_time_per_week(session, period),
            evaluation.due_per_week(session, period),
            evaluation.rates_per_week(session, period),
        )

    session.execute(text("DELETE FROM rollup_state"))
    live = everything()
    evaluation.refresh_rollup(session)
    sql = read_relations(session, everything)

    assert everything() == live
    if period.start < TODAY:
        assert "case_days" in sql and "evaluation_days" in sql
    assert evaluation.by_unit(session, period, now) == live[0]  # the cube counted on its own


def test_the_citys_day_totals_are_the_sums_of_the_daily_rollups(
    city: City, session: Session
) -> None:
    """Migration 0034: the dashboard's sums per day follow every refresh of the daily rows."""
    evaluation.refresh_rollup(session)
    session.execute(
        text("UPDATE cases SET deadline = deadline - interval '3 days', closed_at = now()"
             " WHERE id = :id"), {"id": city.cases["a_in_progress"]}
    )  # fmt: skip
    evaluation.refresh_rollup(session)
    for totals, daily, columns in (
        ("evaluation_day_totals", "evaluation_days", "due, closed, closed_on_time, handled"),
        ("rate_day_totals", "rate_days", "dispatches, responded, closings, returns"),
    ):
        sums = ", ".join(f"sum({c})::bigint" for c in columns.split(", "))
        kept = session.execute(text(f"SELECT day, {columns} FROM {totals} ORDER BY day")).all()
        summed = session.execute(
            text(f"SELECT day, {sums} FROM {daily} GROUP BY day ORDER BY day")
        ).all()
        assert kept == summed and kept, totals


def test_the_units_tables_share_one_count(city: City, session: Session) -> None:
    """The evaluation page counts the period once for its units, urgent and area tables."""
    sql = read_relations(session, lambda: views.evaluation_tables(EVALUATED))

    assert sql.count("FROM rate_months r") == 1  # the three rates and the returns
    assert sql.count("GROUP BY unit_id, community_id, urgent") == 1


# ---------------------------------------------------------------- pages


@pytest.fixture
def leader(logins: dict[str, Web], session: Session) -> Web:
    return logins["leader"]


URL_PATTERN = re.compile(r"https?://[^\s\"'<>]*")
PROTOCOL_RELATIVE = re.compile(r"""(?:src|href)\s*=\s*["']//|url\(\s*["']?//""")
ASSET_PATTERN = re.compile(r'<(?:script[^>]*\ssrc|link[^>]*\shref)="([^"]+)"')
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")#]+)['\"]?\s*\)")
HEAT_DATA = re.compile(r"L\.heatLayer\(\s*(\[.*?\]),\s*\{", re.S)


@pytest.mark.parametrize("query", ["endpoint=x", "_method=POST", "_external=1&status=open"])
def test_map_page_takes_any_query_string(city: City, leader: Web, query: str) -> None:
    page = leader.get(f"/maps?{query}")

    assert page.status_code == 200
    assert f'src="/maps/frame?{query.replace("&", "&amp;")}"' in page.get_data(as_text=True)


def test_map_page_has_the_filter_form(city: City, leader: Web) -> None:
    page = leader.get(f"/maps?status=open&area={city.areas[COMMUNITY_A]}")
    html = page.get_data(as_text=True)

    assert page.status_code == 200
    assert '<form method="get" class="filters' in html
    for name in ("start", "end", "kind", "major", "category", "status", "source", "area"):
        assert f'name="{name}"' in html, name
    assert 'name="measure"' in html
    assert '<option value="open" selected>' in html
    assert f'<option value="{city.areas[COMMUNITY_A]}" selected>' in html
    frame = re.search(r'<iframe class="supervisor-map" src="([^"]+)"', html)
    assert frame is not None
    assert frame.group(1).startswith("/maps/frame?")
    assert "status=open" in frame.group(1)


def test_map_frame_is_self_contained(city: City, leader: Web) -> None:
    frame = leader.get("/maps/frame")
    html = frame.get_data(as_text=True)

    assert frame.status_code == 200 and frame.mimetype == "text/html"
    assert URL_PATTERN.findall(html) == []  # no CDN, no tiles: TILE_URL is empty
    assert PROTOCOL_RELATIVE.findall(html) == []
    assets = ASSET_PATTERN.findall(html)
    assert "/static/vendor/leaflet/leaflet.js" in assets
    assert "/static/vendor/leaflet/leaflet.css" in assets
    assert "/static/vendor/leaflet.heat/leaflet-heat.js" in assets
    assert "/static/vendor/leaflet.markercluster/leaflet.markercluster.js" in assets  # overdue
    for asset in assets:
        assert asset.startswith("/static/"), asset
        served = leader.get(asset)
        assert served.status_code == 200, asset
        assert len(served.data) > 100, asset
        if asset.endswith(".css"):  # its images too (relative to the stylesheet)
            folder = asset.rsplit("/", 1)[0]
            for image in CSS_URL.findall(served.get_data(as_text=True)):
                assert not image.startswith(("http:", "https:", "//")), image
                assert leader.get(f"{folder}/{image}").status_code == 200, image
        served.close()
    assert "L.tileLayer" not in html
    assert "Communities" in html
    for code in (COMMUNITY_A, COMMUNITY_B, EMPTY_COMMUNITY):
        assert f'"code": "{code}"' in html, code
    assert city.numbers["a_overdue"] in html and city.numbers["b_water_overdue"] in html
    assert "Overdue cases (2)" in html


@pytest.fixture
def cache(redis_url: str) -> Iterator[Redis]:
    """The test Redis, not flushed: tests delete the one key they need gone (other workers'
    keys stay)."""
    conn = Redis.from_url(redis_url)
    yield conn
    conn.close()


def cache_key(city: City, session: Session, args: dict[str, str]) -> str:
    """The Redis key of a map page now (as maps.views.cached_page names it, in English)."""
    generation = stats.cases_generation(session)
    return views.map_cache_key(filters(city, args), "en", generation, city.app.config)


def heat_data(html: str) -> list[list[float]]:
    found = HEAT_DATA.search(html)
    assert found is not None, "no heat layer"
    data: list[list[float]] = json.loads(found.group(1))
    return data


def test_heat_layer_uses_raw_points_only_when_few(
    city: City, session: Session, leader: Web, cache: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = cache_key(city, session, {})
    cache.delete(key)
    points = heat_data(leader.get("/maps/frame").get_data(as_text=True))
    monkeypatch.setattr(stats.raw_points, "__defaults__", (13,))  # one fewer than the cases
    cache.delete(key)
    cells = heat_data(leader.get("/maps/frame").get_data(as_text=True))
    cache.delete(key)

    assert len(points) == 14 and all(len(p) == 2 for p in points)  # [lat, lon] of each case
    assert len(cells) == 3 and all(len(c) == 3 for c in cells)  # [lat, lon, cases] per cell
    assert sorted(c[2] for c in cells) == sorted(
        c.n for c in stats.cell_stats(session, filters(city, {}))
    )
    assert sum(c[2] for c in cells) == 14
    lat, lon = points[0]
    assert 33.9 < lat < 34.2 and -118.4 < lon < -118.1  # Leaflet's order: latitude first


def test_tiles_appear_only_when_configured(
    city: City, session: Session, cache: Redis, redis_url: str
) -> None:
    tiles = "http://tiles.gridmgmt-intranet.example:8080/osm/{z}/{x}/{y}.png"
    tiled_app = make_app(city.url, redis_url, TILE_URL=tiles, TILE_ATTRIBUTION="City GIS")
    key = cache_key(city, session, {})
    try:
        cache.delete(key)  # the two apps share the database and Redis: the same key
        html = browser(tiled_app, "leader").get("/maps/frame").get_data(as_text=True)
        cache.delete(key)
        plain = browser(city.app, "leader").get("/maps/frame").get_data(as_text=True)
    finally:
        cache.delete(key)
        with tiled_app.app_context():
            db.engine.dispose()

    assert set(URL_PATTERN.findall(html)) == {tiles}
    assert "L.tileLayer" in html and "City GIS" in html
    assert URL_PATTERN.findall(plain) == [] and "L.tileLayer" not in plain
    for page in (html, plain):
        assert "Communities" in page
        assert f'"code": "{COMMUNITY_A}"' in page


@pytest.mark.parametrize(
    "query",
    ["start=notadate", "end=2026-13-01", "start=2026-03-02&end=2026-03-01", "status=lost",
     "area=abc", "measure=everything", "source=pigeon", "kind=x"],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/maps", "/maps/frame"])
def test_bad_filters_are_a_400_page(leader: Web, path: str, query: str) -> None:
    page = leader.get(f"{path}?{query}")

    assert page.status_code == 400, page.get_data(as_text=True)[:300]
    assert page.mimetype == "text/html"
    assert "Traceback" not in page.get_data(as_text=True)


def test_unicode_digit_filter_is_a_400_page(leader: Web) -> None:
    assert leader.get("/maps/frame?area=%C2%B2").status_code == 400


def test_frame_is_cached_until_a_case_changes(
    city: City,
    session: Session,
    ctx: CaseContext,
    leader: Web,
    cache: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Filters] = []
    build = views.build_page

    def counting(f: Filters) -> str:
        built.append(f)
        return build(f)

    monkeypatch.setattr(views, "build_page", counting)
    overdue, by_open = {"measure": "overdue"}, {"measure": "open"}
    before = cache_key(city, session, overdue)
    cache.delete(before, cache_key(city, session, by_open))

    first = leader.get("/maps/frame?measure=overdue")
    second = leader.get("/maps/frame?measure=overdue")
    assert len(built) == 1
    assert first.status_code == second.status_code == 200
    assert first.data == second.data
    assert cache.get(before) == first.data
    assert 0 < cache.ttl(before) <= views.CACHE_SECONDS

    leader.get("/maps/frame?measure=open")  # other filters: another page
    assert len(built) == 2

    lifecycle.act(
        session, city.cases["b_reported"], "verify", user(session, "inspector"), ActionInput(), ctx
    )
    session.commit()
    after = cache_key(city, session, overdue)
    assert after != before
    cache.delete(after)
    third = leader.get("/maps/frame?measure=overdue")
    fourth = leader.get("/maps/frame?measure=overdue")

    assert third.status_code == fourth.status_code == 200
    assert len(built) == 3  # rebuilt once after the change, then served from Redis again
    assert [f.measure for f in built] == ["overdue", "open", "overdue"]
    assert cache.get(after) == third.data == fourth.data
    cache.delete(before, after)


def test_frame_renders_with_redis_down(city: City, session: Session) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = make_app(city.url, f"redis://127.0.0.1:{port}/0")
    try:
        frame = browser(down, "leader").get("/maps/frame")
    finally:
        with down.app_context():
            db.engine.dispose()

    assert frame.status_code == 200
    html = frame.get_data(as_text=True)
    assert "Communities" in html and f'"code": "{COMMUNITY_B}"' in html


def evaluation_query() -> str:
    return f"start={EVALUATED.start.isoformat()}&end={EVALUATED.end.isoformat()}"


def test_evaluation_page(city: City, leader: Web) -> None:
    page = leader.get(f"/evaluation?{evaluation_query()}")
    html = page.get_data(as_text=True)

    assert page.status_code == 200
    assert city.unit_a in html and city.unit_w in html
    assert leader.get("/evaluation").status_code == 200  # default period: this month


def test_evaluation_csv(city: City, leader: Web) -> None:
    response = leader.get(f"/evaluation?table=units&format=csv&{evaluation_query()}")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    records = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    header, body = records[0], records[1:]
    assert header[:6] == ["rank", "name", "due", "suspended", "closed", "closed_on_time"]
    rates = len(evaluation.RATE_COLUMNS)  # the public's say closes each row
    assert header[-rates - 1] == "score" and header[-rates:] == list(evaluation.RATE_COLUMNS)
    assert len(body) == city.active_units
    assert len({r[1] for r in body}) == city.active_units
    rows = {r[1]: dict(zip(header, r, strict=True)) for r in body}
    a, w = rows[city.unit_a], rows[city.unit_w]
    assert (a["rank"], a["due"], a["closed_on_time"], a["on_time_rate_pct"]) == (
        "1",
        "5",
        "2",
        "50.0",
    )
    assert (a["closure_rate_pct"], a["rework_rate_pct"], a["score"]) == ("75.0", "66.7", "47.0")
    assert (w["rank"], w["due"], w["on_time_rate_pct"], w["score"]) == ("2", "4", "25.0", "25.0")
    assert [r[1] for r in body[:2]] == [city.unit_a, city.unit_w]  # best first
    assert all(r[0] == "" for r in body[2:])  # nothing due: unranked


def csv_rows(response: TestResponse) -> list[list[str]]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_evaluation_csv_of_inspectors_and_areas(city: City, leader: Web) -> None:
    # A streamed body holds its request context until read: read each before the next.
    inspectors = csv_rows(
        leader.get(f"/evaluation?table=inspectors&format=csv&{evaluation_query()}")
    )
    streets = csv_rows(leader.get(f"/evaluation?table=streets&format=csv&{evaluation_query()}"))

    assert inspectors == [
        ["inspector", "reports", "valid", "valid_rate_pct", "checks", "checks_on_time",
         "checks_on_time_rate_pct"],
        ["inspector", "2", "1", "50.0", "2", "1", "50.0"],
        ["Ana", "1", "1", "100.0", "2", "2", "100.0"],
    ]  # fmt: skip
    [_, street] = streets
    assert street[:6] == ["1", f"{demo.STREET_CODE} Central 2", "9", "1", "5", "3"]


@pytest.mark.parametrize("query", ["table=nothing&format=csv", "table=users&format=csv"])
def test_evaluation_unknown_table_is_a_400(leader: Web, query: str) -> None:
    assert leader.get(f"/evaluation?{query}").status_code == 400


def test_dashboard_has_two_charts(city: City, leader: Web) -> None:
    page = leader.get("/dashboard")
    html = page.get_data(as_text=True)
    charts = re.findall(r'<svg class="chart".*?</svg>', html, flags=re.S)

    assert page.status_code == 200
    assert len(charts) == 2
    assert all("<polyline" in chart for chart in charts)  # both have data to draw
    assert URL_PATTERN.findall("".join(charts)) == []


def personal_strings() -> list[str]:
    return [*CONTACT.values(), DESCRIPTION, "Meilan 7Q", REPORTER, "case a_closed"]


def published_tags() -> set[str]:
    """Listed in open data: cases that entered the loop (not refused, invalid or unverified)."""
    return IN_DEFAULT_WINDOW - {"b_rejected", "a_invalid", "b_reported", REPORTED_BY_SERVICE}


def test_open_data_csv(city: City) -> None:
    response = browser(city.app).get("/open-data/cases.csv")  # public: no login
    body = response.get_data(as_text=True)

    assert response.status_code == 200 and response.mimetype == "text/csv"
    records = list(csv.DictReader(io.StringIO(body)))
    assert list(records[0]) == list(views.OPEN_DATA_FIELDS)
    assert {r["number"] for r in records} == {city.numbers[t] for t in published_tags()}
    assert len(records) == 10
    for secret in personal_strings():
        assert secret not in body, secret
    for field in ("reporter", "contact", "description", "phone", "email"):
        assert field not in records[0]
    report = next(r for r in records if r["number"] == city.numbers["b_water_overdue"])
    assert (report["status"], report["source"], report["community"]) == (
        "with_unit",  # the public status of in_progress
        "citizen",
        COMMUNITY_B,
    )
    assert all(len(r["lon"].split(".")[1]) <= 4 for r in records)  # about 10 m


def test_open_data_geojson(city: City) -> None:
    longer = (TODAY - timedelta(days=45)).isoformat()
    response = browser(city.app).get(f"/open-data/cases.geojson?start={longer}")
    body = response.get_data(as_text=True)

    assert response.status_code == 200
    collection = json.loads(body)
    features = collection["features"]
    assert {f["properties"]["number"] for f in features} == {
        city.numbers[t] for t in published_tags() | {"a_old_closed"}
    }
    for feature in features:
        assert set(feature["properties"]) == set(views.OPEN_DATA_FIELDS) - {"lon", "lat"}
        assert feature["geometry"]["type"] == "Point"
    for secret in personal_strings():
        assert secret not in body, secret


def test_open_data_geojson_is_the_rows_written_by_postgresql(city: City) -> None:
    """PostgreSQL writes the features a chunk at a time: the same values as the rows
    themselves, in order, whatever the chunk size."""
    start = BASE - timedelta(days=45)
    end = BASE + timedelta(days=1)
    rows = [r for chunk in stats.open_data_chunks(db.read, start, end, 4) for r in chunk]
    for size in (2, 5000):
        text_ = "".join(stats.open_data_geojson(db.read, start, end, 4, size=size))
        features = json.loads(text_)["features"]

        assert len(features) == len(rows) == len(published_tags() | {"a_old_closed"})
        for feature, row in zip(features, rows, strict=True):
            lon, lat = feature["geometry"]["coordinates"]
            assert (lon, lat) == (float(row["lon"]), float(row["lat"]))
            found = dict(feature["properties"])
            for name in ("reported_at", "closed_at", "deadline"):
                if found[name] is not None:
                    found[name] = datetime.fromisoformat(found[name])
            assert found == {k: v for k, v in row.items() if k not in ("lon", "lat")}


def test_open_data_period_and_bad_filter(city: City) -> None:
    anonymous = browser(city.app)
    day = (TODAY - timedelta(days=15)).isoformat()
    one_day = anonymous.get(f"/open-data/cases.csv?start={day}&end={day}")

    records = list(csv.DictReader(io.StringIO(one_day.get_data(as_text=True))))
    assert [r["number"] for r in records] == [city.numbers["b_water_closed"]]
    assert anonymous.get("/open-data/cases.csv?start=notadate").status_code == 400
    assert anonymous.get("/open-data/cases.xml").status_code == 404


SUPERVISOR_PAGES = ["/maps", "/maps/frame", "/evaluation", "/dashboard"]


@pytest.mark.parametrize("path", SUPERVISOR_PAGES)
def test_unit_staff_are_refused(logins: dict[str, Web], session: Session, path: str) -> None:
    assert logins["staff"].get(path).status_code == 403


@pytest.mark.parametrize("path", SUPERVISOR_PAGES)
def test_anonymous_visitors_are_sent_to_login(city: City, session: Session, path: str) -> None:
    response = browser(city.app).get(path)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("username", ["operator", "dispatcher"])
def test_other_supervisors_see_the_map(
    logins: dict[str, Web], session: Session, username: str
) -> None:
    assert logins[username].get("/maps").status_code == 200
    assert logins[username].get("/evaluation").status_code == 200
