"""The map's open cases rolled up (migrations 0031 and 0033): counted as of the refresh, in the
running sums with the other counts, then brought to the moment of reading by the log of
changes since and the deadlines passed since. Whatever a
working city does between two refreshes (closing, reopening, moving deadlines, reports and
cells, new and deleted cases, many at once, while a refresh runs), the map's open and overdue
counts are the live ones, to the case."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from cases.status import DEADLINE_RUNS, OPEN_STATUSES
from gridmgmt.kernel.db import sql_in
from maps import aggregate, evaluation
from maps import services as stats
from maps.aggregate import Filters
from tests.conftest import as_owner, demo_clone

pytestmark = pytest.mark.slow

OPEN = sql_in("c.status", sorted(OPEN_STATUSES))
RUNNING = sql_in("c.status", DEADLINE_RUNS)
WAITING = sql_in("c.status", sorted(OPEN_STATUSES - set(DEADLINE_RUNS)))  # open, no unit's clock
# What the map counts, per cell, from the cases themselves (as of the transaction's now()).
LIVE = f"""
    SELECT c.cell_id, count(*),
           count(*) FILTER (WHERE {OPEN}),
           count(*) FILTER (WHERE {RUNNING} AND c.deadline < now()),
           count(*) FILTER (WHERE c.deadline IS NOT NULL AND (c.closed_at IS NOT NULL
                            OR (c.deadline < now() AND {OPEN}))),
           count(*) FILTER (WHERE c.closed_at IS NOT NULL
                            AND COALESCE(c.handled_at, c.closed_at) <= c.deadline)
    FROM cases c
    WHERE c.reported_at >= :a AND c.reported_at < :b AND c.cell_id IS NOT NULL {{area}}
    GROUP BY c.cell_id
