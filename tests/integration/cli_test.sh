#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for
# shellcheck disable=SC2016  # jq programs and regexes are single-quoted on purpose
# cli_test.sh SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY
#
# The admin CLI (docs/cli.md) against a real snapledgerd holding a known set
# of snapshots. No containerd: snapledgerd runs alone (remove_policy =
# "defer", back-off 300ms..600ms, max_attempts = 3, no periodic reconcile) and
# is driven with `ctr snapshots` straight on its socket (`sld`). Every command
# is checked as a table (the expected rows, or the whole text) and as --json
# (exact field values, with jq), with its exit code.
#
#   1. an empty ledger: every listing empty, `check` 0;
#   2. the known set, all live: a committed base ns1/1/base with an active
#      ns1/2/app and a view ns1/3/scan on it, two committed childless
#      ns2/4/lone and ns2/5/gone, two actives ns1/6/ci-a (no parent) and
#      ns1/7/ci-b (on the base); `check` 0, then an unrecorded object made
#      on purpose (1, naming it), then removed again (0);
#   3. removals: ci-a and ci-b removed while their trees are bind-mounted
#      (queued; ci-a is seen remove-pending with a due time, then both go
#      stuck after 3 attempts), then the base (waiting for children);
#   4. that state through every command: ls (--all, --state, --kind,
#      --prefix), tree (--all), inspect (live, queued by its former key and
#      by its ledger key), pending, orphans, history (KEY), stats,
#      reconcile, check, du (--all), retry KEY (stuck again, 4 attempts; a
#      waiting parent spends none); bad keys and addresses;
#   5. --root while the daemon runs: the same documents as online;
#      retry and reconcile --apply refused;
#   6. drift while it runs: an object directory deleted and an unrecorded
#      one added; `check` 1 naming both, `reconcile --apply` marks and adopts
#      them; a new snapshot gets an id above the adopted one;
#   7. SIGTERM; --root while it is stopped (the same documents, stats
#      offline, online commands say "not running"); then, stopped, an object
#      copied to an unused id (9000) and another object's directory deleted:
#      on restart recovery adopts snapledger.adopted/9000 and marks
#      ns2/4/lone missing;
#   8. cleanup: unmount, `retry --stuck`, the queue removes both, removing
#      the children cascades to the base, the missing records are removed
#      with ctr.
#
# The end state is not "check 0": adopted records cannot be removed through
# the Snapshots API (they are hidden, on purpose) and the CLI has no command
# that forgets them, so the two adopted objects stay, and the last check is
# that `check` exits 1 naming exactly those two (and nothing stuck or
# missing any more). "check 0" is covered in 1 and 2, on this same root
# before anything was adopted: 0, then 1 on a drift made on purpose, then 0
# again once the drift is undone.
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits non-zero
# on any failure (77: skipped, not root or a tool missing). Takes 20-40 s.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

it_take_binaries "$@"

it_enter_private_namespace "$@"
it_setup

SN=snapledger
CONF=$IT_TMP/snapledgerd.toml
cat >"$CONF" <<'EOF'
remove_policy = "defer"
reconcile_interval = "0s"
[remove_queue]
initial_backoff = "300ms"
max_backoff = "600ms"
max_attempts = 3
EOF

# ------------------------------------------------------------- helpers ---
sls() { sld snapshots --snapshotter "$SN" "$@"; }   # straight to snapledgerd

# cli ARGS... : run the CLI; CLI_OUT (stdout), CLI_ERR (stderr), CLI_RC.
CLI_OUT='' CLI_ERR='' CLI_RC=0 CLI_CMD=''
cli() {
  CLI_CMD="snapledger $*"
  CLI_OUT=$(timeout -k 5 "$IT_TIMEOUT" "$SNAPLEDGER" "$@" 2>"$IT_TMP/cli.stderr")
  CLI_RC=$?
  CLI_ERR=$(<"$IT_TMP/cli.stderr")
  [[ ${IT_VERBOSE:-0} == 1 ]] && it_log "+ $CLI_CMD -> $CLI_RC"
  return 0
}
on() { cli --address "$ADMIN" "$@"; }     # the daemon, on its admin socket
off() { cli --root "$IT_SL_ROOT" "$@"; }  # the ledger, read-only

cli_report() {
  printf 'command: %s\nexit:    %s\nstdout:\n%s\nstderr:\n%s\n' "$CLI_CMD" "$CLI_RC" \
    "$(it_indent "$CLI_OUT")" "$(it_indent "$CLI_ERR")"
}

