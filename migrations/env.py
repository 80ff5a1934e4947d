"""Alembic environment: metadata from the models, URL from the app's config.

Migrations run as the owner of the tables (MIGRATE_DATABASE_URL, or DATABASE_URL without one);
after every upgrade the app's role (APP_ROLE) is given exactly its privileges, when the server
has that role (gridmgmt.kernel.roles).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine

from gridmgmt.app.registry import load_models
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import Base
from gridmgmt.kernel.roles import SetupError, ensure_postgis, grant_app_role

config = context.config
if config.config_file_name and not config.attributes.get("skip_logging"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

load_models()
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave PostGIS's own tables (spatial_ref_sys, topology...) out of autogenerate."""
    return not (type_ == "table" and reflected and compare_to is None)


def database_url() -> str:
    """The URL given by a caller (tests) or the environment: the owner's."""
    return config.get_main_option("sqlalchemy.url") or Config.from_env().migrate_database_url


def run_migrations_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade head --sql`)."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations over one connection, in one transaction."""
    engine = create_engine(database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            try:
                ensure_postgis(connection)
            except SetupError as err:  # a fresh server: say what to run, no traceback
                raise SystemExit(f"gridmgmt: cannot migrate: {err}") from None
            context.run_migrations()
            grant_app_role(connection, Config.from_env().APP_ROLE)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
