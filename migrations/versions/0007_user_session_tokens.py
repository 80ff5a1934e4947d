"""user session tokens and second factors

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing user gets a random token (gen_random_uuid draws from a strong source);
    # the sessions signed in before the upgrade carry no token and end.
    op.add_column("users", sa.Column("session_token", sa.String(length=64), nullable=True))
    op.execute("UPDATE users SET session_token = replace(gen_random_uuid()::text, '-', '')")
    op.alter_column("users", "session_token", nullable=False)
    op.add_column("users", sa.Column("totp_secret", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "totp_secret")
    op.drop_column("users", "session_token")
