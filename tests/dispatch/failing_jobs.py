"""Job functions that fail on purpose, importable by RQ as `tests.dispatch.failing_jobs.*`."""

from __future__ import annotations


def boom(case_id: int) -> None:
    """A dispatch job that cannot reach its unit."""
    raise RuntimeError("no route to unit")
