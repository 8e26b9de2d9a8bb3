#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for / it_run
# shellcheck disable=SC2016  # jq programs are single-quoted on purpose
# prune_test.sh SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY
#
# The ledger-driven prune (docs/prune.md) against a real, private containerd
# 1.6, snapledgerd's root on a small tmpfs (SIZE_MB) so that a few containers
# put the disk under pressure:
#
#   1. dry run: `snapledger prune --dry-run --free P%` lists the oldest dead
#      containers with their bytes and changes nothing (containers, ledger,
#      free space);
#   2. disk pressure: `snapledger prune --free P%` deletes dead containers
#      oldest first through containerd until the free space holds; the
#      newest ones stay; each deletion is a `pruned` history event with the
#      bytes it freed; containerd, the ledger and the backend agree;
#   3. TTL with a short clock: `snapledger prune --until Ts` takes only the
#      containers idle for longer; a running container is never a candidate;
#   4. a concurrent `ctr run`: prune passes that want everything idle gone
#      run in a loop while containers are run with `ctr run --rm`; every run
#      succeeds and sees its own rootfs, and the old dead containers go;
#   5. images ([prune] images = ["docker.io/snapledger/prune-*"]): under
#      pressure, an unused image matching the pattern is deleted through
#      containerd (its own layer goes, with its bytes in history); an image
#      a container uses and an image not matching stay; a dry run before
#      deletes nothing;
#   6. the periodic pass ([prune] enabled, interval 1s, min_free): without
#      any command, the daemon brings the free space back over min_free.
# Ends with "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

it_take_binaries "$@"

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=snapledger
SIZE_MB=${IT_PRUNE_SIZE_MB:-64}
FILL_MB=${IT_PRUNE_FILL_MB:-8}   # what each filler container writes
IDLE=3                           # [prune] dead_after (under pressure), s
CONF=$IT_TMP/snapledgerd.toml
CTRD_SOCK=$IT_TMP/containerd/containerd.sock

# ------------------------------------------------------------- helpers ---
ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }
CLI_OUT='' CLI_RC=0
cli() {
  CLI_OUT=$(timeout -k 5 120 "$SNAPLEDGER" --address "$ADMIN" --timeout 110s "$@" 2>&1)
  CLI_RC=$?
  [[ ${IT_VERBOSE:-0} == 1 ]] && it_log "+ snapledger $* -> $CLI_RC"
  return 0
}
sl_json() { timeout -k 5 "$IT_TIMEOUT" "$SNAPLEDGER" --address "$ADMIN" --json "$@" 2>/dev/null; }
words() { tr '\n' ' ' | sed 's/ *$//'; }
containers() { ctrd containers ls -q | sort | words; }
free_pct() { df --output=avail,size -B1 "$IT_SL_ROOT" | awk 'NR == 2 {printf "%d", $1 * 100 / $2}'; }
free_at_least() { (($(free_pct) >= $1)); }
free_bytes() { df --output=avail -B1 "$IT_SL_ROOT" | awk 'NR == 2 {print $1}'; }
ledger_all() { sl_json ls --all; }
ledger_count() { ledger_all | jq length; }
# shellcheck disable=SC2010  # names are decimal ids or known temporaries
backend_ids() { ls -A "$BACKEND_DIR" 2>/dev/null | grep -E '^[0-9]+$' | sort -n; }
ledger_backend_ids() { ledger_all | jq -r '.[].backend_id' | sort -n; }
ctrd_keys() { ctrs ls | awk 'NR > 1 {print $1}' | sort; }
ledger_ckeys() { ledger_all | jq -r '.[].containerd_key // "?"' | sort; }
agree() {
  [[ $(ctrd_keys) == "$(ledger_ckeys)" && $(backend_ids | words) == "$(ledger_backend_ids | words)" ]]
}
report() {
  echo "containerd: containers [$(containers)] snapshots [$(ctrd_keys | words)]"
  echo "ledger: $(ledger_all | jq -c 'map("\(.key)=\(.state)")')"
  echo "backend: [$(backend_ids | words)]; free $(free_pct)%"
}
watcher_connected() { [[ $(sl_json stats | jq -r '.watcher.connected') == true ]]; }
task_status() { ctrd tasks ls | awk -v n="$1" '$1 == n {print $3}'; }
# fill NAME : a container that writes FILL_MB into its rootfs and exits; it
# stays (no --rm), dead, pinning its rootfs.
fill() {
  ctrd run --snapshotter "$SN" "$IMG" "$1" \
    sh -c "dd if=/dev/zero of=/fill bs=1M count=$FILL_MB 2>/dev/null; sync" \
    >/dev/null 2>&1
}
seen_stopped() { # the watcher's view: every named container without a live task
  local id
  for id in "$@"; do
    [[ $(sl_json dead | jq -r --arg id "$id" '.dead[] | select(.id == $id) | .id') == "$id" ]] &&
      continue
    # not dead yet (grace) but listed without a task: good enough
    [[ $(task_status "$id") == STOPPED || -z $(task_status "$id") ]] || return 1
  done
}

