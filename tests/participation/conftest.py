"""Fixtures of the public-participation tests: the demo city seeded once per module in a
transaction rolled back at the end, each test in a savepoint of its own, and a factory of
cases in any status at a known place and time (inserted as the maps tests do: the statuses and
times are what these tests are about, not how the loop got there)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from geoalchemy2.shape import from_shape
from redis import Redis
from shapely.geometry import Point
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases.followup import FollowupAnswer
from cases.models import Case, CaseEvent, Category
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import Unit, User
from grids.models import Area
from grids.services import locate
from tests.support import nested, point_in, seeded_demo

COMMUNITY_A = "990100006046"  # the demo `staff` login's community
COMMUNITY_B = "990100006054"
GARBAGE = "E0102"  # exposed garbage: routed to the community's unit


def shifted(point: tuple[float, float], east_m: float, north_m: float = 0.0) -> tuple[float, float]:
    """A point `east_m` metres east and `north_m` north of `point` (lon, lat)."""
    lon, lat = point
    return (
        lon + east_m / (111_320.0 * math.cos(math.radians(lat))),
        lat + north_m / 110_574.0,
    )


@dataclass
class City:
    """The seeded demo city: its connection, two communities' points, units, users."""

    connection: Connection
    a: tuple[float, float]  # a point in community A
    b: tuple[float, float]  # a point in community B (about 1.5 km away or more)
    units: dict[str, int]  # code -> id
    users: dict[str, int]  # username -> id
    communities: dict[str, int]  # code -> area id


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    """The demo city, seeded once in a module-long transaction that is rolled back."""
    with seeded_demo() as connection:
        session = db.session()
        found = City(
            connection=connection,
            a=point_in(session, COMMUNITY_A),
            b=point_in(session, COMMUNITY_B),
            units=dict(session.execute(select(Unit.code, Unit.id)).tuples().all()),
            users=dict(session.execute(select(User.username, User.id)).tuples().all()),
            communities=dict(
                session.execute(select(Area.code, Area.id).where(Area.level == "community"))
                .tuples()
                .all()
            ),
        )
        db.session.remove()
        yield found


@pytest.fixture
def db_session(city: City) -> Iterator[Session]:
    """The app's session in a savepoint of the module's city, rolled back after the test."""
    with nested(city.connection) as session:
        yield session


@pytest.fixture
def limits(redis_conn: Redis) -> Redis:
    """Fresh rate-limit counters (the limits count in Redis)."""
    return redis_conn


MakeCase = Callable[..., Case]


@pytest.fixture
def make_case(city: City, db_session: Session) -> MakeCase:
    """`make_case(status, point=..., category=..., unit=..., reported=..., **columns)`: a case
    committed in the test's savepoint, located in the cell holding its point."""
    categories = dict(db_session.execute(select(Category.code, Category.id)).tuples().all())

    def make(
        status: str,
        point: tuple[float, float] | None = None,
        category: str = GARBAGE,
        unit: str | None = COMMUNITY_A,
        reported: datetime | None = None,
        **columns: Any,
    ) -> Case:
        lon, lat = point or city.a
        where = locate(db_session, *(city.a if point is None else point))
        community_id = columns.pop("community_id", where.community_id)
        reported_at = reported or datetime.now(UTC) - timedelta(hours=2)
        case = Case(
            source=columns.pop("source", "citizen"),
            status=status,
            category_id=categories[category],
            description=columns.pop("description", f"a {status} case"),
            location=from_shape(Point(lon, lat), srid=4326),
            cell_id=where.cell_id,
            community_id=community_id,
            unit_id=city.units[unit] if unit else None,
            reported_at=reported_at,
            updated_at=reported_at,
            filed_at=reported_at if status not in ("reported", "verified") else None,
            **columns,
        )
        db_session.add(case)
        db_session.commit()  # a request that fails rolls back to here, not before the case
        return case

    return make


def add_event(
    session: Session, case: Case, action: str, at: datetime, frm: str, to: str, **data: Any
) -> CaseEvent:
    """A case event at a known time (the rates count events by time)."""
    event = CaseEvent(
        case_id=case.id,
        action=action,
        from_status=frm,
        to_status=to,
        actor_role="system",
        created_at=at,
        data=data,
    )
    session.add(event)
    session.commit()
    return event


def add_answer(
    session: Session,
    case: Case,
    at: datetime,
    fixed: str = "yes",
    satisfaction: str | None = "satisfied",
    comment: str = "",
    who: str = "reporter",
    key: str | None = None,
    review: str = "none",
    round_number: int = 1,
) -> FollowupAnswer:
    """A follow-up answer as `cases.followup` records it."""
    answer = FollowupAnswer(
        case_id=case.id,
        round=round_number,
        respondent=who,
        channel="link",
        fixed=fixed,
        satisfaction=satisfaction,
        comment=comment,
        answered_at=at,
        respondent_key=key or f"{who}-{case.id}-{at.timestamp()}",
        review_state=review,
    )
    session.add(answer)
    session.commit()
    return answer
