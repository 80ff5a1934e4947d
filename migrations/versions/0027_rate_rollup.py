"""the three rates (三率) kept day by day, like the other rollups

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-01 10:00:00.000000

The evaluation and the dashboard counted the public's rates live from the case events and
the follow-up answers of the whole period (a year: every dispatch, closing and answer, each
dispatch with a look for its answer): 0.4 s at 30,000 cases, minutes at ten million. They now
come from `rate_days`, one row per (day, unit, community, urgency) with the counts of that day,
kept as migration 0026 keeps the others: triggers log the days a change touches in
`rate_dirty`, and the owner's `refresh_rate_rollup` recounts only those. Unlike the other
rollups it counts today too, up to the refresh (`rollup_state.refreshed_at`, the transaction's
`now()`): a city closes tens of thousands of cases a day, too many to count live on every page.
The reader counts live only what happened since.

The days a change touches:

- a case event (an append-only log: inserts only): its own day when it is a dispatch, a
  return to the unit, a reopening, a re-handling or a closing; when it is the unit's answer
  (it leaves "dispatched"), the days of the case's dispatches of the week before it, whose
  "answered in time" it may decide (`RESPONSE_LIMIT_HOURS` is at most a week);
- a follow-up answer (new, changed or deleted): its day, and the days of the case's closings
  before it (whether a closing had an answer after it);
- a case whose unit changes (not its first unit), or whose community, urgency, contact or
  reporter changes: the days of its counted events and answers.

"Answered in time" depends on the city's `RESPONSE_LIMIT_HOURS`: the rollup keeps the limit it
was counted with (`rollup_state.response_seconds`); a reader with another limit counts live,
and the next refresh recounts every day with the new one.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNTIL = "now()"  # the refresh's moment: what happened before it is counted
DISPATCHES = "('dispatch', 'check_fail', 'reopen', 'rehandle')"  # the unit's case again
COUNTS = ("dispatches", "responded", "fixed", "not_fixed", "satisfied", "basically_satisfied",
          "dissatisfied", "closings", "reachable", "followed_up", "rehandled")  # fmt: skip

# The day's counts as maps.evaluation counts them live (its _RATE_PARTS), from the events
# events (e) and the answers (a) from `{since}` to before `{until}`.
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
           0 AS dissatisfied, 0 AS closings, 0 AS reachable, 0 AS followed_up, 0 AS rehandled
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN units u ON u.code = e.data ->> 'unit'
    WHERE e.action IN {DISPATCHES} AND e.to_status = 'dispatched' AND e.created_at >= {{since}} AND e.created_at < {{until}}
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, a.answered_at, 0, 0,
           (a.fixed = 'yes')::int, (a.fixed = 'no')::int,
           (a.satisfaction = 'satisfied')::int, (a.satisfaction = 'basically_satisfied')::int,
           (a.satisfaction = 'dissatisfied')::int, 0, 0, 0, 0
    FROM followup_answers a JOIN cases c ON c.id = a.case_id
    WHERE a.answered_at >= {{since}} AND a.answered_at < {{until}} AND a.review_state <> 'unreasonable'
    UNION ALL
    SELECT c.unit_id, c.community_id, c.urgent, e.created_at, 0, 0, 0, 0, 0, 0, 0,
           (e.action = 'close')::int, (e.action = 'close' AND reach.ok)::int,
           (e.action = 'close' AND reach.ok AND EXISTS (
               SELECT FROM followup_answers a
               WHERE a.case_id = e.case_id AND a.answered_at >= e.created_at
           ))::int,
           (e.action = 'rehandle')::int
    FROM case_events e
    JOIN cases c ON c.id = e.case_id
    LEFT JOIN users r ON r.id = c.reporter_id
    CROSS JOIN LATERAL (
        SELECT (c.contact ? 'email' OR c.contact ? 'phone'
                OR r.role IS NOT DISTINCT FROM 'citizen') AS ok
    ) AS reach
    WHERE e.action IN ('close', 'rehandle') AND e.created_at >= {{since}} AND e.created_at < {{until}}
) AS parts
GROUP BY 1, 2, 3, 4
"""


