#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through traps / wait_for
# compare.sh SNAPLEDGERD SNAPBENCH [ROUNDS]
#
# snapledger vs containerd's built-in `native` snapshotter, in one sitting.
# Uses tests/integration/lib.sh: a private containerd 1.6 (private mount+pid
# namespace, everything under one temp dir, stopped and deleted by lib.sh's
# EXIT trap) with snapledgerd registered as proxy snapshotter `snapledger`.
#
# Configurations, each run ROUNDS times (default 3), rounds alternating the
# order (even rounds A B C D, odd rounds D C B A) to cancel drift:
#   ctrd-native      snapbench --containerd --snapshotter native
#   ctrd-snapledger  snapbench --containerd --snapshotter snapledger
#   direct-sync      snapbench straight at snapledgerd's socket (default
#                    config: ledger durability "sync")
#   direct-async     the same against snapledgerd --config with
#                    [ledger] durability = "async"   (what fsync costs)
# all with --clients 4 --chains 40 --depth 5 (CMP_ARGS overrides). Every
# snapledger configuration gets a freshly started snapledgerd on an empty
# root (log level warn).
#
# Prints the machine facts, a table (per configuration: median over rounds of
# total ops/s, and of prepare/commit/remove p50/p99; the median share of
# wall time some task waited for a CPU, PSI, as a disturbance gauge) and the
# snapledger/native ratio through containerd (median of the per-round ratios;
# each round's pair ran back to back) against the 85% target. The verdict is
# informational: exit 0 whatever it says; 1 if snapbench failed (calls
# failed, setup errors) or anything leaked (snapshots left in containerd,
# snapledgerd or a backend directory).
#
# Knobs:
#   CMP_CTRD_CONFIG=default|lib  default (default): lib.sh's containerd config
#       with its aggressive test GC scheduler (GC after every deletion) and
#       debug log level replaced by containerd's defaults (GC after 100
#       mutations, pause_threshold 0.02; log level info). lib: as lib.sh
#       writes it — GC after every deletion, for both snapshotters alike.
#   CMP_ARGS="..."   snapbench workload flags (default above)
#   CMP_SL_TOML=...  extra snapledgerd config for every snapledger run, e.g.
#       $'[native]\nsync = false' (no backend data flushes)
#   CMP_SAVE=DIR     copy the raw snapbench JSON (and per-run PSI) files to DIR
#   IT_KEEP=1        keep the temp dir (logs, roots) — see lib.sh
# Needs root (like the integration tests), containerd/ctr 1.6, jq.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
LIB=$HERE/../tests/integration/lib.sh
# shellcheck source=../tests/integration/lib.sh
source "$LIB"
IT_SUMMARY=0   # read by lib.sh's it_cleanup: no "N passed" summary
export IT_SUMMARY

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
  set -- "$(readlink -f "$1")" "$(readlink -f "$2")" "${3:-3}"
  export CMP_CTRD_CONFIG=${CMP_CTRD_CONFIG:-default} CMP_ARGS=${CMP_ARGS:-} \
    CMP_SAVE=${CMP_SAVE:+$(realpath -m "$CMP_SAVE")}
fi
it_enter_private_namespace "$@"
it_setup

ROUNDS=$3
WORKLOAD=(--clients 4 --chains 40 --depth 5)
if [[ -n ${CMP_ARGS:-} ]]; then read -r -a WORKLOAD <<<"$CMP_ARGS"; fi
CONFIGS=(ctrd-native ctrd-snapledger direct-sync direct-async)
TOOL_ERRORS=0
LEAKS=0

# The binaries are copied first, so a rebuild during the run changes nothing.
BIN=$IT_TMP/bin RES=$IT_TMP/results
mkdir -p "$BIN" "$RES"
if ! cp "$1" "$BIN/snapledgerd.real" || ! cp "$2" "$BIN/snapbench"; then
  it_die "cannot copy the binaries"
