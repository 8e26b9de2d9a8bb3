#!/usr/bin/env bash
# random_kill.sh SNAPLEDGERD CRASH_CLIENT [ROUNDS]
#
# Kills snapledgerd with SIGKILL at random moments under a concurrent
# workload, ROUNDS times (default 200) on one root that accumulates state,
# and checks after every restart that recovery left the ledger, the backend
# and the clients' journal consistent (crash_client check). One round:
#   crash_client run (4 clients) against the serving daemon → sleep 20–300 ms
#   from its first operation → kill -9 → [1 round in 8: restart and kill -9
#   again 0–40 ms in, i.e. during start-up or recovery] → restart (recovery;
#   timed) → crash_client check, reading the ledger read-only beside the
#   recovered, idle daemon, which then serves the next round. Every
#   CLEAN_EVERY-th round instead stops it with SIGTERM (must exit 0), checks
#   with no daemon running, and starts it again: clean restarts in between.
# With IT_BACKEND=remote (crash/lib.sh) snapledgerd proxies a downstream
# (containerd's snapshotter served by snapshotter-serve) that is killed too:
# each round kills snapledgerd, the downstream, or both (a third each, in a
# random order for both). A downstream killed alone leaves snapledgerd
# serving: the clients stop at their first uncertain answer, the downstream
# is restarted. Before each check the script waits (up to 60 s) until the
# idle daemon has resolved by itself what the lost calls left: intents and
# queued removals (see settle).
# Knobs: SEED (workload and timing draws; printed), KEYS (default 48),
# CLIENTS (4), CLEAN_EVERY (10), CR_LOG_LEVEL (info), CRASH_KEEP=1 keeps the
# temp dir. Prints kills, acknowledged operations, violations, recovery
# times, and ends with `N passed, M failed` (rounds). Stops at the first
# failed round (later rounds would only repeat it); the failure names the
# command that reproduces it: same SEED, ROUNDS = the failing round (the
# workload and delays repeat exactly; where the kill lands depends on
# timing, so a rare interleaving may need a few tries).
set -uo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 SNAPLEDGERD CRASH_CLIENT [ROUNDS]" >&2; exit 2; }
CR_DAEMON=$(readlink -f "$1")
CR_CLIENT=$(readlink -f "$2")
ROUNDS=${RK_ROUNDS:-${3:-200}}  # RK_ROUNDS (env) overrides: CTest's overlayfs run
KEYS=${KEYS:-48}
CLIENTS=${CLIENTS:-4}
CLEAN_EVERY=${CLEAN_EVERY:-10}
CR_LOG_LEVEL=${CR_LOG_LEVEL:-info}
# shellcheck source=tests/crash/lib.sh
source "$(dirname "$(readlink -f "$0")")/lib.sh"

SEED=${SEED:-$((RANDOM << 15 | RANDOM))}
echo "random_kill: seed $SEED (reproduce: SEED=$SEED $0 $1 $2 $ROUNDS)"
RANDOM=$SEED

cr_setup
if [[ $CR_BACKEND == remote ]] && ! cr_ds_start; then
  cr_fail "the downstream did not start"
  exit 1
fi
ROOT=$CR_TMP/root
SOCK=$CR_TMP/snapledger.sock
JOURNAL=$CR_TMP/journal
wall0=$SECONDS

kills=0
ds_kills=0          # remote: kills of the downstream
recovery_kills=0
acked=0
uncertain=0
violations=0
rec_n=0 rec_sum=0 rec_max=0          # recovery as the daemon reports it (ms)
fwd_prepares=0 fwd_commits=0 fwd_removes=0  # intents recovery rolled forward
start_n=0 start_sum=0 start_max=0    # exec to serving (us)

