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

from dataclasses import dataclass, replace
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
# Every table (units, urgent cases by unit, areas) adds up the same counts per (unit,
# community, urgency): one scan serves them all.
_PARTS = """
    SELECT c.unit_id, c.community_id, c.urgent, 1 AS due, 0 AS suspended,
           (c.closed_at IS NOT NULL)::int AS closed,
           ({closed_on_time})::int AS closed_on_time,
           0 AS handled, 0 AS reworked, 0 AS rework_count, 0 AS overdue_open,
           0.0 AS handling_hours
    FROM cases c
    WHERE c.deadline >= :live_start AND c.deadline < :end AND c.unit_id IS NOT NULL
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 1, (c.rework_count > 0)::int,
           c.rework_count, 0, extract(epoch FROM c.handled_at - c.dispatched_at) / 3600.0
    FROM cases c
    WHERE c.handled_at >= :live_start AND c.handled_at < :end AND c.unit_id IS NOT NULL
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 0, 0, 0, 1, 0.0
    FROM cases c
    WHERE {running} AND c.deadline < :now
      AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 1, 1, 0, 0, 0, 0, 0, 0, 0.0
    FROM cases c
    WHERE {suspended} AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
"""
# Whole days before the rollup's `through` come from the materialised view evaluation_days
# (refreshed every few minutes by the scheduler); the rest is counted live.
_ROLLED = """
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, due, 0, closed, closed_on_time, handled,
           reworked, rework_count, 0, handling_hours
    FROM evaluation_days c
    WHERE c.day >= :start_day AND c.day < :rolled_end
"""
ROLLUP = "evaluation_days"
_TALLY = """
    SELECT unit_id, community_id, urgent, sum(due) AS due, sum(suspended) AS suspended,
           sum(closed) AS closed, sum(closed_on_time) AS closed_on_time,
           sum(handled) AS handled, sum(reworked) AS reworked,
           sum(rework_count) AS rework_count, sum(overdue_open) AS overdue_open,
           sum(handling_hours) AS handling_hours
    FROM ({parts}) AS parts
    GROUP BY unit_id, community_id, urgent
"""

_RETURNS = """
    SELECT c.unit_id, c.community_id, c.urgent, count(*)
    FROM case_events e JOIN cases c ON c.id = e.case_id
    WHERE e.action = 'return' AND e.created_at >= :start AND e.created_at < :end
    GROUP BY 1, 2, 3
"""

# (unit id, community id, urgent) → the counts of the cases so placed.
Cube = dict[tuple[int | None, int | None, bool], Tally]


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


def tally_cube(session: Session, period: Period, now: datetime) -> Cube:
    """The evaluation's counts of a period per (unit, community, urgency), from the daily
    rollup for whole days before its `through` and live for the rest (today): every table of
    the evaluation adds these up (`by_unit`, `by_area`)."""
    params: dict[str, Any] = {**period.params(), "now": now}
    params["live_start"] = params["start"]
    parts = _PARTS.format(
        running=sql_in("c.status", DEADLINE_RUNS),
        suspended=sql_in("c.status", [CaseStatus.SUSPENDED]),
        closed_on_time=CLOSED_ON_TIME,
    )
    through = rollup_through(session)
    if through is not None and through > period.start:
        rolled_end = min(period.end + timedelta(days=1), through)
        params.update(start_day=period.start, rolled_end=rolled_end)
        params["live_start"] = max(params["start"], datetime.combine(rolled_end, time(), UTC))
        parts += _ROLLED
    cube: Cube = {}
    for r in session.execute(text(_TALLY.format(parts=parts)), params).mappings():
        counts = {k: v for k, v in r.items() if k not in ("unit_id", "community_id", "urgent")}
        cube[(r["unit_id"], r["community_id"], r["urgent"])] = Tally(
            **{k: float(v) if k == "handling_hours" else int(v) for k, v in counts.items()}
        )
    for unit_id, community_id, urgent, returns in session.execute(text(_RETURNS), params):
        key = (unit_id, community_id, urgent)
        cube[key] = replace(cube.get(key, Tally()), returns=int(returns))
    return cube


def _tallies(cube: Cube, axis: int, urgent: bool | None) -> dict[Any, Tally]:
    """The cube added up along one axis (0: unit, 1: community), urgent cases only or not."""
    tallies: dict[Any, Tally] = {}
    for key, tally in cube.items():
        if urgent is None or key[2] == urgent:
            tallies[key[axis]] = add(tallies.get(key[axis], Tally()), tally)
    return tallies


