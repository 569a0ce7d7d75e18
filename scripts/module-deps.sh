#!/usr/bin/env bash
# Prints the crate's module-level imports as "module -> module" and checks them for cycles:
# every `crate::<module>` path in the code of src/<module>(.rs|/) counts, tests included,
# doc comments and comments not.
# Exits 1 when two modules reach each other (tsort reports the loop).
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=$(
  for path in src/*.rs src/*/; do
    from=$(basename "${path%.rs}")
    case "$from" in lib|main|bin) continue ;; esac
    { grep -rhvE '^[[:space:]]*//' "$path" || true; } | { grep -oE 'crate::[a-z_]+' || true; } |
      sed 's/crate:://' | sort -u |
      while read -r to; do
        if [ "$to" != "$from" ]; then echo "$from $to"; fi
      done
  done
)
echo "$pairs" | sed 's/ / -> /'
loops=$(echo "$pairs" | tsort 2>&1 >/dev/null || true)
if [ -n "$loops" ]; then
  echo "$loops" >&2
  exit 1
fi
echo "no cycles between modules"
