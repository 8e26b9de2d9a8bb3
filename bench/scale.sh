#!/usr/bin/env bash
# scale.sh — snapledgerd at scale: idle CPU, RSS, restart time, List time and
# RSS growth under churn, on a root filled to N snapshots, with the containerd
# watcher connected to a private containerd. See bench/README.md, "scale".
#
#   bench/scale.sh [options] BUILD_DIR
#     --count N        snapshots in the fill (default 100000)
#     --churn K        operations of churn after warm-up (default 1000000)
#     --idle SEC       idle CPU window (default 30)
#     --restarts R     restarts timed (default 3)
#     --settle SEC     wait after the first start before measuring idle CPU
#                      (default 60: the watcher's listing, the owner
#                      tracker's first pass, the start-up reconciliation)
#     --containers C   containers (and --leases L) in containerd (1000, 100)
#     --no-containerd  no containerd, no watcher
#     --async          [ledger] durability = "async" (churn runs faster;
#                      memory does not depend on it)
#     --from DIR       copy a filled root (DIR/root, DIR/containerd) instead
#                      of filling; --save DIR keeps the fill there
#     --keep           keep the temporary directory
set -uo pipefail

COUNT=100000 CHURN=1000000 IDLE=30 SETTLE=60 RESTARTS=3 CONTAINERS=1000 LEASES=100
WITH_CONTAINERD=1 DURABILITY=sync FROM= SAVE= KEEP=0 DEPTH=8 ACTIVES=2
while [[ $# -gt 1 ]]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --churn) CHURN=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --restarts) RESTARTS=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --containers) CONTAINERS=$2; shift 2 ;;
    --leases) LEASES=$2; shift 2 ;;
    --no-containerd) WITH_CONTAINERD=0; shift ;;
    --async) DURABILITY=async; shift ;;
    --from) FROM=$2; shift 2 ;;
    --save) SAVE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=$(readlink -f "${1:?usage: $0 [options] BUILD_DIR}")
SNAPLEDGERD=$BUILD/plugin/server/snapledgerd
SNAPSCALE=$BUILD/bench/snapscale
SNAPBENCH=$BUILD/bench/snapbench
for b in "$SNAPLEDGERD" "$SNAPSCALE" "$SNAPBENCH"; do
  [[ -x $b ]] || { echo "missing $b (build snapledgerd snapscale snapbench)" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/snapscale.XXXXXX)
ROOT=$TMP/root SOCK=$TMP/sl.sock LOG=$TMP/snapledgerd.log
CTRD_DIR=$TMP/containerd CTRD_SOCK=$CTRD_DIR/containerd.sock
CTRD_PID= SL_PID=
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  [[ -n $SL_PID ]] && kill -TERM "$SL_PID" 2>/dev/null && wait "$SL_PID" 2>/dev/null
  [[ -n $CTRD_PID ]] && kill -TERM "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null
  if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

start_containerd() {
  mkdir -p "$CTRD_DIR"
  # No proxy plugin: containerd's GC must not walk (and empty) the filled
  # root. The watcher only reads containerd; nothing here needs the proxy.
  cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[metrics]
  address = ""
EOF
  containerd --config "$CTRD_DIR/config.toml" >"$CTRD_DIR/log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 300); do
    ctr -a "$CTRD_SOCK" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "containerd did not start; log:" >&2; tail "$CTRD_DIR/log" >&2; exit 1
}

cat >"$TMP/config.toml" <<EOF
root = "$ROOT"
address = "$SOCK"
log_level = "info"
$([[ $WITH_CONTAINERD == 1 ]] && echo "containerd_address = \"$CTRD_SOCK\"")
[ledger]
durability = "$DURABILITY"
EOF

if [[ -n $FROM ]]; then
  log "copying the fill from $FROM"
  cp -a "$FROM/root" "$ROOT"
  [[ $WITH_CONTAINERD == 1 ]] && cp -a "$FROM/containerd" "$CTRD_DIR"
  [[ $WITH_CONTAINERD == 1 ]] && start_containerd
