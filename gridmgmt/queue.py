"""Redis connection and the RQ queues, bound to the app's config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis import Redis
from rq import Queue

if TYPE_CHECKING:
    from flask import Flask

DISPATCH_QUEUE = "dispatch"
PERIODIC_QUEUE = "periodic"


class Queues:
    """Flask extension holding one Redis connection and the named queues."""

    def __init__(self) -> None:
        self.redis: Redis | None = None

    def init_app(self, app: Flask) -> None:
        """Connect lazily to `REDIS_URL` (redis-py connects on first command)."""
        self.redis = Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
        )
        app.extensions["gridmgmt.queues"] = self

    def get(self, name: str = DISPATCH_QUEUE) -> Queue:
        """Return the RQ queue called `name`."""
        assert self.redis is not None, "Queues.init_app was not called"
        return Queue(name, connection=self.redis)


queues = Queues()
