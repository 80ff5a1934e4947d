"""how many requests each api key has made

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-01 22:30:00.000000

`api_keys.use_count`: the requests accepted with the key, as of the last fold. Each request
adds one to a Redis hash (a row that every report updated would serialise a client's reports);
a periodic job adds the hash's counts here (gridmgmt/kernel/key_uses.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("use_count", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "use_count")
