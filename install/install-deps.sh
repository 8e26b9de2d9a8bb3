#!/usr/bin/env bash
# Installs everything snapledger needs to build, test and run, from Debian's
# packages only (Debian 12 "bookworm"). Idempotent; run as root.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # gRPC + protobuf: the wire protocol (containerd's Snapshots API)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # Abseil (Status/StatusOr, Mutex, Cleanup), RE2 (containerd's ~= filters)
  libabsl-dev libre2-dev
  # the ledger
  librocksdb-dev
  # logging, flags, config, JSON
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  # Boost.Intrusive (removal queue schedule)
  libboost-dev
  # Prometheus metrics (/metrics), systemd readiness and watchdog (sd_notify)
  prometheus-cpp-dev libsystemd-dev
  # the .deb (cpack -G DEB): dpkg-shlibdeps derives its Depends, and its
  # test checks them with dpkg-checkbuilddeps (also pulled in by
  # build-essential; named for what needs it)
  dpkg-dev
  # tests
  libgtest-dev libgmock-dev
  # static checks: only Clang checks the ABSL_GUARDED_BY annotations
  # (-Wthread-safety), its runtime library carries ThreadSanitizer, and
  # clang-tidy runs the curated .clang-tidy checks (test.sh's Clang stages)
  clang-14 libclang-rt-14-dev clang-tidy-14
  # integration tests and the demo: a real containerd and runc, and a
  # static busybox to build a test image from
  containerd runc busybox-static iproute2 util-linux procps jq python3
  # metrics tests: scrape with curl, validate with promtool (from prometheus)
  curl prometheus
  # Go test tooling only (tests/go, never part of the daemon): containerd's
  # snapshotter conformance suite and snapshotter-serve, built offline in
  # GOPATH mode from these packaged containerd 1.6 sources
  golang-go golang-github-containerd-containerd-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps.sh: done"
