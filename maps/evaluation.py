"""Evaluation (综合评价): the indicators cities score units, areas and inspectors by.

The SQL here only counts (one scan of the cases concerned, grouped); the formulas are
`maps.aggregate.Tally`'s, so every table uses the same definitions:

- due (应结案数): dispatched cases whose deadline fell in the period, plus the suspended ones
  (their deadline is set aside while suspended);
- closed on time (按期结案数): of those, closed, and reported done by the deadline;
- closure rate = closed / (due − suspended); on-time closure rate = closed on time / (due −
  suspended); rework rate = handled cases sent back at least once / cases handled in the period.

The public's say (三率, `_RATES`), counted from the case events and the follow-up answers of
the period, in one grouped query for every unit and area (whole past days from the daily
rollup `rate_days`, what happened since its last refresh live):

- response rate (响应率) = times a case was put in the unit's hands in the period (dispatched,
  sent back after a failed check, reopened, re-handled) that the unit accepted or returned
  within `RESPONSE_LIMIT_HOURS` (wall-clock hours, not working hours: the public waits in
  those) / those times;
- resolution rate (解决率) = answers "fixed" / answers "fixed" or "not fixed", given in the
  period, each person's answer counted (the reporter, supporters, followers);
- satisfaction rate (满意率) = (satisfied + `SATISFACTION_BASIC_WEIGHT` × basically satisfied) /
  answers with a rating, given in the period;
- follow-up rate (回访率) = closings in the period whose reporter can be reached (an e-mail or
  phone in the report's contact, or a citizen's account) and who had an answer after the
  closing / closings whose reporter can be reached;
- re-handling rate (重办率) = re-handlings in the period / closings in the period.

A case is counted for the unit that has it and the community it lies in (a dispatch for the
unit it went to).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.status import DEADLINE_RUNS, CaseStatus
from gridmgmt.kernel.db import sql_in
from maps.aggregate import DEFAULT_SCORING, Scoring, Tally
from maps.models import RATE_COUNTS as RATE_COUNTS  # the three rates' counts, named here too
from maps.models import RATE_DAY_COUNTS
from maps.services import CLOSED_ON_TIME

# Index-only parts, each contributing its own counts: the cases due in the period (by deadline),
# the cases handled in it (by handled_at), the open ones overdue now, and the suspended ones.
# Every table (units, urgent cases by unit, areas) adds up the same counts per (unit,
# community, urgency): one scan serves them all. Each part is counted per (unit, community,
# urgency) itself, so that only a few thousand rows, not every case, reach the sum of the
# parts (the open overdue cases are a hundred thousand at ten million cases).
_PARTS = """
    SELECT c.unit_id, c.community_id, c.urgent, count(*) AS due, 0 AS suspended,
           count(c.closed_at) AS closed,
           count(*) FILTER (WHERE {closed_on_time}) AS closed_on_time,
           0 AS handled, 0 AS reworked, 0 AS rework_count, 0 AS overdue_open,
           0.0 AS handling_hours
    FROM cases c
    WHERE c.deadline >= :live_start AND c.deadline < :end AND c.unit_id IS NOT NULL
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, count(*),
           count(*) FILTER (WHERE c.rework_count > 0), sum(c.rework_count), 0,
           sum(extract(epoch FROM c.handled_at - c.dispatched_at) / 3600.0)
    FROM cases c
    WHERE c.handled_at >= :live_start AND c.handled_at < :end AND c.unit_id IS NOT NULL
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, count(*), count(*), 0, 0, 0, 0, 0, 0, 0.0
    FROM cases c
    WHERE {suspended} AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
    GROUP BY 1, 2, 3
    UNION ALL {overdue}
"""
# The cases in a unit's hands past their deadline now, counted one by one...
_OVERDUE_LIVE = """
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 0, 0, 0, count(*), 0.0
    FROM cases c
    WHERE {running} AND c.deadline < :now
      AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
    GROUP BY 1, 2, 3
