#!/usr/bin/env bash
# Private PostgreSQL+PostGIS and Redis for gridmgmt, under var/, on non-default ports.
#   scripts/stack.sh deps   install missing Debian packages (apt-get update once first)
#   scripts/stack.sh up     start both servers (idempotent) and create the databases
#   scripts/stack.sh down   stop both servers
#   scripts/stack.sh env    print DATABASE_URL and REDIS_URL
# DATABASE_URL / REDIS_URL in the environment mean "use that server instead": nothing is started.
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
PACKAGES=(postgresql-15 postgresql-15-postgis-3 redis-server chromium chromium-driver fonts-wqy-zenhei python3-venv curl wrk)

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
  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$VAR/pg/server.log" -w -t 60 start >/dev/null
  fi
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$TEMPLATE_DB'" | grep -q 1; then
    log "creating template database $TEMPLATE_DB with PostGIS"
    psql_admin -d postgres -c "CREATE DATABASE $TEMPLATE_DB"
    psql_admin -d "$TEMPLATE_DB" -c "CREATE EXTENSION IF NOT EXISTS postgis"
    psql_admin -d postgres -c "ALTER DATABASE $TEMPLATE_DB WITH is_template true"
  fi
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" | grep -q 1; then
    log "creating database $DB_NAME"
    psql_admin -d postgres -c "CREATE DATABASE $DB_NAME TEMPLATE $TEMPLATE_DB"
  fi
}

redis_up() {
  mkdir -p "$VAR/redis"
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return 0; fi
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" --daemonize yes \
    --pidfile "$VAR/redis/redis.pid" --logfile "$VAR/redis/redis.log" --save '' --appendonly no
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "Redis did not start: see $VAR/redis/redis.log"; return 1
}

print_env() {
  echo "DATABASE_URL=${DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/$DB_NAME}"
  echo "REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}"
}

case "${1:-}" in
  deps) deps ;;
  up)
    [ -n "${DATABASE_URL:-}" ] || pg_up
    [ -n "${REDIS_URL:-}" ] || redis_up
    print_env ;;
  down)
    if pg_running; then log "stopping PostgreSQL"; as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; fi
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then log "stopping Redis"; redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null || true; fi ;;
  env) print_env ;;
  *) echo "usage: $0 deps|up|down|env" >&2; exit 2 ;;
esac
