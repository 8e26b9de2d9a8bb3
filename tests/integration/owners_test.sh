#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for / it_run
# shellcheck disable=SC2016  # jq programs are single-quoted on purpose
# owners_test.sh SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY
#
# Owners and dead containers (issue #6), end to end against a real, private
# containerd 1.6 with snapledgerd registered as the proxy snapshotter
# `snapledger` (remove_policy = "defer", the containerd watcher on,
# [containers] dead_after = "3s"):
#
#   1. the wedge, replayed, without the reaper: BUILDS builds run as
#      `ctr run --rm --snapshotter snapledger`, CANCELLED of them cancelled as
#      a CI system cancels them (the ctr client SIGKILLed mid-run, then
#      `ctr task kill -s SIGKILL`), then the builder removes the snapshots it
#      knows about (`ctr snapshots rm build-NN`). Every cancelled container is
#      reported dead with the snapshots it pins; its snapshot's removal is
#      held back (remove-pending, held_by the container, no attempt spent)
#      and its storage is intact; backend == ledger; the normal builds left
#      nothing behind;
#   2. snapledgerd restarted (SIGTERM, start) while containers run and dead
#      ones exist, and containerd changes meanwhile: with snapledgerd down,
#      one dead container (the first cancelled build, GONE) is deleted; with
#      snapledgerd running blind (containerd_address at a socket nobody
#      listens on: containerd needs its proxy to prepare a snapshot) a new
#      container, fresh, is run, and GONE's removal stays held, fresh gets no
#      owner. After the real restart the state is rebuilt from containerd,
#      not read back: GONE's held removal completes (record, object gone,
#      history `removed`), it is not dead; the other dead ones are, with the
#      same pins and idle_since (containerd's exit time); fresh's snapshot is
#      owned by fresh; every other record's ownership is unchanged;
#   3. the reaper (`[reaper] match = ["build-*"]`): first dry_run (reports
#      "dry-run", deletes nothing), then for real: after the grace, no dead
#      container, no build-* container but the running build-live, no pending
#      removal, and containerd, the ledger and the backend agree; running
#      containers that do not match (keeper, fresh) and a running one that
#      does (build-live) are untouched;
#   4. the watcher across a restart of containerd: it notices the loss,
#      reconnects, and a new container's snapshot gets its owner within a few
#      seconds.
# Ends with a `FIGURES:` line (builds, cancelled, dead found in test 1,
# snapshots pinned, held-back snapshots reclaimed in tests 2 and 3, leaked,
# seconds to settle) and "N passed, M failed".
#
# IT_OWNERS_BASELINE=1 replays the wedge only, on a daemon without the
# watcher (today's snapledgerd), and prints how many cancelled containers are
# left pointing at snapshots containerd has deleted.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

it_take_binaries "$@"

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=snapledger
BASELINE=${IT_OWNERS_BASELINE:-0}
BUILDS=${IT_OWNERS_BUILDS:-16}      # builds in the replay
CANCELLED=${IT_OWNERS_CANCELLED:-6} # of which cancelled
WAVE=${IT_OWNERS_WAVE:-4}           # builds running at once
GRACE=3                             # [containers] dead_after, seconds
BACKEND_OBJECT=${IT_BACKEND_OBJECT:-'^[0-9]+$'}
CONF=$IT_TMP/snapledgerd.toml
# containerd_start puts its socket here; snapledgerd is started first (as
# containerd needs the proxy socket) and must find containerd once it is up.
CTRD_SOCK=$IT_TMP/containerd/containerd.sock

if [[ $BASELINE != 1 ]] && ! "$SNAPLEDGERD" --help 2>&1 | grep -q -- '--containerd-address'; then
  it_die "$SNAPLEDGERD has no --containerd-address (no containerd watcher); this suite needs it"
fi
((CANCELLED >= 2 && CANCELLED < BUILDS)) || it_die "need 2 <= IT_OWNERS_CANCELLED < IT_OWNERS_BUILDS"

# ------------------------------------------------------------- helpers ---
ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }   # through containerd
ts() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(ts)" 'BEGIN {printf "%.1f", b - a}'; }