# expect_rc NAME RC : the last call exited RC.
expect_rc() {
  if [[ $CLI_RC == "$2" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected exit $2" "$(cli_report)"
  return 1
}
# expect_out NAME TEXT : the last call exited 0 and printed exactly TEXT.
expect_out() {
  if [[ $CLI_RC == 0 && $CLI_OUT == "$2" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected exit 0 and stdout:" "$(it_indent "$2")" "$(cli_report)"
  return 1
}
# expect_row NAME ERE : a line of the last call's stdout matches ERE.
expect_row() {
  if grep -Eq -- "$2" <<<"$CLI_OUT"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected a line matching: $2" "$(cli_report)"
  return 1
}
expect_no_row() {
  if ! grep -Eq -- "$2" <<<"$CLI_OUT"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected no line matching: $2" "$(cli_report)"
  return 1
}
# expect_lines NAME N : stdout has N lines.
expect_lines() {
  local n
  n=$(grep -c '' <<<"$CLI_OUT")
  [[ -z $CLI_OUT ]] && n=0
  if [[ $n == "$2" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected $2 lines, got $n" "$(cli_report)"
  return 1
}
# expect_jq NAME FILTER EXPECTED : jq -cS FILTER on stdout gives EXPECTED
# (compact JSON, keys sorted; compare with the output of jq -cS).
expect_jq() {
  local got
  got=$(jq -cS "$2" <<<"$CLI_OUT" 2>&1)
  if [[ $got == "$3" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "jq: $2" "expected: $3" "got:      $got" "$(cli_report)"
  return 1
}
# expect_error NAME ERE : exit 2, nothing on stdout, one line on stderr
# matching ERE.
expect_error() {
  if [[ $CLI_RC == 2 && -z $CLI_OUT && $(grep -c '' <<<"$CLI_ERR") == 1 ]] &&
     grep -Eq -- "$2" <<<"$CLI_ERR"; then
    it_pass "$1"; return 0
  fi
  it_fail "$1" "expected exit 2, empty stdout, one stderr line matching: $2" "$(cli_report)"
  return 1
}
# j ARGS... : compact, key-sorted JSON built by jq -n (for expected values).
j() { jq -cnS "$@"; }
# ERE-quote a literal string.
# shellcheck disable=SC2001  # a bracket expression reads better in sed
re_quote() { sed 's/[][\.|$(){}?+*^]/\\&/g' <<<"$1"; }
AGE='(just now|[0-9]+[smhd] ago)'
# Sizes as the CLI prints them (binary units, one decimal).
human() {
  awk -v b="$1" 'BEGIN {
    if (b < 1024) { printf "%d B\n", b; exit }
    split("KiB MiB GiB TiB", u, " "); v = b / 1024; i = 1
    while (v >= 1023.95 && i < 4) { v /= 1024; i++ }
    printf "%.1f %s\n", v, u[i] }'
}
# disk usage of a tree, as the native backend counts it (st_blocks, hard
# links once), and its number of inodes
du_bytes() { du -s -B1 -- "$1" | cut -f1; }
inode_count() { find "$1" | grep -c ''; }


# JSON field of one record, asked of the daemon (for polls).
field_of() { "$SNAPLEDGER" --address "$ADMIN" --json inspect "$1" 2>/dev/null | jq -r ".$2"; }
state_is() { [[ $(field_of "$1" state) == "$2" ]]; }
stuck_after() { # KEY N : stuck, with N failed attempts
  [[ $("$SNAPLEDGER" --address "$ADMIN" --json inspect "$1" 2>/dev/null |
       jq -r '"\(.state) \(.attempts)"') == "stuck $2" ]]
}
queue_length_is() {
  [[ $("$SNAPLEDGER" --address "$ADMIN" --json pending 2>/dev/null | jq length) == "$1" ]]
}
backend_ids() { # the object directories, sorted numerically, one line
  find "$BACKEND_DIR" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E '^[0-9]+$' |
    sort -n | tr '\n' ' ' | sed 's/ $//'
}
backend_count() { find "$BACKEND_DIR" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -cE '^[0-9]+$'; }

# mk_committed KEY EXTRACT_KEY BYTES : prepare EXTRACT_KEY, write BYTES of
# data into it, commit it as KEY; remembers its usage at commit.
declare -A ID SIZE INODES
mk_committed() {
  local key=$1 extract=$2 bytes=$3 tree
  assert_cmd_ok "setup: prepare $extract" sls prepare "$extract" || return 1
  tree=$(sl_bind_source "$extract") || { it_fail "setup: the tree of $extract" "$tree"; return 1; }
  head -c "$bytes" /dev/urandom >"$tree/data-$bytes"
  SIZE[$key]=$(du_bytes "$tree")
  INODES[$key]=$(inode_count "$tree")
  assert_cmd_ok "setup: commit $extract as $key" sls commit "$key" "$extract"
}

# ------------------------------------------------------------- start ---
snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not start"
ADMIN=${IT_SL_SOCK%.sock}-admin.sock
BACKEND_DIR=$IT_SL_ROOT/snapshots

echo "== 1. an empty ledger"
if [[ -S $ADMIN && $(stat -c %a "$ADMIN") == 600 ]]; then
  it_pass "the admin socket is beside the main one, mode 0600: ${ADMIN##*/}"
else
  it_fail "the admin socket is beside the main one, mode 0600" "$(ls -la "$IT_TMP")"
fi
on ls
expect_out "ls: the header only" "KEY   PARENT   KIND   STATE   SIZE   AGE"
on ls --json
expect_out "ls --json: []" "[]"
on --json ls --all
expect_out "--json before the command: ls --all: []" "[]"
on pending
expect_out "pending: the header only" "KEY   LEDGER_KEY   STATE   ATTEMPTS   NEXT_ATTEMPT   LAST_ERROR"
on orphans --json
expect_out "orphans --json: []" "[]"
on check
expect_out "check: exit 0, ok" "ok: backend and ledger agree"
on check --json
expect_jq "check --json: ok, no problems" . '{"ok":true,"problems":[]}'
on reconcile
expect_out "reconcile: no findings" "ok: no findings (0 records judged, 0 backend objects listed)"
on stats --json
expect_jq "stats --json: 0 records, live, defer, never reconciled" \
  '[.records, .live, .remove_policy, .by_state, .by_kind, .last_reconcile, .oldest_pending_seconds]' \
  '[0,true,"defer",{},{},null,null]'

echo "== 2. the known set"
mk_committed ns1/1/base ns1/10/base-extract 65536
assert_cmd_ok "setup: prepare ns1/2/app on ns1/1/base" sls prepare ns1/2/app ns1/1/base
APP_TREE=$(sl_bind_source ns1/2/app) && head -c 131072 /dev/urandom >"$APP_TREE/app-data"
assert_cmd_ok "setup: view ns1/3/scan on ns1/1/base" sls view ns1/3/scan ns1/1/base
mk_committed ns2/4/lone ns2/11/lone-extract 8192
mk_committed ns2/5/gone ns2/12/gone-extract 16384
assert_cmd_ok "setup: prepare ns1/6/ci-a (no parent)" sls prepare ns1/6/ci-a
assert_cmd_ok "setup: prepare ns1/7/ci-b on ns1/1/base" sls prepare ns1/7/ci-b ns1/1/base
ALL_KEYS="ns1/1/base ns1/2/app ns1/3/scan ns2/4/lone ns2/5/gone ns1/6/ci-a ns1/7/ci-b"
for k in $ALL_KEYS; do ID[$k]=$(field_of "$k" backend_id); done
it_log "backend ids: $(for k in $ALL_KEYS; do printf '%s=%s ' "$k" "${ID[$k]}"; done)"
ok=1
for k in $ALL_KEYS; do [[ ${ID[$k]} =~ ^[1-9][0-9]*$ && -d $BACKEND_DIR/${ID[$k]} ]] || ok=0; done
if [[ $ok == 1 && $(printf '%s\n' "${ID[@]}" | sort -u | grep -c '') == 7 ]]; then
  it_pass "inspect --json: 7 distinct backend ids, each a directory in snapshots/"
else
  it_fail "inspect --json: 7 distinct backend ids, each a directory in snapshots/" \
    "ids: $(declare -p ID)" "backend: $(backend_ids)"
fi
B=${ID[ns1/1/base]} A=${ID[ns1/6/ci-a]} CB=${ID[ns1/7/ci-b]}
L=${ID[ns2/4/lone]} G=${ID[ns2/5/gone]}
assert_eq "ctr mounts of ns1/6/ci-a names the tree of its backend object" \
  "$BACKEND_DIR/$A/fs" "$(sl_bind_source ns1/6/ci-a 2>&1)"
assert_eq "ctr mounts of the view names the base's tree" \
  "$BACKEND_DIR/$B/fs" "$(sl_bind_source ns1/3/scan 2>&1)"

on ls --json
expect_jq "ls --json: every record, all live" \
  'map([.key, .ledger_key, .backend_id, .parent, .parent_backend_id, .kind, .state, .namespace, .containerd_key, .size, .inodes, .attempts, .last_error, .removal_requested, .next_attempt, .waiting_for_children])' \
  "$(j --argjson b "$B" --argjson a "$A" --argjson cb "$CB" --argjson l "$L" --argjson g "$G" \
       --argjson app "${ID[ns1/2/app]}" --argjson scan "${ID[ns1/3/scan]}" \
       --argjson sb "${SIZE[ns1/1/base]}" --argjson sl "${SIZE[ns2/4/lone]}" --argjson sg "${SIZE[ns2/5/gone]}" \
       --argjson ib "${INODES[ns1/1/base]}" --argjson il "${INODES[ns2/4/lone]}" --argjson ig "${INODES[ns2/5/gone]}" '[
    ["ns1/1/base","ns1/1/base",$b,null,null,"committed","live","ns1","base",$sb,$ib,0,null,null,null,false],
    ["ns1/2/app","ns1/2/app",$app,"ns1/1/base",$b,"active","live","ns1","app",null,null,0,null,null,null,false],
    ["ns1/3/scan","ns1/3/scan",$scan,"ns1/1/base",$b,"view","live","ns1","scan",0,null,0,null,null,null,false],
    ["ns1/6/ci-a","ns1/6/ci-a",$a,null,null,"active","live","ns1","ci-a",null,null,0,null,null,null,false],
    ["ns1/7/ci-b","ns1/7/ci-b",$cb,"ns1/1/base",$b,"active","live","ns1","ci-b",null,null,0,null,null,null,false],
    ["ns2/4/lone","ns2/4/lone",$l,null,null,"committed","live","ns2","lone",$sl,$il,0,null,null,null,false],
    ["ns2/5/gone","ns2/5/gone",$g,null,null,"committed","live","ns2","gone",$sg,$ig,0,null,null,null,false]]')"
on ls
expect_lines "ls: a header and 7 rows" 8
expect_row "ls: ns1/1/base committed live, its size at commit" \
  "^ns1/1/base +- +committed +live +$(human "${SIZE[ns1/1/base]}") +$AGE\$"
expect_row "ls: ns1/2/app active on the base, size not measured" \
  "^ns1/2/app +ns1/1/base +active +live +- +$AGE\$"
expect_row "ls: ns1/3/scan a view, 0 B" "^ns1/3/scan +ns1/1/base +view +live +0 B +$AGE\$"
on check
expect_out "check: 0 with all 7 live (no drift)" "ok: backend and ledger agree"
on reconcile
expect_out "reconcile: no findings, 7 records judged" \
  "ok: no findings (7 records judged, $(backend_count) backend objects listed)"

# A drift made on purpose, then undone: check goes 0 -> 1 -> 0.
cp -a "$BACKEND_DIR/$L" "$BACKEND_DIR/9100"
on check
expect_rc "check: exit 1 on an unrecorded object made on purpose (snapshots/9100)" 1
assert_eq "check: one line, naming it" "backend object 9100 has no ledger record" "$CLI_OUT"
on check --json
expect_rc "check --json: exit 1 as well" 1
expect_jq "check --json: ok false, the one problem" . \
  '{"ok":false,"problems":["backend object 9100 has no ledger record"]}'
off check --json
expect_rc "check --root (daemon running): exit 1" 1
expect_jq "check --root: the same problem" .problems '["backend object 9100 has no ledger record"]'
on reconcile
expect_row "reconcile: the unrecorded-object row" \
  '^unrecorded-object +- +9100 +backend object 9100 \(parent object 0\) has no ledger record$'
expect_row "reconcile: 1 finding (7 records judged, 8 objects)" \
  '^1 finding \(7 records judged, 8 backend objects listed\)$'
expect_row "reconcile: nothing changed without --apply" '^nothing changed: `snapledger reconcile --apply` adopts'
on reconcile --json
expect_jq "reconcile --json: the finding, not applied" \
  '[.applied, .findings, .findings_total, .records_judged, .objects_listed, .adopted, .marked_missing]' \
  '[false,[{"backend_id":9100,"detail":"backend object 9100 (parent object 0) has no ledger record","key":null,"type":"unrecorded-object"}],1,7,8,0,0]'
rm -rf "$BACKEND_DIR/9100"
on check
expect_out "check: back to 0 once the drift is undone" "ok: backend and ledger agree"

echo "== 3. removals: two busy, one parent waiting for its children"
MNT_A=$IT_TMP/mnt-ci-a MNT_B=$IT_TMP/mnt-ci-b
BUSY_A="FAILED_PRECONDITION: snapshot object $A is in use: mounted at $MNT_A (busy)"
BUSY_B="FAILED_PRECONDITION: snapshot object $CB is in use: mounted at $MNT_B (busy)"
assert_cmd_ok "bind-mount ns1/6/ci-a's tree" sl_hold_mount ns1/6/ci-a "$MNT_A"
assert_cmd_ok "rm ns1/6/ci-a while mounted: OK (defer)" sls rm ns1/6/ci-a
# With max_attempts = 3 it is remove-pending for under a second: poll both
# forms until each has shown it so (fails if it goes stuck first).
PEND_TABLE='' PEND_JSON='' deadline=$((SECONDS + 15))
while ((SECONDS < deadline)) && [[ -z $PEND_TABLE || -z $PEND_JSON ]]; do
  on pending
  if [[ -z $PEND_TABLE ]] &&
     grep -Eq "^ns1/6/ci-a +snapledger\.removed/$A +remove-pending " <<<"$CLI_OUT"; then
    PEND_TABLE=$CLI_OUT
  fi
  on --json pending
  st=$(jq -r '.[] | select(.key == "ns1/6/ci-a") | .state' <<<"$CLI_OUT" 2>/dev/null)
  [[ -z $PEND_JSON && $st == remove-pending ]] && PEND_JSON=$CLI_OUT
  [[ $st == stuck ]] && break
done
CLI_OUT=$PEND_TABLE CLI_CMD="snapledger pending (while remove-pending)" CLI_RC=0
expect_row "pending: ns1/6/ci-a remove-pending, 1-2 attempts, due soon, the busy error" \
  "^ns1/6/ci-a +snapledger\.removed/$A +remove-pending +[12] +(now|in [0-9]+s) +$(re_quote "$BUSY_A")\$"
CLI_OUT=$PEND_JSON CLI_CMD="snapledger --json pending (while remove-pending)"
expect_jq "pending --json: ns1/6/ci-a remove-pending, due, not waiting for children" \
  '.[] | select(.key == "ns1/6/ci-a") | [.ledger_key, .state, (.attempts | . >= 1 and . <= 2), (.next_attempt | type), .waiting_for_children, .last_error, (.removal_requested | type)]' \
  "$(j --arg l "snapledger.removed/$A" --arg e "$BUSY_A" '[$l,"remove-pending",true,"string",false,$e,"string"]')"
if wait_for 20 "ns1/6/ci-a stuck" stuck_after ns1/6/ci-a 3; then
  it_pass "ns1/6/ci-a is stuck after its 3 attempts"
else
  it_fail "ns1/6/ci-a is stuck after its 3 attempts" "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
assert_cmd_ok "bind-mount ns1/7/ci-b's tree" sl_hold_mount ns1/7/ci-b "$MNT_B"
assert_cmd_ok "rm ns1/7/ci-b while mounted: OK (defer)" sls rm ns1/7/ci-b
if wait_for 20 "ns1/7/ci-b stuck" stuck_after ns1/7/ci-b 3; then
  it_pass "ns1/7/ci-b is stuck after its 3 attempts"
else
  it_fail "ns1/7/ci-b is stuck after its 3 attempts" "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
assert_cmd_ok "rm ns1/1/base with children: OK (defer)" sls rm ns1/1/base
assert_cmd_fails "ctr info ns1/1/base: not found (hidden)" "not found" sls info ns1/1/base
WAIT_B="waiting for children [ns1/2/app, ns1/3/scan, ns1/7/ci-b (removal stuck, snapledger.removed/$CB)]"

echo "== 4. every command on that state"
# ls
on ls
expect_lines "ls: a header and the 4 live rows" 5
expect_no_row "ls: no hidden record" '^(ns1/1/base|ns1/6/ci-a|ns1/7/ci-b) '
expect_row "ls: ns1/2/app still names its parent ns1/1/base" "^ns1/2/app +ns1/1/base +active +live +- +$AGE\$"
expect_row "ls: ns2/4/lone committed live" "^ns2/4/lone +- +committed +live +$(human "${SIZE[ns2/4/lone]}") +$AGE\$"
on ls --json
expect_jq "ls --json: the 4 live keys, in key order" 'map(.key)' '["ns1/2/app","ns1/3/scan","ns2/4/lone","ns2/5/gone"]'
on ls --all
expect_lines "ls --all: a header and 7 rows" 8
expect_row "ls --all: ns1/1/base remove-pending under its former key" \
  "^ns1/1/base +- +committed +remove-pending +$(human "${SIZE[ns1/1/base]}") +$AGE\$"
expect_row "ls --all: ns1/6/ci-a stuck" "^ns1/6/ci-a +- +active +stuck +- +$AGE\$"
expect_row "ls --all: ns1/7/ci-b stuck, parent ns1/1/base" "^ns1/7/ci-b +ns1/1/base +active +stuck +- +$AGE\$"
on ls --all --json
expect_jq "ls --all --json: key, ledger key, state, attempts, waiting" \
  'map([.key, .ledger_key, .state, .attempts, .waiting_for_children, .next_attempt])' \
  "$(j --arg b "snapledger.removed/$B" --arg a "snapledger.removed/$A" --arg cb "snapledger.removed/$CB" '[
    ["ns1/2/app","ns1/2/app","live",0,false,null],
    ["ns1/3/scan","ns1/3/scan","live",0,false,null],
    ["ns2/4/lone","ns2/4/lone","live",0,false,null],
    ["ns2/5/gone","ns2/5/gone","live",0,false,null],
    ["ns1/1/base",$b,"remove-pending",0,true,null],
    ["ns1/6/ci-a",$a,"stuck",3,false,null],
    ["ns1/7/ci-b",$cb,"stuck",3,false,null]]')"
on ls --state stuck --state remove-pending
expect_lines "ls --state stuck --state remove-pending: 3 rows" 4
expect_no_row "ls --state ...: no live row" ' live '
on ls --state stuck --json
expect_jq "ls --state stuck --json (implies --all)" 'map(.key)' '["ns1/6/ci-a","ns1/7/ci-b"]'
on ls --kind committed --json
expect_jq "ls --kind committed: the visible ones only" 'map(.key)' '["ns2/4/lone","ns2/5/gone"]'
on ls --all --kind committed --json
expect_jq "ls --all --kind committed: the queued base too" 'map(.key)' '["ns2/4/lone","ns2/5/gone","ns1/1/base"]'
on ls --prefix ns2/ --json
expect_jq "ls --prefix ns2/" 'map(.key)' '["ns2/4/lone","ns2/5/gone"]'
on ls --all --prefix ns1/7/ --json
expect_jq "ls --all --prefix matches a queued removal's former key" 'map(.ledger_key)' "[\"snapledger.removed/$CB\"]"
on ls --state gone
if [[ $CLI_RC == 2 && -z $CLI_OUT && $CLI_ERR == *"--state: unknown state: gone"* ]]; then
  it_pass "ls --state gone: exit 2, CLI11's message"
else
  it_fail "ls --state gone: exit 2, CLI11's message" "$(cli_report)"
fi

# tree
S_B=$(human "${SIZE[ns1/1/base]}") S_L=$(human "${SIZE[ns2/4/lone]}") S_G=$(human "${SIZE[ns2/5/gone]}")
on tree
expect_out "tree: the queued parent hidden, its children roots that say so" \
"ns1/2/app [active, live] (parent ns1/1/base [object $B] not listed)
ns1/3/scan [view, live, 0 B] (parent ns1/1/base [object $B] not listed)
ns2/4/lone [committed, live, $S_L]
ns2/5/gone [committed, live, $S_G]"
on tree --all
expect_out "tree --all: the stuck child under the queued parent, by backend id" \
"ns1/1/base [committed, remove-pending, $S_B] as snapledger.removed/$B
  \\_ ns1/2/app [active, live]
  \\_ ns1/3/scan [view, live, 0 B]
  \\_ ns1/7/ci-b [active, stuck] as snapledger.removed/$CB
ns1/6/ci-a [active, stuck] as snapledger.removed/$A
ns2/4/lone [committed, live, $S_L]
ns2/5/gone [committed, live, $S_G]"
on tree --json
expect_jq "tree --json: 4 roots without children" 'map([.key, .children])' \
  '[["ns1/2/app",[]],["ns1/3/scan",[]],["ns2/4/lone",[]],["ns2/5/gone",[]]]'
on tree --all --json
expect_jq "tree --all --json: nested by parent" \
  'map({key, state, children: [.children[] | [.key, .state, .parent_backend_id, (.children | length)]]})' \
  "$(j --argjson b "$B" '[
    {"key":"ns1/1/base","state":"remove-pending","children":[["ns1/2/app","live",$b,0],["ns1/3/scan","live",$b,0],["ns1/7/ci-b","stuck",$b,0]]},
    {"key":"ns1/6/ci-a","state":"stuck","children":[]},
    {"key":"ns2/4/lone","state":"live","children":[]},
    {"key":"ns2/5/gone","state":"live","children":[]}]')"

# inspect: a live one
APP_SIZE=$(du_bytes "$APP_TREE")
on inspect ns1/2/app
expect_rc "inspect ns1/2/app: exit 0" 0
expect_row "inspect: key" '^key: +ns1/2/app$'
expect_row "inspect: ledger key" '^ledger key: +ns1/2/app$'
expect_row "inspect: namespace" '^namespace: +ns1$'
expect_row "inspect: containerd key" '^containerd key: +app$'
expect_row "inspect: kind active, state live" '^state: +live$'
expect_row "inspect: parent with its object" "^parent: +ns1/1/base \\(object $B\\)\$"
expect_row "inspect: an active snapshot is measured now" "^size: +$(human "$APP_SIZE") \\($APP_SIZE bytes\\)\$"
expect_row "inspect: no children" '^children: +-$'
expect_no_row "inspect: a live snapshot has no queue fields" '^(attempts|next attempt|removal asked):'
on inspect ns1/2/app --json
expect_jq "inspect --json ns1/2/app: the fields" \
  '[.key, .ledger_key, .backend_id, .parent, .parent_backend_id, .kind, .state, .namespace, .containerd_key, .size, .last_error, .attempts, .removal_requested, .next_attempt, .waiting_for_children, .children, .removal_attempts]' \
  "$(j --argjson id "${ID[ns1/2/app]}" --argjson b "$B" --argjson s "$APP_SIZE" \
       '["ns1/2/app","ns1/2/app",$id,"ns1/1/base",$b,"active","live","ns1","app",$s,null,0,null,null,false,[],[]]')"
expect_jq "inspect --json ns1/2/app: its history, the prepare" \
  '.history | map([.op, .key, .backend_id, .parent, .detail])' \
  "$(j --argjson id "${ID[ns1/2/app]}" '[["prepare","ns1/2/app",$id,"ns1/1/base","backend object \($id)"]]')"

# inspect: the queued parent, by its former key and by its ledger key
on inspect ns1/1/base
expect_row "inspect ns1/1/base (former key): its ledger key" "^ledger key: +snapledger\\.removed/$B\$"
expect_row "inspect ns1/1/base: remove-pending" '^state: +remove-pending$'
expect_row "inspect ns1/1/base: 0 attempts" '^attempts: +0$'
expect_row "inspect ns1/1/base: next attempt waiting for children" '^next attempt: +waiting for children$'
expect_row "inspect ns1/1/base: size frozen at commit" "^size: +$S_B \\(${SIZE[ns1/1/base]} bytes\\)\$"
expect_row "inspect ns1/1/base: inodes frozen at commit" "^inodes: +${INODES[ns1/1/base]}\$"
expect_row "inspect ns1/1/base: children section lists the stuck child's ledger key" \
  "^  snapledger\\.removed/$CB\$"
on inspect ns1/1/base --json
BASE_DOC=$CLI_OUT
expect_jq "inspect --json ns1/1/base: the queue fields" \
  '[.key, .ledger_key, .backend_id, .kind, .state, .size, .inodes, .attempts, .next_attempt, .waiting_for_children, .last_error, (.removal_requested | type), .children]' \
  "$(j --arg l "snapledger.removed/$B" --argjson b "$B" --argjson s "${SIZE[ns1/1/base]}" \
       --argjson i "${INODES[ns1/1/base]}" --arg w "$WAIT_B" --arg cb "snapledger.removed/$CB" \
       '["ns1/1/base",$l,$b,"committed","remove-pending",$s,$i,0,null,true,$w,"string",["ns1/2/app","ns1/3/scan",$cb]]')"
expect_jq "inspect --json ns1/1/base: history remove-deferred, commit" '.history | map(.op)' '["remove-deferred","commit"]'
on inspect "snapledger.removed/$B" --json
if [[ $CLI_RC == 0 && -n $CLI_OUT && $CLI_OUT == "$BASE_DOC" ]]; then
  it_pass "inspect by ledger key snapledger.removed/$B: the same document"
else
  it_fail "inspect by ledger key snapledger.removed/$B: the same document" "$(cli_report)"
fi

# inspect: a stuck one
on inspect ns1/6/ci-a
expect_row "inspect ns1/6/ci-a: stuck" '^state: +stuck$'
expect_row "inspect ns1/6/ci-a: next attempt only on demand" \
  "^next attempt: +stuck: only on demand \\(snapledger retry snapledger\\.removed/$A\\)\$"
expect_row "inspect ns1/6/ci-a: removal attempts (3 failed in all)" '^removal attempts \(3 failed in all\):$'
on inspect ns1/6/ci-a --json
expect_jq "inspect --json ns1/6/ci-a: 3 attempts, each the busy error" \
  '[.state, .attempts, .next_attempt, .last_error, (.removal_attempts | map(.error)), .parent, .namespace, .containerd_key]' \
  "$(j --arg e "$BUSY_A" '["stuck",3,null,$e,[$e,$e,$e],null,"ns1","ci-a"]')"
expect_jq "inspect --json ns1/6/ci-a: history stuck, remove-failed, remove-deferred, prepare" \
  '.history | map(.op)' '["stuck","remove-failed","remove-deferred","prepare"]'

# inspect: errors
on inspect nope
expect_error "inspect nope: exit 2, the server's message" '^snapledger: no snapshot "nope" in the ledger$'
on --json inspect nope
expect_error "inspect nope --json: exit 2, no half document" 'no snapshot "nope"'

# pending
on pending
expect_lines "pending: a header and 3 rows" 4
assert_eq "pending: oldest first: ci-a, ci-b, base" "ns1/6/ci-a ns1/7/ci-b ns1/1/base" \
  "$(awk 'NR > 1 {printf "%s%s", sep, $1; sep = " "}' <<<"$CLI_OUT")"
expect_row "pending: ns1/6/ci-a stuck, 3 attempts, its error" \
  "^ns1/6/ci-a +snapledger\\.removed/$A +stuck +3 +stuck +$(re_quote "$BUSY_A")\$"
expect_row "pending: ns1/7/ci-b stuck, 3 attempts, its error" \
  "^ns1/7/ci-b +snapledger\\.removed/$CB +stuck +3 +stuck +$(re_quote "$BUSY_B")\$"
expect_row "pending: ns1/1/base waiting for children, 0 attempts" \
  "^ns1/1/base +snapledger\\.removed/$B +remove-pending +0 +waiting for children +$(re_quote "$WAIT_B")\$"
on pending --json
expect_jq "pending --json: the three, exact" \
  'map([.key, .ledger_key, .state, .attempts, .next_attempt, .waiting_for_children, .last_error])' \
  "$(j --arg a "snapledger.removed/$A" --arg cb "snapledger.removed/$CB" --arg b "snapledger.removed/$B" \
       --arg ea "$BUSY_A" --arg eb "$BUSY_B" --arg w "$WAIT_B" '[
    ["ns1/6/ci-a",$a,"stuck",3,null,false,$ea],
    ["ns1/7/ci-b",$cb,"stuck",3,null,false,$eb],
    ["ns1/1/base",$b,"remove-pending",0,null,true,$w]]')"

# orphans
on orphans
expect_out "orphans: the header only" "KEY   REASON   DETAIL"

# history
on history --json
expect_jq "history --json: every op so far, counted" \
  'map(.op) | group_by(.) | map({(.[0]): length}) | add' \
  '{"commit":3,"prepare":6,"remove-deferred":3,"remove-failed":2,"stuck":2,"view":1}'
expect_jq "history --json: newest first (the base's deferral)" '.[0] | [.op, .key, .detail]' \
  "$(j --arg d "$WAIT_B; queued as snapledger.removed/$B" '["remove-deferred","ns1/1/base",$d]')"
on history -n 3
expect_lines "history -n 3: a header and 3 rows" 4
expect_row "history: the base's deferral, newest" \
  "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} +remove-deferred +ns1/1/base +$(re_quote "$WAIT_B; queued as snapledger.removed/$B")\$"
on history ns1/7/ci-b
expect_lines "history ns1/7/ci-b: a header and 4 rows" 5
expect_row "history ns1/7/ci-b: stuck at attempt 3" \
  "^[0-9-]{10} [0-9:]{8} +stuck +ns1/7/ci-b +attempt 3: $(re_quote "$BUSY_B")\$"
on history ns1/7/ci-b --json
CIB_HISTORY=$CLI_OUT
expect_jq "history ns1/7/ci-b --json: its ops, newest first" 'map(.op)' \
  '["stuck","remove-failed","remove-deferred","prepare"]'
expect_jq "history ns1/7/ci-b --json: backend id and parent on each event" \
  'map([.key, .backend_id, .parent]) | unique' \
  "$(j --argjson cb "$CB" '[["ns1/7/ci-b",$cb,"ns1/1/base"]]')"
# docs/cli.md: "inspect, history and retry accept either" key.
on history "snapledger.removed/$CB" --json
if [[ $CLI_RC == 0 && $CLI_OUT == "$CIB_HISTORY" ]]; then
  it_pass "history by ledger key snapledger.removed/$CB: the same events as by its former key"
else
  it_fail "history by ledger key snapledger.removed/$CB: the same events as by its former key" \
    "by former key: $(jq -c 'map(.op)' <<<"$CIB_HISTORY")" "$(cli_report)"
fi
on history never-seen --json
expect_out "history of a key never seen: exit 0, no events" "[]"

# stats
COMMITTED=$((SIZE[ns2/4/lone] + SIZE[ns2/5/gone]))
on stats
expect_row "stats: source live" '^source: +snapledgerd \(live\)$'
expect_row "stats: 7 records" '^records: +7$'
expect_row "stats: 4 live" '^  live: +4$'
expect_row "stats: 1 remove-pending" '^  remove-pending: +1$'
expect_row "stats: 2 stuck" '^  stuck: +2$'
expect_row "stats: 3 committed" '^  committed: +3$'
expect_row "stats: committed bytes of the visible ones" \
  "^committed bytes: +$(human "$COMMITTED") \\($COMMITTED bytes\\)\$"
expect_row "stats: 1 waiting for children" '^removals waiting for children: +1$'
expect_row "stats: 2 stuck removals" '^removals stuck: +2$'
expect_row "stats: oldest pending removal" '^oldest pending removal: +[0-9]+[smhd] old$'
expect_row "stats: never reconciled" '^last reconcile: +never$'
expect_row "stats: policy defer" '^remove policy: +defer$'
on stats --json
expect_jq "stats --json: the counts" \
  'del(.ledger_sequence, .oldest_pending_seconds)' \
  "$(j --argjson c "$COMMITTED" '{"live":true,"records":7,
    "by_state":{"live":4,"remove-pending":1,"stuck":2},
    "by_kind":{"view":1,"active":3,"committed":3},
    "committed_bytes":$c,"removals_scheduled":0,"removals_waiting_for_children":1,
    "removals_stuck":2,"backend_calls_abandoned":0,"last_reconcile":null,
    "last_reconcile_findings":null,"remove_policy":"defer",
    "dead_containers":null,"reaped_containers":null,
    "watcher":{"enabled":false,"address":null,"connected":false,"last_sync":null,
               "last_error":null,"containers":0,"leases":0}}')"
expect_jq "stats --json: ledger sequence and oldest pending are numbers" \
  '[(.ledger_sequence | type), (.ledger_sequence > 0), (.oldest_pending_seconds | type)]' '["number",true,"number"]'
SEQ=$(jq .ledger_sequence <<<"$CLI_OUT")

# reconcile, check
on reconcile
expect_out "reconcile: no findings (4 live records judged)" \
  "ok: no findings (4 records judged, $(backend_count) backend objects listed)"
on reconcile --json
expect_jq "reconcile --json: no findings" . \
  "$(j --argjson n "$(backend_count)" '{"applied":false,"findings":[],"findings_total":0,"records_judged":4,"objects_listed":$n,"adopted":0,"marked_missing":0}')"
STUCK_A3="removal of \"ns1/6/ci-a\" (snapledger.removed/$A) is stuck after 3 attempts: $BUSY_A"
STUCK_B3="removal of \"ns1/7/ci-b\" (snapledger.removed/$CB) is stuck after 3 attempts: $BUSY_B"
on check
expect_rc "check: exit 1 while removals are stuck" 1
assert_eq "check: one line per stuck removal" "$(printf '%s\n' "$STUCK_A3" "$STUCK_B3" | sort)" \
  "$(sort <<<"$CLI_OUT")"
on check --json
expect_rc "check --json: exit 1" 1
expect_jq "check --json: ok false, the two problems" '[.ok, (.problems | sort)]' \
  "$(j --arg a "$STUCK_A3" --arg b "$STUCK_B3" '[false, ([$a, $b] | sort)]')"

# du
S_CIA=$(du_bytes "$BACKEND_DIR/$A/fs") S_CIB=$(du_bytes "$BACKEND_DIR/$CB/fs")
on du --json
expect_jq "du --json: the visible ones, largest first, app measured now" \
  '[(.snapshots | map([.key, .size])), .total, .unmeasured]' \
  "$(j --argjson app "$APP_SIZE" --argjson l "${SIZE[ns2/4/lone]}" --argjson g "${SIZE[ns2/5/gone]}" \
       '[[["ns1/2/app",$app],["ns2/5/gone",$g],["ns2/4/lone",$l],["ns1/3/scan",0]], ($app + $g + $l), 0]')"
on du
expect_lines "du: a header, 4 rows and the total" 6
assert_eq "du: largest first" "ns1/2/app ns2/5/gone ns2/4/lone ns1/3/scan" \
  "$(awk 'NR > 1 && $NF !~ /\)$/ {printf "%s%s", sep, $NF; sep = " "}' <<<"$CLI_OUT")"
TOTAL=$((APP_SIZE + SIZE[ns2/4/lone] + SIZE[ns2/5/gone]))
expect_row "du: the total line" "^ *$(human "$TOTAL") +total \\(4 snapshots\\)\$"
on du --all --json
expect_jq "du --all --json: queued ones too (actives measured now)" \
  '.snapshots | map({(.key): .size}) | add' \
  "$(j --argjson app "$APP_SIZE" --argjson l "${SIZE[ns2/4/lone]}" --argjson g "${SIZE[ns2/5/gone]}" \
       --argjson b "${SIZE[ns1/1/base]}" --argjson a "$S_CIA" --argjson cb "$S_CIB" \
       '{"ns1/2/app":$app,"ns2/5/gone":$g,"ns2/4/lone":$l,"ns1/3/scan":0,"ns1/1/base":$b,"ns1/6/ci-a":$a,"ns1/7/ci-b":$cb}')"

# addresses
on --json ls --prefix ns1/2/
expect_jq "--json and --address before the command" 'map(.key)' '["ns1/2/app"]'
cli --address "$IT_TMP/nope-admin.sock" ls
expect_error "a wrong --address: exit 2, not running" \
  "^snapledger: snapledgerd is not running \\(no socket at $(re_quote "$IT_TMP/nope-admin.sock")\\); use --root DIR"
cli --address "$IT_SL_SOCK" ls
expect_error "--address of the snapshotter's own socket: not the admin API" \
  "$(re_quote "$IT_SL_SOCK") does not serve snapledger's admin API"
SNAPLEDGER_ADMIN_ADDRESS=$ADMIN cli ls --json
expect_jq "SNAPLEDGER_ADMIN_ADDRESS names the socket" 'length' '4'
cli --timeout 0 --address "$ADMIN" ls
if [[ $CLI_RC == 2 && -z $CLI_OUT && $CLI_ERR == *"not a positive duration"* ]]; then
  it_pass "--timeout 0: exit 2, bad usage"
else
  it_fail "--timeout 0: exit 2, bad usage" "$(cli_report)"
fi

# retry
on retry
if [[ $CLI_RC == 2 && -z $CLI_OUT && $CLI_ERR == *"give a KEY or --stuck"* ]]; then
  it_pass "retry without KEY or --stuck: exit 2"
else
  it_fail "retry without KEY or --stuck: exit 2" "$(cli_report)"
fi
on retry ns1/6/ci-a --stuck
expect_rc "retry KEY --stuck: exit 2 (exclusive)" 2
on retry nope
expect_error "retry nope: exit 2, the server's message" '^snapledger: no snapshot "nope" in the ledger$'
on retry ns1/2/app
expect_error "retry of a live snapshot: exit 2, no queued removal" \
  '^snapledger: snapshot "ns1/2/app" has no queued removal \(it is live\)$'
on retry ns1/6/ci-a
expect_out "retry ns1/6/ci-a (former key, still mounted): retrying it" "retrying ns1/6/ci-a"
if wait_for 15 "ns1/6/ci-a stuck again" stuck_after ns1/6/ci-a 4; then
  it_pass "retry: ns1/6/ci-a tried once more, still busy: stuck after 4 attempts"
else
  it_fail "retry: ns1/6/ci-a tried once more, still busy: stuck after 4 attempts" \
    "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
on history ns1/6/ci-a -n 2 --json
expect_jq "history ns1/6/ci-a: retry then stuck (attempt 4)" 'map([.op, .detail])' \
  "$(j --arg e "attempt 4: $BUSY_A" '[["stuck",$e],["retry","stuck removal retried on demand"]]')"
on retry "snapledger.removed/$CB" --json
expect_jq "retry --json by ledger key: retried names the former key" . '{"retried":["ns1/7/ci-b"]}'
if wait_for 15 "ns1/7/ci-b stuck again" stuck_after ns1/7/ci-b 4; then
  it_pass "retry: ns1/7/ci-b stuck after 4 attempts"
else
  it_fail "retry: ns1/7/ci-b stuck after 4 attempts" "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
on retry ns1/1/base
expect_out "retry of the parent waiting for children: retrying it" "retrying ns1/1/base"
waiting_again() {
  [[ $("$SNAPLEDGER" --address "$ADMIN" --json inspect ns1/1/base 2>/dev/null |
       jq -r '"\(.state) \(.waiting_for_children) \(.attempts)"') == "remove-pending true 0" ]]
}
if wait_for 10 "ns1/1/base waiting again" waiting_again; then
  it_pass "retry: the parent still waits for its children, no attempt spent"
else
  it_fail "retry: the parent still waits for its children, no attempt spent" \
    "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
on history ns1/1/base -n 1 --json
expect_jq "history ns1/1/base: the retry" 'map([.op, .detail])' '[["retry","retried on demand"]]'
STUCK_A4="removal of \"ns1/6/ci-a\" (snapledger.removed/$A) is stuck after 4 attempts: $BUSY_A"
STUCK_B4="removal of \"ns1/7/ci-b\" (snapledger.removed/$CB) is stuck after 4 attempts: $BUSY_B"

echo "== 5. --root while the daemon runs"
for cmd in "ls --all" "tree --all" "pending" "orphans" "history -n 200" "inspect ns1/1/base" \
           "inspect ns1/6/ci-a" "du --all" "reconcile" "check"; do
  # shellcheck disable=SC2086  # cmd is a list of words
  on $cmd --json; online=$CLI_OUT online_rc=$CLI_RC
  # shellcheck disable=SC2086
  off $cmd --json
  if [[ $CLI_RC == "$online_rc" && -n $CLI_OUT && $CLI_OUT == "$online" ]]; then
    it_pass "--root $cmd --json (daemon running): the same document and exit $CLI_RC as online"
  else
    it_fail "--root $cmd --json (daemon running): the same document as online" \
      "online (exit $online_rc):" "$(it_indent "$online")" "$(cli_report)"
  fi
done
off check
expect_rc "--root check: exit 1 (the stuck removals)" 1
assert_eq "--root check: the same lines" "$(printf '%s\n' "$STUCK_A4" "$STUCK_B4" | sort)" "$(sort <<<"$CLI_OUT")"
off stats
expect_row "--root stats: source offline" '^source: +read-only ledger \(offline\)$'
expect_row "--root stats: no reconcile offline" '^last reconcile: +- \(offline\)$'
expect_row "--root stats: no policy offline" '^remove policy: +-$'
off stats --json
expect_jq "--root stats --json: live false, no policy, the same counts and sequence" \
  '[.live, .remove_policy, .records, .by_state, .removals_stuck, .ledger_sequence >= '"$SEQ"']' \
  '[false,null,7,{"live":4,"remove-pending":1,"stuck":2},2,true]'
off retry --stuck
expect_error "--root retry --stuck: refused, exit 2" 'retry needs the running daemon'
off retry ns1/6/ci-a
expect_error "--root retry KEY: refused, exit 2" 'retry needs the running daemon'
off reconcile --apply
expect_error "--root reconcile --apply: refused, exit 2" 'reconcile --apply needs the running daemon'
cli --root "$IT_SL_ROOT" --address "$IT_TMP/nope-admin.sock" ls --json
expect_jq "--root wins over --address" 'length' '4'

echo "== 6. drift while the daemon runs: reconcile --apply"
cp -a "$BACKEND_DIR/$L" "$BACKEND_DIR/9200"
rm -rf "$BACKEND_DIR/${G:?}"
GONE_LINE="snapshot \"ns2/5/gone\": backend object $G is gone"
NEW_LINE="backend object 9200 has no ledger record"
on check
expect_rc "check: exit 1 on the drift" 1
assert_eq "check: names the deleted object and the unrecorded one (and the stuck ones)" \
  "$(printf '%s\n' "$GONE_LINE" "$NEW_LINE" "$STUCK_A4" "$STUCK_B4" | sort)" "$(sort <<<"$CLI_OUT")"
on check --json
expect_jq "check --json: the four problems" '[.ok, (.problems | sort)]' \
  "$(j --arg a "$GONE_LINE" --arg b "$NEW_LINE" --arg c "$STUCK_A4" --arg d "$STUCK_B4" '[false, ([$a,$b,$c,$d] | sort)]')"
on reconcile
expect_row "reconcile: missing-object row" "^missing-object +ns2/5/gone +$G +backend object $G is gone\$"
expect_row "reconcile: unrecorded-object row" \
  '^unrecorded-object +- +9200 +backend object 9200 \(parent object 0\) has no ledger record$'
expect_row "reconcile: 2 findings" "^2 findings \\(4 records judged, $(backend_count) backend objects listed\\)\$"
on reconcile --apply
expect_row "reconcile --apply: the rows" '^unrecorded-object +- +9200 '
expect_row "reconcile --apply: 1 adopted, 1 marked missing" '^applied: 1 adopted, 1 marked missing$'
on reconcile --apply --json
expect_jq "reconcile --apply --json again: nothing left to do" . \
  "$(j --argjson n "$(backend_count)" '{"applied":true,"findings":[],"findings_total":0,"records_judged":3,"objects_listed":$n,"adopted":0,"marked_missing":0}')"
on orphans
expect_lines "orphans: a header and 2 rows" 3
expect_row "orphans: ns2/5/gone missing" '^ns2/5/gone +missing +backend object not found by reconcile --apply$'
expect_row "orphans: snapledger.adopted/9200 adopted" \
  '^snapledger\.adopted/9200 +adopted +backend object without a ledger record, adopted by reconcile --apply$'
on orphans --json
expect_jq "orphans --json: the two, exact" \
  'map([.key, .ledger_key, .backend_id, .reason, .state, .kind, .parent, .namespace, .detail])' \
  "$(j --argjson g "$G" '[
    ["ns2/5/gone","ns2/5/gone",$g,"missing","missing","committed",null,"ns2","backend object not found by reconcile --apply"],
    ["snapledger.adopted/9200","snapledger.adopted/9200",9200,"adopted","adopted","committed",null,null,"backend object without a ledger record, adopted by reconcile --apply"]]')"
on ls
expect_row "ls: a missing record stays listed, state missing" \
  "^ns2/5/gone +- +committed +missing +$S_G +$AGE\$"
on ls --state adopted
expect_row "ls --state adopted: the adopted object" '^snapledger\.adopted/9200 +- +committed +adopted '
on history -n 2 --json
expect_jq "history: missing and adopted, by reconcile --apply" 'map([.op, .key]) | sort' \
  '[["adopted","snapledger.adopted/9200"],["missing","ns2/5/gone"]]'
# Adopted storage is whatever the object holds: its size is unknown (null) or
# measured, never "0 B" for a non-empty tree.
on inspect snapledger.adopted/9200 --json
expect_jq "inspect snapledger.adopted/9200: size null or the object's usage, not 0" \
  "(.size == null or .size == $(du_bytes "$BACKEND_DIR/9200/fs"))" 'true'
ADOPT_9200="backend object 9200 was adopted as snapledger.adopted/9200 (no record knew it): backend object without a ledger record, adopted by reconcile --apply"
GONE_MISSING="snapshot \"ns2/5/gone\" is missing its storage: backend object not found by reconcile --apply"
on check --json
expect_rc "check after --apply: still exit 1" 1
expect_jq "check after --apply: adopted and missing named as such" '.problems | sort' \
  "$(j --arg a "$ADOPT_9200" --arg b "$GONE_MISSING" --arg c "$STUCK_A4" --arg d "$STUCK_B4" '[$a,$b,$c,$d] | sort')"
assert_cmd_ok "prepare ns3/8/after" sls prepare ns3/8/after
NEW_ID=$(field_of ns3/8/after backend_id)
if [[ $NEW_ID =~ ^[0-9]+$ ]] && ((NEW_ID > 9200)); then
  it_pass "a new snapshot gets an id above the adopted one ($NEW_ID > 9200)"
else
  it_fail "a new snapshot gets an id above the adopted one" "backend_id: $NEW_ID"
fi
assert_cmd_ok "rm ns3/8/after (not busy: at once)" sls rm ns3/8/after
on history ns3/8/after --json
expect_jq "history ns3/8/after: remove, prepare" 'map(.op)' '["remove","prepare"]'

echo "== 7. stopped: --root, then recovery adopts and marks"
declare -A BEFORE
for cmd in "ls --all" "tree --all" "pending" "orphans" "check" "history -n 200"; do
  # shellcheck disable=SC2086
  on $cmd --json; BEFORE[$cmd]=$CLI_OUT
done
if snapledgerd_stop; then it_pass "snapledgerd exits 0 on SIGTERM"
else it_fail "snapledgerd exits 0 on SIGTERM" "exit status $?"; fi
if [[ ! -e $ADMIN ]]; then it_pass "the admin socket is gone with the daemon"
else it_fail "the admin socket is gone with the daemon" "$(ls -la "$IT_TMP")"; fi
on ls
expect_error "ls with the daemon stopped: exit 2, not running, use --root" \
  "^snapledger: snapledgerd is not running \\(no socket at $(re_quote "$ADMIN")\\); use --root DIR to read the ledger directly\$"
on check
expect_error "check with the daemon stopped: exit 2 (neither 0 nor 1)" 'snapledgerd is not running'
for cmd in "ls --all" "tree --all" "pending" "orphans" "check" "history -n 200"; do
  # shellcheck disable=SC2086
  off $cmd --json
  if [[ -n $CLI_OUT && $CLI_OUT == "${BEFORE[$cmd]}" ]]; then
    it_pass "--root $cmd --json (daemon stopped): the same document as online before the stop"
  else
    it_fail "--root $cmd --json (daemon stopped): the same document as online before the stop" \
      "online before: $(it_indent "${BEFORE[$cmd]}")" "$(cli_report)"
  fi
done
off stats --json
expect_jq "--root stats (stopped): offline, 8 records" '[.live, .remove_policy, .records]' '[false,null,8]'
off retry --stuck
expect_error "--root retry (stopped): refused" 'retry needs the running daemon'
mkdir -p "$IT_TMP/no-state"
cli --root "$IT_TMP/no-state" ls
expect_error "--root on a directory without state: exit 2, named as such" \
  "^snapledger: $(re_quote "$IT_TMP/no-state") has no ledger \\(no $(re_quote "$IT_TMP/no-state/ledger")\\); --root is the directory given to snapledgerd's --root"
cli --root "$IT_TMP/no-such-dir" --json check
expect_error "--root on a directory that does not exist: exit 2" \
  "^snapledger: cannot use --root $(re_quote "$IT_TMP/no-such-dir"): No such file or directory\$"

# Stopped: an object copied to an unused id, another one's directory deleted.
cp -a "$BACKEND_DIR/$L" "$BACKEND_DIR/9000"
rm -rf "$BACKEND_DIR/${L:?}"
off check --json
expect_rc "--root check (stopped) sees the new drift: exit 1" 1
expect_jq "--root check (stopped): names 9000 and ns2/4/lone" \
  '[.problems[] | select(test("9000|ns2/4/lone"))] | sort' \
  "$(j --arg a "backend object 9000 has no ledger record" --arg b "snapshot \"ns2/4/lone\": backend object $L is gone" '[$a,$b] | sort')"
snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not restart"
assert_match "start log: recovery adopted snapledger.adopted/9000" \
  'recovery: adopted a backend object that had no ledger record as snapledger\.adopted/9000' \
  "$(snapledgerd_last_log)"
assert_match "start log: recovery marked ns2/4/lone missing" \
  'recovery: snapshot ns2/4/lone has lost its backend storage; marked missing' "$(snapledgerd_last_log)"
assert_match "start log: removal queue: 1 pending (1 waiting for children), 2 stuck" \
  'removal queue: 1 pending \(1 waiting for children\), 2 stuck; policy defer' "$(snapledgerd_last_log)"
on orphans --json
expect_jq "orphans --json after recovery: 2 adopted, 2 missing" 'map([.key, .reason, .detail])' \
  "$(j '[
    ["ns2/4/lone","missing","backend object not found at start-up"],
    ["ns2/5/gone","missing","backend object not found by reconcile --apply"],
    ["snapledger.adopted/9000","adopted","backend object had no ledger record at start-up"],
    ["snapledger.adopted/9200","adopted","backend object without a ledger record, adopted by reconcile --apply"]]')"
on inspect snapledger.adopted/9000 --json
expect_jq "inspect snapledger.adopted/9000: the adopted record" \
  '[.key, .ledger_key, .backend_id, .parent, .parent_backend_id, .kind, .state, .namespace, .containerd_key, .last_error, .attempts, (.history | map(.op))]' \
  '["snapledger.adopted/9000","snapledger.adopted/9000",9000,null,null,"committed","adopted",null,null,"backend object had no ledger record at start-up",0,["adopted"]]'
