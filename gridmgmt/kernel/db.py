"""Database wiring: the declarative base, one engine per app and a request-scoped session."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import DateTime, MetaData, create_engine, func
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
EXTENSION = "gridmgmt.kernel.db"


class Base(DeclarativeBase):
    """Declarative base of every model; constraint names follow `NAMING`."""

    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    """Mixin for rows that keep their creation time (UTC, set by the database)."""

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


def enum_check(column: str, enum: type) -> str:
    """Return a CHECK expression that limits a text column to the values of a str Enum."""
    return sql_in(column, enum)


def sql_in(column: str, members: Iterable[Any]) -> str:
    """`column IN ('a', 'b')` for str Enum members (constants of the code, never user input)."""
    values = ", ".join(f"'{member.value}'" for member in members)
    return f"{column} IN ({values})"


_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")  # `:name`, not the `::type` of a cast


class Prepared:
    """A hot statement that PostgreSQL parses once per connection (PREPARE), then runs by name
    (EXECUTE). Parsing and planning a report's insert as text costs nearly as much as running
    it; a prepared one is planned for its first executions, then usually with a cached generic
    plan.

    Written like `text()`, with `:name` parameters (but no `:name` inside a string literal or a
    comment). Where PostgreSQL cannot tell a parameter's type from its place (e.g. an argument
    of `jsonb_build_object`), the SQL casts it. Needs a session-level connection: not behind a
    transaction-pooling proxy (PgBouncer's transaction mode loses prepared statements).
    """

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        names = list(dict.fromkeys(_PARAMETER.findall(sql)))
        number = {n: f"${i}" for i, n in enumerate(names, start=1)}
        body = _PARAMETER.sub(lambda m: number[m.group(1)], sql)
        self.prepare = f"PREPARE {name} AS {body}"
        arguments = f"({', '.join(f'%({n})s' for n in names)})" if names else ""
        self.run = f"EXECUTE {name}{arguments}"  # in the driver's own parameter style

    def execute(self, session: Session, params: Mapping[str, Any]) -> Result[Any]:
        """Run the statement in the session's transaction, preparing it on this connection
        first if need be (a new or reconnected connection has no prepared statements)."""
        connection = session.connection()
        ready: set[str] = connection.connection.info.setdefault("gridmgmt.prepared", set())
        if self.name not in ready:
            # No parameters: the driver must not read `%` in the SQL as a placeholder.
            connection.exec_driver_sql(self.prepare, execution_options={"no_parameters": True})
            ready.add(self.name)
        return connection.exec_driver_sql(self.run, dict(params))


class AppSession(Session):
    """A session that talks to the current app's engine unless bound explicitly (tests)."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Engine | Connection:
        """The explicit bind, else the engine of the app in context."""
        if self.bind is not None:
            return self.bind
        return current_app.extensions[EXTENSION]


class Database:
    """Flask extension: each app keeps its own engine; the scoped session follows the app."""

    def __init__(self) -> None:
        self.session: scoped_session[Session] = scoped_session(
            sessionmaker(class_=AppSession, expire_on_commit=False)
        )

    def init_app(self, app: Flask) -> None:
        """Create the app's engine from `DATABASE_URL`; remove the session after each request."""
        app.extensions[EXTENSION] = create_engine(
            app.config["DATABASE_URL"],
            echo=app.config.get("SQL_ECHO", False),
            pool_size=app.config.get("DB_POOL_SIZE", 10),
            pool_pre_ping=True,
            connect_args={"connect_timeout": 5, "application_name": "gridmgmt"},
        )
        app.teardown_appcontext(self._remove_session)

    @property
    def engine(self) -> Engine:
        """The engine of the app in context."""
        return current_app.extensions[EXTENSION]

    def _remove_session(self, _exc: BaseException | None) -> None:
        self.session.remove()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield the session inside one transaction: commit on success, roll back on error."""
        session = self.session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


db = Database()
