"""The dispatcher's watch: deadline warnings, overdue cases and hotspots, set-based.

Warnings and overdue marks do not change a case's status; each is one case event (the table in
`cases.lifecycle` allows them to the system only) and a timestamp on the case that the unit's
queue and the dispatcher's board show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from cases.lifecycle import SYSTEM, Action, Actor, CaseState, decide
from cases.models import DEADLINE_RUNS
from gridmgmt.kernel.db import sql_in

WATCHED = DEADLINE_RUNS

_MARK = """
WITH marked AS (
    UPDATE cases SET {column} = :now, version = version + 1
    WHERE {running} AND {column} IS NULL AND {condition}
    RETURNING id, status, unit_id, deadline
)
INSERT INTO case_events (case_id, action, from_status, to_status, actor_role, data)
SELECT id, :action, status, status, :role,
       json_build_object('unit_id', unit_id, 'deadline', deadline)::jsonb
FROM marked
RETURNING case_id
"""
_RUNNING = sql_in("status", DEADLINE_RUNS)
_WARN = text(
    _MARK.format(
        running=_RUNNING, column="warned_at", condition="deadline >= :now AND deadline <= :horizon"
    )
)
_OVERDUE = text(_MARK.format(running=_RUNNING, column="overdue_at", condition="deadline < :now"))


def _allowed(action: Action) -> None:
    for status in WATCHED:
        decision = decide(CaseState(status), action, Actor(SYSTEM))
        assert decision.allowed and decision.to == status, decision.reason


def warn_deadlines(session: Session, now: datetime, before: timedelta) -> list[int]:
    """Warn once about each open case whose deadline falls within `before`; their ids."""
    _allowed(Action.WARN_DEADLINE)
    params = {"now": now, "horizon": now + before, "action": Action.WARN_DEADLINE.value}
    return list(session.scalars(_WARN, {**params, "role": SYSTEM}))


def mark_overdue(session: Session, now: datetime) -> list[int]:
    """Mark once each open case whose deadline has passed; their ids."""
    _allowed(Action.MARK_OVERDUE)
    params = {"now": now, "action": Action.MARK_OVERDUE.value, "role": SYSTEM}
    return list(session.scalars(_OVERDUE, params))


@dataclass(frozen=True)
class HotspotRule:
    """A place is a hotspot when its new cases in `window` reach `min_count` and `ratio` times
    its own average over the `baseline_days` before."""

    window: timedelta = timedelta(hours=1)
    baseline_days: int = 28
    ratio: float = 3.0
    min_count: int = 5


_HOTSPOTS = """
WITH recent AS (
    SELECT {place} AS place, count(*) AS n FROM cases
    WHERE reported_at >= :start AND reported_at < :end AND {place} IS NOT NULL
    GROUP BY 1
), baseline AS (
    SELECT {place} AS place, count(*)::float / :windows AS mean FROM cases
    WHERE reported_at >= :base_start AND reported_at < :start AND {place} IS NOT NULL
    GROUP BY 1
)
INSERT INTO hotspots ({column}, window_start, window_end, count, baseline)
SELECT r.place, :start, :end, r.n, COALESCE(b.mean, 0)
FROM recent r LEFT JOIN baseline b USING (place)
WHERE r.n >= :min_count AND r.n >= :ratio * COALESCE(b.mean, 0)
  AND NOT EXISTS (SELECT 1 FROM hotspots h WHERE h.{column} = r.place AND h.window_end = :end)
RETURNING {column}
"""
_CELL_HOTSPOTS = text(_HOTSPOTS.format(place="cell_id", column="cell_id"))
_AREA_HOTSPOTS = text(_HOTSPOTS.format(place="community_id", column="area_id"))


def detect_hotspots(
    session: Session, now: datetime, rule: HotspotRule = HotspotRule()
) -> dict[str, list[int]]:
    """Record the cells and communities that are hotspots in the window ending now (to the
    minute); returns their ids."""
    end = now.replace(second=0, microsecond=0)
    start = end - rule.window
    base_start = start - timedelta(days=rule.baseline_days)
    windows = (start - base_start) / rule.window
    params = {"start": start, "end": end, "base_start": base_start, "windows": windows,
              "ratio": rule.ratio, "min_count": rule.min_count}  # fmt: skip
    return {
        "cells": list(session.scalars(_CELL_HOTSPOTS, params)),
        "communities": list(session.scalars(_AREA_HOTSPOTS, params)),
    }
