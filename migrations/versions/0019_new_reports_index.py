"""an index of the new reports (waiting for verification or filing) by report time

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 03:55:00.000000

The operator's inbox lists the new reports oldest first, the inspectors' tasks the citizen
reports to verify. At ten million cases PostgreSQL walked the index of all cases by report
time from the oldest, throwing away closed cases, until it had 200 new ones: 30 s for the
inbox (at a million it had chosen another plan). A partial index holds only the new reports,
in order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cases_new_reports",
        "cases",
        ["reported_at"],
        postgresql_where=sa.text("status IN ('reported', 'verified')"),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_new_reports", table_name="cases")
