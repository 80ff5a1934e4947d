"""Migrations: upgrade to head matches the models, downgrade to base removes everything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Engine

from gridmgmt.app.registry import load_models
from gridmgmt.kernel.db import Base
from tests.conftest import POSTGIS_TEMPLATE, alembic_config, clone_database, drop_database

POSTGIS_TABLES = {"spatial_ref_sys"}
POSTGIS_SCHEMAS = {"tiger", "tiger_data", "topology"}


@pytest.fixture(scope="module")
def fresh_url(request: pytest.FixtureRequest) -> Iterator[URL]:
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"gridmgmt_test_migrations_{worker}"
    url = clone_database(name, POSTGIS_TEMPLATE)
    yield url
    drop_database(name)


@pytest.fixture(scope="module")
def engine(fresh_url: URL) -> Iterator[Engine]:
    eng = create_engine(fresh_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def config(fresh_url: URL) -> AlembicConfig:
    return alembic_config(fresh_url)


def partitions(engine: Engine) -> set[str]:
    """The partitions of the partitioned tables (migration 0010): the tables the models know
    are their parents."""
    with engine.connect() as conn:
        return set(conn.scalars(text("SELECT relname FROM pg_class WHERE relispartition")))


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave out PostGIS's own tables; everything of the project is compared."""
    if type_ == "table":
        schema = getattr(obj, "schema", None)
        return name not in POSTGIS_TABLES and schema not in POSTGIS_SCHEMAS
    return True


# Alembic compares PostgreSQL server defaults by evaluating both: a default that draws from a
# sequence never compares equal to itself, so this one is checked by its text instead.
VOLATILE_DEFAULTS = {("cases", "number")}


def _volatile(diff: Any) -> bool:
    return (
        isinstance(diff, list)
        and len(diff) == 1
        and diff[0][0] == "modify_default"
        and (diff[0][2], diff[0][3]) in VOLATILE_DEFAULTS
    )


def differences(engine: Engine) -> list[Any]:
    load_models()
    parts = partitions(engine)

    def project_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in parts:
            return False
        return include_object(obj, name, type_, reflected, compare_to)

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": project_object,
            },
        )
        return [d for d in compare_metadata(context, Base.metadata) if not _volatile(d)]


def case_number_default(engine: Engine) -> str:
    columns = {c["name"]: c for c in inspect(engine).get_columns("cases")}
    return str(columns["number"]["default"])


def project_tables(engine: Engine) -> set[str]:
    names = set(inspect(engine).get_table_names()) - POSTGIS_TABLES - partitions(engine)
    return names - {"alembic_version"}


def project_routines(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        sequences = conn.scalars(
            text("SELECT sequence_name FROM information_schema.sequences")
        ).all()
        functions = conn.scalars(
            text(
                "SELECT proname FROM pg_proc"
                " WHERE proname IN ('case_events_append_only', 'next_case_number')"
            )
        ).all()
    return {*sequences, *functions}


def head(config: AlembicConfig) -> str | None:
    return ScriptDirectory.from_config(config).get_current_head()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_comparison_sees_an_empty_database(engine: Engine, config: AlembicConfig) -> None:
    # the checks below can fail: on the bare PostGIS database every model table is missing
    command.downgrade(config, "base")

    added = {diff[1].name for diff in differences(engine) if diff[0] == "add_table"}
    assert added == set(Base.metadata.tables)
    assert {"cases", "case_events", "users", "grid_cells"} <= added


def test_upgrade_head_matches_models(engine: Engine, config: AlembicConfig) -> None:
    command.upgrade(config, "head")

    assert current(engine) == head(config)
    assert project_tables(engine) == set(Base.metadata.tables)
    assert differences(engine) == []
    assert {"case_number_seq", "case_events_append_only", "next_case_number"} <= project_routines(
        engine
    )
    assert case_number_default(engine) == "next_case_number()"


def test_downgrade_base_then_upgrade_again(engine: Engine, config: AlembicConfig) -> None:
    command.upgrade(config, "head")

    command.downgrade(config, "base")

    assert current(engine) is None
    assert project_tables(engine) == set()
    assert project_routines(engine) == set()
    assert "spatial_ref_sys" in inspect(engine).get_table_names()  # PostGIS is left alone

    command.upgrade(config, "head")

    assert current(engine) == head(config)
    assert differences(engine) == []


def test_cases_are_vacuumed_after_a_number_of_changes(
    engine: Engine, config: AlembicConfig
) -> None:
    """Migration 0036: not after a fifth of the table (two million cases at ten million)."""
    command.upgrade(config, "head")
    with engine.connect() as conn:
        options = conn.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'cases'"))

    assert "autovacuum_vacuum_scale_factor=0" in options
    assert "autovacuum_vacuum_threshold=5000" in options
