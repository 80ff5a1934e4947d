"""the evaluation's overdue cases per unit counted as of the refresh, as the map's are

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-01 20:15:00.000000

Every evaluation page counted the cases in a unit's hands past their deadline now, per unit,
community and urgency, from every such case: 102,000 at ten million cases, 50-80 ms a page.
They are now counted by the map's refresh, in the statement that empties the log of changes to
open cases (`overdue_units`, as of its moment T0), and brought to the moment of reading as the
map's open cases are: the log's states judged at T0 (it now carries each state's unit,
urgency and dispatch time) and the running cases whose deadline lies between T0 and now.
"""

from collections.abc import Sequence

from alembic import op

from migrations.siblings import migration

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = ("checked", "checking", "dispatched", "filed", "handled", "in_progress", "reported",
        "returned", "suspended", "verified")  # fmt: skip
TRACKED = ("status", "deadline", "closed_at", "reported_at", "cell_id", "community_id",
           "unit_id", "urgent", "dispatched_at")  # fmt: skip
LOGGED = ("reported_at", "cell_id", "community_id", "status", "deadline", "closed_at",
          "unit_id", "urgent", "dispatched_at")  # fmt: skip


def _open(alias: str) -> str:
    return f"{alias}.status IN ({', '.join(repr(s) for s in OPEN)})"


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in LOGGED)


def log_function(tracked: Sequence[str], logged: Sequence[str], placed: str) -> str:
    """The trigger function of migration 0031, logging `logged` of the open states of cases
    whose `tracked` columns changed, when the state is `placed` (SQL of the alias `x`)."""
    names = ", ".join(logged)
    old = ", ".join(f"o.{c}" for c in logged)
    new = ", ".join(f"n.{c}" for c in logged)
    changed = " OR ".join(f"o.{c} IS DISTINCT FROM n.{c}" for c in tracked)
    return f"""
CREATE OR REPLACE FUNCTION public.log_open_cases() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO map_open_log (sign, {names})
        SELECT 1, {new} FROM new_cases AS n WHERE {_open("n")} AND {placed.replace("x.", "n.")};
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO map_open_log (sign, {names})
        SELECT v.*
        FROM old_cases AS o JOIN new_cases AS n USING (id)
        CROSS JOIN LATERAL (VALUES (-1, {old}), (1, {new})) AS v(sign, {names})
        WHERE ({changed}) AND {_open("v")} AND {placed.replace("x.", "v.")};
    ELSE
        INSERT INTO map_open_log (sign, {names})
        SELECT -1, {old} FROM old_cases AS o WHERE {_open("o")} AND {placed.replace("x.", "o.")};
    END IF;
    RETURN NULL;
END
$$
"""


# The refresh of migration 0037, which now also counts the overdue cases per unit in the
# statement that empties the log.
_EMPTIED = "    WITH logged AS (DELETE FROM map_open_log)\n    INSERT INTO open_now"
_COUNTED = """    WITH logged AS (DELETE FROM map_open_log),
    overdue AS (
        INSERT INTO overdue_units
        SELECT c.unit_id, c.community_id, c.urgent, count(*)
        FROM cases c
        WHERE c.status IN ('dispatched', 'in_progress') AND c.deadline < now()
          AND c.unit_id IS NOT NULL AND c.dispatched_at < now()
        GROUP BY 1, 2, 3
    )
    INSERT INTO open_now"""
_LOCKED = "PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.map_sums'));  -- one at a time"


def refresh() -> str:
    text = migration("0037_map_sums_incremental.py").REFRESH
    if text.count(_EMPTIED) != 1 or text.count(_LOCKED) != 1:
        raise RuntimeError("migration 0037's refresh is not the one this migration extends")
    text = text.replace(_EMPTIED, _COUNTED)
    return text.replace(_LOCKED, f"{_LOCKED}\n    DELETE FROM overdue_units;")


def upgrade() -> None:
    op.execute(
        "ALTER TABLE map_open_log ADD COLUMN unit_id integer, ADD COLUMN urgent boolean,"
        " ADD COLUMN dispatched_at timestamp with time zone"
    )
    op.execute(
        "CREATE TABLE overdue_units (unit_id integer NOT NULL, community_id integer,"
        " urgent boolean, overdue integer NOT NULL)"
    )
    op.execute("ALTER TABLE map_open_log ALTER COLUMN cell_id DROP NOT NULL")
    # A case in a unit's hands outside every cell counts in the evaluation, not on the map.
    op.execute(log_function(TRACKED, LOGGED, "(x.cell_id IS NOT NULL OR x.unit_id IS NOT NULL)"))
    op.execute(refresh())
    op.execute("DELETE FROM rollup_state WHERE name = 'map_sums'")  # counted at the next refresh


def downgrade() -> None:
    op.execute(migration("0037_map_sums_incremental.py").REFRESH)
    op.execute(log_function(TRACKED[:6], LOGGED[:6], "x.cell_id IS NOT NULL"))
    op.execute("DELETE FROM map_open_log WHERE cell_id IS NULL")
    op.execute("ALTER TABLE map_open_log ALTER COLUMN cell_id SET NOT NULL")
    op.execute("DROP TABLE overdue_units")
    op.execute("ALTER TABLE map_open_log DROP COLUMN unit_id, DROP COLUMN urgent,"
               " DROP COLUMN dispatched_at")  # fmt: skip
    op.execute("DELETE FROM rollup_state WHERE name = 'map_sums'")