"""
# ...or, for a period that ends after the map's last refresh (migration 0038), as of that
# refresh's moment T0, with the changes since (each case's state before, -1, and after, +1,
# judged at T0) and the running cases whose deadline lies between T0 and now (taken off when
# now is before T0), as the map counts its open cases.
_T0 = "(SELECT refreshed_at FROM rollup_state WHERE name = 'map_sums')"
_OVERDUE_ROLLED = f"""
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 0, 0, 0, c.overdue, 0.0
    FROM overdue_units c
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 0, 0, 0, sum(c.sign), 0.0
    FROM map_open_log c
    WHERE {{running}} AND c.deadline < {_T0} AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, 0, 0, 0, 0, 0, 0, 0,
           sum(CASE WHEN c.deadline < :now THEN 1 ELSE -1 END), 0.0
    FROM cases c
    WHERE {{running}} AND c.deadline >= least({_T0}, :now)
      AND c.deadline < greatest({_T0}, :now)
      AND c.unit_id IS NOT NULL AND c.dispatched_at < :end
    GROUP BY 1, 2, 3
"""
# Whole days before the rollup's `through` come from the rollup tables (refreshed every few
# minutes by the scheduler): whole months from evaluation_months, the days around them from
# evaluation_days (`_ROLLED_DAYS`); the rest is counted live.
_ROLLED_COUNTS = """
    SELECT c.unit_id, c.community_id, c.urgent, due, 0, closed, closed_on_time, handled,
           reworked, rework_count, 0, handling_hours"""
_ROLLED = f"""
    UNION ALL {_ROLLED_COUNTS}
    FROM evaluation_months c WHERE c.month >= :months_start AND c.month < :months_end
    UNION ALL {_ROLLED_COUNTS}
    FROM evaluation_days c WHERE c.day >= :start_day AND c.day < :months_start
    UNION ALL {_ROLLED_COUNTS}
    FROM evaluation_days c WHERE c.day >= :months_end AND c.day < :rolled_end
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

# The three rates' counts (see the module's docstring), and the returns to the dispatcher
# (回退), each part with the moment it counts at (`at`): grouped per (unit, community, urgency)
# for the tables, or per week for the trend.
_RATE_PARTS = """
    SELECT coalesce(u.id, (e.data ->> 'unit_id')::int, c.unit_id) AS unit_id, c.community_id,
           c.urgent, e.created_at AS at, 1 AS dispatches,
           EXISTS (
               SELECT FROM case_events x
               WHERE x.case_id = e.case_id AND x.from_status = 'dispatched'
                 AND x.to_status <> 'dispatched' AND x.created_at >= e.created_at
                 AND x.created_at <= e.created_at + make_interval(secs => :response_seconds)
           )::int AS responded,
           0 AS fixed, 0 AS not_fixed, 0 AS satisfied, 0 AS basically_satisfied,
           0 AS dissatisfied, 0 AS closings, 0 AS reachable, 0 AS followed_up, 0 AS rehandled,
           0 AS returns
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN units u ON u.code = e.data ->> 'unit'
    WHERE e.action IN ('dispatch', 'check_fail', 'reopen', 'rehandle')
      AND e.to_status = 'dispatched' AND e.created_at >= :live_start AND e.created_at < :end
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, a.answered_at, 0, 0,
           (a.fixed = 'yes')::int, (a.fixed = 'no')::int,
           (a.satisfaction = 'satisfied')::int, (a.satisfaction = 'basically_satisfied')::int,
           (a.satisfaction = 'dissatisfied')::int, 0, 0, 0, 0, 0
    FROM followup_answers a JOIN cases c ON c.id = a.case_id
    WHERE a.answered_at >= :live_start AND a.answered_at < :end
      AND a.review_state <> 'unreasonable'  -- a complaint judged unreasonable is no valid rating
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, e.created_at, 0, 0, 0, 0, 0, 0, 0,
           (e.action = 'close')::int, (e.action = 'close' AND reach.ok)::int,
           (e.action = 'close' AND reach.ok AND EXISTS (
               SELECT FROM followup_answers a
               WHERE a.case_id = e.case_id AND a.answered_at >= e.created_at
           ))::int,
           (e.action = 'rehandle')::int, (e.action = 'return')::int
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN users r ON r.id = c.reporter_id
    CROSS JOIN LATERAL (
        SELECT (c.contact ? 'email' OR c.contact ? 'phone' OR r.role IS NOT DISTINCT FROM 'citizen')
               AS ok  -- an anonymous reporter without contact: false, not unknown
    ) AS reach
    WHERE e.action IN ('close', 'rehandle', 'return')
      AND e.created_at >= :live_start AND e.created_at < :end
"""
_SUMS = ", ".join(f"coalesce(sum({name}), 0)::int AS {name}" for name in RATE_DAY_COUNTS)
# What happened before the rates rollup's last refresh comes from rate_days (migration 0027:
# today's too, up to the refresh), when it was counted with the reader's response limit; what
# happened since is counted live.
_RATE_DAY_COUNTS = f"""
    SELECT r.unit_id, r.community_id, r.urgent, r.day::timestamp AT TIME ZONE 'UTC',
           {", ".join(f"r.{name}" for name in RATE_DAY_COUNTS)}
    FROM rate_days r"""
