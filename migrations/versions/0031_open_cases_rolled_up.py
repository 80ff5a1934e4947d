"""the map's open and overdue cases rolled up too, kept exact by a log of changes

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-01 16:30:00.000000

The map counted every open case of its period live, because what a case's status or the clock
changes was never rolled up: 144,000 open cases for a month at ten million cases, 95 ms of each
page. They are now counted as of the last refresh and corrected to the moment of reading:

- `map_open_days` and `map_open_months`: the open cases per report day (and month) and cell,
  the overdue ones among them and the ones past their deadline (due), as of the refresh's
  moment T0 (`rollup_state` 'map_open', `refreshed_at`), recounted whole by the owner's
  `refresh_open_rollup` (the open cases are few: an index-only scan).
- `map_open_log`: every change to an open case since (a statement trigger on `cases`), each
  as the case's state before (sign -1) and after (sign +1), open states only. Summed, the log
  turns the counts of the cases as they were at the refresh into the counts of the cases as
  they are (a case changed many times adds up to its last state less its first).
- The clock: a case's overdue and due counts change without any write when its deadline
  passes. The log's states are judged at T0; the open cases whose deadline lies between T0
  and the reader's now are read from `ix_cases_map_open_deadline` and added (or taken off, for a
  reader whose transaction began before T0).

The refresh deletes the log and counts the cases in one statement, so on one snapshot: every
change is either in the counts or left in the log, never both, never neither. Readers see the
old counts with the old log until it commits. The log is append-only for writers (no key), so
no writer waits for another or for a refresh. The tables are filled by the first refresh:
until then, and whenever they are not as far as the evaluation's rollup, the map counts open
cases live as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = ("checked", "checking", "dispatched", "filed", "handled", "in_progress", "reported",
        "returned", "suspended", "verified")  # fmt: skip
RUNNING = "('dispatched', 'in_progress')"
TODAY = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
COUNTS = "open bigint NOT NULL, overdue bigint NOT NULL, due bigint NOT NULL"
# A change to any of these can change what the map counts of an open case.
TRACKED = ("status", "deadline", "closed_at", "reported_at", "cell_id", "community_id")
LOGGED = "reported_at, cell_id, community_id, status, deadline, closed_at"


def _open(alias: str = "") -> str:
    column = f"{alias}.status" if alias else "status"
    return f"{column} IN ({', '.join(repr(s) for s in OPEN)})"


_CHANGED = " OR ".join(f"o.{c} IS DISTINCT FROM n.{c}" for c in TRACKED)
LOG = f"""
CREATE FUNCTION public.log_open_cases() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO map_open_log (sign, {LOGGED})
        SELECT 1, {", ".join(f"n.{c}" for c in LOGGED.split(", "))}
        FROM new_cases AS n WHERE {_open("n")} AND n.cell_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO map_open_log (sign, {LOGGED})
        SELECT v.*
        FROM old_cases AS o JOIN new_cases AS n USING (id)
        CROSS JOIN LATERAL (VALUES
            (-1, {", ".join(f"o.{c}" for c in LOGGED.split(", "))}),
            (1, {", ".join(f"n.{c}" for c in LOGGED.split(", "))})
        ) AS v(sign, {LOGGED})
        WHERE ({_CHANGED}) AND {_open("v")} AND v.cell_id IS NOT NULL;
    ELSE
        INSERT INTO map_open_log (sign, {LOGGED})
        SELECT -1, {", ".join(f"o.{c}" for c in LOGGED.split(", "))}
        FROM old_cases AS o WHERE {_open("o")} AND o.cell_id IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGERS = {
    "insert": "NEW TABLE AS new_cases",
    "update": "OLD TABLE AS old_cases NEW TABLE AS new_cases",
    "delete": "OLD TABLE AS old_cases",
}
REFRESH = f"""
CREATE FUNCTION public.refresh_open_rollup() RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.open_rollup'));  -- one at a time
    DELETE FROM map_open_days;
    DELETE FROM map_open_months;
    -- One statement, one snapshot: the log's changes are either counted here or kept.
    WITH counted AS (DELETE FROM map_open_log)
    INSERT INTO map_open_days
    SELECT (c.reported_at AT TIME ZONE 'UTC')::date, c.cell_id, c.community_id, count(*),
           count(*) FILTER (WHERE c.status IN {RUNNING} AND c.deadline < now()),
           count(*) FILTER (WHERE c.deadline < now() AND c.closed_at IS NULL)
    FROM cases c
    WHERE {_open("c")} AND c.cell_id IS NOT NULL AND c.reported_at < {TODAY}
    GROUP BY 1, 2, 3;
    INSERT INTO map_open_months
    SELECT date_trunc('month', day)::date, cell_id, community_id, sum(open), sum(overdue),
           sum(due)
    FROM map_open_days GROUP BY 1, 2, 3;
    INSERT INTO rollup_state (name, through, refreshed_at)
    VALUES ('map_open', {TODAY}::date, now())
    ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
        refreshed_at = EXCLUDED.refreshed_at;
END
$$
"""


def upgrade() -> None:
    for table, bucket in (("map_open_days", "day"), ("map_open_months", "month")):
        op.execute(
            f"CREATE TABLE {table} ({bucket} date NOT NULL, cell_id integer NOT NULL,"
            f" community_id integer, {COUNTS})"
        )
        op.execute(
            f"CREATE UNIQUE INDEX ix_{table}_key ON {table} ({bucket}, cell_id, community_id)"
            " NULLS NOT DISTINCT"
        )
    op.execute(
        "CREATE TABLE map_open_log (sign smallint NOT NULL,"
        " reported_at timestamp with time zone NOT NULL, cell_id integer NOT NULL,"
        " community_id integer, status varchar(16) NOT NULL,"
        " deadline timestamp with time zone, closed_at timestamp with time zone)"
    )
    op.execute(
        "CREATE INDEX ix_cases_map_open_deadline ON cases (deadline)"
        " INCLUDE (reported_at, cell_id, community_id, status, closed_at)"
        f" WHERE {_open()} AND deadline IS NOT NULL"
    )
    op.execute(LOG)
    for operation, transition in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER cases_open_log_{operation} AFTER {operation.upper()} ON cases"
            f" REFERENCING {transition} FOR EACH STATEMENT"
            " EXECUTE FUNCTION public.log_open_cases()"
        )
    op.execute(REFRESH)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.refresh_open_rollup()")
    for operation in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS cases_open_log_{operation} ON cases")
    op.execute("DROP FUNCTION IF EXISTS public.log_open_cases()")
    op.execute("DROP INDEX IF EXISTS ix_cases_map_open_deadline")
    op.execute("DELETE FROM rollup_state WHERE name = 'map_open'")
    for table in ("map_open_log", "map_open_months", "map_open_days"):
        op.execute(f"DROP TABLE {table}")
