"""indexes of the handled and the checked cases, for the operator's inbox

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01 04:40:00.000000

The inbox lists the handled cases (oldest handling first) and the cases being checked or
checked (by id). At ten million cases each list read all its status's cases from the status
index and sorted them (15,000 handled cases: 117 ms; checking and checked 60 ms each). Two
partial indexes hold just those cases, in the order listed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cases_handled_waiting",
        "cases",
        ["handled_at"],
        postgresql_where=sa.text("status = 'handled'"),
    )
    op.create_index(
        "ix_cases_on_check",
        "cases",
        ["id"],
        postgresql_where=sa.text("status IN ('checking', 'checked')"),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_on_check", table_name="cases")
    op.drop_index("ix_cases_handled_waiting", table_name="cases")