def by_unit(
    session: Session,
    period: Period,
    now: datetime,
    urgent: bool | None = None,
    cube: Cube | None = None,
) -> list[tuple[str, Tally]]:
    """(unit name, tally) for every active unit (`cube`: the period's, when already counted)."""
    if cube is None:
        cube = tally_cube(session, period, now)
    tallies = _tallies(cube, 0, urgent)
    units = session.execute(text("SELECT id, code, name FROM units WHERE active ORDER BY code"))
    return [(f"{code} {name}", tallies.get(uid, Tally())) for uid, code, name in units]


AREA_LEVELS = ("community", "street", "district")


def by_area(
    session: Session,
    period: Period,
    now: datetime,
    urgent: bool | None = None,
    cube: Cube | None = None,
) -> dict[str, list[tuple[str, Tally]]]:
    """For each area level, (area name, tally) of every area of the level: communities are
    counted once, and streets and districts add up their communities."""
    if cube is None:
        cube = tally_cube(session, period, now)
    tallies = _tallies(cube, 1, urgent)
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
    """Reports, valid reports (filed) and on-site checks done on time, per inspector (each
    read from the partial indexes of the cases with a reporter and of the check events)."""
    rows = session.execute(
        text("""
            SELECT u.username, u.display_name, reports.n, reports.valid,
                   checks.n, checks.on_time
            FROM users u
            CROSS JOIN LATERAL (  -- from ix_cases_reporter_reported_at alone
                SELECT count(*) AS n, count(c.filed_at) AS valid FROM cases c
                WHERE c.reporter_id = u.id
                  AND c.reported_at >= :start AND c.reported_at < :end
            ) AS reports
            CROSS JOIN LATERAL (  -- the person's checks from ix_case_events_checks
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


def _rolled_until(session: Session, period: Period) -> date:
    """The first day of the period not in the rollups: days before it are read from them."""
    through = rollup_through(session)
    if through is None or through <= period.start:
        return period.start
    return min(period.end + timedelta(days=1), through)


def cases_per_day(session: Session, period: Period, lang: str = "en") -> list[DayCount]:
    """New cases per day and major class (for the trend chart): whole past days from the
    rollup `case_days`, the rest (today) counted live."""
    name = "m.name_zh" if lang == "zh" else "m.name_en"
    rolled_until = _rolled_until(session, period)
    rolled = (  # a view never refreshed may not be read at all, not even for no day
        """SELECT day, category_id, n FROM case_days
           WHERE day >= :start_day AND day < :rolled_until UNION ALL"""
        if rolled_until > period.start
        else ""
    )
    rows = session.execute(
        text(f"""
            SELECT d.day, m.kind || ' ' || {name}, sum(d.n)::int
            FROM (
                {rolled}
                SELECT (c.reported_at AT TIME ZONE 'UTC')::date AS day, c.category_id, 1 AS n
                FROM cases c WHERE c.reported_at >= :live_start AND c.reported_at < :end
            ) AS d
            JOIN categories k ON k.id = d.category_id
            JOIN major_classes m ON m.id = k.major_id
            GROUP BY 1, 2 ORDER BY 1, 2
        """),
        {
            **period.params(),
            "start_day": period.start,
            "rolled_until": rolled_until,
            "live_start": datetime.combine(rolled_until, time(), UTC),
        },
    )
    return [DayCount(*row) for row in rows]


def on_time_per_week(session: Session, period: Period) -> list[tuple[date, float | None]]:
    """The on-time closure rate of the cases due each week (ISO weeks, Monday): the cases due
    on whole past days from the evaluation rollup, the rest counted live."""
    rolled_until = _rolled_until(session, period)
    rolled = (
        """SELECT day, due, closed_on_time AS on_time FROM evaluation_days
           WHERE day >= :start_day AND day < :rolled_until AND due > 0 UNION ALL"""
        if rolled_until > period.start
        else ""
    )
    rows = session.execute(
        text(f"""
            SELECT date_trunc('week', d.day::timestamp)::date AS week, sum(d.due)::int AS due,
                   sum(d.on_time)::int AS on_time
            FROM (
                {rolled}
                SELECT (c.deadline AT TIME ZONE 'UTC')::date AS day, 1 AS due,
                       ({CLOSED_ON_TIME})::int AS on_time
                FROM cases c
                WHERE c.deadline >= :live_start AND c.deadline < :end AND c.unit_id IS NOT NULL
            ) AS d
            GROUP BY 1 ORDER BY 1
        """),
        {
            **period.params(),
            "start_day": period.start,
            "rolled_until": rolled_until,
            "live_start": datetime.combine(rolled_until, time(), UTC),
        },
    )
    return [(week, on_time / due if due else None) for week, due, on_time in rows]
