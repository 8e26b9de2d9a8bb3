#!/usr/bin/env bash
# fuzz.sh [SECONDS_PER_TARGET] [BUILD_DIR]
#
# Runs every libFuzzer target of tests/fuzz for SECONDS_PER_TARGET (default
# 600) each, from its seed corpus, keeping what it finds in
# BUILD_DIR/tests/fuzz/found/<target> (so a later run starts from there),
# and prints executions and crashes per target. BUILD_DIR (default
# build-fuzz) is made if missing:
#   CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja \
#     -DCMAKE_BUILD_TYPE=Debug -DSNAPLEDGER_SANITIZE=ON -DSNAPLEDGER_FUZZ=ON
# A crash leaves its input as crash-* in the current directory, and the
# script exits 1; reproduce with `BUILD_DIR/tests/fuzz/<target> crash-…`.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
BUILD=${2:-build-fuzz}
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
    -DSNAPLEDGER_SANITIZE=ON -DSNAPLEDGER_FUZZ=ON >/dev/null || exit 2
fi
cmake --build "$BUILD" -j "$(nproc)" --target fuzz_targets || exit 2

rc=0
printf '%-16s %12s %8s %s\n' TARGET EXECUTIONS CORPUS RESULT
for src in tests/fuzz/fuzz_*.cc; do
  t=$(basename "$src" .cc)
  found=$BUILD/tests/fuzz/found/$t
  mkdir -p "$found"
  log=$(mktemp)
  "$BUILD/tests/fuzz/$t" -max_total_time="$SECS" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 "$found" "tests/fuzz/corpus/$t" \
    >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(find "$found" -type f | wc -l)
  if ((status == 0)); then
    result=ok
  else
    result="CRASH (exit $status): $(grep -m1 -E 'ERROR|SUMMARY|deadly' "$log")"
    rc=1
  fi
  printf '%-16s %12s %8s %s\n' "$t" "${execs:-?}" "$corpus" "$result"
  rm -f "$log"
done
exit $rc
