"""the rollups kept up to date day by day, not re-counted whole

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-01 05:30:00.000000

The four rollups of whole past days (`evaluation_days`, `map_cell_days`, `map_cell_months`,
`case_days`) were materialized views, and every refresh (every 10 minutes) re-counted every
case ever stored: the work grew with the archive, not with the day's activity. They become
tables, kept by the same owner's function (`refresh_evaluation_rollup`, SECURITY DEFINER),
which now recounts only the days whose cases changed:

- A statement trigger on `cases` writes the days a change touches (the report day, the
  deadline day and the handling day, before and after) to `rollup_dirty`, one row per day and
  statement, only when a column the rollups count changed (a status alone changes none). The
  log is append-only for writers: no unique key, so no writer ever waits for another or for a
  refresh.
- A refresh claims the rows of past days it can see, recounts those days (and their months)
  from `cases` (a month still inside the 62 days of `map_cell_days` is summed from them), and
  deletes exactly the rows it claimed: a change committed meanwhile keeps its row for the next
  refresh. Readers see the old rows until the refresh commits.

The tables are filled here from the same definitions, once (a full count, as a refresh was).
The app's role may read them and nothing else (gridmgmt.kernel.roles.READ_ONLY).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TODAY = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
DAYS_KEPT = 62  # as migration 0017: the days map_cell_days keeps
ROLLUPS = ("evaluation_days", "map_cell_days", "map_cell_months", "case_days")
# The columns a rollup counts: a change to any of them marks the case's days dirty.
COUNTED = ("reported_at", "deadline", "handled_at", "closed_at", "dispatched_at", "unit_id",
           "community_id", "cell_id", "urgent", "rework_count", "category_id")  # fmt: skip

# Each rollup's rows, from cases `c` in `{source}` (a join that limits them); the same
# definitions as the views of migrations 0006 and 0017.
EVALUATION = """
SELECT day, unit_id, community_id, urgent,
       sum(due) AS due, sum(closed) AS closed, sum(closed_on_time) AS closed_on_time,
       sum(handled) AS handled, sum(reworked) AS reworked, sum(rework_count) AS rework_count,
       sum(handling_hours) AS handling_hours
FROM (
    SELECT (c.deadline AT TIME ZONE 'UTC')::date AS day, c.unit_id, c.community_id, c.urgent,
           1 AS due, (c.closed_at IS NOT NULL)::int AS closed,
           (c.closed_at IS NOT NULL AND COALESCE(c.handled_at, c.closed_at) <= c.deadline)::int
               AS closed_on_time,
           0 AS handled, 0 AS reworked, 0 AS rework_count, 0.0 AS handling_hours
    FROM {due_source} WHERE c.unit_id IS NOT NULL AND c.deadline < {today}
    UNION ALL
    SELECT (c.handled_at AT TIME ZONE 'UTC')::date, c.unit_id, c.community_id, c.urgent,
           0, 0, 0, 1, (c.rework_count > 0)::int, c.rework_count,
           extract(epoch FROM c.handled_at - c.dispatched_at) / 3600.0
    FROM {handled_source} WHERE c.unit_id IS NOT NULL AND c.handled_at < {today}
) AS parts
GROUP BY day, unit_id, community_id, urgent
"""
CELLS = """
SELECT {bucket} AS {key}, c.cell_id, c.community_id,
       count(*) AS n,
       count(*) FILTER (WHERE c.deadline IS NOT NULL AND c.closed_at IS NOT NULL) AS due_closed,
       count(*) FILTER (WHERE c.closed_at IS NOT NULL
                        AND COALESCE(c.handled_at, c.closed_at) <= c.deadline) AS on_time
