"""RQ job functions. Jobs take ids only, re-check state first, and let exceptions propagate
(RQ's FailedJobRegistry and Retry do the rest). They run inside the app context the worker
command opens."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import current_app
from rq import get_current_job
from sqlalchemy import text

from dispatch import watch
from dispatch.batch import WAITING, dispatch_batch
from gridmgmt.kernel import doorbell, metrics
from gridmgmt.kernel.calendar_store import city_calendar
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import NotConfigured
from gridmgmt.kernel.queue import queues

HEARTBEAT_KEY = "gridmgmt:heartbeat"
BATCH_SIZE = 1000
DRAIN_SECONDS = 20.0  # then the job hands over to a fresh one, so retries stay short
# Periodic jobs log one INFO line when they did something, DEBUG lines otherwise.
log = logging.getLogger(__name__)


_sleep = time.sleep  # the gathering pause (tests replace it, not the time module's)


class _LastDrain:
    """When this worker process last finished a drain (monotonic seconds). Per process: with
    `dispatch worker --fork` every job is a new process, which never gathers."""

    ended = float("-inf")


def heartbeat() -> str:
    """Record that the scheduler enqueued and a worker ran a job."""
    job = get_current_job()
    stamp = now_utc().isoformat(timespec="seconds")
    if job is not None:
        job.connection.set(HEARTBEAT_KEY, stamp)
    log.debug("heartbeat at %s", stamp)  # liveness, not work: /metrics shows its age
    return stamp


def dispatch_cases(case_ids: list[int], drain: bool = True) -> dict[str, int]:
    """Dispatch the filed cases waiting for it, oldest first, in batches, until none is left
    (or, with `drain=False`, only `case_ids`: one job per case, the slow way).

    `case_ids` names the cases that rang; they are among the waiting ones. Running it twice
    changes nothing: only cases still `filed` and queued are taken (SKIP LOCKED).
    """
    if drain:
        gather = float(current_app.config.get("DISPATCH_GATHER_MS", 0)) / 1000
        if gather > 0 and time.monotonic() - _LastDrain.ended < gather:
            # Drains are running back to back: reports are streaming in. While the flag is up
            # they don't ring, so waiting a moment lets one batch take them all (a job costs
            # more than a case). A lone report, or a trickle, is dispatched at once.
            _sleep(gather)
        queues.redis.delete(doorbell.PENDING_FLAG)  # cases filed from now on ring again
    started = time.monotonic()
    dispatched = unroutable = 0
    only = None if drain else list(case_ids)
    while True:
        batch_started = time.perf_counter()
        with db.transaction() as session:
            try:
                calendar = city_calendar(session)
            except NotConfigured as err:
                # Configuration, not a passing failure: retrying cannot fix it, so the job
                # ends without one. The cases stay filed and queued; the sweep rings for them
                # until the calendar is loaded; the board and /readyz say why they wait.
                log.warning("dispatch is blocked: %s", err.text.render())
                db.session.remove()
                return {"dispatched": dispatched, "unroutable": unroutable,
                        "rang": len(case_ids), "blocked": 1}  # fmt: skip
            result = dispatch_batch(session, calendar, now_utc(), BATCH_SIZE, only=only)
        if result.taken:
            metrics.observe_dispatch_batch(
                time.perf_counter() - batch_started, len(result.dispatched), len(result.unroutable)
            )
        dispatched += len(result.dispatched)
        unroutable += len(result.unroutable)
        if result.taken < BATCH_SIZE or not drain:
            break
        if time.monotonic() - started > DRAIN_SECONDS:
            doorbell.ring(force=True)
            break
    db.session.remove()
    if drain:
        _LastDrain.ended = time.monotonic()
    if dispatched or unroutable:
        log.info("dispatched %d cases, %d unroutable", dispatched, unroutable)
    else:
        log.debug("no case was waiting for dispatch")
    return {"dispatched": dispatched, "unroutable": unroutable, "rang": len(case_ids)}


def sweep_filed() -> int:
    """Find filed cases still waiting after the grace period and ring for them.

    This is what makes a lost job, a Redis outage or a killed worker delay a case, never
    lose it. Returns how many were waiting.
    """
    grace = timedelta(seconds=int(current_app.config.get("DISPATCH_GRACE_SECONDS", 30)))
    with db.transaction() as session:
        waiting = session.scalar(
            text("""SELECT count(*) FROM cases WHERE status = :filed
                    AND dispatch_state = :queued AND filed_at < :before"""),
            {**WAITING, "before": now_utc() - grace},
        )
    db.session.remove()
    if waiting:
        doorbell.ring(force=True)
        log.info("rang for %d filed cases waiting over %s", waiting, grace)
    else:
        log.debug("no filed case waiting over %s", grace)
    return int(waiting or 0)


def watch_deadlines() -> dict[str, int]:
    """Warn before deadlines (`DEADLINE_WARNING_HOURS`) and mark overdue cases."""
    before = timedelta(hours=float(current_app.config.get("DEADLINE_WARNING_HOURS", 2)))
    now = now_utc()
    with db.transaction() as session:
        warned = watch.warn_deadlines(session, now, before)
        overdue = watch.mark_overdue(session, now)
    db.session.remove()
    if warned or overdue:
        log.info("deadlines: warned %d cases, marked %d overdue", len(warned), len(overdue))
    else:
        log.debug("deadlines: nothing to warn about or mark overdue")
    return {"warned": len(warned), "overdue": len(overdue)}


def find_hotspots() -> dict[str, int]:
    """Record cells and communities whose new cases are far above their own baseline."""
    with db.transaction() as session:
        found = watch.detect_hotspots(session, now_utc())
    db.session.remove()
    if any(found.values()):
        log.info("hotspots: %s", ", ".join(f"{len(ids)} {kind}" for kind, ids in found.items()))
    else:
        log.debug("hotspots: none")
    return {kind: len(ids) for kind, ids in found.items()}


# The dispatcher's periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {
    f"{__name__}.heartbeat": 60,
    f"{__name__}.sweep_filed": 15,
    f"{__name__}.watch_deadlines": 60,
    f"{__name__}.find_hotspots": 300,
}
