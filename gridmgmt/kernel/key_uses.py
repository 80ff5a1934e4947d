"""How many requests each api key has made: counted in Redis, folded into the database.

A row that every request of a client updated would serialise that client's reports (each
holds the key's row until it commits), so a request adds one to a Redis hash instead
(`HINCRBY`, one round trip beside the rate limiter's), and the periodic job `fold_key_uses`
takes the hash's counts and adds them to `api_keys.use_count` in one statement. The count an
administrator sees is the database's plus what waits in Redis.

The database stays the record: a count taken from Redis whose statement fails is put back; a
Redis that is down loses the uses it could not count (the request itself is never refused for
it), and a Redis that loses its data loses the uses of the last minute at most. The count is
a statistic, not a bill.
"""

from __future__ import annotations

import logging

from flask import Flask
from redis import Redis, RedisError
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import BigInteger

from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import queues, register_periodic

log = logging.getLogger(__name__)

USES = "gridmgmt:api-key-uses"  # hash: key id → requests since the last fold

_ADD = text("""
    UPDATE api_keys SET use_count = use_count + uses.n
    FROM unnest(:ids, :counts) AS uses(id, n) WHERE api_keys.id = uses.id
""").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)), bindparam("counts", type_=ARRAY(BigInteger))
)


def count_use(redis: Redis, key_id: int) -> None:
    """Add one request to the key's count (a Redis error is logged, never raised: a client's
    request is not refused because its statistic cannot be kept)."""
    try:
        redis.hincrby(USES, str(key_id), 1)
    except RedisError as err:
        log.warning("api key %s: use not counted (%s)", key_id, err)


def waiting_uses(redis: Redis) -> dict[int, int]:
    """The uses counted since the last fold, by key id ({} when Redis cannot say)."""
    try:
        return {int(k): int(v) for k, v in redis.hgetall(USES).items()}
    except RedisError:
        return {}


def take_uses(redis: Redis) -> dict[int, int]:
    """The counts waiting in Redis, taken and emptied as one step."""
    with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(USES)
        pipe.delete(USES)
        taken, _ = pipe.execute()
    return {int(k): int(v) for k, v in taken.items()}


def put_back(redis: Redis, counts: dict[int, int]) -> None:
    """Return counts taken from Redis whose writing failed (added to any counted since)."""
    with redis.pipeline(transaction=True) as pipe:
        for key_id, n in counts.items():
            pipe.hincrby(USES, str(key_id), n)
        pipe.execute()


def add_uses(session: Session, counts: dict[int, int]) -> None:
    """Add `counts` (key id → requests) to the keys' `use_count`, in one statement."""
    session.execute(_ADD, {"ids": list(counts), "counts": list(counts.values())})


def fold_key_uses() -> str:
    """The periodic job: the uses counted in Redis added to the database (put back in Redis
    if the transaction fails, so the next run adds them)."""
    redis = queues.redis
    counts = take_uses(redis)
    try:
        if counts:
            with db.transaction() as session:
                add_uses(session, counts)
    except Exception:
        put_back(redis, counts)
        raise
    finally:
        db.session.remove()
    folded = sum(counts.values())
    (log.info if folded else log.debug)("api key uses: %s folded", folded)
    return f"{folded} uses folded"


# The kernel's periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {f"{__name__}.fold_key_uses": 60}


def init_app(app: Flask) -> None:
    """Have the scheduler fold the counts every minute."""
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