fi
SNAPBENCH=$BIN/snapbench
# lib.sh's snapledgerd_start always passes --log-level debug, and the CLI
# rejects the flag twice: this wrapper drops it and asks for warn (exec keeps
# the pid, so lib.sh still signals and reaps the daemon itself).
cat >"$BIN/snapledgerd" <<EOF
#!/usr/bin/env bash
args=()
while ((\$#)); do
  if [[ \$1 == --log-level ]]; then shift 2; continue; fi
  args+=("\$1"); shift
done
exec "$BIN/snapledgerd.real" "\${args[@]}" --log-level warn
EOF
chmod +x "$BIN/snapledgerd"
# CMP_SL_TOML: extra snapledgerd settings (TOML tables) for every snapledger
# configuration, e.g. $'[native]\nsync = false'.
printf '%s\n' "${CMP_SL_TOML:-}" >"$IT_TMP/sl.toml"
printf '[ledger]\ndurability = "async"\n%s\n' "${CMP_SL_TOML:-}" >"$IT_TMP/async.toml"

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
NATIVE_DIR() { echo "$IT_CTRD_ROOT/io.containerd.snapshotter.v1.native/snapshots"; }
backend_empty() { # SNAPSHOTTER
  local d
  if [[ $1 == native ]]; then d=$(NATIVE_DIR); else d=$IT_SL_ROOT/snapshots; fi
  [[ $(count_objects "$d") -eq 0 ]]
}

# sl_fresh [ARGS...] : (re)start snapledgerd on an empty root.
sl_fresh() {
  if [[ -n $IT_SL_PID ]]; then
    snapledgerd_stop || { it_log "snapledgerd exited non-zero on SIGTERM"; TOOL_ERRORS=$((TOOL_ERRORS + 1)); }
  fi
  rm -rf --one-file-system "$IT_SL_ROOT"
  snapledgerd_start "$BIN/snapledgerd" "$@" || it_die "snapledgerd did not start"
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

# run_config CONFIG ROUND
run_config() {
  local cfg=$1 round=$2 rc sn="" args la
  local json=$RES/$cfg.r$round.json
  case $cfg in
    ctrd-native|ctrd-snapledger)
      sn=${cfg#ctrd-}
      [[ $sn == snapledger ]] && sl_fresh --config "$IT_TMP/sl.toml"
      wait_for 30 "containerd reaches $sn" probe "$sn" || it_die "no $sn via containerd"
      # the probe's backend object goes with the next GC
      wait_for 30 "$sn backend empty" gc_then_empty "$sn" ||
        it_log "warning: $sn backend not empty before the run"
      args=(--containerd --address "unix://$IT_CTRD_SOCK" --snapshotter "$sn")
      ;;
    direct-sync) sl_fresh --config "$IT_TMP/sl.toml"; args=(--address "unix://$IT_SL_SOCK") ;;
    direct-async) sl_fresh --config "$IT_TMP/async.toml"; args=(--address "unix://$IT_SL_SOCK") ;;
  esac
  sync  # earlier runs' dirty data must not land in this run's fsyncs
  la=$(loadavg)
  local p0 p1 t0 t1
  p0=$(psi); t0=$(date +%s%N)
  timeout -k 10 1800 "$SNAPBENCH" "${args[@]}" "${WORKLOAD[@]}" \
    --run-id "cmp-$cfg-r$round" --json >"$json" 2>"$RES/$cfg.r$round.err"
  rc=$?
  p1=$(psi); t1=$(date +%s%N)
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
  if [[ $cfg != ctrd-native ]]; then
    local l; l=$(sl_listed)
    [[ $l -eq 0 ]] || { it_log "$cfg: snapledgerd still lists $l snapshots"; LEAKS=$((LEAKS + 1)); }
    backend_empty snapledger ||
      { it_log "$cfg: objects left in $IT_SL_ROOT/snapshots"; LEAKS=$((LEAKS + 1)); }
  fi
  it_log "$(printf '%-16s round %d: %8.1f ops/s  wall %6.1fs  cpu/io stall %s%%/%s%%  load before %s, after %s' \
    "$cfg" "$round" "$(jq -r '.total_ops_per_s // 0' "$json" 2>/dev/null)" \
    "$(jq -r '.wall_time_s // 0' "$json" 2>/dev/null)" "$cpu_stall" "$io_stall" "$la" "$(loadavg)")"
}

# ------------------------------------------------------------------ setup ---
LOAD_BEFORE=$(loadavg)
sl_fresh
containerd_start snapledger "$IT_SL_SOCK" || it_die "containerd did not start"
if [[ $CMP_CTRD_CONFIG == default ]]; then
  # Restart containerd without lib.sh's test GC table and at log level info:
  # containerd's defaults. IT_CTRD_PID stays lib.sh's, so its trap stops it.
  containerd_stop
  cfgfile=$IT_TMP/containerd/config.toml
  awk '/^\[plugins\."io\.containerd\.gc\.v1\.scheduler"\]/ {skip = 1; next}
       /^\[/ {skip = 0}
       !skip' "$cfgfile" | sed 's/^  level = "debug"/  level = "info"/' >"$cfgfile.new" &&
    mv "$cfgfile.new" "$cfgfile"
  grep -q 'gc.v1.scheduler' "$cfgfile" && it_die "could not drop the GC table"
  containerd --config "$cfgfile" >>"$IT_CTRD_LOG" 2>&1 &
  IT_CTRD_PID=$!
  wait_for 30 "containerd socket" ctr -a "$IT_CTRD_SOCK" version ||
    it_die "containerd did not restart"
  it_log "containerd restarted with default GC/log settings, pid $IT_CTRD_PID"
fi

# ----------------------------------------------------------- measurements ---
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then order=("${CONFIGS[@]}")
  else order=(); for ((i = ${#CONFIGS[@]} - 1; i >= 0; i--)); do order+=("${CONFIGS[i]}"); done; fi
  for cfg in "${order[@]}"; do run_config "$cfg" "$r"; done
done
LOAD_AFTER=$(loadavg)

# ---------------------------------------------------------------- report ---
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
field() { # CONFIG JQ_EXPR : one value per round
  local f
  for f in "$RES/$1".r*.json; do jq -r "$2 // empty" "$f" 2>/dev/null; done
}
ms() { awk -v v="$1" 'BEGIN {if (v == "nan") print "-"; else printf "%.2f", v / 1000}'; }

echo "== machine"
echo "kernel:       $(uname -r) ($(uname -m))"
echo "cpus:         $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "memory:       $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "temp dir fs:  $(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$IT_TMP" | head -n1)"
echo "containerd:   $(containerd --version | awk '{print $3}'); config: $CMP_CTRD_CONFIG"
echo "load average: before $LOAD_BEFORE, after $LOAD_AFTER"
echo "workload:     ${WORKLOAD[*]}, $ROUNDS rounds"
echo
echo "== results (median over rounds; latencies in ms)"
printf '%-16s %9s %10s %17s %17s %17s %10s\n' config "ops/s" "min-max" \
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
  printf '%-16s %9.1f %10s %17s %17s %17s %9s%%\n' "$cfg" "$ops" \
    "$(printf '%.0f-%.0f' "${mn:-0}" "${mx:-0}")" "${cols[@]}" "$stall"
done
echo
ratios=()
for ((r = 0; r < ROUNDS; r++)); do
  n=$(jq -r '.total_ops_per_s // empty' "$RES/ctrd-native.r$r.json" 2>/dev/null)
  s=$(jq -r '.total_ops_per_s // empty' "$RES/ctrd-snapledger.r$r.json" 2>/dev/null)
  [[ -n $n && -n $s ]] && ratios+=("$(awk -v a="$s" -v b="$n" 'BEGIN {printf "%.4f", a / b}')")
done
if ((${#ratios[@]} > 0)); then
  ratio=$(printf '%s\n' "${ratios[@]}" | median)
  echo "snapledger/native through containerd: $(awk -v v="$ratio" 'BEGIN {printf "%.1f%%", v * 100}')" \
    "(median of per-round ratios: $(printf '%s\n' "${ratios[@]}" | awk '{printf "%s%.1f%%", (NR > 1 ? " " : ""), $1 * 100}'))"
  if awk -v v="$ratio" 'BEGIN {exit !(v >= 0.85)}'; then
    echo "target >= 85%: PASS"
  else
    echo "target >= 85%: FAIL (informational)"
  fi
else
  echo "snapledger/native through containerd: n/a (no complete round)"
fi
echo "tool errors: $TOOL_ERRORS, leak findings: $LEAKS"
if [[ -n ${CMP_SAVE:-} ]]; then
  mkdir -p "$CMP_SAVE" && cp "$RES"/*.json "$RES"/*.psi "$CMP_SAVE"/ && it_log "JSON copied to $CMP_SAVE"
fi
((TOOL_ERRORS == 0 && LEAKS == 0)) || exit 1
exit 0
