#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for
# notify_test.sh SNAPLEDGERD_BINARY
#
# systemd readiness (install/snapledgerd.service is Type=notify), without
# systemd: a test listener (notify_listener.py) plays the service manager on
# NOTIFY_SOCKET. READY=1 arrives after recovery (of a ledger left with a
# pending intent by a crash point, when the build has them) and only once
# both sockets accept: the listener connects to each the moment READY
# arrives. With WATCHDOG_USEC the daemon pets the watchdog; without it, it
# does not. SIGTERM sends STOPPING=1. No containerd.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

SNAPLEDGERD=${1:-${SNAPLEDGERD:-}}
[[ -n $SNAPLEDGERD ]] || { echo "usage: $0 SNAPLEDGERD_BINARY" >&2; exit 2; }
SNAPLEDGERD=$(readlink -f "$SNAPLEDGERD")
[[ -x $SNAPLEDGERD ]] || { echo "not an executable: $SNAPLEDGERD" >&2; exit 2; }
export SNAPLEDGERD
command -v python3 >/dev/null || { echo "SKIP: needs python3" >&2; exit 77; }

it_enter_private_namespace "$@"
it_setup

SN=snapledger
sls() { sld snapshots --snapshotter "$SN" "$@"; }
LISTENER_PID=
EVENTS=$IT_TMP/notify.events
NOTIFY_SOCK=$IT_TMP/notify.sock

listener_start() {
  rm -f "$NOTIFY_SOCK" "$EVENTS"
  python3 "$HERE/notify_listener.py" "$NOTIFY_SOCK" "$EVENTS" \
    "$IT_TMP/snapledgerd.log" "$IT_TMP/snapledger.sock" \
    "$IT_TMP/snapledger-admin.sock" &
  LISTENER_PID=$!
  wait_for 10 "the notify listener" grep -q listening "$EVENTS"
}
listener_stop() {
  [[ -n $LISTENER_PID ]] || return 0
  kill -TERM "$LISTENER_PID" 2>/dev/null
  wait "$LISTENER_PID" 2>/dev/null
  LISTENER_PID=
}
trap 'listener_stop; it_cleanup' EXIT

# events_after_ready : the listener's lines from READY=1 on.
events_after_ready() { awk '/ msg READY=1/ {on = 1} on' "$EVENTS"; }
count_msgs() { grep -c " msg $1" "$EVENTS"; }

# -------------------------------------------- a ledger left mid-operation ---
echo "== a pending intent for recovery"
export SNAPLEDGER_CRASH_AT=prepare.after_intent
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
unset SNAPLEDGER_CRASH_AT
it_run sls prepare ns1/1/pending
PENDING=0
if wait_pid_exit "$IT_SL_PID" 10; then
  wait "$IT_SL_PID" 2>/dev/null
  IT_SL_PID=
  PENDING=1
  it_pass "the daemon dies at prepare.after_intent, leaving its intent in the ledger"
else
  # A build without crash points: the prepare simply succeeded.
  it_skip "a pending intent to recover" "built without SNAPLEDGER_CRASH_POINTS"
  snapledgerd_stop || it_fail "snapledgerd exits 0 on SIGTERM" "exit $?"
fi

# --------------------------------------------- READY, with a watchdog ---
echo "== READY=1 after recovery, once both sockets accept; the watchdog"
listener_start || it_die "the notify listener did not start"
export NOTIFY_SOCKET=$NOTIFY_SOCK WATCHDOG_USEC=1000000
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
unset NOTIFY_SOCKET WATCHDOG_USEC
wait_for 10 "READY=1" grep -q " msg READY=1" "$EVENTS" ||
  it_fail "READY=1 arrives" "$(cat "$EVENTS")"
assert_eq "exactly one READY=1" 1 "$(count_msgs 'READY=1')"
assert_match "READY=1 comes with a STATUS naming the socket" \
  " msg READY=1\|STATUS=serving on $IT_TMP/snapledger.sock\$" "$(cat "$EVENTS")"
assert_eq "STATUS=recovering the ledger came before READY=1" \
  "recovering the ledger" \
  "$(awk '/ msg READY=1/ {exit} / msg STATUS=/ {sub(/.* msg STATUS=/, ""); s = $0} END {print s}' "$EVENTS")"
ready_events=$(events_after_ready)
assert_match "at READY=1 the Snapshots socket accepts a connection" \
  "connect $IT_TMP/snapledger.sock ok\$" "$ready_events"
assert_match "at READY=1 the admin socket accepts a connection" \
  "connect $IT_TMP/snapledger-admin.sock ok\$" "$ready_events"
if ((PENDING)); then
  assert_match "at READY=1 recovery has resolved the pending intent" \
    "recovery-logged .*recovery: 1 intents resolved" "$ready_events"
else
  assert_match "at READY=1 recovery is done (and logged)" \
    "recovery-logged .*recovery: [0-9]+ intents resolved" "$ready_events"
fi
assert_match "the daemon logs the watchdog's period (half of WATCHDOG_USEC)" \
  "watchdog: petting every 500ms" "$(snapledgerd_last_log)"
pets_after_ready() { [[ $(events_after_ready | grep -c ' msg WATCHDOG=1$') -ge $1 ]]; }
if wait_for 5 "3 watchdog pets" pets_after_ready 3; then
  it_pass "WATCHDOG=1 arrives every half interval while serving (3 within 5s)"
else
  it_fail "WATCHDOG=1 arrives while serving" "$(cat "$EVENTS")"
fi
assert_cmd_ok "the daemon serves after READY" sls ls

snapledgerd_stop
assert_eq "exits 0 on SIGTERM" 0 "$?"
assert_match "SIGTERM: STOPPING=1 with a STATUS" " msg STOPPING=1\|STATUS=" \
  "$(cat "$EVENTS")"
listener_stop

# ------------------------------------------- READY without a watchdog ---
echo "== without WATCHDOG_USEC: READY, no pets"
listener_start || it_die "the notify listener did not start"
export NOTIFY_SOCKET=$NOTIFY_SOCK
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
unset NOTIFY_SOCKET
wait_for 10 "READY=1" grep -q " msg READY=1" "$EVENTS" ||
  it_fail "READY=1 arrives (no watchdog)" "$(cat "$EVENTS")"
assert_match "on a clean restart too, READY=1 after the sockets accept" \
  "connect $IT_TMP/snapledger.sock ok\$" "$(events_after_ready)"
sleep 1.5
assert_eq "no WATCHDOG=1 without WATCHDOG_USEC" 0 "$(count_msgs 'WATCHDOG=1')"
assert_no_match "no watchdog started" "watchdog:" "$(snapledgerd_last_log)"
snapledgerd_stop
assert_eq "exits 0 on SIGTERM (no watchdog)" 0 "$?"
listener_stop
exit 0   # the EXIT trap prints the summary and sets the status
