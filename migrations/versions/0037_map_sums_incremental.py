"""the map's running sums rewritten only for the places that changed

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-01 20:00:00.000000

Migration 0033's refresh wrote every running sum again: every place (a cell and its community)
times every day of the 400 kept, 1.9 million rows at ten million cases, 20-25 s every ten
minutes, and more with more cells. Now only the places whose counts changed are written again,
from the first month they changed in:

- the daily rollup's changes: a statement trigger on `map_cell_days` logs the rows its refresh
  deletes and inserts (`map_sums_changes`); a day whose recount gives the same numbers nets to
  nothing;
- the open cases' counts per day and place as of the refresh (`map_open_days`, kept from one
  refresh to the next), compared with the previous ones: changed cases and deadlines passed;
- a place's sums before the first changed month are kept, and carried on from the last day of
  the month before.

The first refresh of a month writes everything again (the 400 days start a month later, and
every place needs a row for the new month). This migration empties the sums, so the next
refresh writes them whole; until then the map counts as before them.
"""

from collections.abc import Sequence

from alembic import op

from migrations.siblings import migration

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_KEPT = 400  # as migration 0032's daily rollup
OPEN_SQL = ("c.status IN ('checked', 'checking', 'dispatched', 'filed', 'handled', 'in_progress',"
            " 'reported', 'returned', 'suspended', 'verified')")  # fmt: skip
RUNNING_SQL = "c.status IN ('dispatched', 'in_progress')"
CELL = ("n", "due_closed", "on_time")
OPEN = ("open", "overdue", "due")
MEASURES = (*CELL, *OPEN)


def _utc(day: str) -> str:
    return f"({day}::timestamp AT TIME ZONE 'UTC')"


def _list(template: str, names: Sequence[str] = MEASURES) -> str:
    return ", ".join(template.format(m=m) for m in names)