_RATES_ROLLED = f"""
    UNION ALL {_RATE_DAY_COUNTS}
    WHERE r.day >= :start_day AND r.day < :end_day
"""
# The same for a query of the whole city by time: the city's sums per day (migration 0034).
_RATES_ROLLED_TOTALS = f"""
    UNION ALL
    SELECT NULL::int, NULL::int, NULL::boolean, r.day::timestamp AT TIME ZONE 'UTC',
           {", ".join(f"r.{name}" for name in RATE_DAY_COUNTS)}
    FROM rate_day_totals r WHERE r.day >= :start_day AND r.day < :end_day
"""
# The same for a query that groups by unit, not by time: whole months from rate_months.
_RATES_ROLLED_BY_MONTH = f"""
    UNION ALL
    SELECT r.unit_id, r.community_id, r.urgent, r.month::timestamp AT TIME ZONE 'UTC',
           {", ".join(f"r.{name}" for name in RATE_DAY_COUNTS)}
    FROM rate_months r WHERE r.month >= :months_start AND r.month < :months_end
    UNION ALL {_RATE_DAY_COUNTS}
    WHERE r.day >= :start_day AND r.day < :months_start
    UNION ALL {_RATE_DAY_COUNTS}
    WHERE r.day >= :months_end AND r.day < :end_day
"""
_RATES = """
    SELECT unit_id, community_id, urgent, {sums}
    FROM ({parts}) AS parts
    GROUP BY 1, 2, 3
"""
_RATES_PER_WEEK = """
    SELECT date_trunc('week', at AT TIME ZONE 'UTC')::date AS week, {sums}
    FROM ({parts}) AS parts
    GROUP BY 1 ORDER BY 1
"""
RATES_ROLLUP = "rate_days"

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


