"""public participation: supporters, re-handling, the public's reports near a place

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01 05:00:00.000000

- `case_supporters`: a person who found their problem already reported and added their support
  to the open case instead of filing a duplicate (`cases.support`): one per person per case
  (unique over the case and a hash naming the person: their account, e-mail or phone).
- `cases.rehandle_count`: re-handlings (重办) after a follow-up complaint an operator judged
  reasonable (`cases.rehandling`), counted apart from `rework_count` (a failed on-site check).
- `ix_cases_community_reported_at`: the public's reports in a community, newest first
  (`cases.nearby`), read from the index instead of every case of the period.
- `ix_case_events_closes`: the evaluation's follow-up and re-handling rates count a period's
  closings per case (`maps.evaluation`); with the case id in the index they are index-only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_supporters",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column(
            "contact",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("supporter_key", sa.String(length=64), nullable=False),
        sa.Column("lang", sa.String(length=8), server_default="en", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "user_id IS NOT NULL OR contact <> '{}'::jsonb", name=op.f("ck_case_supporters_someone")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_supporters_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_case_supporters_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_supporters")),
        sa.UniqueConstraint("case_id", "supporter_key", name="uq_case_supporters_person"),
    )
    op.add_column(
        "cases", sa.Column("rehandle_count", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_index(
        "ix_cases_community_reported_at", "cases", ["community_id", "reported_at", "id"]
    )
    op.create_index(
        "ix_case_events_closes",
        "case_events",
        ["created_at"],
        postgresql_include=["case_id"],
        postgresql_where=sa.text("action IN ('close', 'rehandle')"),
    )


def downgrade() -> None:
    op.drop_index("ix_case_events_closes", table_name="case_events")
    op.drop_index("ix_cases_community_reported_at", table_name="cases")
    op.drop_column("cases", "rehandle_count")
    op.drop_table("case_supporters")
