"""Administering units and routing rules (`dispatch.administration`) on a clone of the demo
city: each change and its audit row, every refusal writing nothing, and "who gets this?"
agreeing with the dispatcher's batch on real cases.

Each test runs in a transaction of its own that is rolled back; the services' changes are
made as the pages make them, inside a savepoint that a refusal rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from cases.intake import ReportInput, report_case
from cases.models import Case, CaseSource, Category
from dispatch import administration as admin
from dispatch.administration import RuleInput
from dispatch.batch import dispatch_batch
from dispatch.models import RoutingRule
from dispatch.routing import Route, Unroutable
from dispatch.services import route_case
from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.errors import Conflict, DomainError, InvalidInput, NotFound, OutsideTerritory
from gridmgmt.kernel.models import Unit, User
from grids.models import Area
from tests.conftest import demo_clone
from tests.support import point_in

COMMUNITY = "990100006076"  # PICO UNION NC, a community of the demo city
OTHER_COMMUNITY = "990100006046"
STREET = "990100006"
ROUTED_CLASS = "C0101"  # water supply manhole cover → DEPT-WATER, city-wide (demo rule)
ALWAYS_CAUGHT = (DomainError,)


@pytest.fixture(scope="module")
def units_engine(demo_database_url: URL) -> Iterator[Engine]:
    """An engine on this module's own clone of the demo city."""
    with demo_clone("units_services", demo_database_url) as url:
        engine = create_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def session(units_engine: Engine) -> Iterator[Session]:
    """A session in a transaction rolled back after the test."""
    with units_engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def actor(session: Session) -> User:
    user = session.scalar(select(User).where(User.username == "admin"))
    assert user is not None
    return user


def audit_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AdminAudit)) or 0


def last_audit(session: Session) -> AdminAudit:
    row = session.scalar(select(AdminAudit).order_by(AdminAudit.id.desc()).limit(1))
    assert row is not None
    return row


def refused(session: Session, error: type[DomainError], change: Any) -> DomainError:
    """Run `change()` as a page does (in a savepoint); assert it raises `error` and that
    nothing was written: no audit row, the savepoint rolled back."""
    before = audit_count(session)
    with pytest.raises(error) as caught, session.begin_nested():
        change()
    session.expire_all()
    assert audit_count(session) == before
    return caught.value


def unit(session: Session, code: str) -> Unit:
    found = session.scalar(select(Unit).where(Unit.code == code))
    assert found is not None, code
    return found


def new_community(session: Session, code: str = "990100006999") -> Area:
    """A community of its own (no unit yet): a small square next to the street."""
    street = session.scalar(select(Area).where(Area.code == STREET))
    assert street is not None
    session.execute(
        text("""
            INSERT INTO areas (level, code, name, parent_id, geom, area_m2)
            VALUES ('community', :code, 'Test community', :parent,
                    ST_Multi(ST_MakeEnvelope(-118.0, 34.5, -117.999, 34.501, 4326)), 10000)
        """),
        {"code": code, "parent": street.id},
    )
    area = session.scalar(select(Area).where(Area.code == code))
    assert area is not None
    return area


# ---------------------------------------------------------------- units


def test_create_department_is_audited(session: Session, actor: User) -> None:
    made = admin.create_department(
        session, actor, " DEPT-PARKS ", "  Parks   department ", "greenery"
    )

    assert (made.code, made.name, made.kind, made.unit_type) == (
        "DEPT-PARKS",
        "Parks department",
        "department",
        "greenery",
    )
    row = last_audit(session)
    assert row.action == AuditAction.UNIT_CREATED.value
    assert (row.actor, row.target_type, row.target_id) == ("admin", "unit", str(made.id))
    assert row.before is None
    assert row.after == {
        "code": "DEPT-PARKS",
        "name": "Parks department",
        "kind": "department",
        "unit_type": "greenery",
        "community": None,
        "active": True,
    }


@pytest.mark.parametrize(
    ("code", "name", "unit_type", "error"),
    [
        ("", "Parks", "greenery", InvalidInput),
        ("bad code!", "Parks", "greenery", InvalidInput),
        ("X" * 33, "Parks", "greenery", InvalidInput),
        ("DEPT-PARKS", "   ", "greenery", InvalidInput),
        ("DEPT-PARKS", "n" * 201, "greenery", InvalidInput),
        ("DEPT-PARKS", "Parks", "community", InvalidInput),
        ("DEPT-PARKS", "Parks", "bakery", InvalidInput),
        ("DEPT-WATER", "Water again", "water", Conflict),
        ("dept-water", "Water again", "water", Conflict),
    ],
)
def test_create_department_refuses_bad_input(
    session: Session, actor: User, code: str, name: str, unit_type: str, error: type[DomainError]
) -> None:
    count = session.scalar(select(func.count()).select_from(Unit))

    refused(session, error, lambda: admin.create_department(session, actor, code, name, unit_type))

    assert session.scalar(select(func.count()).select_from(Unit)) == count


