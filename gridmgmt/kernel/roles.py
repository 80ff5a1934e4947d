"""Least privilege: what the role of the web app and the workers may do in the database.

Migrations run as the owner of the tables; the app connects as another role (the setting
APP_ROLE), which is no superuser and owns nothing. After every upgrade `grant_app_role` gives
it exactly this, and takes back anything else it was given:

- SELECT, INSERT, UPDATE, DELETE on the project's tables, but only SELECT, INSERT on the
  append-only ones (a case's history, the security log) and only SELECT on the migrations'
  version stamp and on views;
- USAGE, SELECT on sequences (nextval), EXECUTE on the SECURITY DEFINER functions the app
  calls for what only an owner may do (refreshing the evaluation rollup);
- nothing else: no TRUNCATE, REFERENCES or TRIGGER, no ownership, so it can neither alter
  nor drop a table, nor disable a trigger. PUBLIC's defaults (CONNECT, TEMP, USAGE on the
  schema) are left as they are: the gridding uses temporary tables.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

APPEND_ONLY = ("case_events", "security_events")
READ_ONLY = ("alembic_version",)
DEFINER_FUNCTIONS = ("refresh_evaluation_rollup(boolean)",)
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
APPEND_PRIVILEGES = "SELECT, INSERT"

# The schema's own relations (not an extension's, such as PostGIS's spatial_ref_sys).
_RELATIONS = """
    SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
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
    for name, kind in connection.execute(text(_RELATIONS), {"schema": schema}).all():
        relation = f"{where}.{quote(name)}"
        privileges = {"S": "USAGE, SELECT", "v": "SELECT", "m": "SELECT"}.get(
            kind, table_privileges(name)
        )
        keyword = "SEQUENCE " if kind == "S" else ""
        connection.execute(text(f"REVOKE ALL ON {keyword}{relation} FROM {grantee}"))
        connection.execute(text(f"GRANT {privileges} ON {keyword}{relation} TO {grantee}"))
    for signature in DEFINER_FUNCTIONS:
        function = f"{schema}.{signature}"
        there = connection.scalar(text("SELECT to_regprocedure(:f)"), {"f": function})
        if there is not None:
            connection.execute(text(f"GRANT EXECUTE ON FUNCTION {where}.{signature} TO {grantee}"))
    return True