else
  log "filling $ROOT with $COUNT snapshots"
  "$SNAPSCALE" fill --root "$ROOT" --count "$COUNT" --depth $DEPTH \
    --actives $ACTIVES >"$TMP/fill.json" || exit 1
  cat "$TMP/fill.json"
  if [[ $WITH_CONTAINERD == 1 ]]; then
    start_containerd
    "$SNAPSCALE" containers --containerd "$CTRD_SOCK" --count "$CONTAINERS" \
      --leases "$LEASES" --depth $DEPTH --actives $ACTIVES || exit 1
  fi
  if [[ -n $SAVE ]]; then
    mkdir -p "$SAVE"
    [[ -n $CTRD_PID ]] && { kill -TERM "$CTRD_PID"; wait "$CTRD_PID"; CTRD_PID=; }
    rm -rf "${SAVE:?}/root" "${SAVE:?}/containerd"
    cp -a "$ROOT" "$SAVE/root"
    [[ $WITH_CONTAINERD == 1 ]] && cp -a "$CTRD_DIR" "$SAVE/containerd" && start_containerd
  fi
fi

# start_daemon: starts snapledgerd; START_MS: ms until the socket answers.
START_MS=
start_daemon() {
  local t0 t1
  t0=$(date +%s%N)
  "$SNAPLEDGERD" --config "$TMP/config.toml" >>"$LOG" 2>&1 &
  SL_PID=$!
  "$SNAPSCALE" wait --address "$SOCK" --timeout 300 >/dev/null || {
    tail "$LOG" >&2; exit 1; }
  t1=$(date +%s%N)
  START_MS=$(((t1 - t0) / 1000000))
}
stop_daemon() {
  kill -TERM "$SL_PID"; wait "$SL_PID"; SL_PID=
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SL_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SL_PID/stat"; }

start_daemon; first_ms=$START_MS
log "first start (with the ledger as the fill left it): $first_ms ms"
sleep "$SETTLE"  # the watcher's listing, the tracker's first pass, reconcile
rss_settled=$(rss_kib)
hz=$(getconf CLK_TCK)
c0=$(cpu_ticks); sleep "$IDLE"; c1=$(cpu_ticks)
idle_pct=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v w="$IDLE" \
  'BEGIN {printf "%.2f", 100 * d / hz / w}')
log "idle CPU over ${IDLE}s: $idle_pct% of a core; RSS $((rss_settled / 1024)) MiB"
lists=()
for _ in 1 2 3; do
  lists+=("$("$SNAPSCALE" list --address "$SOCK" | sed 's/.*"seconds": \([0-9.]*\).*/\1/')")
done
log "full List: ${lists[*]} s"

restarts=()
for _ in $(seq "$RESTARTS"); do
  stop_daemon
  start_daemon
  restarts+=("$START_MS")
done
log "restart until the socket answers: ${restarts[*]} ms"
sleep 10
rss_restarted=$(rss_kib)

churn_json=null rss_warm=null rss_churned=null growth=null
if [[ $CHURN -gt 0 ]]; then
  # snapbench chains of depth 3: 13 operations each, 4 clients.
  warm=$((CHURN / 10))
  run_churn() { # OPS
    local chains=$(($1 / 13 / 4 + 1))
    "$SNAPBENCH" --address "unix://$SOCK" --clients 4 --chains "$chains" \
      --depth 3 --json 2>/dev/null
  }
  log "warm-up churn: $warm operations"
  run_churn "$warm" >"$TMP/warm.json"
  rss_warm=$(rss_kib)
  log "churn: $CHURN operations"
  run_churn "$CHURN" >"$TMP/churn.json"
  rss_churned=$(rss_kib)
  growth=$(awk -v a="$rss_warm" -v b="$rss_churned" 'BEGIN {printf "%.2f", 100 * (b - a) / a}')
  churn_json=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"ops": d["total_ops"], "errors": d["total_errors"], "ops_per_s": round(d["total_ops_per_s"]), "leaked": d["leaked_snapshots"]}))' "$TMP/churn.json")
  log "RSS after warm-up $((rss_warm / 1024)) MiB, after churn $((rss_churned / 1024)) MiB ($growth%)"
fi

cat <<EOF
{ "count": $COUNT, "containerd": $WITH_CONTAINERD, "containers": $CONTAINERS,
  "durability": "$DURABILITY",
  "first_start_ms": $first_ms,
  "idle_cpu_percent": $idle_pct, "idle_window_s": $IDLE,
  "rss_mib": $((rss_settled / 1024)), "rss_after_restart_mib": $((rss_restarted / 1024)),
  "list_s": [$(IFS=,; echo "${lists[*]}")],
  "restart_ms": [$(IFS=,; echo "${restarts[*]}")],
  "churn": $churn_json,
  "rss_warm_kib": $rss_warm, "rss_churned_kib": $rss_churned,
  "rss_growth_percent": $growth }
EOF
