#!/usr/bin/env bash
# Installs the REAL @metamask/core-backend client versions the compatibility
# suite drives, one self-contained folder per version:
#   clients/<v>/node_modules/@metamask/core-backend   (npm pack + extract)
#   clients/<v>/node_modules/...                      (its runtime deps, npm ci)
#
# `npm install @metamask/core-backend@11.0.0` cannot work against the registry
# reachable here (its @metamask/messenger ^3 / controller-utils ^13 ranges have
# no published match), so the package itself is packed and extracted, and each
# folder pins the dependency versions that exist (see clients/<v>/package.json).
#
# Idempotent: a stamp (lock-file hash + version) skips work already done.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/.cache"
mkdir -p "$CACHE"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup.sh: node and npm are required (Node >= 20)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup.sh: Node >= 20 required, found $(node --version)" >&2
  exit 1
fi

# version folder -> @metamask/core-backend version
VERSIONS="${COMPAT_VERSIONS:-v11 v8 v4}"

stamp_of() {
  local dir="$1" ver="$2"
  { echo "core-backend@$ver"; cat "$dir/package.json"; cat "$dir/package-lock.json" 2>/dev/null || true; } \
    | sha256sum | cut -d' ' -f1
}

for v in $VERSIONS; do
  dir="$HERE/clients/$v"
  ver="$(node -p "require('$dir/package.json').coreBackendVersion")"
  want="$(stamp_of "$dir" "$ver")"
  stamp="$dir/node_modules/.compat-stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && [ -f "$dir/node_modules/@metamask/core-backend/package.json" ]; then
    echo "setup: $v (@metamask/core-backend@$ver) already installed"
    continue
  fi
  echo "setup: installing $v (@metamask/core-backend@$ver)"
  (
    cd "$dir"
    if [ -f package-lock.json ]; then
      npm ci --no-audit --no-fund --loglevel=error
    else
      npm install --no-audit --no-fund --loglevel=error
    fi
  )
  tgz="$CACHE/metamask-core-backend-$ver.tgz"
  if [ ! -s "$tgz" ]; then
    (cd "$CACHE" && npm pack "@metamask/core-backend@$ver" --loglevel=error >/dev/null)
  fi
  # Extract AFTER npm ci/install (npm prunes packages it does not know).
  rm -rf "$dir/node_modules/@metamask/core-backend"
  mkdir -p "$dir/node_modules/@metamask/core-backend"
  tar xzf "$tgz" --strip-components=1 -C "$dir/node_modules/@metamask/core-backend"
  got="$(node -p "require('$dir/node_modules/@metamask/core-backend/package.json').version")"
  if [ "$got" != "$ver" ]; then
    echo "setup: extracted core-backend $got, expected $ver" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
done