on ls --state adopted --state missing
expect_lines "ls --state adopted --state missing: 4 rows" 5
expect_row "ls: ns2/4/lone missing" "^ns2/4/lone +- +committed +missing +$S_L +$AGE\$"
on stats --json
expect_jq "stats --json after recovery: by state" '[.records, .by_state]' \
  '[9,{"adopted":2,"live":2,"missing":2,"remove-pending":1,"stuck":2}]'
ADOPT_9000="backend object 9000 was adopted as snapledger.adopted/9000 (no record knew it): backend object had no ledger record at start-up"
LONE_MISSING="snapshot \"ns2/4/lone\" is missing its storage: backend object not found at start-up"
on check
expect_rc "check after recovery: exit 1" 1
assert_eq "check after recovery: one line per problem (2 adopted, 2 missing, 2 stuck)" \
  "$(printf '%s\n' "$ADOPT_9000" "$ADOPT_9200" "$LONE_MISSING" "$GONE_MISSING" "$STUCK_A4" "$STUCK_B4" | sort)" \
  "$(sort <<<"$CLI_OUT")"
on tree --all
expect_row "tree --all: the adopted objects are roots" '^snapledger\.adopted/9000 \[committed, adopted'

echo "== 8. cleanup: unmount, retry --stuck, the cascade"
assert_cmd_ok "umount ns1/6/ci-a's tree" umount -n "$MNT_A"
assert_cmd_ok "umount ns1/7/ci-b's tree" umount -n "$MNT_B"
on retry --stuck
expect_rc "retry --stuck: exit 0" 0
assert_eq "retry --stuck: retrying both" "$(printf '%s\n' "retrying ns1/6/ci-a" "retrying ns1/7/ci-b")" \
  "$(sort <<<"$CLI_OUT")"
