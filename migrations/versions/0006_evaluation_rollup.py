"""evaluation rollup

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:10:54.970836
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Per day, unit, community and urgency: the counts of the evaluation's "due" part (by
# deadline day) and "handled" part (by handled day), for whole days before the refresh.
ROLLUP = """
CREATE MATERIALIZED VIEW evaluation_days AS
SELECT day, unit_id, community_id, urgent,
       sum(due) AS due, sum(closed) AS closed, sum(closed_on_time) AS closed_on_time,
       sum(handled) AS handled, sum(reworked) AS reworked, sum(rework_count) AS rework_count,
       sum(handling_hours) AS handling_hours
FROM (
    SELECT (deadline AT TIME ZONE 'UTC')::date AS day, unit_id, community_id, urgent,
           1 AS due, (closed_at IS NOT NULL)::int AS closed,
           (closed_at IS NOT NULL AND COALESCE(handled_at, closed_at) <= deadline)::int
               AS closed_on_time,
           0 AS handled, 0 AS reworked, 0 AS rework_count, 0.0 AS handling_hours
    FROM cases WHERE unit_id IS NOT NULL AND deadline < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    UNION ALL
    SELECT (handled_at AT TIME ZONE 'UTC')::date, unit_id, community_id, urgent,
           0, 0, 0, 1, (rework_count > 0)::int, rework_count,
           extract(epoch FROM handled_at - dispatched_at) / 3600.0
    FROM cases WHERE unit_id IS NOT NULL AND handled_at < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
) AS parts
GROUP BY day, unit_id, community_id, urgent
WITH NO DATA
"""


def upgrade() -> None:
    op.execute(ROLLUP)
    # Unique, so that it can be refreshed CONCURRENTLY (readers never wait).
    op.execute(
        "CREATE UNIQUE INDEX ix_evaluation_days_key ON evaluation_days "
        "(day, unit_id, community_id, urgent) NULLS NOT DISTINCT"
    )
    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("through", sa.Date(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("rollup_state")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS evaluation_days")
