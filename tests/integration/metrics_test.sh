#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for / it_run
# metrics_test.sh SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY
#
# Prometheus metrics (docs/metrics.md, issue 16), end to end against a real,
# private containerd 1.6 with snapledgerd registered as the proxy snapshotter
# `snapledger` (remove_policy = "defer", the containerd watcher on,
# dead_after = "2s", max_attempts = 2, reconcile_interval = "2s",
# metrics_address = "127.0.0.1:0": the daemon logs the port it got):
#
#   0. a non-loopback metrics_address is refused at start, naming the
#      setting that allows it;
#   1. the baseline: one image layer imported; the scrape passes
#      `promtool check metrics`; one committed live snapshot, an empty
#      removal queue, no drift, the watcher connected;
#   2. a known state, made on purpose:
#      - a dead container (its task killed; the container kept)
#        pinning the image's layer, and its snapshot removed through
#        containerd: the removal is held for the container;
#      - straight on snapledgerd's socket: a committed `base` with an active
#        child, `base` removed (pending, waiting for its child), and a
#        `busy` snapshot whose removal fails (mounted) until it is stuck;
#      - drift: an unrecorded object copied into the backend, and the
#        child's object deleted (missing);
#      then the scrape passes `promtool check metrics` and its values match:
#      queue by state, oldest pending age, attempts by outcome, snapshots by
#      kind and state, dead containers and the bytes they pin, drift, the
#      watcher, RPC/backend/ledger latencies counted, the ledger's size.
# Ends with a `FIGURES:` line (metric families, scrape bytes) and
# "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

it_take_binaries "$@"
for tool in curl promtool; do
  command -v "$tool" >/dev/null ||
    { echo "missing $tool (install/install-deps.sh: curl, prometheus)" >&2; exit 1; }
done

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=snapledger
CONF=$IT_TMP/snapledgerd.toml
CTRD_SOCK=$IT_TMP/containerd/containerd.sock
BACKEND_OBJECT='^[0-9]+$'

ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }   # through containerd
sls() { sld snapshots --snapshotter "$SN" "$@"; }     # straight to snapledgerd
sl_json() { timeout -k 5 "$IT_TIMEOUT" "$SNAPLEDGER" --address "$ADMIN" --json "$@" 2>/dev/null; }
ledger_all() { sl_json ls --all; }
# backend_id KEY : the backend id of the record under KEY (a raw key: those
# made straight on snapledgerd's socket have no namespace).
backend_id() {
  ledger_all | jq -r --arg k "$1" '[.[] | select(.key == $k)] | .[0].backend_id // empty'
}
task_status() { ctrd tasks ls | awk -v n="$1" '$1 == n {print $3}'; }
task_is() { [[ $(task_status "$1") == "$2" ]]; }

# --- the scrape ---
SCRAPE=$IT_TMP/scrape.txt
scrape() { curl -fsS --max-time 10 "$URL" >"$SCRAPE"; }
# value SERIES : the value of SERIES (name{labels} exactly as exposed), or
# empty.
value() { awk -v m="$1" '$1 == m {print $2}' "$SCRAPE"; }
# expect SERIES OP N : checks one value numerically (OP: == >= > <=).
expect() {
  local got
  got=$(value "$1")
  if [[ -n $got ]] && awk -v a="$got" -v b="$3" -v op="$2" 'BEGIN {
      exit !((op == "==" && a == b) || (op == ">=" && a >= b) ||
             (op == ">" && a > b) || (op == "<=" && a <= b)) }'; then
    it_pass "$1 $2 $3 (got $got)"
  else
    it_fail "$1 $2 $3" "got: '${got}'" \
      "$(it_indent "$(grep -F "${1%%\{*}" "$SCRAPE" | head -n 20)")"
  fi
}
# scrape_has SERIES OP N : for wait_for.
scrape_has() {
  scrape || return 1
  local got
  got=$(value "$1")
  [[ -n $got ]] && awk -v a="$got" -v b="$3" -v op="$2" 'BEGIN {
      exit !((op == "==" && a == b) || (op == ">=" && a >= b) || (op == ">" && a > b)) }'
}
promtool_ok() { # NAME
  if it_run promtool check metrics <"$SCRAPE" && [[ $IT_RC -eq 0 ]]; then
    it_pass "$1: promtool check metrics accepts the scrape"
  else
    it_fail "$1: promtool check metrics accepts the scrape" "$(it_indent "$IT_OUT")"
  fi
}

