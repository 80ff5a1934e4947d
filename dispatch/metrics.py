"""The dispatcher's state for /metrics, read when scraped (`gridmgmt.kernel.metrics`): the
filed cases waiting for dispatch and the age of the oldest, the overdue cases by unit and the
age of the worker's heartbeat. Cheap: the waiting cases come from the partial index of filed
cases, the overdue ones from the open cases' deadline index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import Metric

from cases.models import CaseStatus, DispatchState
from cases.status import DEADLINE_RUNS
from dispatch.jobs import HEARTBEAT_KEY
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.db import sql_in
from gridmgmt.kernel.metrics import age_seconds, gauge, rows
from gridmgmt.kernel.queue import queues

# What waits: queued for the dispatcher, or left to a person on the board (unroutable).
WAITING_STATES = (DispatchState.QUEUED, DispatchState.MANUAL)
_WAITING = f"""
    SELECT dispatch_state, count(*) AS n, min(filed_at) AS oldest FROM cases
    WHERE {sql_in("status", [CaseStatus.FILED])} AND {sql_in("dispatch_state", WAITING_STATES)}
    GROUP BY dispatch_state
"""
# Every active unit (zero too: a series that appears only when a case is late breaks rates),
# and any other that has overdue cases.
_OVERDUE = f"""
    SELECT u.code, coalesce(o.n, 0) AS n
    FROM units u LEFT JOIN (
        SELECT unit_id, count(*) AS n FROM cases
        WHERE {sql_in("status", DEADLINE_RUNS)} AND deadline < :now
        GROUP BY unit_id
    ) o ON o.unit_id = u.id
    WHERE u.active OR o.n > 0
    ORDER BY u.code
"""


def probe() -> Iterator[Metric]:
    """The dispatcher's state families."""
    now = now_utc()
    found = {row.dispatch_state: row for row in rows(_WAITING)}
    waiting = gauge(
        "gridmgmt_cases_waiting_for_dispatch",
        "Filed cases waiting for dispatch: queued for the dispatcher, or manual (unroutable, "
        "on the dispatcher's board).",
        state="",
    )
    oldest = gauge(
        "gridmgmt_cases_waiting_oldest_age_seconds",
        "Seconds since the oldest case waiting for dispatch was filed (0: none waits).",
        state="",
    )
    for state in WAITING_STATES:
        row = found.get(state.value)
        waiting.add_metric([state.value], row.n if row else 0)
        oldest.add_metric([state.value], age_seconds(row.oldest, now) if row else 0.0)
    yield waiting
    yield oldest
    overdue = gauge(
        "gridmgmt_cases_overdue",
        "Open cases past their deadline, by the unit handling them.",
        unit="",
    )
    for row in rows(_OVERDUE, {"now": now}):
        overdue.add_metric([row.code], row.n)
    yield overdue
    yield gauge(
        "gridmgmt_worker_heartbeat_age_seconds",
        "Seconds since a worker last ran the scheduler's heartbeat job (every 60 s); +Inf: never.",
        age_seconds(_heartbeat(), now),
    )


def _heartbeat() -> datetime | None:
    """When a worker last ran the heartbeat job, if one ever did."""
    raw = queues.redis.get(HEARTBEAT_KEY)
    return datetime.fromisoformat(raw.decode()) if raw else None