EVERYTHING = RATES.format(since="'-infinity'", until=UNTIL, response_seconds=7200.0)

REFRESH = f"""
CREATE OR REPLACE FUNCTION public.refresh_rate_rollup(
    response_seconds double precision, whole boolean
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    claimed bigint[];
    days date[];
    one_day date;
    lo timestamptz;
    hi timestamptz;
BEGIN
    IF response_seconds IS NULL OR response_seconds <= 0 OR response_seconds > 7 * 86400 THEN
        RAISE EXCEPTION 'the response limit is more than nothing and at most a week';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt.rate_rollup'));  -- one at a time
    SELECT array_agg(id), array_agg(DISTINCT day) INTO claimed, days
    FROM rate_dirty;  -- today's too: the rollup counts up to now()
    IF whole THEN  -- another response limit: every day again
        DELETE FROM rate_days;
        INSERT INTO rate_days {
    RATES.format(since="'-infinity'", until=UNTIL, response_seconds="response_seconds")
};
    ELSIF claimed IS NOT NULL THEN
        DELETE FROM rate_days WHERE day = ANY(days);
        -- A day at a time: its bounds known when the statement is planned, each reads only
        -- its partition's rows by index (all the days in one join read every event).
        FOREACH one_day IN ARRAY days LOOP
            lo := one_day::timestamp AT TIME ZONE 'UTC';
            hi := least((one_day + 1)::timestamp AT TIME ZONE 'UTC', now());
            INSERT INTO rate_days {
    RATES.format(since="lo", until="hi", response_seconds="response_seconds")
};
        END LOOP;
    END IF;
    IF claimed IS NOT NULL THEN
        DELETE FROM rate_dirty WHERE id = ANY(claimed);
    END IF;
END
$$
"""

# The days of a case's counted events and answers, for the cases in `touched` (id, reported_at).
_CASE_DAYS = f"""
        SELECT (x.created_at AT TIME ZONE 'UTC')::date
        FROM touched t JOIN case_events x
          ON x.case_id = t.id AND x.created_at >= t.reported_at
        WHERE x.action IN {DISPATCHES} OR x.action IN ('close', 'rehandle')
        UNION
        SELECT (a.answered_at AT TIME ZONE 'UTC')::date
        FROM touched t JOIN followup_answers a ON a.case_id = t.id
"""
# The marking functions' header: trigger functions run as the owner (the app's role may not
# write the log), with a search path no caller can change.
MARKER = """RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$"""
MARK_EVENTS = f"""
CREATE FUNCTION public.mark_rate_days_events() {MARKER}
BEGIN
    INSERT INTO rate_dirty (day)
    SELECT (n.created_at AT TIME ZONE 'UTC')::date FROM new_events n
    WHERE n.action IN {DISPATCHES} OR n.action IN ('close', 'rehandle')
    UNION
    SELECT (x.created_at AT TIME ZONE 'UTC')::date
    FROM new_events n JOIN case_events x
      ON x.case_id = n.case_id AND x.created_at >= n.created_at - interval '7 days'
     AND x.created_at <= n.created_at
    WHERE n.from_status = 'dispatched' AND n.to_status <> 'dispatched'
      AND x.action IN {DISPATCHES} AND x.to_status = 'dispatched';
    RETURN NULL;
END
$$
"""


# An answer's day, and the days of its case's closings before it.
def _answer_days(answers: str) -> str:
    return f"""
    INSERT INTO rate_dirty (day)
    SELECT (a.answered_at AT TIME ZONE 'UTC')::date FROM ({answers}) AS a
    UNION
    SELECT (x.created_at AT TIME ZONE 'UTC')::date
    FROM ({answers}) AS a JOIN cases c ON c.id = a.case_id
    JOIN case_events x ON x.case_id = a.case_id AND x.created_at >= c.reported_at
     AND x.created_at <= a.answered_at
    WHERE x.action = 'close';"""


