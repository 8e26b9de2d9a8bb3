#!/usr/bin/env bash
# metrics_scrape.sh — what a Prometheus scrape of snapledgerd costs at scale:
# the daemon's CPU time and the wall time per GET /metrics, on a root filled
# to N snapshots and, in the same sitting, on one of 100 (a scrape must not
# depend on the ledger's size: it reads counts and indexes, never the
# records). See bench/README.md, "metrics".
#
#   bench/metrics_scrape.sh [options] BUILD_DIR
#     --count N     snapshots in the big fill (default 100000)
#     --scrapes S   scrapes per round (default 200)
#     --rounds R    alternating rounds big/small (default 3)
#     --from DIR    copy a filled root from DIR/root (as bench/scale.sh
#                   --save DIR leaves it) instead of filling
#
# Prints one line per round and a summary; CPU time per scrape is the figure
# that does not swing with the machine's load (utime + stime of snapledgerd
# from /proc, over S sequential curl scrapes).
set -uo pipefail

COUNT=100000 SCRAPES=200 ROUNDS=3 FROM=
while [[ $# -gt 1 ]]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --scrapes) SCRAPES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --from) FROM=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=$(readlink -f "${1:?usage: $0 [options] BUILD_DIR}")
SNAPLEDGERD=$BUILD/plugin/server/snapledgerd
SNAPSCALE=$BUILD/bench/snapscale
for b in "$SNAPLEDGERD" "$SNAPSCALE"; do
  [[ -x $b ]] || { echo "missing $b (build snapledgerd snapscale)" >&2; exit 2; }
done
command -v curl >/dev/null || { echo "missing curl" >&2; exit 2; }

TMP=$(mktemp -d /tmp/metrics-scrape.XXXXXX)
SL_PID=
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  [[ -n $SL_PID ]] && kill -TERM "$SL_PID" 2>/dev/null && wait "$SL_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fill() { # NAME COUNT
  if [[ $1 == big && -n $FROM ]]; then
    log "copying the fill from $FROM"
    cp -a "$FROM/root" "$TMP/big"
    return
  fi
  log "filling $TMP/$1 with $2 snapshots"
  "$SNAPSCALE" fill --root "$TMP/$1" --count "$2" >"$TMP/$1.fill.json" || exit 1
}

# cpu_ms PID : the process's user + system CPU time so far, in ms.
cpu_ms() {
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"
}
now_ms() { date +%s%3N; }

# round NAME : start snapledgerd on the root, S scrapes, stop; prints
# "NAME records cpu_ms_per_scrape wall_ms_per_scrape bytes families".
round() {
  local name=$1 sock=$TMP/$1.sock log=$TMP/$1.log url c0 c1 t0 t1 i
  cat >"$TMP/$name.toml" <<EOF
root = "$TMP/$name"
address = "$sock"
reconcile_interval = "0s"
metrics_address = "127.0.0.1:0"
[ledger]
durability = "async"
EOF
  "$SNAPLEDGERD" --config "$TMP/$name.toml" >"$log" 2>&1 &
  SL_PID=$!
  for _ in $(seq 600); do [[ -S $sock ]] && break; sleep 0.1; done
  url=$(sed -nE 's#.*metrics on (http://[^ ]+/metrics)$#\1#p' "$log" | tail -n1)
  [[ -n $url ]] || { echo "no metrics URL in $log" >&2; tail "$log" >&2; exit 1; }
  curl -fsS "$url" >"$TMP/$name.scrape" || exit 1   # warm-up
  c0=$(cpu_ms "$SL_PID") t0=$(now_ms)
  for ((i = 0; i < SCRAPES; i++)); do curl -fsS -o /dev/null "$url" || exit 1; done
  t1=$(now_ms) c1=$(cpu_ms "$SL_PID")
  kill -TERM "$SL_PID"; wait "$SL_PID"; SL_PID=
  local records
  records=$(awk '/^snapledger_snapshots\{/ {n += $2} END {print n + 0}' "$TMP/$name.scrape")
  awk -v n="$name" -v r="$records" -v c="$((c1 - c0))" -v t="$((t1 - t0))" -v s="$SCRAPES" \
      -v b="$(wc -c <"$TMP/$name.scrape")" -v f="$(grep -c '^# TYPE snapledger_' "$TMP/$name.scrape")" \
      'BEGIN {printf "%s records=%d cpu_ms_per_scrape=%.3f wall_ms_per_scrape=%.2f bytes=%d families=%d\n", n, r, c / s, t / s, b, f}'
}

fill big "$COUNT"
fill small 100
for ((r = 1; r <= ROUNDS; r++)); do
  round big
  round small
done | tee "$TMP/rounds.txt"
echo "summary (median of $ROUNDS rounds, $SCRAPES scrapes each):"
for name in big small; do
  grep "^$name " "$TMP/rounds.txt" | sort -t= -k3 -n |
    awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m {print "  " $0}'
done