# cli ARGS... : the admin CLI on the daemon; CLI_OUT, CLI_ERR, CLI_RC.
CLI_OUT='' CLI_ERR='' CLI_RC=0 CLI_CMD=''
cli() {
  CLI_CMD="snapledger $*"
  CLI_OUT=$(timeout -k 5 "$IT_TIMEOUT" "$SNAPLEDGER" --address "$ADMIN" "$@" 2>"$IT_TMP/cli.stderr")
  CLI_RC=$?
  CLI_ERR=$(<"$IT_TMP/cli.stderr")
  [[ ${IT_VERBOSE:-0} == 1 ]] && it_log "+ $CLI_CMD -> $CLI_RC"
  return 0
}
cli_report() {
  printf 'command: %s\nexit:    %s\nstdout:\n%s\nstderr:\n%s\n' "$CLI_CMD" "$CLI_RC" \
    "$(it_indent "$CLI_OUT")" "$(it_indent "$CLI_ERR")"
}
# expect_jq NAME FILTER EXPECTED : jq -cS FILTER on the last CLI output.
expect_jq() {
  local got
  got=$(jq -cS "$2" <<<"$CLI_OUT" 2>&1)
  if [[ $got == "$3" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "jq: $2" "expected: $3" "got:      $got" "$(cli_report)"
  return 1
}
# j ARGS... : compact, key-sorted JSON built by jq -n (expected values).
j() { jq -cnS "$@"; }
# sl_json ARGS... : the CLI's --json document (empty on failure), for polls.
sl_json() { timeout -k 5 "$IT_TIMEOUT" "$SNAPLEDGER" --address "$ADMIN" --json "$@" 2>/dev/null; }
words() { tr '\n' ' ' | sed 's/ *$//'; }   # lines -> one sorted-as-given line

# The builds. Cancelled ones are spread over the run: build i is cancelled
# when (i * CANCELLED) mod BUILDS < CANCELLED (exactly CANCELLED of them).
bname() { printf 'build-%02d' "$1"; }
is_cancelled() { (( ($1 * CANCELLED) % BUILDS < CANCELLED )); }
ALL_BUILDS='' CANCELLED_IDS='' NORMAL_IDS=''
for ((i = 1; i <= BUILDS; i++)); do
  ALL_BUILDS+="$(bname "$i") "
  if is_cancelled "$i"; then CANCELLED_IDS+="$(bname "$i") "; else NORMAL_IDS+="$(bname "$i") "; fi
done
CANCELLED_IDS=${CANCELLED_IDS% } NORMAL_IDS=${NORMAL_IDS% }

# --- the three views: containerd, the ledger, the backend ---
# shellcheck disable=SC2010  # names are decimal ids or known temporaries
backend_ids() { ls -A "$BACKEND_DIR" 2>/dev/null | grep -E "$BACKEND_OBJECT" | sort -n; }
backend_count() { backend_ids | grep -c .; }
ledger_all() { sl_json ls --all; }                  # every record, any state
ledger_backend_ids() { ledger_all | jq -r '.[].backend_id' | sort -n; }
ledger_count() { ledger_all | jq length; }
ctrd_keys() { ctrs ls | awk 'NR > 1 {print $1}' | sort; }
ledger_ckeys() { ledger_all | jq -r '.[].containerd_key // "?"' | sort; }
containers() { ctrd containers ls -q | sort | words; }
# raw_key NAME : snapledgerd's key for containerd's key NAME in our
# namespace (a queued removal keeps the key it had).
raw_key() {
  ledger_all | jq -r --arg ns "$IT_NS" --arg k "$1" \
    '[.[] | select(.namespace == $ns and .containerd_key == $k)] | .[0].key // empty'
}
field_of() { sl_json inspect "$1" | jq -r ".$2 // empty"; }
owner_is() { [[ -n $1 && $(field_of "$1" owner) == "$2" ]]; }
task_status() { ctrd tasks ls | awk -v n="$1" '$1 == n {print $3}'; }
task_is() { [[ $(task_status "$1") == "$2" ]]; }
# leaked : backend objects without a ledger record, plus records containerd
# does not know about (after settling: nothing queued, nothing hidden).
leaked() {
  local a b c
  a=$(comm -23 <(backend_ids | sort) <(ledger_backend_ids | sort) | grep -c .)
  b=$(comm -23 <(ledger_ckeys) <(ctrd_keys) | grep -c .)
  echo $((a + b))
}
report() {
  echo "containerd: containers [$(containers)] snapshots [$(ctrd_keys | words)]"
  echo "ledger: $(ledger_all | jq -c 'map("\(.key)=\(.state)\(if .held_by then " held_by " + .held_by else "" end)\(if .owner then " owner " + .owner else "" end)")')"
  echo "backend: [$(backend_ids | words)]"
}
agree() { # containerd's keys == the ledger's == one backend object each
  [[ $(ctrd_keys) == "$(ledger_ckeys)" && $(backend_ids | words) == "$(ledger_backend_ids | words)" ]]
}

# --- snapledgerd's state ---
dead_json() { sl_json dead; }
dead_ids() { dead_json | jq -r '.dead[].id' | sort | words; }
dead_ids_are() { [[ $(dead_ids) == "$1" ]]; }
watcher_connected() { [[ $(sl_json stats | jq -r '.watcher.connected') == true ]]; }
watcher_disconnected() { [[ $(sl_json stats | jq -r '.watcher.connected') == false ]]; }
pending_count() { sl_json pending | jq length; }
no_pending() { [[ $(pending_count) == 0 ]]; }
# everything held back by its container: remove-pending, held_by ns/id
held_by_is() { [[ $(sl_json inspect "$1" | jq -r '"\(.state) \(.held_by)"') == "remove-pending $2" ]]; }
all_held() {
  local id
  for id in $CANCELLED_IDS; do held_by_is "${RAW[$id]}" "$IT_NS/$id" || return 1; done
}

# Log excerpts.
log_lines() { wc -l <"$1" 2>/dev/null || echo 0; }
# names_count ERE IDS <TEXT : how many of IDS have a line of TEXT that
# matches ERE and names the container as <namespace>/<id> (whole id).
names_count() {
  local text id n=0
  text=$(grep -E -- "$1")
  for id in $2; do
    grep -Eq -- "$IT_NS/$id([^A-Za-z0-9_.-]|\$)" <<<"$text" && n=$((n + 1))
  done
  echo "$n"
}
log_since() { tail -n +"$(($2 + 1))" "$1"; }
# gc_sync : a synchronous GC pass (an empty lease deleted with --sync; see
# removal_test.sh: containerd's scheduler drops deletions made during a pass).
gc_sync() {
  local id=it-gc-$RANDOM$RANDOM
  ctrd leases create --id "$id" >/dev/null && ctrd leases rm --sync "$id" >/dev/null
}

# write_config REAPER_ENABLED DRY_RUN : containerd_address = $WATCH_ADDR
# (containerd's socket; test 2 points it elsewhere to blind the watcher).
WATCH_ADDR=$CTRD_SOCK
write_config() {
  if [[ $BASELINE == 1 ]]; then   # today's daemon: no watcher settings
    cat >"$CONF" <<EOF
remove_policy = "defer"
reconcile_interval = "0s"
[remove_queue]
initial_backoff = "300ms"
max_backoff = "1s"
EOF
    return
  fi
  cat >"$CONF" <<EOF
remove_policy = "defer"
reconcile_interval = "0s"
containerd_address = "$WATCH_ADDR"
[remove_queue]
initial_backoff = "300ms"
max_backoff = "1s"
[containers]
dead_after = "${GRACE}s"
[reaper]
enabled = $1
match = ["build-*"]
dry_run = $2
EOF
}

# restart_snapledgerd NAME [CMD...] : SIGTERM (must exit 0), run CMD (if
# any) while snapledgerd is down, start on the same root with the current
# $CONF, wait for the watcher.
restart_snapledgerd() {
  local name=$1; shift
  if snapledgerd_stop; then it_pass "$name: snapledgerd exits 0 on SIGTERM"
  else it_fail "$name: snapledgerd exits 0 on SIGTERM" "exit status $?"; fi
  (($# == 0)) || "$@"
  set -- "$name"
  snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "$1: snapledgerd did not start again"
  if wait_for 30 "the watcher connected" watcher_connected; then
    it_pass "$1: the watcher is connected again"
  else
    it_fail "$1: the watcher is connected again" "$(sl_json stats | jq -c .watcher)"
  fi
}

# ----------------------------------------------------------- the builds ---
# start_build NAME SCRIPT : `ctr run --rm` in the background, ctr itself (not
# a wrapper) so that it can be SIGKILLed the way a CI system kills it.
declare -A BUILD_PID BUILD_RC RAW
start_build() {
  ctr -a "$IT_CTRD_SOCK" -n "$IT_NS" run --rm --snapshotter "$SN" "$IMG" "$1" \
    sh -c "$2" </dev/null >"$IT_TMP/$1.out" 2>&1 &
  BUILD_PID[$1]=$!
}
# finish_build NAME : wait (bounded) for its ctr client; BUILD_RC[NAME].
finish_build() {
  local pid=${BUILD_PID[$1]}
  if ! wait_pid_exit "$pid" 60; then
    it_log "$1: ctr run still running after 60s; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  BUILD_RC[$1]=$?
}
# cancel_build NAME : as CI cancels a job: the ctr client is SIGKILLed
# mid-run, then the task is killed.
cancel_build() {
  local name=$1
  wait_for 60 "$name running" task_is "$name" RUNNING ||
    it_log "$name: task not RUNNING: $(ctrd tasks ls 2>&1)"
  wait_for 30 "$name wrote its file" grep -q started "$IT_TMP/$name.out"
  # (stderr: bash's "Killed" notice for the job is expected, not news)
  { kill -KILL "${BUILD_PID[$name]}"; finish_build "$name"; } 2>/dev/null
  ctrd tasks kill -s SIGKILL "$name" >/dev/null 2>&1 ||
    it_log "$name: ctr tasks kill failed"
}

# replay_builds : BUILDS builds in waves of WAVE; cancels the chosen ones.
replay_builds() {
  local i j name wave t0
  t0=$(ts)
  for ((i = 1; i <= BUILDS; i += WAVE)); do
    wave=()
    for ((j = i; j < i + WAVE && j <= BUILDS; j++)); do
      name=$(bname "$j")
      if is_cancelled "$j"; then
        start_build "$name" 'echo started > /started; echo started; exec sleep 300'
      else
        start_build "$name" "echo $name > /built; sleep 1; echo done"
      fi
      wave+=("$name")
    done
    for name in "${wave[@]}"; do
      if [[ " $CANCELLED_IDS " == *" $name "* ]]; then cancel_build "$name"; fi
    done
    for name in "${wave[@]}"; do
      [[ " $NORMAL_IDS " == *" $name "* ]] && finish_build "$name"
    done
  done
  it_log "$BUILDS builds ($CANCELLED cancelled) in $(since "$t0")s"
}

stopped_all() {
  local id
  for id in $CANCELLED_IDS; do task_is "$id" STOPPED || return 1; done
}
normal_builds_gone() { # no record, in any state, of a normal build's snapshot
  local n
  n=$(ledger_all | jq --arg ns "$IT_NS" --arg ids "$NORMAL_IDS" \
        '[.[] | select(.namespace == $ns and (.containerd_key | IN(($ids | split(" "))[])))] | length')
  [[ $n == 0 ]]
}

# ---------------------------------------------------------- set-up ---
it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null || it_die "make_image.sh failed"
write_config false false
snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not start"
ADMIN=${IT_SL_SOCK%.sock}-admin.sock
BACKEND_DIR=$IT_SL_ROOT/snapshots
containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start"
[[ $IT_CTRD_SOCK == "$CTRD_SOCK" ]] || it_die "containerd's socket is $IT_CTRD_SOCK, not $CTRD_SOCK"
assert_cmd_ok "import the image with --snapshotter $SN" \
  ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
LAYER=$(ledger_all | jq -r '.[].key')
[[ $(grep -c . <<<"$LAYER") == 1 && $LAYER == "$IT_NS"/*/sha256:* ]] ||
  it_die "expected one layer in the ledger, got: $LAYER"
LAYER_SIZE=$(ledger_all | jq '.[0].size')
it_log "layer: $LAYER ($LAYER_SIZE bytes)"

# Figures for the closing line.
F_DEAD=0 F_PINNED=0 F_RECLAIMED=0 F_LEAKED=-1 F_SETTLE=-1

# ------------------------------------------- 1. the wedge, replayed ---
test_wedge() {
  local id n bad dead pinned k rec problems wedge
  echo "== 1. the wedge, replayed: $BUILDS builds, $CANCELLED cancelled (ctr SIGKILLed, then the task), no reaper"
  if [[ $BASELINE != 1 ]]; then
    if wait_for 30 "the watcher connected" watcher_connected; then
      it_pass "1: the watcher connects to containerd (started after snapledgerd)"
    else
      it_fail "1: the watcher connects to containerd (started after snapledgerd)" "$(sl_json stats | jq -c .watcher)"
    fi
  fi
  replay_builds
  NORMAL_FAILED=''
  for id in $NORMAL_IDS; do [[ ${BUILD_RC[$id]} == 0 ]] || NORMAL_FAILED+="$id:${BUILD_RC[$id]} "; done
  assert_eq "1: the $((BUILDS - CANCELLED)) normal builds exit 0" "" "$NORMAL_FAILED"
  if wait_for 30 "the cancelled tasks STOPPED" stopped_all; then
    it_pass "1: the $CANCELLED cancelled tasks are STOPPED"
  else
    it_fail "1: the $CANCELLED cancelled tasks are STOPPED" "$(ctrd tasks ls 2>&1)"
  fi
  assert_eq "1: containerd keeps exactly the cancelled containers (--rm never ran)" \
    "$CANCELLED_IDS" "$(containers)"
  for id in $CANCELLED_IDS; do RAW[$id]=$(raw_key "$id"); done
  n=0
  for id in $CANCELLED_IDS; do [[ -n ${RAW[$id]} ]] && n=$((n + 1)); done
  assert_eq "1: the ledger has each cancelled build's snapshot" "$CANCELLED" "$n"

  # The builder removes the snapshots it knows about.
  bad=''
  for id in $CANCELLED_IDS; do
    ctrs rm "$id" >"$IT_TMP/rm.out" 2>&1 || bad+="$id: $(<"$IT_TMP/rm.out") "
  done
  assert_eq "1: the builder's ctr snapshots rm of the $CANCELLED snapshots: OK (containerd forgets them)" "" "$bad"
  assert_cmd_ok "1: a synchronous GC pass (the removals reach snapledgerd)" gc_sync
  wedge=0
  for id in $CANCELLED_IDS; do
    k=$(ctrd containers info "$id" 2>/dev/null | jq -r .SnapshotKey)
    [[ -n $k ]] && ! ctrs info "$k" >/dev/null 2>&1 && wedge=$((wedge + 1))
  done
  echo "  the wedge: $wedge of $CANCELLED cancelled containers point at a snapshot containerd no longer has"

  if [[ $BASELINE == 1 ]]; then
    sleep 2
    n=0
    for id in $CANCELLED_IDS; do
      rec=$(sl_json inspect "${RAW[$id]}" | jq -r '"\(.state) \(.backend_id)"')
      echo "  $id: ${RAW[$id]}: ${rec:-no record}"
      [[ -z $rec || $rec == live* ]] || n=$((n + 1))
    done
    echo "BASELINE: $wedge of $CANCELLED containers left pointing at deleted snapshots;" \
         "snapledgerd took $n of $CANCELLED removals while their container exists;" \
         "normal builds that failed: ${NORMAL_FAILED:-none}"
    echo "  $(report | tr '\n' ' ')"
    return
  fi

  # The removals are held back by their containers, not attempted.
  if wait_for 20 "every removal held by its container" all_held; then
    it_pass "1: each cancelled build's removal is remove-pending, held_by $IT_NS/<its container>"
  else
    it_fail "1: each cancelled build's removal is remove-pending, held_by $IT_NS/<its container>" "$(report)"
  fi
  for id in $CANCELLED_IDS; do
    cli --json inspect "${RAW[$id]}"
    expect_jq "1: $id: owner $id, held_by $IT_NS/$id, no attempt spent, no lease" \
      '[.state, .owner, .held_by, .attempts, .leases, .namespace, .containerd_key]' \
      "$(j --arg ns "$IT_NS" --arg id "$id" '["remove-pending",$id,($ns + "/" + $id),0,[],$ns,$id]')"
    k=$(jq -r .backend_id <<<"$CLI_OUT")
    if [[ -f $BACKEND_DIR/$k/fs/started ]]; then
      it_pass "1: $id: its storage is intact (snapshots/$k/fs/started, written by the build)"
    else
      it_fail "1: $id: its storage is intact (snapshots/$k/fs/started)" "$(report)"
    fi
  done
  k=$(sl_json history "${RAW[${CANCELLED_IDS%% *}]}" -n 100 | jq -r '.[].op' | words)
  assert_match "1: history records the owner of ${CANCELLED_IDS%% *}'s snapshot (op owner)" \
    '(^| )owner( |$)' "$k"

  # Dead containers.
  if wait_for $((GRACE + 20)) "the dead set" dead_ids_are "$CANCELLED_IDS"; then
    it_pass "1: dead: exactly the $CANCELLED cancelled containers"
  else
    it_fail "1: dead: exactly the $CANCELLED cancelled containers" "dead: [$(dead_ids)]" \
      "expected: [$CANCELLED_IDS]" "$(dead_json | jq -c .)"
  fi
  cli --json dead
  DEAD_DOC=$CLI_OUT
  dead=$(jq '.dead | length' <<<"$DEAD_DOC")
  F_DEAD=${dead:-0}
  expect_jq "1: dead --json: watcher enabled, connected, at $CTRD_SOCK, synced, no lease; grace $GRACE; none reaped" \
    '[.watcher.enabled, .watcher.connected, .watcher.address, (.watcher.last_sync != null), .watcher.leases, .grace_seconds, .reaped_total]' \
    "$(j --arg a "$CTRD_SOCK" --argjson g "$GRACE" '[true,true,$a,true,0,$g,0]')"
  expect_jq "1: dead --json: the watcher counts the $CANCELLED containers on $SN" \
    '.watcher.containers' "$CANCELLED"
  for id in $CANCELLED_IDS; do
    rec=$(sl_json inspect "${RAW[$id]}")
    CLI_OUT=$(jq -c --arg id "$id" '.dead[] | select(.id == $id)' <<<"$DEAD_DOC")
    CLI_CMD="snapledger --json dead (entry $id)"
    expect_jq "1: dead $id: namespace, image, task stopped, idle >= ${GRACE}s, no reaper" \
      "[.namespace, .image, .task, (.idle_seconds >= $GRACE), (.idle_since | type), (.reaper // \"\")]" \
      "$(j --arg ns "$IT_NS" --arg img "$IMG" '[$ns,$img,"stopped",true,"string",""]')"
    expect_jq "1: dead $id: pins its own snapshot, then the layer (leaf first), and the layer's bytes" \
      "$(printf '[(.snapshot | IN(%s, %s)), (.pinned[0] | IN(%s, %s)), .pinned[1:], .pinned_count, .pinned_bytes]' \
          "$(jq -c .key <<<"$rec")" "$(jq -c .ledger_key <<<"$rec")" \
          "$(jq -c .key <<<"$rec")" "$(jq -c .ledger_key <<<"$rec")")" \
      "$(j --arg l "$LAYER" --argjson b "$LAYER_SIZE" '[true,true,[$l],2,$b]')"
  done
  pinned=$(jq -r '[.dead[].pinned[]] | unique | length' <<<"$DEAD_DOC")
  F_PINNED=${pinned:-0}
  assert_eq "1: distinct snapshots pinned by dead containers: $CANCELLED leaves + the layer" \
    "$((CANCELLED + 1))" "$F_PINNED"
  cli --json stats
  expect_jq "1: stats --json: $CANCELLED dead containers, none reaped, watcher connected" \
    '[.dead_containers, .reaped_containers, .watcher.connected]' "[$CANCELLED,0,true]"
  assert_eq "1: snapledgerd's log reports each dead container (\"dead container <ns>/<id>\")" \
    "$CANCELLED" "$(names_count 'dead container' "$CANCELLED_IDS" <"$IT_SL_LOG")"

  # Nothing leaked silently.
  if wait_for 20 "normal builds' snapshots gone" normal_builds_gone; then
    it_pass "1: the normal builds left no snapshot behind (ledger)"
  else
    it_fail "1: the normal builds left no snapshot behind (ledger)" "$(report)"
  fi
  assert_eq "1: backend objects == ledger records (ids)" \
    "$(ledger_backend_ids | words)" "$(backend_ids | words)"
  assert_eq "1: backend holds the layer and the $CANCELLED held-back snapshots" \
    "$((CANCELLED + 1))" "$(backend_count)"
  cli --json reconcile
  expect_jq "1: reconcile: no findings (backend and ledger agree)" '.findings_total' 0
  cli --json check
  problems=$(jq -r '.problems[]' <<<"$CLI_OUT" 2>/dev/null)
  bad=$(grep -vE "$(tr ' ' '|' <<<"$CANCELLED_IDS")" <<<"$problems")
  n=0
  for id in $CANCELLED_IDS; do grep -qF -- "$id" <<<"$problems" && n=$((n + 1)); done
  if [[ $CLI_RC == 1 && $n == "$CANCELLED" && -z $bad ]]; then
    it_pass "1: check exits 1, naming each dead container and nothing else"
  else
    it_fail "1: check exits 1, naming each dead container and nothing else" \
      "named $n of $CANCELLED; other lines: ${bad:-none}" "$(cli_report)"
  fi
  cli check
  if [[ $CLI_RC == 1 && $(grep -c '' <<<"$CLI_OUT") -ge $CANCELLED ]]; then
    it_pass "1: check (table): exit 1, a line per dead container"
  else
    it_fail "1: check (table): exit 1, a line per dead container" "$(cli_report)"
  fi
}

# --------------------------- 2. snapledgerd restarted with containers ---
# While snapledgerd is down containerd moves on: GONE, a dead container whose
# snapshot's removal is held, is deleted (task, then container). containerd
# cannot prepare a snapshot without its proxy, so the new container (fresh)
# is made while snapledgerd runs blind: its containerd_address pointing at a
# socket nobody listens on. Then the real restart: what the ledger says is
# stale (GONE still holds its removal, fresh has no owner), and only a
# watcher that lists containerd again gets it right.
GONE=${CANCELLED_IDS%% *}                  # deleted while snapledgerd is down
REMAIN_IDS=${CANCELLED_IDS#"$GONE"} REMAIN_IDS=${REMAIN_IDS# }
NREMAIN=$((CANCELLED - 1))                 # dead ones left for the reaper
RUNNING_IDS='build-live fresh keeper'      # running from test 2 on (sorted)
BLIND_SOCK=$IT_TMP/no-containerd.sock      # nothing listens here

ownership_doc() { # what must survive a restart
  ledger_all | jq -cS 'map({key, ledger_key, state, owner, held_by, leases, attempts}) | sort_by(.key)'
}
# without KEY <DOC : an ownership document without the record of KEY
without() { jq -cS --arg k "$1" 'map(select(.key != $k))'; }
dead_doc() {
  dead_json | jq -cS '.dead | map({namespace, id, image, task, snapshot, pinned, pinned_count, pinned_bytes}) | sort_by(.id)'
}
idle_doc() { dead_json | jq -cS '.dead | map({id, idle_since}) | sort_by(.id)'; }
but_gone() { jq -cS --arg g "$GONE" 'map(select(.id != $g))'; }
ownership_is() { [[ $(ownership_doc | without "$2") == "$1" ]]; }
dead_doc_is() { [[ $(dead_doc) == "$1" ]]; }
# GONE's record (by backend id, whatever its key now) and object are gone
gone_records() { ledger_all | jq --argjson b "$GONE_BID" '[.[] | select(.backend_id == $b)] | length'; }
gone_is_gone() { [[ $(gone_records) == 0 && ! -e $BACKEND_DIR/$GONE_BID ]]; }
gone_history() { sl_json history -n 1000 | jq -c --argjson b "$GONE_BID" '[.[] | select(.backend_id == $b)] | sort_by(.seq)'; }
watcher_blind() { [[ $(sl_json stats | jq -r '"\(.watcher.connected) \(.watcher.address)"') == "false $BLIND_SOCK" ]]; }
asked_about_gone() { # the held removal was tried and containerd could not answer
  snapledgerd_last_log | grep -E "cannot ask containerd whether container $IT_NS/$GONE still exists" | grep -q assuming
}

# down_delete_gone : (snapledgerd down) containerd deletes GONE; snapledgerd
# is to start blind.
down_delete_gone() {
  assert_cmd_ok "2: (snapledgerd down) ctr tasks delete $GONE" ctrd tasks delete "$GONE"
  assert_cmd_ok "2: (snapledgerd down) ctr containers rm $GONE" ctrd containers rm "$GONE"
  assert_eq "2: (snapledgerd down) containerd keeps the other dead ones, build-live and keeper" \
    "$(tr ' ' '\n' <<<"$REMAIN_IDS build-live keeper" | sort | words)" "$(containers)"
  WATCH_ADDR=$BLIND_SOCK
  write_config false false
}
# down_see_again : (snapledgerd down) the real containerd_address again.
down_see_again() {
  WATCH_ADDR=$CTRD_SOCK
  write_config false false
}

test_restart() {
  local own_before dead_before idle_before id h want
  echo "== 2. snapledgerd restarted while containers run and dead ones exist; containerd changes meanwhile"
  for id in keeper build-live; do
    assert_cmd_ok "2: ctr run -d $id (sleep 600)" \
      ctrd run -d --snapshotter "$SN" "$IMG" "$id" sleep 600
    RAW[$id]=$(raw_key "$id")
    if wait_for 10 "$id's owner" owner_is "${RAW[$id]}" "$id"; then
      it_pass "2: $id's snapshot ${RAW[$id]} is owned by $id"
    else
      it_fail "2: $id's snapshot is owned by $id" "$(sl_json inspect "${RAW[$id]}" | jq -c .)"
    fi
  done
  sleep $((GRACE + 1))   # long enough for a running container to be (wrongly) called dead
  assert_eq "2: running containers are not dead (keeper, build-live)" "$CANCELLED_IDS" "$(dead_ids)"
  own_before=$(ownership_doc)
  dead_before=$(dead_doc)
  idle_before=$(idle_doc)
  GONE_BID=$(field_of "${RAW[$GONE]}" backend_id)
  GONE_LKEY=$(field_of "${RAW[$GONE]}" ledger_key)
  [[ -n $GONE_BID && -n $GONE_LKEY ]] || it_die "2: no record for $GONE (${RAW[$GONE]})"
  it_log "$GONE: ${RAW[$GONE]} held as $GONE_LKEY (object $GONE_BID); idle since $(jq -r --arg g "$GONE" '.[] | select(.id == $g) | .idle_since' <<<"$idle_before")"

  # Down: containerd deletes GONE. Blind: fresh is made.
  if snapledgerd_stop; then it_pass "2 (down): snapledgerd exits 0 on SIGTERM"
  else it_fail "2 (down): snapledgerd exits 0 on SIGTERM" "exit status $?"; fi
  down_delete_gone
  snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "2: snapledgerd did not start (blind)"
  if wait_for 10 "the watcher blind" watcher_blind; then
    it_pass "2 (blind): containerd_address $BLIND_SOCK: the watcher is not connected"
  else
    it_fail "2 (blind): containerd_address $BLIND_SOCK: the watcher is not connected" "$(sl_json stats | jq -c .watcher)"
  fi
  if wait_for 15 "the held removal tried" asked_about_gone && held_by_is "${RAW[$GONE]}" "$IT_NS/$GONE"; then
    it_pass "2 (blind): $GONE's removal, tried at start-up, stays held (containerd cannot say it is gone)"
  else
    it_fail "2 (blind): $GONE's removal, tried at start-up, stays held" \
      "$(sl_json inspect "${RAW[$GONE]}" | jq -c .)" "$(snapledgerd_last_log | grep -E "$GONE" | tail -n 5)"
  fi
  # containerd's connection to its proxy may still be backing off (its GC
  # tried snapledgerd while it was down): wait until a Stat gets through.
  wait_for 30 "containerd reaches snapledgerd" ctrs info "${LAYER#"$IT_NS"/*/}" ||
    it_log "containerd cannot reach snapledgerd: $(ctrs info "${LAYER#"$IT_NS"/*/}" 2>&1)"
  assert_cmd_ok "2 (blind): ctr run -d fresh (sleep 600)" \
    ctrd run -d --snapshotter "$SN" "$IMG" fresh sleep 600
  RAW[fresh]=$(raw_key fresh)
  sleep 1
  assert_eq "2 (blind): fresh's snapshot ${RAW[fresh]:-?} has no owner yet" \
    "live " "$(sl_json inspect "${RAW[fresh]}" | jq -r '"\(.state) \(.owner // "")"')"
  assert_eq "2 (blind): every other record as before (owners, held_by, states, attempts)" \
    "$own_before" "$(ownership_doc | without "${RAW[fresh]}")"

  # The real restart.
  restart_snapledgerd "2" down_see_again
  if wait_for 20 "$GONE's removal completed" gone_is_gone; then
    F_RECLAIMED=1
    it_pass "2: $GONE's held removal is released and completed: no $GONE_LKEY, no backend object $GONE_BID"
  else
    it_fail "2: $GONE's held removal is released and completed" \
      "records of object $GONE_BID: $(ledger_all | jq -c --argjson b "$GONE_BID" '[.[] | select(.backend_id == $b)]')" \
      "backend: [$(backend_ids | words)]"
  fi
  h=$(gone_history)
  assert_eq "2: history of $GONE_LKEY ends with op removed" removed "$(jq -r '.[-1].op' <<<"$h")"
  # Its owner events: "container GONE" (test 1), then, if the tracker's pass
  # came before the removal, "no container (GONE is gone)"; nothing else.
  want=$(j --arg g "$GONE" '["container " + $g]')
  jq -e '[.[] | select(.op == "owner")] | length == 2' <<<"$h" >/dev/null &&
    want=$(j --arg g "$GONE" '["container " + $g, "no container (" + $g + " is gone)"]')
  assert_eq "2: history of $GONE_LKEY: owner events $(jq -r 'join(", ")' <<<"$want")" \
    "$want" "$(jq -cS '[.[] | select(.op == "owner") | .detail]' <<<"$h")"
  if wait_for $((GRACE + 20)) "the dead set without $GONE" dead_ids_are "$REMAIN_IDS"; then
    it_pass "2: dead: the $NREMAIN cancelled containers containerd still has, not $GONE"
  else
    it_fail "2: dead: the $NREMAIN cancelled containers containerd still has, not $GONE" \
      "dead: [$(dead_ids)]" "expected: [$REMAIN_IDS]"
  fi
  want=$(but_gone <<<"$dead_before")
  if wait_for 10 "the same dead set" dead_doc_is "$want"; then
    it_pass "2: the dead set is rebuilt identical but for $GONE (ids, tasks, snapshots, pins)"
  else
    it_fail "2: the dead set is rebuilt identical but for $GONE" "want:  $want" "after: $(dead_doc)"
  fi
  assert_eq "2: each dead container's idle_since is unchanged (containerd's exit time)" \
    "$(but_gone <<<"$idle_before")" "$(idle_doc)"
  if wait_for 10 "fresh's owner" owner_is "${RAW[fresh]}" fresh; then
    it_pass "2: fresh's snapshot ${RAW[fresh]} is owned by fresh"
  else
    it_fail "2: fresh's snapshot is owned by fresh" "$(sl_json inspect "${RAW[fresh]}" | jq -c .)"
  fi
  assert_eq "2: history of ${RAW[fresh]}: owner event \"container fresh\"" '["container fresh"]' \
    "$(sl_json history "${RAW[fresh]}" -n 100 | jq -c '[.[] | select(.op == "owner") | .detail]')"
  want=$(without "${RAW[$GONE]}" <<<"$own_before")
  if wait_for 10 "the same ownership" ownership_is "$want" "${RAW[fresh]}"; then
    it_pass "2: ownership is rebuilt identical for the other records (owner, held_by, leases, states, attempts)"
  else
    it_fail "2: ownership is rebuilt identical for the other records" "want:  $want" \
      "after: $(ownership_doc | without "${RAW[fresh]}")"
  fi
  cli --json dead
  expect_jq "2: dead --json: the watcher counts $NREMAIN dead + build-live, fresh, keeper on $SN" \
    '.watcher.containers' "$((NREMAIN + 3))"
  for id in $RUNNING_IDS; do
    assert_eq "2: $id is RUNNING" RUNNING "$(task_status "$id")"
  done
}

# ------------------------------------------------------ 3. the reaper ---
reaper_says_dry_run() {
  [[ $(dead_json | jq -r '[.dead[].reaper] | unique | join(",")') == dry-run ]]
}
settled() {
  [[ $(dead_json | jq '.dead | length') == 0 ]] &&
    [[ $(containers) == "$RUNNING_IDS" ]] &&
    [[ $(pending_count) == 0 ]] && agree
}

test_reaper() {
  local before t0 id c0 ops want reclaimed
  echo "== 3. the reaper, match [\"build-*\"]: dry run, then for real ($NREMAIN dead: $REMAIN_IDS)"
  write_config true true
  restart_snapledgerd "3 (dry run)"
  if wait_for $((GRACE + 20)) "the reaper's dry-run verdicts" reaper_says_dry_run; then
    it_pass "3: dry run: dead --json says reaper \"dry-run\" for every dead container"
  else
    it_fail "3: dry run: dead --json says reaper \"dry-run\" for every dead container" "$(dead_json | jq -c .)"
  fi
  sleep 2   # a reaper that ignores dry_run would be at work by now
  assert_eq "3: dry run: the log names each dead container the reaper would delete (dry run)" \
    "$NREMAIN" "$(snapledgerd_last_log | names_count 'reaper.*dry.run' "$CANCELLED_IDS")"
  assert_no_match "3: dry run: the log says nothing was deleted" 'reaper.*deleted' "$(snapledgerd_last_log)"
  assert_eq "3: dry run: every container is still there" \
    "$(tr ' ' '\n' <<<"$REMAIN_IDS $RUNNING_IDS" | sort | words)" "$(containers)"
  assert_eq "3: dry run: the same dead set" "$REMAIN_IDS" "$(dead_ids)"
  assert_eq "3: dry run: nothing removed from the backend (layer, $NREMAIN held, 3 running)" \
    "$((NREMAIN + 4))" "$(backend_count)"
  cli --json dead
  expect_jq "3: dry run: reaped_total 0" .reaped_total 0

  before=$(backend_count)
  c0=$(log_lines "$IT_CTRD_LOG")
  write_config true false
  t0=$(ts)
  restart_snapledgerd "3"
  if wait_for 90 "ledger, backend and containerd agree, nothing dead or pending" settled; then
    F_SETTLE=$(since "$t0")
    it_pass "3: settled ${F_SETTLE}s after the reaper was enabled (grace ${GRACE}s)"
  else
    it_fail "3: settled after the reaper was enabled" "$(report)" "$(dead_json | jq -c .)"
  fi
  cli --json dead
  expect_jq "3: dead --json: no dead container, $NREMAIN reaped" '[.dead, .reaped_total]' "[[],$NREMAIN]"
  assert_eq "3: containerd keeps only $RUNNING_IDS" "$RUNNING_IDS" "$(containers)"
  for id in $RUNNING_IDS; do
    assert_eq "3: $id is still RUNNING" RUNNING "$(task_status "$id")"
    if owner_is "${RAW[$id]}" "$id"; then it_pass "3: $id's snapshot is still live and owned by $id"
    else it_fail "3: $id's snapshot is still live and owned by $id" "$(sl_json inspect "${RAW[$id]}" | jq -c .)"; fi
  done
  assert_eq "3: no pending removal" 0 "$(pending_count)"
  # shellcheck disable=SC2086  # the ids, one a line
  want=$(printf '%s\n' "${LAYER#"$IT_NS"/*/}" $RUNNING_IDS | sort | words)
  assert_eq "3: containerd lists the layer, build-live, fresh and keeper" "$want" "$(ctrd_keys | words)"
  assert_eq "3: the ledger holds the same four, nothing else" "$want" "$(ledger_ckeys | words)"
  assert_eq "3: backend objects == ledger records (4)" \
    "4 $(ledger_backend_ids | words)" "$(backend_count) $(backend_ids | words)"
  reclaimed=$((before - $(backend_count)))
  assert_eq "3: the reaper pass reclaimed the $NREMAIN held-back snapshots" "$NREMAIN" "$reclaimed"
  F_RECLAIMED=$((F_RECLAIMED + reclaimed))   # with GONE's, released in test 2
  F_LEAKED=$(leaked)
  assert_eq "3: leaked: 0 (no object without a record, no record containerd lacks)" 0 "$F_LEAKED"
  cli --json stats
  expect_jq "3: stats --json: no dead container, $NREMAIN reaped" \
    '[.dead_containers, .reaped_containers]' "[0,$NREMAIN]"
  cli check
  if [[ $CLI_RC == 0 ]]; then it_pass "3: check exits 0"
  else it_fail "3: check exits 0" "$(cli_report)"; fi
  cli --json reconcile
  expect_jq "3: reconcile: no findings" '.findings_total' 0
  assert_eq "3: the log names each container the reaper deleted (\"reaper: deleted ... <ns>/<id>\")" \
    "$NREMAIN" "$(snapledgerd_last_log | names_count 'reaper.*deleted' "$CANCELLED_IDS")"
  assert_no_match "3: the reaper never touched keeper, fresh or build-live (log)" \
    'reaper.*(keeper|fresh|build-live)' "$(snapledgerd_last_log)"
  ops=$(sl_json history -n 1000 | jq -r --arg ids "$CANCELLED_IDS" \
          '[.[] | select(.op == "reaped") | .key | split("/") | .[-1] | select(IN(($ids | split(" "))[]))] | unique | join(" ")')
  assert_eq "3: history: op reaped for each remaining cancelled build's snapshot (not $GONE's)" "$REMAIN_IDS" "$ops"
  assert_no_match "3: containerd's GC failed nothing" \
    "failed to remove snapshot|garbage collection failed|level=error" \
    "$(log_since "$IT_CTRD_LOG" "$c0")"
}

# ------------------------------------------- 4. containerd restarted ---
test_reconnect() {
  local sync0 sync1 t0 c
  echo "== 4. the watcher across a restart of containerd"
  sync0=$(sl_json stats | jq -r '.watcher.last_sync')
  containerd_stop
  if wait_for 15 "the watcher notices" watcher_disconnected; then
    it_pass "4: with containerd stopped, stats says the watcher is not connected"
  else
    it_fail "4: with containerd stopped, stats says the watcher is not connected" "$(sl_json stats | jq -c .watcher)"
  fi
  containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start again"
  t0=$(ts)
  if wait_for 30 "the watcher reconnected" watcher_connected; then
    it_pass "4: the watcher reconnects ($(since "$t0")s after containerd is back)"
  else
    it_fail "4: the watcher reconnects" "$(sl_json stats | jq -c .watcher)"
  fi
  cli --json stats
  sync1=$(jq -r '.watcher.last_sync' <<<"$CLI_OUT")
  if [[ $sync1 != null && $sync1 > "$sync0" ]]; then
    it_pass "4: it listed containerd again (last_sync moved on)"
  else
    it_fail "4: it listed containerd again (last_sync moved on)" "before: $sync0" "$(cli_report)"
  fi
  assert_eq "4: keeper survived containerd's restart (RUNNING)" RUNNING "$(task_status keeper)"
  assert_cmd_ok "4: ctr run -d late (sleep 600)" ctrd run -d --snapshotter "$SN" "$IMG" late sleep 600
  RAW[late]=$(raw_key late)
  t0=$(ts)
  if wait_for 5 "late's owner" owner_is "${RAW[late]}" late; then
    it_pass "4: the new container's snapshot ${RAW[late]} is owned by late ($(since "$t0")s)"
  else
    it_fail "4: the new container's snapshot is owned by late within 5s" "$(sl_json inspect "${RAW[late]}" | jq -c .)"
  fi
  # The usual end of a container (task rm, ctr containers rm with its
  # snapshot): containerd removes the snapshot just before the container, so
  # the removal may arrive while the container still exists; it must still
  # complete once the container is gone.
  ctrd tasks kill -s SIGKILL build-live >/dev/null 2>&1
  wait_for 20 "build-live stopped" task_is build-live STOPPED
  assert_cmd_ok "4: ctr tasks rm build-live" ctrd tasks rm build-live
  assert_cmd_ok "4: ctr containers rm build-live (removes its snapshot)" ctrd containers rm build-live
  if wait_for 30 "agreement" agree && wait_for 10 "no pending removal" no_pending; then
    it_pass "4: build-live's snapshot is removed; containerd, ledger and backend agree"
  else
    it_fail "4: build-live's snapshot is removed; containerd, ledger and backend agree" "$(report)"
  fi
  c=$(leaked)
  assert_eq "4: leaked: 0" 0 "$c"
  [[ $c != 0 ]] && F_LEAKED=$c
  assert_eq "4: no dead container (keeper, fresh and late run)" "" "$(dead_ids)"
}

# ------------------------------------------------------------- run ---
test_wedge
if [[ $BASELINE == 1 ]]; then exit 0; fi   # the EXIT trap cleans up
test_restart
test_reaper
test_reconnect

echo "== end"
it_kill_tasks
containerd_stop
it_kill_shims
if snapledgerd_stop; then it_pass "end: snapledgerd exits 0 on SIGTERM (containerd gone)"
else it_fail "end: snapledgerd exits 0 on SIGTERM (containerd gone)" "exit status $?"; fi
echo "FIGURES: builds=$BUILDS cancelled=$CANCELLED dead_found=$F_DEAD pinned=$F_PINNED" \
     "reclaimed=$F_RECLAIMED leaked=$F_LEAKED settle_seconds=$F_SETTLE"
exit 0   # the EXIT trap prints the summary and sets the status
