"""The event logs' monthly partitions: made ahead of time, old ones dropped when a retention
is set.

`case_events` (by `created_at`) and `security_events` (by `at`) are partitioned by calendar
month, UTC (migration 0010): `<table>_pYYYY_MM`, and a DEFAULT partition `<table>_default`
that takes any row of a month without a partition, so an insert never fails. The periodic job
`maintain_partitions` (hourly, run by the scheduler as the app's role) calls the owner's
SECURITY DEFINER function that creates them, since only the owner may create a table:

- `create_event_partitions(PARTITION_MONTHS_AHEAD)`: the partitions of the current month and
  of the next PARTITION_MONTHS_AHEAD months, and of every month whose rows wait in a DEFAULT
  partition (they move into it). A partition gets its parent's grants and its own TRUNCATE
  trigger (the append-only row trigger is cloned onto it by PostgreSQL). Idempotent.
- `drop_event_partitions(table, months)` when CASE_EVENTS_RETENTION_MONTHS or
  SECURITY_EVENTS_RETENTION_MONTHS is set: drops the partitions of whole months before the
  current month minus that many months, so at least that much history is always kept. 0 (the
  default) keeps everything; anything else must be at least 6 months, which the function
  itself enforces too. Only the owner may run it (`flask database retention`, with the
  owner's MIGRATE_DATABASE_URL, e.g. from a monthly timer): the app's role, which only ever
  appends to the logs, cannot shorten them.

Each call runs in a transaction of its own, waits at most 5 s for its locks (a partition is
created or dropped under a short lock on the table) and is serialised with the others by an
advisory lock; a failure is raised, RQ records it, and the next hour's run tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import register_periodic

log = logging.getLogger(__name__)

MIN_RETENTION_MONTHS = 6  # as the SQL function drop_event_partitions enforces
MAX_MONTHS_AHEAD = 120  # ...and create_event_partitions
# The partitioned tables and the settings of their retention.
RETENTION = {
    "case_events": "CASE_EVENTS_RETENTION_MONTHS",
    "security_events": "SECURITY_EVENTS_RETENTION_MONTHS",
}


def check_settings(config: Mapping[str, Any]) -> None:
    """Refuse partition settings that make no sense.

    Raises:
        RuntimeError: PARTITION_MONTHS_AHEAD out of 0..120, or a retention that is neither 0
            (keep everything) nor at least 6 months; the message names the variable.
    """
    ahead = int(config.get("PARTITION_MONTHS_AHEAD", 3))
    if not 0 <= ahead <= MAX_MONTHS_AHEAD:
        raise RuntimeError(
            f"GRIDMGMT_PARTITION_MONTHS_AHEAD={ahead}: partitions are made 0 to "
            f"{MAX_MONTHS_AHEAD} months ahead"
        )
    for setting in RETENTION.values():
        months = int(config.get(setting, 0))
        if months != 0 and months < MIN_RETENTION_MONTHS:
            raise RuntimeError(
                f"GRIDMGMT_{setting}={months}: the event logs are kept at least "
                f"{MIN_RETENTION_MONTHS} months (0 keeps everything)"
            )


def retention_months(config: Mapping[str, Any]) -> dict[str, int]:
    """The tables that have a retention, and its months (tables kept forever left out)."""
    check_settings(config)
    months = {table: int(config.get(setting, 0)) for table, setting in RETENTION.items()}
    return {table: keep for table, keep in months.items() if keep}


def create_partitions(session: Session, months_ahead: int) -> int:
    """Make the partitions of this month and `months_ahead` more (and of the months waiting in
    a DEFAULT partition); the number made (0: all there already)."""
    made = session.scalar(
        text("SELECT public.create_event_partitions(:ahead)"), {"ahead": months_ahead}
    )
    return int(made or 0)


def drop_old_partitions(session: Session, table: str, keep_months: int) -> int:
    """Drop the partitions of `table` of whole months before this month minus `keep_months`;
    the number dropped."""
    dropped = session.scalar(
        text("SELECT public.drop_event_partitions(:table, :keep)"),
        {"table": table, "keep": keep_months},
    )
    return int(dropped or 0)


def maintain_partitions() -> str:
    """The periodic job: the partitions ahead (retention is the owner's: `apply_retention`)."""
    with db.transaction() as session:
        made = create_partitions(session, int(current_app.config["PARTITION_MONTHS_AHEAD"]))
    db.session.remove()
    summary = f"{made} partitions made"
    (log.info if made else log.debug)("event log partitions: %s", summary)
    return summary


def apply_retention(session: Session, config: Mapping[str, Any]) -> dict[str, int]:
    """Drop the months of each log older than its retention (a session of the owner's);
    the partitions dropped by table."""
    return {
        table: drop_old_partitions(session, table, keep)
        for table, keep in retention_months(config).items()
    }


# The kernel's periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {f"{__name__}.maintain_partitions": 3600}


def init_app(app: Flask) -> None:
    """Check the partition settings (the app refuses to start with a bad one) and have the
    scheduler run the job."""
    check_settings(app.config)
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
