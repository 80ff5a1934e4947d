"""partition the event logs by month

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:00:00.000000

`case_events` (by `created_at`) and `security_events` (by `at`) grow for as long as the city
runs: both become range-partitioned by calendar month (UTC), one partition a month named
`<table>_pYYYY_MM`, plus a DEFAULT partition (`<table>_default`) that catches a row of a month
that has none yet, so an insert never fails. A query that names a period reads only its
months' partitions; retention drops whole old months instead of deleting rows.

What changes for the tables:

- the primary key of a partitioned table must hold the partition key: (id, created_at) and
  (id, at). `id` still comes from the same sequence, so it stays unique in practice; the
  models keep `id` as their identity.
- a foreign key *to* a partitioned table must name its whole primary key, so
  `photos.event_id` loses its foreign key to `case_events.id` (it stays, as a plain reference:
  a photo's event is written in the same transaction as the photo). The foreign keys *from*
  the logs (to cases, users, api keys) stay.
- the append-only triggers are on the partitioned tables: PostgreSQL clones the row trigger
  (UPDATE, DELETE) onto every partition, new ones included. The TRUNCATE trigger is a
  statement trigger, which is not cloned: each partition gets its own.

The functions (owned by the tables' owner; EXECUTE taken from PUBLIC):

- `create_event_partitions(months_ahead)` SECURITY DEFINER, run by a periodic job as the app
  role (gridmgmt.kernel.partitions): the partitions of the current month and `months_ahead`
  more, and of every month found in a DEFAULT partition, whose rows move into it;
- `drop_event_partitions(table, keep_months)` SECURITY DEFINER: drops the partitions of whole
  months older than the current month minus `keep_months` (at least 6: the app role cannot
  shorten the audit trail below that, whatever its settings say);
- `event_partition_create(parent, month)` and `event_partition_secure(parent, partition)`,
  helpers for those two and this migration only: a partition's TRUNCATE trigger and a copy of
  its parent's grants.

The existing rows are copied into the partitioned tables (partitions for every month they
span), then the indexes, keys and triggers are built, and the old tables dropped.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 3  # the setting PARTITION_MONTHS_AHEAD's default; the job keeps it up after
MIN_RETENTION_MONTHS = 6

# table -> (partition key, its indexes as (name, definition), its foreign keys as of 0009)
TABLES: dict[str, tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = {
    "case_events": (
        "created_at",
        [
            ("ix_case_events_case_id", "(case_id)"),
            ("ix_case_events_action_created_at", "(action, created_at)"),
        ],
        [
            ("fk_case_events_actor_id_users", "(actor_id) REFERENCES users (id)"),
            ("fk_case_events_case_id_cases", "(case_id) REFERENCES cases (id)"),
        ],
    ),
    "security_events": (
        "at",
        [
            ("ix_security_events_at", "(at DESC)"),
            ("ix_security_events_kind_at", "(kind, at)"),
        ],
        [
            ("fk_security_events_api_key_id_api_keys", "(api_key_id) REFERENCES api_keys (id)"),
            ("fk_security_events_user_id_users", "(user_id) REFERENCES users (id)"),
        ],
    ),
}

SECURE = """
CREATE FUNCTION public.event_partition_secure(parent regclass, part regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent_name name;
    parent_schema name;
    grant_row record;
BEGIN
    SELECT c.relname, n.nspname INTO parent_name, parent_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    -- A statement trigger on the parent is not cloned: TRUNCATE of one partition is refused
    -- by its own trigger.
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = part
                   AND tgname = parent_name || '_no_truncate') THEN
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %I.%I()',
            parent_name || '_no_truncate', part, parent_schema, parent_name || '_append_only');
    END IF;
    -- Privileges on the parent do not apply to a partition named directly: the same ones.
    FOR grant_row IN
        SELECT a.grantee, a.privilege_type
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE c.oid = parent AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s', grant_row.privilege_type, part,
                       CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END);
    END LOOP;