# ------------------------------------------ 0. non-loopback is refused ---
echo "== 0. a non-loopback metrics_address is refused"
it_run timeout 30 "$SNAPLEDGERD" --root "$IT_TMP/refused" --address "$IT_TMP/refused.sock" \
  --metrics-address 0.0.0.0:9305
assert_eq "0: snapledgerd exits 2 on --metrics-address 0.0.0.0:9305" 2 "$IT_RC"
assert_contains "0: the message names metrics_allow_non_loopback" \
  "metrics_allow_non_loopback = true" "$IT_OUT"
if [[ -S $IT_TMP/refused.sock ]]; then
  it_fail "0: no socket was made" "$IT_TMP/refused.sock exists"
else
  it_pass "0: no socket was made"
fi

# ---------------------------------------------------------- set-up ---
it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null || it_die "make_image.sh failed"
cat >"$CONF" <<EOF
remove_policy = "defer"
reconcile_interval = "2s"
containerd_address = "$CTRD_SOCK"
metrics_address = "127.0.0.1:0"
[remove_queue]
initial_backoff = "200ms"
max_backoff = "300ms"
max_attempts = 2
[containers]
dead_after = "2s"
EOF
snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not start"
ADMIN=${IT_SL_SOCK%.sock}-admin.sock
BACKEND_DIR=$(it_backend_dir)
URL=$(sed -nE 's#.*metrics on (http://127\.0\.0\.1:[0-9]+/metrics)$#\1#p' "$IT_SL_LOG" | tail -n1)
[[ -n $URL ]] || it_die "snapledgerd did not log its metrics URL: $(tail -n 20 "$IT_SL_LOG")"
it_log "metrics at $URL"
containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start"
[[ $IT_CTRD_SOCK == "$CTRD_SOCK" ]] || it_die "containerd's socket is $IT_CTRD_SOCK, not $CTRD_SOCK"
assert_cmd_ok "import the image with --snapshotter $SN" \
  ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
LAYER_SIZE=$(ledger_all | jq '[.[] | select(.kind == "committed")] | .[0].size')
it_log "layer: $LAYER_SIZE bytes"

# --------------------------------------------------------- 1. baseline ---
echo "== 1. the baseline"
wait_for 20 "a reconciliation and the watcher's listing" \
  scrape_has snapledger_watcher_connected == 1 &&
  wait_for 20 "a reconciliation" scrape_has snapledger_reconcile_last_run_timestamp_seconds '>' 0
scrape || it_fail "1: scrape" "curl $URL failed"
promtool_ok 1
expect 'snapledger_snapshots{kind="committed",state="live"}' == 1
for s in scheduled waiting_for_children held stuck; do
  expect "snapledger_removal_queue{state=\"$s\"}" == 0
done
expect snapledger_removal_oldest_pending_age_seconds == 0
expect 'snapledger_drift{type="unrecorded"}' == 0
expect 'snapledger_drift{type="missing"}' == 0
expect snapledger_watcher_connected == 1
expect snapledger_watcher_last_sync_timestamp_seconds '>' 0
expect snapledger_dead_containers == 0
expect snapledger_ledger_degraded == 0
expect snapledger_ledger_size_bytes '>' 0
expect 'snapledger_rpc_duration_seconds_count{code="OK",method="Prepare"}' '>=' 1
expect 'snapledger_rpc_duration_seconds_count{code="OK",method="Commit"}' '>=' 1
expect 'snapledger_backend_call_duration_seconds_count{op="create"}' '>=' 1
expect 'snapledger_ledger_write_duration_seconds_count{durability="synced"}' '>=' 2
expect 'snapledger_backend_timeouts_total{op="create"}' == 0

# ------------------------------------------------ 2. a known state ---
echo "== 2. a dead container, a held, a pending and a stuck removal, drift"
# The dead container: its task killed (left stopped), the container kept.
assert_cmd_ok "2: ctr run -d dead1 (sleep 600)" \
  ctrd run -d --snapshotter "$SN" "$IMG" dead1 sleep 600
wait_for 20 "dead1 running" task_is dead1 RUNNING
assert_cmd_ok "2: kill dead1's task" ctrd tasks kill -s KILL dead1
wait_for 20 "dead1 stopped" task_is dead1 STOPPED
# Its snapshot removed through containerd: the GC asks snapledgerd, which
# holds the removal while the container exists.
assert_cmd_ok "2: rm dead1's snapshot through containerd" ctrs rm dead1
if wait_for 30 "dead1's removal held" scrape_has 'snapledger_removal_queue{state="held"}' == 1; then
  it_pass "2: dead1's removal is held for its container"
