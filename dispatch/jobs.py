"""RQ job functions. Jobs take ids only, re-check state first, and let exceptions propagate."""

from __future__ import annotations

from datetime import UTC, datetime

from rq import get_current_job

HEARTBEAT_KEY = "gridmgmt:heartbeat"


def heartbeat() -> str:
    """Record that the scheduler enqueued and a worker ran a job (shown by `/readyz`)."""
    job = get_current_job()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if job is not None:
        job.connection.set(HEARTBEAT_KEY, stamp)
    return stamp


# (function, interval in seconds) registered by `flask dispatch scheduler`.
PERIODIC_JOBS = [(heartbeat, 60)]
