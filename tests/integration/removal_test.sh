#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through it_run/wait_for
# removal_test.sh SNAPLEDGERD_BINARY
#
# Removal that never leaks (docs/removal.md), end to end against a real,
# private containerd 1.6 (see README.md). Runs the same scenarios twice, with
# remove_policy = "defer" and then "refuse", each phase on a fresh snapledgerd
# root and a fresh containerd:
#   1. busy mount, a bind mount made by the test: Remove on snapledgerd's own
#      socket is queued (defer) or refused (refuse) until the mount goes;
#   2. busy mount, a running container's rootfs (the runc shim's bind mount);
#   3. the cascade through containerd's GC: an image layer with an unknown,
#      mounted child; containerd drops the image and its GC removes both;
#   4. (defer) a pending removal survives a restart of snapledgerd;
#   5. (overlayfs) a running container's lower layer: a container on a view
#      of a 3-layer image, whose rootfs is an overlay of the three layers
#      with no upperdir; the view is removed (its own fs/ is unused), so the
#      top layer has no child left and only the busy check of its fs/ as an
#      overlay lowerdir keeps it from being removed under the container.
# Prints PASS/FAIL/SKIP per check and ends with "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

SNAPLEDGERD=${1:-${SNAPLEDGERD:-}}
if [[ -z $SNAPLEDGERD ]]; then
  echo "usage: $0 SNAPLEDGERD_BINARY" >&2
  exit 2
fi
SNAPLEDGERD=$(readlink -f "$SNAPLEDGERD")
[[ -x $SNAPLEDGERD ]] || { echo "not an executable: $SNAPLEDGERD" >&2; exit 2; }
export SNAPLEDGERD

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=snapledger
BACKEND_OBJECT=${IT_BACKEND_OBJECT:-'^[0-9]+$'}
# Policies to run, in order (e.g. IT_POLICIES=defer for a quicker look).
POLICIES=${IT_POLICIES:-"defer refuse"}

ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }   # through containerd
sls() { sld snapshots --snapshotter "$SN" "$@"; }     # straight to snapledgerd

# shellcheck disable=SC2010  # names are decimal ids or known temporaries
backend_entries() { ls -A "$BACKEND_DIR" 2>/dev/null | grep -E "$BACKEND_OBJECT" | sort; }
backend_count() { backend_entries | grep -c .; }
backend_count_is() { [[ $(backend_count) == "$1" ]]; }
# A removed object is renamed to a temporary (rm-<id>) and deleted in the
# background: "no entry at all" holds once that deletion is over.
backend_empty() { [[ -z $(ls -A "$BACKEND_DIR" 2>/dev/null) ]]; }
ledger_keys() { sls ls | awk 'NR > 1 {print $1}' | sort; }
ctrd_keys() { ctrs ls | awk 'NR > 1 {print $1}' | sort; }
report_counts() {
  echo "backend=[$(backend_entries | tr '\n' ' ')] snapledgerd=[$(ledger_keys | tr '\n' ' ')]" \
       "containerd=[$(ctrd_keys | tr '\n' ' ')]"
}
# raw_key SUFFIX : snapledgerd's key for containerd's key SUFFIX
# (<namespace>/<seq>/SUFFIX).
raw_key() { ledger_keys | awk -v s="/$1" 'length($0) > length(s) && substr($0, length($0) - length(s) + 1) == s' | head -n1; }
listed() { ledger_keys | grep -Fxq -- "$1"; }
not_listed() { ! listed "$1"; }

# Log excerpts: remember a line count, read what came after it.
log_lines() { wc -l <"$1" 2>/dev/null || echo 0; }
log_since() { tail -n +"$(($2 + 1))" "$1"; }
sl_log_since() { log_since "$IT_SL_LOG" "$1"; }
ctrd_log_since() { log_since "$IT_CTRD_LOG" "$1"; }
sl_last_log_has() { snapledgerd_last_log | grep -Eq -- "$1"; }
task_status_is() { # NAME STATUS
  ctrd tasks ls | awk -v n="$1" -v s="$2" '$1 == n && $3 == s {f = 1} END {exit !f}'
}
sl_log_has() { sl_log_since "$1" | grep -Eq -- "$2"; }
# ERE-quote a literal string.
# shellcheck disable=SC2001,SC2016
re_quote() { sed 's/[][\.|$(){}?+*^]/\\&/g' <<<"$1"; }


# gc_passes SINCE : number of completed GC passes for snapledger since SINCE.
gc_passes() {
  ctrd_log_since "$1" | grep -Ec "msg=\"snapshot garbage collected\".*snapshotter=$SN"
}
gc_pass_since() { [[ $(gc_passes "$1") -ge 1 ]]; }
# gc_sync : a synchronous GC pass (deleting an empty lease with --sync). The
# scheduler drops deletion events that arrive while a pass is running
# (gc/scheduler: events older than the last collection are ignored), so a
# deletion right after another one may never trigger a pass of its own; this
# makes sure one runs after it. Snapshotters are walked only if a snapshot
# record was removed since the last pass.
gc_sync() {
  local id=it-gc-$RANDOM$RANDOM
  ctrd leases create --id "$id" >/dev/null && ctrd leases rm --sync "$id" >/dev/null
}

