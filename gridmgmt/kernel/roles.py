"""Least privilege: what the role of the web app and the workers may do in the database.

Migrations run as the owner of the tables; the app connects as another role (the setting
APP_ROLE), which is no superuser and owns nothing. After every upgrade `grant_app_role` gives
it exactly this, and takes back anything else it was given:

- SELECT, INSERT, UPDATE, DELETE on the project's tables, but only SELECT, INSERT on the
  append-only ones (a case's history, the security log, the administrators' audit log) and
  only SELECT on the migrations' version stamp and on views;
- USAGE, SELECT on sequences (nextval), EXECUTE on the SECURITY DEFINER functions the app
  calls for what only an owner may do (refreshing the evaluation rollup, creating the event
  logs' monthly partitions) — but not dropping old ones: retention is the owner's;
- on a partition (migration 0010), what it has on the partitioned table it belongs to:
  privileges on the parent do not apply to a partition named directly;
- nothing else: no TRUNCATE, REFERENCES or TRIGGER, no ownership, so it can neither alter
  nor drop a table, nor disable a trigger. PUBLIC's defaults (CONNECT, TEMP, USAGE on the
  schema) are left as they are: the gridding uses temporary tables.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import String, create_engine, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE
APPEND_ONLY = ("case_events", "security_events", "admin_audit")
# The rollups and their log of changed days are written only by the owner's definer functions
# (migration 0026): the app's role reads them.
READ_ONLY = ("alembic_version", "evaluation_days", "map_cell_days", "map_cell_months",
             "case_days", "rollup_dirty", "rate_days", "rate_dirty", "evaluation_months",
             "rate_months", "month_dirty", "map_cell_sums", "map_open_log",
             "evaluation_day_totals", "rate_day_totals", "day_totals_dirty",
             "map_sums_changes", "map_open_days", "overdue_units")  # fmt: skip
DEFINER_FUNCTIONS = (
    "refresh_evaluation_rollup(boolean)",
    "refresh_rate_rollup(double precision, boolean)",
    "refresh_month_rollups()",
    "refresh_map_sums()",
    "refresh_day_totals()",
    "create_event_partitions(integer)",
)
# The owner's alone: dropping old months of the event logs shortens history, which the app's
# role must never be able to do (`flask database retention` runs it with the owner's URL).
OWNER_ONLY_FUNCTIONS = ("drop_event_partitions(text, integer)",)
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
APPEND_PRIVILEGES = "SELECT, INSERT"

# The schema's own relations (not an extension's, such as PostGIS's spatial_ref_sys), each
# with the table whose privileges it gets: a partition its root's, anything else its own.
_RELATIONS = """
    SELECT c.relname, c.relkind, COALESCE(root.relname, c.relname) AS root
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class root ON root.oid = pg_partition_root(c.oid)
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.relname
"""


def role_exists(connection: Connection, role: str) -> bool:
    """Whether the database server has this role."""
    found = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
    return found.first() is not None


def table_privileges(table: str) -> str:
    """The privileges the app's role has on a table of the project."""
    if table in APPEND_ONLY:
        return APPEND_PRIVILEGES
    if table in READ_ONLY:
        return "SELECT"
    return TABLE_PRIVILEGES


def grant_app_role(connection: Connection, role: str, schema: str = "public") -> bool:
    """Give `role` exactly its privileges on the schema's tables, sequences and definer
    functions (idempotent; a table or function not there yet is simply left out).

    Returns:
        False, doing nothing, when the server has no such role (a server set up without
        the split, where the app connects as the owner); True otherwise.
    """
    if not role_exists(connection, role):
        return False
    quote = connection.dialect.identifier_preparer.quote
    grantee, where = quote(role), quote(schema)
    for name, kind, root in connection.execute(text(_RELATIONS), {"schema": schema}).all():
        relation = f"{where}.{quote(name)}"
        privileges = {"S": "USAGE, SELECT", "v": "SELECT", "m": "SELECT"}.get(
            kind, table_privileges(root)
        )
        keyword = "SEQUENCE " if kind == "S" else ""
        connection.execute(text(f"REVOKE ALL ON {keyword}{relation} FROM {grantee}"))
        connection.execute(text(f"GRANT {privileges} ON {keyword}{relation} TO {grantee}"))
    for signature in (*DEFINER_FUNCTIONS, *OWNER_ONLY_FUNCTIONS):
        function = f"{schema}.{signature}"
        there = connection.scalar(text("SELECT to_regprocedure(:f)"), {"f": function})
        if there is not None:
            verb = "GRANT" if signature in DEFINER_FUNCTIONS else "REVOKE"
            to = "TO" if verb == "GRANT" else "FROM"
            connection.execute(
                text(f"{verb} EXECUTE ON FUNCTION {where}.{signature} {to} {grantee}")
            )
    return True


