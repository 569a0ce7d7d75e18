#!/usr/bin/env bash
# Entry point of the client compatibility suite (CI calls this).
#
#   GATEWAY_BIN=/path/to/activity-gateway bash tests/compat/run.sh
#
# GATEWAY_BIN defaults to ../../target/debug/activity-gateway relative to this
# folder. COMPAT_VERSIONS limits the client versions (default "v11 v8 v4").
# Extra arguments are passed to `node --test` (e.g. --test-name-pattern=restart).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

GATEWAY_BIN="${GATEWAY_BIN:-../../target/debug/activity-gateway}"
case "$GATEWAY_BIN" in
  /*) ;;
  *) GATEWAY_BIN="$HERE/$GATEWAY_BIN" ;;
esac
if [ ! -x "$GATEWAY_BIN" ]; then
  echo "run.sh: gateway binary not found or not executable: $GATEWAY_BIN (build it first: cargo build)" >&2
  exit 1
fi
export GATEWAY_BIN

bash "$HERE/setup.sh"

VERSIONS="${COMPAT_VERSIONS:-v11 v8 v4}"
files=()
for v in $VERSIONS; do
  files+=("test/client-$v.test.mjs")
done

echo "compat: gateway $GATEWAY_BIN; clients: $VERSIONS"
# One node --test run for all versions (one closing summary), one file at a
# time: every test spawns its own gateway and the machine has 2 cores.
exec node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 \
  --test-reporter=spec "$@" "${files[@]}"
