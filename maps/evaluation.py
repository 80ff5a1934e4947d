"""Evaluation (综合评价): the indicators cities score units, areas and inspectors by.

The SQL here only counts (one scan of the cases concerned, grouped); the formulas are
`maps.aggregate.Tally`'s, so every table uses the same definitions:

- due (应结案数): dispatched cases whose deadline fell in the period, plus the suspended ones
  (their deadline is set aside while suspended);
- closed on time (按期结案数): of those, closed, and reported done by the deadline;
- closure rate = closed / (due − suspended); on-time closure rate = closed on time / (due −
  suspended); rework rate = handled cases sent back at least once / cases handled in the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.status import DEADLINE_RUNS, CaseStatus
from gridmgmt.kernel.db import sql_in
from maps.aggregate import Tally
from maps.services import CLOSED_ON_TIME

# Index-only parts, each contributing its own counts: the cases due in the period (by deadline),
# the cases handled in it (by handled_at), the open ones overdue now, and the suspended ones.
_PARTS = """
    SELECT {key} AS key, 1 AS due, 0 AS suspended, (c.closed_at IS NOT NULL)::int AS closed,
           ({closed_on_time})::int AS closed_on_time,
           0 AS handled, 0 AS reworked, 0 AS rework_count, 0 AS overdue_open,
           0.0 AS handling_hours
    FROM cases c
    WHERE c.deadline >= :live_start AND c.deadline < :end AND c.unit_id IS NOT NULL
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
    UNION ALL
    SELECT {key}, 0, 0, 0, 0, 1, (c.rework_count > 0)::int, c.rework_count, 0,
           extract(epoch FROM c.handled_at - c.dispatched_at) / 3600.0
    FROM cases c
    WHERE c.handled_at >= :live_start AND c.handled_at < :end AND c.unit_id IS NOT NULL
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
    UNION ALL
    SELECT {key}, 0, 0, 0, 0, 0, 0, 0, 1, 0.0
    FROM cases c
    WHERE {running} AND c.deadline < :now
      AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
    UNION ALL
    SELECT {key}, 1, 1, 0, 0, 0, 0, 0, 0, 0.0
    FROM cases c
    WHERE {suspended} AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
"""
# Whole days before the rollup's `through` come from the materialised view evaluation_days
# (refreshed every few minutes by the scheduler); the rest is counted live.
_ROLLED = """
    UNION ALL
    SELECT {key}, due, 0, closed, closed_on_time, handled, reworked, rework_count, 0,
           handling_hours
    FROM evaluation_days c
    WHERE c.day >= :start_day AND c.day < :rolled_end
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
"""
ROLLUP = "evaluation_days"
_TALLY = """
    SELECT key, sum(due) AS due, sum(suspended) AS suspended, sum(closed) AS closed,
           sum(closed_on_time) AS closed_on_time, sum(handled) AS handled,
           sum(reworked) AS reworked, sum(rework_count) AS rework_count,
           sum(overdue_open) AS overdue_open, sum(handling_hours) AS handling_hours
    FROM ({parts}) AS parts
    GROUP BY key
"""

_RETURNS = """
    SELECT {key} AS key, count(*) FROM case_events e JOIN cases c ON c.id = e.case_id
    WHERE e.action = 'return' AND e.created_at >= :start AND e.created_at < :end
      AND (CAST(:urgent AS boolean) IS NULL OR c.urgent = :urgent)
    GROUP BY 1
