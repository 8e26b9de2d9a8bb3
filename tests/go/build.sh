#!/usr/bin/env bash
# Builds the Go test tooling offline into OUTDIR:
#   OUTDIR/snapshotter-serve   containerd's native/overlayfs snapshotter over gRPC
#   OUTDIR/snapshotter-suite   containerd's snapshotter conformance suite,
#                              driven against a proxy snapshotter daemon
#   OUTDIR/remote-snapshot-check  the remote-snapshot (stargz) protocol,
#                              driven through a real containerd
# Go is test tooling only; nothing here is part of snapledgerd.
#
# Offline: GOPATH mode (GO111MODULE=off) over Debian's Go sources in
# /usr/share/gocode (packages golang-go and golang-github-containerd-
# containerd-dev, see install/install-deps.sh). GOCODE overrides that path,
# GO the go binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() {
  echo "tests/go/build.sh: $*" >&2
  exit 1
}

[[ $# -eq 1 ]] || die "usage: build.sh OUTDIR"
out=$1
gocode=${GOCODE:-/usr/share/gocode}

# GO names the toolchain; default: go on PATH, else Debian's /usr/lib/go.
go=${GO:-$(command -v go || true)}
if [[ -z $go && -x /usr/lib/go/bin/go ]]; then go=/usr/lib/go/bin/go; fi
[[ -n $go && -x $go ]] ||
  die "no Go toolchain (${GO:-go not on PATH}): apt-get install golang-go (or run install/install-deps.sh)"

for pkg in snapshots/testsuite snapshots/proxy snapshots/native snapshots/overlay contrib/snapshotservice; do
  [[ -d $gocode/src/github.com/containerd/containerd/$pkg ]] ||
    die "containerd's Go sources are missing ($gocode/src/github.com/containerd/containerd/$pkg): apt-get install golang-github-containerd-containerd-dev (or run install/install-deps.sh)"
done
[[ -d $gocode/src/google.golang.org/grpc ]] ||
  die "grpc-go sources are missing ($gocode/src/google.golang.org/grpc): apt-get install golang-github-containerd-containerd-dev"

mkdir -p "$out"
out=$(cd "$out" && pwd)

# GOPATH mode, no network, nothing from the caller's Go settings that would
# switch modes or reach for a proxy.
export GO111MODULE=off GOPATH=$gocode GOFLAGS= GOPROXY=off GONOSUMDB= GOWORK=off
if [[ -z ${GOCACHE:-} && -z ${XDG_CACHE_HOME:-} && -z ${HOME:-} ]]; then
  export GOCACHE=$out/.gocache
fi

echo "tests/go/build.sh: $("$go" version), sources $gocode, into $out"
cd "$here/snapshotter-serve"
"$go" build -o "$out/snapshotter-serve.tmp" . ||
  die "building snapshotter-serve failed"
cd "$here/snapshotter-suite"
"$go" test -c -o "$out/snapshotter-suite.tmp" . ||
  die "building snapshotter-suite failed"
cd "$here/remote-snapshot-check"
"$go" build -o "$out/remote-snapshot-check.tmp" . ||
  die "building remote-snapshot-check failed"
# Replace the binaries only when all built: never a half-updated set.
for tool in snapshotter-serve snapshotter-suite remote-snapshot-check; do
  mv -f "$out/$tool.tmp" "$out/$tool"
done
echo "tests/go/build.sh: built $out/snapshotter-serve $out/snapshotter-suite $out/remote-snapshot-check"