write_config() { # PRUNE_ENABLED [MIN_FREE]
  cat >"$CONF" <<EOF
remove_policy = "defer"
reconcile_interval = "0s"
containerd_address = "$CTRD_SOCK"
[remove_queue]
initial_backoff = "300ms"
max_backoff = "1s"
[containers]
dead_after = "2s"
[prune]
enabled = $1
interval = "1s"
min_free = "${2:-}"
dead_after = "${IDLE}s"
containers = ["*"]
images = ["docker.io/snapledger/prune-*"]
EOF
}

# ---------------------------------------------------------- set-up ---
it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null || it_die "make_image.sh failed"
mkdir -p "$IT_TMP/snapledger"
mount -t tmpfs -o "size=${SIZE_MB}m,mode=0700" snapledger-it-small "$IT_TMP/snapledger" ||
  it_die "cannot mount a ${SIZE_MB} MiB tmpfs for the root"
write_config false
snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not start"
ADMIN=${IT_SL_SOCK%.sock}-admin.sock
BACKEND_DIR=$IT_SL_ROOT/snapshots
containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start"
[[ $IT_CTRD_SOCK == "$CTRD_SOCK" ]] || it_die "containerd's socket is $IT_CTRD_SOCK, not $CTRD_SOCK"
wait_for 30 "the watcher connected" watcher_connected || it_die "the watcher did not connect"
assert_cmd_ok "import the image with --snapshotter $SN" \
  ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
LAYER=$(ledger_all | jq -r '.[].key')

# Five dead fillers, a second apart (oldest first), and one that keeps
# running.
FILLERS="fill-1 fill-2 fill-3 fill-4 fill-5"
for id in $FILLERS; do fill "$id" || it_log "$id: ctr run failed"; sleep 1; done
ctrd run -d --snapshotter "$SN" "$IMG" keeper sleep 600 >/dev/null 2>&1 ||
  it_log "keeper did not start"
wait_for 30 "keeper running" test "$(task_status keeper)" = RUNNING
sleep "$IDLE"   # every filler idle for longer than [prune] dead_after
# shellcheck disable=SC2086  # the ids, as words
wait_for 30 "the fillers seen stopped" seen_stopped $FILLERS
FREE0=$(free_pct)
# A target two fillers short of what is free now.
TARGET=$((FREE0 + (2 * FILL_MB * 100 / SIZE_MB) - 2))
it_log "root: ${SIZE_MB} MiB tmpfs, ${FREE0}% free with 5 fillers of ${FILL_MB} MiB; target ${TARGET}%"
((TARGET < 100)) || it_die "the tmpfs is too large for the fillers (free ${FREE0}%)"