"""


@dataclass(frozen=True)
class Period:
    """A period of whole days [start, end], in UTC."""

    start: date
    end: date

    def params(self) -> dict[str, Any]:
        """Bounds as timestamps: start inclusive, the day after `end` exclusive."""
        return {
            "start": datetime.combine(self.start, time(), UTC),
            "end": datetime.combine(self.end + timedelta(days=1), time(), UTC),
        }


def rollup_through(session: Session) -> date | None:
    """Days before this one are in the rollup (None: never refreshed)."""
    return session.scalar(
        text("SELECT through FROM rollup_state WHERE name = :name"), {"name": ROLLUP}
    )


def refresh_rollup(session: Session) -> date:
    """Recount the rollup of whole past days (concurrently once it has data); its new end.

    Only the view's owner may refresh it: the app's role calls the owner's SECURITY DEFINER
    function (migration 0008), which does that and nothing else.
    """
    populated = rollup_through(session) is not None
    session.execute(
        text("SELECT public.refresh_evaluation_rollup(:concurrent)"), {"concurrent": populated}
    )
    through: date = session.scalar(
        text("""
            INSERT INTO rollup_state (name, through, refreshed_at)
            VALUES (:name, (now() AT TIME ZONE 'UTC')::date, now())
            ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
                refreshed_at = EXCLUDED.refreshed_at
            RETURNING through
        """),
        {"name": ROLLUP},
    )
    return through


def _tallies(
    session: Session, key: str, period: Period, urgent: bool | None, now: datetime
) -> dict[Any, Tally]:
    params = {**period.params(), "urgent": urgent, "now": now}
    params["live_start"] = params["start"]
    parts = _PARTS.format(
        key=key,
        running=sql_in("c.status", DEADLINE_RUNS),
        suspended=sql_in("c.status", [CaseStatus.SUSPENDED]),
        closed_on_time=CLOSED_ON_TIME,
    )
    through = rollup_through(session)
    if through is not None and through > period.start:
        rolled_end = min(period.end + timedelta(days=1), through)
        params.update(start_day=period.start, rolled_end=rolled_end)
        params["live_start"] = max(params["start"], datetime.combine(rolled_end, time(), UTC))
        parts += _ROLLED.format(key=key)
    rows = session.execute(text(_TALLY.format(parts=parts)), params).mappings()
    tallies = {
        r["key"]: Tally(
            **{k: float(v) if k == "handling_hours" else int(v) for k, v in r.items() if k != "key"}
        )
        for r in rows
    }
    for place, returns in session.execute(text(_RETURNS.format(key=key)), params):
        base = tallies.get(place, Tally())
        tallies[place] = Tally(**{**base.__dict__, "returns": int(returns)})
    return tallies


def by_unit(
    session: Session, period: Period, now: datetime, urgent: bool | None = None
) -> list[tuple[str, Tally]]:
    """(unit name, tally) for every active unit."""
    tallies = _tallies(session, "c.unit_id", period, urgent, now)
    units = session.execute(text("SELECT id, code, name FROM units WHERE active ORDER BY code"))
    return [(f"{code} {name}", tallies.get(uid, Tally())) for uid, code, name in units]


AREA_LEVELS = ("community", "street", "district")


def by_area(
    session: Session, period: Period, now: datetime, urgent: bool | None = None
) -> dict[str, list[tuple[str, Tally]]]:
    """For each area level, (area name, tally) of every area of the level: communities are
    counted once, and streets and districts add up their communities."""
    tallies = _tallies(session, "c.community_id", period, urgent, now)
    areas = session.execute(text("SELECT id, parent_id, level, code, name FROM areas")).all()
    parents = {a.id: a.parent_id for a in areas}
    totals: dict[int, Tally] = {}
    for community_id, tally in tallies.items():
        area = community_id
        while area is not None:
            totals[area] = add(totals.get(area, Tally()), tally)
            area = parents.get(area)
    rows: dict[str, list[tuple[str, Tally]]] = {level: [] for level in AREA_LEVELS}
    for a in sorted(areas, key=lambda a: a.code):
        rows[a.level].append((f"{a.code} {a.name}", totals.get(a.id, Tally())))
    return rows


def add(a: Tally, b: Tally) -> Tally:
    """The sum of two tallies (every field is a count or a sum)."""
    return Tally(**{k: getattr(a, k) + getattr(b, k) for k in a.__dict__})


@dataclass(frozen=True)
class InspectorRow:
    """What an inspector did in a period."""

    name: str
    reports: int
    valid: int
    checks: int
    checks_on_time: int

    @property
    def valid_rate(self) -> float | None:
        """Valid reports (filed) / reports."""
        return self.valid / self.reports if self.reports else None

    @property
    def checks_on_time_rate(self) -> float | None:
        """Checks done within the check limit / checks."""
        return self.checks_on_time / self.checks if self.checks else None


def by_inspector(session: Session, period: Period, check_hours: float = 24.0) -> list[InspectorRow]:
    """Reports, valid reports (filed) and on-site checks done on time, per inspector."""
    rows = session.execute(
        text("""
            SELECT u.username, u.display_name,
                   (SELECT count(*) FROM cases c WHERE c.reporter_id = u.id
                      AND c.reported_at >= :start AND c.reported_at < :end) AS reports,
                   (SELECT count(*) FROM cases c WHERE c.reporter_id = u.id
                      AND c.reported_at >= :start AND c.reported_at < :end
                      AND c.filed_at IS NOT NULL) AS valid,
                   checks.n, checks.on_time
            FROM users u
            CROSS JOIN LATERAL (
                SELECT count(*) AS n,
                       count(*) FILTER (WHERE e.created_at - assigned.at
                                        <= make_interval(secs => :check_seconds)) AS on_time
                FROM case_events e
                CROSS JOIN LATERAL (
                    SELECT max(a.created_at) AS at FROM case_events a
                    WHERE a.case_id = e.case_id AND a.action = 'assign_check'
                      AND a.created_at <= e.created_at
                ) AS assigned
                WHERE e.actor_id = u.id AND e.action IN ('check_pass', 'check_fail')
                  AND e.created_at >= :start AND e.created_at < :end
            ) AS checks
            WHERE u.role = 'inspector'
            ORDER BY u.username
        """),
        {**period.params(), "check_seconds": check_hours * 3600},
    )
    return [
        InspectorRow(display or username, reports, valid, n, on_time)
        for username, display, reports, valid, n, on_time in rows
    ]


@dataclass(frozen=True)
class DayCount:
    """Cases reported on one day in one major class."""

    day: date
    major: str
    count: int


def cases_per_day(session: Session, period: Period, lang: str = "en") -> list[DayCount]:
    """New cases per day and major class (for the trend chart)."""
    name = "m.name_zh" if lang == "zh" else "m.name_en"
    rows = session.execute(
        text(f"""
            SELECT (c.reported_at AT TIME ZONE 'UTC')::date, m.kind || ' ' || {name}, count(*)
            FROM cases c JOIN categories k ON k.id = c.category_id
            JOIN major_classes m ON m.id = k.major_id
            WHERE c.reported_at >= :start AND c.reported_at < :end
            GROUP BY 1, 2 ORDER BY 1, 2
        """),
        period.params(),
    )
    return [DayCount(*row) for row in rows]


def on_time_per_week(session: Session, period: Period) -> list[tuple[date, float | None]]:
    """The on-time closure rate of the cases due each week (ISO weeks, Monday)."""
    rows = session.execute(
        text(f"""
            SELECT date_trunc('week', c.deadline AT TIME ZONE 'UTC')::date AS week,
                   count(*) AS due,
                   count(*) FILTER (WHERE {CLOSED_ON_TIME})
            FROM cases c
            WHERE c.deadline >= :start AND c.deadline < :end AND c.unit_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
        """),
        period.params(),
    )
    return [(week, on_time / due if due else None) for week, due, on_time in rows]