note_start() {
  start_n=$((start_n + 1))
  start_sum=$((start_sum + CR_START_US))
  ((CR_START_US > start_max)) && start_max=$CR_START_US
  if [[ -n $CR_RECOVERY_MS ]]; then
    rec_n=$((rec_n + 1))
    rec_sum=$((rec_sum + CR_RECOVERY_MS))
    ((CR_RECOVERY_MS > rec_max)) && rec_max=$CR_RECOVERY_MS
  fi
  if [[ -n ${CR_FORWARD:-} ]]; then
    local p c r
    read -r p c r <<<"$CR_FORWARD"
    fwd_prepares=$((fwd_prepares + p))
    fwd_commits=$((fwd_commits + c))
    fwd_removes=$((fwd_removes + r))
  fi
}

fail_round() { # ROUND WHAT [DETAILS...]
  local r=$1 what=$2
  shift 2
  cr_fail "round $r: $what" "$@" "daemon log ($CR_LOG) tail:" \
    "$(tail -n 15 "$CR_LOG" 2>/dev/null)" \
    "reproduce: SEED=$SEED $0 $CR_DAEMON $CR_CLIENT $r"
}

# remote: a call the downstream never answered leaves an intent (resolved
# by the daemon once the downstream answers again, every second while any
# is left) or a queued removal (retried after 1 s, 2 s, ...), also when
# recovery ran before the new downstream accepted. Waits (up to 60 s) until
# the serving daemon has resolved them by itself; 1 if it did not.
settle() {
  local deadline=$((SECONDS + 60)) out
  while :; do
    out=$(cr_check "$ROOT" "$JOURNAL" --no-resolve 2>&1)
    grep -qE 'left in intent state|has state 7$' <<<"$out" || return 0
    ((SECONDS >= deadline)) && return 1
    sleep 0.5
  done
}