# ------------------------------------------------------- 1. dry run ---
test_dry_run() {
  echo "== 1. dry run: prune --dry-run --free ${TARGET}% changes nothing"
  local records before_free
  records=$(ledger_count)
  before_free=$(free_bytes)
  cli prune --dry-run --free "${TARGET}%" --json
  assert_eq "dry run: exit 0" 0 "$CLI_RC"
  assert_eq "dry run: says so" true "$(jq -r .dry_run <<<"$CLI_OUT")"
  assert_eq "dry run: the two oldest fillers would go, oldest first" \
    "fill-1 fill-2" "$(jq -r '.actions[].id' <<<"$CLI_OUT" | words)"
  assert_eq "dry run: every action is a pressure one, none done" \
    "pressure false,pressure false" \
    "$(jq -r '[.actions[] | "\(.reason) \(.done)"] | join(",")' <<<"$CLI_OUT")"
  local est
  est=$(jq -r '.bytes_freed' <<<"$CLI_OUT")
  if ((est >= 2 * FILL_MB * 1024 * 1024)); then
    it_pass "dry run: the estimate counts the fillers' bytes ($est)"
  else
    it_fail "dry run: the estimate counts the fillers' bytes" "$CLI_OUT"
  fi
  cli prune --dry-run --free "${TARGET}%"
  assert_match "dry run: the table says 'would go'" \
    '^container +[^ ]+/fill-1 +pressure .* would go$' "$CLI_OUT"
  assert_eq "dry run: every container is still there" \
    "fill-1 fill-2 fill-3 fill-4 fill-5 keeper" "$(containers)"
  assert_eq "dry run: the ledger is unchanged" "$records" "$(ledger_count)"
  assert_eq "dry run: the free space is unchanged" "$before_free" "$(free_bytes)"
  assert_eq "dry run: no pruned history" 0 \
    "$(sl_json history --limit 1000 | jq '[.[] | select(.op == "pruned")] | length')"
}

# ------------------------------------------------ 2. disk pressure ---
test_pressure() {
  echo "== 2. disk pressure: prune --free ${TARGET}% frees space until it holds"
  cli prune --free "${TARGET}%" --json
  assert_eq "pressure: exit 0" 0 "$CLI_RC"
  assert_eq "pressure: the two oldest fillers went" \
    "fill-1 fill-2" "$(jq -r '[.actions[] | select(.done)] | .[].id' <<<"$CLI_OUT" | words)"
  assert_eq "pressure: the target is met" true "$(jq -r .target_met <<<"$CLI_OUT")"
  local now
  now=$(free_pct)
  if ((now >= TARGET)); then
    it_pass "pressure: df says ${now}% free (>= ${TARGET}%)"
  else
    it_fail "pressure: df says >= ${TARGET}% free" "got ${now}%" "$(report)"
  fi
  assert_eq "pressure: the newer fillers and the running one stay" \
    "fill-3 fill-4 fill-5 keeper" "$(containers)"
  local freed
  freed=$(jq -r '[.actions[] | select(.done) | .freed_bytes] | min' <<<"$CLI_OUT")
  if ((freed >= FILL_MB * 1024 * 1024)); then
    it_pass "pressure: each action freed its filler's bytes ($freed)"
  else
    it_fail "pressure: each action freed its filler's bytes" "$CLI_OUT"
  fi
  local events
  events=$(sl_json history --limit 1000 | jq -r '.[] | select(.op == "pruned") | .detail')
  assert_match "pressure: history notes fill-1 with its bytes" \
    "container $IT_NS/fill-1 deleted by the prune \(pressure: min_free ${TARGET}%\): freed [0-9]{7,} bytes" "$events"
  assert_match "pressure: history notes fill-2 with its bytes" \
    "container $IT_NS/fill-2 deleted by the prune" "$events"
  assert_eq "pressure: the image layer stays" "$LAYER" \
    "$(ledger_all | jq -r --arg k "$LAYER" '.[] | select(.key == $k) | .key')"
  if wait_for 20 "containerd, ledger and backend agree" agree; then
    it_pass "pressure: containerd, the ledger and the backend agree"
  else
    it_fail "pressure: containerd, the ledger and the backend agree" "$(report)"
  fi
}

