"""an index of the running cases by deadline, for the map's overdue markers

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 04:30:00.000000

The map marks the most overdue cases of its period (at most 2,000). At ten million cases
PostgreSQL read every running case of the period from the table to sort them by deadline: for
a month 64,000 table pages, 0.96 s. This partial index holds the running cases (with a
deadline that runs) by deadline, with their report time and id: the most overdue of a period
are found in the index alone, and only the markers shown are read from the table (about
10 ms). The map's community outlines need no table: they are simplified once per change of
the territory, in the web process (`maps.services.territory`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cases_running_deadline",
        "cases",
        ["deadline"],
        postgresql_include=["reported_at", "id"],
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_running_deadline", table_name="cases")
