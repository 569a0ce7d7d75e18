#!/usr/bin/env bash
# Runs every test of activity-gateway: the Rust unit and end-to-end tests, the
# compatibility suite that drives the real @metamask/core-backend client, then the
# TypeScript client's tests and the Chromium tests (client page, status page).
# Needs: cargo, Node 20 + npm (and apt-get for Debian's chromium when it is missing); PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222 for
# the storage and cluster tests (scripts/services.sh starts them where they are installed).
set -euo pipefail
cd "$(dirname "$0")/.."

# The modules' imports point one way (src/lib.rs has the map); a cycle fails the run.
bash scripts/module-deps.sh >/dev/null
bash scripts/services.sh
cargo build --bins
# Two test threads (the machine has two cores); an env var, because the criterion benches
# that --all-targets includes take no libtest flags.
RUST_TEST_THREADS=2 cargo test --all-targets
GATEWAY_BIN="$PWD/target/debug/activity-gateway" bash tests/compat/run.sh

# The TypeScript client (clients/typescript): its tests against the spawned gateway, then the
# Chromium tests (the client in a page, the operator status page). Debian's chromium is
# installed when missing; screenshots go to target/status-page/.
if [ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium
fi
(
  root="$PWD"
  cd clients/typescript
  npm ci --no-audit --no-fund --loglevel=error
  npm run build
  GATEWAY_BIN="$root/target/debug/activity-gateway" node --test --test-concurrency=1 \
    --test-force-exit --test-timeout=120000 --test-reporter=spec \
    test/*.test.mjs test/browser/*.test.mjs
)
