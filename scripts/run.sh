#!/usr/bin/env bash
# `make run`: web (gunicorn) + RQ worker + scheduler in the foreground, on the seeded demo city.
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/stack.sh env)"
# Web, worker and scheduler connect as the app role (DATABASE_URL); the owner's URL, which
# `make migrate` used, is kept from them.
unset MIGRATE_DATABASE_URL
export DATABASE_URL REDIS_URL FLASK_APP=wsgi
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
# gunicorn listens with SO_REUSEPORT (gunicorn.conf.py): a second server on a busy port would
# share it silently instead of failing, so check first.
if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
  echo "something already listens on $HOST:$PORT (an earlier make run?): stop it, or set PORT" >&2
  exit 1
fi
BIN=.venv/bin

mkdir -p var
[ -s var/secret_key ] || "$BIN/python" -c 'import secrets; print(secrets.token_hex(32))' >var/secret_key
GRIDMGMT_SECRET_KEY=$(cat var/secret_key)
export GRIDMGMT_SECRET_KEY
# The demo: plain HTTP on this machine (no Secure session cookie), a made-up key allowed.
export GRIDMGMT_DEMO=1
# Messages to the public link back here; in the demo they are kept for /mailbox, not sent.
export GRIDMGMT_PUBLIC_URL=${GRIDMGMT_PUBLIC_URL:-http://$HOST:$PORT}
export GRIDMGMT_LOG_FORMAT=text  # readable lines here; JSON lines in production

"$BIN/flask" demo seed >var/demo-logins.txt

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping web, worker and scheduler..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped (PostgreSQL and Redis keep running: make down stops them)"
}
trap stop INT TERM EXIT

"$BIN/gunicorn" --bind "$HOST:$PORT" --log-level warning wsgi:app &  # the app logs requests
pids+=($!)
"$BIN/flask" dispatch worker &
pids+=($!)
"$BIN/flask" dispatch scheduler &
pids+=($!)

for _ in $(seq 100); do
  curl -fs "http://$HOST:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<MSG

  gridmgmt is running at http://$HOST:$PORT/   (ready: http://$HOST:$PORT/readyz)
  messages to the public (not sent in the demo): http://$HOST:$PORT/mailbox
$(sed 's/^/  /' var/demo-logins.txt)

  Ctrl-C stops it.

MSG
wait -n "${pids[@]}" || true
