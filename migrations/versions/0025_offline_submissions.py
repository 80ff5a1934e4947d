"""offline submissions: reports and photos sent later from a phone's outbox

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01 05:00:00.000000

An inspector without a signal keeps reports on the phone and sends them when the network comes
back, perhaps hours later and perhaps twice (a reply lost on a weak signal). As in ODK Central:

- `cases.submission_uuid`: the UUID the phone made for the report; unique, so a repeat finds
  the first case; `cases.submission_digest`: the SHA-256 of what the report said, so a repeat
  that says something else is refused (409) rather than silently answered with the first case;
- `cases.captured_at`: when the phone made the report (`reported_at` stays the time it
  arrived: both are kept); `cases.gps_accuracy_m`: the radius the phone gave for its position;
- `photos.client_uuid`: each photo comes in a request of its own with its UUID, stored once;
  `photos.captured_at`: when the phone took it.

All nullable: reports from the form, the API and Open311 carry none of these, and NULLs never
clash in a unique constraint. Adding a nullable column rewrites nothing; building the two
unique indexes reads each table once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("submission_uuid", postgresql.UUID(as_uuid=False)))
    op.add_column("cases", sa.Column("submission_digest", sa.String(64)))
    op.add_column("cases", sa.Column("captured_at", sa.DateTime(timezone=True)))
    op.add_column("cases", sa.Column("gps_accuracy_m", sa.Float()))
    op.create_unique_constraint(op.f("uq_cases_submission_uuid"), "cases", ["submission_uuid"])
    op.add_column("photos", sa.Column("client_uuid", postgresql.UUID(as_uuid=False)))
    op.add_column("photos", sa.Column("captured_at", sa.DateTime(timezone=True)))
    op.create_unique_constraint(op.f("uq_photos_client_uuid"), "photos", ["client_uuid"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_photos_client_uuid"), "photos", type_="unique")
    op.drop_column("photos", "captured_at")
    op.drop_column("photos", "client_uuid")
    op.drop_constraint(op.f("uq_cases_submission_uuid"), "cases", type_="unique")
    op.drop_column("cases", "gps_accuracy_m")
    op.drop_column("cases", "captured_at")
    op.drop_column("cases", "submission_digest")
    op.drop_column("cases", "submission_uuid")
