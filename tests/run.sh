#!/usr/bin/env bash
# The project's test command. Needs PostgreSQL server binaries, Node.js/npm and the
# tests/node packages (`.ci/run` installs all of them on a fresh machine).
#   1. formatting and lints;
#   2. every Rust test: unit tests, and integration tests against throwaway PostgreSQL
#      clusters with real Socket.IO clients (Rust and npm socket.io-client);
#   3. the PostgreSQL version matrix: the version-sensitive integration tests on PostgreSQL 13,
#      14, 16, 17 and 18 (tests/pg-matrix.sh; PG_MATRIX=0 skips it);
#   4. end to end against a real Strapi 4.26.2 installed from npm (tests/e2e/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --no-fail-fast
if [[ ${PG_MATRIX:-1} != 0 ]]; then bash tests/pg-matrix.sh; fi
BRIDGE_BIN="$PWD/target/debug/strapi-io-bridge" bash tests/e2e/run.sh
