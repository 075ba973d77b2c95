#!/usr/bin/env bash
# A real Kubernetes control plane for the tests: kube-apiserver and kube-controller-manager
# built from Debian bookworm's own `kubernetes` source package (upstream v1.20.2 with its
# complete vendor/) with Debian's Go, plus Debian's etcd-server. No Docker, no images.
#
#   bash scripts/kube-binaries.sh        prints the folder holding the two binaries
#
# The binaries are cached in ${LIFEBOAT_CACHE:-$HOME/.cache/lifeboat}/kube/<source version>/bin,
# so only a fresh machine pays the build (~5-7 min on 2 cores); later runs print the folder at
# once. The build happens in temporary folders and the result is renamed into place whole: the
# cache never holds half a build. Two runs at once wait for each other (flock).
# Only stdout carries the folder; progress goes to stderr. When it cannot (not root, no apt, no
# deb-src entries derivable, a failed download or build), it prints one line saying why
# (prefixed "kube-binaries:") and exits non-zero.
#
# Why each step (checked on Debian bookworm, 2 cores):
# - Debian's source package is v1.20.2 (+3 Debian patches); upstream's own repository is too
#   big to fetch and its newer go.mod needs a newer Go than Debian's 1.19.
# - The deb-src entries are derived from the machine's own deb entries (same mirrors, same
#   keys) into a private apt configuration: the machine's sources are not changed.
# - `GOFLAGS=-mod=vendor go build` fails under Go 1.19 ("updates to go.mod needed"); v1.20's
#   own `make WHAT=...` builds in GOPATH mode and generates the git-ignored generated files
#   (openapi) first.
# - The vendored github.com/modern-go/reflect2 1.0.1 makes every request body with a map (any
#   create) panic under Go >= 1.18 (kubectl sees "stream error: INTERNAL_ERROR"); it is
#   replaced by Debian's golang-github-modern-go-reflect2-dev (1.0.2), as upstream later did.
set -euo pipefail

log() { echo "kube-binaries: $*" >&2; }
die() { echo "kube-binaries: cannot provide a Kubernetes control plane: $*" >&2; exit 1; }

cache=${LIFEBOAT_CACHE:-${HOME:-/root}/.cache/lifeboat}/kube
export DEBIAN_FRONTEND=noninteractive
apt_quiet=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -qq)

command -v apt-cache >/dev/null && command -v apt-get >/dev/null ||
  die "no apt (it needs Debian's kubernetes source package, etcd-server and golang-go)"

# The source package's version, from the machine's binary package lists (kubernetes-client is
# built from it), so a cached build is found without deb-src entries or network.
source_version() {
  local show src ver
  show=$(apt-cache show --no-all-versions kubernetes-client 2>/dev/null) || return 1
  src=$(awk -F': ' '/^Source:/{print $2; exit}' <<<"$show")
  ver=$(awk -F': ' '/^Version:/{print $2; exit}' <<<"$show")
  if [[ $src =~ ^kubernetes\ \((.+)\)$ ]]; then echo "${BASH_REMATCH[1]}"
  elif [[ -n $ver ]]; then echo "$ver"
  else return 1; fi
}
version=$(source_version) ||
  die "apt knows no package kubernetes-client (Debian bookworm's kubernetes source package); run apt-get update on a Debian bookworm machine"
[[ $version == *really1.20.2* || $version == 1.20.* ]] ||
  log "note: Debian's kubernetes source is $version, not the v1.20.2 this was checked with"
bin=$cache/$version/bin

need_root() { [[ $(id -u) == 0 ]] || die "not root: $1 needs apt-get install (run as root, or set LIFEBOAT_KUBE_BIN to a folder with kube-apiserver and kube-controller-manager)"; }

ensure_etcd() {
  command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] && return 0
  need_root "etcd"
  log "apt-get install etcd-server"
  apt-get "${apt_quiet[@]}" install -y --no-install-recommends etcd-server >/dev/null 2>"$cache/apt.log" ||
    die "apt-get install etcd-server failed (see $cache/apt.log)"
}

complete() { [[ -x $1/kube-apiserver && -x $1/kube-controller-manager ]]; }

if complete "$bin"; then
  ensure_etcd
  echo "$bin"
  exit 0
fi
mkdir -p "$cache" 2>/dev/null || die "cannot create the cache folder $cache"

need_root "building kube-apiserver"
# One builder at a time; whoever waited finds the finished build.
exec 9>"$cache/.lock"
if ! flock -n 9; then
  log "another run is building; waiting for it"
  flock 9