else
  it_fail "2: dead1's removal is held for its container" "$(ledger_all | jq -c 'map([.key, .state, .held_by])')"
fi
# No more deletions through containerd from here on: its GC would remove
# what it did not make (the snapshots below).
assert_cmd_ok "2: base-a prepared on snapledgerd's socket" sls prepare base-a
assert_cmd_ok "2: ... committed as base" sls commit base base-a
assert_cmd_ok "2: child prepared on base" sls prepare child base
assert_cmd_ok "2: rm base: deferred (its child remains)" sls rm base
assert_cmd_ok "2: busy prepared" sls prepare busy
BUSY_MNT=$IT_TMP/busy-mnt
assert_cmd_ok "2: busy mounted (held busy)" sl_hold_mount busy "$BUSY_MNT"
assert_cmd_ok "2: rm busy: deferred (mounted)" sls rm busy
if wait_for 20 "busy's removal stuck" scrape_has 'snapledger_removal_queue{state="stuck"}' == 1; then
  it_pass "2: busy's removal is stuck after 2 attempts"
else
  it_fail "2: busy's removal is stuck after 2 attempts" "$(ledger_all | jq -c 'map([.key, .state, .remove_attempts])')"
fi
# Drift: an unrecorded object (a copy of the layer's) and the child's object
# gone.
LAYER_ID=$(ledger_all | jq -r '[.[] | select(.kind == "committed" and .state == "live")] | .[0].backend_id')
CHILD_ID=$(backend_id child)
[[ -n $LAYER_ID && -n $CHILD_ID ]] || it_die "ids: layer '$LAYER_ID' child '$CHILD_ID'"
cp -a "$BACKEND_DIR/$LAYER_ID" "$BACKEND_DIR/9100"
rm -rf --one-file-system "${BACKEND_DIR:?}/$CHILD_ID"
if wait_for 30 "the dead container reported" scrape_has snapledger_dead_containers == 1 &&
   wait_for 30 "drift found" scrape_has 'snapledger_drift{type="missing"}' == 1; then
  it_pass "2: the dead container and the drift are reported"
else
  it_fail "2: the dead container and the drift are reported" "$(it_indent "$(grep -E 'dead|drift' "$SCRAPE")")"
fi
scrape || it_fail "2: scrape" "curl $URL failed"
promtool_ok 2
expect 'snapledger_removal_queue{state="held"}' == 1
expect 'snapledger_removal_queue{state="waiting_for_children"}' == 1
expect 'snapledger_removal_queue{state="stuck"}' == 1
expect 'snapledger_removal_queue{state="scheduled"}' == 0
expect snapledger_removal_oldest_pending_age_seconds '>' 0
expect snapledger_removal_oldest_pending_age_seconds '<=' 600
expect 'snapledger_removal_attempts_total{outcome="stuck"}' == 1
expect 'snapledger_removal_attempts_total{outcome="removed"}' == 0
expect 'snapledger_removal_retries_total{trigger="backoff"}' == 1
expect 'snapledger_snapshots{kind="committed",state="live"}' == 1
expect 'snapledger_snapshots{kind="committed",state="remove_pending"}' == 1
expect 'snapledger_snapshots{kind="active",state="remove_pending"}' == 1
expect 'snapledger_snapshots{kind="active",state="stuck"}' == 1
expect 'snapledger_snapshots{kind="active",state="live"}' == 1
expect snapledger_dead_containers == 1
expect snapledger_dead_container_pinned_bytes == "$LAYER_SIZE"
expect 'snapledger_drift{type="unrecorded"}' == 1
expect 'snapledger_drift{type="missing"}' == 1
expect 'snapledger_drift{type="parent_mismatch"}' == 0
expect snapledger_watcher_connected == 1
expect 'snapledger_rpc_duration_seconds_count{code="OK",method="Remove"}' '>=' 3
expect 'snapledger_backend_call_errors_total{op="remove"}' '>=' 2
expect snapledger_ledger_write_errors_total == 0
expect snapledger_scrape_errors_total == 0
# What `snapledger stats` says agrees with the metrics.
STATS=$(sl_json stats)
assert_eq "2: snapledger stats: 1 stuck, as the metrics" 1 "$(jq -r '.removals_stuck' <<<"$STATS")"

FAMILIES=$(grep -c '^# TYPE snapledger_' "$SCRAPE")
umount -n "$BUSY_MNT" 2>/dev/null
echo "FIGURES: metric families $FAMILIES, scrape $(wc -c <"$SCRAPE") bytes"
echo "$IT_PASSED passed, $IT_FAILED failed"
((IT_FAILED == 0))
