"""The maps' RQ jobs: keeping the evaluation rollup current. They run in the worker's app
context and let exceptions propagate (RQ records and retries them)."""

from __future__ import annotations

import logging

from gridmgmt.kernel.db import db
from maps.evaluation import refresh_rollup, rollup_through

log = logging.getLogger(__name__)  # one INFO line when the rollup takes in a new day


def refresh_evaluation() -> str:
    """Recount the evaluation rollup of whole past days (long periods answer from it)."""
    with db.transaction() as session:
        before = rollup_through(session)
        through = refresh_rollup(session)
    db.session.remove()
    if through != before:
        log.info("evaluation rollup now counts the days before %s", through)
    else:
        log.debug("evaluation rollup recounted through %s", through)
    return through.isoformat()


# The maps' periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {f"{__name__}.refresh_evaluation": 600}
