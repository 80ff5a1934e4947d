"""the cases table vacuumed after a number of changed rows, not a share of the table

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-01 19:45:00.000000

PostgreSQL's autovacuum waits by default until a fifth of a table has changed: two million
updated cases at ten million. Until a vacuum, every page a change touched is no longer marked
all-visible, and the index-only scans the pages rely on (the overdue count, the open cases by
deadline, the listings) read those pages' rows from the table too: after a few thousand
changes the dashboard's count of overdue cases made 14,000 such reads (34 -> 110 ms). The
`cases` table is now vacuumed after 5,000 changed rows and 20,000 new ones, and analysed
after 1 % of it changes, whatever its size. A vacuum of a table whose pages are nearly all
marked visible reads only the others, so frequent ones are cheap.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "5000",
    "autovacuum_vacuum_insert_scale_factor": "0",
    "autovacuum_vacuum_insert_threshold": "20000",
    "autovacuum_analyze_scale_factor": "0.01",
}


def upgrade() -> None:
    options = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    op.execute(f"ALTER TABLE cases SET ({options})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE cases RESET ({', '.join(SETTINGS)})")
