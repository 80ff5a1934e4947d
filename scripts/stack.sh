#!/usr/bin/env bash
# Private PostgreSQL+PostGIS and Redis for gridmgmt, under var/, on non-default ports.
#   scripts/stack.sh deps   install missing Debian packages (apt-get update once first)
#   scripts/stack.sh up     start both servers (idempotent), create the roles and the databases
#   scripts/stack.sh down   stop both servers
#   scripts/stack.sh env    print DATABASE_URL (the app's role), MIGRATE_DATABASE_URL (the
#                           owner's, for migrations) and REDIS_URL (with its password)
#   scripts/stack.sh standby up|down [fast|immediate]|purge|env
#                           a hot standby of the private PostgreSQL (pg_basebackup -R, streaming
#                           as REPLICA_ROLE) in $GRIDMGMT_STANDBY_DIR (var/pg/standby) on port
#                           $GRIDMGMT_STANDBY_PORT (55433): `up` makes (once) and starts it and
#                           waits until it streams, `down` stops it, `purge` stops and deletes
#                           it, `env` prints READ_DATABASE_URL (the app's role on the standby)
# DATABASE_URL / REDIS_URL in the environment mean "use that server instead": nothing is started
# (and MIGRATE_DATABASE_URL defaults to DATABASE_URL).
#
# Least privilege: migrations run as OWNER_ROLE, which owns the databases and their tables; the
# web app and the workers connect as APP_ROLE, which owns nothing (gridmgmt.kernel.roles grants
# it what it needs after every migration). Both are ordinary roles with passwords, required
# (scram-sha-256) on 127.0.0.1; Redis requires a password too. The passwords are generated once
# into var/secrets/ (mode 600). `postgres`, the superuser, stays trusted on this machine only
# for creating databases and roles.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR=${GRIDMGMT_VAR:-$ROOT/var}
PG_PORT=${GRIDMGMT_PG_PORT:-55432}
REDIS_PORT=${GRIDMGMT_REDIS_PORT:-56379}
PG_BIN=/usr/lib/postgresql/15/bin
PGDATA=$VAR/pg/data
PGRUN=$VAR/pg/run
DB_NAME=gridmgmt
TEMPLATE_DB=gridmgmt_postgis
OWNER_ROLE=gridmgmt_owner
APP_ROLE=gridmgmt_app
REPLICA_ROLE=gridmgmt_replica  # streams the WAL to standbys (REPLICATION, nothing else)
STANDBY_DIR=${GRIDMGMT_STANDBY_DIR:-$VAR/pg/standby}
STANDBY_PORT=${GRIDMGMT_STANDBY_PORT:-55433}
SECRETS=$VAR/secrets
PACKAGES=(postgresql-15 postgresql-15-postgis-3 redis-server chromium chromium-driver fonts-wqy-zenhei python3-venv curl wrk nginx-light openssl prometheus)

