"""The case lifecycle through the services and over HTTP, on the seeded demo city.

The demo city is seeded once for the module (about 2 s) in a transaction rolled back at its
end; each test runs in a savepoint of it. The app's scoped session is bound to that connection,
so pages and API calls made with the Flask test client see (and change) the test's data.
Services' and views' commits release savepoints; nothing reaches the database for good.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from cases import intake, lifecycle, queries
from cases.intake import ReportInput
from cases.lifecycle import ActionInput, CaseContext
from cases.models import Case, CaseEvent, CaseSource, Category, Photo
from cases.photos import PhotoError, Upload
from dispatch.models import RoutingRule
from dispatch.services import dispatch_case
from gridmgmt.kernel.auth import create_user
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, OutsideTerritory
from gridmgmt.kernel.models import Role, Unit, User
from grids.models import Area
from tests.support import browser, fresh_request_globals, jpeg, nested, point_in, seeded_demo

COMMUNITY = "990100006046"  # the demo community whose unit `staff` works for
GARBAGE = "E0102"  # exposed garbage: community class, 1 working day, duplicates within 30 m / 24 h
FURNITURE = "E0108"  # discarded furniture: another community class
BURST_MAIN = "E0402"  # burst water main: routed to DEPT-WATER by the demo's routing rule
START = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Los Angeles (PDT)
METRES_PER_DEGREE_LAT = 111_000.0
UNIT_ACTIONS = ["accept", "return", "request_extension", "request_suspension", "report_done"]


# ---------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class City:
    """Ids of the seeded demo city that tests need."""

    connection: Connection
    lon: float  # a point inside COMMUNITY
    lat: float
    community_area_id: int
    community_unit_id: int
    water_unit_id: int
    roads_unit_id: int


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    """The demo city, seeded once in a module-long transaction that is rolled back."""
    with seeded_demo() as connection:
        session = db.session()
        lon, lat = point_in(session, COMMUNITY)
        area_id = session.scalar(select(Area.id).where(Area.code == COMMUNITY))
        units = dict(session.execute(select(Unit.code, Unit.id)).tuples().all())
        db.session.remove()
        assert area_id is not None
        yield City(
            connection,
            lon,
            lat,
            area_id,
            units[COMMUNITY],
            units["DEPT-WATER"],
            units["DEPT-ROADS"],
        )


@pytest.fixture
def session(city: City) -> Iterator[Session]:
    """The app's session on the seeded city; what a test changes is rolled back after it."""
    with nested(city.connection) as session:
        yield session


@pytest.fixture
def ctx(session: Session, photo_dir: Path) -> CaseContext:
    """The lifecycle settings the pages use: the city's calendar, 7 days to reopen."""
    return CaseContext(calendar=get_calendar(session, "us_la"), photo_root=photo_dir)


class Clock:
    """The services' clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(START)
    monkeypatch.setattr(lifecycle, "now_utc", clock)
    return clock


@dataclass(frozen=True)
class People:
    citizen: User
    inspector: User
    operator: User
    dispatcher: User
    staff: User  # unit staff of COMMUNITY
    water: User  # unit staff of DEPT-WATER


@pytest.fixture
def people(session: Session) -> People:
    users = {u.username: u for u in session.scalars(select(User))}
    return People(*(users[f] for f in People.__dataclass_fields__))


# ---------------------------------------------------------------- helpers


def north(city: City, metres: float) -> tuple[float, float]:
    """A point `metres` north of the community's point."""
    return city.lon, city.lat + metres / METRES_PER_DEGREE_LAT


def report(
    session: Session,
    ctx: CaseContext,
    city: City,
    who: User | None,
    code: str = GARBAGE,
    at: tuple[float, float] | None = None,
    **fields: Any,
) -> Case:
    lon, lat = at or (city.lon, city.lat)
    data = ReportInput(category_code=code, lon=lon, lat=lat, **fields)
    return intake.report_case(session, data, who, CaseSource.CITIZEN, ctx.photo_root).case


def step(
    session: Session, ctx: CaseContext, case: Case, action: str, who: User | None, **fields: Any
) -> Case:
    """Apply an action as a page would: with the version the actor saw."""
    data = ActionInput(version=case.version, **fields)
    if action == "dispatch":  # the dispatcher's own use case, at the same address
        return dispatch_case(session, case.id, who, data, ctx)
    return lifecycle.act(session, case.id, action, who, data, ctx)


def done_photo() -> list[Upload]:
    return [Upload("after.jpg", jpeg((30, 160, 30)))]


# The ordinary road from a report to a closed case: (action, who, fields).
ROAD: list[tuple[str, str, dict[str, Any]]] = [
    ("verify", "inspector", {}),
    ("file", "operator", {}),
    ("dispatch", "dispatcher", {}),
    ("accept", "staff", {}),
    ("report_done", "staff", {"note": "cleaned", "photos": done_photo()}),
    ("assign_check", "operator", {}),
    ("check_pass", "inspector", {}),
    ("close", "operator", {}),
]


