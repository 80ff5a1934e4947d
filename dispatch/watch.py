"""The dispatcher's watch: deadline warnings, overdue cases and hotspots, set-based.

Warnings and overdue marks do not change a case's status: the transition table allows them
to the system only, and their effect is a timestamp on the case (shown by the unit's queue
and the dispatcher's board) with one case event, written for all the cases at once by the
lifecycle's batch writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from cases.lifecycle import SYSTEM, Action, Actor, CaseState, Request, write_batch
from cases.models import CaseStatus
from cases.status import DEADLINE_RUNS
from gridmgmt.kernel.db import sql_in

# The open cases whose deadline runs, not yet marked, that a mark is due for.
_DUE = """
    SELECT id, status, unit_id, deadline FROM cases
    WHERE {running} AND {column} IS NULL AND {condition}
    ORDER BY id
    FOR UPDATE SKIP LOCKED
"""
_RUNNING = sql_in("status", DEADLINE_RUNS)
_DUE_WARNING = text(
    _DUE.format(
        running=_RUNNING, column="warned_at", condition="deadline >= :now AND deadline <= :horizon"
    )
)
_DUE_OVERDUE = text(_DUE.format(running=_RUNNING, column="overdue_at", condition="deadline < :now"))


def _mark(session: Session, action: Action, due: Sequence[Row[Any]], now: datetime) -> list[int]:
    cases = [
        (CaseState(CaseStatus(row.status), unit_id=row.unit_id, case_id=row.id,
                   deadline=row.deadline), Request())
        for row in due
    ]  # fmt: skip
    return write_batch(session, action, Actor(SYSTEM), cases, now)


def warn_deadlines(session: Session, now: datetime, before: timedelta) -> list[int]:
    """Warn once about each open case whose deadline falls within `before`; their ids."""
    due = session.execute(_DUE_WARNING, {"now": now, "horizon": now + before}).all()
    return _mark(session, Action.WARN_DEADLINE, due, now)


def mark_overdue(session: Session, now: datetime) -> list[int]:
    """Mark once each open case whose deadline has passed; their ids."""
    due = session.execute(_DUE_OVERDUE, {"now": now}).all()
    return _mark(session, Action.MARK_OVERDUE, due, now)


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
