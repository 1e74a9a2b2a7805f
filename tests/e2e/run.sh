#!/usr/bin/env bash
# End-to-end test of strapi-io-bridge against a real Strapi 4.26.2 or, with --strapi 5, 5.54.0:
#   a throwaway PostgreSQL 15 (wal_level=logical) -> Strapi (`strapi start`) -> strapi-io-bridge
#   `setup` + `run` -> Node socket.io clients (tests/node/strapi-e2e.test.mjs, for Strapi 5
#   tests/node/strapi5-e2e.test.mjs) that change content through Strapi's REST and admin APIs
#   and check what every client receives.
#
# Usage: tests/e2e/run.sh [--strapi 4|5] [--keep] [--without-bridge]
#   --strapi 4|5      which Strapi to run (also E2E_STRAPI; default 4): the app in tests/e2e/strapi
#                     (4.26.2) or tests/e2e/strapi5 (5.54.0)
#   --keep            leave PostgreSQL, Strapi and the bridge running and the work folder in place
#                     (also E2E_KEEP=1); prints how to reach and stop them
#   --without-bridge  do not start the bridge; run only the Strapi fixture checks (also
#                     E2E_WITHOUT_BRIDGE=1). Without it a missing bridge binary is a failure.
# Environment:
#   BRIDGE_BIN        the bridge binary (default: target/debug/strapi-io-bridge in the repository)
#   STRAPI_E2E_HOME   where the Strapi app's node_modules are installed and reused
#                     (default: ~/.cache/strapi-io-bridge/strapi-4.26.2, or strapi-5.54.0);
#                     reinstalled only when the app's package.json or package-lock.json change
#   PG_BIN            PostgreSQL binaries (default: /usr/lib/postgresql/15/bin, else the newest
#                     /usr/lib/postgresql/*/bin, else initdb's folder on PATH)
#   RUST_LOG          passed to the bridge (default: info)
#   E2E_TMPDIR        parent of the run's work folder (default: $TMPDIR or /tmp)
#   E2E_EVENT_TIMEOUT_MS  how long the Node test waits for one event (default: 15000)
#   E2E_STRICT        set (as tests/run.sh does, and as CI is) to fail on --without-bridge and on
#                     any skipped Node test
set -Eeuo pipefail

KEEP=${E2E_KEEP:-0}
WITHOUT_BRIDGE=${E2E_WITHOUT_BRIDGE:-0}
MAJOR=${E2E_STRAPI:-4}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[i]}
  case "$arg" in
    --strapi) MAJOR=${args[i + 1]:-}; i=$((i + 1)) ;;
    --strapi=*) MAJOR=${arg#--strapi=} ;;
    --keep) KEEP=1 ;;
    --without-bridge) WITHOUT_BRIDGE=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# In CI (CI set) and under tests/run.sh (E2E_STRICT=1) nothing may be skipped.
STRICT=${E2E_STRICT:-}${CI:-}
if [[ $WITHOUT_BRIDGE = 1 && -n $STRICT ]]; then
  echo "run.sh: --without-bridge (E2E_WITHOUT_BRIDGE) skips the bridge's tests and is refused in CI and under tests/run.sh" >&2
  exit 1
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case "$MAJOR" in
  4) STRAPI_VERSION=4.26.2 TEMPLATE=$REPO/tests/e2e/strapi NODE_TEST=strapi-e2e.test.mjs ;;
  5) STRAPI_VERSION=5.54.0 TEMPLATE=$REPO/tests/e2e/strapi5 NODE_TEST=strapi5-e2e.test.mjs ;;
  *) echo "run.sh: --strapi takes 4 or 5, not '$MAJOR'" >&2; exit 2 ;;
esac
NODE_DIR=$REPO/tests/node
STRAPI_HOME=${STRAPI_E2E_HOME:-$HOME/.cache/strapi-io-bridge/strapi-$STRAPI_VERSION}
if [[ -z ${PG_BIN:-} ]]; then
  # PostgreSQL 15 where Debian puts it, else the newest installed, else whatever is on PATH.
  for d in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [[ -x $d/initdb ]] && { PG_BIN=$d; break; }
  done
  if [[ -z ${PG_BIN:-} ]] && command -v initdb >/dev/null; then PG_BIN=$(dirname "$(command -v initdb)"); fi
  PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
