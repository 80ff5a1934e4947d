"""security events, revocable api keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 22:20:00.000000

`security_events` is the audit trail of refused and suspicious requests (failed and throttled
sign-ins, lockouts, refused api keys, other units' cases answered 404, rate-limit hits); like
`case_events` it is append-only: a trigger refuses UPDATE, DELETE and TRUNCATE, whoever asks
(the app role is only granted SELECT and INSERT on it besides). `api_keys.revoked_at` marks a
key revoked (`flask apikey revoke`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values of gridmgmt.kernel.security_events.SecurityEventKind when this was written.
KINDS = (
    "signin_failed",
    "signin_lockout",
    "signin_throttled",
    "api_key_refused",
    "cross_unit",
    "rate_limited",
)


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    kinds = ", ".join(f"'{kind}'" for kind in KINDS)
    op.create_table(
        "security_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),  # bigserial
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.CheckConstraint(f"kind IN ({kinds})", name=op.f("ck_security_events_kind")),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_security_events_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_security_events_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index("ix_security_events_at", "security_events", [sa.text("at DESC")])
    op.create_index("ix_security_events_kind_at", "security_events", ["kind", "at"])
    # The audit trail is append-only: an event is never rewritten or removed.
    op.execute("""
        CREATE FUNCTION security_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'security_events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events
        FOR EACH ROW EXECUTE FUNCTION security_events_append_only()
    """)
    op.execute("""
        CREATE TRIGGER security_events_no_truncate BEFORE TRUNCATE ON security_events
        FOR EACH STATEMENT EXECUTE FUNCTION security_events_append_only()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS security_events_no_truncate ON security_events")
    op.execute("DROP TRIGGER IF EXISTS security_events_append_only ON security_events")
    op.execute("DROP FUNCTION IF EXISTS security_events_append_only()")
    op.drop_index("ix_security_events_kind_at", table_name="security_events")
    op.drop_index("ix_security_events_at", table_name="security_events")
    op.drop_table("security_events")
    op.drop_column("api_keys", "revoked_at")
