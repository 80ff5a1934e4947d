"""Least privilege in the database: the app connects as a role that is no superuser and owns
nothing. Over the very URL the running app uses, a case's history can be added to and read,
never rewritten: UPDATE, DELETE, TRUNCATE, disabling its trigger, dropping it or turning
triggers off for the session are refused by PostgreSQL's privileges (not by the trigger, which
an owner or a superuser could switch off). And the real server, connected as that role, takes
a report over HTTP and refreshes the evaluation rollup (through the owner's definer function).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from gridmgmt.kernel.db import db
from gridmgmt.kernel.roles import APPEND_ONLY, TABLE_PRIVILEGES
from maps.evaluation import refresh_rollup
from tests.conftest import OWNER_ROLE, split_roles
from tests.security.test_bodies import with_csrf

GARBAGE = "E0102"
INSUFFICIENT_PRIVILEGE = "42501"
# PostgreSQL's own refusals; the append-only trigger says "... is append-only" (same SQLSTATE).
REFUSED = re.compile(r"permission denied|must be owner")


@pytest.fixture(scope="module")
def app_role(security_app: Flask) -> str:
    """The role of the app's URL, which must be the app role of the split."""
    assert split_roles(), (
        "DATABASE_URL connects as another role than the app role: run the tests with "
        "the URLs `scripts/stack.sh env` prints"
    )
    return str(security_app.config["APP_ROLE"])


@pytest.fixture(scope="module")
def app_engine(security_app: Flask, app_role: str) -> Iterator[Engine]:
    """An engine on the URL the running app uses (not a copy of it: the app's own setting)."""
    engine = create_engine(security_app.config["DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def reported(server: str, app_engine: Engine, inside: tuple[float, float]) -> int:
    """A case reported over HTTP by an anonymous citizen; its id."""
    browser = with_csrf(requests.Session(), server)
    answer = browser.post(
        f"{server}/api/reports",
        json={"category": GARBAGE, "lon": inside[0], "lat": inside[1], "description": "x"},
    )
    assert answer.status_code == 201, answer.text[:300]
    number = answer.json()["number"]
    with app_engine.connect() as connection:
        return int(connection.scalar(text("SELECT id FROM cases WHERE number = :n"), {"n": number}))


def refused(engine: Engine, statement: str) -> str:
    """Run `statement` in a transaction rolled back afterwards; PostgreSQL's refusal message.

    Raises:
        AssertionError: the statement went through, or failed for another reason.
    """
    with engine.connect() as connection:
        with pytest.raises(DBAPIError) as error:
            connection.execute(text(statement))
        connection.rollback()
    message = str(error.value.orig)
    assert getattr(error.value.orig, "pgcode", None) == INSUFFICIENT_PRIVILEGE, message
    assert REFUSED.search(message), message
    return message


def present(engine: Engine, tables: tuple[str, ...]) -> list[str]:
    """The tables of `tables` the database has (security_events comes with migration 0009)."""
    names = set(inspect(engine).get_table_names())
    return [t for t in tables if t in names]


def test_the_app_role_is_no_superuser(app_engine: Engine, app_role: str) -> None:
    with app_engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls,"
                " rolreplication FROM pg_roles WHERE rolname = current_user"
            )
        ).one()
        owned = connection.scalar(
            text(
                "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
                " WHERE rolname = current_user)"
            )
        )
        owner_is_superuser = connection.scalar(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": OWNER_ROLE}
        )
    assert row.current_user == app_role
    assert not (row.rolsuper or row.rolcreatedb or row.rolcreaterole)
    assert not (row.rolbypassrls or row.rolreplication)
    assert owned == 0  # owns no table, view, sequence or index
    assert owner_is_superuser is False  # and the migrations' role is no superuser either


@pytest.mark.parametrize("password", [None, "guessed-password"])
def test_the_app_role_needs_its_password(
    security_app: Flask, app_role: str, password: str | None
) -> None:
    url = make_url(security_app.config["DATABASE_URL"])._replace(password=password)
    engine = create_engine(url, poolclass=NullPool)
    with pytest.raises(OperationalError, match="password"):
        engine.connect().close()
    engine.dispose()


