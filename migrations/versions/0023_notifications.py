"""notifications: subscriptions, the outbox, follow-up answers

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01 05:00:00.000000

- `subscriptions`: an address (e-mail, or phone for SMS) that hears about a case (its
  reporter, who asked at report time; a follower, after confirming by a link) or about new
  cases in a community. One per address and target (a unique index over the target's ids).
- `notices`: the notification outbox, one row per message, written in the transaction of the
  case change that causes it and drained by an RQ job; `dedupe_key` is unique so the same
  event never queues twice for one address; a partial index holds the queued messages by
  when they are due.
- `followup_answers`: the satisfaction follow-up (回访), one answer per person (a hash,
  `respondent_key`) per case and round; complaints with a reason wait for an operator's
  review (a partial index holds the pending ones).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("community_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("language", sa.String(length=8), server_default="en", nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.CheckConstraint(
            "kind IN ('reporter', 'case', 'community')", name=op.f("ck_subscriptions_kind")
        ),
        sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f("ck_subscriptions_channel")),
        sa.CheckConstraint(
            "(kind = 'community') = (community_id IS NOT NULL AND case_id IS NULL)",
            name=op.f("ck_subscriptions_target"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_subscriptions_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_subscriptions_community_id_areas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        "uq_subscriptions_target_address",
        "subscriptions",
        [
            "kind",
            sa.text("coalesce(case_id, 0)"),
            sa.text("coalesce(community_id, 0)"),
            "channel",
            "address",
        ],
        unique=True,
    )
    op.create_index(
        "ix_subscriptions_case_id",
        "subscriptions",
        ["case_id"],
        postgresql_where=sa.text("case_id IS NOT NULL"),
    )
    op.create_index(
        "ix_subscriptions_community_id",
        "subscriptions",
        ["community_id"],
        postgresql_where=sa.text("community_id IS NOT NULL"),
    )

    op.create_table(
        "notices",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("subscription_id", sa.BigInteger(), nullable=True),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=8), server_default="en", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column(
            "data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f("ck_notices_channel")),
        sa.CheckConstraint(
            "state IN ('queued', 'sent', 'failed', 'cancelled')", name=op.f("ck_notices_state")
        ),
        sa.CheckConstraint(
            "kind IN ('confirm', 'received', 'filed', 'rejected', 'dispatched', 'done', "
            "'closed', 'reopened', 'new_report')",
            name=op.f("ck_notices_kind"),
        ),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_notices_case_id_cases")),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_notices_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notices_dedupe_key")),
    )
    op.create_index(
        "ix_notices_due",
        "notices",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_notices_case_id",
        "notices",
        ["case_id"],
        postgresql_where=sa.text("case_id IS NOT NULL"),
    )
    op.create_index(
        "ix_notices_sent_at", "notices", ["sent_at"], postgresql_where=sa.text("state = 'sent'")
    )

    op.create_table(
        "followup_answers",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("respondent", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("fixed", sa.String(length=16), nullable=False),
        sa.Column("satisfaction", sa.String(length=24), nullable=True),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("photo_id", sa.BigInteger(), nullable=True),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("respondent_key", sa.String(length=64), nullable=False),
        sa.Column("review_state", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("review_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("round >= 1", name=op.f("ck_followup_answers_round_positive")),
        sa.CheckConstraint(
            "respondent IN ('reporter', 'supporter', 'follower')",
            name=op.f("ck_followup_answers_respondent"),
        ),
        sa.CheckConstraint(
            "channel IN ('link', 'tracking', 'phone')", name=op.f("ck_followup_answers_channel")
        ),
        sa.CheckConstraint(
            "fixed IN ('yes', 'no', 'unknown')", name=op.f("ck_followup_answers_fixed")
        ),
        sa.CheckConstraint(
            "satisfaction IS NULL OR satisfaction IN "
            "('satisfied', 'basically_satisfied', 'dissatisfied')",
            name=op.f("ck_followup_answers_satisfaction"),
        ),
        sa.CheckConstraint(
            "review_state IN ('none', 'pending', 'reasonable', 'unreasonable')",
            name=op.f("ck_followup_answers_review_state"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_followup_answers_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["photo_id"], ["photos.id"], name=op.f("fk_followup_answers_photo_id_photos")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_followup_answers_recorded_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name=op.f("fk_followup_answers_reviewed_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_answers")),
        sa.UniqueConstraint(
            "case_id", "round", "respondent_key", name=op.f("uq_followup_answers_person")
        ),
    )
    op.create_index(
        "ix_followup_answers_pending",
        "followup_answers",
        ["answered_at"],
        postgresql_where=sa.text("review_state = 'pending'"),
    )
    op.create_index("ix_followup_answers_answered_at", "followup_answers", ["answered_at"])


def downgrade() -> None:
    op.drop_index("ix_followup_answers_answered_at", table_name="followup_answers")
    op.drop_index("ix_followup_answers_pending", table_name="followup_answers")
    op.drop_table("followup_answers")
    op.drop_index("ix_notices_sent_at", table_name="notices")
    op.drop_index("ix_notices_case_id", table_name="notices")
    op.drop_index("ix_notices_due", table_name="notices")
    op.drop_table("notices")
    op.drop_index("ix_subscriptions_community_id", table_name="subscriptions")
    op.drop_index("ix_subscriptions_case_id", table_name="subscriptions")
    op.drop_index("uq_subscriptions_target_address", table_name="subscriptions")
    op.drop_table("subscriptions")