END
$$
"""

CREATE = """
CREATE FUNCTION public.event_partition_create(parent regclass, month timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
DECLARE
    parent_name name;
    parent_schema name;
    key name;
    fallback regclass;
    part text;
    lo timestamptz := date_trunc('month', month);
    hi timestamptz := date_trunc('month', month) + interval '1 month';
    waiting boolean := false;
BEGIN
    SELECT c.relname, n.nspname, a.attname, NULLIF(p.partdefid, 0)::regclass
    INTO parent_name, parent_schema, key, fallback
    FROM pg_partitioned_table p
    JOIN pg_class c ON c.oid = p.partrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not partitioned', parent;
    END IF;
    part := format('%I.%I', parent_schema, parent_name || to_char(lo, '"_p"YYYY_MM'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN 0;
    END IF;
    IF fallback IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I >= $1 AND %I < $2)',
                       fallback, key, key)
        INTO waiting USING lo, hi;
    END IF;
    IF waiting THEN
        -- Rows of this month wait in the DEFAULT partition (PostgreSQL would refuse the new
        -- partition): they move into it, the default's append-only trigger set aside for
        -- this one DELETE, within this transaction.
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', fallback);
        EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       part, parent);
        EXECUTE format('INSERT INTO %s SELECT * FROM %s WHERE %I >= $1 AND %I < $2',
                       part, fallback, key, key) USING lo, hi;
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', fallback, parent_name || '_append_only');
        EXECUTE format('DELETE FROM %s WHERE %I >= $1 AND %I < $2', fallback, key, key)
        USING lo, hi;
        EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', fallback, parent_name || '_append_only');
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       part, parent, lo, hi);
    END IF;
    PERFORM public.event_partition_secure(parent, part::regclass);
    RETURN 1;
END
$$
"""

CREATE_AHEAD = f"""
CREATE FUNCTION public.create_event_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET lock_timeout = '5s'
AS $$
DECLARE
    parent regclass;
    key name;
    fallback regclass;
    month timestamptz;
    waiting timestamptz[];
    made integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be 0 to 120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt event partitions'));
    FOREACH parent IN ARRAY ARRAY[{", ".join(f"to_regclass('public.{t}')" for t in TABLES)}]
    LOOP
        SELECT a.attname, NULLIF(p.partdefid, 0)::regclass INTO key, fallback
        FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent;
        CONTINUE WHEN NOT FOUND;  -- not partitioned (yet)
        IF fallback IS NOT NULL THEN  -- all read first: no cursor open on it while it moves
            EXECUTE format('SELECT array_agg(DISTINCT date_trunc(''month'', %I)) FROM %s',
                           key, fallback)
            INTO waiting;
            FOREACH month IN ARRAY coalesce(waiting, '{{}}') LOOP
                made := made + public.event_partition_create(parent, month);
            END LOOP;
        END IF;
        FOR step IN 0..months_ahead LOOP
            made := made + public.event_partition_create(
                parent, date_trunc('month', now()) + make_interval(months => step));
        END LOOP;
    END LOOP;
    RETURN made;
END
$$
"""

DROP_OLD = f"""
CREATE FUNCTION public.drop_event_partitions(log text, keep_months integer) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET lock_timeout = '5s'
AS $$
DECLARE
    cutoff timestamptz;
    part record;
    dropped integer := 0;
