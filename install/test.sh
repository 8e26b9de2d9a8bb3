#!/usr/bin/env bash
# The project's test command: installs dependencies, builds, and runs every
# test — unit tests, the same unit tests under ASan+UBSan, and the system
# suites against a real containerd. Run as root from the repository root (or
# anywhere: it finds its way). Exit status 0 only when everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}

./install/install-deps.sh

echo "== build (release + crash points, warnings as errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_CRASH_POINTS=ON >/dev/null
cmake --build build -j "$JOBS"

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$JOBS"

echo "== unit tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L unit --output-on-failure -j "$JOBS"

echo "== all tests (unit + system suites against a real containerd)"
ctest --test-dir build --output-on-failure --timeout 900