FROM {source}
WHERE c.cell_id IS NOT NULL AND c.reported_at < {today} {more}
GROUP BY 1, 2, 3
"""
DAY = "(c.reported_at AT TIME ZONE 'UTC')::date"
MONTH = "date_trunc('month', c.reported_at AT TIME ZONE 'UTC')::date"
CASE_DAYS = """
SELECT (c.reported_at AT TIME ZONE 'UTC')::date AS day, c.category_id, count(*) AS n
FROM {source} WHERE c.reported_at < {today}
GROUP BY 1, 2
"""


def _everything() -> dict[str, str]:
    """Each rollup's full count (the migration's fill; the views' definitions)."""
    window = f"AND c.reported_at >= {TODAY} - interval '{DAYS_KEPT} days'"
    return {
        "evaluation_days": EVALUATION.format(
            due_source="cases c", handled_source="cases c", today=TODAY
        ),
        "map_cell_days": CELLS.format(
            bucket=DAY, key="day", source="cases c", today=TODAY, more=window
        ),
        "map_cell_months": CELLS.format(
            bucket=MONTH, key="month", source="cases c", today=TODAY, more=""
        ),
        "case_days": CASE_DAYS.format(source="cases c", today=TODAY),
    }


# The days of `days` (a date[] variable of the function), as UTC timestamp bounds: the join
# that reads only their cases, through the index of the column named.
def _on(column: str) -> str:
    return (
        "unnest(days) AS d(day) JOIN cases c"
        f" ON c.{column} >= (d.day::timestamp AT TIME ZONE 'UTC')"
        f" AND c.{column} < ((d.day + 1)::timestamp AT TIME ZONE 'UTC')"
    )


MONTHS_SOURCE = (
    "unnest(old_months) AS m(month) JOIN cases c"
    " ON c.reported_at >= (m.month::timestamp AT TIME ZONE 'UTC')"
    " AND c.reported_at < ((m.month + interval '1 month')::timestamp AT TIME ZONE 'UTC')"
)

REFRESH = f"""
CREATE OR REPLACE FUNCTION public.refresh_evaluation_rollup(concurrent boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    claimed bigint[];
    days date[];
    months date[];
    recent_months date[];
    old_months date[];
BEGIN
    -- `concurrent` is kept for the callers' signature: readers never wait for a refresh now.
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.rollups'));  -- one refresh at a time
    SELECT array_agg(id), array_agg(DISTINCT day) INTO claimed, days
    FROM rollup_dirty WHERE day < today;
    IF claimed IS NULL THEN
        RETURN;
    END IF;
    months := ARRAY(SELECT DISTINCT date_trunc('month', d)::date FROM unnest(days) AS d);
    -- A month whose first day is still kept per day is the sum of its days.
    recent_months := ARRAY(SELECT m FROM unnest(months) AS m WHERE m >= today - {DAYS_KEPT});
    old_months := ARRAY(SELECT m FROM unnest(months) AS m WHERE m < today - {DAYS_KEPT});

    DELETE FROM evaluation_days WHERE day = ANY(days);
    INSERT INTO evaluation_days
    SELECT * FROM ({
    EVALUATION.format(due_source=_on("deadline"), handled_source=_on("handled_at"), today=TODAY)
}) AS counted WHERE day = ANY(days);

    DELETE FROM map_cell_days WHERE day = ANY(days) OR day < today - {DAYS_KEPT};
    INSERT INTO map_cell_days {
    CELLS.format(
        bucket=DAY,
        key="day",
        source=_on("reported_at"),
        today=TODAY,
        more=f"AND d.day >= today - {DAYS_KEPT}",
    )
};

    DELETE FROM map_cell_months WHERE month = ANY(months);
    INSERT INTO map_cell_months
    SELECT date_trunc('month', day)::date, cell_id, community_id, sum(n), sum(due_closed),
           sum(on_time)
    FROM map_cell_days
    WHERE date_trunc('month', day)::date = ANY(recent_months)
    GROUP BY 1, 2, 3;
    INSERT INTO map_cell_months {
    CELLS.format(bucket=MONTH, key="month", source=MONTHS_SOURCE, today=TODAY, more="")
};

    DELETE FROM case_days WHERE day = ANY(days);
    INSERT INTO case_days {CASE_DAYS.format(source=_on("reported_at"), today=TODAY)};

    DELETE FROM rollup_dirty WHERE id = ANY(claimed);
END
$$
"""

