"""an index of cases by class and report time, for Open311 listings by service and period

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 03:45:00.000000

`GET /open311/v2/requests.json?service_code=…&start_date=…` lists one class's newest cases of a
period. Without an index on the class, PostgreSQL walked the report-time index backwards and
threw away the other classes' cases: 134 ms at a million cases, 1.6 s at ten million. With
(category_id, reported_at, id) it reads only the page it returns.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_cases_category_reported_at", "cases", ["category_id", "reported_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_category_reported_at", table_name="cases")