# ------------------------------------------------------------ the image ---
it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null ||
  it_die "make_image.sh failed"
IMG3=docker.io/snapledger/busybox:3layers
if [[ $IT_MOUNT_STYLE == overlayfs ]]; then
  "$HERE/make_image.sh" "$IT_TMP/image3.tar" "$IMG3" 3 2>/dev/null ||
    it_die "make_image.sh failed (3 layers)"
  mapfile -t CHAIN3 < <(it_image_chain_ids "$IT_TMP/image3.tar")
  [[ ${#CHAIN3[@]} -eq 3 ]] || it_die "expected 3 chain ids, got: ${CHAIN3[*]}"
fi

# start_phase POLICY : fresh snapledgerd root + config, fresh containerd,
# image imported; sets LAYER (the layer's raw key) and BACKEND_DIR.
start_phase() {
  local policy=$1
  cat >"$IT_TMP/snapledgerd-$policy.toml" <<EOF
remove_policy = "$policy"
reconcile_interval = "0s"
[remove_queue]
initial_backoff = "500ms"
max_backoff = "1s"
jitter = 0.2
max_attempts = 1000
EOF
  snapledgerd_start "$SNAPLEDGERD" --config "$IT_TMP/snapledgerd-$policy.toml" ||
    it_die "snapledgerd did not start ($policy)"
  assert_match "[$policy] snapledgerd starts with an empty removal queue, policy $policy" \
    "removal queue: 0 pending \(0 waiting for children\), 0 stuck; policy $policy" \
    "$(snapledgerd_last_log)"
  containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start ($policy)"
  BACKEND_DIR=$(it_backend_dir)
  assert_cmd_ok "[$policy] import the image with --snapshotter $SN" \
    ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
  LAYER=$(ledger_keys)
  if [[ $(grep -c . <<<"$LAYER") -ne 1 || $LAYER != "$IT_NS"/*/sha256:* ]]; then
    it_die "expected one layer in snapledgerd's list, got: $LAYER"
  fi
  it_log "layer's raw key: $LAYER"
}

# end_phase POLICY : stop both daemons and keep their directories aside.
end_phase() {
  local policy=$1
  it_kill_tasks
  containerd_stop
  it_kill_shims
  if snapledgerd_stop; then it_pass "[$policy] snapledgerd exits 0 on SIGTERM"
  else it_fail "[$policy] snapledgerd exits 0 on SIGTERM" "got exit status $?"; fi
  it_unmount_all
  mv "$IT_TMP/containerd" "$IT_TMP/containerd-$policy"
  mv "$IT_SL_ROOT" "$IT_SL_ROOT-$policy"
  if [[ $IT_BACKEND == remote ]]; then  # the downstream goes with the root
    downstream_stop
    mv "$IT_DS_ROOT" "$IT_DS_ROOT-$policy"
  fi
  IT_CTRD_LOG=$IT_TMP/containerd-$policy/containerd.log
  IT_CTRD_STATE=
}

# ------------------------------------------- scenario 1: a bind mount ---
scenario_bind_mount() {
  local policy=$1 key=s1-busy mnt=$IT_TMP/s1-mnt sl0 id
  echo "== [$policy] 1. busy: a bind mount of an unknown snapshot"
  sl0=$(log_lines "$IT_SL_LOG")
  assert_cmd_ok "[$policy] 1: prepare $key on the layer, on snapledgerd's socket" \
    sls prepare "$key" "$LAYER"
  if ! it_run sl_hold_mount "$key" "$mnt" || [[ $IT_RC -ne 0 ]]; then
    it_fail "[$policy] 1: bind-mount $key's storage" "$IT_OUT"
    return
  fi
  echo s1-data >"$mnt/s1-file"
  assert_eq "[$policy] 1: backend holds the layer and $key" 2 "$(backend_count)"

  if [[ $policy == refuse ]]; then
    assert_cmd_fails "[$policy] 1: rm of the mounted snapshot: failed precondition, in use (busy)" \
      "failed precondition" sls rm "$key"
    assert_match "[$policy] 1: the refusal names the mount point" \
      "in use: mounted at $(re_quote "$mnt") \(busy\)" "$IT_OUT"
    if listed "$key"; then it_pass "[$policy] 1: $key is still listed"
    else it_fail "[$policy] 1: $key is still listed" "$(report_counts)"; fi
    assert_eq "[$policy] 1: its storage is intact" s1-data "$(cat "$mnt/s1-file" 2>&1)"
    assert_cmd_ok "[$policy] 1: umount" umount -n "$mnt"
    assert_cmd_ok "[$policy] 1: rm succeeds once the mount is gone" sls rm "$key"
    if not_listed "$key"; then it_pass "[$policy] 1: $key is no longer listed"
    else it_fail "[$policy] 1: $key is no longer listed" "$(report_counts)"; fi
    assert_eq "[$policy] 1: backend holds only the layer" 1 "$(backend_count)"
    return
  fi

  assert_cmd_ok "[$policy] 1: rm of the mounted snapshot answers OK" sls rm "$key"
  if not_listed "$key"; then it_pass "[$policy] 1: $key is no longer listed"
  else it_fail "[$policy] 1: $key is no longer listed" "$(report_counts)"; fi
  assert_cmd_fails "[$policy] 1: info $key: not found" "not found" sls info "$key"
  id=$(sl_log_since "$sl0" |
       sed -nE "s#.*remove $key: cannot remove now \(.*in use: mounted at .*\(busy\)\); queued as snapledger\.removed/([0-9]+)\$#\1#p" |
       head -n1)
  if [[ -n $id ]]; then
    it_pass "[$policy] 1: log: remove $key: cannot remove now (busy); queued as snapledger.removed/$id"
  else
    it_fail "[$policy] 1: log: remove $key: cannot remove now (busy); queued as snapledger.removed/N" \
      "$(it_indent "$(sl_log_since "$sl0")")"
    id=none
  fi
  assert_eq "[$policy] 1: backend still holds 2 objects" 2 "$(backend_count)"
  if [[ -d $BACKEND_DIR/$id/fs ]]; then it_pass "[$policy] 1: its directory snapshots/$id is still there"
  else it_fail "[$policy] 1: its directory snapshots/$id is still there" "$(ls -A "$BACKEND_DIR" 2>&1)"; fi
  assert_eq "[$policy] 1: its storage is intact" s1-data "$(cat "$mnt/s1-file" 2>&1)"
  # The key is free at once: a new snapshot under it is a new object.
  assert_cmd_ok "[$policy] 1: the key is free at once: prepare $key again" \
    sls prepare "$key" "$LAYER"
  assert_cmd_ok "[$policy] 1: ... and rm it (not mounted: removed at once)" sls rm "$key"
  assert_eq "[$policy] 1: backend back to 2 objects" 2 "$(backend_count)"
  if wait_for 10 "a failed retry" sl_log_has "$sl0" \
       "removal queue: $key \(snapledger\.removed/$id\): attempt [0-9]+ failed: .*busy"; then
    it_pass "[$policy] 1: the queue retries and fails while the mount is held"
  else
    it_fail "[$policy] 1: the queue retries and fails while the mount is held" \
      "$(it_indent "$(sl_log_since "$sl0")")"
  fi
  assert_eq "[$policy] 1: still 2 objects after the failed retries" 2 "$(backend_count)"

  assert_cmd_ok "[$policy] 1: umount" umount -n "$mnt"
  if wait_for 10 "the queue removed $key" backend_count_is 1; then
    it_pass "[$policy] 1: the queue removes it once the mount is gone (backend: layer only)"
  else
    it_fail "[$policy] 1: the queue removes it once the mount is gone" "$(report_counts)"
  fi
  if wait_for 5 "log line" sl_log_has "$sl0" \
       "removal queue: removed $key \(snapledger\.removed/$id\) after [1-9][0-9]* failed attempts"; then
    it_pass "[$policy] 1: log: removal queue: removed $key (snapledger.removed/$id) after K failed attempts"
  else
    it_fail "[$policy] 1: log: removal queue: removed $key" "$(it_indent "$(sl_log_since "$sl0")")"
  fi
}

# --------------------------------- scenario 2: a running container ---
scenario_container() {
  local policy=$1 name=c2-$1 sl0 c0 raw shim spid sl_ns shim_ns rootfs line id
  echo "== [$policy] 2. busy: a running container's rootfs"
  assert_cmd_ok "[$policy] 2: ctr run -d $name (sleep 600)" \
    ctrd run -d --snapshotter "$SN" "$IMG" "$name" sleep 600
  assert_cmd_ok "[$policy] 2: the container writes a file (task exec)" \
    ctrd tasks exec --exec-id w1 "$name" sh -c 'echo from-container > /root/c2'
  raw=$(raw_key "$name")
  if [[ -z $raw ]]; then
    it_fail "[$policy] 2: snapledgerd lists the container's snapshot" "$(report_counts)"
    return
  fi
  it_pass "[$policy] 2: snapledgerd lists the container's snapshot as $raw"

  # Can snapledgerd see the shim's rootfs mount at all?
  rootfs=$IT_CTRD_STATE/io.containerd.runtime.v2.task/$IT_NS/$name/rootfs
  # The container's init process is a child of its shim (a subreaper).
  spid=$(ctrd tasks ls 2>/dev/null | awk -v n="$name" '$1 == n {print $2}')
  shim=$(awk '$1 == "PPid:" {print $2}' "/proc/$spid/status" 2>/dev/null)
  echo "  shim: pid $shim: $(tr '\0' ' ' <"/proc/$shim/cmdline" 2>/dev/null)"
  sl_ns=$(readlink "/proc/$IT_SL_PID/ns/mnt")
  shim_ns=$(readlink "/proc/$shim/ns/mnt" 2>/dev/null)
  echo "  mount namespaces: snapledgerd $sl_ns, containerd $(readlink "/proc/$IT_CTRD_PID/ns/mnt")," \
       "shim ($shim) $shim_ns, container init ($spid) $(readlink "/proc/$spid/ns/mnt" 2>/dev/null)"
  line=$(awk -v p="$rootfs" '$5 == p' "/proc/$IT_SL_PID/mountinfo")
  echo "  shim's rootfs in the shim's mountinfo:       $(awk -v p="$rootfs" '$5 == p' "/proc/$shim/mountinfo" 2>/dev/null)"
  echo "  shim's rootfs in snapledgerd's mountinfo:    ${line:-(absent)}"
  if [[ -z $line ]]; then
    it_skip "[$policy] 2: busy check on a container's rootfs" \
      "the shim's rootfs mount $rootfs is not visible in snapledgerd's mount namespace ($sl_ns vs the shim's $shim_ns)"
  else
    it_pass "[$policy] 2: the shim's rootfs mount is visible to snapledgerd"
    sl0=$(log_lines "$IT_SL_LOG")
    if [[ $policy == refuse ]]; then
      assert_cmd_fails "[$policy] 2: rm of the container's snapshot: failed precondition" \
        "failed precondition" sls rm "$raw"
      assert_match "[$policy] 2: the refusal names the rootfs mount (busy)" \
        "in use: mounted at $(re_quote "$rootfs") \(busy\)" "$IT_OUT"
      if listed "$raw"; then it_pass "[$policy] 2: it is still listed"
      else it_fail "[$policy] 2: it is still listed" "$(report_counts)"; fi
    else
      assert_cmd_ok "[$policy] 2: rm of the container's snapshot answers OK" sls rm "$raw"
      if not_listed "$raw"; then it_pass "[$policy] 2: it is no longer listed"
      else it_fail "[$policy] 2: it is no longer listed" "$(report_counts)"; fi
      assert_cmd_fails "[$policy] 2: info: not found" "not found" sls info "$raw"
      id=$(sl_log_since "$sl0" |
           sed -nE "s#.*remove $(re_quote "$raw"): cannot remove now \(.*mounted at $(re_quote "$rootfs") \(busy\)\); queued as snapledger\.removed/([0-9]+)\$#\1#p" |
           head -n1)
      if [[ -n $id ]]; then it_pass "[$policy] 2: log: queued as snapledger.removed/$id, busy at the rootfs"
      else it_fail "[$policy] 2: log: cannot remove now (busy at the rootfs); queued" \
             "$(it_indent "$(sl_log_since "$sl0")")"; id=none; fi
      assert_eq "[$policy] 2: backend still holds the layer and the rootfs" 2 "$(backend_count)"
    fi
    it_run ctrd tasks exec --exec-id r1 "$name" cat /root/c2
    assert_eq "[$policy] 2: the container still reads what it wrote" from-container "$IT_OUT"
  fi

  c0=$(log_lines "$IT_CTRD_LOG")
  sl0=$(log_lines "$IT_SL_LOG")
  assert_cmd_ok "[$policy] 2: kill the task" ctrd tasks kill -s KILL "$name"
  wait_for 20 "task stopped" task_status_is "$name" STOPPED
  assert_cmd_ok "[$policy] 2: delete the task" ctrd tasks rm "$name"
  assert_cmd_ok "[$policy] 2: delete the container" ctrd containers rm "$name"
  assert_cmd_ok "[$policy] 2: a synchronous GC pass" gc_sync
  if wait_for 30 "backend back to the layer" backend_count_is 1; then
    it_pass "[$policy] 2: its storage is removed once the task is gone (backend: layer only)"
  else
    it_fail "[$policy] 2: its storage is removed once the task is gone" "$(report_counts)"
  fi
  if wait_for 20 "a GC pass" gc_pass_since "$c0"; then
    it_pass "[$policy] 2: containerd's GC ran for $SN after the container went"
  else
    it_fail "[$policy] 2: containerd's GC ran for $SN after the container went" \
      "$(it_indent "$(ctrd_log_since "$c0" | tail -n 20)")"
  fi
  assert_eq "[$policy] 2: snapledgerd lists only the layer" "$LAYER" "$(ledger_keys)"
  if [[ -n $line && $policy == defer ]]; then
    if wait_for 5 "log line" sl_log_has "$sl0" \
         "removal queue: removed $(re_quote "$raw") \(snapledger\.removed/$id\)"; then
      it_pass "[$policy] 2: log: the queue removed it"
    else
      it_fail "[$policy] 2: log: the queue removed it" "$(it_indent "$(sl_log_since "$sl0")")"
    fi
  fi
  assert_no_match "[$policy] 2: no failed GC pass" \
    "garbage collection failed|failed to remove snapshot|level=error" \
    "$(ctrd_log_since "$c0")"
}

# ------------------------------ scenario 3: the cascade through GC ---
scenario_cascade() {
  local policy=$1 key=s3-child mnt=$IT_TMP/s3-mnt c0 sl0 child_id layer_id pass c1
  echo "== [$policy] 3. containerd's GC: an image layer with an unknown, mounted child"
  assert_cmd_ok "[$policy] 3: prepare $key on the layer, on snapledgerd's socket" \
    sls prepare "$key" "$LAYER"
  if ! it_run sl_hold_mount "$key" "$mnt" || [[ $IT_RC -ne 0 ]]; then
    it_fail "[$policy] 3: bind-mount $key's storage" "$IT_OUT"
    return
  fi
  assert_eq "[$policy] 3: backend holds the layer and the child" 2 "$(backend_count)"
  c0=$(log_lines "$IT_CTRD_LOG")
  sl0=$(log_lines "$IT_SL_LOG")
  # --sync: ctr returns once the GC pass (snapshotters' removals and Cleanup
  # included) is over.
  assert_cmd_ok "[$policy] 3: containerd drops the image (images rm --sync)" \
    ctrd images rm --sync "$IMG"
  if wait_for 20 "a GC pass" gc_pass_since "$c0"; then
    it_pass "[$policy] 3: containerd's GC pass ran for $SN and finished"
  else
    it_fail "[$policy] 3: containerd's GC pass ran for $SN and finished" \
      "$(it_indent "$(ctrd_log_since "$c0" | tail -n 20)")"
  fi
  pass=$(ctrd_log_since "$c0")
  assert_eq "[$policy] 3: containerd lists no snapshot" "" "$(ctrd_keys 2>&1)"
  assert_no_match "[$policy] 3: the GC pass did not abort" \
    "snapshot garbage collection failed|garbage collection failed|level=error" "$pass"
  assert_eq "[$policy] 3: backend still holds 2 objects" 2 "$(backend_count)"

  if [[ $policy == defer ]]; then
    assert_no_match "[$policy] 3: no 'failed to remove snapshot' in the pass" \
      "failed to remove snapshot" "$pass"
    assert_match "[$policy] 3: containerd's GC removed the child through $SN" \
      "msg=\"removed snapshot\" key=\"?$(re_quote "$key")\"? snapshotter=$SN" "$pass"
    assert_match "[$policy] 3: containerd's GC removed the layer through $SN" \
      "msg=\"removed snapshot\" key=\"?$(re_quote "$LAYER")\"? snapshotter=$SN" "$pass"
    assert_eq "[$policy] 3: snapledgerd lists nothing" "" "$(ledger_keys 2>&1)"
    child_id=$(sl_log_since "$sl0" |
      sed -nE "s#.*remove $key: cannot remove now \(.*\(busy\)\); queued as snapledger\.removed/([0-9]+)\$#\1#p" | head -n1)
    layer_id=$(sl_log_since "$sl0" |
      sed -nE "s#.*remove $(re_quote "$LAYER"): deferred as snapledger\.removed/([0-9]+) \(waiting for children \[.*\]\)\$#\1#p" | head -n1)
    if [[ -n $child_id ]]; then it_pass "[$policy] 3: log: the child is queued (busy) as snapledger.removed/$child_id"
    else it_fail "[$policy] 3: log: the child is queued (busy)" "$(it_indent "$(sl_log_since "$sl0")")"; child_id=none; fi
    if [[ -n $layer_id ]]; then it_pass "[$policy] 3: log: the layer is deferred as snapledger.removed/$layer_id, waiting for children"
    else it_fail "[$policy] 3: log: the layer is deferred waiting for children" "$(it_indent "$(sl_log_since "$sl0")")"; layer_id=none; fi
    if [[ -d $BACKEND_DIR/$child_id && -d $BACKEND_DIR/$layer_id ]]; then
      it_pass "[$policy] 3: both directories are still in the backend"
    else
      it_fail "[$policy] 3: both directories are still in the backend" "$(report_counts)"
    fi
    assert_cmd_ok "[$policy] 3: umount the child" umount -n "$mnt"
    if wait_for 15 "the queue removed both" backend_count_is 0; then
      it_pass "[$policy] 3: the queue removes the child, then the layer (backend empty)"
    else
      it_fail "[$policy] 3: the queue removes the child, then the layer" "$(report_counts)"
    fi
    wait_for 5 "log line" sl_log_has "$sl0" "removal queue: removed $(re_quote "$LAYER")"
    assert_match "[$policy] 3: log: the queue removed the child" \
      "removal queue: removed $key \(snapledger\.removed/$child_id\)" "$(sl_log_since "$sl0")"
    assert_match "[$policy] 3: log: last child of the layer is gone (cascade)" \
      "removal queue: last child of snapledger\.removed/$layer_id \($(re_quote "$LAYER")\) is gone; removing it now" \
      "$(sl_log_since "$sl0")"
    assert_match "[$policy] 3: log: the queue removed the layer" \
      "removal queue: removed $(re_quote "$LAYER") \(snapledger\.removed/$layer_id\)" "$(sl_log_since "$sl0")"
    assert_eq "[$policy] 3: snapledgerd lists nothing" "" "$(ledger_keys 2>&1)"
    wait_for 15 "background deletions" backend_empty
    wait_for 15 "background deletions" backend_empty
  assert_eq "[$policy] 3: no backend entry at all (no temporaries)" "" "$(ls -A "$BACKEND_DIR" 2>&1)"
    # The excerpt for the record.
    echo "---- containerd log, the GC pass (defer):"
    echo "$pass" | grep -E "snapshotter=$SN|garbage collect|delete image" | sed 's/^/  | /'
    echo "---- snapledgerd log, removal lines (defer):"
    sl_log_since "$sl0" | grep -E "remove |removal queue|Remove \"" | sed 's/^/  | /'
    return
  fi

  # refuse
  assert_match "[$policy] 3: GC logs 'failed to remove snapshot' for the mounted child (busy)" \
    "level=warning msg=\"failed to remove snapshot\" error=\".*in use: mounted at $(re_quote "$mnt") \(busy\).*failed precondition\" key=\"?$(re_quote "$key")\"? snapshotter=$SN" \
    "$pass"
  assert_match "[$policy] 3: ... and for the layer (has children), and goes on" \
    "level=warning msg=\"failed to remove snapshot\" error=\".*has children.*failed precondition\" key=\"?$(re_quote "$LAYER")\"? snapshotter=$SN" \
    "$pass"
  it_run ledger_keys
  assert_eq "[$policy] 3: snapledgerd still lists the layer and the child" \
    "$(printf '%s\n' "$LAYER" "$key" | sort)" "$IT_OUT"
  assert_cmd_ok "[$policy] 3: umount the child" umount -n "$mnt"
  # Another GC pass for snapledger: a throwaway snapshot through containerd.
  c1=$(log_lines "$IT_CTRD_LOG")
  assert_cmd_ok "[$policy] 3: a throwaway snapshot through containerd" ctrs prepare s3-throwaway
  assert_cmd_ok "[$policy] 3: ... removed again (marks $SN for GC)" ctrs rm s3-throwaway
  assert_cmd_ok "[$policy] 3: a synchronous GC pass" gc_sync
  if wait_for 30 "GC removed everything" backend_count_is 0; then
    it_pass "[$policy] 3: the next GC pass removes the child and the layer (backend empty)"
  else
    it_fail "[$policy] 3: the next GC pass removes the child and the layer" "$(report_counts)"
  fi
  wait_for 10 "the GC pass is over" gc_pass_since "$c1"
  assert_eq "[$policy] 3: snapledgerd lists nothing" "" "$(ledger_keys 2>&1)"
  assert_eq "[$policy] 3: containerd lists nothing" "" "$(ctrd_keys 2>&1)"
  wait_for 15 "background deletions" backend_empty
  assert_eq "[$policy] 3: no backend entry at all (no temporaries)" "" "$(ls -A "$BACKEND_DIR" 2>&1)"
  assert_no_match "[$policy] 3: the second pass failed nothing" \
    "failed to remove snapshot|garbage collection failed|level=error" "$(ctrd_log_since "$c1")"
  echo "---- containerd log, the first GC pass (refuse):"
  echo "$pass" | grep -E "snapshotter=$SN|garbage collect|delete image" | sed 's/^/  | /'
}

# ------------------------------------- scenario 4: across a restart ---
scenario_restart() {
  local policy=$1 key=s4-busy mnt=$IT_TMP/s4-mnt id
  echo "== [$policy] 4. a pending removal survives a restart of snapledgerd"
  assert_cmd_ok "[$policy] 4: prepare $key (no parent), on snapledgerd's socket" sls prepare "$key"
  if ! it_run sl_hold_mount "$key" "$mnt" || [[ $IT_RC -ne 0 ]]; then
    it_fail "[$policy] 4: bind-mount $key's storage" "$IT_OUT"
    return
  fi
  echo s4-data >"$mnt/s4-file"
  assert_cmd_ok "[$policy] 4: rm of the mounted snapshot answers OK (queued)" sls rm "$key"
  id=$(backend_entries | head -n1)
  if [[ $IT_BACKEND == remote ]]; then  # the downstream numbers its own dirs
    id=$(snapledgerd_last_log |
         sed -nE "s#.*remove $key: cannot remove now .*queued as snapledger\.removed/([0-9]+)\$#\1#p" |
         tail -n1)
  fi
  if snapledgerd_stop; then it_pass "[$policy] 4: snapledgerd exits 0 on SIGTERM with a removal pending"
  else it_fail "[$policy] 4: snapledgerd exits 0 on SIGTERM with a removal pending" "got exit status $?"; fi
  if ! snapledgerd_start "$SNAPLEDGERD" --config "$IT_TMP/snapledgerd-$policy.toml"; then
    it_fail "[$policy] 4: snapledgerd restarts on its root"
    umount -n "$mnt"
    return
  fi
  it_pass "[$policy] 4: snapledgerd restarts on its root"
  assert_match "[$policy] 4: start log: removal queue: 1 pending" \
    "removal queue: 1 pending \(0 waiting for children\), 0 stuck; policy $policy" \
    "$(snapledgerd_last_log)"
  assert_eq "[$policy] 4: still hidden after the restart" "" "$(ledger_keys 2>&1)"
  assert_eq "[$policy] 4: its object is still stored (snapshots/$id)" 1 "$(backend_count)"
  if wait_for 10 "a failed retry after the restart" sl_last_log_has \
       "removal queue: $key \(snapledger\.removed/$id\): attempt [0-9]+ failed: .*busy"; then
    it_pass "[$policy] 4: the queue retries after the restart (still busy)"
  else
    it_fail "[$policy] 4: the queue retries after the restart (still busy)" \
      "$(it_indent "$(snapledgerd_last_log)")"
  fi
  assert_eq "[$policy] 4: the data is intact" s4-data "$(cat "$mnt/s4-file" 2>&1)"
  assert_cmd_ok "[$policy] 4: umount" umount -n "$mnt"
  if wait_for 10 "the queue removed it" backend_count_is 0; then
    it_pass "[$policy] 4: the queue removes it after the restart (backend empty)"
  else
    it_fail "[$policy] 4: the queue removes it after the restart" "$(report_counts)"
  fi
  wait_for 5 "log line" sl_last_log_has "removal queue: removed $key "
  assert_match "[$policy] 4: log: removal queue: removed $key (snapledger.removed/$id)" \
    "removal queue: removed $key \(snapledger\.removed/$id\) after [0-9]+ failed attempts" \
    "$(snapledgerd_last_log)"
}

# ------------------------- scenario 5: a running container's lower layer ---
# ctr 1.6 has no way to root a container in a view (`ctr run --read-only` takes
# an active snapshot), so the view is made and mounted as containerd's
# clients do it (ctr snapshots view + the mount it returns, an overlay of the
# three layers without upperdir) and the container runs on that mount
# (ctr run --rootfs). Its view is then removed through containerd (its own
# fs/ is in no mount), which leaves the top layer without a child in the
# ledger: only the busy check of its fs/ as an overlay lowerdir stands
# between a direct Remove and the running container.
scenario_lower_layer() {
  local policy=$1 name=c5-$1 rootfs=$IT_TMP/c5-rootfs top view out lowers=() sl0 id line
  echo "== [$policy] 5. busy: a running container's lower layer (an overlay lowerdir)"
  assert_cmd_ok "[$policy] 5: import the 3-layer image" \
    ctrd images import --snapshotter "$SN" "$IT_TMP/image3.tar"
  top=$(raw_key "${CHAIN3[2]}")
  [[ -n $top ]] || { it_fail "[$policy] 5: snapledgerd lists the top layer" "$(report_counts)"; return; }
  # A GC root, so that no GC pass (ctr run's lease going triggers one) takes
  # it before the test removes it; the pass the import's lease started is
  # over first.
  gc_sync
  assert_cmd_ok "[$policy] 5: a view c5-view on the top layer, through containerd" \
    ctrs view c5-view "${CHAIN3[2]}"
  assert_cmd_ok "[$policy] 5: ... labelled a GC root" \
    ctrs label c5-view containerd.io/gc.root=scenario-5
  view=$(raw_key c5-view)
  out=$(ctrs mounts "$rootfs" c5-view 2>&1)
  IFS=: read -r -a lowers <<<"$(sl_mount_option "${out##* -o }" lowerdir)"
  if [[ $out == "mount -t overlay overlay $rootfs -o "* && ${#lowers[@]} -eq 3 && $out != *upperdir=* ]]; then
    it_pass "[$policy] 5: its mount is an overlay of the 3 layers, no upperdir"
  else
    it_fail "[$policy] 5: its mount is an overlay of the 3 layers, no upperdir" "$out"
    scenario_lower_layer_cleanup "$policy" "$name" "$rootfs"
    return
  fi
  mkdir -p "$rootfs"
  if ! assert_cmd_ok "[$policy] 5: mount it (the container's rootfs)" \
         mount -n -t overlay -o "${out##* -o }" overlay "$rootfs" ||
     ! assert_cmd_ok "[$policy] 5: ctr run -d --rootfs $name on it (sleep 600)" \
         ctrd run -d --env PATH=/bin --rootfs "$rootfs" "$name" sleep 600; then
    scenario_lower_layer_cleanup "$policy" "$name" "$rootfs"
    return
  fi
  it_run ctrd tasks exec --exec-id r0 "$name" cat /etc/layer-3 /etc/layer-2
  assert_eq "[$policy] 5: the container reads layers 3 and 2" $'layer 3\nlayer 2' "$IT_OUT"
  line=$(awk -v p="$rootfs" '$5 == p' "/proc/$IT_SL_PID/mountinfo")
  assert_match "[$policy] 5: snapledgerd sees the overlay, the top layer's fs/ its first lowerdir" \
    " overlay .*lowerdir=$(re_quote "${lowers[0]}"):" "$line"

  # The view goes (through containerd's GC; its own fs/ is unused), and
  # with it the top layer's only child.
  assert_cmd_ok "[$policy] 5: rm c5-view through containerd" ctrs rm c5-view
  assert_cmd_ok "[$policy] 5: a synchronous GC pass" gc_sync
  if wait_for 20 "the view is removed" not_listed "$view" && backend_count_is 3; then
    it_pass "[$policy] 5: GC removed the view from snapledgerd (backend: the 3 layers)"
  else
    it_fail "[$policy] 5: GC removed the view from snapledgerd" "$(report_counts)"
  fi
  it_run sls info "$top"
  assert_eq "[$policy] 5: the top layer has no child left" "" "$(sls ls | awk -v t="$top" 'NR > 1 && $2 == t')"

  sl0=$(log_lines "$IT_SL_LOG")
  if [[ $policy == refuse ]]; then
    assert_cmd_fails "[$policy] 5: rm of the top layer under the container: failed precondition" \
      "failed precondition" sls rm "$top"
    assert_match "[$policy] 5: the refusal names the container's rootfs mount (busy)" \
      "in use: mounted at $(re_quote "$rootfs") \(busy\)" "$IT_OUT"
    if listed "$top"; then it_pass "[$policy] 5: the top layer is still listed"
    else it_fail "[$policy] 5: the top layer is still listed" "$(report_counts)"; fi
  else
    assert_cmd_ok "[$policy] 5: rm of the top layer under the container answers OK" sls rm "$top"
    id=$(sl_log_since "$sl0" |
         sed -nE "s#.*remove $(re_quote "$top"): cannot remove now \(.*mounted at $(re_quote "$rootfs") \(busy\)\); queued as snapledger\.removed/([0-9]+)\$#\1#p" |
         head -n1)
    if [[ -n $id ]]; then it_pass "[$policy] 5: log: queued as snapledger.removed/$id, busy at the container's rootfs"
    else it_fail "[$policy] 5: log: cannot remove now (busy at the container's rootfs); queued" \
           "$(it_indent "$(sl_log_since "$sl0")")"; id=none; fi
  fi
  assert_eq "[$policy] 5: the top layer's fs/ is intact" "layer 3" "$(cat "${lowers[0]}/etc/layer-3" 2>&1)"
  it_run ctrd tasks exec --exec-id r1 "$name" cat /etc/layer-3 /etc/snapledger-image
  assert_eq "[$policy] 5: the container still reads the top layer" \
    $'layer 3\nsnapledger-test-image, layer 3' "$IT_OUT"

  assert_cmd_ok "[$policy] 5: kill the task" ctrd tasks kill -s KILL "$name"
  wait_for 20 "task stopped" task_status_is "$name" STOPPED
  assert_cmd_ok "[$policy] 5: delete the task" ctrd tasks rm "$name"
  assert_cmd_ok "[$policy] 5: delete the container" ctrd containers rm "$name"
  assert_cmd_ok "[$policy] 5: umount its rootfs" umount -n "$rootfs"
  if [[ $policy == refuse ]]; then
    assert_cmd_ok "[$policy] 5: once the container is gone, rm of the top layer succeeds" sls rm "$top"
  elif wait_for 10 "the queue removed the top layer" sl_log_has "$sl0" \
         "removal queue: removed $(re_quote "$top") \(snapledger\.removed/$id\)"; then
    it_pass "[$policy] 5: once the container is gone, the queue removes the top layer"
  else
    it_fail "[$policy] 5: once the container is gone, the queue removes the top layer" \
      "$(it_indent "$(sl_log_since "$sl0")")"
  fi
  if [[ ! -e ${lowers[0]} ]]; then it_pass "[$policy] 5: the top layer's fs/ is gone then"
  else it_fail "[$policy] 5: the top layer's fs/ is gone then" "$(report_counts)"; fi
  scenario_lower_layer_cleanup "$policy" "$name" "$rootfs"
}
# scenario_lower_layer_cleanup POLICY NAME ROOTFS : whatever is left of the
# container, its rootfs mount and the image; GC removes the rest.
scenario_lower_layer_cleanup() {
  local policy=$1 name=$2 rootfs=$3
  if ctrd tasks ls -q 2>/dev/null | grep -Fxq "$name"; then
    ctrd tasks kill -s KILL "$name" >/dev/null 2>&1
    wait_for 20 "task stopped" task_status_is "$name" STOPPED
    ctrd tasks rm -f "$name" >/dev/null 2>&1
  fi
  ctrd containers rm "$name" >/dev/null 2>&1
  mountpoint -q "$rootfs" && umount -n "$rootfs"
  ctrs rm c5-view >/dev/null 2>&1
  assert_cmd_ok "[$policy] 5: remove the 3-layer image (images rm --sync)" ctrd images rm --sync "$IMG3"
  assert_cmd_ok "[$policy] 5: a synchronous GC pass" gc_sync
  if wait_for 30 "backend empty" backend_count_is 0; then
    it_pass "[$policy] 5: GC removes the rest (backend empty)"
  else
    it_fail "[$policy] 5: GC removes the rest (backend empty)" "$(report_counts)"
  fi
}

# ------------------------------------------------------------- phases ---
for policy in $POLICIES; do
  echo "======== remove_policy = $policy"
  start_phase "$policy"
  scenario_bind_mount "$policy"
  scenario_container "$policy"
  scenario_cascade "$policy"
  if [[ $IT_MOUNT_STYLE == overlayfs ]]; then scenario_lower_layer "$policy"
  else it_skip "[$policy] 5: a running container's lower layer" "overlayfs only"; fi
  if [[ $policy == defer ]]; then scenario_restart "$policy"; fi
  assert_eq "[$policy] end: snapledgerd lists nothing" "" "$(ledger_keys 2>&1)"
  wait_for 15 "background deletions" backend_empty
  assert_eq "[$policy] end: backend directory is empty" "" "$(ls -A "$BACKEND_DIR" 2>&1)"
  end_phase "$policy"
done
exit 0   # the EXIT trap prints the summary and sets the status
