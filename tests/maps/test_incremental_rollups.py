"""The rollups kept day by day (migration 0026): a refresh recounts only the days whose cases
changed, and gives what a full recount gives; writers never wait for it, and a change made
while it runs is counted by the next one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine

from tests.conftest import demo_clone
from tests.support import migration_module

pytestmark = pytest.mark.slow

ROLLUPS = ("evaluation_days", "map_cell_days", "map_cell_months", "case_days")


def migration() -> ModuleType:
    """Migration 0026, whose definitions are the full recount the rollups must equal, with
    the daily map rollup's window of migration 0032."""
    module = migration_module("0026_incremental_rollups.py")
    module.DAYS_KEPT = migration_module("0032_map_days_kept_a_year.py").AFTER
    return module


FULL = migration()._everything()


@pytest.fixture(scope="module")
def engine(history_database_url: URL) -> Iterator[Engine]:
    """A clone of the demo city with its year of real requests, as the app's role."""
    with demo_clone("rollups", history_database_url) as url:
        engine = create_engine(url)
        yield engine
        engine.dispose()


def rows(connection: Connection, sql: str) -> set[tuple[object, ...]]:
    def plain(value: object) -> object:
        return round(float(value), 6) if isinstance(value, Decimal) else value

    return {tuple(plain(v) for v in row) for row in connection.execute(text(sql))}


def assert_equal_to_full_recount(connection: Connection) -> None:
    for name in ROLLUPS:
        kept = rows(connection, f"SELECT * FROM {name}")
        counted = rows(connection, FULL[name])
        assert kept == counted, f"{name}: {len(kept ^ counted)} rows differ"


def refresh(connection: Connection) -> None:
    connection.execute(text("SELECT public.refresh_evaluation_rollup(true)"))


def dirty_days(connection: Connection) -> int:
    return connection.scalar(text("SELECT count(*) FROM rollup_dirty")) or 0


def test_the_seeded_rollups_equal_a_full_recount(engine: Engine) -> None:
    with engine.begin() as connection:
        refresh(connection)
        past = "SELECT count(*) FROM rollup_dirty WHERE day < (now() AT TIME ZONE 'UTC')::date"
        assert connection.scalar(text(past)) == 0  # only days not over yet wait
        assert connection.scalar(text("SELECT sum(due) FROM evaluation_days")) > 300
        assert_equal_to_full_recount(connection)


def test_changes_in_past_days_are_recounted_exactly(engine: Engine) -> None:
    with engine.begin() as connection:
        refresh(connection)
        # A case handled later, one whose deadline moved, one moved to another unit, one more
        # urgent, and a closed case reported a month ago reopened-and-left-open: each changes
        # a past day's counts somewhere.
        picked = (
            connection.execute(
                text(
                    "SELECT id FROM cases WHERE status = 'closed' AND reported_at < now() - "
                    "interval '40 days' ORDER BY id LIMIT 5"
                )
            )
            .scalars()
            .all()
        )
        assert len(picked) == 5
        other_unit = connection.scalar(text("SELECT min(id) FROM units"))
        connection.execute(
            text("UPDATE cases SET handled_at = handled_at + interval '3 days' WHERE id = :i"),
            {"i": picked[0]},
        )
        connection.execute(
            text("UPDATE cases SET deadline = deadline - interval '2 days' WHERE id = :i"),
            {"i": picked[1]},
        )
        connection.execute(
            text("UPDATE cases SET unit_id = :u WHERE id = :i"), {"u": other_unit, "i": picked[2]}
        )
        connection.execute(text("UPDATE cases SET urgent = true WHERE id = :i"), {"i": picked[3]})
        connection.execute(
            text("UPDATE cases SET closed_at = NULL, status = 'dispatched' WHERE id = :i"),
            {"i": picked[4]},
        )
        assert dirty_days(connection) > 0
        refresh(connection)
        assert_equal_to_full_recount(connection)


@pytest.mark.parametrize("column", ["deadline", "handled_at", "reported_at"])
def test_a_day_a_case_leaves_is_recounted_too(engine: Engine, column: str) -> None:
    """Moved 40 days back: the day it left (marked by its old value only) loses it."""
    with engine.begin() as connection:
        refresh(connection)
        case_id = connection.scalar(
            text(
                "SELECT max(id) FROM cases WHERE status = 'closed'"
                " AND reported_at < now() - interval '20 days'"
            )
        )
        connection.execute(
            text(f"UPDATE cases SET {column} = {column} - interval '40 days' WHERE id = :i"),
            {"i": case_id},
        )
        refresh(connection)
        assert_equal_to_full_recount(connection)


