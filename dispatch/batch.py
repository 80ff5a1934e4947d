"""Set-based dispatch: route many filed cases in one transaction.

Each case is decided by the same transition table and given the same dispatch effect as a
person's dispatch (`cases.lifecycle`); the lifecycle's batch writer then writes them all with
one UPDATE and one INSERT of events, so one worker routes thousands of cases a second. Safe to
run twice and concurrently: only cases still filed and queued are taken, with SKIP LOCKED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.lifecycle import SYSTEM, Action, Actor, CaseState, Request, write_batch
from cases.models import CaseStatus, DispatchState
from dispatch.routing import Unroutable
from dispatch.services import RoutingData
from gridmgmt.kernel.business_calendar import BusinessCalendar
from grids.services import cell_at

SYSTEM_ACTOR = Actor(SYSTEM)

_TAKE = """
    SELECT c.id, c.category_id, c.community_id, c.urgent,
           k.limit_value, k.limit_unit, k.urgent_limit_value, k.urgent_limit_unit
    FROM cases c JOIN categories k ON k.id = c.category_id
    WHERE c.status = :filed AND c.dispatch_state = :queued {only}
    ORDER BY c.filed_at, c.id
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
"""
_TAKE_WAITING = text(_TAKE.format(only=""))
_TAKE_THESE = text(_TAKE.format(only="AND c.id = ANY(:ids)"))
WAITING = {"filed": CaseStatus.FILED.value, "queued": DispatchState.QUEUED.value}

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

# Unroutable cases stay filed and go to the dispatcher's board: a delivery state, not a step
# of the lifecycle (no status change, no event).
_MANUAL = text("""
    UPDATE cases SET dispatch_state = :manual, dispatch_error = m.reason, updated_at = :now,
           version = version + 1
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS m(id bigint, reason text)
    WHERE cases.id = m.id AND cases.status = :filed
""")


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
        rows = session.execute(_TAKE_WAITING, {**WAITING, "limit": limit}).all()
    else:
        rows = session.execute(_TAKE_THESE, {**WAITING, "limit": limit, "ids": only}).all()
    result = BatchResult()
    if not rows:
        return result
    missing = [r.id for r in rows if r.community_id is None]
    located = dict(session.execute(_LOCATE, {"ids": missing}).tuples().all()) if missing else {}
    routing = RoutingData.load(session)
    dispatches: list[tuple[CaseState, Request]] = []
    manual: list[dict[str, object]] = []
    for row in rows:
        route = routing.route(row.category_id, row.community_id or located.get(row.id))
        if isinstance(route, Unroutable):
            manual.append({"id": row.id, "reason": route.reason})
            result.unroutable[row.id] = route.reason
            continue
        state = CaseState(
            CaseStatus.FILED,
            case_id=row.id,
            urgent=row.urgent,
            limit=(row.limit_value, row.limit_unit),
            urgent_limit=(row.urgent_limit_value, row.urgent_limit_unit),
        )
        dispatches.append((state, Request(assignment=routing.assignment(route))))
        result.dispatched.append(row.id)
    write_batch(session, Action.DISPATCH, SYSTEM_ACTOR, dispatches, now, calendar)
    if manual:
        params = {"rows": json.dumps(manual), "now": now, "filed": CaseStatus.FILED.value,
                  "manual": DispatchState.MANUAL.value}  # fmt: skip
        session.execute(_MANUAL, params)
    return result