def refresh_rollup(session: Session, response_hours: float | None = None) -> date:
    """Recount the rollups' past days whose cases changed since the last refresh; the new end
    (days before it are in the rollups).

    Only the owner writes the rollups: the app's role calls the owner's SECURITY DEFINER
    functions (migrations 0026 and 0027: they recount the days that triggers logged, and
    nothing else; 0029 and 0034: the months and the city's days of the days recounted are
    summed again; 0033: the map's running sums are written again, its open cases as of now;
    readers keep seeing the old counts until it commits). The three rates are recounted whole
    when the city's response limit (`response_hours`, default: the setting) is not the one
    they were counted with.
    """
    populated = rollup_through(session) is not None
    session.execute(
        text("SELECT public.refresh_evaluation_rollup(:concurrent)"), {"concurrent": populated}
    )
    seconds = _response_seconds(response_hours)
    counted_with = session.scalar(
        text("SELECT response_seconds FROM rollup_state WHERE name = :name"),
        {"name": RATES_ROLLUP},
    )
    session.execute(
        text("SELECT public.refresh_rate_rollup(:seconds, :whole)"),
        {"seconds": seconds, "whole": counted_with != seconds},
    )
    session.execute(text("SELECT public.refresh_month_rollups()"))  # their sums by month
    session.execute(text("SELECT public.refresh_day_totals()"))  # and the city's by day
    session.execute(text("SELECT public.refresh_map_sums()"))  # the map's, and its open cases
    session.execute(
        text("""
            INSERT INTO rollup_state (name, through, refreshed_at, response_seconds)
            VALUES (:name, (now() AT TIME ZONE 'UTC')::date, now(), :seconds)
            ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
                refreshed_at = EXCLUDED.refreshed_at,
                response_seconds = EXCLUDED.response_seconds
        """),
        {"name": RATES_ROLLUP, "seconds": seconds},
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


def scoring_settings(config: Any = None) -> Scoring:
    """The city's weights of the public's say, from the app's settings (defaults outside an
    app)."""
    if config is None:
        if not has_app_context():
            return DEFAULT_SCORING
        config = current_app.config
    return Scoring(
        basic_weight=float(config.get("SATISFACTION_BASIC_WEIGHT", 1.0)),
        response=float(config.get("SCORE_WEIGHT_RESPONSE", 0.0)),
        resolution=float(config.get("SCORE_WEIGHT_RESOLUTION", 0.0)),
        satisfaction=float(config.get("SCORE_WEIGHT_SATISFACTION", 0.0)),
        followup=float(config.get("SCORE_WEIGHT_FOLLOWUP", 0.0)),
        rehandle_penalty=float(config.get("SCORE_REHANDLE_PENALTY", 0.0)),
    )


MAX_RESPONSE_HOURS = 7 * 24  # the rates rollup marks a week of dispatches before an answer


def check_settings(config: Any) -> None:
    """Refuse a response limit the rates cannot count.

    Raises:
        RuntimeError: RESPONSE_LIMIT_HOURS is not more than 0 and at most a week.
    """
    hours = float(config.get("RESPONSE_LIMIT_HOURS", 2.0))
    if not 0 < hours <= MAX_RESPONSE_HOURS:
        raise RuntimeError(
            f"GRIDMGMT_RESPONSE_LIMIT_HOURS={hours:g}: a unit's response limit is more than 0 "
            f"and at most {MAX_RESPONSE_HOURS} hours"
        )


def _response_seconds(response_hours: float | None) -> float:
    if response_hours is None:
        response_hours = (
            float(current_app.config.get("RESPONSE_LIMIT_HOURS", 2.0)) if has_app_context() else 2.0
        )
    return response_hours * 3600


def whole_months(start: date, end: date) -> tuple[date, date]:
    """The whole months among the days from `start` to before `end`: from the first day of the
    first to the first day after the last (the same day twice when there is none)."""
    first = start if start.day == 1 else (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    last = end.replace(day=1)
    return (first, last) if first < last else (end, end)


def _rates_query(
    session: Session,
    template: str,
    period: Period,
    response_hours: float | None,
    by_month: bool = False,
    city: bool = False,
) -> tuple[str, dict[str, Any]]:
    """A query of the rates' counts of `period` (`template`, grouped), and its parameters:
    whole days from the rollup when it holds them with this response limit (whole months from
    the monthly one, `by_month`, for a query that does not group by time; the city's sums per
    day, `city`, for one that groups by time alone), the rest live."""
    seconds = _response_seconds(response_hours)
    params: dict[str, Any] = {**period.params(), "response_seconds": seconds}
    params["live_start"] = params["start"]
    parts = _RATE_PARTS
    state = session.execute(
        text("SELECT refreshed_at, response_seconds FROM rollup_state WHERE name = :name"),
        {"name": RATES_ROLLUP},
    ).first()
    if (
        state is not None
        and state.response_seconds == seconds
        and state.refreshed_at > params["start"]
    ):  # the rollup holds everything before its refresh, today's too
        end_day = period.end + timedelta(days=1)
        months_start, months_end = (
            whole_months(period.start, end_day) if by_month else (end_day,) * 2
        )
        params.update(
            start_day=period.start,
            end_day=end_day,
            months_start=months_start,
            months_end=months_end,
        )
        params["live_start"] = max(params["start"], min(state.refreshed_at, params["end"]))
        parts += (
            _RATES_ROLLED_BY_MONTH if by_month else _RATES_ROLLED_TOTALS if city else _RATES_ROLLED
        )
    return template.format(sums=_SUMS, parts=parts), params


def rate_counts(
    session: Session, period: Period, response_hours: float | None = None
) -> dict[tuple[int | None, int | None, bool], dict[str, int]]:
    """The three rates' counts and the returns of a period per (unit, community, urgency), in
    one query."""
    query, params = _rates_query(session, _RATES, period, response_hours, by_month=True)
    counts = {}
    for row in session.execute(text(query), params).mappings():
        counts[(row["unit_id"], row["community_id"], row["urgent"])] = {
            name: int(row[name]) for name in RATE_DAY_COUNTS
        }
    return counts


def tally_cube(
    session: Session,
    period: Period,
    now: datetime,
    scoring: Scoring | None = None,
    response_hours: float | None = None,
) -> Cube:
    """The evaluation's counts of a period per (unit, community, urgency), from the daily
    rollup for whole days before its `through` and live for the rest (today), with the three
    rates' counts and the returns (`rate_counts`) and the city's `scoring` (default: the
    app's settings): every table of the evaluation adds these up (`by_unit`, `by_area`)."""
    params: dict[str, Any] = {**period.params(), "now": now}
    params["live_start"] = params["start"]
    running = sql_in("c.status", DEADLINE_RUNS)
    counted = session.scalar(
        text("SELECT refreshed_at FROM rollup_state WHERE name = 'map_sums'")
    )  # the map's refresh, which counts the overdue cases per unit too
    overdue = _OVERDUE_ROLLED if counted is not None and params["end"] > now else _OVERDUE_LIVE
    parts = _PARTS.format(
        running=running,
        suspended=sql_in("c.status", [CaseStatus.SUSPENDED]),
        closed_on_time=CLOSED_ON_TIME,
        overdue=overdue.format(running=running),
    )
    through = rollup_through(session)
    if through is not None and through > period.start:
        rolled_end = min(period.end + timedelta(days=1), through)
        months_start, months_end = whole_months(period.start, rolled_end)
        params.update(
            start_day=period.start,
            rolled_end=rolled_end,
            months_start=months_start,
            months_end=months_end,
        )
        params["live_start"] = max(params["start"], datetime.combine(rolled_end, time(), UTC))
        parts += _ROLLED
    cube: Cube = {}
    for r in session.execute(text(_TALLY.format(parts=parts)), params).mappings():
        counts = {k: v for k, v in r.items() if k not in ("unit_id", "community_id", "urgent")}
        cube[(r["unit_id"], r["community_id"], r["urgent"])] = Tally(
            **{k: float(v) if k == "handling_hours" else int(v) for k, v in counts.items()}
        )
    for key, counts in rate_counts(session, period, response_hours).items():
        cube[key] = replace(cube.get(key, Tally()), **counts)
    weights = scoring if scoring is not None else scoring_settings()
    return {key: replace(tally, scoring=weights) for key, tally in cube.items()}


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
    """The sum of two tallies (every field is a count or a sum; the city's scoring is kept)."""
    scoring = a.scoring if a.scoring is not DEFAULT_SCORING else b.scoring
    counts = {k: getattr(a, k) + getattr(b, k) for k in a.__dict__ if k != "scoring"}
    return Tally(**counts, scoring=scoring)


# The three rates' columns of the evaluation's CSV (`rate_cells` gives a row's values).
RATE_COLUMNS = (
    "dispatches", "responded", "response_rate_pct",
    "fixed", "not_fixed", "resolution_rate_pct",
    "satisfied", "basically_satisfied", "dissatisfied", "satisfaction_rate_pct",
    "closings", "reachable", "followed_up", "followup_rate_pct",
    "rehandled", "rehandle_rate_pct",
)  # fmt: skip


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def rate_cells(t: Tally) -> list[object]:
    """A tally's values under `RATE_COLUMNS` (rates in percent to 0.1, empty without data)."""
    return [
        t.dispatches, t.responded, _pct(t.response_rate),
        t.fixed, t.not_fixed, _pct(t.resolution_rate),
        t.satisfied, t.basically_satisfied, t.dissatisfied, _pct(t.satisfaction_rate),
        t.closings, t.reachable, t.followed_up, _pct(t.followup_rate),
        t.rehandled, _pct(t.rehandle_rate),
    ]  # fmt: skip


def rates_per_week(
    session: Session, period: Period, response_hours: float | None = None
) -> list[tuple[date, Tally]]:
    """The three rates' counts of each week (ISO weeks, Monday) of a period, for the
    dashboard's trend (`Tally.response_rate`, `.resolution_rate`, `.satisfaction_rate`...)."""
    query, params = _rates_query(session, _RATES_PER_WEEK, period, response_hours, city=True)
    weights = scoring_settings()
    return [
        (row["week"], Tally(**{n: int(row[n]) for n in RATE_DAY_COUNTS}, scoring=weights))
        for row in session.execute(text(query), params).mappings()
    ]


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
    rollup `case_days`, the rest (today) counted live. Each part is counted per (day, class),
    and the sum per (day, major class) by number, before the names are joined: a year is
    some 35,000 rows of the rollup."""
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
            SELECT d.day, m.kind || ' ' || {name}, d.n
            FROM (
                SELECT p.day, k.major_id, sum(p.n)::int AS n
                FROM (
                    {rolled}
                    SELECT (c.reported_at AT TIME ZONE 'UTC')::date, c.category_id, count(*)
                    FROM cases c WHERE c.reported_at >= :live_start AND c.reported_at < :end
                    GROUP BY 1, 2
                ) AS p (day, category_id, n)
                JOIN categories k ON k.id = p.category_id
                GROUP BY 1, 2
            ) AS d
            JOIN major_classes m ON m.id = d.major_id
            ORDER BY 1, 2
        """),
        _trend_params(period, rolled_until),
    )
    return [DayCount(*row) for row in rows]