MARK_ANSWERS = f"""
CREATE FUNCTION public.mark_rate_days_answers() {MARKER}
BEGIN
    IF TG_OP = 'INSERT' THEN{_answer_days("SELECT case_id, answered_at FROM new_answers")}
    ELSIF TG_OP = 'UPDATE' THEN{
    _answer_days(
        "SELECT case_id, answered_at FROM new_answers"
        " UNION SELECT case_id, answered_at FROM old_answers"
    )
}
    ELSE{_answer_days("SELECT case_id, answered_at FROM old_answers")}
    END IF;
    RETURN NULL;
END
$$
"""
_MOVED = (
    "(o.unit_id IS NOT NULL AND o.unit_id IS DISTINCT FROM n.unit_id)"
    " OR o.community_id IS DISTINCT FROM n.community_id OR o.urgent IS DISTINCT FROM n.urgent"
    " OR o.contact IS DISTINCT FROM n.contact OR o.reporter_id IS DISTINCT FROM n.reporter_id"
)
MARK_CASES = f"""
CREATE FUNCTION public.mark_rate_days_cases() {MARKER}
BEGIN
    INSERT INTO rate_dirty (day)
    WITH touched AS (
        SELECT o.id, least(o.reported_at, n.reported_at) AS reported_at
        FROM old_cases o JOIN new_cases n USING (id)
        WHERE {_MOVED}
    )
    {_CASE_DAYS};
    RETURN NULL;
END
$$
"""
TRIGGERS = (
    "CREATE TRIGGER case_events_rate_days AFTER INSERT ON case_events"
    " REFERENCING NEW TABLE AS new_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rate_days_events()",
    "CREATE TRIGGER followup_answers_rate_days_insert AFTER INSERT ON followup_answers"
    " REFERENCING NEW TABLE AS new_answers"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rate_days_answers()",
    "CREATE TRIGGER followup_answers_rate_days_update AFTER UPDATE ON followup_answers"
    " REFERENCING OLD TABLE AS old_answers NEW TABLE AS new_answers"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rate_days_answers()",
    "CREATE TRIGGER followup_answers_rate_days_delete AFTER DELETE ON followup_answers"
    " REFERENCING OLD TABLE AS old_answers"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rate_days_answers()",
    "CREATE TRIGGER cases_rate_days AFTER UPDATE ON cases"
    " REFERENCING OLD TABLE AS old_cases NEW TABLE AS new_cases"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.mark_rate_days_cases()",
)


def upgrade() -> None:
    op.execute("CREATE TABLE rate_dirty (id bigserial PRIMARY KEY, day date NOT NULL)")
    columns = ", ".join(f"{name} bigint NOT NULL" for name in COUNTS)
    op.execute(
        "CREATE TABLE rate_days (day date NOT NULL, unit_id integer, community_id integer,"
        f" urgent boolean, {columns})"
    )
    op.execute(f"INSERT INTO rate_days {EVERYTHING}")
    op.execute(
        "CREATE UNIQUE INDEX ix_rate_days_key ON rate_days"
        " (day, unit_id, community_id, urgent) NULLS NOT DISTINCT"
    )
    op.execute("ALTER TABLE rollup_state ADD COLUMN response_seconds double precision")
    op.execute(
        "INSERT INTO rollup_state (name, through, refreshed_at, response_seconds)"
        " VALUES ('rate_days', (now() AT TIME ZONE 'UTC')::date, now(), 7200.0)"
    )
    op.execute(REFRESH)
    for function in (MARK_EVENTS, MARK_ANSWERS, MARK_CASES):
        op.execute(function)
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS case_events_rate_days ON case_events")
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS followup_answers_rate_days_{name} ON followup_answers")
    op.execute("DROP TRIGGER IF EXISTS cases_rate_days ON cases")
    for name in ("events", "answers", "cases"):
        op.execute(f"DROP FUNCTION IF EXISTS public.mark_rate_days_{name}()")
    op.execute("DROP FUNCTION IF EXISTS public.refresh_rate_rollup(double precision, boolean)")
    op.execute("DELETE FROM rollup_state WHERE name = 'rate_days'")
    op.execute("ALTER TABLE rollup_state DROP COLUMN response_seconds")
    op.execute("DROP TABLE rate_days")
    op.execute("DROP TABLE rate_dirty")