log() { printf '[stack] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a PostgreSQL server binary as the owner of the data folder (initdb refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

# A password made once and kept in var/secrets/NAME (mode 600); hex, so it needs no quoting in
# a URL, a SQL literal or a config file.
secret() {
  local file=$SECRETS/$1
  if [ ! -s "$file" ]; then
    mkdir -p "$SECRETS"
    chmod 700 "$SECRETS"
    local made
    made=$(mktemp "$SECRETS/.new.XXXXXX")
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$made"
    # Two runs at once keep the first one's: a password is never replaced.
    mv -n "$made" "$file"
    rm -f "$made"
  fi
  chmod 600 "$file"
  cat "$file"
}

# The two roles need their password on 127.0.0.1 (and the socket): these lines go before the
# `trust` lines initdb wrote, which stay for `postgres` alone on this machine.
pg_hba() {
  local hba=$PGDATA/pg_hba.conf
  grep -q "^# gridmgmt roles" "$hba" && return 0
  log "pg_hba: $OWNER_ROLE and $APP_ROLE need their password (scram-sha-256)"
  local tmp
  tmp=$(mktemp)
  awk -v roles="$OWNER_ROLE,$APP_ROLE" '
    !done && /^(local|host)/ {
      print "# gridmgmt roles: passwords required (scripts/stack.sh)"
      print "local   all   " roles "                  scram-sha-256"
      print "host    all   " roles "   127.0.0.1/32   scram-sha-256"
      print "host    all   " roles "   ::1/128        scram-sha-256"
      done = 1
    }
    { print }' "$hba" >"$tmp"
  cat "$tmp" >"$hba"  # keeps the file's owner and mode
  rm -f "$tmp"
  if pg_running; then as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" reload >/dev/null; fi
}

# The roles, created when missing, their passwords (re)set from var/secrets; neither is a
# superuser, and the app's may create neither databases nor roles.
pg_roles() {
  local owner_pw app_pw
  owner_pw=$(secret pg_owner)
  app_pw=$(secret pg_app)
  psql_admin -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER_ROLE') THEN
    CREATE ROLE $OWNER_ROLE LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
    CREATE ROLE $APP_ROLE LOGIN;
  END IF;
END \$\$;
ALTER ROLE $OWNER_ROLE WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '$owner_pw';
ALTER ROLE $APP_ROLE WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '$app_pw';
SQL
}

# The replication role and its pg_hba lines (before the `trust` lines), made when missing;
# its password is (re)set from var/secrets/pg_replica. Only a reload: wal_level `replica` (the
# default) and max_wal_senders are already what streaming needs. Two runs at once take turns.
pg_replication() {
  local pw hba=$PGDATA/pg_hba.conf
  pw=$(secret pg_replica)
  (
    flock 9
    if ! grep -q "^# gridmgmt replication" "$hba"; then
      log "pg_hba: $REPLICA_ROLE may stream the WAL with its password (scram-sha-256)"
      local tmp
      tmp=$(mktemp)
      awk -v role="$REPLICA_ROLE" '
        !done && /^(local|host)/ {
          print "# gridmgmt replication: standbys stream as " role " (scripts/stack.sh standby)"
          print "host    replication   " role "   127.0.0.1/32   scram-sha-256"
          print "host    replication   " role "   ::1/128        scram-sha-256"
          done = 1
        }
        { print }' "$hba" >"$tmp"
      cat "$tmp" >"$hba"
      rm -f "$tmp"
      as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" reload >/dev/null
    fi
    psql_admin -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$REPLICA_ROLE') THEN
    CREATE ROLE $REPLICA_ROLE LOGIN REPLICATION;
  END IF;
END \$\$;
ALTER ROLE $REPLICA_ROLE WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
  PASSWORD '$pw';
SQL
  ) 9>"$VAR/pg/replication.lock"
}

# A database made before the roles (owned by postgres) is handed to the owner role: the
# database, and every table, view, sequence, function and type of the project in it (PostGIS's
# own objects stay with the extension). Nothing to do when the owner has it already.
pg_hand_over() {
  local db=$1
  if psql_admin -d postgres -tAc "SELECT 1 FROM pg_database
      WHERE datname = '$db' AND pg_get_userbyid(datdba) = '$OWNER_ROLE'" | grep -q 1; then
    return 0
  fi
  log "handing database $db over to $OWNER_ROLE"
  psql_admin -d postgres -c "ALTER DATABASE $db OWNER TO $OWNER_ROLE"
  psql_admin -d "$db" <<SQL
DO \$\$
DECLARE obj record;
BEGIN
  FOR obj IN
    SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
           format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND pg_get_userbyid(c.relowner) <> '$OWNER_ROLE'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
      -- a sequence owned by a column follows its table
      AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'a'))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO $OWNER_ROLE', obj.kind, obj.name);
  END LOOP;
  FOR obj IN
    SELECT p.oid::regprocedure::text AS name FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> '$OWNER_ROLE'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO $OWNER_ROLE', obj.name);
  END LOOP;
  FOR obj IN
    SELECT t.oid::regtype::text AS name FROM pg_type t
    JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0
      AND pg_get_userbyid(t.typowner) <> '$OWNER_ROLE'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO $OWNER_ROLE', obj.name);
  END LOOP;
END \$\$;
SQL
}