_CHANGED = " OR ".join(f"o.{c} IS DISTINCT FROM n.{c}" for c in COUNTED)
MARK = f"""
CREATE FUNCTION public.mark_rollup_days() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_dirty (day)
        SELECT DISTINCT (v.at AT TIME ZONE 'UTC')::date
        FROM new_cases AS n
        CROSS JOIN LATERAL (VALUES (n.reported_at), (n.deadline), (n.handled_at)) AS v(at)
        WHERE v.at IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_dirty (day)
        SELECT DISTINCT (v.at AT TIME ZONE 'UTC')::date
        FROM old_cases AS o JOIN new_cases AS n USING (id)
        CROSS JOIN LATERAL (VALUES (o.reported_at), (o.deadline), (o.handled_at),
                                   (n.reported_at), (n.deadline), (n.handled_at)) AS v(at)
        WHERE v.at IS NOT NULL AND ({_CHANGED});
    ELSE
        INSERT INTO rollup_dirty (day)
        SELECT DISTINCT (v.at AT TIME ZONE 'UTC')::date
        FROM old_cases AS o
        CROSS JOIN LATERAL (VALUES (o.reported_at), (o.deadline), (o.handled_at)) AS v(at)
        WHERE v.at IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGERS = (
    "CREATE TRIGGER cases_rollup_days_insert AFTER INSERT ON cases"
    " REFERENCING NEW TABLE AS new_cases"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rollup_days()",
    "CREATE TRIGGER cases_rollup_days_update AFTER UPDATE ON cases"
    " REFERENCING OLD TABLE AS old_cases NEW TABLE AS new_cases"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rollup_days()",
    "CREATE TRIGGER cases_rollup_days_delete AFTER DELETE ON cases"
    " REFERENCING OLD TABLE AS old_cases"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rollup_days()",
)
COLUMNS = {
    "evaluation_days": "day date, unit_id integer, community_id integer, urgent boolean,"
    " due bigint, closed bigint, closed_on_time bigint, handled bigint, reworked bigint,"
    " rework_count bigint, handling_hours numeric",
    "map_cell_days": "day date, cell_id integer, community_id integer, n bigint,"
    " due_closed bigint, on_time bigint",
    "map_cell_months": "month date, cell_id integer, community_id integer, n bigint,"
    " due_closed bigint, on_time bigint",
    "case_days": "day date, category_id integer, n bigint",
}
KEYS = {
    "evaluation_days": "(day, unit_id, community_id, urgent) NULLS NOT DISTINCT",
    "map_cell_days": "(day, cell_id, community_id) NULLS NOT DISTINCT",
    "map_cell_months": "(month, cell_id, community_id) NULLS NOT DISTINCT",
    "case_days": "(day, category_id)",
}
# The refresh as migration 0017 left it: every view recounted whole.
REFRESH_0017 = """
CREATE OR REPLACE FUNCTION public.refresh_evaluation_rollup(concurrent boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE rollup text;
BEGIN
    FOREACH rollup IN ARRAY ARRAY['evaluation_days', 'map_cell_days', 'map_cell_months',
                                  'case_days'] LOOP
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


def upgrade() -> None:
    op.execute("CREATE TABLE rollup_dirty (id bigserial PRIMARY KEY, day date NOT NULL)")
    everything = _everything()
    for name in ROLLUPS:
        op.execute(f"DROP MATERIALIZED VIEW {name}")
        op.execute(f"CREATE TABLE {name} ({COLUMNS[name]})")
        op.execute(f"INSERT INTO {name} {everything[name]}")
        op.execute(f"CREATE UNIQUE INDEX ix_{name}_key ON {name} {KEYS[name]}")
    op.execute(MARK)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(REFRESH)


def downgrade() -> None:
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS cases_rollup_days_{name} ON cases")
    op.execute("DROP FUNCTION IF EXISTS public.mark_rollup_days()")
    everything = _everything()
    for name in ROLLUPS:
        op.execute(f"DROP TABLE {name}")
        op.execute(f"CREATE MATERIALIZED VIEW {name} AS {everything[name]} WITH NO DATA")
        op.execute(f"CREATE UNIQUE INDEX ix_{name}_key ON {name} {KEYS[name]}")
    op.execute("DROP TABLE rollup_dirty")
    op.execute(REFRESH_0017)
    op.execute("DELETE FROM rollup_state WHERE name = 'evaluation_days'")  # views are empty
