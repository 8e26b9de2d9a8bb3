#!/usr/bin/env bash
# The project's test command: installs dependencies, builds, and runs every
# check — unit tests, the same unit tests under ASan+UBSan and under TSan,
# bounded libFuzzer runs,
# Clang's thread-safety analysis and clang-tidy, and the system suites
# against a real containerd. Run as root from the repository root (or
# anywhere: it finds its way). Exit status 0 only when everything passed;
# otherwise the stage that failed is named last, after each stage's time.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}

STAGE=""
STAGE_START=$SECONDS
TIMES=()
finish_stage() {
  [[ -n $STAGE ]] && TIMES+=("$(printf '%5ds  %s' $((SECONDS - STAGE_START)) "$STAGE")")
  STAGE=""
}
stage() {
  finish_stage
  STAGE=$1
  STAGE_START=$SECONDS
  echo "== $STAGE"
}
report() {
  local rc=$?
  local failed=$STAGE
  finish_stage
  echo "== stage times"
  printf '%s\n' "${TIMES[@]}"
  if ((rc != 0)); then
    echo "FAILED: ${failed:-setup} (exit status $rc)" >&2
  else
    echo "all stages passed in $((SECONDS))s"
  fi
}
trap report EXIT

stage "dependencies"
./install/install-deps.sh

stage "build (GCC, release + crash points, warnings as errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_CRASH_POINTS=ON >/dev/null
cmake --build build -j "$JOBS"

stage "build (GCC, ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$JOBS" --target unit_tests

stage "unit tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L unit --output-on-failure -j "$JOBS"

# One Clang build, two checks: compiling it is the thread-safety analysis
# (-Wthread-safety, warnings as errors), and its unit tests run under TSan.
# -O1 with line tables only: TSan wants optimisation, the reports want lines,
# and full debug info would only slow the compile.
stage "build (Clang: -Wthread-safety, TSan)"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -G Ninja \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_TSAN=ON >/dev/null
cmake --build build-tsan -j "$JOBS" --target unit_tests

# Debian builds none of our dependencies with TSan: tests/tsan_absl_mutex.cc
# (linked into the TSan test binaries) makes absl::Mutex's edges visible, and
# ignore_noninstrumented_modules keeps TSan out of the other shared libraries'
# own synchronisation (tests/tsan.supp says why, and suppresses nothing).
stage "unit tests (TSan)"
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$PWD/tests/tsan.supp" \
  ctest --test-dir build-tsan -L unit --output-on-failure -j "$JOBS"

# The curated checks of .clang-tidy, over the project's own production
# sources (not tests, not the generated protobuf code), with the Clang
# build's compile commands.
stage "clang-tidy"
run-clang-tidy-14 -quiet -p build-tsan -j "$JOBS" \
  -clang-tidy-binary clang-tidy-14 \
  "^$PWD/(plugin|store|cli)/(?!.*_test\.cc\$).*\.cc\$" >build-tsan/clang-tidy.log 2>&1 ||
  { grep -v '^clang-tidy-14 ' build-tsan/clang-tidy.log; false; }

# libFuzzer targets (tests/fuzz), instrumented with ASan+UBSan, each run for
# a bounded number of executions from its seed corpus; bench/fuzz.sh runs
# them for longer.
stage "build (Clang: libFuzzer + ASan/UBSan; fuzz targets only)"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DSNAPLEDGER_WERROR=ON -DSNAPLEDGER_SANITIZE=ON -DSNAPLEDGER_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$JOBS" --target fuzz_targets

stage "fuzzing (bounded runs)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$JOBS"

stage "all tests (unit + system suites against a real containerd)"
ctest --test-dir build --output-on-failure --timeout 900
