"""returns (回退) kept day by day with the three rates; the suspended cases' own index

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-01 13:00:00.000000

The evaluation counted each unit's returns live from the case events of the whole period,
every 'return' event looking up its case for the unit, community and urgency: some 4,000
returns a month at ten million cases a year, 45-75 ms of every evaluation page. A return is an
event of the case's unit like a dispatch, so it is now a count of `rate_days` (migration 0027),
kept by the same triggers and refresh, and counted live only since the last refresh. The
days a return touches are logged as a dispatch's are (its own day; a case's counted events
when the case moves), so the refresh function and the two marking functions are replaced,
each by 0027's with the return added.

And `ix_cases_suspended`: the suspended cases with what the evaluation groups them by, which
it reads alone (index-only) instead of every suspended case's row.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _previous() -> ModuleType:
    """Migration 0027, whose SQL this one extends (a migration's text never changes)."""
    path = Path(__file__).with_name("0027_rate_rollup.py")
    spec = importlib.util.spec_from_file_location("migration_0027_rate_rollup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BEFORE = _previous()
UNTIL = BEFORE.UNTIL
COUNTS = (*BEFORE.COUNTS, "returns")
DISPATCHES = BEFORE.DISPATCHES
COUNTED = "('close', 'rehandle', 'return')"  # the other events counted, with their day

# The day's counts as maps.evaluation counts them live (its _RATE_PARTS): 0027's, and the
# returns of each (unit, community, urgency), from `{since}` to before `{until}`.
RATES = f"""
SELECT (at AT TIME ZONE 'UTC')::date AS day, unit_id, community_id, urgent,
       {", ".join(f"coalesce(sum({name}), 0) AS {name}" for name in COUNTS)}
FROM (
    SELECT coalesce(u.id, (e.data ->> 'unit_id')::int, c.unit_id) AS unit_id, c.community_id,
           c.urgent, e.created_at AS at, 1 AS dispatches,
           EXISTS (
               SELECT FROM case_events x
               WHERE x.case_id = e.case_id AND x.from_status = 'dispatched'
                 AND x.to_status <> 'dispatched' AND x.created_at >= e.created_at
                 AND x.created_at <= e.created_at + make_interval(secs => {{response_seconds}})
           )::int AS responded,
           0 AS fixed, 0 AS not_fixed, 0 AS satisfied, 0 AS basically_satisfied,
           0 AS dissatisfied, 0 AS closings, 0 AS reachable, 0 AS followed_up, 0 AS rehandled,
           0 AS returns
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN units u ON u.code = e.data ->> 'unit'
    WHERE e.action IN {DISPATCHES} AND e.to_status = 'dispatched' AND e.created_at >= {{since}} AND e.created_at < {{until}}
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, a.answered_at, 0, 0,
           (a.fixed = 'yes')::int, (a.fixed = 'no')::int,
           (a.satisfaction = 'satisfied')::int, (a.satisfaction = 'basically_satisfied')::int,
           (a.satisfaction = 'dissatisfied')::int, 0, 0, 0, 0, 0
    FROM followup_answers a JOIN cases c ON c.id = a.case_id
    WHERE a.answered_at >= {{since}} AND a.answered_at < {{until}} AND a.review_state <> 'unreasonable'
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, e.created_at, 0, 0, 0, 0, 0, 0, 0,
           (e.action = 'close')::int, (e.action = 'close' AND reach.ok)::int,
           (e.action = 'close' AND reach.ok AND EXISTS (
               SELECT FROM followup_answers a
               WHERE a.case_id = e.case_id AND a.answered_at >= e.created_at
           ))::int,
           (e.action = 'rehandle')::int, (e.action = 'return')::int
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN users r ON r.id = c.reporter_id
    CROSS JOIN LATERAL (
        SELECT (c.contact ? 'email' OR c.contact ? 'phone'
                OR r.role IS NOT DISTINCT FROM 'citizen') AS ok
    ) AS reach
    WHERE e.action IN {COUNTED} AND e.created_at >= {{since}} AND e.created_at < {{until}}
) AS parts
GROUP BY 1, 2, 3, 4
"""


def _replaced(sql: str, pairs: list[tuple[str, str]]) -> str:
    """One of 0027's functions, with each (old, new) text of `pairs` replaced (every old one
    found), made to replace the function in place."""
    for old, new in pairs:
        assert old in sql, old[:80]
        sql = sql.replace(old, new)
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


def functions(returns: bool) -> list[str]:
    """The refresh and the two marking functions, counting the returns or (False) as 0027."""
    bounds = (("'-infinity'", UNTIL), ("lo", "hi"))  # a whole recount, a day's
    rates = [
        (
            BEFORE.RATES.format(since=lo, until=hi, response_seconds="response_seconds"),
            RATES.format(since=lo, until=hi, response_seconds="response_seconds"),
        )
        for lo, hi in bounds
    ]
    counted = [("('close', 'rehandle')", COUNTED)]
    return [
        _replaced(BEFORE.REFRESH, rates if returns else []),
        _replaced(BEFORE.MARK_EVENTS, counted if returns else []),
        _replaced(BEFORE.MARK_CASES, counted if returns else []),
    ]


EVERYTHING = RATES.format(since="'-infinity'", until=UNTIL, response_seconds=7200.0)


def upgrade() -> None:
    op.execute("ALTER TABLE rate_days ADD COLUMN returns bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE rate_days ALTER COLUMN returns DROP DEFAULT")
    for function in functions(returns=True):
        op.execute(function)
    # Every day again, with the response limit the rollup was counted with.
    op.execute("DELETE FROM rate_days")
    op.execute(
        "INSERT INTO rate_days "
        + RATES.format(
            since="'-infinity'",
            until=UNTIL,
            response_seconds="(SELECT coalesce(max(response_seconds), 7200.0) FROM rollup_state"
            " WHERE name = 'rate_days')",
        )
    )
    op.execute(
        "UPDATE rollup_state SET refreshed_at = now(), through = (now() AT TIME ZONE 'UTC')::date"
        " WHERE name = 'rate_days'"
    )
    op.execute(
        "CREATE INDEX ix_cases_suspended ON cases (unit_id)"
        " INCLUDE (community_id, urgent, dispatched_at) WHERE status = 'suspended'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cases_suspended")
    for function in functions(returns=False):
        op.execute(function)
    op.execute("ALTER TABLE rate_days DROP COLUMN returns")
