#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through traps / wait_for
# compare.sh SNAPLEDGERD SNAPBENCH [ROUNDS]
#
# snapledger vs containerd's built-in snapshotters, in one sitting: two pairs,
# each the same snapledgerd backend against the containerd snapshotter it
# implements — native against `native`, overlayfs against `overlayfs`.
# Uses tests/integration/lib.sh: a private containerd 1.6 (private mount+pid
# namespace, everything under one temp dir, stopped and deleted by lib.sh's
# EXIT trap) with snapledgerd registered as proxy snapshotter `snapledger`.
#
# Configurations, each run ROUNDS times (default 3), rounds alternating the
# order (even rounds in the order below, odd rounds reversed) to cancel drift;
# each pair's two members always run back to back:
#   native pair (CMP_KIND native or both):
#   ctrd-native        snapbench --containerd --snapshotter native
#   ctrd-sl-native     snapbench --containerd --snapshotter snapledger,
#                      snapledgerd --backend native
#   direct-sync        snapbench straight at snapledgerd's socket (native
#                      backend, default config: ledger durability "sync")
#   direct-goproxy     snapbench straight at tests/go/snapshotter-serve
#                      -type native: containerd's own native snapshotter
#                      served over gRPC (bolt metadata, synced per
#                      transaction: the same durability as direct-sync)
#   direct-async       the same as direct-sync against snapledgerd --config
#                      with [ledger] durability = "async" (what fsync costs)
#   overlayfs pair (CMP_KIND overlayfs or both):
#   ctrd-overlayfs     snapbench --containerd --snapshotter overlayfs
#   ctrd-sl-overlayfs  snapbench --containerd --snapshotter snapledger,
#                      snapledgerd --backend overlayfs
#   direct-ovl-sync    snapbench straight at snapledgerd --backend overlayfs
#   direct-goproxy-ovl direct-goproxy with -type overlayfs
#   reference configurations (only when named in CMP_CONFIGS):
#   ctrd-goproxy       snapbench --containerd --snapshotter goproxy: the same
#                      containerd with snapshotter-serve -type native as a
#                      second proxy plugin (`goproxy`): what any proxy
#                      plugin costs through containerd, with no ledger
#   ctrd-goproxy-ovl   the same with -type overlayfs
# (direct-goproxy and direct-goproxy-ovl, the plain Go proxy, run by default
# when snapshotter-serve is found, see CMP_GOSERVE; each right after the
# snapledger configuration it is compared with.)
# all with --clients 4 --chains 40 --depth 5 (CMP_ARGS overrides). Every
# snapledger configuration gets a freshly started snapledgerd on an empty
# root of its backend (log level warn), every direct-goproxy* one a freshly
# started snapshotter-serve on an empty root.
#
# Per run it also counts what the daemons spend, which swings far less with
# outside load than ops/s does: CPU time (utime+stime from /proc/PID/stat,
# exited threads included), context switches (`perf stat -e
# context-switches -p PID`, which follows the threads a daemon creates and
# ends during the run, so that none is missed; without perf the column is
# "-") and synced writes (the daemon's fdatasync and fsync calls, counted
# with perf's syscalls:sys_enter_fdatasync/sys_enter_fsync tracepoints; "-"
# without them) of containerd (ctrd-* configurations) and of the proxy
# (snapledgerd, or snapshotter-serve for direct-goproxy*). CPU and context
# switches are divided by snapbench's RPC count, synced writes by its
# mutations (prepares, commits and removes). The proxy's per-RPC costs are
# checked against issue 14's budget: CPU <= 0.4 ms per RPC, <= 3 context
# switches per RPC, <= 1 synced write per mutation (every fsync and
# fdatasync of the daemon counts, the backend's data flushes included, so
# this bounds the synced ledger writes from above).
#
# Prints the machine facts, a table (per configuration: median over rounds of
# total ops/s, and of prepare/commit/remove p50/p99; the median share of
# wall time some task waited for a CPU, PSI, as a disturbance gauge), a table
# of per-RPC costs (median over rounds) and, per pair, the snapledger/
# containerd ratio through containerd (median of the per-round ratios; each
# round's pair ran back to back) against its floor (native 0.90x, issue
# 14; overlayfs 0.85x, issue 12) and goal (1.00x); with the ctrd-goproxy*
# configurations, also the reference ratios (a plain proxy plugin against
# the built-in snapshotter, snapledger against the plain proxy plugin); and
# direct, snapledgerd/Go proxy (direct-sync/direct-goproxy,
# direct-ovl-sync/direct-goproxy-ovl) against its goal (3.00x; floor 1.00x).
# The verdict is informational: exit 0 whatever it says; 1 if snapbench
# failed (calls failed, setup errors) or anything leaked (snapshots left in
# containerd, snapledgerd or a backend directory).
#
# Knobs:
#   CMP_KIND=native|overlayfs|both  which pairs run (default both)
#   CMP_CONFIGS="cfg ..."  run exactly these configurations, in this order
#       (names above; overrides CMP_KIND)
#   CMP_CTRD_CONFIG=default|lib  default (default): lib.sh's containerd config
#       with its aggressive test GC scheduler (GC after every deletion) and
#       debug log level replaced by containerd's defaults (GC after 100
#       mutations, pause_threshold 0.02; log level info). lib: as lib.sh
#       writes it — GC after every deletion, for both snapshotters alike.
#   CMP_ARGS="..."   snapbench workload flags (default above)
#   CMP_SL_TOML=...  extra snapledgerd config for every snapledger run, e.g.
#       $'[native]\nsync = false' (no backend data flushes)
#   CMP_SAVE=DIR     copy the raw snapbench JSON (and per-run PSI and cost)
#       files to DIR
#   CMP_GOSERVE=PATH the snapshotter-serve binary (default: go/snapshotter-
#       serve of the build tree SNAPLEDGERD is in, as `cmake --build BUILD
#       --target go_tools` makes it); without it the direct-goproxy*
#       configurations are left out (an error if CMP_CONFIGS names them)
#   IT_KEEP=1        keep the temp dir (logs, roots) — see lib.sh
# Needs root (like the integration tests), containerd/ctr 1.6, jq; perf
# (linux-perf) for the context-switch and synced-write counts.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
LIB=$HERE/../tests/integration/lib.sh
# shellcheck source=../tests/integration/lib.sh
source "$LIB"
IT_SUMMARY=0   # read by lib.sh's it_cleanup: no "N passed" summary
export IT_SUMMARY

