"""the map's daily rollup kept for 400 days, not 62

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-01 17:30:00.000000

A map period rarely starts on the first of a month: a year to the 16th reads 15 days of its
first month besides the whole months. Those days were older than the 62 the daily rollup kept,
so they were counted live, 400,000 cases at ten million a year (440 ms of SQL, where the same
year to the 1st took 175 ms). The daily rollup now keeps 400 days (a year and a month: any
period of the last year finds its edge days there), 1.9 million rows at ten million cases.

The owner's refresh function of migration 0026 is the same but for its window: its four
`today - 62` become `today - 400` (checked, so a refresh written otherwise fails the upgrade
instead of being half changed). The days between are counted once here.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE, AFTER = 62, 400
REFRESH = "public.refresh_evaluation_rollup(boolean)"
TODAY = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _window(old: int, new: int) -> None:
    """Rewrite the refresh function with the window `new` where it has `old` (four times)."""
    definition = op.get_bind().scalar(
        text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"), {"f": REFRESH}
    )
    was, becomes = f"today - {old}", f"today - {new}"
    count = definition.count(was)
    if count != 4:
        raise RuntimeError(f"{REFRESH} has {count} windows '{was}', not the 4 of migration 0026")
    op.execute(definition.replace(was, becomes))


def upgrade() -> None:
    _window(BEFORE, AFTER)
    # The days the daily rollup did not keep, counted as migration 0026 counts a day.
    op.execute(f"""
        INSERT INTO map_cell_days
        SELECT (c.reported_at AT TIME ZONE 'UTC')::date, c.cell_id, c.community_id, count(*),
               count(*) FILTER (WHERE c.deadline IS NOT NULL AND c.closed_at IS NOT NULL),
               count(*) FILTER (WHERE c.closed_at IS NOT NULL
                                AND COALESCE(c.handled_at, c.closed_at) <= c.deadline)
        FROM cases c
        WHERE c.cell_id IS NOT NULL AND c.reported_at >= {TODAY} - interval '{AFTER} days'
          AND c.reported_at < COALESCE(
              (SELECT min(day) FROM map_cell_days)::timestamp AT TIME ZONE 'UTC', {TODAY})
        GROUP BY 1, 2, 3
    """)


def downgrade() -> None:
    _window(AFTER, BEFORE)
    op.execute(f"DELETE FROM map_cell_days WHERE day < (now() AT TIME ZONE 'UTC')::date - {BEFORE}")
