"""an index of cases by (reported_at, id), the keyset of the exports and listings

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 23:55:00.000000

The open-data export reads a period in chunks after the last (reported_at, id) sent, and Open311
lists a period newest first by the same pair. On the index of reported_at alone each chunk read
the rest of the period and sorted it (216 ms a chunk for a month at a million cases); on this
one it reads its chunk in index order and stops (37 ms).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_cases_reported_at_id", "cases", ["reported_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_reported_at_id", table_name="cases")