fi
if complete "$bin"; then
  ensure_etcd
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-kube-build.XXXXXX")
partial=$(mktemp -d "$cache/.partial.XXXXXX")
buildlog=$cache/build-$version.log
trap 'rm -rf -- "$work" "$partial"' EXIT
: >"$buildlog"
t0=$(date +%s)

ensure_etcd
log "apt-get install golang-go dpkg-dev golang-github-modern-go-reflect2-dev (build tools)"
apt-get "${apt_quiet[@]}" install -y --no-install-recommends golang-go dpkg-dev make rsync \
  golang-github-modern-go-reflect2-dev >>"$buildlog" 2>&1 ||
  die "apt-get install of the build tools failed (see $buildlog)"

# deb-src entries: the machine's own if it has them, else derived from its deb entries into a
# private apt configuration (lists and caches in the work folder).
apt_src=()
if [[ -z $(apt-cache showsrc kubernetes 2>/dev/null) ]]; then
  parts=$work/apt/sources.list.d
  mkdir -p "$parts" "$work/apt/lists/partial"
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    sed -E 's/^Types:[[:space:]]+deb[[:space:]]*$/Types: deb-src/' "$f" >"$parts/$(basename "$f")"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] && sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' "$f" >>"$parts/derived.list"
  done
  shopt -u nullglob
  grep -qsE '^(Types: deb-src|deb-src )' "$parts"/* ||
    die "no deb-src entries derivable: no 'Types: deb' in /etc/apt/sources.list.d/*.sources nor 'deb' lines in /etc/apt/sources.list"
  apt_src=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$parts"
    -o "Dir::State::Lists=$work/apt/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  log "apt-get update (deb-src entries derived from the machine's deb entries, private lists)"
  apt-get "${apt_quiet[@]}" "${apt_src[@]}" update >>"$buildlog" 2>&1 ||
    die "apt-get update of the derived deb-src entries failed (see $buildlog)"
fi

log "apt-get source kubernetes=$version"
mkdir -p "$work/debsrc"
(cd "$work/debsrc" && apt-get "${apt_quiet[@]}" "${apt_src[@]}" -o APT::Sandbox::User=root \
  source --download-only "kubernetes=$version") >>"$buildlog" 2>&1 ||
  die "apt-get source kubernetes=$version failed (see $buildlog)"
dpkg-source -x "$work"/debsrc/kubernetes_*.dsc "$work/src" >>"$buildlog" 2>&1 ||
  die "dpkg-source -x of kubernetes $version failed (see $buildlog)"

cd "$work/src"
r=vendor/github.com/modern-go/reflect2
debian_r=/usr/share/gocode/src/github.com/modern-go/reflect2
[[ -f $debian_r/go_above_118.go ]] || die "$debian_r has no go_above_118.go: not reflect2 1.0.2"
rm -rf "$r" && mkdir -p "$r" && cp "$debian_r"/*.go "$debian_r"/*.s "$r/"

export PATH=/usr/lib/go/bin:$PATH GOCACHE=$work/gocache GOPATH=$work/gopath CGO_ENABLED=0
unset GOFLAGS GO111MODULE
log "building kube-apiserver and kube-controller-manager with $(go version | cut -d' ' -f3) (5-7 min on 2 cores; log $buildlog)"
tb=$(date +%s)
# In its own process group, so that an interrupted run stops the whole build (make, go, compile).
setsid nice -n 19 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOLDFLAGS="-s -w" >>"$buildlog" 2>&1 &
make_pid=$!
trap 'kill -TERM -- "-$make_pid" 2>/dev/null; wait "$make_pid"; exit 143' TERM INT HUP
wait "$make_pid" || die "make WHAT='cmd/kube-apiserver cmd/kube-controller-manager' failed (see $buildlog)"
trap - TERM INT HUP
out=_output/local/bin/linux/$(go env GOARCH)
mkdir -p "$partial/bin"
cp "$out/kube-apiserver" "$out/kube-controller-manager" "$partial/bin/"
"$partial/bin/kube-apiserver" --version >>"$buildlog" 2>&1 || die "the built kube-apiserver does not run (see $buildlog)"
cat >"$partial/BUILD-INFO" <<EOF
source: Debian kubernetes $version (apt-get source), reflect2 replaced by $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)
go: $(go version)
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - tb ))s
$("$partial/bin/kube-apiserver" --version)
EOF
chmod 755 "$partial"
rm -rf -- "$cache/$version"
mv -T "$partial" "$cache/$version"
log "built in $(( $(date +%s) - tb ))s ($(( $(date +%s) - t0 ))s with downloads): $bin"
echo "$bin"
