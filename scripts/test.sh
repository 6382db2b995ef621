#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with only Rust on it.
#
# PostgreSQL: uses the server on 127.0.0.1:5432 when one answers (override with COS_TEST_PG_HOST/PORT);
# otherwise installs PostgreSQL with apt when missing and starts a throwaway server on port 55432 that is
# stopped again when the tests end. Then checks formatting and lints, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pg_answers() {
  command -v psql >/dev/null 2>&1 &&
    PGCONNECT_TIMEOUT=3 psql -h "$1" -p "$2" -U "${COS_TEST_PG_USER:-postgres}" -d "${COS_TEST_PG_DB:-postgres}" \
      -tAc 'select 1' >/dev/null 2>&1
}

start_throwaway_postgres() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$initdb" ]; then
    log "installing postgresql with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
  fi
  local bin_dir run_as=()
  bin_dir=$(dirname "$initdb")
  PG_DATA_DIR=$(mktemp -d /tmp/cos-pgtest.XXXXXX)
  local data_dir=$PG_DATA_DIR
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$data_dir"
    run_as=(runuser -u postgres --)
  fi
  log "starting a throwaway postgresql in $data_dir on 127.0.0.1:55432"
  "${run_as[@]}" "$bin_dir/initdb" -D "$data_dir" -A trust -U postgres --no-sync >/dev/null
  "${run_as[@]}" "$bin_dir/pg_ctl" -D "$data_dir" -l "$data_dir/server.log" -w \
    -o "-p 55432 -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off -c max_connections=400" start >/dev/null
  PG_STOP=("${run_as[@]}" "$bin_dir/pg_ctl" -D "$data_dir" -m fast -w stop)
  trap 'log "stopping the throwaway postgresql"; "${PG_STOP[@]}" >/dev/null || true; rm -rf "$PG_DATA_DIR"' EXIT
  export COS_TEST_PG_HOST=127.0.0.1 COS_TEST_PG_PORT=55432
}

export COS_TEST_PG_HOST="${COS_TEST_PG_HOST:-127.0.0.1}"
export COS_TEST_PG_PORT="${COS_TEST_PG_PORT:-5432}"
if pg_answers "$COS_TEST_PG_HOST" "$COS_TEST_PG_PORT"; then
  log "using postgresql at $COS_TEST_PG_HOST:$COS_TEST_PG_PORT"
else
  start_throwaway_postgres
fi

log "checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "building"
cargo build --workspace --bins --quiet

drop_test_schemas() {
  # Every test works in its own schema; drop them so a shared server does not accumulate them.
  local drop_all="DO \$\$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cos\\_test\\_%' LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP; END \$\$;"
  psql -h "$COS_TEST_PG_HOST" -p "$COS_TEST_PG_PORT" -U "${COS_TEST_PG_USER:-postgres}" -d "${COS_TEST_PG_DB:-postgres}" \
    -qc "$drop_all" >/dev/null 2>&1 || true
}

log "running the tests"
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast || status=$?
else
  cargo test --workspace --no-fail-fast || status=$?
fi
drop_test_schemas
exit "$status"
