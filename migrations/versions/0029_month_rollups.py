"""the evaluation's rollups summed by month too

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-01 13:40:00.000000

A year's evaluation added up 66,000 rows of `evaluation_days` and as many of `rate_days` (a
row per day, unit, community and urgency) at ten million cases, some 120 ms of the page. Its
whole months now come from `evaluation_months` and `rate_months`, the same rows summed by
month (2,400 rows a year), and only the days of its first and last month from the daily ones.

The monthly tables are the sums of the daily ones, always: statement triggers on the daily
tables log the months a refresh changes in `month_dirty`, and the owner's
`refresh_month_rollups` (called in the same transaction, after the daily refreshes) sums those
months again. Readers never see one without the other.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "unit_id integer, community_id integer, urgent boolean"
# Each monthly table: the daily table it sums and the columns it sums (typed as the daily's).
MONTHLY = {
    "evaluation_months": (
        "evaluation_days",
        {"due": "bigint", "closed": "bigint", "closed_on_time": "bigint", "handled": "bigint",
         "reworked": "bigint", "rework_count": "bigint", "handling_hours": "numeric"},
    ),
    "rate_months": (
        "rate_days",
        {name: "bigint NOT NULL" for name in (
            "dispatches", "responded", "fixed", "not_fixed", "satisfied", "basically_satisfied",
            "dissatisfied", "closings", "reachable", "followed_up", "rehandled", "returns")},
    ),
}  # fmt: skip


def summed(monthly: str, months: str | None = None) -> str:
    """The rows of `monthly` summed from its daily table: of the months in the array `months`
    (SQL), or of every month."""
    daily, columns = MONTHLY[monthly]
    sums = ", ".join(f"sum({name})" for name in columns)
    month = "date_trunc('month', day)::date"
    where = f"WHERE {month} = ANY({months})" if months else ""
    return f"""
        INSERT INTO {monthly}
        SELECT {month}, unit_id, community_id, urgent, {sums}
        FROM {daily} {where}
        GROUP BY 1, 2, 3, 4"""


REFRESH = f"""
CREATE FUNCTION public.refresh_month_rollups() RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    claimed bigint[];
    changed date[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.month_rollups'));  -- one at a time
    -- evaluation_months
    SELECT array_agg(id), array_agg(DISTINCT month) INTO claimed, changed
    FROM month_dirty WHERE rollup = 'evaluation_months';
    IF claimed IS NOT NULL THEN
        DELETE FROM evaluation_months WHERE month = ANY(changed);{
    summed("evaluation_months", "changed")
};
        DELETE FROM month_dirty WHERE id = ANY(claimed);
    END IF;
    -- rate_months
    SELECT array_agg(id), array_agg(DISTINCT month) INTO claimed, changed
    FROM month_dirty WHERE rollup = 'rate_months';
    IF claimed IS NOT NULL THEN
        DELETE FROM rate_months WHERE month = ANY(changed);{summed("rate_months", "changed")};
        DELETE FROM month_dirty WHERE id = ANY(claimed);
    END IF;
END
$$
"""


def marker(monthly: str) -> str:
    """The trigger function that logs the months of the daily rows a statement changed."""
    return f"""
CREATE FUNCTION public.mark_{monthly}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO month_dirty (rollup, month)
        SELECT DISTINCT '{monthly}', date_trunc('month', day)::date FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO month_dirty (rollup, month)
        SELECT DISTINCT '{monthly}', date_trunc('month', day)::date FROM old_rows;
    END IF;
    RETURN NULL;
END
$$
"""


def triggers(monthly: str) -> list[str]:
    daily = MONTHLY[monthly][0]
    tables = {
        "insert": "NEW TABLE AS new_rows",
        "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "OLD TABLE AS old_rows",
    }
    return [
        f"CREATE TRIGGER {daily}_months_{operation} AFTER {operation.upper()} ON {daily}"
        f" REFERENCING {transition} FOR EACH STATEMENT"
        f" EXECUTE FUNCTION public.mark_{monthly}()"
        for operation, transition in tables.items()
    ]


def upgrade() -> None:
    op.execute(
        "CREATE TABLE month_dirty (id bigserial PRIMARY KEY, rollup text NOT NULL,"
        " month date NOT NULL)"
    )
    for monthly, (_daily, columns) in MONTHLY.items():
        counts = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        op.execute(f"CREATE TABLE {monthly} (month date NOT NULL, {KEY}, {counts})")
        op.execute(summed(monthly))
        op.execute(
            f"CREATE UNIQUE INDEX ix_{monthly}_key ON {monthly}"
            " (month, unit_id, community_id, urgent) NULLS NOT DISTINCT"
        )
        op.execute(marker(monthly))
        for trigger in triggers(monthly):
            op.execute(trigger)
    op.execute(REFRESH)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.refresh_month_rollups()")
    for monthly, (daily, _columns) in MONTHLY.items():
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {daily}_months_{operation} ON {daily}")
        op.execute(f"DROP FUNCTION IF EXISTS public.mark_{monthly}()")
        op.execute(f"DROP TABLE {monthly}")
    op.execute("DROP TABLE month_dirty")