MARK = f"""
CREATE FUNCTION public.log_map_cell_days() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO map_sums_changes
        SELECT 1, day, cell_id, COALESCE(community_id, -1), {_list("{m}", CELL)} FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO map_sums_changes
        SELECT -1, day, cell_id, COALESCE(community_id, -1), {_list("{m}", CELL)} FROM old_rows;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGERS = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}
# A place's day: its rollup counts (x) and open counts (o), one of them possibly missing.
_JOINED = f"""COALESCE(x.day, o.day) AS day, COALESCE(x.cell_id, o.cell_id) AS cell_id,
               COALESCE(x.community, o.community) AS community,
               {_list("COALESCE(x.{m}, 0) AS {m}", CELL)},
               {_list("COALESCE(o.{m}, 0) AS {m}", OPEN)}"""
# The places' days (`dense`) added up, and written as one array per place and month.
_WRITTEN = f"""running AS (
        SELECT cell_id, community, day, {_list("sum({m}) OVER w AS {m}")}
        FROM dense
        WINDOW w AS (PARTITION BY cell_id, community ORDER BY day)
    )
    INSERT INTO map_cell_sums
    SELECT date_trunc('month', day)::date, cell_id, NULLIF(community, -1),
           {_list("array_agg({m}::int ORDER BY day)")}
    FROM running GROUP BY 1, 2, 3;"""
REFRESH = f"""
CREATE OR REPLACE FUNCTION public.refresh_map_sums() RETURNS void
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
    whole boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.map_sums'));  -- one at a time
    DROP TABLE IF EXISTS pg_temp.open_now, pg_temp.dirty;  -- a refresh earlier in the transaction
    -- Everything again when the months kept are not the ones written (a new month, or none).
    SELECT min(month) IS DISTINCT FROM first
           OR max(month) IS DISTINCT FROM date_trunc('month', today - 1)::date
    INTO whole FROM map_cell_sums;

    -- The open cases per day and place as of now, in the statement that empties the log of
    -- changes to them (one snapshot: each change is either counted here or left in the log).
    CREATE TEMPORARY TABLE open_now (day date, cell_id integer, community integer,
                                     open integer, overdue integer, due integer)
        ON COMMIT DROP;
    WITH logged AS (DELETE FROM map_open_log)
    INSERT INTO open_now
    SELECT (c.reported_at AT TIME ZONE 'UTC')::date, c.cell_id, COALESCE(c.community_id, -1),
           count(*), count(*) FILTER (WHERE {RUNNING_SQL} AND c.deadline < now()),
           count(*) FILTER (WHERE c.deadline < now() AND c.closed_at IS NULL)
    FROM cases c
    WHERE {OPEN_SQL} AND c.cell_id IS NOT NULL
      AND c.reported_at >= {_utc("first")} AND c.reported_at < {_utc("today")}
    GROUP BY 1, 2, 3;
    ANALYZE pg_temp.open_now;

    -- The places to write again, each from the first month it changed in.
    CREATE TEMPORARY TABLE dirty (cell_id integer, community integer, since date) ON COMMIT DROP;
    IF whole THEN
        DELETE FROM map_cell_sums;
        INSERT INTO dirty
        SELECT cell_id, community, first FROM (
            SELECT cell_id, COALESCE(community_id, -1) AS community FROM map_cell_days
            WHERE day >= first AND day < today
            UNION SELECT cell_id, community FROM open_now
        ) AS places;
    ELSE
        INSERT INTO dirty
        SELECT cell_id, community, greatest(first, date_trunc('month', min(day))::date)
        FROM (
            SELECT day, cell_id, community FROM map_sums_changes
            WHERE day >= first AND day < today
            GROUP BY 1, 2, 3
            HAVING {" OR ".join(f"sum(sign * {m}) <> 0" for m in CELL)}
            UNION ALL
            SELECT COALESCE(a.day, b.day), COALESCE(a.cell_id, b.cell_id),
                   COALESCE(a.community, b.community)
            FROM open_now a
            FULL JOIN map_open_days b
                ON b.day = a.day AND b.cell_id = a.cell_id AND b.community = a.community
            WHERE {" OR ".join(f"a.{m} IS DISTINCT FROM b.{m}" for m in OPEN)}
        ) AS changed
        GROUP BY 1, 2;
        DELETE FROM map_cell_sums s USING dirty d
        WHERE s.cell_id = d.cell_id AND COALESCE(s.community_id, -1) = d.community
          AND s.month >= d.since;
    END IF;
    ANALYZE pg_temp.dirty;  -- a few places or all of them: the plan below depends on it
    DELETE FROM map_sums_changes;
    DELETE FROM map_open_days;
    INSERT INTO map_open_days SELECT * FROM open_now;

    IF whole THEN  -- every place from the first day: no carrying, no list of places to join
        WITH daily AS (
            SELECT {_JOINED}
            FROM (SELECT day, cell_id, COALESCE(community_id, -1) AS community,
                         {_list("{m}::int AS {m}", CELL)}
                  FROM map_cell_days WHERE day >= first AND day < today) AS x
            FULL JOIN open_now o
                ON o.day = x.day AND o.cell_id = x.cell_id AND o.community = x.community
        ),
        dense AS (
            SELECT p.cell_id, p.community, g.day, {_list("COALESCE(x.{m}, 0) AS {m}")}
            FROM (SELECT DISTINCT cell_id, community FROM daily) AS p
            CROSS JOIN (SELECT s::date AS day
                        FROM generate_series(first, today - 1, interval '1 day') AS s) AS g
            LEFT JOIN daily x
                ON x.day = g.day AND x.cell_id = p.cell_id AND x.community = p.community
        ),
        {_WRITTEN}
    ELSE
    -- Each dirty place's sums from its first changed month: carried on from the last day of
    -- the month before (kept), added up day by day.
    WITH carried AS (
        SELECT d.cell_id, d.community, d.since,
               {_list("COALESCE(s.{m}[cardinality(s.{m})], 0) AS {m}")}
        FROM dirty d
        LEFT JOIN map_cell_sums s
            ON s.cell_id = d.cell_id AND COALESCE(s.community_id, -1) = d.community
           AND s.month = (d.since - interval '1 month')::date
    ),
    daily AS (
        SELECT {_JOINED}
        FROM (SELECT m.day, m.cell_id, COALESCE(m.community_id, -1) AS community,
                     {_list("m.{m}::int AS {m}", CELL)}
              FROM map_cell_days m
              JOIN dirty d ON d.cell_id = m.cell_id
                          AND d.community = COALESCE(m.community_id, -1)
              WHERE m.day >= d.since AND m.day < today) AS x
        FULL JOIN (SELECT o.* FROM open_now o
                   JOIN dirty d ON d.cell_id = o.cell_id AND d.community = o.community
                   WHERE o.day >= d.since) AS o
            ON o.day = x.day AND o.cell_id = x.cell_id AND o.community = x.community
    ),
    dense AS (
        SELECT c.cell_id, c.community, g.day,
               {
    _list("COALESCE(x.{m}, 0) + CASE WHEN g.day = c.since THEN c.{m} ELSE 0 END AS {m}")
}
        FROM carried c
        CROSS JOIN LATERAL (SELECT s::date AS day
                            FROM generate_series(c.since, today - 1, interval '1 day') AS s) g
        LEFT JOIN daily x
            ON x.day = g.day AND x.cell_id = c.cell_id AND x.community = c.community
    ),
    {_WRITTEN}
    END IF;
    INSERT INTO rollup_state (name, through, refreshed_at) VALUES ('map_sums', today, now())
    ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
        refreshed_at = EXCLUDED.refreshed_at;
END
$$
"""


def upgrade() -> None:
    op.execute(
        "CREATE TABLE map_sums_changes (sign smallint NOT NULL, day date NOT NULL,"
        " cell_id integer NOT NULL, community integer NOT NULL, n bigint, due_closed bigint,"
        " on_time bigint)"
    )
    op.execute(
        "CREATE TABLE map_open_days (day date NOT NULL, cell_id integer NOT NULL,"
        " community integer NOT NULL, open integer NOT NULL, overdue integer NOT NULL,"
        " due integer NOT NULL)"
    )
    op.execute(MARK)
    for operation, transition in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER map_cell_days_sums_{operation} AFTER {operation.upper()}"
            f" ON map_cell_days REFERENCING {transition} FOR EACH STATEMENT"
            " EXECUTE FUNCTION public.log_map_cell_days()"
        )
    op.execute(REFRESH)
    op.execute("DELETE FROM map_cell_sums")  # written whole by the next refresh
    op.execute("DELETE FROM rollup_state WHERE name = 'map_sums'")


def downgrade() -> None:
    for operation in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS map_cell_days_sums_{operation} ON map_cell_days")
    op.execute("DROP FUNCTION IF EXISTS public.log_map_cell_days()")
    op.execute("DROP TABLE map_open_days")
    op.execute("DROP TABLE map_sums_changes")
    op.execute("DELETE FROM map_cell_sums")
    op.execute("DELETE FROM rollup_state WHERE name = 'map_sums'")
    op.execute("DROP FUNCTION public.refresh_map_sums()")
    op.execute(migration("0033_map_running_sums.py").REFRESH)
