"""Set-based dispatch: route many filed cases in one transaction.

The status change follows the same transition table as every other change (`decide` is asked
for each case); the rows are written with one UPDATE and one INSERT of events per batch, so one
worker routes thousands of cases a second. Safe to run twice and concurrently: only cases still
`filed` are taken, locked with SKIP LOCKED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.lifecycle import SYSTEM, Action, Actor, CaseState, decide, time_limit
from cases.models import CaseStatus
from dispatch.routing import Route, RuleView, Unroutable, choose_unit, dispatch_record
from gridmgmt.kernel.business_calendar import BusinessCalendar
from grids.services import cell_at

SYSTEM_ACTOR = Actor(SYSTEM)

_TAKE = """
    SELECT c.id, c.category_id, c.community_id, c.urgent,
           k.limit_value, k.limit_unit, k.urgent_limit_value, k.urgent_limit_unit
    FROM cases c JOIN categories k ON k.id = c.category_id
    WHERE c.status = 'filed' AND c.dispatch_state = 'queued' {only}
    ORDER BY c.filed_at, c.id
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
"""
_TAKE_WAITING = text(_TAKE.format(only=""))
_TAKE_THESE = text(_TAKE.format(only="AND c.id = ANY(:ids)"))

# Cases filed without a cell (imported, or located before the cells existed) are located in
# one query, with the documented tie-break (`grids.services.cell_at`).
_LOCATE = text(f"""
    UPDATE cases c SET cell_id = found.cell_id, community_id = found.community_id
    FROM (
        SELECT w.id, g.id AS cell_id, g.community_id
        FROM cases w CROSS JOIN LATERAL ({cell_at("w.location")}) AS g
        WHERE w.id = ANY(:ids) AND w.cell_id IS NULL
    ) AS found
    WHERE c.id = found.id
    RETURNING c.id, found.community_id
""")

# The batch's dispatches are written with one UPDATE and one INSERT of events, from a JSON
# array of rows (one statement per batch, not per case).
_DISPATCH = text("""
    WITH d AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS d(id bigint, unit_id int, rule_id int, deadline timestamptz, data jsonb)
    ), changed AS (
        UPDATE cases c SET status = 'dispatched', unit_id = d.unit_id, routing_rule_id = d.rule_id,
               deadline = d.deadline, dispatched_at = :now, updated_at = :now,
               dispatch_state = 'done', dispatch_error = NULL, warned_at = NULL,
               overdue_at = NULL, version = version + 1
        FROM d WHERE c.id = d.id AND c.status = 'filed'
        RETURNING c.id
    )
    INSERT INTO case_events (case_id, action, from_status, to_status, actor_role, note, data)
    SELECT d.id, 'dispatch', 'filed', 'dispatched', :role, '', d.data
    FROM d JOIN changed USING (id)
    ORDER BY d.id
""")

_MANUAL = text("""
    UPDATE cases SET dispatch_state = 'manual', dispatch_error = m.reason, updated_at = :now,
           version = version + 1
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS m(id bigint, reason text)
    WHERE cases.id = m.id AND cases.status = 'filed'
""")


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


@dataclass
class BatchResult:
    """What one batch did."""

    dispatched: list[int] = field(default_factory=list)
    unroutable: dict[int, str] = field(default_factory=dict)

    @property
    def taken(self) -> int:
        """Cases this batch looked at."""
        return len(self.dispatched) + len(self.unroutable)


def dispatch_batch(
    session: Session,
    calendar: BusinessCalendar,
    now: datetime,
    limit: int = 1000,
    only: list[int] | None = None,
) -> BatchResult:
    """Route up to `limit` filed cases waiting for dispatch (only the ids `only`, if given),
    oldest first, in the caller's transaction. Unroutable cases go to the dispatcher's board
    with the reason."""
    if only is None:
        rows = session.execute(_TAKE_WAITING, {"limit": limit}).all()
    else:
        rows = session.execute(_TAKE_THESE, {"limit": limit, "ids": only}).all()
    result = BatchResult()
    if not rows:
        return result
    missing = [r.id for r in rows if r.community_id is None]
    located = dict(session.execute(_LOCATE, {"ids": missing}).tuples().all()) if missing else {}
    routing = RoutingData.load(session)
    dispatches: list[dict[str, object]] = []
    manual: list[dict[str, object]] = []
    transition = decide(CaseState(CaseStatus.FILED), Action.DISPATCH, SYSTEM_ACTOR)
    assert transition.allowed and transition.to == CaseStatus.DISPATCHED
    for row in rows:
        community_id = row.community_id or located.get(row.id)
        route = routing.route(row.category_id, community_id)
        if isinstance(route, Unroutable):
            manual.append({"id": row.id, "reason": route.reason})
            result.unroutable[row.id] = route.reason
            continue
        value, unit = time_limit(
            row.urgent,
            (row.limit_value, row.limit_unit),
            (row.urgent_limit_value, row.urgent_limit_unit),
        )
        deadline = calendar.add_working_time(now, value, unit)
        dispatches.append(
            {"id": row.id, "unit_id": route.unit_id, "rule_id": route.rule_id,
             "deadline": deadline.isoformat(),
             "data": dispatch_record(routing.units[route.unit_id], route.rule_id, route.reason,
                                     deadline)}
        )  # fmt: skip
        result.dispatched.append(row.id)
    if dispatches:
        session.execute(_DISPATCH, {"rows": json.dumps(dispatches), "now": now, "role": SYSTEM})
    if manual:
        session.execute(_MANUAL, {"rows": json.dumps(manual), "now": now})
    return result
