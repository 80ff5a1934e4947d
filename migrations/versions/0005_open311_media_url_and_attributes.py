"""open311: media url and attributes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:31:14.881843
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("media_url", sa.Text(), nullable=True))
    op.add_column(
        "cases",
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("cases", "attributes")
    op.drop_column("cases", "media_url")
