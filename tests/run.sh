#!/usr/bin/env bash
# The project's test command. Needs PostgreSQL server binaries, Node.js/npm and the
# tests/node packages (`.ci/run` installs all of them on a fresh machine).
#   1. formatting and lints;
#   2. every Rust test: unit tests, and integration tests against throwaway PostgreSQL
#      clusters with real Socket.IO clients (Rust and npm socket.io-client);
#   3. end to end against a real Strapi 4.26.2 and a real Strapi 5.54.0, each installed from
#      npm into its own cache folder (tests/e2e/run.sh, tests/e2e/run.sh --strapi 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --no-fail-fast
BRIDGE_BIN="$PWD/target/debug/strapi-io-bridge" bash tests/e2e/run.sh
BRIDGE_BIN="$PWD/target/debug/strapi-io-bridge" bash tests/e2e/run.sh --strapi 5
