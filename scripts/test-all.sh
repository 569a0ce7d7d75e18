#!/usr/bin/env bash
# Runs every test of activity-gateway: the Rust unit and end-to-end tests, then the
# compatibility suite that drives the real @metamask/core-backend client.
# Needs: cargo, Node 20 + npm; PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222 for
# the storage and cluster tests (scripts/services.sh starts them where they are installed).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
cargo build --bins
# Two test threads (the machine has two cores); an env var, because the criterion benches
# that --all-targets includes take no libtest flags.
RUST_TEST_THREADS=2 cargo test --all-targets
GATEWAY_BIN="$PWD/target/debug/activity-gateway" bash tests/compat/run.sh
