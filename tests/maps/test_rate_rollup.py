"""The three rates kept day by day (migration 0027), on the demo city's year of real requests:
after each kind of change that moves a rate (a unit's late answer to a dispatch of an earlier
day, a follow-up answer days after the closing, a complaint judged unreasonable, a contact
added, a case moved to another unit) a refresh gives exactly what a full recount gives, and
the evaluation's counts from the rollup equal the live count. Each test rolls back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from maps import evaluation
from tests.conftest import demo_clone
from tests.support import migration_module

pytestmark = pytest.mark.slow


def migration() -> ModuleType:
    """Migration 0028 (0027 with the returns), whose definition is the full recount the rollup
    must equal."""
    return migration_module("0028_returns_rolled_up.py")


FULL = migration().EVERYTHING  # counted with the default response limit, 2 hours
SECONDS = 7200.0


@pytest.fixture(scope="module")
def engine(history_database_url: URL) -> Iterator[Engine]:
    """A clone of the demo city with its year of real requests, as the app's role."""
    with demo_clone("rate_rollup", history_database_url) as url:
        engine = create_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction rolled back at the end."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


def rows(connection: Connection, sql: str) -> set[tuple[object, ...]]:
    return {tuple(row) for row in connection.execute(text(sql))}


def refresh(connection: Connection) -> None:
    connection.execute(text("SELECT public.refresh_rate_rollup(:s, false)"), {"s": SECONDS})


def assert_equal_to_full_recount(connection: Connection) -> None:
    kept = rows(connection, "SELECT * FROM rate_days")
    counted = rows(connection, FULL)
    assert kept == counted, f"{len(kept ^ counted)} rows differ: {sorted(kept ^ counted)[:4]}"


def total(connection: Connection, name: str) -> int:
    return connection.scalar(text(f"SELECT coalesce(sum({name}), 0) FROM rate_days")) or 0


def event(connection: Connection, case_id: int, action: str, at: datetime, frm: str, to: str):  # type: ignore[no-untyped-def]
    connection.execute(
        text("""INSERT INTO case_events (case_id, action, from_status, to_status, actor_role,
                                         created_at, data)
                VALUES (:c, :a, :f, :t, 'system', :at, '{}')"""),
        {"c": case_id, "a": action, "f": frm, "t": to, "at": at},
    )


def past_close(connection: Connection, reachable: bool | None = None):  # type: ignore[no-untyped-def]
    """A closing of a past day (of a reachable case, an unreachable one, or any)."""
    reach = {
        None: "true",
        True: "(c.contact ? 'email' OR c.contact ? 'phone')",
        False: "NOT (c.contact ? 'email' OR c.contact ? 'phone') AND c.reporter_id IS NULL",
    }[reachable]
    found = connection.execute(
        text(f"""SELECT e.case_id, e.created_at FROM case_events e JOIN cases c ON c.id = e.case_id
                 WHERE e.action = 'close' AND e.created_at < now() - interval '20 days'
                   AND {reach}
                   AND NOT EXISTS (SELECT FROM followup_answers a WHERE a.case_id = c.id)
                 ORDER BY e.id LIMIT 1""")
    ).first()
    assert found is not None
    return found


def test_the_seeded_rollup_equals_a_full_recount(connection: Connection) -> None:
    refresh(connection)
    assert total(connection, "dispatches") > 300  # the year's dispatches are in it
    assert total(connection, "closings") > 300
    assert_equal_to_full_recount(connection)


def test_a_late_answer_to_a_dispatch_of_the_day_before_is_counted(
    connection: Connection,
) -> None:
    refresh(connection)
    # A dispatch at 23:30 of a past day that nobody answered, answered at 00:30 the next day.
    case_id = connection.scalar(
        text("SELECT id FROM cases WHERE status = 'closed' ORDER BY id LIMIT 1")
    )
    day = date.today() - timedelta(days=40)
    dispatched = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23.5)
    event(connection, case_id, "dispatch", dispatched, "filed", "dispatched")
    refresh(connection)
    before = total(connection, "responded")
    event(
        connection, case_id, "accept", dispatched + timedelta(hours=1), "dispatched", "in_progress"
    )
    marked = connection.scalar(text("SELECT count(*) FROM rate_dirty WHERE day = :d"), {"d": day})
    assert marked == 1  # the dispatch's day, not only the answer's
    refresh(connection)
    assert total(connection, "responded") == before + 1
    assert_equal_to_full_recount(connection)


def test_an_answer_days_after_the_closing_counts_for_the_closing_day(
    connection: Connection,
) -> None:
    refresh(connection)
    case_id, closed_at = past_close(connection, reachable=True)
    before = total(connection, "followed_up")
    connection.execute(
        text("""INSERT INTO followup_answers (case_id, round, respondent, channel, fixed,
                                              satisfaction, answered_at, respondent_key)
                VALUES (:c, 1, 'reporter', 'link', 'no', 'dissatisfied', :at, 'k')"""),
        {"c": case_id, "at": closed_at + timedelta(days=3)},
    )
    refresh(connection)
    assert total(connection, "followed_up") == before + 1
    assert total(connection, "not_fixed") >= 1
    assert_equal_to_full_recount(connection)

    # Judged unreasonable: no valid rating any more, still a follow-up made.
    connection.execute(
        text("UPDATE followup_answers SET review_state = 'unreasonable' WHERE case_id = :c"),
        {"c": case_id},
    )
    refresh(connection)
    assert total(connection, "followed_up") == before + 1
    assert_equal_to_full_recount(connection)