fi
BRIDGE_BIN=${BRIDGE_BIN:-$REPO/target/debug/strapi-io-bridge}
[[ $BRIDGE_BIN = /* ]] || BRIDGE_BIN=$PWD/$BRIDGE_BIN

# --- output and timing ------------------------------------------------------------------------

RUN_START=$EPOCHREALTIME
STEP_NAME=""
STEP_START=""
TIMINGS=()
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {
  step_end
  STEP_NAME=$1
  STEP_START=$EPOCHREALTIME
  printf '\n==> %s\n' "$STEP_NAME"
}
step_end() {
  if [[ -n $STEP_NAME ]]; then
    local t
    t=$(elapsed "$STEP_START")
    printf '    (%s: %s s)\n' "$STEP_NAME" "$t"
    TIMINGS+=("$(printf '%8s s  %s' "$t" "$STEP_NAME")")
    STEP_NAME=""
  fi
}
say() { printf '    %s\n' "$*"; }
die() { printf '\nrun.sh: %s\n' "$*" >&2; exit 1; }

# --- preconditions ----------------------------------------------------------------------------

command -v node >/dev/null || die "node is not installed (Node 18-22 is needed for Strapi 4, 20-24 for Strapi 5)"
command -v npm >/dev/null || die "npm is not installed"
command -v curl >/dev/null || die "curl is not installed"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "PostgreSQL binaries (initdb, pg_ctl) not found in $PG_BIN (set PG_BIN)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [[ $MAJOR = 4 ]]; then
  ((node_major >= 18 && node_major <= 22)) || die "Strapi 4.26.2 needs Node 18-22, found $(node -v)"
else
  ((node_major >= 20)) || die "Strapi 5.54.0 needs Node 20 or newer, found $(node -v)"
fi

if [[ ! -x $BRIDGE_BIN ]]; then
  if [[ $WITHOUT_BRIDGE = 1 ]]; then
    :
  else
    die "bridge binary not found: $BRIDGE_BIN
  build it (cargo build) or point BRIDGE_BIN at it; --without-bridge runs only the Strapi checks"
  fi
fi

AS_PG=()
if [[ $(id -u) = 0 ]]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user for initdb"
  AS_PG=(runuser -u postgres --)
fi

WORK=$(mktemp -d "${E2E_TMPDIR:-${TMPDIR:-/tmp}}/strapi-io-e2e.XXXXXX")
chmod 711 "$WORK"
LOGS=$WORK/logs
mkdir -p "$LOGS"
PGDATA=$WORK/pg/data
PGSOCK=$WORK/pg/sock
APP=$WORK/app
STRAPI_PID=""
BRIDGE_PID=""
PG_STARTED=0

# --- cleanup ----------------------------------------------------------------------------------

stop_pid() { # stop_pid NAME PID: TERM, then KILL after 10 s
  local name=$1 pid=$2 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  say "$name (pid $pid) did not stop on TERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

print_logs() {
  local f
  for f in "$LOGS"/*.log; do
    [[ -s $f && $f != */node-test.log ]] || continue # the test output is already on screen
    printf '\n----- %s (last 300 lines) -----\n' "$(basename "$f")"
    tail -n 300 "$f"
  done
  printf -- '----- end of logs -----\n'
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  step_end
  if ((status != 0)); then
    printf '\nrun.sh: FAILED (exit %s)\n' "$status" >&2
    print_logs >&2
  fi
  if [[ $KEEP = 1 ]]; then
    cat > "$WORK/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops what tests/e2e/run.sh --keep left running and removes its work folder.
