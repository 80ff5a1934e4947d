"""a spatial index of the open cases alone, for the duplicate suggestions

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 23:40:00.000000

The operator's inbox suggests, for each new report, the open cases of its class nearby. The
spatial index of every case let the planner combine it with the index of statuses: a bitmap of
all open cases built for each report of the list (3.7 ms each at a million cases). A GiST index
of the open, unmerged cases answers "open cases near here" alone, and stays as small as the
city's open work.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# cases.status.OPEN_STATUSES, sorted (the migration keeps the statuses of its day).
OPEN = ("checked", "checking", "dispatched", "filed", "handled", "in_progress", "reported",
        "returned", "suspended", "verified")  # fmt: skip
WHERE = f"status IN ({', '.join(repr(s) for s in OPEN)}) AND merged_into_id IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_cases_open_location",
        "cases",
        ["location"],
        postgresql_using="gist",
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_open_location", table_name="cases")
