"""administrators' audit log, last sign-in

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 12:00:00.000000

`admin_audit` keeps every change an administrator makes through the admin pages (people, api
keys, ...): who (the account, and its username as it was), when, what (`action`), on what
(`target_type`, `target_id`) and the target's facts before and after, as JSONB (never a
password, a password hash or a key's secret). Like `case_events` and `security_events` it is
append-only: a trigger refuses UPDATE, DELETE and TRUNCATE, whoever asks, and the app role is
granted only SELECT and INSERT on it (gridmgmt.kernel.roles.APPEND_ONLY). It is small (people
change rarely), so it is not partitioned.

`users.last_signin_at` is set at each successful sign-in, for the people page.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("last_signin_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_admin_audit_actor_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit")),
    )
    op.create_index("ix_admin_audit_at", "admin_audit", [sa.text("at DESC")])
    op.create_index("ix_admin_audit_action", "admin_audit", ["action", "at"])
    # History of administration is never rewritten or removed, only added to.
    op.execute("""
        CREATE FUNCTION admin_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'admin_audit is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE ON admin_audit
        FOR EACH ROW EXECUTE FUNCTION admin_audit_append_only()
    """)
    op.execute("""
        CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin_audit
        FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_append_only()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS admin_audit_no_truncate ON admin_audit")
    op.execute("DROP TRIGGER IF EXISTS admin_audit_append_only ON admin_audit")
    op.execute("DROP FUNCTION IF EXISTS admin_audit_append_only()")
    op.drop_index("ix_admin_audit_action", table_name="admin_audit")
    op.drop_index("ix_admin_audit_at", table_name="admin_audit")
    op.drop_table("admin_audit")
    op.drop_column("users", "last_signin_at")