ALL_CONFIGS=(ctrd-native ctrd-sl-native direct-sync direct-goproxy direct-async
             ctrd-overlayfs ctrd-sl-overlayfs direct-ovl-sync direct-goproxy-ovl
             ctrd-goproxy ctrd-goproxy-ovl)
if [[ ${IT_IN_PRIVATE_NS:-} != 1 ]]; then
  if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 SNAPLEDGERD SNAPBENCH [ROUNDS]" >&2
    exit 2
  fi
  for b in "$1" "$2"; do
    [[ -x $b && -f $b ]] || { echo "not an executable: $b" >&2; exit 2; }
  done
  [[ ${3:-3} =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }
  case ${CMP_CTRD_CONFIG:-default} in default|lib) ;; *)
    echo "CMP_CTRD_CONFIG must be default or lib" >&2; exit 2 ;;
  esac
  case ${CMP_KIND:-both} in native|overlayfs|both) ;; *)
    echo "CMP_KIND must be native, overlayfs or both" >&2; exit 2 ;;
  esac
  for c in ${CMP_CONFIGS:-}; do
    [[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] ||
      { echo "unknown configuration in CMP_CONFIGS: $c (known: ${ALL_CONFIGS[*]})" >&2; exit 2; }
  done
  set -- "$(readlink -f "$1")" "$(readlink -f "$2")" "${3:-3}"
  # build/plugin/server/snapledgerd -> build/go/snapshotter-serve
  CMP_GOSERVE=${CMP_GOSERVE:-$(dirname "$1")/../../go/snapshotter-serve}
  if [[ -x $CMP_GOSERVE && -f $CMP_GOSERVE ]]; then
    CMP_GOSERVE=$(readlink -f "$CMP_GOSERVE")
  else
    [[ " ${CMP_CONFIGS:-} " == *"goproxy"* ]] &&
      { echo "no snapshotter-serve at $CMP_GOSERVE (cmake --build BUILD --target go_tools, or set CMP_GOSERVE)" >&2; exit 2; }
    echo "compare.sh: no snapshotter-serve at $CMP_GOSERVE: the direct-goproxy configurations are left out" >&2
    CMP_GOSERVE=
  fi
  export CMP_CTRD_CONFIG=${CMP_CTRD_CONFIG:-default} CMP_ARGS=${CMP_ARGS:-} \
    CMP_KIND=${CMP_KIND:-both} CMP_CONFIGS=${CMP_CONFIGS:-} \
    CMP_SAVE=${CMP_SAVE:+$(realpath -m "$CMP_SAVE")} CMP_GOSERVE
fi
it_enter_private_namespace "$@"
it_setup

ROUNDS=$3
WORKLOAD=(--clients 4 --chains 40 --depth 5)
if [[ -n ${CMP_ARGS:-} ]]; then read -r -a WORKLOAD <<<"$CMP_ARGS"; fi
if [[ -n ${CMP_CONFIGS:-} ]]; then
  read -r -a CONFIGS <<<"$CMP_CONFIGS"
else
  CONFIGS=()
  if [[ $CMP_KIND != overlayfs ]]; then
    CONFIGS+=(ctrd-native ctrd-sl-native direct-sync)
    [[ -n $CMP_GOSERVE ]] && CONFIGS+=(direct-goproxy)
    CONFIGS+=(direct-async)
  fi
  if [[ $CMP_KIND != native ]]; then
    CONFIGS+=(ctrd-overlayfs ctrd-sl-overlayfs direct-ovl-sync)
    [[ -n $CMP_GOSERVE ]] && CONFIGS+=(direct-goproxy-ovl)
  fi
fi
# the pairs reported: BASELINE:SNAPLEDGER:FLOOR:GOAL (x)
PAIRS=(ctrd-native:ctrd-sl-native:0.90:1.00
       ctrd-overlayfs:ctrd-sl-overlayfs:0.85:1.00
       direct-goproxy:direct-sync:1.00:3.00
       direct-goproxy-ovl:direct-ovl-sync:1.00:3.00)
# reference ratios, printed without a verdict: BASELINE:OTHER:WHAT
REFS=("ctrd-native:ctrd-goproxy:a plain proxy plugin (no ledger) against the built-in snapshotter"
      "ctrd-goproxy:ctrd-sl-native:snapledger against the plain proxy plugin"
      "ctrd-overlayfs:ctrd-goproxy-ovl:a plain proxy plugin (no ledger) against the built-in snapshotter"
      "ctrd-goproxy-ovl:ctrd-sl-overlayfs:snapledger against the plain proxy plugin")
# issue 14's per-operation budget for the proxy
BUDGET_CPU_US=400 BUDGET_CS=3 BUDGET_SYNCS=1
TOOL_ERRORS=0
LEAKS=0
want() { [[ " ${CONFIGS[*]} " == *" $1 "* ]]; }

# The binaries are copied first, so a rebuild during the run changes nothing.
BIN=$IT_TMP/bin RES=$IT_TMP/results
mkdir -p "$BIN" "$RES"
if ! cp "$1" "$BIN/snapledgerd.real" || ! cp "$2" "$BIN/snapbench" ||
   { [[ -n $CMP_GOSERVE ]] && ! cp "$CMP_GOSERVE" "$BIN/snapshotter-serve"; }; then
  it_die "cannot copy the binaries"
fi
SNAPBENCH=$BIN/snapbench
# lib.sh's snapledgerd_start always passes --log-level debug and --backend
# native, and the CLI rejects a flag given twice: this wrapper drops
# --log-level and asks for warn, and keeps only the last --backend (sl_fresh
# passes its own after lib.sh's). exec keeps the pid, so lib.sh still
# signals and reaps the daemon itself.
cat >"$BIN/snapledgerd" <<EOF
#!/usr/bin/env bash
args=() backend=native
while ((\$#)); do
  case \$1 in
    --log-level) shift 2; continue ;;
    --backend) backend=\$2; shift 2; continue ;;
  esac
  args+=("\$1"); shift
done
exec "$BIN/snapledgerd.real" "\${args[@]}" --backend "\$backend" --log-level warn
EOF
chmod +x "$BIN/snapledgerd"
# CMP_SL_TOML: extra snapledgerd settings (TOML tables) for every snapledger
# configuration, e.g. $'[native]\nsync = false'.
printf '%s\n' "${CMP_SL_TOML:-}" >"$IT_TMP/sl.toml"
printf '[ledger]\ndurability = "async"\n%s\n' "${CMP_SL_TOML:-}" >"$IT_TMP/async.toml"

# Context switches need perf: the daemons' threads come and go. Synced
# writes need its syscall tracepoints too.
HAVE_PERF=0 PERF_EVENTS=context-switches
SYNC_EVENTS=syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync
if command -v perf >/dev/null &&
   perf stat -x, -e context-switches -o "$IT_TMP/perf.check" true >/dev/null 2>&1; then
  HAVE_PERF=1
  if perf stat -x, -e "$SYNC_EVENTS" -o "$IT_TMP/perf.check" true >/dev/null 2>&1; then
    PERF_EVENTS=context-switches,$SYNC_EVENTS
  else
    it_log "perf has no syscall tracepoints (debugfs/tracefs?): no synced-write counts"
  fi
else
  it_log "perf unusable (install linux-perf): no context-switch or synced-write counts"
fi
CLK_TCK=$(getconf CLK_TCK)

count_objects() { # DIR : backend objects and temporaries in a snapshots dir
  local n
  n=$(find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "${n:-0}"
}
sl_listed() { # snapshots snapledgerd itself lists (any key, any namespace)
  timeout -k 5 "$IT_TIMEOUT" ctr -a "$IT_SL_SOCK" snapshots --snapshotter snapledger ls |
    awk 'NR > 1' | grep -c .
}
ctrd_listed() { # SNAPSHOTTER : snapshots containerd lists in the bench namespace
  ctrb snapshots --snapshotter "$1" ls | awk 'NR > 1' | grep -c .
}
backend_dir() { # SNAPSHOTTER : where its backend objects live
  case $1 in
    native|overlayfs) echo "$IT_CTRD_ROOT/io.containerd.snapshotter.v1.$1/snapshots" ;;
    goproxy) echo "$GP_ROOT/snapshots" ;;
    *) echo "$IT_SL_ROOT/snapshots" ;;
  esac
}
backend_empty() { [[ $(count_objects "$(backend_dir "$1")") -eq 0 ]]; }

