"""The kernel's `flask` commands (users, API keys, business calendars) and the plumbing every
package's commands share: one transaction each, domain errors as messages."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask import Flask
from flask.cli import AppGroup
from redis.exceptions import RedisError
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from gridmgmt.kernel import auth, key_uses, partitions, roles, web
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.queue import queues

users_cli = AppGroup("users", help="People who sign in (one role each).")
apikey_cli = AppGroup("apikey", help="Open311 API keys.")
calendar_cli = AppGroup("calendar", help="Business calendars (working hours, holidays, 调休).")
database_cli = AppGroup("database", help="Setting a PostgreSQL server up for gridmgmt.")


@contextmanager
def cli_transaction() -> Iterator[Session]:
    """Run a command's work in one transaction; a domain error rolls back and exits with 1."""
    try:
        with db.transaction() as session:
            yield session
    except DomainError as err:
        raise click.ClickException(f"{err.message} (nothing was changed)") from None


def echo_progress(label: str) -> Callable[[int, int], None]:
    """Return a `(done, total)` callback printing progress lines to stderr."""

    def report(done: int, total: int) -> None:
        click.echo(f"{label}: {done:,}/{total:,}", err=True)

    return report


def read_password(password_stdin: bool) -> str:
    """A password from standard input (one line) or from a prompt asked twice."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--unit", "unit_code", help="Unit code (unit_staff only).")
@click.option("--name", "display_name", help="Display name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user_command(
    username: str, role: str, unit_code: str | None, display_name: str | None, password_stdin: bool
) -> None:
    """Create USERNAME with one role; the password comes from a prompt or stdin."""
    password = read_password(password_stdin)
    with cli_transaction() as session:
        user = auth.create_user(session, username, password, role, unit_code, display_name)
        where = f" of unit {unit_code}" if user.unit_id else ""
    click.echo(f"created {role} {username}{where}")


@users_cli.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password_command(username: str, password_stdin: bool) -> None:
    """Give USERNAME a new password; all their sessions end."""
    password = read_password(password_stdin)
    with cli_transaction() as session:
        auth.set_password(session, username, password)
    click.echo(f"new password for {username}; their sessions have ended")


@users_cli.command("deactivate")
@click.argument("username")
def deactivate_command(username: str) -> None:
    """Stop USERNAME from signing in; all their sessions end."""
    with cli_transaction() as session:
        auth.set_active(session, username, False)
    click.echo(f"deactivated {username}; their sessions have ended")


@users_cli.command("activate")
@click.argument("username")
def activate_command(username: str) -> None:
    """Let a deactivated USERNAME sign in again."""
    with cli_transaction() as session:
        auth.set_active(session, username, True)
    click.echo(f"activated {username}")


@users_cli.command("totp")
@click.argument("username")
@click.option("--remove", is_flag=True, help="Remove the second factor instead.")
def totp_command(username: str, remove: bool) -> None:
    """Give USERNAME a new second factor and print its otpauth:// URI for an authenticator
    app (the login then asks for its code); their sessions end."""
    with cli_transaction() as session:
        uri = auth.set_totp(session, username, enable=not remove)
    if uri is None:
        click.echo(f"{username} signs in without a second factor; their sessions have ended")
        return
    click.echo(uri)
    click.echo(f"scan or paste this into {username}'s authenticator app now", err=True)


@users_cli.command("unlock")
@click.argument("username")
def unlock_command(username: str) -> None:
    """Lift the lock that wrong passwords put on USERNAME, and end all their sessions (an
    account someone was guessing at may have been guessed)."""
    with cli_transaction() as session:
        auth.find_user(session, username).end_sessions()
    try:
        counted = web.lift_signin_lock(username)
    except RedisError as exc:
        raise click.ClickException(f"Redis is unreachable: {exc}") from None
    state = "unlocked" if counted else "had no wrong passwords counted"
    click.echo(f"{username} {state}; their sessions have ended")


@apikey_cli.command("create")
@click.argument("name")
@click.option(
    "--trusted", is_flag=True, help="A verified channel (e.g. 12345 hotline): files at once."
)
def create_apikey_command(name: str, trusted: bool) -> None:
    """Create an Open311 API key called NAME and print it (only its hash is kept)."""
    with cli_transaction() as session:
        issued = auth.create_api_key(session, name, trusted)
    click.echo(issued.secret)
    click.echo(
        f"API key {name!r}{' (trusted)' if trusted else ''} created; store it now, "
        "it cannot be shown again",
        err=True,
    )


@apikey_cli.command("revoke")
@click.argument("name_or_id")
def revoke_apikey_command(name_or_id: str) -> None:
    """Revoke the API key called NAME_OR_ID (or with that id): every request with it is then
    refused, and recorded as a security event. It cannot be undone: create a new key."""
    with cli_transaction() as session:
        key = auth.revoke_api_key(session, name_or_id)
        name, when = key.name, key.revoked_at
    click.echo(f"API key {name!r} revoked ({when:%Y-%m-%d %H:%M:%S %Z})")


@apikey_cli.command("list")
def list_apikeys_command() -> None:
    """List the API keys: id, name, first characters, trusted, last use, revoked."""
    with cli_transaction() as session:
        keys = auth.api_keys(session)
        waiting = key_uses.waiting_uses(queues.redis)
        rows = [
            (
                str(k.id),
                k.name,
                f"{k.prefix}…",
                "trusted" if k.trusted else "",
                f"used {k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never used",
                f"{k.use_count + waiting.get(k.id, 0)} requests",
                f"REVOKED {k.revoked_at:%Y-%m-%d %H:%M}"
                if k.revoked_at
                else ("inactive" if not k.active else "active"),
            )
            for k in keys
        ]
    if not rows:
        click.echo("no API keys", err=True)
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@calendar_cli.command("load")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--shipped", type=click.Choice(["cn", "us_la"]), help="A calendar shipped with gridmgmt."
)
def load_calendar_command(file: str | None, shipped: str | None) -> None:
    """Load (or replace) a business calendar from FILE, or a shipped one."""
    if bool(file) == bool(shipped):
        raise click.UsageError("give either FILE or --shipped")
    with cli_transaction() as session:
        record = load_calendar(session, file or shipped_calendar(shipped or ""))
        days = len(record.days)
    click.echo(f"calendar {record.code}: {record.timezone}, {days} holidays and make-up days")


@database_cli.command("setup")
@click.option(
    "--admin-url",
    envvar="GRIDMGMT_ADMIN_DATABASE_URL",
    required=True,
    help="A superuser's URL on the server, e.g. postgresql://postgres@db.internal/postgres.",
)
@click.option("--database", default="gridmgmt", show_default=True)
@click.option("--owner", default="gridmgmt_owner", show_default=True, help="Owns the tables.")
@click.option("--app-role", default="gridmgmt_app", show_default=True, help="The services'.")
def database_setup_command(admin_url: str, database: str, owner: str, app_role: str) -> None:
    """Create the owner and app roles (new passwords), the database and PostGIS in it, then
    print the two URLs: the owner's for migrations (migrate.env), the app's for the services
    (gridmgmt.env). Run again, it sets new passwords and changes nothing else."""
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        made = roles.create_database(engine, database, owner, app_role)
    except DBAPIError as err:
        raise click.ClickException(f"the server refused: {err.orig}") from None
    finally:
        engine.dispose()
    click.echo(f"database {database}: owner {owner}, app role {app_role}, PostGIS enabled")
    click.echo(f"MIGRATE_DATABASE_URL={made.owner_url.render_as_string(hide_password=False)}")
    click.echo(f"GRIDMGMT_DATABASE_URL={made.app_url.render_as_string(hide_password=False)}")
    click.echo(f"GRIDMGMT_APP_ROLE={app_role}")
    click.echo("next: alembic upgrade head with MIGRATE_DATABASE_URL (it grants the app role)")


@database_cli.command("retention")
def database_retention_command() -> None:
    """Drop the event logs' months older than their retention settings
    (GRIDMGMT_CASE_EVENTS_RETENTION_MONTHS, GRIDMGMT_SECURITY_EVENTS_RETENTION_MONTHS; 0 keeps
    everything; read from the environment, like the owner's MIGRATE_DATABASE_URL it runs as)."""
    config = Config.from_env()
    if not config.MIGRATE_DATABASE_URL:
        raise click.ClickException("set MIGRATE_DATABASE_URL: only the owner drops history")
    engine = create_engine(config.MIGRATE_DATABASE_URL, poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            dropped = partitions.apply_retention(session, config.as_flask())
    except DBAPIError as err:
        raise click.ClickException(f"the server refused: {err.orig}") from None
    finally:
        engine.dispose()
    if not dropped:
        click.echo("no retention set: every month is kept")
    for table, count in dropped.items():
        click.echo(f"{table}: {count} old monthly partitions dropped")


def init_app(app: Flask) -> None:
    """Add the kernel's command groups to the app's `flask` CLI."""
    for group in (users_cli, apikey_cli, calendar_cli, database_cli):
        app.cli.add_command(group)
