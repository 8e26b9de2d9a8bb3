#!/usr/bin/env bash
# crash_sweep.sh SNAPLEDGERD CRASH_CLIENT
#
# Kills snapledgerd at every named crash point (store/crash_point.h; needs a
# build with -DSNAPLEDGER_CRASH_POINTS=ON) and checks what recovery makes of
# it.
#
# 1. Discovery: a daemon with SNAPLEDGER_CRASH_TRACE serves a random
#    workload, the steps' fixture and then every step of `crash_client steps
#    --all` in turn; the trace lines each step adds are the points it
#    crosses. Every point the trace lists must be crossed by some step.
# 2. For every (point, step crossing it): on a fresh root, a random workload
#    and the fixture are acknowledged, the daemon is stopped, restarted with
#    SNAPLEDGER_CRASH_AT=<point>, and the step is driven: the daemon must die
#    by SIGKILL (the point was reached) and the step's RPC must fail. The
#    daemon is restarted unarmed (recovery), stopped, and `crash_client
#    check` must find no violation: invariants hold, every acknowledged
#    operation survived, and the step happened entirely or not at all. For
#    the points documented in docs/architecture.md the direction (rolled
#    back or applied) and the number of intents recovery resolved are
#    checked too. Then the recovered daemon must serve a further workload
#    and a Cleanup, and pass the check again.
# Prints PASS/FAIL per case and ends with `N passed, M failed`.
# CRASH_KEEP=1 keeps the temp dir; SEED fixes the workloads' seeds.
# IT_BACKEND selects snapledgerd's backend (tests/crash/lib.sh). With
# remote, discovery and every case get a fresh downstream on a fresh root of
# their own (a case's ledger knows nothing of another case's objects), which
# runs through the whole case: only snapledgerd is killed here (random_kill.sh
# kills the downstream too).
set -uo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 SNAPLEDGERD CRASH_CLIENT" >&2; exit 2; }
CR_DAEMON=$(readlink -f "$1")
CR_CLIENT=$(readlink -f "$2")
# shellcheck source=tests/crash/lib.sh
source "$(dirname "$(readlink -f "$0")")/lib.sh"

SEED=${SEED:-$((RANDOM << 15 | RANDOM))}
echo "crash_sweep: seed $SEED"

# What recovery must make of a crash at a known point: outcome of the
# interrupted operation, and intents resolved at the next start. The intent
# is synced, the completion deferred (it stays in the ledger's memory until
# the next synced write), so a kill right after the completion loses it:
# recovery finds the intent, and rolls it forward when the backend work is
# whole (docs/reliability.md). Only a crash before the backend work rolls a
# prepare back; a commit whose object is whole is completed by recovery.
declare -A EXPECT=(
  [prepare.after_intent]="rolled-back 1"
  [prepare.after_backend]="applied 1"
  [prepare.after_complete]="applied 1"
  [commit.after_intent]="applied 1"
  [commit.after_backend]="applied 1"
  [commit.after_complete]="applied 1"
  [remove.after_intent]="applied 1"
  [remove.after_backend]="applied 1"
  [remove.after_complete]="applied 1"
)

cr_setup

# fresh_downstream DIR : remote only: (re)start the downstream on DIR/downstream.
fresh_downstream() {
  [[ $CR_BACKEND == remote ]] || return 0
  cr_ds_kill
  cr_ds_start "$1/downstream"
}

# workload ROOT SOCK JOURNAL SEED OPS : a short random workload, which must
# finish without disagreement.
workload() {
  local out
  out=$("$CR_CLIENT" run --address "$2" --journal "$3" --clients 2 \
    --ops "$5" --seed "$4" --keys 12 2>&1)
  local rc=$?
  [[ $rc -eq 0 && $out != *stopped* ]] && return 0
  printf '%s\n' "$out"
  return 1
}

# ------------------------------------------------------------- discovery ---
D=$CR_TMP/discover
mkdir -p "$D"
TRACE=$D/trace
: >"$TRACE"
mapfile -t STEPS < <("$CR_CLIENT" steps --all)
declare -A CROSSED_BY=()   # point -> "step step ..."
discover_ok=1
if ! fresh_downstream "$D"; then
  cr_fail "discovery: the downstream did not start"
  exit 1
fi
if ! cr_daemon_start "$D/root" "$D/sock" SNAPLEDGER_CRASH_TRACE="$TRACE"; then
  cr_fail "discovery: daemon did not start"
  exit 1
fi
if ! out=$(workload "$D/root" "$D/sock" "$D/journal" "$SEED" 60); then
  cr_fail "discovery: workload failed" "$out"
  discover_ok=0
fi
if ! out=$("$CR_CLIENT" fixture --address "$D/sock" --journal "$D/journal" 2>&1); then
  cr_fail "discovery: fixture failed" "$out"
  discover_ok=0
fi
for step in "${STEPS[@]}"; do
  before=$(wc -l <"$TRACE")
  if ! out=$("$CR_CLIENT" step --address "$D/sock" --journal "$D/journal" \
               --op "$step" 2>&1); then
    cr_fail "discovery: step $step failed on an unarmed daemon" "$out"
    discover_ok=0
  fi
  while IFS= read -r point; do
    [[ -n $point ]] || continue
    [[ " ${CROSSED_BY[$point]:-} " == *" $step "* ]] ||
      CROSSED_BY[$point]="${CROSSED_BY[$point]:-}${CROSSED_BY[$point]:+ }$step"
  done < <(tail -n +"$((before + 1))" "$TRACE" | sort -u)
done
cr_daemon_stop
if [[ $CR_RC != 0 ]]; then
  cr_fail "discovery: daemon did not stop cleanly (exit $CR_RC)"
  discover_ok=0
fi
if ! out=$(cr_check "$D/root" "$D/journal" 2>&1); then
  cr_fail "discovery: check of the unarmed run failed" "$out"
  discover_ok=0