# ------------------------------------------------------------ 3. TTL ---
test_ttl() {
  echo "== 3. TTL: prune --until takes only what is idle for longer"
  sleep 6   # fill-3..5: idle for more than 6 s whatever ran before
  fill young || it_log "young: ctr run failed"
  wait_for 30 "young seen stopped" seen_stopped young
  # young has been idle for about a second.
  cli prune --until 6s --json
  assert_eq "ttl: exit 0" 0 "$CLI_RC"
  assert_eq "ttl: the old fillers went, as ttl" "fill-3:ttl fill-4:ttl fill-5:ttl" \
    "$(jq -r '[.actions[] | select(.done) | "\(.id):\(.reason)"] | join(" ")' <<<"$CLI_OUT")"
  assert_eq "ttl: the young one and the running one stay" "keeper young" "$(containers)"
  sleep 3   # young is now dead too ([containers] dead_after 2s)
  cli prune --until 1s --json
  assert_eq "ttl: a running container is never a candidate" "young" \
    "$(jq -r '[.actions[].id] | join(" ")' <<<"$CLI_OUT")"
  assert_eq "ttl: only keeper is left" "keeper" "$(containers)"
}

# ------------------------------------------ 4. a concurrent ctr run ---
test_concurrent_run() {
  echo "== 4. a concurrent ctr run during prunes is never harmed"
  local id i pids=() bad=0
  for id in old-1 old-2 old-3; do fill "$id" || it_log "$id: ctr run failed"; done
  sleep "$IDLE"
  wait_for 30 "the old ones seen stopped" seen_stopped old-1 old-2 old-3
  # Prune passes that want (nearly) everything idle gone, in a loop ...
  (
    for ((i = 0; i < 20; i++)); do
      timeout -k 5 120 "$SNAPLEDGER" --address "$ADMIN" --timeout 110s prune --free 99% \
        >>"$IT_TMP/prune-loop.out" 2>&1
      sleep 0.2
    done
  ) &
  local loop=$!
  # ... while containers run.
  for ((i = 1; i <= 8; i++)); do
    ctr -a "$IT_CTRD_SOCK" -n "$IT_NS" run --rm --snapshotter "$SN" "$IMG" "race-$i" \
      sh -c "echo race-$i > /mine; sleep 2; cat /mine" </dev/null >"$IT_TMP/race-$i.out" 2>&1 &
    pids+=($!)
    sleep 0.5
  done
  for ((i = 1; i <= 8; i++)); do
    wait "${pids[$((i - 1))]}" || { bad=$((bad + 1)); it_log "race-$i: exit $?: $(cat "$IT_TMP/race-$i.out")"; }
    grep -qx "race-$i" "$IT_TMP/race-$i.out" || { bad=$((bad + 1)); it_log "race-$i: $(cat "$IT_TMP/race-$i.out")"; }
  done
  wait "$loop"
  assert_eq "race: every ctr run succeeded and read its own rootfs" 0 "$bad"
  assert_eq "race: the old dead containers went, keeper stays" "keeper" "$(containers)"
  assert_no_match "race: no prune pass failed" 'snapledger: ' "$(cat "$IT_TMP/prune-loop.out")"
  if wait_for 20 "containerd, ledger and backend agree" agree; then
    it_pass "race: containerd, the ledger and the backend agree"
  else
    it_fail "race: containerd, the ledger and the backend agree" "$(report)"
  fi
}

