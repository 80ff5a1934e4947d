"""Data that grows for years: the event logs are partitioned by month (migration 0010).

The evaluation's queries of a period read only that period's partitions (EXPLAIN); a row of a
month without a partition lands in the DEFAULT partition and moves to its month's when the job
makes it; the job makes partitions ahead and is idempotent; retention drops whole old months
only, never below 6; a partition is as append-only as its table, for the app role (refused by
privileges) and for the owner (refused by the triggers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gridmgmt import create_app
from gridmgmt.kernel import partitions
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import db
from maps.evaluation import Period, by_inspector, by_unit
from tests.conftest import (
    TEST_TEMPLATE,
    as_owner,
    clone_database,
    drop_database,
    ensure_test_template,
    template_lock,
)

INSUFFICIENT_PRIVILEGE = "42501"
LOGS = {"case_events": "created_at", "security_events": "at"}
MONTHS_2025 = [f"2025-{month:02d}-01" for month in range(1, 13)]


@pytest.fixture(scope="module")
def url(request: pytest.FixtureRequest) -> Iterator[URL]:
    """A migrated database of this module's own (partitions come and go here), with the
    partitions of 2025's months; the app role's URL."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"gridmgmt_test_partitions_{worker}"
    with template_lock():
        ensure_test_template()
        found = clone_database(name, TEST_TEMPLATE)
    engine = create_engine(as_owner(found))
    with engine.begin() as connection:
        for log in LOGS:
            for month in MONTHS_2025:
                connection.execute(
                    text("SELECT public.event_partition_create(CAST(:log AS regclass), :month)"),
                    {"log": log, "month": f"{month} 00:00+00"},
                )
    engine.dispose()
    yield found
    drop_database(name)


@pytest.fixture(scope="module")
def app_engine(url: URL) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def owner_engine(url: URL) -> Iterator[Engine]:
    engine = create_engine(as_owner(url))
    yield engine
    engine.dispose()


@pytest.fixture
def app_conn(app_engine: Engine) -> Iterator[Connection]:
    """A connection as the app role, in a transaction rolled back after the test (DDL too)."""
    with app_engine.connect() as connection:
        connection.execute(text("SET timezone = 'UTC'"))
        yield connection
        connection.rollback()


@pytest.fixture
def owner_conn(owner_engine: Engine) -> Iterator[Connection]:
    """The same as the owner."""
    with owner_engine.connect() as connection:
        connection.execute(text("SET timezone = 'UTC'"))
        yield connection
        connection.rollback()


@pytest.fixture(scope="module")
def partitions_app(url: URL, redis_url: str) -> Iterator[Flask]:
    """The app on this module's database."""
    application = create_app(
        {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "PARTITION_MONTHS_AHEAD": 4,
        }
    )
    yield application
    with application.app_context():
        db.engine.dispose()


def partitions_of(connection: Connection, log: str) -> set[str]:
    return set(
        connection.scalars(
            text(
                "SELECT inhrelid::regclass::text FROM pg_inherits"
                " WHERE inhparent = CAST(:t AS regclass)"
            ),
            {"t": log},
        )
    )


def month_name(log: str, months_from_now: int, connection: Connection) -> str:
    """The partition name of the month `months_from_now` from the database's current one."""
    return str(
        connection.scalar(
            text(
                "SELECT :log || to_char(date_trunc('month', now() AT TIME ZONE 'UTC')"
                " + make_interval(months => :n), '\"_p\"YYYY_MM')"
            ),
            {"log": log, "n": months_from_now},
        )
    )


# ------------------------------------------------------------------ reading a period