def _trend_params(period: Period, rolled_until: date) -> dict[str, Any]:
    return {
        **period.params(),
        "start_day": period.start,
        "rolled_until": rolled_until,
        "live_start": datetime.combine(rolled_until, time(), UTC),
    }


def due_per_week(session: Session, period: Period) -> list[tuple[date, Tally]]:
    """The cases due each week (ISO weeks, Monday) of a period, and of those the closed and
    the closed on time (`Tally.due`, `.closed`, `.closed_on_time`): on whole past days from
    the city's sums of the evaluation rollup (migration 0034), the rest counted live. The
    weeks add up to the period's closure and on-time rates of the whole city."""
    rolled_until = _rolled_until(session, period)
    rolled = (
        """SELECT day, due, closed, closed_on_time FROM evaluation_day_totals
           WHERE day >= :start_day AND day < :rolled_until UNION ALL"""
        if rolled_until > period.start
        else ""
    )
    rows = session.execute(
        text(f"""
            SELECT date_trunc('week', d.day::timestamp)::date AS week, sum(d.due)::int,
                   sum(d.closed)::int, sum(d.closed_on_time)::int
            FROM (
                {rolled}
                SELECT (c.deadline AT TIME ZONE 'UTC')::date, count(*), count(c.closed_at),
                       count(*) FILTER (WHERE {CLOSED_ON_TIME})
                FROM cases c
                WHERE c.deadline >= :live_start AND c.deadline < :end AND c.unit_id IS NOT NULL
                GROUP BY 1
            ) AS d (day, due, closed, closed_on_time)
            GROUP BY 1 ORDER BY 1
        """),
        _trend_params(period, rolled_until),
    )
    return [
        (week, Tally(due=due, closed=closed, closed_on_time=on_time))
        for week, due, closed, on_time in rows
    ]


def on_time_per_week(session: Session, period: Period) -> list[tuple[date, float | None]]:
    """The on-time closure rate of the cases due each week (ISO weeks, Monday)."""
    return [(week, tally.on_time_rate) for week, tally in due_per_week(session, period)]


def overdue_open(session: Session, now: datetime) -> int:
    """The cases in a unit's hands whose deadline has passed by `now` (the whole city)."""
    running = sql_in("c.status", DEADLINE_RUNS)
    return int(
        session.scalar(
            text(f"""SELECT count(*) FROM cases c
                     WHERE {running} AND c.deadline < :now AND c.unit_id IS NOT NULL"""),
            {"now": now},
        )
    )
