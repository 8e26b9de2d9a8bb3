#!/usr/bin/env bash
# remote_pair.sh SNAPLEDGERD SNAPBENCH GO_TOOLS_DIR [ROUNDS]
#
# The cost of the ledger in front of an existing proxy snapshotter, through
# containerd, in one sitting: containerd's overlayfs snapshotter served over
# gRPC by tests/go's snapshotter-serve, registered as proxy plugin
# `snapledger`
#   direct: containerd → snapshotter-serve
#   chain:  containerd → snapledgerd --backend remote → snapshotter-serve
# ROUNDS rounds (default 3), alternating the order (even rounds direct
# first) to cancel drift; every run on fresh roots and a fresh containerd
# (tests/integration/lib.sh: private mount+pid namespace, cleaned up on
# exit). Each run: snapbench --containerd --clients 4 --chains 40 --depth 5
# (RP_ARGS overrides). Prints per run ops/s, RPC count, errors and the CPU
# time (clock ticks, utime+stime from /proc/PID/stat) of the downstream and
# of snapledgerd over the run, and with perf (linux-perf) the context
# switches per RPC of each (every thread); then the chain/direct ratio per
# round. snapledgerd logs at warn. Needs root, containerd/ctr 1.6, jq.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
[[ $# -ge 3 ]] || { echo "usage: $0 SNAPLEDGERD SNAPBENCH GO_TOOLS_DIR [ROUNDS]" >&2; exit 2; }
RP_SLD=$(readlink -f "$1")
RP_BENCH=$(readlink -f "$2")
IT_SNAPSHOTTER_SERVE=$(readlink -f "$3")/snapshotter-serve
export IT_BACKEND=remote IT_SNAPSHOTTER_SERVE
RP_ROUNDS=${4:-3}
RP_ARGS=${RP_ARGS:---clients 4 --chains 40 --depth 5}
export RP_SLD RP_BENCH RP_ROUNDS RP_ARGS
# shellcheck source=../tests/integration/lib.sh
source "$HERE/../tests/integration/lib.sh"
it_enter_private_namespace "$@"
it_setup

# lib.sh starts snapledgerd with --log-level debug; benchmarks log at warn.
SLD_WARN=$IT_TMP/snapledgerd-warn
cat >"$SLD_WARN" <<SH
#!/usr/bin/env bash
args=()
while [[ \$# -gt 0 ]]; do
  if [[ \$1 == --log-level ]]; then shift 2; continue; fi
  args+=("\$1"); shift
done
exec "$RP_SLD" "\${args[@]}" --log-level warn
SH
chmod +x "$SLD_WARN"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HAVE_PERF=0
perf stat -x, -e context-switches -o "$IT_TMP/perf.check" true >/dev/null 2>&1 && HAVE_PERF=1
cs_start() { # PID TAG : count PID's context switches until cs_stop
  ((HAVE_PERF)) || return 0
  perf stat -x, -e context-switches -p "$1" -o "$IT_TMP/$2.perf" 2>/dev/null &
  echo $! >"$IT_TMP/$2.perfpid"
  sleep 0.5  # perf gives no sign of having attached; it takes << 0.5 s
}
cs_stop() { # TAG RPCS : context switches per RPC, "-" without perf
  local p n
  [[ -s $IT_TMP/$1.perfpid ]] || { echo -; return; }
  p=$(cat "$IT_TMP/$1.perfpid"); rm -f "$IT_TMP/$1.perfpid"
  kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null
  n=$(awk -F, '$3 == "context-switches" {print $1}' "$IT_TMP/$1.perf")
  awk -v n="$n" -v r="$2" 'BEGIN {if (n == "" || r <= 0) print "-"; else printf "%.1f", n / r}'
}
declare -A RATE
run() { # CONFIG ROUND
  local cfg=$1 r=$2 sock pid_sl='' out c0d c0s=0 c1d c1s=0 ops n errs
  rm -rf "$IT_TMP/downstream" "$IT_TMP/snapledger" "$IT_TMP/containerd"
  if [[ $cfg == chain ]]; then
    snapledgerd_start "$SLD_WARN" || it_die "snapledgerd did not start"
    sock=$IT_SL_SOCK pid_sl=$IT_SL_PID
  else
    downstream_start || it_die "snapshotter-serve did not start"
    sock=$IT_DS_SOCK
  fi
  containerd_start snapledger "$sock" || it_die "containerd did not start"
  cs_start "$IT_DS_PID" ds; [[ -n $pid_sl ]] && cs_start "$pid_sl" sl
  c0d=$(cpu "$IT_DS_PID"); [[ -n $pid_sl ]] && c0s=$(cpu "$pid_sl")
  # shellcheck disable=SC2086  # RP_ARGS: words on purpose
  out=$("$RP_BENCH" --containerd --address "$IT_CTRD_SOCK" --snapshotter snapledger \
        --namespace "bench$r$cfg" $RP_ARGS --json 2>/dev/null)
  c1d=$(cpu "$IT_DS_PID"); [[ -n $pid_sl ]] && c1s=$(cpu "$pid_sl")
  ops=$(jq -r '.total_ops_per_s' <<<"$out"); n=$(jq -r '.total_ops' <<<"$out")
  errs=$(jq -r '.total_errors' <<<"$out")
  local csd css=-
  csd=$(cs_stop ds "$n"); [[ -n $pid_sl ]] && css=$(cs_stop sl "$n")
  RATE[$cfg$r]=$ops
  printf 'round %d %-6s ops/s %8.1f  rpcs %d  errors %d  cpu ticks: downstream %d, snapledgerd %d; cs/RPC: downstream %s, snapledgerd %s\n' \
    "$r" "$cfg" "$ops" "$n" "$errs" "$((c1d - c0d))" "$((c1s - c0s))" "$csd" "$css"
  [[ $errs == 0 ]] || IT_FAILED=$((IT_FAILED + 1))
  containerd_stop; snapledgerd_stop; downstream_stop
}
for ((r = 0; r < RP_ROUNDS; r++)); do
  if ((r % 2 == 0)); then run direct "$r"; run chain "$r"; else run chain "$r"; run direct "$r"; fi
done
for ((r = 0; r < RP_ROUNDS; r++)); do
  awk -v r="$r" -v c="${RATE[chain$r]}" -v d="${RATE[direct$r]}" \
    'BEGIN { printf "round %d: chain/direct = %.2fx\n", r, c / d }'
done
