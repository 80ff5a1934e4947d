"""the whole city's counts per day, for the dashboard's weekly trends

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-01 19:00:00.000000

The dashboard's trends (the on-time closure rate and the public's rates per week, and the key
figures they add up to) are of the whole city, but read the daily rollups by unit, community
and urgency: 66,000 rows of `evaluation_days` and as many of `rate_days` for a year at ten
million cases, 200 ms of the page. `evaluation_day_totals` and `rate_day_totals` hold their
sums per day (365 rows a year), kept equal to them as migration 0029 keeps the monthly sums:
statement triggers on the daily tables log the days a refresh changes in `day_totals_dirty`,
and the owner's `refresh_day_totals` (called in the same transaction, after the daily
refreshes) sums those days again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each totals table: the daily table it sums and the columns it sums (typed as the daily's).
TOTALS = {
    "evaluation_day_totals": (
        "evaluation_days",
        {"due": "bigint", "closed": "bigint", "closed_on_time": "bigint", "handled": "bigint",
         "reworked": "bigint", "rework_count": "bigint", "handling_hours": "numeric"},
    ),
    "rate_day_totals": (
        "rate_days",
        {name: "bigint NOT NULL" for name in (
            "dispatches", "responded", "fixed", "not_fixed", "satisfied", "basically_satisfied",
            "dissatisfied", "closings", "reachable", "followed_up", "rehandled", "returns")},
    ),
}  # fmt: skip


def summed(totals: str, days: str | None = None) -> str:
    """The rows of `totals` summed from its daily table: of the days in the array `days`
    (SQL), or of every day."""
    daily, columns = TOTALS[totals]
    sums = ", ".join(f"sum({name})" for name in columns)
    where = f"WHERE day = ANY({days})" if days else ""
    return f"""
        INSERT INTO {totals}
        SELECT day, {sums} FROM {daily} {where} GROUP BY day"""


def _refresh_one(totals: str) -> str:
    return f"""
    SELECT array_agg(id), array_agg(DISTINCT day) INTO claimed, changed
    FROM day_totals_dirty WHERE rollup = '{totals}';
    IF claimed IS NOT NULL THEN
        DELETE FROM {totals} WHERE day = ANY(changed);{summed(totals, "changed")};
        DELETE FROM day_totals_dirty WHERE id = ANY(claimed);
    END IF;"""


REFRESH = f"""
CREATE FUNCTION public.refresh_day_totals() RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    claimed bigint[];
    changed date[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.day_totals'));  -- one at a time
    {"".join(_refresh_one(totals) for totals in TOTALS)}
END
$$
"""


def marker(totals: str) -> str:
    """The trigger function that logs the days of the daily rows a statement changed."""
    return f"""
CREATE FUNCTION public.mark_{totals}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO day_totals_dirty (rollup, day)
        SELECT DISTINCT '{totals}', day FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO day_totals_dirty (rollup, day)
        SELECT DISTINCT '{totals}', day FROM old_rows;
    END IF;
    RETURN NULL;
END
$$
"""


def triggers(totals: str) -> list[str]:
    daily = TOTALS[totals][0]
    tables = {
        "insert": "NEW TABLE AS new_rows",
        "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "OLD TABLE AS old_rows",
    }
    return [
        f"CREATE TRIGGER {daily}_totals_{operation} AFTER {operation.upper()} ON {daily}"
        f" REFERENCING {transition} FOR EACH STATEMENT"
        f" EXECUTE FUNCTION public.mark_{totals}()"
        for operation, transition in tables.items()
    ]


def upgrade() -> None:
    op.execute(
        "CREATE TABLE day_totals_dirty (id bigserial PRIMARY KEY, rollup text NOT NULL,"
        " day date NOT NULL)"
    )
    for totals, (_daily, columns) in TOTALS.items():
        counts = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        op.execute(f"CREATE TABLE {totals} (day date PRIMARY KEY, {counts})")
        op.execute(summed(totals))
        op.execute(marker(totals))
        for trigger in triggers(totals):
            op.execute(trigger)
    op.execute(REFRESH)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.refresh_day_totals()")
    for totals, (daily, _columns) in TOTALS.items():
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {daily}_totals_{operation} ON {daily}")
        op.execute(f"DROP FUNCTION IF EXISTS public.mark_{totals}()")
        op.execute(f"DROP TABLE {totals}")
    op.execute("DROP TABLE day_totals_dirty")
