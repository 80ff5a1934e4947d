"""The clock: one place the code asks for the time (tests may pass their own `now`).

`at(moment)` runs a block as if it were `moment`: the demo city replays a real past through
the same services a working city runs, so its cases, events and deadlines carry the times of
that past. The lifecycle's writer stamps cases and events with this clock, not the database's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_moment: ContextVar[datetime | None] = ContextVar("gridmgmt_clock_moment", default=None)


def now_utc() -> datetime:
    """The current time (UTC, aware), or the moment of an enclosing `at`."""
    return _moment.get() or datetime.now(UTC)


@contextmanager
def at(moment: datetime) -> Iterator[datetime]:
    """Run the block at `moment` (aware): `now_utc()` answers it until the block ends."""
    if moment.tzinfo is None:
        raise ValueError("the clock is set to an aware time")
    token = _moment.set(moment.astimezone(UTC))
    try:
        yield moment
    finally:
        _moment.reset(token)
