"""Redis connection and the RQ queues, one Redis client per app."""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis
from rq import Queue

DISPATCH_QUEUE = "dispatch"
PERIODIC_QUEUE = "periodic"
EXTENSION = "gridmgmt.redis"


class Queues:
    """Flask extension giving the current app's Redis client and its named queues."""

    def init_app(self, app: Flask) -> None:
        """Create the app's client for `REDIS_URL` (redis-py connects on first command)."""
        app.extensions[EXTENSION] = Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
        )

    @property
    def redis(self) -> Redis:
        """The Redis client of the app in context."""
        return current_app.extensions[EXTENSION]

    def get(self, name: str = DISPATCH_QUEUE) -> Queue:
        """Return the RQ queue called `name`."""
        return Queue(name, connection=self.redis)


queues = Queues()
