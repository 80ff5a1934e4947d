"""dispatch: warnings, overdue, hotspots

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:16:12.848275
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hotspots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=True),
        sa.Column("area_id", sa.Integer(), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "(cell_id IS NULL) <> (area_id IS NULL)", name=op.f("ck_hotspots_cell_or_area")
        ),
        sa.ForeignKeyConstraint(["area_id"], ["areas.id"], name=op.f("fk_hotspots_area_id_areas")),
        sa.ForeignKeyConstraint(
            ["cell_id"], ["grid_cells.id"], name=op.f("fk_hotspots_cell_id_grid_cells")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hotspots")),
        sa.UniqueConstraint("cell_id", "area_id", "window_end", name="uq_hotspots_place_window"),
    )
    op.create_index(op.f("ix_hotspots_window_end"), "hotspots", ["window_end"], unique=False)
    op.add_column("cases", sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cases", sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_cases_filed_waiting",
        "cases",
        ["filed_at"],
        unique=False,
        postgresql_where=sa.text("status = 'filed'"),
    )
    op.create_index(
        "ix_cases_open_deadline",
        "cases",
        ["deadline"],
        unique=False,
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_cases_open_deadline",
        table_name="cases",
        postgresql_where=sa.text("status IN ('dispatched', 'in_progress')"),
    )
    op.drop_index(
        "ix_cases_filed_waiting", table_name="cases", postgresql_where=sa.text("status = 'filed'")
    )
    op.drop_column("cases", "overdue_at")
    op.drop_column("cases", "warned_at")
    op.drop_index(op.f("ix_hotspots_window_end"), table_name="hotspots")
    op.drop_table("hotspots")