def test_create_community_unit_for_a_community_without_one(session: Session, actor: User) -> None:
    area = new_community(session)
    assert [a.code for a in admin.communities_without_unit(session)] == [area.code]

    made = admin.create_community_unit(session, actor, area.code)

    assert (made.code, made.name, made.kind, made.unit_type) == (
        area.code,
        "Test community",
        "community",
        "community",
    )
    assert made.community_id == area.id
    assert admin.communities_without_unit(session) == []
    row = last_audit(session)
    assert row.action == AuditAction.UNIT_CREATED.value
    assert row.after is not None and row.after["community"] == area.code


def test_community_unit_refusals(session: Session, actor: User) -> None:
    refused(session, NotFound, lambda: admin.create_community_unit(session, actor, "nope"))
    refused(session, NotFound, lambda: admin.create_community_unit(session, actor, STREET))
    error = refused(
        session, Conflict, lambda: admin.create_community_unit(session, actor, COMMUNITY)
    )
    assert COMMUNITY in error.message
    area = new_community(session)
    refused(
        session,
        Conflict,
        lambda: admin.create_community_unit(session, actor, area.code, code="DEPT-WATER"),
    )
    assert admin.communities_without_unit(session)[0].code == area.code


def test_rename_change_type_deactivate_reactivate(session: Session, actor: User) -> None:
    water = unit(session, "DEPT-WATER")

    admin.change_unit(session, actor, water.id, name="Water works", unit_type="drainage")
    renamed = last_audit(session)
    admin.change_unit(session, actor, water.id, active=False)
    deactivated = last_audit(session)
    admin.change_unit(session, actor, water.id, active=True)

    assert (water.name, water.unit_type, water.active) == ("Water works", "drainage", True)
    assert renamed.action == AuditAction.UNIT_CHANGED.value
    assert renamed.before is not None and renamed.after is not None
    assert (renamed.before["name"], renamed.after["name"]) == ("Water department", "Water works")
    assert (renamed.before["unit_type"], renamed.after["unit_type"]) == ("water", "drainage")
    assert deactivated.before is not None and deactivated.after is not None
    assert (deactivated.before["active"], deactivated.after["active"]) == (True, False)
    assert last_audit(session).after == {**deactivated.after, "active": True}


def test_unit_change_refusals_write_nothing(session: Session, actor: User) -> None:
    community = unit(session, COMMUNITY)
    water = unit(session, "DEPT-WATER")

    refused(session, NotFound, lambda: admin.change_unit(session, actor, 999_999, name="x"))
    refused(session, InvalidInput, lambda: admin.change_unit(session, actor, water.id, name=" "))
    refused(
        session,
        InvalidInput,
        lambda: admin.change_unit(session, actor, community.id, name="New", unit_type="water"),
    )
    refused(
        session,
        InvalidInput,
        lambda: admin.change_unit(session, actor, water.id, unit_type="community"),
    )
    refused(session, Conflict, lambda: admin.change_unit(session, actor, water.id, active=True))

    assert (community.name, community.unit_type) == ("PICO UNION NC", "community")
    assert (water.name, water.unit_type) == ("Water department", "water")


def test_deactivating_a_loaded_unit_is_allowed_and_its_load_is_known(
    session: Session, actor: User
) -> None:
    water = unit(session, "DEPT-WATER")
    load = admin.load_of(session, water.id)
    assert load.active_rules > 0

    admin.change_unit(session, actor, water.id, active=False)

    assert not water.active
    assert admin.load_of(session, water.id) == load  # the rules stay; routing skips them
    rows = {row.unit.code: row for row in admin.find_units(session, state="inactive")}
    assert list(rows) == ["DEPT-WATER"]


def test_find_units_filters(session: Session) -> None:
    departments = admin.find_units(session, kind="department")
    communities = admin.find_units(session, kind="community")
    found = admin.find_units(session, query="pico")

    assert departments and all(r.unit.kind == "department" for r in departments)
    assert len(communities) == 8
    assert [r.unit.code for r in found] == [COMMUNITY]
    assert admin.find_units(session, query="100%_") == []


# ---------------------------------------------------------------- routing rules


def rule_input(**changes: str) -> RuleInput:
    values = {
        "category": ROUTED_CLASS,
        "area": COMMUNITY,
        "unit": "DEPT-DRAINAGE",
        "priority": "200",
        "note": "the drainage team covers Pico Union",
    }
    return RuleInput(**{**values, **changes})


