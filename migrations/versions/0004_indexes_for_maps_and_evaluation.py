"""indexes for maps and evaluation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:29:28.737212
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The open cases' deadline index also carries what evaluation counts (index-only scans).
    op.drop_index(
        "ix_cases_open_deadline",
        table_name="cases",
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )
    op.create_index(
        "ix_cases_open_deadline",
        "cases",
        ["deadline"],
        unique=False,
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
        postgresql_include=["unit_id", "community_id", "urgent", "dispatched_at"],
    )
    op.create_index(
        "ix_case_events_action_created_at", "case_events", ["action", "created_at"], unique=False
    )
    op.drop_index(op.f("ix_cases_reported_at"), table_name="cases")
    op.create_index(
        "ix_cases_deadline",
        "cases",
        ["deadline"],
        unique=False,
        postgresql_include=["unit_id", "community_id", "urgent", "closed_at", "handled_at"],
    )
    op.create_index(
        "ix_cases_handled_at",
        "cases",
        ["handled_at"],
        unique=False,
        postgresql_include=["unit_id", "community_id", "urgent", "rework_count", "dispatched_at"],
    )
    op.create_index(
        "ix_cases_map",
        "cases",
        ["reported_at"],
        unique=False,
        postgresql_include=[
            "cell_id",
            "community_id",
            "category_id",
            "status",
            "source",
            "deadline",
            "closed_at",
            "handled_at",
        ],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_cases_map",
        table_name="cases",
        postgresql_include=[
            "cell_id",
            "community_id",
            "category_id",
            "status",
            "source",
            "deadline",
            "closed_at",
            "handled_at",
        ],
    )
    op.drop_index("ix_cases_handled_at", table_name="cases")
    op.drop_index("ix_cases_deadline", table_name="cases")
    op.create_index(op.f("ix_cases_reported_at"), "cases", ["reported_at"], unique=False)
    op.drop_index("ix_case_events_action_created_at", table_name="case_events")
    op.drop_index(
        "ix_cases_open_deadline",
        table_name="cases",
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )
    op.create_index(
        "ix_cases_open_deadline",
        "cases",
        ["deadline"],
        unique=False,
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )
