# shellcheck shell=bash
# lib.sh — helpers shared by crash_sweep.sh and random_kill.sh.
# Source it from a bash script with `set -uo pipefail` after setting
# CR_DAEMON (snapledgerd) and CR_CLIENT (crash_client).
#
# Everything lives under one mktemp directory ($CR_TMP): daemon roots,
# sockets, journals, one log per daemon start. cr_cleanup (the EXIT trap)
# kills whatever daemon or client this script started — by pid — removes
# $CR_TMP (kept with CRASH_KEEP=1) and prints the final `N passed, M failed`.

# shellcheck disable=SC2317  # functions here are called indirectly (traps)
# shellcheck disable=SC2034  # CR_* results are read by the sourcing scripts
CR_PASSED=0
CR_FAILED=0
CR_TMP=
CR_PID=          # the running daemon's pid, if any
CR_CLIENT_PID=   # a background crash_client's pid, if any
CR_STARTS=0
CR_LOG=          # log of the latest daemon start
CR_LOG_LEVEL=${CR_LOG_LEVEL:-debug}
# snapledgerd's --backend (and crash_client check's): native (default),
# overlayfs or remote, from IT_BACKEND as in the integration suites. remote:
# snapledgerd proxies a downstream that this script runs and kills too:
# containerd's own snapshotter (CR_REMOTE_TYPE: native, the default, or
# overlayfs) served over gRPC by tests/go's snapshotter-serve
# (IT_SNAPSHOTTER_SERVE, its path).
CR_BACKEND=${IT_BACKEND:-native}
case $CR_BACKEND in
  native | overlayfs | remote) ;;
  *) echo "IT_BACKEND must be native, overlayfs or remote, not '$CR_BACKEND'" >&2; exit 2 ;;
esac
CR_BACKEND_ARGS=(--backend "$CR_BACKEND")  # completed by cr_setup for remote
CR_DS_PID=       # remote: the running downstream's pid, if any
CR_DS_SOCK=      # remote: its socket
CR_DS_STARTS=0
CR_START_US=     # latest start: from exec to serving, in microseconds
CR_RECOVERY_MS=  # latest start: recovery time the daemon reported
CR_INTENTS=      # latest start: intents recovery resolved
CR_RC=           # exit status set by cr_daemon_stop/kill/wait_death

cr_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cr_pass() { CR_PASSED=$((CR_PASSED + 1)); printf 'PASS: %s\n' "$1"; }
cr_fail() {
  CR_FAILED=$((CR_FAILED + 1))
  printf 'FAIL: %s\n' "$1"
  shift
  local arg line
  for arg in "$@"; do
    while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$arg"
  done
}

cr_now_us() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }

# cr_check ROOT JOURNAL [ARGS...] : crash_client check of ROOT with the
# backend under test.
cr_check() {
  local root=$1 journal=$2
  shift 2
  local remote=()
  [[ $CR_BACKEND == remote ]] && remote=(--remote-address "unix://$CR_DS_SOCK")
  "$CR_CLIENT" check --root "$root" --journal "$journal" --backend "$CR_BACKEND" \
    "${remote[@]}" "$@"
}

# cr_setup : make $CR_TMP and install the traps.
cr_setup() {
  [[ -x $CR_DAEMON ]] || { echo "not executable: $CR_DAEMON" >&2; exit 2; }
  [[ -x $CR_CLIENT ]] || { echo "not executable: $CR_CLIENT" >&2; exit 2; }
  if [[ $CR_BACKEND == remote && ! -x ${IT_SNAPSHOTTER_SERVE:-} ]]; then
    echo "IT_BACKEND=remote needs IT_SNAPSHOTTER_SERVE (tests/go's snapshotter-serve)" >&2
    exit 2
  fi
  CR_TMP=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-crash.XXXXXX") || exit 2
  mkdir -p "$CR_TMP/logs"
  if [[ $CR_BACKEND == remote ]]; then
    CR_DS_SOCK=$CR_TMP/downstream.sock
    CR_BACKEND_ARGS+=(--remote-address "unix://$CR_DS_SOCK")
  fi
  trap cr_cleanup EXIT
  trap 'cr_log "interrupted"; exit 130' INT
  trap 'cr_log "terminated"; exit 143' TERM
  trap 'exit 129' HUP
}