# sl_fresh BACKEND [ARGS...] : (re)start snapledgerd on an empty root.
sl_fresh() {
  local backend=$1; shift
  if [[ -n $IT_SL_PID ]]; then
    snapledgerd_stop || { it_log "snapledgerd exited non-zero on SIGTERM"; TOOL_ERRORS=$((TOOL_ERRORS + 1)); }
  fi
  rm -rf --one-file-system "$IT_SL_ROOT"
  snapledgerd_start "$BIN/snapledgerd" --backend "$backend" "$@" ||
    it_die "snapledgerd (--backend $backend) did not start"
}

# gp_fresh TYPE : (re)start snapshotter-serve -type TYPE on an empty root;
# gp_stop stops it.
GP_PID="" GP_ROOT=$IT_TMP/goproxy GP_SOCK=$IT_TMP/goproxy.sock
gp_stop() {
  [[ -n $GP_PID ]] || return 0
  kill -TERM "$GP_PID" 2>/dev/null
  wait "$GP_PID" || { it_log "snapshotter-serve exited non-zero on SIGTERM"; TOOL_ERRORS=$((TOOL_ERRORS + 1)); }
  GP_PID=""
}
gp_fresh() {
  gp_stop
  rm -rf --one-file-system "$GP_ROOT"
  mkdir -p "$GP_ROOT"
  "$BIN/snapshotter-serve" -type "$1" -root "$GP_ROOT" -address "$GP_SOCK" \
    >>"$IT_TMP/goproxy.log" 2>&1 &
  GP_PID=$!
  wait_for 30 "snapshotter-serve socket" test -S "$GP_SOCK" ||
    it_die "snapshotter-serve -type $1 did not start (see $IT_TMP/goproxy.log)"
}
gp_listed() { # snapshots snapshotter-serve lists
  timeout -k 5 "$IT_TIMEOUT" ctr -a "$GP_SOCK" snapshots --snapshotter goproxy ls |
    awk 'NR > 1' | grep -c .
}