def test_add_edit_deactivate_rule_is_audited(session: Session, actor: User) -> None:
    rule = admin.create_rule(session, actor, rule_input())
    created = last_audit(session)
    admin.change_rule(session, actor, rule.id, rule_input(area="", priority="150", note=""))
    edited = last_audit(session)
    admin.set_rule_active(session, actor, rule.id, False)
    deactivated = last_audit(session)

    assert (created.action, created.target_type, created.target_id) == (
        "rule_created",
        "rule",
        str(rule.id),
    )
    assert created.after == {
        "category": ROUTED_CLASS,
        "area": COMMUNITY,
        "unit": "DEPT-DRAINAGE",
        "priority": 200,
        "note": "the drainage team covers Pico Union",
        "active": True,
    }
    assert edited.action == "rule_changed" and edited.before == created.after
    assert edited.after == {**created.after, "area": None, "priority": 150, "note": None}
    assert deactivated.after == {**edited.after, "active": False}
    assert (rule.area_id, rule.priority, rule.active) == (None, 150, False)
    admin.set_rule_active(session, actor, rule.id, True)
    assert rule.active


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"category": "X9999"}, "category"),
        ({"category": ""}, "category"),
        ({"area": "nowhere"}, "area"),
        ({"unit": "NOPE"}, "unit"),
        ({"unit": ""}, "unit"),
        ({"priority": "abc"}, "priority"),
        ({"priority": "1.5"}, "priority"),
        ({"priority": "-1"}, "priority"),
        ({"priority": "1001"}, "priority"),
        ({"priority": "99999999999999999999"}, "priority"),
        ({"note": "n" * 501}, "note"),
    ],
)
def test_bad_rules_are_refused(
    session: Session, actor: User, changes: dict[str, str], field: str
) -> None:
    count = session.scalar(select(func.count()).select_from(RoutingRule))
    existing = session.scalar(select(RoutingRule).order_by(RoutingRule.id).limit(1))
    assert existing is not None
    facts = admin.rule_facts(session, existing)

    error = refused(
        session, InvalidInput, lambda: admin.create_rule(session, actor, rule_input(**changes))
    )
    refused(
        session,
        InvalidInput,
        lambda: admin.change_rule(session, actor, existing.id, rule_input(**changes)),
    )

    assert error.details["field"] == field
    assert session.scalar(select(func.count()).select_from(RoutingRule)) == count
    assert admin.rule_facts(session, existing) == facts


def test_rules_need_an_active_unit(session: Session, actor: User) -> None:
    drainage = unit(session, "DEPT-DRAINAGE")
    rule = admin.create_rule(session, actor, rule_input())
    admin.set_rule_active(session, actor, rule.id, False)
    admin.change_unit(session, actor, drainage.id, active=False)

    error = refused(session, InvalidInput, lambda: admin.create_rule(session, actor, rule_input()))
    refused(session, Conflict, lambda: admin.set_rule_active(session, actor, rule.id, True))
    refused(session, Conflict, lambda: admin.set_rule_active(session, actor, rule.id, False))
    refused(session, NotFound, lambda: admin.set_rule_active(session, actor, 999_999, False))
    refused(session, NotFound, lambda: admin.change_rule(session, actor, 999_999, rule_input()))

    assert "DEPT-DRAINAGE" in error.message
    assert not rule.active


def test_any_area_level_may_be_named(session: Session, actor: User) -> None:
    for code in ("990100", STREET, COMMUNITY):
        rule = admin.create_rule(session, actor, rule_input(area=code))
        assert admin.rule_facts(session, rule)["area"] == code


def test_find_rules_filters(session: Session, actor: User) -> None:
    admin.create_rule(session, actor, rule_input())

    of_class = admin.find_rules(session, category=ROUTED_CLASS)
    of_unit = admin.find_rules(session, unit="DEPT-DRAINAGE", category=ROUTED_CLASS)

    assert [r.priority for r in of_class] == [200, 100]  # the order the dispatcher tries them
    assert len(of_unit) == 1
    assert admin.find_rules(session, state="inactive") == []


# ---------------------------------------------------------------- who gets this?


def test_who_gets_a_city_wide_rule(session: Session) -> None:
    lon, lat = point_in(session, COMMUNITY)

    answer = admin.who_gets(session, ROUTED_CLASS, lon, lat)

    assert answer.routable and answer.why == "rule"
    assert answer.unit is not None and answer.unit.code == "DEPT-WATER"
    assert answer.community.code == COMMUNITY
    assert answer.location.cell_code.startswith(COMMUNITY)
    assert answer.rule is not None and answer.rule.area_id is None
    assert [c.decides for c in answer.candidates] == [True]


