#!/usr/bin/env bash
# hostile_test.sh SNAPLEDGERD SNAPLEDGER SNAPBENCH
#
# Hostile HTTP/2 clients (issue 15, findings 5 and 6), by raw frames
# (h2_flood.py, python3):
#  1. 20 snapshots with 56 KiB of labels each (a List answer of ~1.1 MB), then
#     2,000 List streams whose client never reads (flow-control window 0),
#     on 20 connections, held 10 s. Meanwhile the daemon's thread count
#     stays bounded (no thread per stream: List is a callback stream, and
#     at most kMaxOpenListStreams are open; the rest answer
#     ResourceExhausted), its RSS stays bounded, and Prepares are served (a
#     small snapbench run). After the streams are gone and the doctor's
#     malloc_trim ran, RSS is back near where it started.
#  2. A CONTINUATION flood: HEADERS without END_HEADERS, then 32 MiB of
#     CONTINUATION frames. The daemon survives, serves, and its RSS after
#     the trim is bounded.
# Bounds are structural (thread counts, megabytes), never timings. Prints
# every figure. HOSTILE_KEEP=1 keeps the temp dir.
set -uo pipefail
SNAPLEDGERD=$1 SNAPLEDGER=$2 SNAPBENCH=$3
FLOOD=$(dirname "$(readlink -f "$0")")/h2_flood.py
T=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-hostile.XXXXXX") || exit 1
PID=
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [[ -n ${HOSTILE_KEEP:-} ]] || rm -rf "$T"
}
trap cleanup EXIT
FAILED=0
pass() { printf 'PASS: %s\n' "$1"; }
fail() { printf 'FAIL: %s\n' "$1"; FAILED=1; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$PID/status"; }
rss_mb() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$PID/status"; }
bench() {
  "$SNAPBENCH" --address "unix://$T/s.sock" --clients 2 --chains 4 \
    --depth 3 --timeout 20 >"$T/bench.out" 2>&1
}

"$SNAPLEDGERD" --root "$T/root" --address "$T/s.sock" --backend native \
  --log-level info >"$T/log" 2>&1 &
PID=$!
for _ in $(seq 100); do [[ -S $T/s.sock ]] && break; sleep 0.1; done
[[ -S $T/s.sock ]] || { cat "$T/log"; echo "FAIL: daemon did not start"; exit 1; }
bench || { cat "$T/bench.out"; fail "snapbench before the floods"; }
python3 "$FLOOD" prepare "$T/s.sock" 20 $((56 << 10))
n=$("$SNAPLEDGER" --address "$T/s-admin.sock" ls --json | grep -o '"hostile-[0-9]*"' | sort -u | wc -l)
((n == 20)) && pass "20 snapshots with large labels prepared" ||
  fail "prepared $n of 20 snapshots with large labels"
sleep 12  # one trim interval: the baseline after the warm-up
threads0=$(threads) rss0=$(rss_mb)
echo "baseline: $threads0 threads, RSS $rss0 MB"

# --- 1. never-read List streams -------------------------------------------
python3 "$FLOOD" lists "$T/s.sock" 2000 10 &
FPID=$!
sleep 5
threads1=$(threads) rss1=$(rss_mb)
echo "2,000 never-read List streams held: $threads1 threads, RSS $rss1 MB"
bench_ok=0
bench && bench_ok=1
# A figure, not a bound (timings swing with the machine's load).
echo "meanwhile (snapbench prepare line: count errors ops/s p50 p90 p99 max ms): $(grep '^prepare ' "$T/bench.out")"
if ((bench_ok)); then pass "Prepares are served while 2,000 List streams are held"
else cat "$T/bench.out"; fail "no service while List streams are held"; fi
wait "$FPID"
((threads1 < threads0 + 64)) && pass "threads bounded ($threads0 -> $threads1)" ||
  fail "threads grew with the streams ($threads0 -> $threads1)"
((rss1 < rss0 + 256)) && pass "RSS bounded while held ($rss0 -> $rss1 MB)" ||
  fail "RSS grew with the streams ($rss0 -> $rss1 MB)"
refused=$(grep -c "too many List streams" "$T/log")
echo "List streams refused (ResourceExhausted): $refused"
((refused > 0)) && pass "List streams beyond the limit were refused" ||
  fail "no List stream was refused"
sleep 12  # streams gone; the doctor trims within 10 s
rss2=$(rss_mb)
echo "after cancel and trim: RSS $rss2 MB"
((rss2 < rss0 + 64)) && pass "RSS returned after the streams ($rss2 MB)" ||
  fail "RSS stays up after the streams ($rss0 -> $rss2 MB)"

# --- 2. CONTINUATION flood --------------------------------------------------
python3 "$FLOOD" continuation "$T/s.sock" 32
sleep 1
rss3=$(rss_mb)
echo "right after a 32 MiB CONTINUATION flood: RSS $rss3 MB"
if kill -0 "$PID" 2>/dev/null && bench; then
  pass "the daemon survives the CONTINUATION flood and serves"
else
  cat "$T/bench.out"; fail "the daemon died or stopped serving after the flood"
fi
sleep 12
rss4=$(rss_mb)
echo "after the flood and trim: RSS $rss4 MB"
((rss4 < rss0 + 64)) && pass "RSS returned after the flood ($rss4 MB)" ||
  fail "RSS stays up after the flood ($rss0 -> $rss4 MB)"

((FAILED)) && { echo "--- daemon log"; tail -40 "$T/log"; }
exit $FAILED