# probe SNAPSHOTTER : one prepare+remove through containerd (its proxy client
# reconnects to a restarted snapledgerd with a backoff).
probe_n=0
ctrb() { timeout -k 5 "$IT_TIMEOUT" ctr -a "$IT_CTRD_SOCK" -n bench "$@"; }
probe() {
  probe_n=$((probe_n + 1))
  local k=cmp-probe-$probe_n
  ctrb snapshots --snapshotter "$1" prepare "$k" >/dev/null &&
    ctrb snapshots --snapshotter "$1" rm "$k"
}
# gc_then_empty SNAPSHOTTER : run one synchronous GC (a throw-away lease
# deleted with --sync), then succeed if the backend directory is empty.
gc_then_empty() {
  probe_n=$((probe_n + 1))
  ctrb leases create "cmp-gc-$probe_n" >/dev/null &&
    ctrb leases rm --sync "cmp-gc-$probe_n" >/dev/null
  backend_empty "$1"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# PSI "some" stall totals (µs) for cpu and io; empty without PSI. The share
# of a run's wall time in which some task waited for a CPU is the best
# disturbance indicator here: the benchmark itself keeps 2 cores busy, so
# the load average alone cannot tell our load from other work's.
psi() { awk '/^some/ {sub("total=", "", $5); printf "%s ", $5}' /proc/pressure/cpu /proc/pressure/io 2>/dev/null; }
psi_line() { # "cpu some avg10/avg60, io some avg10/avg60" right now
  awk '/^some/ {sub("avg10=", "", $2); sub("avg60=", "", $3); printf "%s%s/%s", (NR > 1 ? ", io " : "cpu "), $2, $3}' \
    /proc/pressure/cpu /proc/pressure/io 2>/dev/null
}

# Per-run daemon costs. cost_start PID TAG / cost_stop PID TAG: CPU ticks
# from /proc/PID/stat (the whole thread group, exited threads included) and,
# with perf, context switches of every thread the daemon has or creates.
PERF_PIDS=()
cost_start() {
  awk '{print $14 + $15}' "/proc/$1/stat" >"$RES/$2.cpu0"
  if ((HAVE_PERF)); then
    perf stat -x, -e "$PERF_EVENTS" -p "$1" -o "$RES/$2.perf" 2>/dev/null &
    PERF_PIDS+=($!)
    sleep 0.5  # perf gives no sign of having attached; it takes << 0.5 s
  fi
}
cost_stop() { # prints "CPU_MS CTX SYNCS" (CTX, SYNCS "nan" without perf)
  local c0 c1 ctx=nan syncs=nan
  c0=$(cat "$RES/$2.cpu0"); c1=$(awk '{print $14 + $15}' "/proc/$1/stat")
  if [[ -s $RES/$2.perf ]]; then
    ctx=$(awk -F, '$3 == "context-switches" {print $1}' "$RES/$2.perf")
    [[ $ctx =~ ^[0-9]+$ ]] || ctx=nan
    syncs=$(awk -F, '$3 ~ /^syscalls:sys_enter_f(data)?sync$/ {n++; s += $1} END {if (n == 2) print s}' "$RES/$2.perf")
    [[ $syncs =~ ^[0-9]+$ ]] || syncs=nan
  fi
  echo "$(((c1 - c0) * 1000 / CLK_TCK)) $ctx $syncs"
}
perf_stop_all() {
  local p
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PERF_PIDS=()
}

# run_config CONFIG ROUND
run_config() {
  local cfg=$1 round=$2 rc sn="" args la sl=0 gp=0 ppid=""
  local json=$RES/$cfg.r$round.json
  case $cfg in
    ctrd-native|ctrd-overlayfs) sn=${cfg#ctrd-} ;;
    ctrd-sl-*) sn=snapledger sl=1; sl_fresh "${cfg#ctrd-sl-}" --config "$IT_TMP/sl.toml" ;;
    direct-sync) sl=1; sl_fresh native --config "$IT_TMP/sl.toml" ;;
    direct-async) sl=1; sl_fresh native --config "$IT_TMP/async.toml" ;;
    direct-ovl-sync) sl=1; sl_fresh overlayfs --config "$IT_TMP/sl.toml" ;;
    direct-goproxy) gp=1; gp_fresh native ;;
    direct-goproxy-ovl) gp=1; gp_fresh overlayfs ;;
    ctrd-goproxy) sn=goproxy gp=1; gp_fresh native ;;
    ctrd-goproxy-ovl) sn=goproxy gp=1; gp_fresh overlayfs ;;
    *) it_die "unknown configuration $cfg" ;;
  esac
  ((sl)) && ppid=$IT_SL_PID
  ((gp)) && ppid=$GP_PID
  if [[ -n $sn ]]; then
    wait_for 30 "containerd reaches $sn" probe "$sn" || it_die "no $sn via containerd"
    # the probe's backend object goes with the next GC
    wait_for 30 "$sn backend empty" gc_then_empty "$sn" ||
      it_log "warning: $sn backend not empty before the run"
    args=(--containerd --address "unix://$IT_CTRD_SOCK" --snapshotter "$sn")
  elif ((gp)); then
    args=(--address "unix://$GP_SOCK")
  else
    args=(--address "unix://$IT_SL_SOCK")
  fi
  sync  # earlier runs' dirty data must not land in this run's fsyncs
  la=$(loadavg)
  [[ -n $sn ]] && cost_start "$IT_CTRD_PID" "$cfg.r$round.ctrd"
  [[ -n $ppid ]] && cost_start "$ppid" "$cfg.r$round.sl"
  local p0 p1 t0 t1
  p0=$(psi); t0=$(date +%s%N)
  timeout -k 10 1800 "$SNAPBENCH" "${args[@]}" "${WORKLOAD[@]}" \
    --run-id "cmp-$cfg-r$round" --json >"$json" 2>"$RES/$cfg.r$round.err"
  rc=$?
  p1=$(psi); t1=$(date +%s%N)
  perf_stop_all
  # costs: "ctrd_cpu_ms ctrd_ctx proxy_cpu_ms proxy_ctx total_ops
  # ctrd_syncs proxy_syncs mutations" (proxy: snapledgerd or snapshotter-serve)
  local ccost=(nan nan nan) scost=(nan nan nan)
  [[ -n $sn ]] && read -r -a ccost < <(cost_stop "$IT_CTRD_PID" "$cfg.r$round.ctrd")
  [[ -n $ppid ]] && read -r -a scost < <(cost_stop "$ppid" "$cfg.r$round.sl")
  echo "${ccost[0]} ${ccost[1]} ${scost[0]} ${scost[1]} $(jq -r '.total_ops // 0' "$json" 2>/dev/null)" \
    "${ccost[2]} ${scost[2]} $(jq -r '[.ops.prepare.count, .ops.commit.count, .ops.remove.count] | map(. // 0) | add' "$json" 2>/dev/null || echo 0)" \
    >"$RES/$cfg.r$round.cost"
  # cpu/io stall %: PSI "some" time over wall time, during this run
  read -r cpu_stall io_stall < <(awk -v a="$p0" -v b="$p1" -v w="$(((t1 - t0) / 1000))" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ");
    if (n < 2 || w <= 0) { print "nan nan"; exit }
    printf "%.0f %.0f\n", 100 * (y[1] - x[1]) / w, 100 * (y[2] - x[2]) / w }')
  echo "$cpu_stall $io_stall" >"$RES/$cfg.r$round.psi"
  if [[ $rc -ne 0 ]] || ! jq -e .total_ops_per_s "$json" >/dev/null 2>&1; then
    it_log "$cfg round $round: snapbench exit $rc"
    sed 's/^/  | /' "$RES/$cfg.r$round.err" >&2
    TOOL_ERRORS=$((TOOL_ERRORS + 1))
    [[ $rc -eq 2 ]] && it_die "snapbench setup error"
  fi
  local leaked remaining
  leaked=$(jq -r '.leaked_snapshots // 0' "$json" 2>/dev/null)
  remaining=$(jq -r '.remaining_snapshots // "null"' "$json" 2>/dev/null)
  if [[ $leaked != 0 || $remaining != 0 ]]; then
    it_log "$cfg round $round: leaked_snapshots=$leaked remaining_snapshots=$remaining"
    LEAKS=$((LEAKS + 1))
  fi
  # Whatever the tool says: nothing may stay listed or on disk.
  if [[ -n $sn ]]; then
    local n; n=$(ctrd_listed "$sn")
    # (snapbench deleted its lease with sync=true: GC has run; if objects
    # remain, gc_then_empty runs more GCs before calling them leaked)
    [[ $n -eq 0 ]] || { it_log "$cfg: containerd still lists $n snapshots"; LEAKS=$((LEAKS + 1)); }
    if ! wait_for 60 "$sn backend empty after GC" gc_then_empty "$sn"; then
      it_log "$cfg: backend objects left after GC"; LEAKS=$((LEAKS + 1))
    fi
  fi
  if ((sl)); then
    local l; l=$(sl_listed)
    [[ $l -eq 0 ]] || { it_log "$cfg: snapledgerd still lists $l snapshots"; LEAKS=$((LEAKS + 1)); }
    # A Remove answers once its object is renamed to rm-<id>; the tree is
    # deleted by a background deleter (plugin/backend/fs/object_dir.h),
    # which may still be at it when the run ends.
    wait_for 60 "snapledgerd's removed trees deleted" backend_empty snapledger ||
      { it_log "$cfg: objects left in $IT_SL_ROOT/snapshots"; LEAKS=$((LEAKS + 1)); }
  fi
  if ((gp)); then
    local g; g=$(gp_listed)
    [[ $g -eq 0 ]] || { it_log "$cfg: snapshotter-serve still lists $g snapshots"; LEAKS=$((LEAKS + 1)); }
    backend_empty goproxy ||
      { it_log "$cfg: objects left in $GP_ROOT/snapshots"; LEAKS=$((LEAKS + 1)); }
  fi
  local c; read -r -a c <"$RES/$cfg.r$round.cost"
  it_log "$(printf '%-18s round %d: %8.1f ops/s  wall %6.1fs  cpu/io stall %s%%/%s%%  load before %s, after %s; per RPC: containerd %s µs %s cs, proxy %s µs %s cs; proxy syncs/mutation %s' \
    "$cfg" "$round" "$(jq -r '.total_ops_per_s // 0' "$json" 2>/dev/null)" \
    "$(jq -r '.wall_time_s // 0' "$json" 2>/dev/null)" "$cpu_stall" "$io_stall" "$la" "$(loadavg)" \
    "$(per_op "${c[0]}" "${c[4]}" 1000)" "$(per_op "${c[1]}" "${c[4]}" 1)" \
    "$(per_op "${c[2]}" "${c[4]}" 1000)" "$(per_op "${c[3]}" "${c[4]}" 1)" \
    "$(per_op "${c[6]}" "${c[7]}" 1)")"
}
per_op() { # VALUE OPS SCALE : VALUE*SCALE/OPS, "-" if unknown
  awk -v v="$1" -v n="$2" -v s="$3" 'BEGIN {if (v == "nan" || v == "" || n <= 0) print "-"; else printf (s == 1 ? "%.2f" : "%.0f"), v * s / n}'
}

