"""Dispatch use cases: find the unit for a case from the routing rules."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from cases.models import Case
from dispatch.models import RoutingRule, Unit
from dispatch.routing import Route, RuleView, Unroutable, choose_unit
from grids.models import Area


def case_areas(session: Session, community_id: int | None) -> list[int]:
    """The community of a case and its street and district (empty when outside)."""
    if community_id is None:
        return []
    street, district = aliased(Area), aliased(Area)
    row = session.execute(
        select(Area.id, street.id, district.id)
        .outerjoin(street, street.id == Area.parent_id)
        .outerjoin(district, district.id == street.parent_id)
        .where(Area.id == community_id)
    ).one_or_none()
    return [a for a in row if a is not None] if row else []


def route_case(session: Session, case: Case) -> Route | Unroutable:
    """Choose the responsible unit of a located case (rules first, then its community)."""
    areas = case_areas(session, case.community_id)
    rules = [
        RuleView(r.id, r.category_id, r.area_id, level, r.unit_id, active, r.priority)
        for r, level, active in session.execute(
            select(RoutingRule, Area.level, Unit.active)
            .join(Unit, Unit.id == RoutingRule.unit_id)
            .outerjoin(Area, Area.id == RoutingRule.area_id)
            .where(RoutingRule.category_id == case.category_id, RoutingRule.active)
        )
    ]
    community_unit = session.execute(
        select(Unit.id, Unit.active).where(Unit.community_id == case.community_id)
    ).one_or_none()
    return choose_unit(
        case.category_id, areas, rules, tuple(community_unit) if community_unit else None
    )