def captured(engine: Engine, run: Any) -> list[tuple[str, Any]]:
    """The statements (with their parameters) that `run(session)` sends that read case_events."""
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "case_events" in statement and not statement.startswith("EXPLAIN"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            run(session)
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements, "the evaluation read no case_events"
    return statements


def scanned(plan: Any, alias: str) -> set[str]:
    """The relations a plan reads under `alias` (a partition's scan is aliased alias_<n>)."""
    found: set[str] = set()
    own = re.compile(rf"^{alias}(_\d+)?$")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Relation Name" in node and own.match(node.get("Alias", "")):
                found.add(node["Relation Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


def explained(engine: Engine, statement: str, parameters: Any) -> Any:
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        [(plan,)] = cursor.fetchall()
        connection.rollback()
    return plan


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2025, 3, 1), date(2025, 3, 31), {"2025_03"}),
        (date(2025, 3, 15), date(2025, 4, 10), {"2025_03", "2025_04"}),
        (date(2025, 12, 1), date(2025, 12, 1), {"2025_12"}),
    ],
)
@pytest.mark.parametrize("rolled", [True, False], ids=["rates rolled up", "rates live"])
def test_the_evaluation_reads_only_the_periods_partitions(
    app_engine: Engine, start: date, end: date, months: set[str], rolled: bool
) -> None:
    period = Period(start, end)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def evaluate(session: Session) -> None:
        if not rolled:  # the three rates counted live, as before their first refresh
            session.execute(text("DELETE FROM rollup_state WHERE name = 'rate_days'"))
        by_unit(session, period, now)  # the three rates' events and the returns
        by_inspector(session, period)  # the on-site checks, by inspector

    statements = captured(app_engine, evaluate)
    with app_engine.connect() as connection:
        every = partitions_of(connection, "case_events")
    assert len(every) > 12 + 1  # 2025's months, the current ones, the default

    assert len(statements) == 2
    for statement, parameters in statements:
        read = scanned(explained(app_engine, statement, parameters), "e")
        if "rate_days" in statement:  # the rates of whole past days come from their rollup
            assert rolled and read == set(), statement
        else:
            assert read == {f"case_events_p{month}" for month in months}, statement


def test_a_period_beyond_the_partitions_reads_the_default_one(app_engine: Engine) -> None:
    period = Period(date(2040, 6, 1), date(2040, 6, 30))
    statements = captured(
        app_engine, lambda s: (by_unit(s, period, datetime.now(UTC)), by_inspector(s, period))
    )

    for statement, parameters in statements:  # the rates' events and returns, the checks
        assert scanned(explained(app_engine, statement, parameters), "e") == {"case_events_default"}


def test_the_security_log_pages_through_every_month(
    partitions_app: Flask, app_engine: Engine
) -> None:
    from gridmgmt.app.security import find_events

    with app_engine.begin() as connection:  # committed: the page reads on its own session
        ids = [
            connection.scalar(
                text(
                    "INSERT INTO security_events (at, kind, client, path)"
                    " VALUES (:at, 'signin_failed', '192.0.2.99', '/login') RETURNING id"
                ),
                {"at": at},
            )
            for at in ("2025-02-10", "2025-11-10", "2041-01-01")  # the last one: default
        ]
    with partitions_app.app_context():
        rows, _next = find_events(None, "192.0.2.99", None)
        db.session.remove()

    assert [row.event.id for row in rows] == sorted(ids, reverse=True)


# ------------------------------------------------------------------ making partitions


def test_a_month_without_partition_goes_to_the_default_then_moves(app_conn: Connection) -> None:
    at = "2031-05-10 12:00+00"
    added = app_conn.scalar(
        text(
            "INSERT INTO security_events (at, kind, client, path)"
            " VALUES (:at, 'signin_failed', '192.0.2.1', '/login') RETURNING id"
        ),
        {"at": at},
    )
    where = text("SELECT tableoid::regclass::text FROM security_events WHERE id = :id")
    assert app_conn.scalar(where, {"id": added}) == "security_events_default"

    made = app_conn.scalar(text("SELECT public.create_event_partitions(0)"))

    assert made >= 1
    assert app_conn.scalar(where, {"id": added}) == "security_events_p2031_05"
    assert "security_events_p2031_05" in partitions_of(app_conn, "security_events")
    # the moved row's partition is like the others: append-only, the same grants
    refused = app_conn.scalar(
        text(
            "SELECT bool_or(has_table_privilege(current_user, 'security_events_p2031_05', p))"
            " FROM unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE']) AS p"
        )
    )
    assert refused is False
    with pytest.raises(DBAPIError) as err, app_conn.begin_nested():
        app_conn.execute(text("DELETE FROM security_events_p2031_05"))
    assert err.value.orig.pgcode == INSUFFICIENT_PRIVILEGE


