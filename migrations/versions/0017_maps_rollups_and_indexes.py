"""rollups and indexes for the maps, the dashboard and the inspectors' evaluation

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 03:00:00.000000

Measured with `bench/pages.py` at a million cases (EXPLAIN ANALYZE):

- the inspectors' table counted each inspector's reports by reading every case (no index of
  `reporter_id`: 250 ms a count, two per inspector) and their checks by reading every check of
  the period (900,000 events a year, to keep one inspector's): partial indexes of the cases
  that have a reporter and of the check events, by person and time;
- the map of a year aggregated a million cases (a parallel scan, ~400 ms), the dashboard 90
  days of them (~250,000 rows, sorted): rollups of whole past days, which keep only what a
  case's later changes leave alone or what the pages may show as of the last refresh. Per
  cell, the cases reported, and among them the due-and-closed and the on-time ones, by day
  (`map_cell_days`, the last 62 days) and by month (`map_cell_months`); the cases reported per
  day and category (`case_days`). What the clock or a case's status changes (open, overdue,
  open and past its deadline) is never rolled up: it is counted live, from the partial index
  of the open cases by report time (`ix_cases_open_reported_at`).

The rollups are refreshed with the evaluation's (`refresh_evaluation_rollup`, every 10 minutes
by the scheduler), created empty here: the rollup state is cleared so that pages count live
until the next refresh fills them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# cases.status.OPEN_STATUSES, sorted (the migration keeps the statuses of its day).
OPEN = ("checked", "checking", "dispatched", "filed", "handled", "in_progress", "reported",
        "returned", "suspended", "verified")  # fmt: skip
OPEN_WHERE = f"status IN ({', '.join(repr(s) for s in OPEN)})"
CHECKS_WHERE = "action IN ('check_pass', 'check_fail')"
TODAY = "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
# Days kept per day: enough for the edges of the periods people look at (the last 30 days, a
# year from today); older edges of a period are counted live.
DAYS_KEPT = 62

MAP_CELL_DAYS = f"""
CREATE MATERIALIZED VIEW map_cell_days AS
SELECT (reported_at AT TIME ZONE 'UTC')::date AS day, cell_id, community_id,
       count(*) AS n,
       count(*) FILTER (WHERE deadline IS NOT NULL AND closed_at IS NOT NULL) AS due_closed,
       count(*) FILTER (WHERE closed_at IS NOT NULL AND COALESCE(handled_at, closed_at) <= deadline)
           AS on_time
FROM cases
WHERE cell_id IS NOT NULL AND reported_at < {TODAY}
  AND reported_at >= {TODAY} - interval '{DAYS_KEPT} days'
GROUP BY 1, 2, 3
WITH NO DATA
"""
MAP_CELL_MONTHS = f"""
CREATE MATERIALIZED VIEW map_cell_months AS
SELECT date_trunc('month', reported_at AT TIME ZONE 'UTC')::date AS month, cell_id,
       community_id,
       count(*) AS n,
       count(*) FILTER (WHERE deadline IS NOT NULL AND closed_at IS NOT NULL) AS due_closed,
       count(*) FILTER (WHERE closed_at IS NOT NULL AND COALESCE(handled_at, closed_at) <= deadline)
           AS on_time
FROM cases
WHERE cell_id IS NOT NULL AND reported_at < {TODAY}
GROUP BY 1, 2, 3
WITH NO DATA
"""
CASE_DAYS = f"""
CREATE MATERIALIZED VIEW case_days AS
SELECT (reported_at AT TIME ZONE 'UTC')::date AS day, category_id, count(*) AS n
FROM cases
WHERE reported_at < {TODAY}
GROUP BY 1, 2
WITH NO DATA
"""
ROLLUPS = ("evaluation_days", "map_cell_days", "map_cell_months", "case_days")

FUNCTION = """
CREATE OR REPLACE FUNCTION public.refresh_evaluation_rollup(concurrent boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE rollup text;
BEGIN
    FOREACH rollup IN ARRAY ARRAY[{names}] LOOP
        -- CONCURRENTLY (readers never wait) needs a view that has data already.
        IF concurrent AND (SELECT relispopulated FROM pg_class
                           WHERE oid = format('public.%I', rollup)::regclass) THEN
            EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY public.%I', rollup);
        ELSE
            EXECUTE format('REFRESH MATERIALIZED VIEW public.%I', rollup);
        END IF;
    END LOOP;
END
$$
"""
FUNCTION_0008 = """
CREATE OR REPLACE FUNCTION public.refresh_evaluation_rollup(concurrent boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF concurrent THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY public.evaluation_days;
    ELSE
        REFRESH MATERIALIZED VIEW public.evaluation_days;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_index(
        "ix_cases_reporter_reported_at",
        "cases",
        ["reporter_id", "reported_at"],
        postgresql_include=["filed_at"],
        postgresql_where=sa.text("reporter_id IS NOT NULL"),
    )
    op.create_index(
        "ix_case_events_checks",
        "case_events",
        ["actor_id", "created_at"],
        postgresql_include=["case_id"],
        postgresql_where=sa.text(CHECKS_WHERE),
    )
    op.create_index(
        "ix_cases_open_reported_at",
        "cases",
        ["reported_at"],
        postgresql_include=["cell_id", "community_id", "status", "deadline", "closed_at"],
        postgresql_where=sa.text(OPEN_WHERE),
    )
    op.execute(MAP_CELL_DAYS)
    op.execute(MAP_CELL_MONTHS)
    op.execute(CASE_DAYS)
    # Unique, so that they can be refreshed CONCURRENTLY (readers never wait).
    op.execute(
        "CREATE UNIQUE INDEX ix_map_cell_days_key ON map_cell_days "
        "(day, cell_id, community_id) NULLS NOT DISTINCT"
    )
    op.execute(
        "CREATE UNIQUE INDEX ix_map_cell_months_key ON map_cell_months "
        "(month, cell_id, community_id) NULLS NOT DISTINCT"
    )
    op.execute("CREATE UNIQUE INDEX ix_case_days_key ON case_days (day, category_id)")
    op.execute(FUNCTION.replace("{names}", ", ".join(f"'{name}'" for name in ROLLUPS)))
    # The new views are empty: until the next refresh fills them, count live.
    op.execute("DELETE FROM rollup_state WHERE name = 'evaluation_days'")


def downgrade() -> None:
    op.execute(FUNCTION_0008)
    op.execute("DROP MATERIALIZED VIEW IF EXISTS case_days")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS map_cell_months")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS map_cell_days")
    op.drop_index("ix_cases_open_reported_at", table_name="cases")
    op.drop_index("ix_case_events_checks", table_name="case_events")
    op.drop_index("ix_cases_reporter_reported_at", table_name="cases")
