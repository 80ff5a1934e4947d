"""the map's running sums carried into a new month, never written whole again

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-01 20:00:00.000000

Migration 0037's refresh wrote every running sum again on the first refresh of a month: the
sums began at the first whole month of the daily rollup's 400 days, and a new month moves
that month on, so every place's sums started again from zero (29 s at ten million cases and
4,800 cells; about two minutes at 20,000 cells). A period reads the sums at its last day less
those at the day before its first, so where the sums begin does not matter, only that a
place's rows agree with each other. Now:

- the month before the first one read (the *base*) is kept, and only older months are
  deleted: a place written again from the first month carries on from the base, as one
  written from a later month carries on from the month before it;
- on a new month, every place carries its sums into it from its last month (read from the
  key's index), with the places that changed;
- the first day read is kept in `rollup_state` ('map_sums_first'): the smallest month of
  `map_cell_sums` is now the base, which is only subtracted. A place without a row there
  began later, from zero;
- changes to open cases of days before the first day (the base month's) are not compared:
  they are read no more, and comparing them wrote every such place again from the start.

Everything is written again only when the sums are empty (a new database, or a refresh that
did not run for over a year).
"""

from collections.abc import Sequence

from alembic import op

from migrations.siblings import migration

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHOLE = """    -- Everything again when the months kept are not the ones written (a new month, or none).
    SELECT min(month) IS DISTINCT FROM first
           OR max(month) IS DISTINCT FROM date_trunc('month', today - 1)::date
    INTO whole FROM map_cell_sums;
"""
_KEPT = """    -- Months before the base (the month before the first read) are read no more; everything
    -- again only when nothing is left to carry on from.
    DELETE FROM map_cell_sums WHERE month < (first - interval '1 month')::date;
    SELECT NOT EXISTS (SELECT FROM map_cell_sums) INTO whole;
"""
_COMPARED = "            FULL JOIN map_open_days b\n"
_COMPARED_KEPT = "            FULL JOIN (SELECT * FROM map_open_days WHERE day >= first) b\n"
_CHANGED = "        ) AS changed\n"
_NEW_MONTH = """            UNION ALL  -- a new month: every place carries its sums into it
            SELECT (max(month) + interval '1 month')::date, cell_id, COALESCE(community_id, -1)
            FROM map_cell_sums
            GROUP BY cell_id, community_id
            HAVING max(month) < date_trunc('month', today - 1)::date
        ) AS changed
"""
_STATE = """    INSERT INTO rollup_state (name, through, refreshed_at) VALUES ('map_sums', today, now())
    ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
        refreshed_at = EXCLUDED.refreshed_at;
"""
_STATES = """    INSERT INTO rollup_state (name, through, refreshed_at)
    VALUES ('map_sums', today, now()), ('map_sums_first', first, now())
    ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through,
        refreshed_at = EXCLUDED.refreshed_at;
"""
CHANGES = (
    (_WHOLE, _KEPT),
    (_COMPARED, _COMPARED_KEPT),
    (_CHANGED, _NEW_MONTH),
    (_STATE, _STATES),
)


def refresh() -> str:
    """Migration 0038's refresh with the changes above, each made exactly once."""
    text = migration("0038_overdue_by_unit_rolled_up.py").refresh()
    for before, after in CHANGES:
        if text.count(before) != 1:
            raise RuntimeError(f"migration 0038's refresh has not exactly one {before!r}")
        text = text.replace(before, after)
    return text


def upgrade() -> None:
    op.execute(refresh())
    # The sums as written so far begin at their first month, from zero (no base).
    op.execute("""
        INSERT INTO rollup_state (name, through, refreshed_at)
        SELECT 'map_sums_first', min(month), now() FROM map_cell_sums HAVING count(*) > 0
    """)


def downgrade() -> None:
    op.execute(migration("0038_overdue_by_unit_rolled_up.py").refresh())
    op.execute("DELETE FROM rollup_state WHERE name IN ('map_sums', 'map_sums_first')")
    op.execute("DELETE FROM map_cell_sums")  # written whole, without a base, at the next refresh