def test_the_tables_belong_to_the_owner(app_engine: Engine) -> None:
    with app_engine.connect() as connection:
        owners = connection.execute(
            text(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'spatial_ref_sys'"
            )
        ).scalars()
        assert set(owners) == {OWNER_ROLE}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET id = id",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
        "ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
        "ALTER TABLE {table} DISABLE TRIGGER ALL",
        "DROP TABLE {table} CASCADE",
        "ALTER TABLE {table} OWNER TO CURRENT_USER",
    ],
)
def test_history_cannot_be_rewritten(app_engine: Engine, reported: int, statement: str) -> None:
    tables = present(app_engine, APPEND_ONLY)
    assert "case_events" in tables
    with app_engine.connect() as connection:  # there is history to rewrite
        assert connection.scalar(
            text("SELECT count(*) FROM case_events WHERE case_id = :id"), {"id": reported}
        )
    for table in tables:
        message = refused(app_engine, statement.format(table=table))
        assert "append-only" not in message  # refused before the trigger


def test_triggers_cannot_be_turned_off_for_a_session(app_engine: Engine) -> None:
    refused(app_engine, "SET session_replication_role = replica")


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE cases ADD COLUMN extra text",
        "DROP TABLE users CASCADE",
        "TRUNCATE cases CASCADE",
        "CREATE TABLE public.smuggled (id int)",
        "CREATE FUNCTION public.smuggled() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DELETE FROM evaluation_days",  # the rollups are the owner's refresh function's
        "INSERT INTO rollup_dirty (day) VALUES ('2026-01-01')",
        "UPDATE alembic_version SET version_num = version_num",
        "CREATE ROLE smuggled",
    ],
)
def test_the_schema_cannot_be_changed(app_engine: Engine, statement: str) -> None:
    refused(app_engine, statement)


def test_history_can_be_added_to_and_read(app_engine: Engine, reported: int) -> None:
    with app_engine.connect() as connection:
        added = connection.scalar(
            text(
                "INSERT INTO case_events (case_id, action, from_status, to_status, actor_role,"
                " note) VALUES (:id, 'note', 'filed', 'filed', 'citizen', 'added')"
                " RETURNING id"
            ),
            {"id": reported},
        )
        note = connection.scalar(text("SELECT note FROM case_events WHERE id = :id"), {"id": added})
        connection.rollback()
    assert note == "added"


def test_the_other_tables_are_read_and_written(app_engine: Engine) -> None:
    with app_engine.connect() as connection:
        can = connection.scalar(
            text(
                "SELECT bool_and(has_table_privilege(current_user, 'public.cases', p))"
                " FROM unnest(string_to_array(:privileges, ', ')) AS p"
            ),
            {"privileges": TABLE_PRIVILEGES},
        )
        cannot = connection.scalar(
            text(
                "SELECT bool_or(has_table_privilege(current_user, c.oid, p)) FROM pg_class c,"
                " unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p"
                " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
                " AND c.relname <> 'spatial_ref_sys'"
            )
        )
    assert can is True
    assert cannot is False


def test_the_running_server_reports_as_the_app_role(
    server: str, security_app: Flask, app_engine: Engine, app_role: str, reported: int
) -> None:
    # The report above went through the server; its connections (kept in the pool) are the
    # app role's, like every other session on this database.
    with app_engine.connect() as connection:
        users = connection.execute(
            text(
                "SELECT DISTINCT usename FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        assert set(users) == {app_role}
        events = connection.scalar(
            text("SELECT count(*) FROM case_events WHERE case_id = :id"), {"id": reported}
        )
    assert events >= 1
    with security_app.app_context():  # the app's own engine, the one the server uses
        assert db.session.scalar(text("SELECT current_user")) == app_role
        db.session.remove()


def test_the_app_role_refreshes_the_rollup(app_engine: Engine) -> None:
    with app_engine.connect() as connection:
        session = Session(bind=connection)
        refresh_rollup(session)  # first: a plain refresh
        through = refresh_rollup(session)  # then: concurrently
        assert through is not None
        assert connection.scalar(text("SELECT current_user")) != OWNER_ROLE
        connection.rollback()