if wait_for 15 "the queue removed ci-a and ci-b" queue_length_is 1; then
  it_pass "the queue removes both once unmounted (only the base left queued)"
else
  it_fail "the queue removes both once unmounted" "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
on history ns1/6/ci-a -n 1 --json
expect_jq "history ns1/6/ci-a: removed by the queue after 4 failed attempts" 'map([.op, .detail])' \
  '[["removed","by the removal queue after 4 failed attempts"]]'
if [[ ! -e $BACKEND_DIR/$A && ! -e $BACKEND_DIR/$CB ]]; then it_pass "their directories are gone"
else it_fail "their directories are gone" "backend: $(backend_ids)"; fi
on pending --json
expect_jq "pending --json: the base, still waiting (app, scan)" \
  'map([.key, .waiting_for_children])' '[["ns1/1/base",true]]'
assert_cmd_ok "rm ns1/3/scan" sls rm ns1/3/scan
assert_cmd_ok "rm ns1/2/app (the last child)" sls rm ns1/2/app
if wait_for 15 "the cascade removed the base" queue_length_is 0; then
  it_pass "the cascade removes the base after its last child"
else
  it_fail "the cascade removes the base after its last child" "$("$SNAPLEDGER" --address "$ADMIN" pending 2>&1)"
fi
on history ns1/1/base -n 1 --json
expect_jq "history ns1/1/base: removed by the queue, 0 failed attempts" 'map([.op, .detail])' \
  '[["removed","by the removal queue after 0 failed attempts"]]'