# ---------------------------------------------------------- 5. images ---
# prune-unused: 3 layers (its third is its own); prune-used: the first two of
# them, and a container runs from it; not-pruned: the test image re-tagged
# under a name no pattern matches.
IMG_UNUSED=docker.io/snapledger/prune-unused:1
IMG_USED=docker.io/snapledger/prune-used:1
IMG_OTHER=docker.io/other/not-pruned:1
images() { ctrd images ls -q | sort | words; }
test_images() {
  echo "== 5. images: only unused ones matching [prune] images go"
  if ! "$HERE/make_image.sh" "$IT_TMP/unused.tar" "$IMG_UNUSED" 3 2>/dev/null ||
    ! "$HERE/make_image.sh" "$IT_TMP/used.tar" "$IMG_USED" 2 2>/dev/null; then
    it_die "make_image.sh failed"
  fi
  assert_cmd_ok "images: import $IMG_UNUSED" \
    ctrd images import --snapshotter "$SN" "$IT_TMP/unused.tar"
  assert_cmd_ok "images: import $IMG_USED" \
    ctrd images import --snapshotter "$SN" "$IT_TMP/used.tar"
  assert_cmd_ok "images: tag $IMG_OTHER" ctrd images tag "$IMG" "$IMG_OTHER"
  ctrd run -d --snapshotter "$SN" "$IMG_USED" img-user sleep 600 >/dev/null 2>&1 ||
    it_log "img-user did not start"
  wait_for 30 "img-user running" test "$(task_status img-user)" = RUNNING
  local all records
  all=$(images)
  records=$(ledger_count)

  cli prune --dry-run --free 99% --json
  assert_eq "images: dry run: exit 0" 0 "$CLI_RC"
  assert_eq "images: dry run: only the unused matching image would go" \
    "image:$IMG_UNUSED:pressure" \
    "$(jq -r '[.actions[] | select(.kind == "image") | "\(.kind):\(.id):\(.reason)"] | join(" ")' <<<"$CLI_OUT")"
  cli prune --dry-run --free 99%
  assert_match "images: dry run: the table lists it" \
    "^image +$IT_NS/$IMG_UNUSED +pressure .* would go\$" "$CLI_OUT"
  assert_eq "images: dry run: every image is still there" "$all" "$(images)"
  assert_eq "images: dry run: the ledger is unchanged" "$records" "$(ledger_count)"

  cli prune --free 99% --json
  assert_eq "images: pressure: exit 0" 0 "$CLI_RC"
  assert_eq "images: pressure: the unused matching image went" "$IMG_UNUSED" \
    "$(jq -r '[.actions[] | select(.kind == "image" and .done) | .id] | join(" ")' <<<"$CLI_OUT")"
  local freed
  freed=$(jq -r '[.actions[] | select(.kind == "image") | .freed_bytes] | add // 0' <<<"$CLI_OUT")
  if ((freed > 0)); then
    it_pass "images: pressure: its own layer's bytes were freed ($freed)"
  else
    it_fail "images: pressure: its own layer's bytes were freed" "$CLI_OUT"
  fi
  assert_eq "images: the used one and the unmatched ones stay" \
    "$(tr ' ' '\n' <<<"$all" | grep -vx "$IMG_UNUSED" | words)" "$(images)"
  assert_eq "images: the container using its image still runs" RUNNING \
    "$(task_status img-user)"
  assert_match "images: history notes the image with its bytes" \
    "image $IT_NS/$IMG_UNUSED deleted by the prune \(pressure: min_free 99%\): freed [1-9][0-9]* bytes" \
    "$(sl_json history --limit 1000 | jq -r '.[] | select(.op == "pruned") | .detail')"
  if wait_for 20 "containerd, ledger and backend agree" agree; then
    it_pass "images: containerd, the ledger and the backend agree"
  else
    it_fail "images: containerd, the ledger and the backend agree" "$(report)"
  fi
  # Out of the periodic pass's way.
  ctrd tasks kill -s SIGKILL img-user >/dev/null 2>&1
  wait_for 30 "img-user stopped" test "$(task_status img-user)" = STOPPED
  ctrd tasks rm img-user >/dev/null 2>&1
  ctrd containers rm img-user >/dev/null 2>&1
}

# ------------------------------------------------ 6. periodic pass ---
test_periodic() {
  echo "== 6. the periodic pass: [prune] enabled brings min_free back"
  local id target
  for id in per-1 per-2 per-3; do fill "$id" || it_log "$id: ctr run failed"; done
  target=$(($(free_pct) + FILL_MB * 100 / SIZE_MB))
  snapledgerd_stop || it_log "snapledgerd did not exit 0"
  write_config true "${target}%"
  snapledgerd_start "$SNAPLEDGERD" --config "$CONF" || it_die "snapledgerd did not start again"
  wait_for 30 "the watcher connected" watcher_connected || it_fail "periodic: the watcher connects"
  if wait_for 60 "free >= ${target}%" free_at_least "$target"; then
    it_pass "periodic: free space back to >= ${target}% without a command"
  else
    it_fail "periodic: free space back to >= ${target}%" "$(report)"
  fi
  assert_log_match "periodic: the daemon logs the pass" \
    "prune: container $IT_NS/per-1 deleted by the prune \(pressure: min_free ${target}%\)" "$IT_SL_LOG"
  assert_contains "periodic: the newest stays" "per-3" "$(containers)"
}

test_dry_run
test_pressure
test_ttl
test_concurrent_run
test_images
test_periodic