def test_the_function_makes_partitions_ahead_and_is_idempotent(app_conn: Connection) -> None:
    app_conn.scalar(text("SELECT public.create_event_partitions(6)"))

    for log in LOGS:
        names = partitions_of(app_conn, log)
        assert {month_name(log, n, app_conn) for n in range(7)} <= names
        assert month_name(log, 7, app_conn) not in names
        assert f"{log}_default" in names
    assert app_conn.scalar(text("SELECT public.create_event_partitions(6)")) == 0


def test_the_job_makes_partitions_ahead(partitions_app: Flask, app_engine: Engine) -> None:
    with partitions_app.app_context():
        partitions.maintain_partitions()
        again = partitions.maintain_partitions()

    assert again == "0 partitions made"
    with app_engine.connect() as connection:
        for log in LOGS:
            names = partitions_of(connection, log)
            assert {month_name(log, n, connection) for n in range(5)} <= names


def test_the_job_is_registered(partitions_app: Flask) -> None:
    from gridmgmt.kernel.queue import periodic_jobs

    assert periodic_jobs(partitions_app)["gridmgmt.kernel.partitions.maintain_partitions"] == 3600


def test_months_ahead_out_of_range_refused(app_conn: Connection) -> None:
    with pytest.raises(DBAPIError, match="months_ahead must be 0 to 120"):
        app_conn.execute(text("SELECT public.create_event_partitions(-1)"))


# ------------------------------------------------------------------ retention


def add_security_event(connection: Connection, months_from_now: int) -> int:
    """A security event in the middle of the month `months_from_now` from the current one."""
    return int(
        connection.scalar(
            text(
                "INSERT INTO security_events (at, kind, client, path) VALUES ("
                " date_trunc('month', now()) + make_interval(months => :n, days => 14),"
                " 'signin_failed', '192.0.2.2', '/login') RETURNING id"
            ),
            {"n": months_from_now},
        )
    )


def test_retention_drops_whole_old_months_only(owner_conn: Connection) -> None:
    app_conn = owner_conn  # retention is the owner's alone
    kept = add_security_event(app_conn, -6)  # in the 6th month before this one: kept
    add_security_event(app_conn, -7)
    add_security_event(app_conn, -30)
    app_conn.scalar(text("SELECT public.create_event_partitions(0)"))  # out of the default
    before = partitions_of(app_conn, "security_events")
    old = {month_name("security_events", n, app_conn) for n in (-7, -30)}
    assert old <= before

    dropped = app_conn.scalar(text("SELECT public.drop_event_partitions('security_events', 6)"))

    after = partitions_of(app_conn, "security_events")
    gone = before - after
    assert dropped == len(gone)
    assert old <= gone
    assert month_name("security_events", -6, app_conn) in after
    assert "security_events_default" in after
    for name in gone:  # every partition dropped is of a month before the cutoff
        assert name < month_name("security_events", -6, app_conn)
    cutoff = "date_trunc('month', now()) - interval '6 months'"
    older = app_conn.scalar(text(f"SELECT count(*) FROM security_events WHERE at < {cutoff}"))
    assert older == 0
    still = app_conn.scalar(
        text("SELECT count(*) FROM security_events WHERE id = :id"), {"id": kept}
    )
    assert still == 1
    assert app_conn.scalar(text("SELECT public.drop_event_partitions('security_events', 6)")) == 0


@pytest.mark.parametrize(
    ("log", "months", "message"),
    [
        ("security_events", 5, "security_events keeps at least 6 months, not 5"),
        ("case_events", 0, "case_events keeps at least 6 months, not 0"),
        ("cases", 12, "no retention for cases"),
        ("users", 12, "no retention for users"),
    ],
)
def test_retention_refused_below_six_months(
    owner_conn: Connection, log: str, months: int, message: str
) -> None:
    with pytest.raises(DBAPIError, match=message):
        owner_conn.execute(
            text("SELECT public.drop_event_partitions(:log, :months)"),
            {"log": log, "months": months},
        )


