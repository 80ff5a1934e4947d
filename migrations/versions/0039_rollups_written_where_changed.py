"""the daily rollups written again only where their counts changed

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-01 19:30:00.000000

Migration 0026's refresh recounted each day a change touched, deleted all of that day's rows
and inserted them again. A working city touches most days of the year in ten minutes (a case
of any age closes, a deadline moves), so every refresh wrote about 90,000 rows of
`map_cell_days` again at ten million cases, nearly all of them with the same numbers: as many
dead rows for autovacuum to clean on the two cores the pages run on, and as many changes for
the map's running sums to net out (migration 0037's log).

The refresh still recounts the same days from `cases`, into a temporary table, and then
deletes the rows that no longer exist, updates the rows whose numbers changed and inserts the
new ones: a day whose recount is the same is not written at all. Keys may hold NULL (a case
outside every community; the unique indexes are NULLS NOT DISTINCT), so they are matched as
such. The counts are the same as before; only what is written changes.
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

from migrations.siblings import migration

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_KEPT = 400  # as migration 0032's daily rollup


def _sync(table: str, keys: Sequence[str], values: Sequence[str], scope: str, fresh: str) -> str:
    """Statements that make `table`'s rows within `scope` (a condition on `t`, its rows, that
    an index serves) those of the query `fresh`, writing only rows that differ."""
    temporary = f"pg_temp.fresh_{table}"
    same = " AND ".join(_same(k) for k in keys)
    changed = " OR ".join(f"t.{v} IS DISTINCT FROM f.{v}" for v in values)
    return f"""
    DROP TABLE IF EXISTS {temporary};  -- a refresh earlier in the transaction
    -- Filled by INSERT, not CREATE TABLE AS: an INSERT's plan is never parallel, and the
    -- parallel plan of a table-creating query scans a year of cases for the days' ranges.
    CREATE TEMPORARY TABLE fresh_{table} (LIKE {table}) ON COMMIT DROP;
    INSERT INTO {temporary} {fresh};
    ANALYZE {temporary};
    DELETE FROM {table} t
    WHERE {scope} AND NOT EXISTS (SELECT FROM {temporary} f WHERE {same});
    UPDATE {table} t SET {", ".join(f"{v} = f.{v}" for v in values)}
    FROM {temporary} f
    WHERE {scope} AND {same} AND ({changed});
    INSERT INTO {table}
    SELECT f.* FROM {temporary} f
    WHERE NOT EXISTS (SELECT FROM {table} t WHERE {scope} AND {same});
"""


def _same(key: str) -> str:
    """A key column of `t` and `f` equal, NULL as a value: a community may be NULL (a case
    outside every community), and only `=` lets the planner hash the join."""
    if key == "community_id":
        return f"COALESCE(t.{key}, -1) = COALESCE(f.{key}, -1)"
    return f"t.{key} = f.{key}"


_FIRST_WRITE = "\n    DELETE FROM evaluation_days"


def _head(m: ModuleType) -> str:
    """Migration 0026's function up to its first write (its signature, its variables, the days
    it claims and their months), with migration 0032's 400 days."""
    head = m.REFRESH.split(_FIRST_WRITE, 1)[0]
    if m.REFRESH.count(_FIRST_WRITE) != 1 or head.count(f"today - {m.DAYS_KEPT}") != 2:
        raise RuntimeError("migration 0026's refresh is not the one this migration rewrites")
    return head.replace(f"today - {m.DAYS_KEPT}", f"today - {DAYS_KEPT}")


def _refresh() -> str:
    m = migration("0026_incremental_rollups.py")
    today = m.TODAY
    evaluation = m.EVALUATION.format(
        due_source=m._on("deadline"), handled_source=m._on("handled_at"), today=today
    )
    days = m.CELLS.format(
        bucket=m.DAY,
        key="day",
        source=m._on("reported_at"),
        today=today,
        more=f"AND d.day >= today - {DAYS_KEPT}",
    )
    old_months = m.CELLS.format(
        bucket=m.MONTH, key="month", source=m.MONTHS_SOURCE, today=today, more=""
    )
    months = f"""
    SELECT date_trunc('month', day)::date AS month, cell_id, community_id, sum(n)::bigint AS n,
           sum(due_closed)::bigint AS due_closed, sum(on_time)::bigint AS on_time
    FROM map_cell_days
    WHERE date_trunc('month', day)::date = ANY(recent_months)
    GROUP BY 1, 2, 3
    UNION ALL
    {old_months}"""
    cells = ("n", "due_closed", "on_time")
    evaluated = ("due", "closed", "closed_on_time", "handled", "reworked", "rework_count",
                 "handling_hours")  # fmt: skip
    return f"""{_head(m)}
{
        _sync(
            "evaluation_days",
            ("day", "unit_id", "community_id", "urgent"),
            evaluated,
            "t.day = ANY(days)",
            f"SELECT * FROM ({evaluation}) AS counted WHERE day = ANY(days)",
        )
    }
    DELETE FROM map_cell_days WHERE day < today - {DAYS_KEPT};
{
        _sync(
            "map_cell_days",
            ("day", "cell_id", "community_id"),
            cells,
            "t.day = ANY(days)",
            days,
        )
    }
{
        _sync(
            "map_cell_months",
            ("month", "cell_id", "community_id"),
            cells,
            "t.month = ANY(months)",
            months,
        )
    }
{
        _sync(
            "case_days",
            ("day", "category_id"),
            ("n",),
            "t.day = ANY(days)",
            m.CASE_DAYS.format(source=m._on("reported_at"), today=today),
        )
    }
    DELETE FROM rollup_dirty WHERE id = ANY(claimed);
END
$$
"""


def upgrade() -> None:
    op.execute(_refresh())


def downgrade() -> None:
    # Migration 0026's function with migration 0032's window.
    before = migration("0026_incremental_rollups.py")
    op.execute(before.REFRESH.replace(f"today - {before.DAYS_KEPT}", f"today - {DAYS_KEPT}"))
