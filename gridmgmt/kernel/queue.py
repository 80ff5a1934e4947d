"""Redis connection and the RQ queues, one Redis client per app."""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis
from rq import Queue

DISPATCH_QUEUE = "dispatch"
PERIODIC_QUEUE = "periodic"
EXTENSION = "gridmgmt.redis"
COUNTERS = "gridmgmt.redis.counters"
PERIODIC = "gridmgmt.periodic_jobs"

# Count one hit on each key; a key's first hit starts its window. One round trip for all.
_COUNT_HITS = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return counts
"""


class Queues:
    """Flask extension giving the current app's Redis client and its named queues."""

    def init_app(self, app: Flask) -> None:
        """Create the app's client for `REDIS_URL` (redis-py connects on first command)."""
        redis = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)
        app.extensions[EXTENSION] = redis
        app.extensions[COUNTERS] = redis.register_script(_COUNT_HITS)

    @property
    def redis(self) -> Redis:
        """The Redis client of the app in context."""
        return current_app.extensions[EXTENSION]

    def count_hits(self, keys: list[str], window_seconds: int) -> list[int]:
        """Add a hit to each counter and return the counts; a counter lasts `window_seconds`
        from its first hit.

        Raises:
            RedisError: Redis is unreachable.
        """
        return current_app.extensions[COUNTERS](keys=keys, args=[window_seconds])

    def get(self, name: str = DISPATCH_QUEUE) -> Queue:
        """Return the RQ queue called `name`."""
        return Queue(name, connection=self.redis)


queues = Queues()


def register_periodic(app: Flask, job: str, interval_seconds: int) -> None:
    """Have the scheduler enqueue the job at dotted path `job` every `interval_seconds`. Each
    domain package registers its own; paths, not functions, so nothing imports upward."""
    app.extensions.setdefault(PERIODIC, {})[job] = interval_seconds


def periodic_jobs(app: Flask) -> dict[str, int]:
    """The registered periodic jobs: dotted path → interval in seconds."""
    return dict(app.extensions.get(PERIODIC, {}))
