"""Dispatch use cases: choose the responsible unit of a case, and dispatch it by hand.

The dispatcher's batches (`dispatch.batch`) and a person's dispatch share the lifecycle's one
dispatch effect (`cases.lifecycle`): only the choice of the unit is made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.lifecycle import (
    Action,
    ActionInput,
    Assignment,
    CaseContext,
    actor_of,
    apply_action,
    locked_case,
)
from cases.models import Case
from dispatch.routing import Route, RuleView, Unroutable, choose_unit
from gridmgmt.kernel.errors import Conflict, InvalidInput
from gridmgmt.kernel.models import Unit, User

CHOSEN_BY_DISPATCHER = "chosen by the dispatcher"


@dataclass
class RoutingData:
    """What routing needs, read once per batch: areas' parents, rules, community units."""

    parents: dict[int, int | None]
    rules: list[RuleView]
    community_units: dict[int, tuple[int, bool]]
    units: dict[int, tuple[str, str]]

    @classmethod
    def load(cls, session: Session) -> RoutingData:
        """Read the routing tables (small: areas, rules, units)."""
        parents = dict(session.execute(text("SELECT id, parent_id FROM areas")).tuples().all())
        rules = [
            RuleView(*row)
            for row in session.execute(
                text("""
                    SELECT r.id, r.category_id, r.area_id, a.level, r.unit_id, u.active,
                           r.priority
                    FROM routing_rules r JOIN units u ON u.id = r.unit_id
                    LEFT JOIN areas a ON a.id = r.area_id
                    WHERE r.active
                """)
            )
        ]
        units: dict[int, tuple[str, str]] = {}
        community_units: dict[int, tuple[int, bool]] = {}
        for unit_id, code, name, community_id, active in session.execute(
            text("SELECT id, code, name, community_id, active FROM units")
        ):
            units[unit_id] = (code, name)
            if community_id is not None:
                community_units[community_id] = (unit_id, active)
        return cls(parents, rules, community_units, units)

    def areas_of(self, community_id: int | None) -> list[int]:
        """The community and its ancestors."""
        chain: list[int] = []
        area = community_id
        while area is not None and area not in chain:
            chain.append(area)
            area = self.parents.get(area)
        return chain

    def route(self, category_id: int, community_id: int | None) -> Route | Unroutable:
        """Choose the unit for one case."""
        return choose_unit(
            category_id,
            self.areas_of(community_id),
            [r for r in self.rules if r.category_id == category_id],
            self.community_units.get(community_id) if community_id else None,
        )

    def assignment(self, route: Route) -> Assignment:
        """The routed unit as the dispatch effect records it."""
        code, name = self.units[route.unit_id]
        return Assignment(route.unit_id, code, name, route.rule_id, route.reason)


def route_case(
    session: Session, case: Case, routing: RoutingData | None = None
) -> Route | Unroutable:
    """Choose the responsible unit of a located case (rules first, then its community), as
    the dispatch job does. Pass `routing` when routing many cases at once."""
    routing = routing or RoutingData.load(session)
    return routing.route(case.category_id, case.community_id)


def choose_assignment(session: Session, case: Case, unit_id: int | None) -> Assignment:
    """The unit a person dispatches the case to: the one chosen, else the routed one.

    Raises:
        InvalidInput: the chosen unit does not exist or is inactive.
        Conflict: no unit was chosen and the case cannot be routed.
    """
    if unit_id is not None:
        unit = session.get(Unit, unit_id)
        if unit is None or not unit.active:
            raise InvalidInput("unit %(unit)s does not exist or is inactive", unit=unit_id)
        return Assignment(unit.id, unit.code, unit.name, None, CHOSEN_BY_DISPATCHER)
    routing = RoutingData.load(session)
    route = routing.route(case.category_id, case.community_id)
    if isinstance(route, Unroutable):
        raise Conflict(
            "case %(number)s cannot be routed: %(reason)s", number=case.number, reason=route.reason
        )
    return routing.assignment(route)


def dispatch_case(
    session: Session,
    case_id: int,
    user: User | None,
    data: ActionInput,
    context: CaseContext,
) -> Case:
    """Dispatch one case by hand (a dispatcher; None: the system) to the unit `data.unit_id`
    or the routed one: the same effect as the dispatcher's batches.

    Raises:
        NotFound: no such case.
        Forbidden: the role may not dispatch.
        Conflict: not dispatchable now, changed since `data.version`, or unroutable.
        InvalidInput: the chosen unit does not exist or is inactive.
    """
    case = locked_case(session, case_id, user, data.version)
    return apply_action(
        session,
        case,
        Action.DISPATCH,
        actor_of(user),
        data,
        context,
        assign=lambda: choose_assignment(session, case, data.unit_id),
    )