on pending
expect_out "pending: the header only" "KEY   LEDGER_KEY   STATE   ATTEMPTS   NEXT_ATTEMPT   LAST_ERROR"
on retry --stuck
expect_out "retry --stuck with none stuck: nothing to retry" "nothing to retry"
on retry --stuck --json
expect_jq "retry --stuck --json with none stuck" . '{"retried":[]}'
assert_cmd_ok "rm ns2/4/lone (missing: visible, removable)" sls rm ns2/4/lone
assert_cmd_ok "rm ns2/5/gone (missing)" sls rm ns2/5/gone
on ls --all --json
expect_jq "ls --all --json: only the adopted records are left" 'map([.key, .state])' \
  '[["snapledger.adopted/9000","adopted"],["snapledger.adopted/9200","adopted"]]'
assert_eq "backend: only the adopted objects are left" "9000 9200" "$(backend_ids)"
on check
expect_rc "check at the end: exit 1, adopted records stay for an operator" 1
assert_eq "check at the end: exactly the two adopted objects" \
  "$(printf '%s\n' "$ADOPT_9000" "$ADOPT_9200" | sort)" "$(sort <<<"$CLI_OUT")"
on reconcile
expect_out "reconcile at the end: no findings" "ok: no findings (0 records judged, 2 backend objects listed)"
on stats --json
expect_jq "stats --json at the end" '[.records, .by_state, .removals_stuck, .oldest_pending_seconds]' \
  '[2,{"adopted":2},0,null]'
if snapledgerd_stop; then it_pass "snapledgerd exits 0 on SIGTERM at the end"
else it_fail "snapledgerd exits 0 on SIGTERM at the end" "exit status $?"; fi
exit 0   # the EXIT trap prints the summary and sets the status