def test_the_app_role_cannot_drop_history(app_conn: Connection) -> None:
    with pytest.raises(DBAPIError, match="permission denied for function drop_event_partitions"):
        app_conn.execute(text("SELECT public.drop_event_partitions('security_events', 6)"))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SECURITY_EVENTS_RETENTION_MONTHS", 3),
        ("CASE_EVENTS_RETENTION_MONTHS", 1),
        ("PARTITION_MONTHS_AHEAD", -1),
        ("PARTITION_MONTHS_AHEAD", 121),
    ],
)
def test_the_app_refuses_bad_partition_settings(setting: str, value: int) -> None:
    config = Config.from_env({f"GRIDMGMT_{setting}": str(value), "GRIDMGMT_SECRET_KEY": "x"})

    with pytest.raises(RuntimeError, match=f"GRIDMGMT_{setting}={value}"):
        create_app(config)


def test_retention_settings() -> None:
    default = Config().as_flask()
    assert partitions.retention_months(default) == {}  # default: keep everything
    config = {**default, "SECURITY_EVENTS_RETENTION_MONTHS": 6, "CASE_EVENTS_RETENTION_MONTHS": 0}
    assert partitions.retention_months(config) == {"security_events": 6}


# ------------------------------------------------------------------ append-only partitions


@pytest.mark.parametrize("log", list(LOGS))
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {part} SET id = id", "DELETE FROM {part}", "TRUNCATE {part}"],
)
def test_the_app_role_cannot_rewrite_a_partition(
    app_conn: Connection, log: str, statement: str
) -> None:
    part = f"{log}_p2025_06"
    assert app_conn.scalar(text(f"SELECT count(*) FROM {part}")) == 0  # may read it

    with pytest.raises(DBAPIError) as err, app_conn.begin_nested():
        app_conn.execute(text(statement.format(part=part)))

    assert err.value.orig.pgcode == INSUFFICIENT_PRIVILEGE
    assert "permission denied" in str(err.value)  # refused before the trigger


def test_the_app_role_has_its_parents_privileges_on_every_partition(app_conn: Connection) -> None:
    rows = app_conn.execute(
        text("""
            SELECT c.relname, p, has_table_privilege(current_user, c.oid, p)
            FROM pg_class c CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
            WHERE c.relispartition AND c.relkind = 'r'
              AND c.relnamespace = 'public'::regnamespace
        """)
    ).all()
    assert {name for name, _p, _has in rows} >= {"case_events_p2025_01", "security_events_default"}
    granted = {(name, p) for name, p, has in rows if has}
    assert granted == {(name, p) for name, _p, _has in rows for p in ("SELECT", "INSERT")}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {part} SET client = 'x'",
        "DELETE FROM {part}",
        "TRUNCATE {part}",
        "UPDATE security_events SET client = 'x'",
        "TRUNCATE security_events",
    ],
)
@pytest.mark.parametrize("part", ["security_events_p2025_06", "security_events_default"])
def test_the_triggers_refuse_even_the_owner_on_a_partition(
    owner_conn: Connection, statement: str, part: str
) -> None:
    at = "2025-06-15" if part.endswith("2025_06") else "2039-01-01"
    owner_conn.execute(
        text(
            "INSERT INTO security_events (at, kind, client, path)"
            " VALUES (:at, 'signin_failed', '192.0.2.3', '/login')"
        ),
        {"at": at},
    )
    operation = statement.split()[0]

    with pytest.raises(DBAPIError, match=f"security_events is append-only: {operation} refused"):
        owner_conn.execute(text(statement.format(part=part)))


def test_case_events_triggers_are_on_every_partition(owner_conn: Connection) -> None:
    missing = owner_conn.execute(
        text("""
            SELECT c.relname, t.name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            CROSS JOIN unnest(ARRAY['_append_only', '_no_truncate']) AS t(name)
            WHERE i.inhparent IN ('case_events'::regclass, 'security_events'::regclass)
              AND NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = c.oid
                              AND g.tgname = i.inhparent::regclass::text || t.name
                              AND g.tgenabled = 'O')
        """)
    ).all()
    assert missing == []


def test_retention_command_runs_as_the_owner(
    partitions_app: Flask, url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = partitions_app.test_cli_runner()
    monkeypatch.setenv("GRIDMGMT_SECURITY_EVENTS_RETENTION_MONTHS", "6")
    monkeypatch.setenv("MIGRATE_DATABASE_URL", as_owner(url).render_as_string(hide_password=False))

    result = runner.invoke(args=["database", "retention"])

    assert result.exit_code == 0, result.output
    assert "security_events:" in result.output and "old monthly partitions dropped" in result.output