"""
Counts = dict[int, tuple[int, ...]]


@pytest.fixture(scope="module")
def clone(history_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city with its year of real requests."""
    with demo_clone("open_rollup", history_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def engine(clone: URL) -> Iterator[Engine]:
    """The clone, as the app's role."""
    engine = create_engine(clone)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def owner(clone: URL) -> Iterator[Engine]:
    """The clone, as the tables' owner (the rollups' writer)."""
    engine = create_engine(as_owner(clone))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def community(engine: Engine) -> int:
    """The community with the most open cases."""
    with engine.connect() as connection:
        most = f"""SELECT c.community_id FROM cases c WHERE {OPEN} AND c.community_id IS NOT NULL
                   GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"""
        return connection.scalar(text(most))


def refresh(engine: Engine) -> None:
    with engine.begin() as connection:
        evaluation.refresh_rollup(Session(bind=connection), response_hours=2.0)


def today() -> date:
    return datetime.now(UTC).date()


def periods() -> list[tuple[date, date]]:
    """A month, 45 days, a year, past days alone, and periods that begin before the running
    sums (whole months and days counted live, then the sums)."""
    end = today()
    return [
        (end - timedelta(days=29), end),
        (end - timedelta(days=44), end),
        (end - timedelta(days=364), end),
        (end - timedelta(days=200), end - timedelta(days=20)),
        (end - timedelta(days=15), end - timedelta(days=15)),
        (end - timedelta(days=600), end),
        (end - timedelta(days=530), end - timedelta(days=100)),
    ]


def mapped(connection: Connection, f: Filters) -> Counts:
    cells = stats.cell_stats(Session(bind=connection), f)
    return {c.id: (c.n, c.open, c.overdue, c.due, c.on_time) for c in cells}


def live(connection: Connection, f: Filters) -> Counts:
    params = {
        "a": datetime.combine(f.start, datetime.min.time(), UTC),
        "b": datetime.combine(f.end + timedelta(days=1), datetime.min.time(), UTC),
        "area": f.area_id,
    }
    area = "AND c.community_id = :area" if f.area_id is not None else ""
    rows = connection.execute(text(LIVE.format(area=area)), params)
    return {cell: tuple(counts) for cell, *counts in rows}


def compare(connection: Connection, f: Filters, fields: slice) -> tuple[Counts, Counts]:
    """The map's counts and the live ones, of some fields, every cell either has (zeros for
    a cell one leaves out)."""
    found, expected = mapped(connection, f), live(connection, f)
    zero = (0, 0, 0, 0, 0)
    cells = found.keys() | expected.keys()
    pick = {c: found.get(c, zero)[fields] for c in cells}
    want = {c: expected.get(c, zero)[fields] for c in cells}
    return pick, want


OPEN_AND_OVERDUE = slice(1, 3)  # what a change shows at once (the rest at the next refresh)
EVERYTHING = slice(0, 5)


def assert_as_live(engine: Engine, community: int, fields: slice = OPEN_AND_OVERDUE) -> None:
    with engine.begin() as connection:
        state = connection.execute(
            text(
                "SELECT name, through FROM rollup_state"
                " WHERE name IN ('evaluation_days', 'map_sums')"
            )
        ).all()
        assert len({through for _name, through in state}) == 1 and len(state) == 2
        overdue = evaluation.tally_cube(
            Session(bind=connection),
            evaluation.Period(today() - timedelta(days=29), today()),
            connection.scalar(text("SELECT now()")),
        )
        counted = {key: t.overdue_open for key, t in overdue.items() if t.overdue_open}
        live_overdue = {
            (unit, community_id, urgent): n
            for unit, community_id, urgent, n in connection.execute(
                text(f"""SELECT c.unit_id, c.community_id, c.urgent, count(*) FROM cases c
                         WHERE {RUNNING} AND c.deadline < now() AND c.unit_id IS NOT NULL
                           AND c.dispatched_at < :end
                         GROUP BY 1, 2, 3"""),
                {"end": datetime.combine(today() + timedelta(days=1), datetime.min.time(), UTC)},
            )
        }
        assert counted == live_overdue  # the evaluation's, by unit (migration 0038)
        for start, end in periods():
            for area in (None, community):
                f = Filters(start, end, area_id=area)
                found, expected = compare(connection, f, fields)
                differ = {c: (found[c], expected[c]) for c in found if found[c] != expected[c]}
                assert not differ, (start, end, area, dict(list(differ.items())[:5]))


def ids(connection: Connection, where: str, limit: int = 40) -> list[int]:
    return list(
        connection.execute(
            text(f"SELECT c.id FROM cases c WHERE {where} AND c.cell_id IS NOT NULL"
                 f" AND c.reported_at < now() - interval '1 day' ORDER BY c.id LIMIT {limit}")
        ).scalars()
    )  # fmt: skip


def churn(engine: Engine, rounds: int, seed: int) -> None:
    """A working city's changes to cases of past days, each in its own transaction."""
    rng = random.Random(seed)
    with engine.connect() as connection:
        open_ids = ids(connection, OPEN, 200)
        running = ids(connection, RUNNING, 80)
        closed = ids(connection, "c.status = 'closed'", 80)
        cells = [
            tuple(row)
            for row in connection.execute(
                text("SELECT id, community_id FROM grid_cells ORDER BY id LIMIT 50")
            )
        ]
    assert len(open_ids) >= 20 and running and closed
    changes = [
        ("UPDATE cases SET status = 'closed', closed_at = now() WHERE id = :i", open_ids),
        ("UPDATE cases SET status = 'in_progress', closed_at = NULL,"
         " deadline = now() + :hours * interval '1 hour' WHERE id = :i", closed),
        ("UPDATE cases SET deadline = now() + :hours * interval '1 hour' WHERE id = :i", running),
        ("UPDATE cases SET status = 'handled' WHERE id = :i", running),
        ("UPDATE cases SET status = 'dispatched' WHERE id = :i", open_ids),
        ("UPDATE cases SET reported_at = reported_at - :days * interval '1 day' WHERE id = :i",
         open_ids),
        ("UPDATE cases SET cell_id = :cell, community_id = :community WHERE id = :i", open_ids),
        ("UPDATE cases SET reported_at = reported_at - interval '450 days' WHERE id = :i",
         open_ids + closed),
        ("UPDATE cases SET deadline = deadline - interval '3 days' WHERE id = ANY(:many)",
         open_ids),
    ]  # fmt: skip
    made: list[int] = []
    for _ in range(rounds):
        sql, pool = rng.choice(changes)
        cell, community = rng.choice(cells)
        params = {
            "i": rng.choice(pool),
            "many": rng.sample(open_ids, 5),
            "hours": rng.choice([-30, -2, 1, 48]),
            "days": rng.choice([1, 12, 40, -3]),
            "cell": cell,
            "community": community,
        }
        with engine.begin() as connection:
            connection.execute(text(sql), params)
            if rng.random() < 0.1:  # a report of a past day filed late, open and overdue
                made.append(
                    connection.scalar(
                        text(
                            "INSERT INTO cases (source, status, category_id, location,"
                            " cell_id, community_id, reported_at, updated_at, unit_id,"
                            " deadline) SELECT 'operator', 'dispatched', c.category_id,"
                            " c.location, c.cell_id, c.community_id,"
                            " now() - :days * interval '1 day', now(), c.unit_id,"
                            " now() - interval '1 hour' FROM cases c WHERE c.id = :i"
                            " RETURNING id"
                        ),
                        {"i": params["i"], "days": rng.randint(2, 300)},
                    )
                )
            elif made and rng.random() < 0.05:
                connection.execute(text("DELETE FROM cases WHERE id = :i"), {"i": made.pop()})


@pytest.mark.parametrize(
    "month_cost", [aggregate.MONTH_ROW_COST, -1000], ids=["as planned", "months read whole"]
)
def test_open_counts_follow_every_change_exactly(
    engine: Engine, community: int, monkeypatch: pytest.MonkeyPatch, month_cost: int
) -> None:
    """After a refresh, changes of every kind in many transactions: the open and overdue
    counts are at once the live ones; after the next refresh every count is, and the log of
    changes is empty again. (Cases moved before the running sums and months read whole
    whenever a period holds some of them: the older days' open cases are counted live.)"""
    monkeypatch.setattr(aggregate, "MONTH_ROW_COST", month_cost)
    refresh(engine)
    assert_as_live(engine, community, EVERYTHING)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM map_open_log")) == 0

    churn(engine, rounds=120, seed=month_cost)

    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM map_open_log")) > 100
    assert_as_live(engine, community)
    versions = "SELECT month, cell_id, community_id, xmin::text FROM map_cell_sums"
    with engine.connect() as connection:
        before = set(connection.execute(text(versions)).tuples())
    refresh(engine)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM map_open_log")) == 0
        after = set(connection.execute(text(versions)).tuples())
    assert before & after and after - before  # only the changed places' sums written again
    assert_as_live(engine, community, EVERYTHING)


FIRST = "SELECT through FROM rollup_state WHERE name = 'map_sums_first'"
MEASURES = ("n", "due_closed", "on_time", "open", "overdue", "due")


def test_a_new_month_carries_every_place_on_without_writing_the_others_again(
    engine: Engine, owner: Engine, community: int
) -> None:
    """Migration 0040: the first refresh of a month (here: the last month's rows taken away
    from the places older than it, as before it) writes each place's new month, carried on
    from the month before, and no older month; every count as live."""
    refresh(engine)
    versions = "SELECT month, cell_id, community_id, xmin::text FROM map_cell_sums"
    with owner.begin() as connection:
        last = connection.scalar(text("SELECT max(month) FROM map_cell_sums"))
        places = connection.scalar(
            text("SELECT count(*) FROM map_cell_sums WHERE month = :m"), {"m": last}
        )
        taken = connection.execute(
            text("""DELETE FROM map_cell_sums s WHERE month = :m AND EXISTS (
                        SELECT FROM map_cell_sums o WHERE o.month < :m AND o.cell_id = s.cell_id
                        AND o.community_id IS NOT DISTINCT FROM s.community_id)"""),
            {"m": last},
        ).rowcount
        assert taken > places // 2
        before = set(connection.execute(text(versions)).tuples())
    churn(engine, rounds=20, seed=7)
    refresh(engine)
    with engine.begin() as connection:
        after = set(connection.execute(text(versions)).tuples())
        assert (
            connection.scalar(
                text("SELECT count(*) FROM map_cell_sums WHERE month = :m"), {"m": last}
            )
            >= places
        )
    kept = {row for row in before if row in after}
    assert len(kept) > len(before) // 2  # older months of places that did not change
    assert_as_live(engine, community, EVERYTHING)


def test_sums_carried_from_a_base_month_read_the_same(
    engine: Engine, owner: Engine, community: int
) -> None:
    """Migration 0040: the sums need not begin at zero. The sums of every place of the first
    month raised by its own amount, with a base month before it holding that amount (as a
    month left behind holds what was added up before it; a place that began later began
    from zero): the map reads the same; a place changed in the first month is written again
    carried on from the base; months before the base are deleted."""
    refresh(engine)
    raised = ", ".join(
        f"{m} = (SELECT array_agg(v + cell_id % 7 + 1 ORDER BY i)"
        f" FROM unnest({m}) WITH ORDINALITY AS u(v, i))"
        for m in MEASURES
    )
    base = ", ".join("ARRAY[cell_id % 7 + 1]" for _ in MEASURES)
    with owner.begin() as connection:
        first = connection.scalar(text(FIRST))
        oldest = """EXISTS (SELECT FROM map_cell_sums f WHERE f.month = :first
                    AND f.cell_id = s.cell_id
                    AND f.community_id IS NOT DISTINCT FROM s.community_id)"""
        connection.execute(
            text(f"UPDATE map_cell_sums s SET {raised} WHERE {oldest}"), {"first": first}
        )
        for day in (first - timedelta(days=1), first - timedelta(days=40)):
            connection.execute(
                text(f"""INSERT INTO map_cell_sums
                         SELECT CAST(:month AS date), cell_id, community_id, {base}
                         FROM map_cell_sums WHERE month = :first"""),
                {"month": day.replace(day=1), "first": first},
            )
    assert_as_live(engine, community, EVERYTHING)
    with engine.begin() as connection:  # a case of the first month moved to another cell
        connection.execute(
            text("""UPDATE cases SET cell_id = (SELECT min(g.id) FROM grid_cells g
                                               WHERE g.community_id = cases.community_id
                                                 AND g.id <> cases.cell_id)
                    WHERE id = (SELECT min(id) FROM cases WHERE cell_id IS NOT NULL
                                AND reported_at >= :a AND reported_at < :b)"""),
            {"a": first + timedelta(days=2), "b": first + timedelta(days=9)},
        )
    churn(engine, rounds=40, seed=11)
    refresh(engine)
    with engine.begin() as connection:
        months = connection.scalars(text("SELECT DISTINCT month FROM map_cell_sums")).all()
    assert min(months) == (first - timedelta(days=1)).replace(day=1)
    assert_as_live(engine, community, EVERYTHING)  # periods from before the first day too


def set_deadlines(engine: Engine, where: str, at: str, count: int) -> list[int]:
    """Give `count` cases of the last 300 days, never closed, a deadline `at` (SQL)."""
    with engine.begin() as connection:
        recent = "c.reported_at > now() - interval '300 days' AND c.closed_at IS NULL"
        chosen = ids(connection, f"{where} AND {recent}", count)
        connection.execute(
            text(f"UPDATE cases SET deadline = {at} WHERE id = ANY(:ids)"), {"ids": chosen}
        )
    assert len(chosen) == count
    return chosen


def test_deadlines_passing_after_the_refresh_count_at_once(engine: Engine, community: int) -> None:
    """Cases whose deadline passes after the refresh, with no write at all: overdue (running
    ones) and due (any open one) at once, every count as live."""
    deadline = datetime.now(UTC) + timedelta(seconds=8)  # time for a refresh on a busy machine
    at = f"'{deadline.isoformat()}'::timestamptz"
    set_deadlines(engine, RUNNING, at, 6)
    set_deadlines(engine, WAITING, at, 3)
    refresh(engine)
    with engine.begin() as connection:
        f = Filters(today() - timedelta(days=364), today())
        before = mapped(connection, f)
        assert connection.scalar(text("SELECT now()")) < deadline  # before they passed
    time.sleep(max((deadline - datetime.now(UTC)).total_seconds(), 0) + 0.5)

    assert_as_live(engine, community, EVERYTHING)
    with engine.begin() as connection:
        after = mapped(connection, f)
    assert sum(v[2] for v in after.values()) == sum(v[2] for v in before.values()) + 6
    assert sum(v[3] for v in after.values()) == sum(v[3] for v in before.values()) + 9


def test_a_reader_older_than_the_refresh_counts_as_of_its_own_now(engine: Engine) -> None:
    """A transaction that began before the refresh reads its counts (judged at T0, later than
    its now()): deadlines between its now and T0 are taken off again."""
    chosen = set_deadlines(engine, RUNNING, "now() + interval '1 second'", 4)
    f = Filters(today() - timedelta(days=364), today())
    with engine.connect() as reader, reader.begin():
        began = reader.scalar(text("SELECT now()"))
        time.sleep(1.5)
        refresh(engine)  # T0 after the deadlines, which are after the reader's now
        t0 = reader.scalar(text("SELECT refreshed_at FROM rollup_state WHERE name = 'map_sums'"))
        assert began < t0
        found, expected = compare(reader, f, EVERYTHING)
        assert found == expected
        assert reader.scalar(
            text(f"SELECT count(*) FROM cases c WHERE c.id = ANY(:ids) AND {RUNNING}"
                 " AND c.deadline < now()"), {"ids": chosen}
        ) == 0  # fmt: skip


def test_changes_made_while_refreshing_are_neither_lost_nor_doubled(
    engine: Engine, community: int
) -> None:
    """Writers and refreshes at the same time: each change is counted by the refresh that saw
    it, or left in the log for the readers and the next one."""
    refresh(engine)
    stop = threading.Event()
    errors: list[BaseException] = []

    def refreshing() -> None:
        try:
            while not stop.is_set():
                refresh(engine)
        except BaseException as error:  # reported by the test
            errors.append(error)

    thread = threading.Thread(target=refreshing)
    thread.start()
    try:
        churn(engine, rounds=150, seed=7)
    finally:
        stop.set()
        thread.join(60)
    assert not errors
    assert_as_live(engine, community)


def test_a_period_of_the_running_sums_reads_two_rows_per_cell(engine: Engine) -> None:
    """From the 15th of their first month to the last 15th (about a year, both ends inside a
    month): its rows of the running sums are those of two months, and nothing else is read."""
    refresh(engine)
    last = today() - timedelta(days=1)
    end = last.replace(day=15) if last.day >= 15 else last.replace(day=1) - timedelta(days=17)
    end = end.replace(day=15)
    with engine.begin() as connection:
        first = connection.scalar(text(FIRST))
    f = Filters(first + timedelta(days=14), end)
    with engine.begin() as connection:
        sent: list[str] = []
        session = Session(bind=connection)
        real = session.execute

        def execute(statement: object, *args: object, **kwargs: object) -> object:
            sent.append(str(statement))
            return real(statement, *args, **kwargs)  # type: ignore[arg-type]

        session.execute = execute  # type: ignore[method-assign]
        stats.cell_stats(session, f)
        places = connection.scalar(
            text("SELECT count(DISTINCT (cell_id, community_id)) FROM map_cell_sums")
        )
        read = connection.scalar(
            text("SELECT count(*) FROM map_cell_sums WHERE month = ANY(:m)"),
            {"m": [end.replace(day=1), (f.start - timedelta(days=1)).replace(day=1)]},
        )
    assert "map_cell_sums" in sent[-1]
    assert "map_cell_days" not in sent[-1] and "map_cell_months" not in sent[-1]
    assert 0 < read <= 2 * places  # a place new since a month has no row before it


def test_without_open_counts_as_far_the_map_counts_them_live(
    engine: Engine, community: int
) -> None:
    refresh(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM rollup_state WHERE name = 'map_sums'"))
    with engine.begin() as connection:
        f = Filters(today() - timedelta(days=44), today(), area_id=community)
        found, expected = compare(connection, f, EVERYTHING)
        assert found == expected
    refresh(engine)