def test_a_contact_added_makes_the_closing_reachable(connection: Connection) -> None:
    refresh(connection)
    case_id, _ = past_close(connection, reachable=False)
    before = total(connection, "reachable")
    connection.execute(
        text("""UPDATE cases SET contact = '{"phone": "+1 213 555 0100"}' WHERE id = :c"""),
        {"c": case_id},
    )
    refresh(connection)
    closings = connection.scalar(
        text("SELECT count(*) FROM case_events WHERE case_id = :c AND action = 'close'"),
        {"c": case_id},
    )
    assert total(connection, "reachable") == before + closings
    assert_equal_to_full_recount(connection)


def test_a_case_moved_to_another_unit_moves_its_counts(connection: Connection) -> None:
    refresh(connection)
    case_id, _ = past_close(connection)
    other = connection.scalar(
        text("""SELECT u.id FROM units u, cases c
                WHERE c.id = :c AND u.id <> c.unit_id ORDER BY u.id LIMIT 1"""),
        {"c": case_id},
    )
    connection.execute(
        text("UPDATE cases SET unit_id = :u WHERE id = :c"), {"u": other, "c": case_id}
    )
    refresh(connection)
    assert_equal_to_full_recount(connection)


def test_a_return_of_a_past_day_is_counted_for_its_unit(connection: Connection) -> None:
    refresh(connection)
    assert total(connection, "returns") > 0  # the year's returns are in it
    case_id, closed_at = past_close(connection)
    unit_id = connection.scalar(text("SELECT unit_id FROM cases WHERE id = :c"), {"c": case_id})
    day = (closed_at - timedelta(days=3)).date()
    returned = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10)

    def returns_of_the_day() -> int:
        return connection.scalar(
            text("SELECT coalesce(sum(returns), 0) FROM rate_days WHERE day = :d AND unit_id = :u"),
            {"d": day, "u": unit_id},
        )

    before = returns_of_the_day()
    event(connection, case_id, "return", returned, "in_progress", "returned")
    refresh(connection)
    assert returns_of_the_day() == before + 1
    assert_equal_to_full_recount(connection)


def test_the_evaluation_from_the_rollup_equals_the_live_count(connection: Connection) -> None:
    refresh(connection)
    connection.execute(
        text("UPDATE rollup_state SET refreshed_at = now(), response_seconds = :s"
             " WHERE name = 'rate_days'"),
        {"s": SECONDS},
    )  # fmt: skip
    session = Session(bind=connection)
    today = datetime.now(UTC).date()
    year = evaluation.Period(today - timedelta(days=365), today)
    rolled = evaluation.rate_counts(session, year, response_hours=2.0)
    weeks = evaluation.rates_per_week(session, year, response_hours=2.0)
    # Another response limit than the rollup's: counted live (and right) until a refresh.
    longer = evaluation.rate_counts(session, year, response_hours=30.0)
    connection.execute(text("DELETE FROM rollup_state WHERE name = 'rate_days'"))
    assert evaluation.rate_counts(session, year, response_hours=2.0) == rolled
    assert evaluation.rates_per_week(session, year, response_hours=2.0) == weeks
    assert evaluation.rate_counts(session, year, response_hours=30.0) == longer
    assert sum(c["responded"] for c in longer.values()) > sum(
        c["responded"] for c in rolled.values()
    )


def test_a_new_response_limit_recounts_every_day(connection: Connection) -> None:
    session = Session(bind=connection)
    evaluation.refresh_rollup(session, response_hours=30.0)
    state = connection.execute(
        text("SELECT response_seconds FROM rollup_state WHERE name = 'rate_days'")
    ).scalar()
    assert state == 30 * 3600
    recount = migration().RATES.format(
        since="'-infinity'", until=migration().UNTIL, response_seconds=30 * 3600.0
    )
    assert rows(connection, "SELECT * FROM rate_days") == rows(connection, recount)


def test_the_monthly_rollups_are_the_sums_of_the_daily_ones(connection: Connection) -> None:
    session = Session(bind=connection)
    evaluation.refresh_rollup(session, response_hours=2.0)
    case_id, closed_at = past_close(connection)
    event(connection, case_id, "return", closed_at - timedelta(days=2), "in_progress", "returned")
    connection.execute(  # a past case handled later: its deadline's and handling's months
        text("UPDATE cases SET handled_at = handled_at + interval '1 hour' WHERE id = :c"),
        {"c": case_id},
    )
    evaluation.refresh_rollup(session, response_hours=2.0)

    for monthly, daily in (("evaluation_months", "evaluation_days"), ("rate_months", "rate_days")):
        every = connection.execute(text(f"SELECT * FROM {monthly} LIMIT 0")).keys()
        columns = [n for n in every if n not in ("month", "unit_id", "community_id", "urgent")]
        sums = ", ".join(f"sum({name})" for name in columns)
        by_month = rows(
            connection,
            f"""SELECT date_trunc('month', day)::date, unit_id, community_id, urgent, {sums}
                FROM {daily} GROUP BY 1, 2, 3, 4""",
        )
        assert len(by_month) > 12
        assert rows(connection, f"SELECT * FROM {monthly}") == by_month, monthly
    assert connection.scalar(text("SELECT count(*) FROM month_dirty")) == 0


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2026, 1, 1), date(2027, 1, 1), (date(2026, 1, 1), date(2027, 1, 1))),
        (date(2026, 1, 15), date(2026, 12, 2), (date(2026, 2, 1), date(2026, 12, 1))),
        (date(2026, 3, 2), date(2026, 4, 1), (date(2026, 4, 1), date(2026, 4, 1))),
        (date(2026, 3, 1), date(2026, 3, 31), (date(2026, 3, 31), date(2026, 3, 31))),
        (date(2026, 12, 5), date(2027, 2, 1), (date(2027, 1, 1), date(2027, 2, 1))),
    ],
)
def test_whole_months(start: date, end: date, months: tuple[date, date]) -> None:
    assert evaluation.whole_months(start, end) == months
