"""The clock: one place the code asks for the time (tests may pass their own `now`)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    """The current time (UTC, aware)."""
    return datetime.now(UTC)
