"""the map's rollups as running sums: any period of the last year in two rows per cell

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-01 18:30:00.000000

A map period was read as whole months (a row per cell each) plus the days of its first and
last month (a row per cell and day): a year to the 15th read 125,000 rows at ten million
cases, and the open cases of each of those days again. `map_cell_sums` holds, per cell and
month, the counts added up from the first whole month of the last 400 days to each day of the
month (arrays indexed by the day): the cases reported, the due and closed ones, the ones
closed on time (from `map_cell_days`), and the open, overdue and due open ones as of the
refresh's moment T0 (from the cases, as migration 0031 counted them). Any period inside is
the running sums at its last day less those at the day before its first: two rows per cell.

`refresh_map_sums` (the owner's, called after the daily refreshes, in their transaction)
writes every row again: the work of the 400 days kept, not of the archive, and not of one
request. It deletes the log of changes to open cases in the statement that counts them, as
0031's refresh did (which it replaces, with 0031's open counts per day and month). The state
row 'map_sums' (through, and T0 as refreshed_at) replaces 0031's 'map_open'.
"""

from collections.abc import Sequence

from alembic import op

from migrations.siblings import migration

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_KEPT = 400  # as migration 0032's daily rollup
OPEN = ("checked", "checking", "dispatched", "filed", "handled", "in_progress", "reported",
        "returned", "suspended", "verified")  # fmt: skip
OPEN_SQL = f"c.status IN ({', '.join(repr(s) for s in OPEN)})"
RUNNING_SQL = "c.status IN ('dispatched', 'in_progress')"
MEASURES = ("n", "due_closed", "on_time", "open", "overdue", "due")


def _utc(day: str) -> str:
    return f"({day}::timestamp AT TIME ZONE 'UTC')"


_CELL_COUNTS = ("n", "due_closed", "on_time")
_OPEN_COUNTS = ("open", "overdue", "due")
_DAILY = ", ".join(
    [f"COALESCE(d.{m}, 0) AS {m}" for m in _CELL_COUNTS]
    + [f"COALESCE(o.{m}, 0) AS {m}" for m in _OPEN_COUNTS]
)
_DENSE = ", ".join(f"COALESCE(x.{m}, 0) AS {m}" for m in MEASURES)
_RUNNING = ", ".join(f"sum({m}) OVER w AS {m}" for m in MEASURES)
_ARRAYS = ", ".join(f"array_agg({m}::int ORDER BY day)" for m in MEASURES)
# Places are (cell, community) with -1 for no community: equal keys that hash joins can use.
REFRESH = f"""
CREATE FUNCTION public.refresh_map_sums() RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET work_mem = '256MB'
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    -- The first day of a month among the days the daily rollup keeps.
    first date := date_trunc('month', (now() AT TIME ZONE 'UTC')::date - {DAYS_KEPT}
                             + interval '1 month' - interval '1 day')::date;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.map_sums'));  -- one at a time
    DELETE FROM map_cell_sums;
    -- One statement, one snapshot: each logged change to an open case is either counted here
    -- or left in the log for the readers.
    WITH logged AS (DELETE FROM map_open_log),
    opened AS (
        SELECT (c.reported_at AT TIME ZONE 'UTC')::date AS day, c.cell_id,
               COALESCE(c.community_id, -1) AS community, count(*)::int AS open,
               count(*) FILTER (WHERE {RUNNING_SQL} AND c.deadline < now())::int AS overdue,
               count(*) FILTER (WHERE c.deadline < now() AND c.closed_at IS NULL)::int AS due
        FROM cases c
        WHERE {OPEN_SQL} AND c.cell_id IS NOT NULL
          AND c.reported_at >= {_utc("first")} AND c.reported_at < {_utc("today")}
        GROUP BY 1, 2, 3
    ),
    daily AS (
        SELECT COALESCE(d.day, o.day) AS day, COALESCE(d.cell_id, o.cell_id) AS cell_id,
               COALESCE(d.community, o.community) AS community, {_DAILY}
        FROM (SELECT day, cell_id, COALESCE(community_id, -1) AS community, n::int AS n,
                     due_closed::int AS due_closed, on_time::int AS on_time
              FROM map_cell_days WHERE day >= first AND day < today) AS d
        FULL JOIN opened o
            ON o.day = d.day AND o.cell_id = d.cell_id AND o.community = d.community
    ),
    places AS (SELECT DISTINCT cell_id, community FROM daily),
    dense AS (
        SELECT p.cell_id, p.community, g.day, {_DENSE}
        FROM places p
        CROSS JOIN (SELECT s::date AS day
                    FROM generate_series(first, today - 1, interval '1 day') AS s) AS g
        LEFT JOIN daily x
            ON x.day = g.day AND x.cell_id = p.cell_id AND x.community = p.community
    ),
    running AS (
        SELECT cell_id, community, day, {_RUNNING}
        FROM dense
        WINDOW w AS (PARTITION BY cell_id, community ORDER BY day)
    )
    INSERT INTO map_cell_sums
    SELECT date_trunc('month', day)::date, cell_id, NULLIF(community, -1), {_ARRAYS}
    FROM running GROUP BY 1, 2, 3;
    INSERT INTO rollup_state (name, through, refreshed_at) VALUES ('map_sums', today, now())
    ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
        refreshed_at = EXCLUDED.refreshed_at;
END
$$
"""


def upgrade() -> None:
    arrays = ", ".join(f"{m} integer[] NOT NULL" for m in MEASURES)
    op.execute(
        "CREATE TABLE map_cell_sums (month date NOT NULL, cell_id integer NOT NULL,"
        f" community_id integer, {arrays})"
    )
    op.execute(
        "CREATE UNIQUE INDEX ix_map_cell_sums_key ON map_cell_sums (month, cell_id, community_id)"
        " NULLS NOT DISTINCT"
    )
    op.execute(REFRESH)
    op.execute("DROP FUNCTION public.refresh_open_rollup()")
    op.execute("DROP TABLE map_open_days")
    op.execute("DROP TABLE map_open_months")
    op.execute("DELETE FROM rollup_state WHERE name = 'map_open'")  # counted again at a refresh


def downgrade() -> None:
    migration_0031 = migration("0031_open_cases_rolled_up.py")
    op.execute("DELETE FROM rollup_state WHERE name = 'map_sums'")
    op.execute("DROP FUNCTION public.refresh_map_sums()")
    op.execute("DROP TABLE map_cell_sums")
    for table, bucket in (("map_open_days", "day"), ("map_open_months", "month")):
        op.execute(
            f"CREATE TABLE {table} ({bucket} date NOT NULL, cell_id integer NOT NULL,"
            f" community_id integer, {migration_0031.COUNTS})"
        )
        op.execute(
            f"CREATE UNIQUE INDEX ix_{table}_key ON {table} ({bucket}, cell_id, community_id)"
            " NULLS NOT DISTINCT"
        )
    op.execute(migration_0031.REFRESH)