def make_case(
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    until: str,
    code: str = GARBAGE,
    **report_fields: Any,
) -> Case:
    """A citizen's case moved along ROAD until it is in status `until` ('returned': a return)."""
    case = report(session, ctx, city, people.citizen, code, **report_fields)
    target = "dispatched" if until == "returned" else until
    for action, who, fields in ROAD:
        if case.status == target:
            break
        staff = people.water if who == "staff" and code == BURST_MAIN else getattr(people, who)
        case = step(session, ctx, case, action, staff, **fields)
    if until == "returned":
        case = step(session, ctx, case, "return", people.staff, reason="not ours")
    assert case.status == until
    return case


def event_rows(session: Session, case: Case) -> list[tuple[Any, ...]]:
    events = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
    )
    return [(e.action, e.from_status, e.to_status, e.actor_id, e.actor_role) for e in events]


def count(session: Session, model: type[Any], *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def snapshot(session: Session, case_id: int) -> tuple[Any, ...]:
    """What must not move when an action is refused."""
    session.expire_all()
    case = session.get(Case, case_id)
    assert case is not None
    events = count(session, CaseEvent, CaseEvent.case_id == case_id)
    photos = count(session, Photo, Photo.case_id == case_id)
    return (
        case.status,
        case.version,
        case.unit_id,
        case.deadline,
        case.pending_request,
        events,
        photos,
    )


# ---------------------------------------------------------------- the closed loop


def test_full_loop(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    cal = ctx.calendar
    case = report(
        session,
        ctx,
        city,
        people.citizen,
        description="garbage bags",
        photos=[Upload("a.jpg", jpeg())],
    )
    assert (case.status, case.community_id, case.reporter_id) == (
        "reported",
        city.community_area_id,
        people.citizen.id,
    )
    assert case.cell_id is not None and case.unit_id is None and case.deadline is None

    clock.advance(minutes=5)
    step(session, ctx, case, "verify", people.inspector)
    filed_at = clock.advance(minutes=5)
    step(session, ctx, case, "file", people.operator)
    assert (case.status, case.filed_at, case.dispatch_state) == ("filed", filed_at, "queued")

    dispatched_at = clock.advance(minutes=20)  # Tuesday 10:30 in Los Angeles
    step(session, ctx, case, "dispatch", people.dispatcher)
    assert case.status == "dispatched"
    assert (case.unit_id, case.routing_rule_id) == (city.community_unit_id, None)
    assert case.dispatched_at == dispatched_at
    assert case.deadline == cal.add_working_time(dispatched_at, 1, "days")
    assert case.deadline == datetime(2026, 3, 11, 17, 30, tzinfo=UTC)  # Wednesday 10:30 local
    first_deadline = case.deadline

    clock.advance(minutes=30)
    step(session, ctx, case, "accept", people.staff)
    handled_at = clock.advance(hours=1)
    step(session, ctx, case, "report_done", people.staff, note="cleared", photos=done_photo())
    assert (case.status, case.handled_at) == ("handled", handled_at)
    clock.advance(minutes=10)
    step(session, ctx, case, "assign_check", people.operator, inspector_id=people.inspector.id)
    assert (case.status, case.check_inspector_id) == ("checking", people.inspector.id)

    failed_at = clock.advance(hours=1)
    step(session, ctx, case, "check_fail", people.inspector, note="bags still there")
    assert case.status == "dispatched"
    assert case.rework_count == 1
    assert case.unit_id == city.community_unit_id  # back to the same unit
    assert case.deadline == cal.add_working_time(failed_at, 1, "days")
    assert case.deadline != first_deadline
    assert case.handled_at is None and case.check_inspector_id is None

    clock.advance(minutes=10)
    step(session, ctx, case, "accept", people.staff)
    clock.advance(minutes=30)
    step(session, ctx, case, "report_done", people.staff, note="cleared again", photos=done_photo())
    step(session, ctx, case, "assign_check", people.operator)  # any inspector
    assert case.check_inspector_id is None
    clock.advance(hours=1)
    step(session, ctx, case, "check_pass", people.inspector)
    closed_at = clock.advance(minutes=10)
    step(session, ctx, case, "close", people.operator)
    assert (case.status, case.closed_at, case.rework_count) == ("closed", closed_at, 1)

    reopened_at = clock.advance(days=2)
    step(session, ctx, case, "reopen", people.operator, reason="garbage is back")
    assert case.status == "dispatched"
    assert case.closed_at is None
    assert case.unit_id == city.community_unit_id
    assert case.deadline == cal.add_working_time(reopened_at, 1, "days")

    c, i, o, d, s = (
        people.citizen,
        people.inspector,
        people.operator,
        people.dispatcher,
        people.staff,
    )
    assert event_rows(session, case) == [
        ("report", None, "reported", c.id, "citizen"),
        ("verify", "reported", "verified", i.id, "inspector"),
        ("file", "verified", "filed", o.id, "operator"),
        ("dispatch", "filed", "dispatched", d.id, "dispatcher"),
        ("accept", "dispatched", "in_progress", s.id, "unit_staff"),
        ("report_done", "in_progress", "handled", s.id, "unit_staff"),
        ("assign_check", "handled", "checking", o.id, "operator"),
        ("check_fail", "checking", "dispatched", i.id, "inspector"),
        ("accept", "dispatched", "in_progress", s.id, "unit_staff"),
        ("report_done", "in_progress", "handled", s.id, "unit_staff"),
        ("assign_check", "handled", "checking", o.id, "operator"),
        ("check_pass", "checking", "checked", i.id, "inspector"),
        ("close", "checked", "closed", o.id, "operator"),
        ("reopen", "closed", "dispatched", o.id, "operator"),
    ]
    events = {e.action: e for e in case.events}  # the last event of each action
    assert events["dispatch"].data["unit"] == COMMUNITY
    assert events["check_fail"].note == "bags still there"
    assert events["check_fail"].data["rework"] == 1
    assert events["reopen"].note == "garbage is back"
    photos = session.scalars(select(Photo).where(Photo.case_id == case.id).order_by(Photo.id))
    report_done_ids = [e.id for e in case.events if e.action == "report_done"]
    assert [(p.kind, p.event_id) for p in photos] == [
        ("before", case.events[0].id),
        ("after", report_done_ids[0]),
        ("after", report_done_ids[1]),
    ]
    assert all((ctx.photo_root / p.path).is_file() for p in case.photos)


def test_inspector_report_is_verified_at_once(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = report(session, ctx, city, people.inspector)

    assert case.status == "verified"
    i = people.inspector.id
    assert event_rows(session, case) == [
        ("report", None, "reported", i, "inspector"),
        ("verify", "reported", "verified", i, "inspector"),
    ]


def test_reopen_after_seven_days_is_refused(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    case = make_case(session, ctx, city, people, "closed")
    clock.advance(days=7, seconds=1)
    before = snapshot(session, case.id)

    with pytest.raises(Conflict, match="within 7 days"):
        step(session, ctx, case, "reopen", people.operator, reason="too late")

    assert snapshot(session, case.id) == before


# ---------------------------------------------------------------- more time, suspension


def test_extension_approved_moves_the_deadline(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    deadline = case.deadline
    assert deadline is not None

    step(
        session,
        ctx,
        case,
        "request_extension",
        people.staff,
        reason="truck broken",
        extra_value="4",
        extra_unit="hours",
    )
    assert (case.status, case.pending_request) == ("in_progress", "extension")
    assert (case.pending_value, case.pending_unit) == (Decimal("4"), "hours")
    assert case.deadline == deadline  # nothing granted yet
    with pytest.raises(Conflict, match="still waiting"):
        step(session, ctx, case, "report_done", people.staff, note="x", photos=done_photo())

    clock.advance(minutes=15)
    step(session, ctx, case, "approve_extension", people.dispatcher)

    assert case.status == "in_progress"
    assert case.deadline == ctx.calendar.add_working_time(deadline, 4, "hours")
    assert ctx.calendar.working_hours_between(deadline, case.deadline) == pytest.approx(4)
    assert (case.pending_request, case.pending_value, case.pending_unit) == (None, None, None)
    assert [r[0] for r in event_rows(session, case)][-2:] == [
        "request_extension",
        "approve_extension",
    ]
    assert case.events[-1].data["deadline_before"] == deadline.isoformat()


def test_extension_in_working_days(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    deadline = case.deadline
    assert deadline is not None

    step(
        session,
        ctx,
        case,
        "request_extension",
        people.staff,
        reason="parts",
        extra_value="2",
        extra_unit="days",
    )
    step(session, ctx, case, "approve_extension", people.dispatcher)

    assert case.deadline == ctx.calendar.add_working_time(deadline, 2, "days")


@pytest.mark.parametrize("value", ["", "0", "-1", "abc", "1001", "NaN"])
def test_extension_needs_a_sensible_amount(
    session: Session, ctx: CaseContext, city: City, people: People, value: str
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    before = snapshot(session, case.id)

    with pytest.raises(InvalidInput), session.begin_nested():
        step(session, ctx, case, "request_extension", people.staff, reason="r", extra_value=value)

    assert snapshot(session, case.id) == before


def test_suspension_keeps_the_remaining_hours(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    cal = ctx.calendar
    case = make_case(session, ctx, city, people, "in_progress")  # deadline: Wednesday 10:00
    deadline = case.deadline
    assert deadline is not None

    clock.advance(hours=2)
    step(session, ctx, case, "request_suspension", people.staff, reason="road closed for works")
    assert case.pending_request == "suspension"
    suspended_at = clock.advance(hours=1)  # Tuesday 13:00 local: 6 working hours left
    step(session, ctx, case, "approve_suspension", people.dispatcher)

    remaining = cal.working_hours_between(suspended_at, deadline)
    assert remaining == pytest.approx(6)
    assert case.status == "suspended"
    assert case.deadline is None
    assert case.pending_request is None
    assert case.suspended_remaining_hours == Decimal(str(round(remaining, 4)))
    with pytest.raises(Conflict):
        step(session, ctx, case, "report_done", people.staff, note="x", photos=done_photo())

    resumed_at = clock.advance(days=4)  # Saturday: the clock stood still meanwhile
    step(session, ctx, case, "resume", people.dispatcher)

    assert case.status == "in_progress"
    assert case.suspended_remaining_hours is None
    assert case.deadline == cal.add_working_hours(resumed_at, remaining)
    assert case.deadline == datetime(2026, 3, 16, 22, 0, tzinfo=UTC)  # Monday 15:00 local
    assert [r[:3] for r in event_rows(session, case)][-3:] == [
        ("request_suspension", "in_progress", "in_progress"),
        ("approve_suspension", "in_progress", "suspended"),
        ("resume", "suspended", "in_progress"),
    ]


@pytest.mark.parametrize("kind", ["extension", "suspension"])
def test_refused_request_is_cleared(
    session: Session, ctx: CaseContext, city: City, people: People, kind: str
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    deadline = case.deadline
    step(
        session,
        ctx,
        case,
        f"request_{kind}",
        people.staff,
        reason="why not",
        extra_value="3",
        extra_unit="hours",
    )
    assert case.pending_request == kind

    step(session, ctx, case, f"refuse_{kind}", people.dispatcher, reason="no")

    assert case.status == "in_progress"
    assert (case.pending_request, case.pending_value, case.pending_unit) == (None, None, None)
    assert case.deadline == deadline
    assert case.events[-1].note == "no"
    with pytest.raises(Conflict, match=f"no {kind} request is waiting"):
        step(session, ctx, case, f"approve_{kind}", people.dispatcher)
    step(session, ctx, case, "report_done", people.staff, note="done", photos=done_photo())
    assert case.status == "handled"


def test_return_clears_the_pending_request(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    step(session, ctx, case, "request_extension", people.staff, reason="busy", extra_value="8")

    step(session, ctx, case, "return", people.staff, reason="not ours after all")
    assert case.status == "returned"
    assert (case.pending_request, case.pending_value) == (None, None)
    step(session, ctx, case, "dispatch", people.dispatcher, unit_id=city.roads_unit_id)
    assert case.pending_request is None  # the new unit starts without the old unit's request


# ---------------------------------------------------------------- refusals


def test_stale_version_is_a_conflict_and_changes_nothing(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "filed")
    seen = case.version
    step(session, ctx, case, "dispatch", people.dispatcher)  # someone else was faster...
    case = step(session, ctx, case, "accept", people.staff)
    before = snapshot(session, case.id)

    with pytest.raises(Conflict, match="changed since you opened it") as raised:
        lifecycle.act(
            session,
            case.id,
            "return",
            people.staff,
            ActionInput(version=seen, reason="stale form"),
            ctx,
        )

    assert raised.value.status == 409
    assert snapshot(session, case.id) == before


def test_illegal_transition_is_a_conflict(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "filed")
    before = snapshot(session, case.id)

    with pytest.raises(Conflict, match="cannot close filed") as raised:
        step(session, ctx, case, "close", people.operator)

    assert raised.value.status == 409
    assert snapshot(session, case.id) == before


def test_wrong_role_is_forbidden(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "reported")
    before = snapshot(session, case.id)

    for who in (people.citizen, people.dispatcher, people.operator):
        with pytest.raises(Forbidden) as raised:
            step(session, ctx, case, "verify", who)
        assert raised.value.status == 403

    assert snapshot(session, case.id) == before


def test_unknown_action_is_invalid(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "reported")

    with pytest.raises(InvalidInput, match="unknown action"):
        step(session, ctx, case, "teleport", people.operator)


def test_other_units_staff_do_not_find_the_case(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "dispatched")
    before = snapshot(session, case.id)

    assert queries.get_case(session, case.id, people.staff).id == case.id
    with pytest.raises(NotFound) as raised:
        queries.get_case(session, case.id, people.water)
    assert raised.value.status == 404
    for action in UNIT_ACTIONS:
        with pytest.raises(NotFound):
            step(
                session,
                ctx,
                case,
                action,
                people.water,
                reason="r",
                note="n",
                extra_value="1",
                photos=done_photo(),
            )

    assert snapshot(session, case.id) == before


def test_check_assigned_to_another_inspector_is_forbidden(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    other = create_user(session, "inspector2", "inspector-password", Role.INSPECTOR)
    case = make_case(session, ctx, city, people, "handled")
    step(session, ctx, case, "assign_check", people.operator, inspector_id=people.inspector.id)
    before = snapshot(session, case.id)
    assert queries.get_case(session, case.id, other).id == case.id  # they can read it

    with pytest.raises(Forbidden, match="another inspector"):
        step(session, ctx, case, "check_pass", other)

    assert snapshot(session, case.id) == before


# ---------------------------------------------------------------- reporting


def test_idempotent_report(session: Session, ctx: CaseContext, city: City, people: People) -> None:
    data = ReportInput(GARBAGE, city.lon, city.lat, idempotency_key="retry-key-0001")

    first = intake.report_case(session, data, people.citizen, CaseSource.CITIZEN, ctx.photo_root)
    second = intake.report_case(session, data, people.citizen, CaseSource.CITIZEN, ctx.photo_root)

    assert (first.created, second.created) == (True, False)
    assert second.case.id == first.case.id
    stored = intake.scoped_key("retry-key-0001", people.citizen.id, None, None)
    assert count(session, Case, Case.idempotency_key == stored) == 1
    assert count(session, CaseEvent, CaseEvent.case_id == first.case.id) == 1


def test_duplicate_suggestions(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    first = report(session, ctx, city, people.citizen)
    near = report(session, ctx, city, people.citizen, at=north(city, 10))
    far = report(session, ctx, city, people.citizen, at=north(city, 500))
    other_class = report(session, ctx, city, people.citizen, FURNITURE, at=north(city, 10))

    suggested = queries.find_duplicates(session, near)

    assert [c.id for c, _ in suggested] == [first.id]
    assert suggested[0][1] == pytest.approx(10, abs=0.5)
    assert [c.id for c, _ in queries.find_duplicates(session, first)] == [near.id]
    assert queries.find_duplicates(session, far) == []
    assert queries.find_duplicates(session, other_class) == []
    listed = queries.duplicates_of(session, [first.id, near.id, far.id, other_class.id])
    assert {i: [(c.id, round(d)) for c, d in found] for i, found in listed.items()} == {
        first.id: [(near.id, 10)],
        near.id: [(first.id, 10)],
    }  # the inbox's one query gives each case its own suggestions


def test_old_reports_are_no_duplicates(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    old = report(session, ctx, city, people.citizen)
    closed = make_case(session, ctx, city, people, "closed", at=north(city, 5))
    near = report(session, ctx, city, people.citizen, at=north(city, 10))
    assert [c.id for c, _ in queries.find_duplicates(session, near)] == [old.id]
    assert closed.id not in {c.id for c, _ in queries.find_duplicates(session, near)}

    window = timedelta(hours=old.category.duplicate_window_hours)
    session.execute(
        update(Case).where(Case.id == old.id).values(reported_at=near.reported_at - window * 1.05)
    )

    assert queries.find_duplicates(session, near) == []


def test_trusted_channel_files_at_once(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    data = ReportInput(GARBAGE, city.lon, city.lat)

    case = intake.report_case(
        session, data, None, CaseSource.HOTLINE, ctx.photo_root, trusted=True
    ).case

    assert (case.status, case.dispatch_state) == ("filed", "queued")
    assert event_rows(session, case) == [
        ("report", None, "reported", None, "system"),
        ("file", "reported", "filed", None, "system"),
    ]


def test_merge_into_an_open_case(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    target = report(session, ctx, city, people.citizen)
    duplicate = report(session, ctx, city, people.citizen, at=north(city, 10))

    step(session, ctx, duplicate, "merge", people.operator, merge_into=target.number)

    assert duplicate.status == "merged"
    assert duplicate.merged_into_id == target.id
    assert queries.public_case(session, duplicate).id == target.id
    assert queries.public_case(session, target).id == target.id
    assert duplicate.events[-1].data == {"into": target.number}
    assert queries.find_duplicates(session, target) == []  # a merged case is no suggestion


def test_merge_into_a_closed_case_is_a_conflict(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    closed = make_case(session, ctx, city, people, "closed")
    case = report(session, ctx, city, people.citizen)
    before = snapshot(session, case.id)

    with pytest.raises(Conflict, match="not an open case"), session.begin_nested():
        step(session, ctx, case, "merge", people.operator, merge_into=closed.number)
    with pytest.raises(InvalidInput, match="no case numbered"), session.begin_nested():
        step(session, ctx, case, "merge", people.operator, merge_into="NO-SUCH-CASE")

    assert snapshot(session, case.id) == before
    assert queries.public_case(session, case).id == case.id


def test_routing_to_the_water_department(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "filed", code=BURST_MAIN)
    category = session.scalars(select(Category).where(Category.code == BURST_MAIN)).one()
    assert category.unit_type == "water"
    rule_id = session.scalar(select(RoutingRule.id).where(RoutingRule.category_id == category.id))

    dispatch_case(session, case.id, None, ActionInput(), ctx)  # as the dispatch job would

    assert case.status == "dispatched"
    assert (case.unit_id, case.routing_rule_id) == (city.water_unit_id, rule_id)
    assert case.deadline == ctx.calendar.add_working_time(case.dispatched_at, 4, "hours")
    assert event_rows(session, case)[-1] == ("dispatch", "filed", "dispatched", None, "system")
    assert case.events[-1].data["unit"] == "DEPT-WATER"


def test_dispatch_to_an_explicit_unit(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "filed")

    step(session, ctx, case, "dispatch", people.dispatcher, unit_id=city.roads_unit_id)

    assert (case.status, case.unit_id, case.routing_rule_id) == (
        "dispatched",
        city.roads_unit_id,
        None,
    )
    assert case.events[-1].data["why"] == "chosen by the dispatcher"
    assert case.events[-1].data["unit"] == "DEPT-ROADS"


def test_dispatch_to_a_missing_unit_is_invalid(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "filed")
    before = snapshot(session, case.id)

    with pytest.raises(InvalidInput, match="does not exist"), session.begin_nested():
        step(session, ctx, case, "dispatch", people.dispatcher, unit_id=999_999)

    assert snapshot(session, case.id) == before


def test_returned_case_is_dispatched_again(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "returned")
    assert case.events[-1].note == "not ours"

    step(session, ctx, case, "dispatch", people.dispatcher, unit_id=city.roads_unit_id)

    assert (case.status, case.unit_id) == ("dispatched", city.roads_unit_id)
    with pytest.raises(NotFound):  # no longer the community's case
        step(session, ctx, case, "accept", people.staff)


def test_report_outside_the_territory(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    cases = count(session, Case)

    with pytest.raises(OutsideTerritory) as raised:
        report(session, ctx, city, people.citizen, at=(-118.0, 40.0))

    assert raised.value.status == 422
    assert count(session, Case) == cases


def test_report_of_an_unknown_category(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    cases = count(session, Case)

    with pytest.raises(InvalidInput, match="unknown category"):
        report(session, ctx, city, people.citizen, code="Z9999")

    assert count(session, Case) == cases


def test_fake_photo_leaves_no_case(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    cases, events, photos = count(session, Case), count(session, CaseEvent), count(session, Photo)
    fake = Upload("x.jpg", b"this is text, not a JPEG\n" * 20)

    with pytest.raises(PhotoError) as raised, session.begin_nested():
        report(session, ctx, city, people.citizen, photos=[fake])

    assert isinstance(raised.value, InvalidInput) and raised.value.status == 400
    assert "x.jpg" in raised.value.message
    assert (count(session, Case), count(session, CaseEvent), count(session, Photo)) == (
        cases,
        events,
        photos,
    )
    assert not any(ctx.photo_root.rglob("*.jpg"))


# ---------------------------------------------------------------- over HTTP


def form_for(action: str) -> dict[str, Any]:
    """What the action's form would send."""
    return {
        "accept": {},
        "return": {"reason": "not ours"},
        "request_extension": {"reason": "busy", "extra_value": "2", "extra_unit": "hours"},
        "request_suspension": {"reason": "works"},
        "report_done": {"note": "done", "photos": (io.BytesIO(jpeg()), "after.jpg")},
    }[action]


AFTER_ACTION = {
    "accept": ("in_progress", None),
    "return": ("returned", None),
    "request_extension": ("in_progress", "extension"),
    "request_suspension": ("in_progress", "suspension"),
    "report_done": ("handled", None),
}


@dataclass
class Scene:
    """Cases of the community (with a photo) and of the water department, committed."""

    dispatched: Case
    in_progress: Case
    water_case: Case
    photo_id: int

    def for_action(self, action: str) -> Case:
        return self.dispatched if action == "accept" else self.in_progress


@pytest.fixture
def scene(session: Session, ctx: CaseContext, city: City, people: People) -> Scene:
    dispatched = make_case(
        session, ctx, city, people, "dispatched", photos=[Upload("before.jpg", jpeg())]
    )
    in_progress = make_case(session, ctx, city, people, "in_progress")
    water_case = make_case(session, ctx, city, people, "dispatched", code=BURST_MAIN)
    assert dispatched.unit_id == in_progress.unit_id == city.community_unit_id
    assert water_case.unit_id == city.water_unit_id
    [photo] = dispatched.photos
    session.commit()  # requests that fail roll back to here
    return Scene(dispatched, in_progress, water_case, photo.id)


def assert_json_error(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body is not None and body["error"]["code"] == code


def test_own_unit_staff_reach_their_case(app: Flask, scene: Scene) -> None:
    """The control of the cross-unit tests below: the same requests work for the right unit."""
    staff = browser(app, "staff")
    case = scene.dispatched

    assert staff.get(f"/cases/{case.id}").status_code == 200
    assert staff.get(f"/api/cases/{case.id}").get_json()["number"] == case.number
    photo = staff.get(f"/photos/{scene.photo_id}")
    assert (photo.status_code, photo.mimetype) == (200, "image/jpeg")
    assert photo.data.startswith(b"\xff\xd8")
    assert staff.get(f"/photos/{scene.photo_id}/thumb").status_code == 200
    page = staff.post(f"/cases/{case.id}/accept", {"version": str(case.version)})
    assert page.status_code == 302
    assert page.headers["Location"] == f"/cases/{case.id}"
    assert staff.get(f"/api/cases/{case.id}").get_json()["status"] == "in_progress"


@pytest.mark.parametrize("action", UNIT_ACTIONS)
def test_other_unit_staff_get_404_everywhere(
    app: Flask, session: Session, scene: Scene, action: str
) -> None:
    water = browser(app, "water")
    case = scene.for_action(action)
    before = snapshot(session, case.id)

    assert water.get(f"/cases/{case.id}").status_code == 404
    assert_json_error(water.get(f"/api/cases/{case.id}"), 404, "not_found")
    assert water.get(f"/photos/{scene.photo_id}").status_code == 404
    assert water.get(f"/photos/{scene.photo_id}/thumb").status_code == 404
    page = water.post(f"/cases/{case.id}/{action}", form_for(action))
    assert page.status_code == 404
    api = water.api(
        f"/api/cases/{case.id}/actions/{action}",
        {k: v for k, v in form_for(action).items() if k != "photos"},
    )
    assert_json_error(api, 404, "not_found")
    assert snapshot(session, case.id) == before
    assert water.get(f"/cases/{scene.water_case.id}").status_code == 200  # their own: fine

    # The rightful unit can do exactly that.
    staff = browser(app, "staff")
    done = staff.post(f"/cases/{case.id}/{action}", form_for(action))
    assert done.status_code == 302
    session.expire_all()
    changed = session.get(Case, case.id)
    assert changed is not None
    assert (changed.status, changed.pending_request) == AFTER_ACTION[action]


def test_queue_shows_only_the_unit_cases(app: Flask, scene: Scene) -> None:
    water_queue = browser(app, "water").get("/queue")
    staff_queue = browser(app, "staff").get("/queue")

    assert water_queue.status_code == staff_queue.status_code == 200
    water_html, staff_html = water_queue.get_data(as_text=True), staff_queue.get_data(as_text=True)
    community_numbers = [scene.dispatched.number, scene.in_progress.number]
    assert f'data-case="{scene.water_case.number}"' in water_html
    assert not any(number in water_html for number in community_numbers)
    assert all(f'data-case="{number}"' in staff_html for number in community_numbers)
    assert scene.water_case.number not in staff_html


@pytest.mark.parametrize("username", ["operator", "inspector", "dispatcher"])
def test_supervision_roles_cannot_handle_over_http(
    app: Flask, session: Session, scene: Scene, username: str
) -> None:
    web = browser(app, username)
    for action in UNIT_ACTIONS:
        case = scene.for_action(action)
        before = snapshot(session, case.id)
        body = {k: v for k, v in form_for(action).items() if k != "photos"}

        api = web.api(f"/api/cases/{case.id}/actions/{action}", body)
        page = web.post(f"/cases/{case.id}/{action}", form_for(action))

        assert_json_error(api, 403, "forbidden")
        assert page.status_code == 302  # back to the case page with the refusal flashed
        assert snapshot(session, case.id) == before, action


def test_unit_staff_cannot_supervise_over_http(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    returned = make_case(session, ctx, city, people, "returned")
    checked = make_case(session, ctx, city, people, "checked")
    reported = make_case(session, ctx, city, people, "reported")
    hidden = make_case(session, ctx, city, people, "verified")
    # Unit staff only see their unit's cases; make this report one of them to reach the role
    # check (a report has no unit yet).
    session.execute(
        update(Case).where(Case.id == reported.id).values(unit_id=city.community_unit_id)
    )
    session.commit()
    staff = browser(app, "staff")

    for action, case in (("file", reported), ("dispatch", returned), ("close", checked)):
        before = snapshot(session, case.id)
        assert_json_error(staff.api(f"/api/cases/{case.id}/actions/{action}"), 403, "forbidden")
        assert staff.post(f"/cases/{case.id}/{action}").status_code == 302
        assert snapshot(session, case.id) == before, action
    assert_json_error(staff.api(f"/api/cases/{hidden.id}/actions/file"), 404, "not_found")


def test_refusals_speak_the_reader_s_language_on_pages(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    checked = make_case(session, ctx, city, people, "checked")
    hidden = make_case(session, ctx, city, people, "verified")  # no unit yet: not staff's
    session.commit()
    staff = browser(app, "staff")
    staff.client.set_cookie("lang", "zh")

    refused = staff.post(f"/cases/{checked.id}/close")
    page = staff.get(refused.headers["Location"]).get_data(as_text=True)
    missing = staff.get(f"/cases/{hidden.id}")

    assert "处置单位人员 不能对案件执行“结案”（监督与处置相分离）" in page  # role, action too
    assert missing.status_code == 404
    assert "没有这个案件" in missing.get_data(as_text=True)
    english = browser(app, "staff").api(f"/api/cases/{checked.id}/actions/close")
    assert "supervision and handling are kept separate" in english.get_json()["error"]["message"]


def test_the_board_shows_why_a_unit_returned_a_case(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "in_progress")
    step(session, ctx, case, "return", people.staff, reason="the drain belongs to the county")
    session.commit()

    page = browser(app, "dispatcher").get("/board").get_data(as_text=True)

    card = re.search(rf'<div class="card" data-case="{case.number}">(.*?)</div>', page, re.S)
    assert card is not None
    assert "the drain belongs to the county" in card.group(1)


def test_anonymous_visitors(app: Flask, session: Session, scene: Scene) -> None:
    anonymous = browser(app)
    case = scene.dispatched
    before = snapshot(session, case.id)

    for url in (f"/cases/{case.id}", "/queue", f"/photos/{scene.photo_id}"):
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login"), url
    page = anonymous.post(f"/cases/{case.id}/accept")
    assert (page.status_code, page.headers["Location"][:6]) == (302, "/login")
    assert_json_error(anonymous.get(f"/api/cases/{case.id}"), 403, "forbidden")
    assert_json_error(anonymous.api(f"/api/cases/{case.id}/actions/accept"), 403, "forbidden")
    assert snapshot(session, case.id) == before


@pytest.mark.parametrize("field", ["version", "unit_id", "inspector_id"])
def test_an_id_of_thousands_of_digits_is_a_bad_request(
    app: Flask, session: Session, scene: Scene, field: str
) -> None:
    staff = browser(app, "staff")
    case = scene.dispatched
    before = snapshot(session, case.id)

    api = staff.api(f"/api/cases/{case.id}/actions/accept", {field: "9" * 5000})
    page = staff.post(f"/cases/{case.id}/accept", {field: "9" * 5000})

    assert_json_error(api, 400, "invalid_input")
    assert page.status_code == 400
    assert snapshot(session, case.id) == before


def test_api_without_csrf_token_is_refused(app: Flask, session: Session, scene: Scene) -> None:
    staff = browser(app, "staff")
    case = scene.dispatched
    before = snapshot(session, case.id)

    fresh_request_globals()
    response = staff.client.post(f"/api/cases/{case.id}/actions/accept", json={})

    assert response.status_code == 400
    assert snapshot(session, case.id) == before


# ---------------------------------------------------------------- one writer, two paths

# Transitions both paths of the writer can take: (status the case is brought to, action, who).
BATCHABLE = [
    ("filed", "dispatch", None),
    ("returned", "dispatch", "dispatcher"),
    ("dispatched", "warn_deadline", None),
    ("in_progress", "mark_overdue", None),
    ("dispatched", "accept", "staff"),
    ("checked", "close", "operator"),
]


def case_columns(session: Session, case_id: int) -> dict[str, Any]:
    """Every column of the case but its identity."""
    row = session.execute(select(Case.__table__).where(Case.id == case_id)).mappings().one()
    return {k: v for k, v in row.items() if k not in ("id", "number")}


def event_columns(session: Session, case_id: int) -> list[dict[str, Any]]:
    """Every column of the case's events but their identity."""
    rows = session.execute(
        select(CaseEvent.__table__).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
    ).mappings()
    return [{k: v for k, v in r.items() if k not in ("id", "case_id")} for r in rows]


@pytest.mark.parametrize(("until", "action", "who"), BATCHABLE)
def test_the_batch_path_writes_what_the_single_path_writes(
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    clock: Clock,
    until: str,
    action: str,
    who: str | None,
) -> None:
    one, other = (make_case(session, ctx, city, people, until) for _ in range(2))
    clock.advance(hours=30)  # past the deadlines: a warning and an overdue mark are due
    actor = lifecycle.actor_of(getattr(people, who) if who else None)
    roads = session.get(Unit, city.roads_unit_id)
    assert roads is not None
    assignment = lifecycle.Assignment(roads.id, roads.code, roads.name, None, "chosen")
    taken = lifecycle.Action(action)
    given = lifecycle.Request(assignment=assignment if taken == lifecycle.Action.DISPATCH else None)

    lifecycle.apply_action(session, one, taken, actor, ActionInput(), ctx, lambda: assignment)
    state = lifecycle.case_state(other)
    changed = lifecycle.write_batch(
        session, taken, actor, [(state, given)], clock.now, ctx.calendar
    )
    session.expire_all()

    assert changed == [other.id]
    assert case_columns(session, one.id) == case_columns(session, other.id)
    assert event_columns(session, one.id) == event_columns(session, other.id)
    assert event_columns(session, one.id)[-1]["action"] == action


def test_the_batch_path_refuses_what_the_table_refuses(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = make_case(session, ctx, city, people, "reported")
    state = lifecycle.case_state(case)
    system = lifecycle.actor_of(None)

    with pytest.raises(lifecycle.LifecycleError, match="not allowed now"):
        lifecycle.write_batch(
            session, lifecycle.Action.CLOSE, system, [(state, lifecycle.Request())], START
        )
    assert case_columns(session, case.id)["status"] == "reported"


def test_a_stale_row_is_left_alone_by_the_batch(
    session: Session, ctx: CaseContext, city: City, people: People, clock: Clock
) -> None:
    case = make_case(session, ctx, city, people, "dispatched")
    seen = lifecycle.case_state(case)  # read, then someone accepts it first
    step(session, ctx, case, "accept", people.staff)
    system = lifecycle.actor_of(None)

    changed = lifecycle.write_batch(
        session, lifecycle.Action.WARN_DEADLINE, system, [(seen, lifecycle.Request())], clock.now
    )

    assert changed == []
    assert [e["action"] for e in event_columns(session, case.id)][-1] == "accept"