def test_who_gets_follows_priority_and_fall_through(session: Session, actor: User) -> None:
    lon, lat = point_in(session, COMMUNITY)
    local = admin.create_rule(session, actor, rule_input())
    other = admin.create_rule(session, actor, rule_input(area=OTHER_COMMUNITY, unit="DEPT-GAS"))

    first = admin.who_gets(session, ROUTED_CLASS, str(lon), str(lat))
    admin.change_unit(session, actor, unit(session, "DEPT-DRAINAGE").id, active=False)
    second = admin.who_gets(session, ROUTED_CLASS, lon, lat)
    admin.change_unit(session, actor, unit(session, "DEPT-WATER").id, active=False)
    third = admin.who_gets(session, ROUTED_CLASS, lon, lat)

    assert first.rule is not None and first.rule.id == local.id
    assert other.id not in [c.rule.id for c in first.candidates]  # another community's rule
    assert second.unit is not None and second.unit.code == "DEPT-WATER"
    assert [c.decides for c in second.candidates] == [False, True]
    assert not third.routable and third.why == "rules_inactive" and third.unit is None


def test_who_gets_the_community_unit_or_nobody(session: Session, actor: User) -> None:
    lon, lat = point_in(session, COMMUNITY)
    unruled = session.scalar(
        select(Category.code)
        .where(~select(RoutingRule.id).where(RoutingRule.category_id == Category.id).exists())
        .order_by(Category.code)
        .limit(1)
    )
    assert unruled is not None, "the demo has classes the communities handle"

    own = admin.who_gets(session, unruled, lon, lat)
    admin.change_unit(session, actor, unit(session, COMMUNITY).id, active=False)
    nobody = admin.who_gets(session, unruled, lon, lat)

    assert own.why == "community" and own.unit is not None and own.unit.code == COMMUNITY
    assert nobody.why == "unit_inactive" and not nobody.routable
    assert isinstance(nobody.route, Unroutable)


def test_who_gets_refuses_bad_input(session: Session) -> None:
    lon, lat = point_in(session, COMMUNITY)

    with pytest.raises(OutsideTerritory):
        admin.who_gets(session, ROUTED_CLASS, 0.0, 0.0)
    for bad in [("nan", "1"), ("abc", "1"), ("200", "1"), ("", "")]:
        with pytest.raises(InvalidInput):
            admin.who_gets(session, ROUTED_CLASS, *bad)
    with pytest.raises(InvalidInput):
        admin.who_gets(session, "X9999", lon, lat)


def report(session: Session, category: str, lon: float, lat: float, tmp_path: Path) -> Case:
    """A trusted channel's report: filed at once, waiting for the dispatcher."""
    result = report_case(
        session,
        ReportInput(category, lon, lat, description="admin tester"),
        None,
        CaseSource.HOTLINE,
        tmp_path,
        trusted=True,
    )
    case = session.get(Case, result.case_id)
    assert case is not None and case.status == "filed"
    return case


def test_the_tester_agrees_with_the_dispatcher(
    session: Session, actor: User, tmp_path: Path
) -> None:
    lon, lat = point_in(session, COMMUNITY)
    local = admin.create_rule(session, actor, rule_input())
    unruled = session.scalar(
        select(Category.code)
        .where(~select(RoutingRule.id).where(RoutingRule.category_id == Category.id).exists())
        .order_by(Category.code)
        .limit(1)
    )
    assert unruled is not None
    by_rule = report(session, ROUTED_CLASS, lon, lat, tmp_path)
    by_community = report(session, unruled, lon, lat, tmp_path)
    expected = {
        c.id: admin.who_gets(session, c.category.code, lon, lat) for c in (by_rule, by_community)
    }
    for case in (by_rule, by_community):
        route = route_case(session, case)
        assert isinstance(route, Route) and route == expected[case.id].route

    calendar = get_calendar(session, "us_la")
    done = dispatch_batch(session, calendar, datetime.now(UTC), only=[by_rule.id, by_community.id])
    session.expire_all()

    assert sorted(done.dispatched) == sorted([by_rule.id, by_community.id])
    for case in (by_rule, by_community):
        answer = expected[case.id]
        assert answer.unit is not None and case.unit_id == answer.unit.id
        assert case.routing_rule_id == (answer.rule.id if answer.rule else None)
    assert by_rule.routing_rule_id == local.id
    assert by_rule.cell_id == session.scalar(
        text("SELECT id FROM grid_cells WHERE code = :c"),
        {"c": expected[by_rule.id].location.cell_code},
    )


def test_the_tester_agrees_on_an_unroutable_case(
    session: Session, actor: User, tmp_path: Path
) -> None:
    lon, lat = point_in(session, OTHER_COMMUNITY)
    case = report(session, ROUTED_CLASS, lon, lat, tmp_path)
    admin.change_unit(session, actor, unit(session, "DEPT-WATER").id, active=False)

    answer = admin.who_gets(session, ROUTED_CLASS, lon, lat)
    done = dispatch_batch(
        session, get_calendar(session, "us_la"), datetime.now(UTC), only=[case.id]
    )

    assert not answer.routable
    assert done.unroutable == {case.id: answer.route.reason}