pg_up() {
  mkdir -p "$VAR/pg" "$PGRUN"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$VAR/pg" "$PGRUN"; fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initdb $PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$VAR/pg/initdb.log"
    cat >>"$PGDATA/postgresql.conf" <<CONF
# gridmgmt private development instance
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGRUN'
jit = off
max_connections = 200
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
CONF
  fi
  pg_hba
  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$VAR/pg/server.log" -w -t 60 start >/dev/null
  fi
  pg_roles
  pg_replication
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$TEMPLATE_DB'" | grep -q 1; then
    log "creating template database $TEMPLATE_DB with PostGIS"
    psql_admin -d postgres -c "CREATE DATABASE $TEMPLATE_DB"
    psql_admin -d "$TEMPLATE_DB" -c "CREATE EXTENSION IF NOT EXISTS postgis"
    psql_admin -d postgres -c "ALTER DATABASE $TEMPLATE_DB WITH is_template true"
  fi
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" | grep -q 1; then
    log "creating database $DB_NAME"
    psql_admin -d postgres -c "CREATE DATABASE $DB_NAME OWNER $OWNER_ROLE TEMPLATE $TEMPLATE_DB"
  fi
  pg_hand_over "$DB_NAME"
}

# ---- the hot standby: a copy of the whole cluster that replays the primary's WAL as it comes.
SB_DATA=$STANDBY_DIR/data

standby_running() {
  [ -f "$SB_DATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$SB_DATA" status >/dev/null 2>&1
}

psql_standby() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$STANDBY_PORT" -U postgres "$@"; }

standby_up() {
  pg_running || { log "the primary is not running: scripts/stack.sh up first"; return 1; }
  pg_replication
  mkdir -p "$STANDBY_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$STANDBY_DIR"; fi
  chmod 700 "$STANDBY_DIR"
  if [ ! -f "$SB_DATA/PG_VERSION" ]; then
    log "pg_basebackup of 127.0.0.1:$PG_PORT into $SB_DATA"
    rm -rf "$SB_DATA"
    # -R: standby.signal and primary_conninfo (with the replication role's password) in
    # postgresql.auto.conf, readable by the server's owner only.
    # The password goes through the environment, never on a command line. A busy primary may
    # recycle a WAL segment before the backup's temporary slot holds it: then once again.
    local try
    for try in 1 2 3; do
      if (
        PGPASSWORD=$(secret pg_replica)
        export PGPASSWORD
        as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U "$REPLICA_ROLE" \
          -D "$SB_DATA" -R -X stream -c fast --no-sync
      ); then break; fi
      [ "$try" = 3 ] && return 1
      log "pg_basebackup failed: trying again"
      rm -rf "$SB_DATA"
    done
    cat >>"$SB_DATA/postgresql.conf" <<CONF
# gridmgmt hot standby (scripts/stack.sh standby): read-only, TCP on its own port
port = $STANDBY_PORT
unix_socket_directories = ''
hot_standby = on
shared_buffers = 128MB
# every data-modifying statement sent to it is logged (it refuses them all): there must be none
log_statement = 'mod'
log_line_prefix = '%m [%p] %q%a@%d '
CONF
  fi
  local logged=0
  [ -f "$STANDBY_DIR/server.log" ] && logged=$(stat -c %s "$STANDBY_DIR/server.log")
  if ! standby_running; then
    log "starting the hot standby on 127.0.0.1:$STANDBY_PORT"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$SB_DATA" -l "$STANDBY_DIR/server.log" -w -t 120 start \
        >/dev/null; then
      tail -n 20 "$STANDBY_DIR/server.log" >&2
      return 1
    fi
  fi
  # After a crash it first replays its own WAL since its last restartpoint, then streams.
  for _ in $(seq 1200); do
    if [ "$(psql_standby -d postgres -tAc "SELECT count(*) FROM pg_stat_wal_receiver
        WHERE status = 'streaming'" 2>/dev/null)" = 1 ]; then return 0; fi
    # Down too long (there is no slot): the primary recycled WAL it needs. Made again, once.
    if [ -z "${SB_REMADE:-}" ] && [ "$(tail -c "+$((logged + 1))" "$STANDBY_DIR/server.log" |
        grep -c "has already been removed")" != 0 ]; then
      log "the primary no longer has the WAL this standby needs: making it again"
      standby_down immediate
      rm -rf "$SB_DATA"
      SB_REMADE=1 standby_up
      return
    fi
    sleep 0.1
  done
  log "the standby does not stream: $STANDBY_DIR/server.log says"
  tail -n 20 "$STANDBY_DIR/server.log" >&2
  return 1
}

standby_down() {
  if standby_running; then
    log "stopping the hot standby on 127.0.0.1:$STANDBY_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$SB_DATA" -m "${1:-fast}" -w stop >/dev/null
  fi
}

standby_env() {
  echo "READ_DATABASE_URL=postgresql+psycopg2://$APP_ROLE:$(secret pg_app)@127.0.0.1:$STANDBY_PORT/$DB_NAME"
}

standby() {
  case "${1:-}" in
    up) standby_up; standby_env ;;
    down) standby_down "${2:-fast}" ;;  # `down immediate`: as if it crashed
    purge)
      standby_down immediate
      rm -rf "$SB_DATA" "$STANDBY_DIR/server.log"
      rmdir "$STANDBY_DIR" 2>/dev/null || true ;;
    env) standby_env ;;
    *) echo "usage: $0 standby up|down [fast|immediate]|purge|env" >&2; exit 2 ;;
  esac
}

