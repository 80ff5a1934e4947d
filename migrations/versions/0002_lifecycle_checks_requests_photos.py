"""lifecycle: checks, requests, photos

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:09:38.492562
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Status lists as of each revision (a migration never imports the live enums).
STATUSES_0001 = (
    "'reported', 'verified', 'invalid', 'filed', 'rejected', 'merged', 'dispatched', "
    "'in_progress', 'returned', 'suspended', 'handled', 'closed'"
)
STATUSES_0002 = STATUSES_0001.replace("'closed'", "'checking', 'checked', 'closed'")


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("thumb_path", sa.Text(), nullable=False),
        sa.Column("mime", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('before', 'after', 'check')", name=op.f("ck_photos_kind")),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_photos_case_id_cases")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["case_events.id"], name=op.f("fk_photos_event_id_case_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photos")),
    )
    op.create_index(op.f("ix_photos_case_id"), "photos", ["case_id"], unique=False)
    op.add_column("cases", sa.Column("check_inspector_id", sa.Integer(), nullable=True))
    op.add_column("cases", sa.Column("pending_request", sa.String(length=16), nullable=True))
    op.add_column(
        "cases", sa.Column("pending_value", sa.Numeric(precision=8, scale=2), nullable=True)
    )
    op.add_column("cases", sa.Column("pending_unit", sa.String(length=8), nullable=True))
    op.add_column(
        "cases",
        sa.Column("suspended_remaining_hours", sa.Numeric(precision=10, scale=4), nullable=True),
    )
    op.create_foreign_key(
        op.f("fk_cases_check_inspector_id_users"), "cases", "users", ["check_inspector_id"], ["id"]
    )
    op.create_check_constraint(
        op.f("ck_cases_pending_request"),
        "cases",
        "pending_request IS NULL OR pending_request IN ('extension', 'suspension')",
    )
    op.drop_constraint(op.f("ck_cases_status"), "cases", type_="check")
    op.create_check_constraint(op.f("ck_cases_status"), "cases", f"status IN ({STATUSES_0002})")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_cases_status"), "cases", type_="check")
    op.create_check_constraint(op.f("ck_cases_status"), "cases", f"status IN ({STATUSES_0001})")
    op.drop_constraint(op.f("ck_cases_pending_request"), "cases", type_="check")
    op.drop_constraint(op.f("fk_cases_check_inspector_id_users"), "cases", type_="foreignkey")
    op.drop_column("cases", "suspended_remaining_hours")
    op.drop_column("cases", "pending_unit")
    op.drop_column("cases", "pending_value")
    op.drop_column("cases", "pending_request")
    op.drop_column("cases", "check_inspector_id")
    op.drop_index(op.f("ix_photos_case_id"), table_name="photos")
    op.drop_table("photos")
