"""The maps' RQ jobs: keeping the evaluation rollup current. They run in the worker's app
context and let exceptions propagate (RQ records and retries them)."""

from __future__ import annotations

from gridmgmt.kernel.db import db
from maps.evaluation import refresh_rollup


def refresh_evaluation() -> str:
    """Recount the evaluation rollup of whole past days (long periods answer from it)."""
    with db.transaction() as session:
        through = refresh_rollup(session)
    db.session.remove()
    return through.isoformat()


# The maps' periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {f"{__name__}.refresh_evaluation": 600}
