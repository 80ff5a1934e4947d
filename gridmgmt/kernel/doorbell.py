"""Redis is only the doorbell: after a commit that filed cases, make sure a dispatch job runs.

At most one drain job waits in the queue at a time (a flag with a TTL); the job clears the flag
before it reads the database, so a case filed while it runs rings again. If Redis is down the
ring is lost, not the case: the periodic sweep finds filed cases by a query.
"""

from __future__ import annotations

import logging
import uuid

from flask import has_app_context
from redis.exceptions import RedisError
from rq import Retry
from sqlalchemy import event
from sqlalchemy.orm import Session

from gridmgmt.kernel.db import AppSession
from gridmgmt.kernel.queue import DISPATCH_QUEUE, queues

log = logging.getLogger(__name__)

PENDING_FLAG = "gridmgmt:dispatch:pending"
FLAG_TTL_SECONDS = 60  # a lost job frees the flag by itself; the sweep covers the gap
RING_KEY = "gridmgmt.ring_dispatch"
RETRY = Retry(max=5, interval=[1, 5, 15, 60, 300])
DISPATCH_JOB = "dispatch.jobs.dispatch_cases"  # by path: the kernel imports nothing above it


def ring_after_commit(session: Session, case_id: int) -> None:
    """Ask for a dispatch of `case_id` once this session's transaction commits."""
    session.info.setdefault(RING_KEY, []).append(case_id)


def ring(case_ids: list[int] | None = None, force: bool = False) -> bool:
    """Enqueue a drain job unless one is already waiting; True when one was enqueued.

    Raises:
        RedisError: Redis is unreachable (callers that can live without it catch this).
    """
    redis = queues.redis
    if not force and not redis.set(PENDING_FLAG, "1", nx=True, ex=FLAG_TTL_SECONDS):
        return False
    if force:
        redis.set(PENDING_FLAG, "1", ex=FLAG_TTL_SECONDS)
    try:
        queues.get(DISPATCH_QUEUE).enqueue(
            DISPATCH_JOB,
            case_ids or [],
            job_id=f"dispatch-{uuid.uuid4().hex[:16]}",
            retry=RETRY,
            result_ttl=300,
            failure_ttl=7 * 24 * 3600,
        )
    except BaseException:
        redis.delete(PENDING_FLAG)  # no job is waiting after all: let the next ring try
        raise
    return True


@event.listens_for(AppSession, "after_commit")
def _ring_on_commit(session: Session) -> None:
    case_ids = session.info.pop(RING_KEY, None)
    if not case_ids or not has_app_context():
        return
    try:
        ring(case_ids)
    except RedisError as exc:  # the case is safe in the database; the sweep will find it
        log.warning("dispatch doorbell failed (%s); the sweep will dispatch %s", exc, case_ids)
    except Exception:  # after the commit nothing may fail the request: the data is stored
        log.exception("dispatch doorbell failed; the sweep will dispatch %s", case_ids)


@event.listens_for(AppSession, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(RING_KEY, None)