round=0
while ((round < ROUNDS)); do
  round=$((round + 1))
  run_seed=$((RANDOM << 15 | RANDOM))
  sleep_ms=$((20 + RANDOM % 281))
  kill_in_recovery=$((RANDOM % 8 == 0))
  recovery_kill_ms=$((RANDOM % 41))
  # remote: 0 snapledgerd, 1 the downstream, 2 both (3: both, the other
  # order); always snapledgerd otherwise.
  victim=0
  [[ $CR_BACKEND == remote ]] && victim=$((RANDOM % 4))

  if [[ -z $CR_PID ]] && ! cr_daemon_start "$ROOT" "$SOCK"; then
    fail_round "$round" "daemon did not start"
    break
  fi

  out=$CR_TMP/run.out
  ready=$CR_TMP/run.ready
  rm -f "$ready"
  timeout -k 5 120 "$CR_CLIENT" run --address "$SOCK" --journal "$JOURNAL" \
    --clients "$CLIENTS" --ops 1000000 --seed "$run_seed" --keys "$KEYS" \
    --ready-file "$ready" >"$out" 2>&1 &
  CR_CLIENT_PID=$!
  # The delay counts from the first operation, not from process start-up.
  deadline=$((SECONDS + 30))
  until [[ -e $ready ]] || cr_pid_gone "$CR_CLIENT_PID" || ((SECONDS >= deadline)); do
    sleep 0.002
  done
  sleep "$(printf '0.%03d' "$sleep_ms")"
  kill_rc=137
  case $victim in
    0) cr_daemon_kill; kill_rc=$CR_RC ;;
    1) cr_ds_kill ;;
    2) cr_daemon_kill; kill_rc=$CR_RC; cr_ds_kill ;;
    3) cr_ds_kill; cr_daemon_kill; kill_rc=$CR_RC ;;
  esac
  ((victim != 1)) && kills=$((kills + 1))
  ((victim != 0)) && ds_kills=$((ds_kills + 1))
  wait "$CR_CLIENT_PID"
  client_rc=$?
  CR_CLIENT_PID=
  a=$(sed -n 's/.*acknowledged=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
  u=$(sed -n 's/.*uncertain=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
  acked=$((acked + ${a:-0}))
  uncertain=$((uncertain + ${u:-0}))
  if [[ $kill_rc != 137 ]]; then
    fail_round "$round" "daemon was not alive to kill (exit status $kill_rc)" \
      "$(cat "$out")"
    break
  fi
  if [[ $client_rc -ne 0 ]]; then
    v=$(grep -c '^violation' "$out")
    violations=$((violations + v))
    fail_round "$round" "crash_client run failed (exit $client_rc)" \
      "$(cat "$out")"
    break
  fi

  if [[ $CR_BACKEND == remote ]] && ((victim != 0)) && ! cr_ds_start; then
    fail_round "$round" "the downstream did not restart"
    break
  fi
  if ((victim == 1)); then
    # snapledgerd kept serving without its downstream: it must still be
    # alive, and must resolve by itself what the lost calls left.
    if cr_pid_gone "$CR_PID"; then
      fail_round "$round" "snapledgerd died when its downstream did"
      break
    fi
    kill_in_recovery=0
  fi

  if ((kill_in_recovery)); then
    # A crash during start-up or recovery: recovery must be idempotent.
    CR_LOG=$CR_TMP/logs/daemon.recovery-kill.$round.log
    env "$CR_DAEMON" --root "$ROOT" --address "$SOCK" "${CR_BACKEND_ARGS[@]}" \
      --log-level "$CR_LOG_LEVEL" >"$CR_LOG" 2>&1 &
    CR_PID=$!
    sleep "$(printf '0.%03d' "$recovery_kill_ms")"
    cr_daemon_kill
    if [[ $CR_RC == 137 ]]; then
      recovery_kills=$((recovery_kills + 1))
      kills=$((kills + 1))
    fi
  fi

  if [[ -z $CR_PID ]]; then
    if ! cr_daemon_start "$ROOT" "$SOCK"; then
      fail_round "$round" "daemon did not recover"
      break
    fi
    note_start
  fi
  if [[ $CR_BACKEND == remote ]] && ! settle; then
    fail_round "$round" "what the lost downstream calls left (intents, queued removals) was not resolved within 60 s" \
      "$(cr_check "$ROOT" "$JOURNAL" --no-resolve 2>&1 | grep '^violation')"
    break
  fi
  if ((round % CLEAN_EVERY == 0)); then
    cr_daemon_stop
    if [[ $CR_RC != 0 ]]; then
      fail_round "$round" "daemon did not stop cleanly after recovery (exit $CR_RC)"
      break
    fi
  fi

  check_out=$(cr_check "$ROOT" "$JOURNAL" 2>&1)
  check_rc=$?
  v=$(grep -c '^violation' <<<"$check_out")
  violations=$((violations + v))
  if [[ $check_rc -ne 0 ]]; then
    fail_round "$round" "check found $v violations (kill after ${sleep_ms} ms)" \
      "$check_out" "client: $(cat "$out")"
    break
  fi
  CR_PASSED=$((CR_PASSED + 1))
  if ((round % 25 == 0)); then
    cr_log "round $round/$ROUNDS: $kills kills, $acked acknowledged, $violations violations"
  fi
done

mean() { # SUM N SCALE : SUM/N/SCALE with one decimal
  (($2 > 0)) || { echo "n/a"; return; }
  local tenths=$(( ($1 * 10 / $2 + $3 / 2) / $3 ))
  echo "$((tenths / 10)).$((tenths % 10))"
}
echo "random_kill: seed $SEED, $round rounds in $((SECONDS - wall0)) s"
echo "random_kill: kills $kills ($recovery_kills during start-up/recovery)"
[[ $CR_BACKEND == remote ]] && echo "random_kill: downstream kills $ds_kills"
echo "random_kill: acknowledged operations $acked (plus $uncertain in flight at a kill, each checked all-or-nothing)"
echo "random_kill: violations $violations"
echo "random_kill: rolled forward by recovery: $fwd_prepares prepares, $fwd_commits commits, $fwd_removes removes"
echo "random_kill: recovery (daemon-reported) mean $(mean "$rec_sum" "$rec_n" 1) ms, max $rec_max ms over $rec_n restarts"
echo "random_kill: start to serving mean $(mean "$start_sum" "$start_n" 1000) ms, max $(mean "$start_max" 1 1000) ms"
((violations > 0 && CR_FAILED == 0)) && CR_FAILED=1
exit 0
