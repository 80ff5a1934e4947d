"""the dispatcher's board: indexes of waiting requests and of overdue open cases

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 03:20:00.000000

The board lists the cases with an extension or suspension request waiting, and the open cases
past their deadline. Neither had an index: at a million cases the requests were found by
reading every case (0.3 s), the overdue ones through all dispatched cases. Both are partial:
only the few cases they list are in them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cases_pending_request",
        "cases",
        ["updated_at"],
        postgresql_where=sa.text("pending_request IS NOT NULL"),
    )
    op.create_index(
        "ix_cases_overdue_open",
        "cases",
        ["deadline"],
        postgresql_where=sa.text(
            "overdue_at IS NOT NULL AND status IN ('dispatched', 'in_progress')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_overdue_open", table_name="cases")
    op.drop_index("ix_cases_pending_request", table_name="cases")
