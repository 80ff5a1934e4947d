"""the city's settings in the database

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 03:00:00.000000

One row (id 1) of what belongs to the city and is changed on `/admin/settings`: its name, its
business calendar, the base map's tile URL and attribution. NULL: the server's configuration
(`CITY_NAME`, `CALENDAR_CODE`, `TILE_URL`, `TILE_ATTRIBUTION`). See gridmgmt/kernel/settings.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "city_settings",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("calendar_code", sa.String(length=32)),
        sa.Column("tile_url", sa.Text()),
        sa.Column("tile_attribution", sa.Text()),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_city_settings_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_city_settings")),
    )


def downgrade() -> None:
    op.drop_table("city_settings")
