"""A city's own server, from nothing: migrating a database without PostGIS as a role that may
not enable it stops with the command to run (no traceback); `flask database setup` run with a
superuser's URL makes the owner and app roles, the database and PostGIS, and the migrations
then run as the owner and grant the app role only what it needs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from tests.conftest import ROOT, admin_engine, admin_url
from tests.support import VENV_BIN


@dataclass(frozen=True)
class Fresh:
    """Names of this test's roles and database (dropped afterwards)."""

    database: str
    owner: str
    app: str


@pytest.fixture
def fresh() -> Iterator[Fresh]:
    tag = uuid.uuid4().hex[:8]
    names = Fresh(f"gridmgmt_fresh_{tag}", f"fresh_owner_{tag}", f"fresh_app_{tag}")
    yield names
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{names.database}" WITH (FORCE)'))
        for role in (names.app, names.owner):
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    engine.dispose()


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A command from the checkout, as a city's operator would type it."""
    environment = {**os.environ, "GRIDMGMT_SECRET_KEY": "fresh-server-test", "FLASK_APP": "wsgi"}
    environment.pop("MIGRATE_DATABASE_URL", None)
    return subprocess.run(
        command, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=300
    )


def migrate(url: URL) -> subprocess.CompletedProcess[str]:
    """`alembic upgrade head` with this MIGRATE_DATABASE_URL."""
    return run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        MIGRATE_DATABASE_URL=url.render_as_string(hide_password=False),
    )


def test_a_database_without_postgis_stops_with_what_to_run(fresh: Fresh) -> None:
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{fresh.owner}" LOGIN'))
        conn.execute(
            text(f'CREATE DATABASE "{fresh.database}" TEMPLATE template0 OWNER "{fresh.owner}"')
        )
    engine.dispose()
    owner = admin_url().set(database=fresh.database, username=fresh.owner, password=None)

    result = migrate(owner)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f'psql -d {fresh.database} -c "CREATE EXTENSION postgis"' in result.stderr
    assert "may not enable it" in result.stderr


def test_a_superuser_migrating_enables_postgis_itself(fresh: Fresh) -> None:
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{fresh.database}" TEMPLATE template0'))
    engine.dispose()

    result = migrate(admin_url().set(database=fresh.database))

    assert result.returncode == 0, result.stderr[-2000:]


def test_database_setup_then_migrate_gives_the_split(fresh: Fresh) -> None:
    setup = run(
        [str(VENV_BIN / "flask"), "database", "setup", "--database", fresh.database,
         "--owner", fresh.owner, "--app-role", fresh.app],
        GRIDMGMT_ADMIN_DATABASE_URL=admin_url().set(database="postgres").render_as_string(
            hide_password=False
        ),
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    printed = dict(
        line.split("=", 1) for line in setup.stdout.splitlines() if line.partition("=")[1]
    )
    owner = make_url(printed["MIGRATE_DATABASE_URL"])
    app = make_url(printed["GRIDMGMT_DATABASE_URL"])
    assert (owner.username, app.username) == (fresh.owner, fresh.app)
    assert owner.password and app.password and owner.password != app.password

    migrated = run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        MIGRATE_DATABASE_URL=printed["MIGRATE_DATABASE_URL"],
        GRIDMGMT_APP_ROLE=fresh.app,
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]

    engine = create_engine(app, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM case_events")) == 0
            super_ = conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
            assert super_ is False
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("TRUNCATE case_events"))
    finally:
        engine.dispose()

    again = run(
        [str(VENV_BIN / "flask"), "database", "setup", "--database", fresh.database,
         "--owner", fresh.owner, "--app-role", fresh.app],
        GRIDMGMT_ADMIN_DATABASE_URL=admin_url().set(database="postgres").render_as_string(
            hide_password=False
        ),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr  # idempotent: new passwords, nothing else
