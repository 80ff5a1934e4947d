"""Database wiring: the declarative base, one engine per app and a request-scoped session; with
READ_DATABASE_URL, a second engine on a hot standby for the views that only read
(`reads_replica`, `Database.read`), used while the standby is healthy and close behind."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, has_request_context
from flask_login import current_user
from sqlalchemy import DateTime, MetaData, create_engine, func, text
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.exc import DBAPIError, OperationalError
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
READ_EXTENSION = "gridmgmt.kernel.db.replica"
log = logging.getLogger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


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


class ReplicaSession(Session):
    """The session of a view inside `reads_replica`: bound to the replica it was given."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Engine | Connection:
        """The replica engine of the read in progress."""
        reading = _READING.get()
        if reading is None:  # pragma: no cover - only handed out while reading
            raise RuntimeError("the replica session is used outside a read-only view")
        return reading.replica.engine


class Database:
    """Flask extension: each app keeps its own engine; the scoped session follows the app."""

    def __init__(self) -> None:
        self.primary_session: scoped_session[Session] = scoped_session(
            sessionmaker(class_=AppSession, expire_on_commit=False)
        )
        self.replica_session: scoped_session[Session] = scoped_session(
            sessionmaker(class_=ReplicaSession, expire_on_commit=False, autoflush=False)
        )

    @property
    def session(self) -> scoped_session[Session]:
        """The request's session: on the primary, except inside a read-only view
        (`reads_replica`) while the replica serves it."""
        return self.replica_session if _READING.get() is not None else self.primary_session

    def init_app(self, app: Flask) -> None:
        """Create the app's engine from `DATABASE_URL`; remove the session after each request."""
        app.extensions[EXTENSION] = create_engine(
            app.config["DATABASE_URL"],
            echo=app.config.get("SQL_ECHO", False),
            pool_size=app.config.get("DB_POOL_SIZE", 10),
            pool_pre_ping=True,
            connect_args={"connect_timeout": 5, "application_name": "gridmgmt"},
        )
        app.extensions[READ_EXTENSION] = (
            Replica.from_config(app.config) if app.config.get("READ_DATABASE_URL") else None
        )
        app.teardown_appcontext(self._remove_session)

    @property
    def engine(self) -> Engine:
        """The engine of the app in context."""
        return current_app.extensions[EXTENSION]

    @property
    def replica(self) -> Replica | None:
        """The read replica of the app in context (None without READ_DATABASE_URL)."""
        return current_app.extensions.get(READ_EXTENSION)

    def _remove_session(self, _exc: BaseException | None) -> None:
        self.replica_session.remove()
        self.primary_session.remove()

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, a read, on a connection of the replica while it is usable, else of the
        primary; when the replica fails during it, run it once more on the primary. For reads
        made of several short ones (the open-data export's chunks): each is routed alone."""
        replica = self.replica
        if replica is not None and replica.usable():
            try:
                with replica.engine.connect() as connection:
                    return work(connection)
            except DBAPIError as err:
                if not replica_failure(err):
                    raise
                replica.failed(err)
        with self.engine.connect() as connection:
            return work(connection)

    def confirm_absent(self) -> None:
        """Say that a read-only view did not find what it was asked for: on the replica, which
        may not have replayed it yet, the view runs again on the primary (which then answers,
        404 or not); elsewhere nothing happens. For lookups of something a client may have
        just created (an Open311 request by its id)."""
        if _READING.get() is not None:
            raise ReadMiss

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


# ---------------------------------------------------------------- reads on a hot standby

# A replica's connections: short to open (a dead standby must not stall a page), read-only,
# and no statement longer than READ_STATEMENT_TIMEOUT_MS.
REPLICA_CONNECT_TIMEOUT = 2  # seconds; libpq's least
# Health: a standby (in recovery) whose last replayed commit is at most READ_MAX_LAG_SECONDS
# old, or that replayed all it received while it streams (an idle primary commits nothing: the
# last commit grows old while the standby is up to date).
_HEALTH = text("""
    SELECT pg_is_in_recovery(),
           extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
           pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
             AND EXISTS (SELECT FROM pg_stat_wal_receiver)
""")
# SQLSTATEs of a standby that cannot serve a read now (the read is then retried on the
# primary): a query cancelled by a recovery conflict, a server shutting down or starting up, a
# database dropped by replay. Any class 08 (connection) error too; a statement timeout is not:
# the same read would take as long on the primary.
_UNAVAILABLE = frozenset({"40001", "57P01", "57P02", "57P03", "57P04"})


def replica_failure(err: BaseException) -> bool:
    """Whether a database error means "the replica cannot serve this read now" (it could not
    be reached, the connection was lost, the standby cancelled the query or is going away),
    rather than a fault of the read itself."""
    if not isinstance(err, DBAPIError):
        return False
    if err.connection_invalidated:
        return True
    code = getattr(err.orig, "pgcode", None)
    if code is None:  # no answer from a server: it refused or lost the connection
        return isinstance(err, OperationalError)
    return code in _UNAVAILABLE or code.startswith("08")


class ReadMiss(Exception):
    """A read-only view found nothing on the replica: `reads_replica` asks the primary."""


@dataclass(frozen=True)
class Health:
    """A verdict on the replica: whether reads may go there, and why."""

    usable: bool
    reason: str
    lag: float | None = None  # seconds since the last replayed commit
    seconds: float = 0.0  # what the check cost


class Replica:
    """An app's read replica: its engine and its health, checked at most every
    `check_seconds` per process (a failed read marks it unusable until the next check)."""

    def __init__(self, engine: Engine, max_lag: float, check_seconds: float) -> None:
        self.engine = engine
        self.max_lag = max_lag
        self.check_seconds = check_seconds
        self.health = Health(False, "not checked yet")
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Replica:
        """The replica at READ_DATABASE_URL, with the READ_* settings."""
        timeout = int(config.get("READ_STATEMENT_TIMEOUT_MS", 5000))
        engine = create_engine(
            config["READ_DATABASE_URL"],
            echo=config.get("SQL_ECHO", False),
            pool_size=config.get("DB_POOL_SIZE", 10),
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": REPLICA_CONNECT_TIMEOUT,
                "application_name": "gridmgmt-read",
                "options": f"-c statement_timeout={timeout} -c default_transaction_read_only=on",
            },
        )
        return cls(
            engine,
            float(config.get("READ_MAX_LAG_SECONDS", 30.0)),
            float(config.get("READ_CHECK_SECONDS", 2.0)),
        )

    def check(self) -> Health:
        """Ask the replica now (no cache): reachable, a standby, close enough behind."""
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                recovering, lag, caught_up = connection.execute(_HEALTH).one()
        except DBAPIError as err:
            reason = f"unreachable: {str(err.orig).strip().splitlines()[0][:200]}"
            return Health(False, reason, seconds=time.perf_counter() - started)
        spent = time.perf_counter() - started
        if not recovering:
            return Health(False, "not a standby (pg_is_in_recovery() is false)", seconds=spent)
        if caught_up:
            return Health(True, "replayed all it received", lag, spent)
        if lag is not None and lag <= self.max_lag:
            return Health(True, f"{lag:.1f} s behind", lag, spent)
        behind = "unknown" if lag is None else f"{lag:.1f} s"
        return Health(False, f"behind: {behind} > {self.max_lag:g} s", lag, spent)

    def usable(self) -> bool:
        """The cached verdict, renewed when older than `check_seconds` (by one thread at a
        time: the others keep the last verdict meanwhile)."""
        if time.monotonic() - self._checked_at >= self.check_seconds and self._lock.acquire(
            blocking=False
        ):
            try:
                if time.monotonic() - self._checked_at >= self.check_seconds:
                    self._judge(self.check())
            finally:
                self._lock.release()
        return self.health.usable

    def failed(self, err: BaseException) -> None:
        """A read failed on the replica: unusable until the next check."""
        self._judge(Health(False, f"failed: {str(err).strip().splitlines()[0][:200]}"))

    def _judge(self, health: Health) -> None:
        if health.usable != self.health.usable:
            if health.usable:
                log.info("reads go to the replica: it has %s", health.reason)
            else:
                log.warning("reads go to the primary: the replica is %s", health.reason)
        self.health, self._checked_at = health, time.monotonic()