def test_a_status_alone_marks_no_day(engine: Engine) -> None:
    with engine.begin() as connection:
        refresh(connection)
        before = dirty_days(connection)
        connection.execute(
            text(
                "UPDATE cases SET status = 'in_progress', version = version + 1"
                " WHERE id = (SELECT min(id) FROM cases WHERE status = 'dispatched')"
            )
        )
        assert dirty_days(connection) == before


def test_a_new_case_of_a_past_day_is_counted(engine: Engine) -> None:
    with engine.begin() as connection:
        refresh(connection)
        day = datetime.now(UTC) - timedelta(days=10)
        connection.execute(
            text(
                "INSERT INTO cases (source, status, category_id, location, cell_id,"
                " community_id, reported_at, updated_at, unit_id, deadline, closed_at)"
                " SELECT 'operator', 'closed', c.category_id, c.location, c.cell_id,"
                " c.community_id, :day, :day, c.unit_id, :day + interval '1 day',"
                " :day + interval '2 days'"
                " FROM cases c WHERE c.unit_id IS NOT NULL ORDER BY c.id LIMIT 1"
            ),
            {"day": day},
        )
        refresh(connection)
        assert_equal_to_full_recount(connection)


def test_writers_never_wait_for_a_refresh_and_the_next_one_counts_them(engine: Engine) -> None:
    with engine.connect() as refreshing, engine.connect() as writer:
        with refreshing.begin():
            refresh(refreshing)  # claimed what it saw, deletes those rows at its commit
            with writer.begin():
                writer.execute(text("SET LOCAL lock_timeout = '2s'"))
                writer.execute(
                    text(
                        "UPDATE cases SET handled_at = handled_at - interval '1 hour'"
                        " WHERE id = (SELECT min(id) FROM cases WHERE status = 'closed'"
                        " AND reported_at < now() - interval '20 days')"
                    )
                )  # no wait: the log has no unique key for the refresh to hold
            done = threading.Event()  # a second refresh waits for the first (one at a time)
            second = threading.Thread(target=lambda: _refresh_alone(engine, done))
            second.start()
            assert not done.wait(1.0)
        second.join(30)
        assert done.is_set()
    with engine.begin() as connection:
        assert_equal_to_full_recount(connection)


def _refresh_alone(engine: Engine, done: threading.Event) -> None:
    with engine.begin() as connection:
        refresh(connection)
    done.set()


def versions(connection: Connection) -> dict[tuple[object, ...], str]:
    """Every rollup row's key and the transaction that wrote it."""
    keys = {
        "evaluation_days": "day, unit_id, community_id, urgent",
        "map_cell_days": "day, cell_id, community_id",
        "map_cell_months": "month, cell_id, community_id",
        "case_days": "day, category_id",
    }
    found: dict[tuple[object, ...], str] = {}
    for name, key in keys.items():
        for *row, xmin in connection.execute(text(f"SELECT {key}, xmin::text FROM {name}")):
            found[(name, *row)] = xmin
    return found


def test_a_refresh_writes_only_the_rows_whose_counts_changed(engine: Engine) -> None:
    """Migration 0039: thousands of days recounted, one case's rows written again; a row of
    no community (a NULL key) is found again, not written twice."""
    with engine.begin() as connection:
        refresh(connection)
        case_id, day = connection.execute(
            text(
                "SELECT id, (reported_at AT TIME ZONE 'UTC')::date FROM cases"
                " WHERE status = 'closed' AND deadline IS NOT NULL AND cell_id IS NOT NULL"
                " AND reported_at < now() - interval '30 days' ORDER BY id DESC LIMIT 1"
            )
        ).one()
        connection.execute(
            text("UPDATE cases SET community_id = NULL WHERE id = :i"), {"i": case_id}
        )
    with engine.begin() as connection:
        refresh(connection)
        before = versions(connection)
        assert day in {k[1] for k in before if k[0] == "map_cell_days" and k[3] is None}
    with engine.begin() as connection:
        # Every case of a past day made urgent and back: its days recounted, nothing changed.
        for _ in range(2):
            connection.execute(
                text(
                    "UPDATE cases SET urgent = NOT urgent"
                    " WHERE reported_at < now() - interval '1 day'"
                )
            )
        assert dirty_days(connection) > 200
        connection.execute(
            text("UPDATE cases SET closed_at = NULL, status = 'dispatched' WHERE id = :i"),
            {"i": case_id},
        )
        refresh(connection)
        after = versions(connection)
        assert_equal_to_full_recount(connection)
    assert after.keys() == before.keys()
    written = sorted(k[:2] for k, xmin in after.items() if before[k] != xmin)
    month = day.replace(day=1)
    # its report day and month (due and closed, on time), its deadline's day (closed)
    assert [k for k in written if k[0] != "evaluation_days"] == [
        ("map_cell_days", day),
        ("map_cell_months", month),
    ]
    assert [k[0] for k in written if k[0] == "evaluation_days"] == ["evaluation_days"]