${BRIDGE_PID:+kill -TERM $BRIDGE_PID 2>/dev/null}
${STRAPI_PID:+kill -TERM $STRAPI_PID 2>/dev/null}
$( ((PG_STARTED)) && printf '%q ' "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" stop -m fast -w)
rm -rf $(printf '%q' "$WORK")
STOP
    chmod +x "$WORK/stop.sh"
    printf '\nKept (--keep): work folder %s\n' "$WORK"
    ((PG_STARTED)) && say "PostgreSQL: postgres://strapi:${DB_PASSWORD:-}@127.0.0.1:${PG_PORT:-}/strapi (psql -h $PGSOCK -p ${PG_PORT:-} -U postgres strapi)"
    [[ -n $STRAPI_PID ]] && say "Strapi:     http://127.0.0.1:${STRAPI_PORT:-} (pid $STRAPI_PID, app $APP)"
    [[ -n $BRIDGE_PID ]] && say "bridge:     http://127.0.0.1:${BRIDGE_PORT:-} (pid $BRIDGE_PID)"
    say "logs:       $LOGS"
    say "stop with:  $WORK/stop.sh"
  else
    stop_pid bridge "$BRIDGE_PID"
    stop_pid strapi "$STRAPI_PID"
    if ((PG_STARTED)); then
      "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" stop -m fast -w >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
  fi
  if ((${#TIMINGS[@]})); then
    printf '\nTimings:\n'
    printf '  %s\n' "${TIMINGS[@]}"
  fi
  printf '  %8s s  total\n' "$(elapsed "$RUN_START")"
  if ((status == 0)); then printf '\nrun.sh: OK\n'; fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ----------------------------------------------------------------------------------

free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

random_secret() { node -p 'require("crypto").randomBytes(16).toString("base64")'; }

# wait_until DESC SECONDS PID COMMAND...: poll COMMAND every 0.2 s until it succeeds; fail when
# the deadline passes or the process PID (if given) has exited.
wait_until() {
  local desc=$1 seconds=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      die "$desc: the process exited before it was ready (see its log below)"
    fi
    ((SECONDS < deadline)) || die "$desc: not ready after $seconds s"
    sleep 0.2
  done
}

http_status_is() { # http_status_is CODE URL
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$2") = "$1" ]]
}

stamp_of() { cat "$@" | sha256sum | cut -c1-64; }

# --- (a) install ------------------------------------------------------------------------------

step "install the Strapi $STRAPI_VERSION app's dependencies ($STRAPI_HOME)"
mkdir -p "$STRAPI_HOME"
want=$(stamp_of "$TEMPLATE/package.json" "$TEMPLATE/package-lock.json")
(
  flock 9
  if [[ -d $STRAPI_HOME/node_modules && $(cat "$STRAPI_HOME/.install-stamp" 2>/dev/null) = "$want" ]]; then
    say "up to date (package.json and package-lock.json unchanged)"
  else
    say "installing with npm ci (npm cache: $(npm config get cache)); log: $LOGS/npm-strapi.log"
    rm -rf "$STRAPI_HOME/node_modules" "$STRAPI_HOME/.install-stamp"
    cp "$TEMPLATE/package.json" "$TEMPLATE/package-lock.json" "$STRAPI_HOME/"
    (cd "$STRAPI_HOME" && npm ci --prefer-offline --no-audit --no-fund) > "$LOGS/npm-strapi.log" 2>&1 ||
      die "npm ci of the Strapi app failed"
    echo "$want" > "$STRAPI_HOME/.install-stamp"
  fi
) 9> "$STRAPI_HOME/.install-lock"

step "install the Node test client (tests/node)"
want=$(stamp_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")
if [[ -d $NODE_DIR/node_modules && $(cat "$NODE_DIR/node_modules/.e2e-stamp" 2>/dev/null) = "$want" ]]; then
  say "up to date"
else
  (cd "$NODE_DIR" && npm ci --prefer-offline --no-audit --no-fund) > "$LOGS/npm-node.log" 2>&1 ||
    die "npm ci in tests/node failed"
  echo "$want" > "$NODE_DIR/node_modules/.e2e-stamp"
fi

# --- (b) PostgreSQL ---------------------------------------------------------------------------

step "start a throwaway PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}'), wal_level=logical)"
PG_PORT=$(free_port)
DB_PASSWORD=$(node -p 'require("crypto").randomBytes(12).toString("hex")')
mkdir -p "$PGDATA" "$PGSOCK"
: > "$LOGS/postgres.log"
[[ ${#AS_PG[@]} -eq 0 ]] || chown -R postgres:postgres "$WORK/pg" "$LOGS/postgres.log"
chmod 700 "$PGDATA"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --no-sync -E UTF8 --locale=C.UTF-8 > "$LOGS/initdb.log" 2>&1 || die "initdb failed"
cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
full_page_writes = off
synchronous_commit = off
CONF
cat > "$PGDATA/pg_hba.conf" <<HBA
local   all             all                             trust
host    all             all             127.0.0.1/32    scram-sha-256
host    replication     all             127.0.0.1/32    scram-sha-256
HBA
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 30 start > /dev/null ||
  die "PostgreSQL did not start"
PG_STARTED=1
"$PG_BIN/psql" -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE strapi LOGIN REPLICATION PASSWORD '$DB_PASSWORD'" \
  -c "CREATE DATABASE strapi OWNER strapi" > "$LOGS/psql.log" 2>&1 || die "creating role and database failed"
say "port $PG_PORT, role strapi (LOGIN REPLICATION), database strapi"

# --- (c) Strapi -------------------------------------------------------------------------------

step "boot Strapi $STRAPI_VERSION (strapi start)"
STRAPI_PORT=$(free_port)
JWT_SECRET=$(random_secret)
API_TOKEN_SALT=$(random_secret)
mkdir -p "$APP"
cp -R "$TEMPLATE/config" "$TEMPLATE/src" "$TEMPLATE/public" "$TEMPLATE/database" "$TEMPLATE/package.json" "$APP/"
ln -s "$STRAPI_HOME/node_modules" "$APP/node_modules"
sed -e "s|@STRAPI_PORT@|$STRAPI_PORT|" \
  -e "s|@APP_KEYS@|$(random_secret),$(random_secret)|" \
  -e "s|@API_TOKEN_SALT@|$API_TOKEN_SALT|" \
  -e "s|@ADMIN_JWT_SECRET@|$(random_secret)|" \
  -e "s|@TRANSFER_TOKEN_SALT@|$(random_secret)|" \
  -e "s|@JWT_SECRET@|$JWT_SECRET|" \
  -e "s|@ENCRYPTION_KEY@|$(random_secret)|" \
  -e "s|@DATABASE_PORT@|$PG_PORT|" \
  -e "s|@DATABASE_NAME@|strapi|" \
  -e "s|@DATABASE_USERNAME@|strapi|" \
  -e "s|@DATABASE_PASSWORD@|$DB_PASSWORD|" \
  "$TEMPLATE/.env.template" > "$APP/.env"
! grep -q '@[A-Z_]*@' "$APP/.env" || die "unfilled placeholder in .env: $(grep '@[A-Z_]*@' "$APP/.env")"
FIXTURE=$WORK/fixture.json
(
  cd "$APP"
  unset NODE_ENV DATABASE_URL
  export E2E_FIXTURE_FILE=$FIXTURE STRAPI_TELEMETRY_DISABLED=true FORCE_COLOR=0
  exec node node_modules/@strapi/strapi/bin/strapi.js start
) > "$LOGS/strapi.log" 2>&1 &
STRAPI_PID=$!
wait_until "Strapi on port $STRAPI_PORT" 120 "$STRAPI_PID" http_status_is 204 "http://127.0.0.1:$STRAPI_PORT/_health"
[[ -s $FIXTURE ]] || die "Strapi's bootstrap did not write $FIXTURE"
say "http://127.0.0.1:$STRAPI_PORT (pid $STRAPI_PID)"

# --- (d) bridge -------------------------------------------------------------------------------

BRIDGE_URL=""
if [[ $WITHOUT_BRIDGE = 1 ]]; then
  step "bridge: SKIPPED (--without-bridge); only the Strapi fixture checks run"
  [[ -x $BRIDGE_BIN ]] || say "no bridge binary at $BRIDGE_BIN"
else
  step "bridge: setup (publication, replica identity)"
  (cd "$WORK" && "$BRIDGE_BIN" setup --strapi-dir "$APP") > "$LOGS/bridge-setup.log" 2>&1 ||
    die "strapi-io-bridge setup failed"

  if [[ $MAJOR = 5 ]]; then
    step "bridge: check finds the Strapi 5 layout and refresh mode (config/plugins.js)"
    (cd "$WORK" && "$BRIDGE_BIN" check --strapi-dir "$APP" --content-types '*') > "$LOGS/bridge-check.log" 2>&1 ||
      die "strapi-io-bridge check failed: $(cat "$LOGS/bridge-check.log")"
    grep -q "Strapi 5 layout" "$LOGS/bridge-check.log" || die "check did not report the Strapi 5 layout"
    grep -q "jwt_management = refresh (jwtManagement in $APP/config/plugins.js)" "$LOGS/bridge-check.log" ||
      die "check did not report jwt_management = refresh from config/plugins.js"
    grep -E "Strapi 5 layout|jwt_management" "$LOGS/bridge-check.log" | sed 's/^/    /'
  fi

  step "bridge: run, wait for /readyz"
  BRIDGE_PORT=$(free_port)
  # The bridge also proxies Strapi's HTTP API (its config.toml is read from the work folder).
  printf '[proxy]\nupstream = "http://127.0.0.1:%s"\n' "$STRAPI_PORT" > "$WORK/config.toml"
  (
    cd "$WORK"
    export RUST_LOG=${RUST_LOG:-info}
    exec "$BRIDGE_BIN" run --strapi-dir "$APP" --listen "127.0.0.1:$BRIDGE_PORT" --content-types '*'
  ) > "$LOGS/bridge.log" 2>&1 &
  BRIDGE_PID=$!
  wait_until "bridge /readyz on port $BRIDGE_PORT" 60 "$BRIDGE_PID" http_status_is 200 "http://127.0.0.1:$BRIDGE_PORT/readyz"
  BRIDGE_URL=http://127.0.0.1:$BRIDGE_PORT
  say "$BRIDGE_URL (pid $BRIDGE_PID)"
  if grep -qF -e "$JWT_SECRET" -e "$DB_PASSWORD" -e "$API_TOKEN_SALT" "$LOGS/bridge.log" "$LOGS/bridge-setup.log"; then
    die "a secret (JWT_SECRET, API_TOKEN_SALT or the database password) appears in the bridge's log"
  fi
fi

# --- (e) Node tests ---------------------------------------------------------------------------

if [[ $MAJOR = 4 ]]; then
  # Every Node test but the Strapi 5 one.
  NODE_TESTS=()
  for f in "$NODE_DIR"/*.test.mjs; do
    [[ $(basename "$f") = strapi5-e2e.test.mjs ]] || NODE_TESTS+=("$f")
  done
else
  NODE_TESTS=("$NODE_DIR/$NODE_TEST")
fi
step "Node tests: ${NODE_TESTS[*]#"$REPO/"}"
STRAPI_URL=http://127.0.0.1:$STRAPI_PORT BRIDGE_URL=$BRIDGE_URL E2E_FIXTURE_FILE=$FIXTURE \
  E2E_JWT_SECRET=$JWT_SECRET \
  node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$LOGS/node-test.tap" "${NODE_TESTS[@]}" 2>&1 |
  tee "$LOGS/node-test.log" || die "the Node tests failed"
# TAP marks skipped tests and suites alike (the spec summary does not count skipped suites).
if [[ -n $STRICT ]] && grep -qE '# (SKIP|TODO)' "$LOGS/node-test.tap"; then
  die "Node tests were skipped: $(grep -E '# (SKIP|TODO)' "$LOGS/node-test.tap" | tr '\n' ' ')"
fi

if [[ -n $BRIDGE_PID ]]; then
  kill -0 "$BRIDGE_PID" 2>/dev/null || die "the bridge exited during the test"
  if grep -qF -e "$JWT_SECRET" -e "$DB_PASSWORD" -e "$API_TOKEN_SALT" "$LOGS/bridge.log"; then
    die "a secret (JWT_SECRET, API_TOKEN_SALT or the database password) appears in the bridge's log"
  fi
fi
step_end