# cr_pid_gone PID : whether PID has exited (a zombie child counts).
cr_pid_gone() {
  kill -0 "$1" 2>/dev/null || return 0
  [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

# cr_wait_gone PID SECS : 0 once PID has exited, 1 on timeout.
cr_wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  until cr_pid_gone "$pid"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.01
  done
  return 0
}

# cr_daemon_start ROOT SOCK [VAR=VALUE...] : start snapledgerd with the given
# environment and wait until it serves (its log says so and the socket
# exists: a stale socket from a killed daemon is not enough). Sets CR_PID,
# CR_LOG, CR_START_US, CR_RECOVERY_MS, CR_INTENTS. 1 if it did not come up
# within 60 s (it is killed then).
cr_daemon_start() {
  local root=$1 sock=$2
  shift 2
  CR_STARTS=$((CR_STARTS + 1))
  CR_LOG=$CR_TMP/logs/daemon.$(printf %04d "$CR_STARTS").log
  local t0 deadline=$((SECONDS + 60))
  : >"$CR_LOG"
  t0=$(cr_now_us)
  env "$@" "$CR_DAEMON" --root "$root" --address "$sock" "${CR_BACKEND_ARGS[@]}" \
    --log-level "$CR_LOG_LEVEL" >"$CR_LOG" 2>&1 &
  CR_PID=$!
  until [[ -S $sock ]] && grep -q 'serving on' "$CR_LOG"; do
    if cr_pid_gone "$CR_PID"; then
      wait "$CR_PID"
      cr_log "snapledgerd exited with status $? before serving; log tail:"
      tail -n 20 "$CR_LOG" >&2
      CR_PID=
      return 1
    fi
    if ((SECONDS >= deadline)); then
      cr_log "snapledgerd did not serve within 60s; log tail:"
      tail -n 20 "$CR_LOG" >&2
      cr_daemon_kill
      return 1
    fi
    sleep 0.005
  done
  CR_START_US=$(($(cr_now_us) - t0))
  CR_RECOVERY_MS=$(sed -n 's/.*recovery: .* in \([0-9][0-9]*\) ms.*/\1/p' \
    "$CR_LOG" | tail -n 1)
  CR_INTENTS=$(sed -n 's/.*recovery: \([0-9][0-9]*\) intents resolved.*/\1/p' \
    "$CR_LOG" | tail -n 1)
  # Intents completed from whole backend work (a completion the crash lost,
  # or work done before it): prepares, commits, removes rolled forward.
  CR_FORWARD=$(sed -n 's/.*recovery: [0-9]* intents resolved (\([0-9]*\) prepares rolled forward, [0-9]* rolled back; \([0-9]*\) commits rolled forward, [0-9]* rolled back; \([0-9]*\) removes completed.*/\1 \2 \3/p' \
    "$CR_LOG" | tail -n 1)
  return 0
}

# The three below set CR_RC to the daemon's exit status (not printed: they
# must run in this shell, which alone can reap the daemon).

# cr_daemon_stop : SIGTERM and wait (30 s, then SIGKILL: CR_RC=timeout).
cr_daemon_stop() {
  CR_RC=0
  [[ -n $CR_PID ]] || return 0
  kill -TERM "$CR_PID" 2>/dev/null
  if cr_wait_gone "$CR_PID" 30; then
    wait "$CR_PID"; CR_RC=$?
  else
    cr_log "snapledgerd did not stop within 30s of SIGTERM; SIGKILL"
    kill -KILL "$CR_PID" 2>/dev/null
    wait "$CR_PID" 2>/dev/null
    CR_RC=timeout
  fi
  CR_PID=
}

# cr_daemon_kill : kill -9 and reap (CR_RC=137).
cr_daemon_kill() {
  CR_RC=none
  [[ -n $CR_PID ]] || return 0
  kill -KILL "$CR_PID" 2>/dev/null
  wait "$CR_PID" 2>/dev/null; CR_RC=$?
  CR_PID=
}

# cr_daemon_wait_death SECS : wait for the daemon to die on its own (an
# armed crash point); CR_RC=alive after SECS (it is left running).
cr_daemon_wait_death() {
  if cr_wait_gone "$CR_PID" "$1"; then
    wait "$CR_PID" 2>/dev/null; CR_RC=$?
    CR_PID=
  else
    CR_RC=alive
  fi
}

# cr_ds_start [ROOT] : remote only: start the downstream (snapshotter-serve
# on ROOT, default $CR_TMP/downstream) and wait until its socket appears (it
# binds under a temporary name and renames once listening). Sets CR_DS_PID.
# 1 if it did not come up within 30 s.
cr_ds_start() {
  CR_DS_STARTS=$((CR_DS_STARTS + 1))
  local log deadline=$((SECONDS + 30)) root=${1:-$CR_TMP/downstream}
  log=$CR_TMP/logs/downstream.$(printf %04d "$CR_DS_STARTS").log
  rm -f "$CR_DS_SOCK"  # a killed downstream's socket
  "$IT_SNAPSHOTTER_SERVE" -type "${CR_REMOTE_TYPE:-native}" \
    -root "$root" -address "$CR_DS_SOCK" -quiet >"$log" 2>&1 &
  CR_DS_PID=$!
  until [[ -S $CR_DS_SOCK ]]; do
    if cr_pid_gone "$CR_DS_PID" || ((SECONDS >= deadline)); then
      cr_log "the downstream did not start; log tail:"
      tail -n 20 "$log" >&2
      cr_ds_kill
      return 1
    fi
    sleep 0.005
  done
  return 0
}

# cr_ds_kill : remote only: kill -9 the downstream and reap it.
cr_ds_kill() {
  [[ -n $CR_DS_PID ]] || return 0
  kill -KILL "$CR_DS_PID" 2>/dev/null
  wait "$CR_DS_PID" 2>/dev/null
  CR_DS_PID=
}

cr_cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM HUP
  if [[ -n $CR_CLIENT_PID ]]; then
    # TERM: `timeout` passes it on to the crash_client it runs.
    kill -TERM "$CR_CLIENT_PID" 2>/dev/null
    wait "$CR_CLIENT_PID" 2>/dev/null
  fi
  if [[ -n $CR_PID ]]; then
    kill -KILL "$CR_PID" 2>/dev/null
    wait "$CR_PID" 2>/dev/null
  fi
  cr_ds_kill
  if [[ -n $CR_TMP && -d $CR_TMP ]]; then
    if [[ ${CRASH_KEEP:-0} == 1 ]]; then
      cr_log "kept $CR_TMP"
    else
      rm -rf --one-file-system "$CR_TMP"
    fi
  fi
  if [[ $rc -ne 0 && $CR_FAILED -eq 0 ]]; then CR_FAILED=1; fi
  echo "$CR_PASSED passed, $CR_FAILED failed"
  [[ $CR_FAILED -eq 0 ]] && exit 0
  exit 1
}
