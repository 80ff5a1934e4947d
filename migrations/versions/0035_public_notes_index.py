"""an index of the event notes staff marked public

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-01 19:30:00.000000

Each Open311 listing of 1,000 requests looks up each case's latest public note: one probe per
case into every month of the event log, each reading all of the case's events to find the few
with a public note (8,000 rows for a page, 60 ms at ten million cases). A partial index of
those notes alone (by case, newest last) answers from a few rows. Built on the partitioned
table, so every month's partition has its own.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_case_events_public_notes ON case_events (case_id, id)"
        " WHERE note <> '' AND data ? 'public_note'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_case_events_public_notes")
