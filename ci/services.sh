#!/usr/bin/env bash
# Make sure the services the test suite needs are running:
#   PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`)
#   Redis      on 127.0.0.1:6379
# Starts whichever is down, waits up to ~30 s, and fails loudly otherwise.
# Tests never skip because a service is missing.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
WAIT_SECONDS=30

die() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!! ci/services.sh: $*" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 1
}

pg_up() { pg_isready -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

wait_for() { # name check-function
  local name=$1 check=$2 i
  for ((i = 0; i < WAIT_SECONDS; i++)); do
    if "$check"; then
      echo "$name is up"
      return 0
    fi
    sleep 1
  done
  "$check" && { echo "$name is up"; return 0; }
  return 1
}

for tool in pg_isready psql redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found on PATH"
done

# --- PostgreSQL -----------------------------------------------------------
if pg_up; then
  echo "PostgreSQL already running on $PG_HOST:$PG_PORT"
else
  echo "PostgreSQL not reachable on $PG_HOST:$PG_PORT; starting it"
  # shellcheck disable=SC2046
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start ||
    echo "pg_ctlcluster returned non-zero; waiting anyway" >&2
fi
wait_for PostgreSQL pg_up ||
  die "PostgreSQL is still down on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s (pg_isready failed)"

# --- Redis ----------------------------------------------------------------
if redis_up; then
  echo "Redis already running on $REDIS_HOST:$REDIS_PORT"
else
  echo "Redis not reachable on $REDIS_HOST:$REDIS_PORT; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
    echo "redis-server returned non-zero; waiting anyway" >&2
fi
wait_for Redis redis_up ||
  die "Redis is still down on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s (redis-cli ping failed)"

# --- test database ----------------------------------------------------------
exists=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='test'") ||
  die "cannot query PostgreSQL as user postgres (is trust auth configured for $PG_HOST?)"
if [ "$(echo "$exists" | tr -d '[:space:]')" != "1" ]; then
  echo "creating database 'test'"
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -c 'CREATE DATABASE test' >/dev/null ||
    die "could not create database 'test'"
fi
echo "database 'test' ready"
