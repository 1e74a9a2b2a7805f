#!/usr/bin/env bash
# The project's test command. Needs PostgreSQL server binaries, Node.js/npm and the
# tests/node packages (`.ci/run` installs all of them on a fresh machine).
#   1. formatting and lints;
#   2. every Rust test: unit tests, and integration tests against throwaway PostgreSQL
#      clusters with real Socket.IO clients (Rust and npm socket.io-client);
#   3. the PostgreSQL version matrix: the version-sensitive integration tests on PostgreSQL 13,
#      14, 16, 17 and 18 (tests/pg-matrix.sh; PG_MATRIX=0 skips it);
#   4. end to end against a real Strapi 4.26.2 and a real Strapi 5.54.0, each installed from
#      npm into its own cache folder (tests/e2e/run.sh, tests/e2e/run.sh --strapi 5).
set -euo pipefail
cd "$(dirname "$0")/.."
# Nothing is skipped quietly: this command always runs the bridge's end-to-end tests.
if [[ ${E2E_WITHOUT_BRIDGE:-0} != 0 ]]; then
  echo "tests/run.sh: E2E_WITHOUT_BRIDGE=$E2E_WITHOUT_BRIDGE would skip the bridge's end-to-end tests; unset it" >&2
  exit 1
fi
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --no-fail-fast
if [[ ${PG_MATRIX:-1} != 0 ]]; then
  bash tests/pg-matrix.sh
else
  echo "tests/run.sh: PG_MATRIX=$PG_MATRIX: the PostgreSQL version matrix is skipped" >&2
fi
# The fuzz target and the benchmark's load client are packages of their own; build them so
# they cannot rot. `cargo check` of the fuzz target runs on stable (only `cargo fuzz` needs the
# sanitizer flags) and shares target/ with the build above.
CARGO_TARGET_DIR="$PWD/target" cargo check --locked --manifest-path fuzz/Cargo.toml
cargo test --locked --manifest-path bench/loadgen/Cargo.toml
E2E_STRICT=1 BRIDGE_BIN="$PWD/target/debug/strapi-io-bridge" bash tests/e2e/run.sh
E2E_STRICT=1 BRIDGE_BIN="$PWD/target/debug/strapi-io-bridge" bash tests/e2e/run.sh --strapi 5