# ---------------------------------------------------------------- a fresh server

POSTGIS_PACKAGE = "postgresql-15-postgis-3"


class SetupError(Exception):
    """The database server lacks something the migrations need; the message says what to run."""


def ensure_postgis(connection: Connection) -> None:
    """Make sure PostGIS is enabled in the connected database: create the extension when this
    role may (a superuser, or the database's owner where PostGIS is trusted), else stop.

    Raises:
        SetupError: PostGIS is not installed on the server, or this role may not enable it;
            the message gives the command that fixes it.
    """
    enabled = "SELECT 1 FROM pg_extension WHERE extname = 'postgis'"
    if connection.execute(text(enabled)).first():
        return
    database = connection.scalar(text("SELECT current_database()"))
    role = connection.scalar(text("SELECT current_user"))
    available = "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
    if not connection.execute(text(available)).first():
        raise SetupError(
            f"PostGIS is not installed on the database server. Install it there (Debian: "
            f"apt-get install {POSTGIS_PACKAGE}), then as a superuser: "
            f'psql -d {database} -c "CREATE EXTENSION postgis"'
        )
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION postgis"))
    except DBAPIError as err:
        if getattr(err.orig, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
            raise
        raise SetupError(
            f"PostGIS is not enabled in database {database} and role {role} may not enable "
            f'it. As a superuser run: psql -d {database} -c "CREATE EXTENSION postgis" '
            f"(or set the database up with `flask database setup`)"
        ) from None


@dataclass(frozen=True)
class DatabaseSetup:
    """What `create_database` made: the URLs of the owner (migrations) and of the app."""

    owner_url: URL
    app_url: URL


def create_database(
    admin: Engine,
    database: str,
    owner: str = "gridmgmt_owner",
    app: str = "gridmgmt_app",
    owner_password: str | None = None,
    app_password: str | None = None,
) -> DatabaseSetup:
    """Set a server up for gridmgmt as its superuser (`admin`): the owner and app roles (no
    superusers, login with a password; a role that exists gets the new password), the database
    owned by the owner, PostGIS in it. Idempotent. Passwords not given are made up.

    Then migrate with the owner's URL and give the services the app's.
    """
    passwords = {
        owner: owner_password or secrets.token_urlsafe(24),
        app: app_password or secrets.token_urlsafe(24),
    }
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        quote = conn.dialect.identifier_preparer.quote
        for role, password in passwords.items():
            verb = "ALTER" if role_exists(conn, role) else "CREATE"
            options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            # PASSWORD takes no bind parameter: a literal, quoted by the driver.
            literal = conn.dialect.statement_compiler(conn.dialect, None).render_literal_value(
                password, String()
            )
            conn.execute(text(f"{verb} ROLE {quote(role)} {options} PASSWORD {literal}"))
        there = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database})
        if not there.first():
            conn.execute(text(f"CREATE DATABASE {quote(database)} OWNER {quote(owner)}"))
        else:
            conn.execute(text(f"ALTER DATABASE {quote(database)} OWNER TO {quote(owner)}"))
    target = admin.url.set(database=database)
    engine = create_engine(target, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    finally:
        engine.dispose()
    return DatabaseSetup(
        owner_url=target.set(username=owner, password=passwords[owner]),
        app_url=target.set(username=app, password=passwords[app]),
    )
