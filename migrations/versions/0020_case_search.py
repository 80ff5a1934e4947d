"""indexes for the staff's case search, and its security event kind

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 04:10:00.000000

`/cases/search` finds cases by number (exact, or a prefix), by a piece of their address (a
case-insensitive "contains") and by the reporter's phone or e-mail. At a million cases each of
these read the whole table (a LIKE '%…%' can use no b-tree); with these indexes they read only
the matches:

- `pg_trgm` (a trusted extension shipped with PostgreSQL: the database's owner may create it)
  and a GIN index of the address's trigrams: `address ILIKE '%main st%'`;
- the number with `text_pattern_ops`: `number LIKE 'C2026%'` whatever the database's collation
  (a plain b-tree serves LIKE only under the C collation);
- the reporter's phone as digits only and e-mail in lower case, each only over the cases that
  have one (most have none: an inspector's report carries no contact).

`security_events.kind` gains `contact_search`: every search by a phone or an e-mail is recorded.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values of gridmgmt.kernel.security_events.SecurityEventKind before and after.
KINDS = (
    "signin_failed",
    "signin_lockout",
    "signin_throttled",
    "api_key_refused",
    "cross_unit",
    "rate_limited",
)
NEW_KINDS = (*KINDS, "contact_search")


def _kinds(kinds: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_security_events_kind"), "security_events", type_="check")
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    op.create_check_constraint(
        op.f("ck_security_events_kind"), "security_events", f"kind IN ({listed})"
    )


def upgrade() -> None:
    bind = op.get_bind()
    if not bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).first():
        raise RuntimeError(
            "the PostgreSQL extension pg_trgm is not installed on the database server "
            "(Debian: it comes with the postgresql-15 package; elsewhere postgresql-contrib)"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_cases_address_trgm",
        "cases",
        ["address"],
        postgresql_using="gin",
        postgresql_ops={"address": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_cases_number_pattern",
        "cases",
        ["number"],
        postgresql_ops={"number": "text_pattern_ops"},
    )
    op.create_index(
        "ix_cases_contact_phone",
        "cases",
        [sa.text("regexp_replace(contact ->> 'phone', '[^0-9]', '', 'g')")],
        postgresql_where=sa.text("contact ? 'phone'"),
    )
    op.create_index(
        "ix_cases_contact_email",
        "cases",
        [sa.text("lower(contact ->> 'email')")],
        postgresql_where=sa.text("contact ? 'email'"),
    )
    _kinds(NEW_KINDS)


def downgrade() -> None:
    # The old kinds back: refused by the constraint itself while events of the new kind exist
    # (the audit trail is append-only: they are never deleted to go back).
    _kinds(KINDS)
    op.drop_index("ix_cases_contact_email", table_name="cases")
    op.drop_index("ix_cases_contact_phone", table_name="cases")
    op.drop_index("ix_cases_number_pattern", table_name="cases")
    op.drop_index("ix_cases_address_trgm", table_name="cases")
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")