BEGIN
    IF log IS NULL OR log NOT IN ({", ".join(f"'{t}'" for t in TABLES)}) THEN
        RAISE EXCEPTION 'no retention for %', log USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keep_months IS NULL OR keep_months < {MIN_RETENTION_MONTHS} THEN
        RAISE EXCEPTION '% keeps at least {MIN_RETENTION_MONTHS} months, not %', log, keep_months
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('gridmgmt event partitions'));
    cutoff := date_trunc('month', now()) - make_interval(months => keep_months);
    FOR part IN
        SELECT i.inhrelid::regclass AS name,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')
                   AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass('public.' || log)
        ORDER BY 2
    LOOP
        CONTINUE WHEN part.upper_bound IS NULL;  -- the DEFAULT partition
        EXIT WHEN part.upper_bound::timestamptz > cutoff;
        EXECUTE format('DROP TABLE %s', part.name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$
"""

SIGNATURES = (
    "public.create_event_partitions(integer)",
    "public.drop_event_partitions(text, integer)",
    "public.event_partition_create(regclass, timestamptz)",
    "public.event_partition_secure(regclass, regclass)",
)

# When a superuser runs the migrations, the functions still run as the tables' owner.
OWNED_LIKE_THE_TABLES = f"""
DO $$
DECLARE table_owner name;
BEGIN
    SELECT pg_get_userbyid(relowner) INTO table_owner
    FROM pg_class WHERE oid = 'public.case_events'::regclass;
    {" ".join(f"EXECUTE format('ALTER FUNCTION {s} OWNER TO %I', table_owner);" for s in SIGNATURES)}
END
$$
"""


def _months(table: str, key: str) -> list[str]:
    """The months (UTC) the rows of `table` span."""
    found = op.get_bind().execute(
        sa.text(f"SELECT DISTINCT date_trunc('month', {key} AT TIME ZONE 'UTC') FROM {table}")
    )
    return [f"{month:%Y-%m-01} 00:00+00" for (month,) in found]


def _build(table: str, source: str, partitioned: bool) -> None:
    """Create `table` like `source` (renamed away, indexes dropped), copy the rows, then its
    keys, indexes and triggers; drop `source`."""
    key, indexes, foreign_keys = TABLES[table]
    how = f" PARTITION BY RANGE ({key})" if partitioned else ""
    op.execute(
        f"CREATE TABLE {table} (LIKE {source} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        f" INCLUDING STORAGE INCLUDING COMMENTS){how}"
    )
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    if partitioned:
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        op.execute(f"SELECT public.event_partition_secure('{table}', '{table}_default')")
        for month in _months(source, key):
            op.execute(f"SELECT public.event_partition_create('{table}', '{month}')")
    # Rows first, then the indexes: one sort each instead of a row-by-row insert.
    op.execute(f"INSERT INTO {table} SELECT * FROM {source}")
    columns = f"id, {key}" if partitioned else "id"
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})")
    for name, definition in indexes:
        op.execute(f"CREATE INDEX {name} ON {table} {definition}")
    for name, definition in foreign_keys:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY {definition}")
    op.execute(f"""
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION {table}_append_only()
    """)
    op.execute(f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()
    """)
    op.execute(f"DROP TABLE {source}")  # its partitions with it (no trigger fires on DROP)
    op.execute(f"ANALYZE {table}")  # autovacuum never analyses a partitioned parent


def _set_aside(table: str) -> str:
    """Rename `table` away and drop its primary key and indexes (their names are taken by the
    new table's); its new name."""
    _key, indexes, _foreign_keys = TABLES[table]
    source = f"{table}_old"
    op.execute(f"ALTER TABLE {table} RENAME TO {source}")
    op.execute(f"ALTER TABLE {source} DROP CONSTRAINT pk_{table}")
    for name, _definition in indexes:
        op.execute(f"DROP INDEX {name}")
    return source


def upgrade() -> None:
    for function in (SECURE, CREATE, CREATE_AHEAD, DROP_OLD):
        op.execute(function)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(OWNED_LIKE_THE_TABLES)
    op.drop_constraint("fk_photos_event_id_case_events", "photos", type_="foreignkey")
    for table in TABLES:
        _build(table, _set_aside(table), partitioned=True)
    op.execute(f"SELECT public.create_event_partitions({MONTHS_AHEAD})")


def downgrade() -> None:
    for table in TABLES:
        _build(table, _set_aside(table), partitioned=False)
    # Retention may have dropped events photos pointed at.
    op.execute("""
        UPDATE photos SET event_id = NULL WHERE event_id IS NOT NULL
          AND NOT EXISTS (SELECT FROM case_events e WHERE e.id = photos.event_id)
    """)
    op.create_foreign_key(
        "fk_photos_event_id_case_events", "photos", "case_events", ["event_id"], ["id"]
    )
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