# ------------------------------------------------------------------ setup ---
LOAD_BEFORE=$(loadavg) PSI_BEFORE=$(psi_line)
sl_fresh native
containerd_start snapledger "$IT_SL_SOCK" || it_die "containerd did not start"
if [[ $CMP_CTRD_CONFIG == default ]] || want ctrd-goproxy || want ctrd-goproxy-ovl; then
  # Restart containerd without lib.sh's test GC table and at log level info:
  # containerd's defaults (unless CMP_CTRD_CONFIG=lib); and with
  # snapshotter-serve as a second proxy plugin for the ctrd-goproxy*
  # configurations. IT_CTRD_PID stays lib.sh's, so its trap stops it.
  containerd_stop
  cfgfile=$IT_TMP/containerd/config.toml
  if [[ $CMP_CTRD_CONFIG == default ]]; then
    awk '/^\[plugins\."io\.containerd\.gc\.v1\.scheduler"\]/ {skip = 1; next}
         /^\[/ {skip = 0}
         !skip' "$cfgfile" | sed 's/^  level = "debug"/  level = "info"/' >"$cfgfile.new" &&
      mv "$cfgfile.new" "$cfgfile"
    grep -q 'gc.v1.scheduler' "$cfgfile" && it_die "could not drop the GC table"
  fi
  if want ctrd-goproxy || want ctrd-goproxy-ovl; then
    printf '\n[proxy_plugins.goproxy]\n  type = "snapshot"\n  address = "%s"\n' "$GP_SOCK" >>"$cfgfile"
  fi
  containerd --config "$cfgfile" >>"$IT_CTRD_LOG" 2>&1 &
  IT_CTRD_PID=$!
  wait_for 30 "containerd socket" ctr -a "$IT_CTRD_SOCK" version ||
    it_die "containerd did not restart"
  it_log "containerd restarted (config $CMP_CTRD_CONFIG), pid $IT_CTRD_PID"
fi
# containerd's overlayfs plugin loads only where it can work (its root's
# filesystem has d_type and hosts a test overlay mount); say why if not.
OVL_PLUGIN=$(ctr -a "$IT_CTRD_SOCK" plugins ls 2>/dev/null |
  awk '$1 == "io.containerd.snapshotter.v1" && $2 == "overlayfs" {print $NF}')
if want ctrd-overlayfs && [[ $OVL_PLUGIN != ok ]]; then
  grep -i overlay "$IT_CTRD_LOG" | tail -n 5 >&2
  it_die "containerd's overlayfs snapshotter is '${OVL_PLUGIN:-absent}' (root $IT_CTRD_ROOT on $(findmnt -n -o FSTYPE -T "$IT_TMP"))"
fi

# ----------------------------------------------------------- measurements ---
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then order=("${CONFIGS[@]}")
  else order=(); for ((i = ${#CONFIGS[@]} - 1; i >= 0; i--)); do order+=("${CONFIGS[i]}"); done; fi
  for cfg in "${order[@]}"; do run_config "$cfg" "$r"; done
done
gp_stop
LOAD_AFTER=$(loadavg) PSI_AFTER=$(psi_line)

# ---------------------------------------------------------------- report ---
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
field() { # CONFIG JQ_EXPR : one value per round
  local f
  for f in "$RES/$1".r*.json; do jq -r "$2 // empty" "$f" 2>/dev/null; done
}
cost_field() { # CONFIG COLUMN(1-4) SCALE : per-RPC value per round
  local f
  for f in "$RES/$1".r*.cost; do
    awk -v k="$2" -v s="$3" '$k != "nan" && $5 > 0 {print $k * s / $5}' "$f"
  done
}
ms() { awk -v v="$1" 'BEGIN {if (v == "nan") print "-"; else printf "%.2f", v / 1000}'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {if (v == "nan" || v == "") print "-"; else printf f, v}'; }

echo "== machine"
echo "kernel:       $(uname -r) ($(uname -m))"
echo "cpus:         $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "memory:       $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "temp dir fs:  $(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$IT_TMP" | head -n1)"
echo "containerd:   $(containerd --version | awk '{print $3}'); config: $CMP_CTRD_CONFIG; overlayfs plugin: ${OVL_PLUGIN:-absent}"
echo "load average: before $LOAD_BEFORE, after $LOAD_AFTER"
echo "PSI some avg10/avg60 (%): before $PSI_BEFORE; after $PSI_AFTER"
echo "workload:     ${WORKLOAD[*]}, $ROUNDS rounds"
echo
echo "== results (median over rounds; latencies in ms)"
printf '%-17s %9s %10s %17s %17s %17s %10s\n' config "ops/s" "min-max" \
  "prepare p50/p99" "commit p50/p99" "remove p50/p99" "cpu stall"
for cfg in "${CONFIGS[@]}"; do
  ops=$(field "$cfg" .total_ops_per_s | median)
  mn=$(field "$cfg" .total_ops_per_s | sort -g | head -n1)
  mx=$(field "$cfg" .total_ops_per_s | sort -g | tail -n1)
  cols=()
  for op in prepare commit remove; do
    p50=$(field "$cfg" ".ops.$op.latency_us.p50" | median)
    p99=$(field "$cfg" ".ops.$op.latency_us.p99" | median)
    cols+=("$(ms "$p50")/$(ms "$p99")")
  done
  stall=$(for f in "$RES/$cfg".r*.psi; do cut -d' ' -f1 "$f"; done | grep -v nan | median)
  printf '%-17s %9.1f %10s %17s %17s %17s %9s%%\n' "$cfg" "$ops" \
    "$(printf '%.0f-%.0f' "${mn:-0}" "${mx:-0}")" "${cols[@]}" "$stall"
done
echo
echo "== daemon cost per RPC (median over rounds; CPU in µs, cs = context switches; syncs per mutation)"
printf '%-18s %14s %13s %10s %10s %9s %11s %10s %9s  %s\n' config "containerd CPU" "containerd cs" \
  "ctrd syncs" "proxy CPU" "proxy cs" "proxy syncs" "total CPU" "total cs" "proxy budget"
sync_field() { # CONFIG COLUMN(6-7) : synced writes per mutation, per round
  local f
  for f in "$RES/$1".r*.cost; do
    awk -v k="$2" '$k != "nan" && $k != "" && $8 > 0 {print $k / $8}' "$f"
  done
}
budget() { # CPU_US CS SYNCS : issue 14's budget for the proxy, per RPC
  awk -v c="$1" -v x="$2" -v y="$3" -v bc="$BUDGET_CPU_US" -v bx="$BUDGET_CS" -v by="$BUDGET_SYNCS" 'BEGIN {
    if (c == "nan") { print "-"; exit }
    out = (c <= bc ? "cpu ok" : "CPU OVER")
    if (x != "nan") out = out ", " (x <= bx ? "cs ok" : "CS OVER")
    if (y != "nan") out = out ", " (y <= by ? "syncs ok" : "SYNCS OVER")
    print out }'
}
for cfg in "${CONFIGS[@]}"; do
  cc=$(cost_field "$cfg" 1 1000 | median); cx=$(cost_field "$cfg" 2 1 | median)
  sc=$(cost_field "$cfg" 3 1000 | median); sx=$(cost_field "$cfg" 4 1 | median)
  cy=$(sync_field "$cfg" 6 | median); sy=$(sync_field "$cfg" 7 | median)
  tc=$(for f in "$RES/$cfg".r*.cost; do awk '$5 > 0 {print (($1 == "nan" ? 0 : $1) + ($3 == "nan" ? 0 : $3)) * 1000 / $5}' "$f"; done | median)
  tx=$(for f in "$RES/$cfg".r*.cost; do awk '$5 > 0 && ($2 != "nan" || $4 != "nan") {print (($2 == "nan" ? 0 : $2) + ($4 == "nan" ? 0 : $4)) / $5}' "$f"; done | median)
  printf '%-18s %14s %13s %10s %10s %9s %11s %10s %9s  %s\n' "$cfg" "$(fmt "$cc" %.0f)" "$(fmt "$cx" %.2f)" \
    "$(fmt "$cy" %.2f)" "$(fmt "$sc" %.0f)" "$(fmt "$sx" %.2f)" "$(fmt "$sy" %.2f)" \
    "$(fmt "$tc" %.0f)" "$(fmt "$tx" %.2f)" \
    "$(if [[ $cfg == *goproxy* ]]; then echo -; else budget "$sc" "$sx" "$sy"; fi)"
done
echo "(CPU: utime+stime of the whole process; context switches: perf, every thread; per snapbench RPC."
echo " syncs: fdatasync+fsync calls of the daemon per prepare/commit/remove. proxy: snapledgerd, or"
echo " snapshotter-serve for *goproxy*; snapledgerd's budget (issue 14): CPU <= ${BUDGET_CPU_US} µs, cs <= ${BUDGET_CS}, syncs <= ${BUDGET_SYNCS})"
echo
# round_ratios BASE OTHER : OTHER's ops/s over BASE's, one line per round
# in which both ran
round_ratios() {
  local r n s
  for ((r = 0; r < ROUNDS; r++)); do
    n=$(jq -r '.total_ops_per_s // empty' "$RES/$1.r$r.json" 2>/dev/null)
    s=$(jq -r '.total_ops_per_s // empty' "$RES/$2.r$r.json" 2>/dev/null)
    [[ -n $n && -n $s ]] && awk -v a="$s" -v b="$n" 'BEGIN {printf "%.4f\n", a / b}'
  done
}
joined() { awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}'; }
for pair in "${PAIRS[@]}"; do
  IFS=: read -r base sl FLOOR GOAL <<<"$pair"
  how="through containerd"
  [[ $base == direct-* ]] && how="direct"
  if ! want "$base" || ! want "$sl"; then continue; fi
  mapfile -t ratios < <(round_ratios "$base" "$sl")
  name="$sl/$base"
  if ((${#ratios[@]} > 0)); then
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    verdict=$(awk -v v="$ratio" -v f="$FLOOR" -v g="$GOAL" 'BEGIN {
      if (v >= g) print "goal met"; else if (v >= f) print "above floor, below goal"; else print "BELOW FLOOR" }')
    printf '%s %s: %.2fx (per round %s); floor %sx, goal %sx: %s (informational)\n' \
      "$name" "$how" "$ratio" "$(printf '%s\n' "${ratios[@]}" | joined)" \
      "$FLOOR" "$GOAL" "$verdict"
  else
    echo "$name $how: n/a (no complete round)"
  fi
done
for ref in "${REFS[@]}"; do
  IFS=: read -r base other what <<<"$ref"
  if ! want "$base" || ! want "$other"; then continue; fi
  mapfile -t ratios < <(round_ratios "$base" "$other")
  ((${#ratios[@]} > 0)) || continue
  printf '%s/%s (%s): %.2fx (per round %s)\n' "$other" "$base" "$what" \
    "$(printf '%s\n' "${ratios[@]}" | median)" "$(printf '%s\n' "${ratios[@]}" | joined)"
done
echo "tool errors: $TOOL_ERRORS, leak findings: $LEAKS"
if [[ -n ${CMP_SAVE:-} ]]; then
  mkdir -p "$CMP_SAVE" && cp "$RES"/*.json "$RES"/*.psi "$RES"/*.cost "$CMP_SAVE"/ &&
    it_log "JSON copied to $CMP_SAVE"
fi
((TOOL_ERRORS == 0 && LEAKS == 0)) || exit 1
exit 0