fi
mapfile -t POINTS < <(sort -u "$TRACE")
if [[ ${#POINTS[@]} -eq 0 ]]; then
  cr_fail "discovery: the trace is empty (snapledgerd built without -DSNAPLEDGER_CRASH_POINTS=ON?)"
  exit 1
fi
for point in "${POINTS[@]}"; do
  if [[ -z ${CROSSED_BY[$point]:-} ]]; then
    cr_fail "discovery: point $point is in the trace but no step crosses it"
    discover_ok=0
  fi
done
for point in "${!EXPECT[@]}"; do
  if [[ -z ${CROSSED_BY[$point]:-} ]]; then
    cr_fail "discovery: documented point $point was never crossed"
    discover_ok=0
  fi
done
if ((discover_ok)); then
  cr_pass "discovery: ${#POINTS[@]} crash points, each crossed by a step"
fi
for point in "${POINTS[@]}"; do
  echo "  $point: ${CROSSED_BY[$point]:-none}"
done

# ----------------------------------------------------------------- sweep ---
declare -A COVERED=()
n=0
for point in "${POINTS[@]}"; do
  for step in ${CROSSED_BY[$point]:-}; do
    n=$((n + 1))
    name="$point via $step"
    C=$CR_TMP/case-$n
    mkdir -p "$C"
    R=$C/root S=$C/sock J=$C/journal

    if ! fresh_downstream "$C"; then
      cr_fail "$name: the downstream did not start"; continue
    fi
    # Acknowledged state before the crash.
    if ! cr_daemon_start "$R" "$S"; then
      cr_fail "$name: daemon did not start"; continue
    fi
    if ! out=$(workload "$R" "$S" "$J" "$((SEED + n))" 25) ||
       ! out=$("$CR_CLIENT" fixture --address "$S" --journal "$J" 2>&1); then
      cr_daemon_stop
      cr_fail "$name: setup failed" "$out"; continue
    fi
    cr_daemon_stop

    # Armed: the step must kill the daemon.
    if ! cr_daemon_start "$R" "$S" SNAPLEDGER_CRASH_AT="$point"; then
      cr_fail "$name: armed daemon did not start"; continue
    fi
    armed_log=$CR_LOG
    step_out=$("$CR_CLIENT" step --address "$S" --journal "$J" --op "$step" 2>&1)
    step_rc=$?
    cr_daemon_wait_death 30
    death=$CR_RC
    if [[ $death == alive ]]; then
      cr_daemon_stop
      cr_fail "$name: the daemon did not die (point not reached)" "$step_out"
      continue
    fi
    if [[ $death != 137 ]]; then
      cr_fail "$name: the daemon exited with status $death, not by SIGKILL" \
        "$step_out" "$(tail -n 10 "$armed_log")"
      continue
    fi
    if [[ $step_rc -ne 3 ]]; then
      cr_fail "$name: the step's RPC did not fail as uncertain (exit $step_rc)" \
        "$step_out"
      continue
    fi

    # Recovery, then the offline check.
    if ! cr_daemon_start "$R" "$S"; then
      cr_fail "$name: daemon did not recover"; continue
    fi
    rec_log=$CR_LOG rec_ms=${CR_RECOVERY_MS:-?} intents=${CR_INTENTS:-?}
    cr_daemon_stop
    if [[ $CR_RC != 0 ]]; then
      cr_fail "$name: recovered daemon did not stop cleanly (exit $CR_RC)" \
        "$(tail -n 10 "$rec_log")"
      continue
    fi
    check_out=$(cr_check "$R" "$J" 2>&1)
    check_rc=$?
    opid=$(sed -n 's/.*opid=\([^ ]*\).*/\1/p' <<<"$step_out")
    outcome=none
    if [[ -n $opid ]]; then
      outcome=$(sed -n "s/^resolved: $opid .* -> \\([a-z-]*\\)\$/\\1/p" \
        <<<"$check_out")
    fi
    if [[ $check_rc -ne 0 ]]; then
      cr_fail "$name: check after recovery found violations" "$check_out" \
        "recovery log:" "$(grep -i recovery "$rec_log")"
      continue
    fi
    problems=()
    if [[ -n $opid && -z $outcome ]]; then
      problems+=("the check did not resolve the step's operation $opid")
    fi
    if [[ -n ${EXPECT[$point]:-} ]]; then
      read -r want_outcome want_intents <<<"${EXPECT[$point]}"
      if [[ -n $opid && $outcome != "$want_outcome" ]]; then
        problems+=("expected the operation $want_outcome, it was ${outcome:-unresolved}")
      fi
      if [[ $intents != "$want_intents" ]]; then
        problems+=("expected recovery to resolve $want_intents intents, it reported $intents")
      fi
    fi
    if ((${#problems[@]} > 0)); then
      cr_fail "$name" "${problems[@]}" "$check_out"
      continue
    fi

    # The recovered state must serve and stay consistent.
    if ! cr_daemon_start "$R" "$S"; then
      cr_fail "$name: daemon did not restart after recovery"; continue
    fi
    post_ok=1
    if ! out=$(workload "$R" "$S" "$J" "$((SEED + 1000 + n))" 25); then
      post_ok=0
    # A stop leaves removed trees the background deleter has not reached yet
    # as rm-* for the next Cleanup, by design (plugin/backend/fs/
    # object_dir.h); containerd calls Cleanup after every GC pass, and so
    # does this before the stop, so that the check below finds none.
    elif ! out=$("$CR_CLIENT" step --address "$S" --journal "$J" --op cleanup 2>&1); then
      post_ok=0
    fi
    cr_daemon_stop
    if ((post_ok)) && [[ $CR_RC == 0 ]]; then
      out=$(cr_check "$R" "$J" 2>&1) || post_ok=0
    else
      post_ok=0
    fi
    if ((!post_ok)); then
      cr_fail "$name: after recovery, a further workload failed or broke consistency" "$out"
      continue
    fi
    COVERED[$point]=1
    cr_pass "$name: ${outcome/none/no journaled operation}, recovery resolved $intents intents in $rec_ms ms"
    cr_ds_kill
    rm -rf "$C"
  done
done

echo "crash_sweep: ${#COVERED[@]} of ${#POINTS[@]} traced points covered by passing cases"
if ((${#COVERED[@]} < ${#POINTS[@]})); then
  missing=()
  for point in "${POINTS[@]}"; do
    [[ -n ${COVERED[$point]:-} ]] || missing+=("$point")
  done
  cr_fail "sweep covers fewer points than the trace lists" "not covered: ${missing[*]}"
fi
exit 0
