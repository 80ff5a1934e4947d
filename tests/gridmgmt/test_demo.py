"""The demo city: gridmgmt.app.demo.seed_demo."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases.models import Category, MajorClass
from dispatch.models import RoutingRule
from gridmgmt.app import demo
from gridmgmt.kernel.auth import authenticate, use_api_key
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import ApiKey, CalendarRecord, Role, Unit, UnitKind, UnitType, User
from grids.models import Area, GridCell
from tests.support import nested, seeded_demo

COUNTED = (Area, GridCell, MajorClass, Category, Unit, RoutingRule, User, ApiKey, CalendarRecord)


@dataclass
class Seeded:
    said: list[str]
    logins: list[demo.DemoLogin]


def table_counts(session: Session) -> dict[str, int]:
    return {
        model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
        for model in COUNTED
    }


@pytest.fixture(scope="module")
def demo_city(app: Flask) -> Iterator[tuple[Connection, Seeded]]:
    """One seeding for the whole module (about 2 s), in a transaction rolled back at its end."""
    said: list[str] = []
    with seeded_demo(say=said.append) as connection:
        first = demo._first_community(db.session())
        db.session.remove()
        yield connection, Seeded(said, demo.demo_logins(first))


@pytest.fixture(scope="module")
def seeded(demo_city: tuple[Connection, Seeded]) -> Seeded:
    return demo_city[1]


@pytest.fixture
def session(demo_city: tuple[Connection, Seeded]) -> Iterator[Session]:
    """The seeded city; what a test changes is rolled back after it."""
    with nested(demo_city[0]) as session:
        yield session


def test_territory(session: Session, seeded: Seeded) -> None:
    levels = dict(
        session.execute(select(Area.level, func.count()).group_by(Area.level)).tuples().all()
    )
    assert levels == {"district": 1, "street": 1, "community": 8}
    district = session.scalar(select(Area).where(Area.level == "district"))
    street = session.scalar(select(Area).where(Area.level == "street"))
    assert district is not None and street is not None
    assert district.code == demo.DISTRICT_CODE
    assert street.code == demo.STREET_CODE
    assert street.parent_id == district.id
    communities = session.scalars(select(Area).where(Area.level == "community")).all()
    assert all(c.parent_id == street.id for c in communities)
    assert all(c.area_m2 > 0 for c in communities)
    assert demo.is_seeded(session)


def test_every_community_has_its_unit(session: Session, seeded: Seeded) -> None:
    rows = session.execute(
        select(Area.code, Unit.code, Unit.kind, Unit.unit_type)
        .join(Unit, Unit.community_id == Area.id)
        .where(Area.level == "community")
    ).all()
    assert len(rows) == 8
    for area_code, unit_code, kind, unit_type in rows:
        assert unit_code == area_code
        assert (kind, unit_type) == (UnitKind.COMMUNITY.value, UnitType.COMMUNITY.value)


def test_cells(session: Session, seeded: Seeded) -> None:
    cells = session.scalar(select(func.count()).select_from(GridCell))
    assert cells == 2607  # as the README says
    without_cells = session.scalar(
        select(func.count())
        .select_from(Area)
        .where(Area.level == "community")
        .where(~select(GridCell.id).where(GridCell.community_id == Area.id).exists())
    )
    assert without_cells == 0
    assert any(line.startswith("unit grid cells: ") for line in seeded.said)


def test_catalogue_departments_and_routing(session: Session, seeded: Seeded) -> None:
    categories = session.scalars(select(Category)).all()
    assert len(categories) == 95
    departments = session.scalars(select(Unit).where(Unit.kind == "department")).all()
    assert len(departments) == 13
    assert {d.unit_type for d in departments} == {t.value for t in UnitType} - {"community"}

    rules = session.scalars(select(RoutingRule)).all()
    by_category: dict[int, list[RoutingRule]] = {}
    for rule in rules:
        by_category.setdefault(rule.category_id, []).append(rule)
    for category in categories:
        routed = by_category.get(category.id, [])
        if category.unit_type == UnitType.COMMUNITY.value:
            assert routed == [], category.code  # community classes go to the cell's community
            continue
        assert len(routed) == 1, category.code
        [rule] = routed
        assert rule.active and rule.area_id is None
        assert rule.unit.kind == "department"
        assert rule.unit.unit_type == category.unit_type, category.code
    assert len(rules) == sum(c.unit_type != "community" for c in categories)
    assert "catalogue: 95 categories" in seeded.said
    assert f"departments: 13, routing rules: {len(rules)}" in seeded.said


def test_calendars_loaded(session: Session, seeded: Seeded) -> None:
    assert get_calendar(session, "us_la").timezone == "America/Los_Angeles"
    assert get_calendar(session, "cn").timezone == "Asia/Shanghai"


def test_one_login_per_role(session: Session, seeded: Seeded) -> None:
    assert {login.role for login in seeded.logins} == set(Role)
    users = session.scalars(select(User)).all()
    assert {u.role for u in users} == {r.value for r in Role}
    for login in seeded.logins:
        user = authenticate(session, login.username, demo.DEMO_PASSWORD)
        assert user is not None, login.username
        assert user.role == login.role.value
        if login.role is Role.UNIT_STAFF:
            assert user.unit is not None
            assert user.unit.code == login.unit_code
        else:
            assert user.unit_id is None
    assert authenticate(session, "admin", "wrong-password") is None
    staff_units = {login.unit_code for login in seeded.logins if login.role is Role.UNIT_STAFF}
    assert "DEPT-WATER" in staff_units
    assert "990100006046" in staff_units  # the community of the `staff` login


def test_demo_api_key(session: Session, seeded: Seeded) -> None:
    used = use_api_key(session, demo.DEMO_API_KEY)
    assert used.name == "demo-app"
    key = session.get(ApiKey, used.id)
    assert key is not None
    assert key.prefix == demo.DEMO_API_KEY[:8]
    assert key.key_hash != demo.DEMO_API_KEY


def test_second_seed_changes_nothing(session: Session, seeded: Seeded) -> None:
    before = table_counts(session)
    said: list[str] = []

    logins = demo.seed_demo(session, say=said.append)

    assert said == ["demo city already seeded"]
    assert logins == seeded.logins
    assert table_counts(session) == before
