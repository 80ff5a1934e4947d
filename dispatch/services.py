"""Dispatch use cases: find the unit for a case from the routing rules."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cases.models import Case
from dispatch.batch import RoutingData
from dispatch.routing import Route, Unroutable


def route_case(
    session: Session, case: Case, routing: RoutingData | None = None
) -> Route | Unroutable:
    """Choose the responsible unit of a located case (rules first, then its community), as
    the dispatch job does. Pass `routing` when routing many cases at once."""
    routing = routing or RoutingData.load(session)
    return routing.route(case.category_id, case.community_id)