@dataclass(frozen=True)
class _Reading:
    """A read-only view in progress on a replica."""

    replica: Replica


_READING: ContextVar[_Reading | None] = ContextVar("gridmgmt_reading", default=None)


def reads_replica(view: F) -> F:
    """Serve a view that only reads from the replica (READ_DATABASE_URL) while it is usable:
    inside, `db.session` is a session on the replica. When the replica fails during the view
    (unreachable, the connection lost, a query cancelled by replay), or the view finds nothing
    there (`Database.confirm_absent`), the view runs once more on the primary: it only reads,
    so running it twice is safe. The signed-in user is loaded from the primary first (a
    sign-out or a new password counts at once).

    Only for views that write nothing and need not see a write of their own: never after a
    report or an action, nor for a person's own cases or queue."""

    @wraps(view)
    def read_only(*args: Any, **kwargs: Any) -> Any:
        replica = db.replica
        if replica is None or _READING.get() is not None or not replica.usable():
            return view(*args, **kwargs)
        if has_request_context():
            current_user._get_current_object()  # type: ignore[attr-defined]
        reading = _Reading(replica)
        token = _READING.set(reading)
        try:
            return view(*args, **kwargs)
        except ReadMiss:
            pass
        except DBAPIError as err:
            if not replica_failure(err):
                raise
            replica.failed(err)
        finally:
            db.replica_session.remove()
            _READING.reset(token)
        return view(*args, **kwargs)

    return cast(F, read_only)
