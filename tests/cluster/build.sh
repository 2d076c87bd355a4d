#!/usr/bin/env bash
# Build (once) the binaries of the test control plane from the pinned Go
# modules in tests/cluster/go/{kubernetes,etcd,kwok} and cache them in
#   ${JOBPULSE_CLUSTER_CACHE:-~/.cache/jobpulse/cluster}/<version-key>/bin
# Idempotent: only missing binaries are built; when all are present it
# returns at once. Progress goes to stderr; the last stdout line is the bin dir.
#
#   tests/cluster/build.sh            # build what is missing, print bin dir
#   tests/cluster/build.sh --print    # print the bin dir, build nothing
#
# Uses the default GOMODCACHE / GOCACHE (kept between runs). A cold build of
# kube-apiserver + kube-controller-manager + kube-scheduler takes a long time
# on 2 cores; set JOBPULSE_BUILD_P to change `go build -p` (default: nproc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gomods="$here/go"

# The pinned versions are read from the wrapper modules' go.mod files.
req_version() { # <go.mod> <module path>
  awk -v m="$2" '$1 == "require" && $2 == m {print $3; exit}
                 $1 == m && $2 ~ /^v/ {print $2; exit}' "$1"
}
K8S_VERSION="$(req_version "$gomods/kubernetes/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(req_version "$gomods/etcd/go.mod" go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(req_version "$gomods/kwok/go.mod" sigs.k8s.io/kwok)"
for v in K8S_VERSION ETCD_VERSION KWOK_VERSION; do
  [[ -n "${!v}" ]] || { echo "build.sh: cannot read $v from go.mod" >&2; exit 2; }
done

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
cache_root="${JOBPULSE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobpulse/cluster}"
bin="$cache_root/$key/bin"

kube_bins=(kube-apiserver kube-controller-manager kube-scheduler)
all_bins=("${kube_bins[@]}" etcd kwok)

all_present() {
  local b
  for b in "${all_bins[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if [[ "${1:-}" == "--print" ]] || all_present; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 2; }
mkdir -p "$bin"

# One builder at a time (e.g. two test sessions starting together).
exec 9>"$cache_root/$key/.build.lock"
if command -v flock >/dev/null && ! flock -n 9; then
  echo "build.sh: another build is running; waiting for its lock..." >&2
  flock 9
fi

log() { echo "build.sh: $*" >&2; }
jobs_p="${JOBPULSE_BUILD_P:-$(nproc 2>/dev/null || echo 2)}"
export CGO_ENABLED=0
common=(-mod=readonly -trimpath -tags selinux,notest -p "$jobs_p")
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
tmp="$cache_root/$key/.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"

# Moves freshly built binaries into place (rename: never half-written).
install_bins() { local b; for b in "$@"; do mv -f "$tmp/$b" "$bin/$b"; done; }

# --- etcd ---
if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  start=$SECONDS
  (cd "$gomods/etcd" && go build "${common[@]}" -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  install_bins etcd
  log "etcd built in $((SECONDS - start))s"
fi

# --- kwok ---
if [[ ! -x "$bin/kwok" ]]; then
  log "building kwok $KWOK_VERSION"
  start=$SECONDS
  (cd "$gomods/kwok" && go build "${common[@]}" \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}" \
    -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  install_bins kwok
  log "kwok built in $((SECONDS - start))s"
fi

# --- kubernetes: only the missing ones, in one go build (shared packages) ---
missing=()
for b in "${kube_bins[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if ((${#missing[@]})); then
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
  done
  pkgs=(); for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "building ${missing[*]} $K8S_VERSION (slow when cold)"
  start=$SECONDS
  (cd "$gomods/kubernetes" && go build "${common[@]}" -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  install_bins "${missing[@]}"
  log "kubernetes built in $((SECONDS - start))s"
fi

all_present || { log "some binaries are still missing in $bin"; exit 1; }
echo "$bin"