# redis-cli with the password (from the environment, never on a command line).
redis_auth() { REDISCLI_AUTH=$(secret redis) redis-cli --no-auth-warning -p "$REDIS_PORT" "$@"; }
redis_answers() { [ "$(redis_auth ping 2>/dev/null)" = PONG ]; }
redis_open() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_up() {
  mkdir -p "$VAR/redis"
  local password
  password=$(secret redis)
  if redis_open; then
    # A server started before passwords: it gets one now, without a restart.
    log "Redis on 127.0.0.1:$REDIS_PORT had no password: setting it"
    printf '%s' "$password" | redis-cli -p "$REDIS_PORT" -x config set requirepass >/dev/null
    redis_answers && return 0
    log "could not set Redis's password"; return 1
  fi
  if redis_answers; then return 0; fi
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  # The password goes in a file of its own (mode 600), not on the command line.
  (umask 077 && printf 'requirepass %s\n' "$password" >"$VAR/redis/auth.conf")
  redis-server "$VAR/redis/auth.conf" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" \
    --daemonize yes --pidfile "$VAR/redis/redis.pid" --logfile "$VAR/redis/redis.log" \
    --save '' --appendonly no
  for _ in $(seq 50); do redis_answers && return 0; sleep 0.1; done
  log "Redis did not start: see $VAR/redis/redis.log"; return 1
}

pg_url() { echo "postgresql+psycopg2://$1:$(secret "$2")@127.0.0.1:$PG_PORT/$DB_NAME"; }

print_env() {
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "DATABASE_URL=$DATABASE_URL"
    echo "MIGRATE_DATABASE_URL=${MIGRATE_DATABASE_URL:-$DATABASE_URL}"
  else
    echo "DATABASE_URL=$(pg_url "$APP_ROLE" pg_app)"
    echo "MIGRATE_DATABASE_URL=$(pg_url "$OWNER_ROLE" pg_owner)"
  fi
  echo "REDIS_URL=${REDIS_URL:-redis://:$(secret redis)@127.0.0.1:$REDIS_PORT/0}"
}

case "${1:-}" in
  deps) deps ;;
  up)
    [ -n "${DATABASE_URL:-}" ] || pg_up
    [ -n "${REDIS_URL:-}" ] || redis_up
    print_env ;;
  down)
    standby_down
    if pg_running; then log "stopping PostgreSQL"; as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; fi
    if redis_open; then log "stopping Redis"; redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null || true
    elif redis_answers; then log "stopping Redis"; redis_auth shutdown nosave >/dev/null || true; fi ;;
  env) print_env ;;
  standby) shift; standby "$@" ;;
  *) echo "usage: $0 deps|up|down|env|standby" >&2; exit 2 ;;
esac
