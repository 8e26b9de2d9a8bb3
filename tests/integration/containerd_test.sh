#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through it_run/wait_for
# containerd_test.sh SNAPLEDGERD_BINARY
# SNAPSHOTTER=native containerd_test.sh          (control run, no snapledgerd)
#
# End-to-end scenario against a real, private containerd 1.6 (see README.md):
# images, containers, every `ctr snapshots` verb, error codes, containerd's
# garbage collector, and agreement between the backend's directory, what
# snapledgerd lists over its own socket, and what containerd lists.
# Prints PASS/FAIL/SKIP per check and ends with "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

SNAPSHOTTER=${SNAPSHOTTER:-snapledger}
case $SNAPSHOTTER in
  snapledger)
    SNAPLEDGERD=${1:-${SNAPLEDGERD:-}}
    if [[ -z $SNAPLEDGERD ]]; then
      echo "usage: $0 SNAPLEDGERD_BINARY   (or SNAPSHOTTER=native $0)" >&2
      exit 2
    fi
    SNAPLEDGERD=$(readlink -f "$SNAPLEDGERD")
    [[ -x $SNAPLEDGERD ]] || { echo "not an executable: $SNAPLEDGERD" >&2; exit 2; }
    export SNAPLEDGERD
    ;;
  native) ;;
  *) echo "SNAPSHOTTER must be snapledger or native" >&2; exit 2 ;;
esac
export SNAPSHOTTER

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=$SNAPSHOTTER
# Backend objects are directories named by decimal ids (containerd's native
# snapshotter and snapledger's native backend alike); anything else there is
# a temporary (new-*, rm-*) and not counted as a snapshot.
BACKEND_OBJECT=${IT_BACKEND_OBJECT:-'^[0-9]+$'}

ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }

# "key parent kind" per snapshot containerd lists (parent "-" when none).
snap_rows() {
  ctrs ls | awk 'NR > 1 { if (NF == 3) print $1, $2, $3; else if (NF == 2) print $1, "-", $2 }' |
    sort
}
snap_keys() { ctrs ls | awk 'NR > 1 {print $1}' | sort; }
containerd_count() { snap_keys | grep -c .; }
# shellcheck disable=SC2010  # names are decimal ids or known temporaries
backend_entries() { ls -A "$BACKEND_DIR" 2>/dev/null | grep -E "$BACKEND_OBJECT" | sort; }
backend_count() { backend_entries | grep -c .; }
# What snapledgerd itself lists over its own socket (raw, namespaced keys).
ledger_keys() { sld snapshots --snapshotter snapledger ls | awk 'NR > 1 {print $1}' | sort; }
ledger_count() { ledger_keys | grep -c .; }

# mount_snapshot KEY DIR : mount what `ctr snapshots mounts` returns.
mount_snapshot() {
  local key=$1 dir=$2 out n _m _t type src target _o opts
  mkdir -p "$dir"
  out=$(ctrs mounts "$dir" "$key") || { echo "ctr snapshots mounts failed: $out"; return 1; }
  n=$(grep -c . <<<"$out")
  [[ $n -eq 1 ]] || { echo "expected one mount, got $n: $out"; return 1; }
  read -r _m _t type src target _o opts <<<"$out"
  mount -n -t "$type" -o "$opts" "$src" "$target" 2>&1
}

# counts_agree : backend == containerd (== snapledgerd's own list).
counts_agree() {
  local b c l
  b=$(backend_count); c=$(containerd_count)
  if [[ $SN == snapledger ]]; then l=$(ledger_count); else l=$c; fi
  [[ $b == "$c" && $c == "$l" ]]
}
report_counts() {
  local l=n/a
  [[ $SN == snapledger ]] && l=$(ledger_count)
  echo "backend=$(backend_count) containerd=$(containerd_count) snapledgerd=$l"
}

# ---------------------------------------------------------------- start ---
it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null ||
  it_die "make_image.sh failed"
manifest=$(tar -xOf "$IT_TMP/image.tar" index.json | jq -r '.manifests[0].digest')
config=$(tar -xOf "$IT_TMP/image.tar" "blobs/sha256/${manifest#sha256:}" | jq -r .config.digest)
CHAIN=$(tar -xOf "$IT_TMP/image.tar" "blobs/sha256/${config#sha256:}" | jq -r '.rootfs.diff_ids[0]')
# single layer: chain id == diff id
[[ $CHAIN == sha256:* ]] || it_die "could not read the layer's diff_id from the image"

if [[ $SN == snapledger ]]; then
  snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
  it_pass "snapledgerd starts and creates its socket"
  containerd_start snapledger "$IT_SL_SOCK" || it_die "containerd did not start"
  BACKEND_DIR=$(it_backend_dir)
else
  containerd_start || it_die "containerd did not start"
  BACKEND_DIR=$IT_CTRD_ROOT/io.containerd.snapshotter.v1.native/snapshots
fi
it_run ctrd plugins ls
assert_match "containerd loads snapshotter plugin '$SN'" \
  "^io\.containerd\.snapshotter\.v1[[:space:]]+${SN}[[:space:]].*[[:space:]]ok[[:space:]]*$" "$IT_OUT"

# --------------------------------------------------------- images, run ---
echo "== images and containers"
assert_cmd_ok "import image with --snapshotter $SN" \
  ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
it_run ctrd images ls -q
assert_contains "image is listed" "$IMG" "$IT_OUT"
it_run snap_rows
assert_eq "unpacked layer is one committed snapshot named by its chain id" \
  "$CHAIN - Committed" "$IT_OUT"
it_run ctrd images check --snapshotter "$SN"
assert_match "images check: complete and unpacked in '$SN'" "^$IMG .*complete.*true[[:space:]]*\$" "$IT_OUT"

it_run ctrd run --rm --snapshotter "$SN" "$IMG" t-echo echo hi
assert_eq "ctr run --rm ... echo hi prints hi" "hi" "$IT_OUT"

it_run ctrd run --rm --snapshotter "$SN" "$IMG" t-write sh -c \
  'echo written-by-container > /tmp/out && cat /tmp/out /etc/snapledger-image && ls /bin/busybox'
assert_eq "container writes a file and reads it and the image back" \
  $'written-by-container\nsnapledger-test-image\n/bin/busybox' "$IT_OUT"

it_run snap_keys
assert_eq "--rm containers leave no snapshot behind" "$CHAIN" "$IT_OUT"

# ------------------------------------------------------ a 3-layer image ---
# Three committed snapshots in a chain; a container on it sees the layers
# stacked in order (a file replaced by layer 3, one added by layer 2 and
# deleted by layer 3's whiteout). On overlayfs its rootfs is an overlay with
# the three layers as lowerdirs.
echo "== a 3-layer image"
IMG3=docker.io/snapledger/busybox:3layers
if "$HERE/make_image.sh" "$IT_TMP/image3.tar" "$IMG3" 3 2>/dev/null; then
  mapfile -t C3 < <(it_image_chain_ids "$IT_TMP/image3.tar")
  assert_eq "the 3-layer image has 3 layers, the first one the test image's" \
    "3 $CHAIN" "${#C3[@]} ${C3[0]:-}"
  assert_cmd_ok "import the 3-layer image" \
    ctrd images import --snapshotter "$SN" "$IT_TMP/image3.tar"
  it_run snap_rows
  assert_eq "its layers are 3 committed snapshots in a chain" \
    "$(printf '%s\n' "${C3[0]} - Committed" "${C3[1]} ${C3[0]} Committed" \
        "${C3[2]} ${C3[1]} Committed" | sort)" "$IT_OUT"
  assert_cmd_ok "run a container on the 3-layer image (ctr run -d t-three)" \
    ctrd run -d --snapshotter "$SN" "$IMG3" t-three sleep 600
  it_run ctrd tasks exec --exec-id e1 t-three sh -c \
    'cat /etc/snapledger-image /etc/layer-2 /etc/layer-3 /etc/snapledger-image.d/from-2;
     if test -e /etc/doomed; then echo doomed-present; else echo doomed-gone; fi;
     echo w3 >/root/w3 && cat /root/w3 && ls /bin/busybox'
  assert_eq "the container sees the 3 layers stacked in order (replaced, added, whited out) and writes" \
    $'snapledger-test-image, layer 3\nlayer 2\nlayer 3\nfrom layer 2\ndoomed-gone\nw3\n/bin/busybox' "$IT_OUT"
  if [[ $SN == snapledger && $IT_MOUNT_STYLE == overlayfs ]]; then
    it_run ctrs mounts "$IT_TMP/mnt3" t-three
    m3out=$IT_OUT
    assert_match "overlayfs: the container's rootfs is an overlay mount" \
      "^mount -t overlay overlay $IT_TMP/mnt3 -o " "$m3out"
    lower=$(sl_mount_option "${m3out##* -o }" lowerdir)
    upper=$(sl_mount_option "${m3out##* -o }" upperdir)
    IFS=: read -r -a lowers <<<"$lower"
    assert_eq "overlayfs: its lowerdirs are 3 backend layers (nearest first), its upperdir a 4th" \
      "3 ok" "${#lowers[@]} $(
        ok=ok
        for d in "${lowers[@]}" "$upper"; do [[ $d =~ ^$BACKEND_DIR/[0-9]+/fs$ ]] || ok="bad: $d"; done
        [[ $(printf '%s\n' "${lowers[@]}" "$upper" | sort -u | grep -c .) == 4 ]] || ok="not distinct"
        echo "$ok")"
    assert_eq "overlayfs: the lowerdirs hold layer 3, 2, 1 in that order" \
      "yes yes yes" "$(
        [[ -f ${lowers[0]}/etc/layer-3 && ! -e ${lowers[0]}/bin ]] && echo -n yes || echo -n no
        [[ -f ${lowers[1]}/etc/layer-2 && ! -e ${lowers[1]}/etc/layer-3 ]] && echo -n ' yes' || echo -n ' no'
        [[ -f ${lowers[2]}/bin/busybox && ! -e ${lowers[2]}/etc/layer-2 ]] && echo ' yes' || echo ' no')"
    assert_eq "overlayfs: layer 3's whiteout is unpacked as an overlay whiteout (char device 0:0)" \
      "character special file 0:0" "$(stat -c '%F %t:%T' "${lowers[0]}/etc/doomed" 2>&1)"
    assert_eq "overlayfs: the container's write is in its upperdir only" \
      "w3 absent" "$(cat "$upper/root/w3" 2>&1) $(
        [[ -e ${lowers[0]}/root/w3 || -e ${lowers[1]}/root/w3 || -e ${lowers[2]}/root/w3 ]] &&
          echo present || echo absent)"
  fi
  assert_cmd_ok "kill t-three" ctrd tasks kill -s KILL t-three
  t3_stopped() { ctrd tasks ls | awk '$1 == "t-three" && $3 == "STOPPED" {f = 1} END {exit !f}'; }
  wait_for 20 "t-three stopped" t3_stopped
  assert_cmd_ok "delete t-three's task" ctrd tasks rm t-three
  assert_cmd_ok "delete t-three (and its snapshot)" ctrd containers rm t-three
  assert_cmd_ok "remove the 3-layer image (and wait for a GC pass)" ctrd images rm --sync "$IMG3"
  only_the_layer() { [[ $(snap_keys) == "$CHAIN" ]]; }
  if wait_for 30 "GC removed the 3-layer image's snapshots" only_the_layer; then
    it_pass "GC removes the container's snapshot and layers 2 and 3, keeps the shared layer 1"
  else
    it_fail "GC removes the container's snapshot and layers 2 and 3" "$(snap_keys)"
  fi
else
  it_fail "make_image.sh builds a 3-layer image"
fi

# A container that stays: its rootfs is an active snapshot keyed by its id.
it_run ctrd run --snapshotter "$SN" "$IMG" t-keep sh -c 'echo kept > /root/kept; echo done'
assert_eq "container without --rm runs" "done" "$IT_OUT"
it_run snap_rows
assert_contains "kept container's rootfs is active on the layer" "t-keep $CHAIN Active" "$IT_OUT"
MNT=$IT_TMP/mnt
if it_run mount_snapshot t-keep "$MNT"; [[ $IT_RC -eq 0 ]]; then
  assert_eq "file written in the container is in its snapshot" "kept" "$(cat "$MNT/root/kept" 2>&1)"
  umount -n "$MNT"
else
  it_fail "mount the kept container's snapshot" "$IT_OUT"
fi

# ------------------------------------------------------ ctr snapshots ---
echo "== ctr snapshots"
assert_cmd_ok "prepare sl-active on the image layer" ctrs prepare sl-active "$CHAIN"
it_run snap_rows
assert_contains "ls: sl-active is active, parent is the layer" "sl-active $CHAIN Active" "$IT_OUT"
if [[ $SN == snapledger ]]; then
  it_run ledger_keys
  assert_match "snapledgerd receives the key as <namespace>/<seq>/sl-active" \
    "^$IT_NS/[0-9]+/sl-active\$" "$IT_OUT"
fi

it_run ctrs mounts "$MNT" sl-active
assert_match "mounts prints a mount command for sl-active" "^mount -t [a-z]+ [^ ]+ $MNT -o " "$IT_OUT"
if it_run mount_snapshot sl-active "$MNT"; [[ $IT_RC -eq 0 ]]; then
  echo from-test >"$MNT/hello" && mkdir -p "$MNT/dir" && echo nested >"$MNT/dir/file"
  assert_eq "active snapshot is writable and shows the layer" \
    "snapledger-test-image" "$(cat "$MNT/etc/snapledger-image" 2>&1)"
  umount -n "$MNT"
else
  it_fail "mount sl-active" "$IT_OUT"
fi

assert_cmd_ok "commit sl-active as sl-committed" ctrs commit sl-committed sl-active
it_run snap_rows
assert_contains "ls: sl-committed is committed on the layer" "sl-committed $CHAIN Committed" "$IT_OUT"
assert_no_match "ls: sl-active is gone after commit" "^sl-active " "$IT_OUT"
assert_cmd_fails "info on the committed-away active key: not found" "not found" ctrs info sl-active

assert_cmd_ok "view sl-view on sl-committed" ctrs view sl-view sl-committed
it_run snap_rows
assert_contains "ls: sl-view is a view of sl-committed" "sl-view sl-committed View" "$IT_OUT"
if it_run mount_snapshot sl-view "$MNT"; [[ $IT_RC -eq 0 ]]; then
  assert_eq "view shows the committed data" "from-test nested" \
    "$(cat "$MNT/hello" "$MNT/dir/file" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
  if (echo x >"$MNT/should-fail") 2>/dev/null; then
    it_fail "view is read-only" "expected: write to the view to fail" "got: write succeeded"
    rm -f "$MNT/should-fail"
  else
    it_pass "view is read-only"
  fi
  umount -n "$MNT"
else
  it_fail "mount sl-view" "$IT_OUT"
fi

assert_cmd_ok "prepare sl-child on sl-committed" ctrs prepare sl-child sl-committed
assert_cmd_fails "prepare an existing key: already exists" "already exists" \
  ctrs prepare sl-child sl-committed
assert_cmd_fails "prepare on a missing parent: not found" "not found" \
  ctrs prepare sl-orphan no-such-parent
assert_cmd_fails "prepare on an active parent fails" "invalid|not committed|precondition|not found" \
  ctrs prepare sl-bad-parent sl-child
assert_cmd_fails "commit a missing key: not found" "not found" ctrs commit sl-x no-such-key
# (containerd's own native snapshotter answers this with an "unknown" lstat
# error, so only the failure itself and its harmlessness are checked.)
assert_cmd_fails "commit a view: fails" "." ctrs commit sl-x sl-view
assert_cmd_ok "the view survives the failed commit" ctrs info sl-view
assert_cmd_fails "the failed commit created nothing" "not found" ctrs info sl-x
assert_cmd_fails "info on a missing key: not found" "not found" ctrs info no-such-key

# labels: a containerd.io/snapshot/ label reaches the snapshotter, a plain
# one stays in containerd's metadata.
it_run ctrs label sl-committed containerd.io/snapshot/sl-test=one plain=two
assert_match "label prints the snapshotter label" "containerd.io/snapshot/sl-test=one" "$IT_OUT"
it_run ctrs info sl-committed
info=$IT_OUT
assert_eq "info shows the snapshotter label" "one" \
  "$(jq -r '.Labels["containerd.io/snapshot/sl-test"]' <<<"$info" 2>&1)"
assert_eq "info shows the plain label" "two" "$(jq -r '.Labels.plain' <<<"$info" 2>&1)"
assert_eq "info: name, parent, kind" "sl-committed $CHAIN Committed" \
  "$(jq -r '"\(.Name) \(.Parent) \(if .Kind == 3 or .Kind == "committed" then "Committed" else .Kind end)"' <<<"$info" 2>&1)"
it_run ctrs label sl-committed plain=
it_run ctrs info sl-committed
assert_eq "label KEY plain= removes the label" "null one" \
  "$(jq -r '"\(.Labels.plain) \(.Labels["containerd.io/snapshot/sl-test"])"' <<<"$IT_OUT" 2>&1)"
if [[ $SN == snapledger ]]; then
  bkey=$(ledger_keys | grep -E "^$IT_NS/[0-9]+/sl-committed\$" | head -n1)
  it_run sld snapshots --snapshotter snapledger info "$bkey"
  assert_eq "snapledgerd holds the snapshot label (direct info $bkey)" "one" \
    "$(jq -r '.Labels["containerd.io/snapshot/sl-test"]' <<<"$IT_OUT" 2>&1)"
  assert_eq "snapledgerd does not hold containerd-only labels" "null" \
    "$(jq -r '.Labels.plain' <<<"$IT_OUT" 2>&1)"
fi

it_run ctrs usage -b sl-committed
assert_match "usage -b sl-committed: size >= 17 bytes, >= 3 inodes" \
  "^sl-committed[[:space:]]+([1-9][0-9]{2,}|1[7-9]|[2-9][0-9])[[:space:]]+([3-9]|[1-9][0-9]+)[[:space:]]*$" "$IT_OUT"
it_run ctrs usage -b
assert_match "usage (all) lists the layer" "^${CHAIN}[[:space:]]+[1-9][0-9]*[[:space:]]" "$IT_OUT"

it_run ctrs tree
tree=$IT_OUT
assert_match "tree: layer is a root" "^ $CHAIN\$" "$tree"
assert_match "tree: sl-committed under the layer" '^  \\_ sl-committed$' "$tree"
assert_match "tree: sl-view under sl-committed" '^    \\_ sl-view$' "$tree"
assert_match "tree: sl-child under sl-committed" '^    \\_ sl-child$' "$tree"
assert_match "tree: t-keep under the layer" '^  \\_ t-keep$' "$tree"

assert_cmd_fails "rm a parent with children: failed precondition" "precondition" \
  ctrs rm sl-committed
assert_cmd_fails "rm a missing key: not found" "not found" ctrs rm no-such-key
assert_cmd_fails "rm the image layer (has children): failed precondition" "precondition" \
  ctrs rm "$CHAIN"

# Removal through containerd is asynchronous for the backend: containerd
# drops its record, GC removes the backend snapshot.
assert_cmd_ok "rm sl-view" ctrs rm sl-view
it_run snap_keys
assert_not_contains "sl-view is gone from containerd's list" "sl-view" "$IT_OUT"
if wait_for 30 "backend and containerd agree" counts_agree; then
  it_pass "after rm sl-view, GC brings backend and containerd into agreement ($(report_counts))"
else
  it_fail "after rm sl-view, backend and containerd agree" "$(report_counts)" \
    "backend: $(backend_entries | tr '\n' ' ')" "containerd: $(snap_keys | tr '\n' ' ')"
fi

# -------------------------------------------------- snapledgerd restart ---
if [[ $SN == snapledger ]]; then
  echo "== snapledgerd restart keeps the ledger"
  before=$(ledger_keys)
  if snapledgerd_stop; then it_pass "snapledgerd exits 0 on SIGTERM"
  else it_fail "snapledgerd exits 0 on SIGTERM" "got exit status $?"; fi
  if snapledgerd_start "$SNAPLEDGERD"; then
    it_pass "snapledgerd restarts on the same root"
    assert_match "clean restart: recovery resolved 0 intents, 0 missing, 0 adopted" \
      "recovery: 0 intents resolved.* 0 missing, 0 adopted" "$(snapledgerd_last_log)"
    it_run ledger_keys
    assert_eq "snapledgerd lists the same snapshots after restart" "$before" "$IT_OUT"
    # containerd reconnects on its own; give it a few seconds.
    if wait_for 20 "containerd sees snapledger again" ctrs info sl-committed; then
      it_pass "containerd reaches snapledgerd again after its restart"
    else
      it_fail "containerd reaches snapledgerd again after its restart" "$(ctrs info sl-committed 2>&1)"
    fi
    it_run ctrd run --rm --snapshotter "$SN" "$IMG" t-after-restart echo again
    assert_eq "containers run after the restart" "again" "$IT_OUT"
  else
    it_fail "snapledgerd restarts on the same root"
  fi
else
  it_skip "snapledgerd restart" "control mode"
fi

# ---------------------------------------------------------- GC, the end ---
echo "== garbage collection"
assert_cmd_ok "rm sl-child" ctrs rm sl-child
assert_cmd_ok "rm sl-committed once its children are gone" ctrs rm sl-committed
assert_cmd_ok "delete the kept container (and its snapshot)" ctrd containers rm t-keep
# --sync: the scheduler ignores deletions made while a pass runs (the one
# the container removal just started), so wait for a pass of our own.
assert_cmd_ok "remove the image (and wait for a GC pass)" ctrd images rm --sync "$IMG"
it_run ctrd containers ls -q
assert_eq "no containers left" "" "$IT_OUT"
it_run ctrd leases ls -q
assert_eq "no leases left" "" "$IT_OUT"

gc_done() {
  [[ $(containerd_count) == 0 && $(backend_count) == 0 ]] || return 1
  [[ $SN != snapledger ]] || [[ $(ledger_count) == 0 ]]
}
if wait_for 60 "GC removed all snapshots" gc_done; then
  it_pass "containerd's GC removed every snapshot ($(report_counts))"
else
  it_fail "containerd's GC removed every snapshot within 60s" "$(report_counts)" \
    "backend: $(backend_entries | tr '\n' ' ')" "containerd: $(snap_keys | tr '\n' ' ')"
fi
assert_eq "containerd lists no snapshot" "" "$(snap_keys)"
assert_eq "backend holds no snapshot ($BACKEND_DIR)" "" "$(backend_entries)"
assert_eq "no backend temporaries left after GC's Cleanup" "" \
  "$(ls -A "$BACKEND_DIR" 2>&1)"
if [[ $SN == snapledger ]]; then
  assert_eq "snapledgerd lists no snapshot" "" "$(ledger_keys 2>&1)"
else
  it_skip "snapledgerd's own list" "control mode"
fi
assert_log_match "containerd's GC ran for '$SN'" \
  "msg=\"snapshot garbage collected\".*snapshotter=$SN" "$IT_CTRD_LOG"
assert_log_match "containerd's GC removed snapshots through '$SN'" \
  "msg=\"removed snapshot\".*snapshotter=$SN" "$IT_CTRD_LOG"
assert_log_no_match "no failed GC pass for '$SN'" \
  "snapshot garbage collection failed.*snapshotter=$SN|failed to remove snapshot.*snapshotter=$SN" \
  "$IT_CTRD_LOG"

# No intent left: the daemon offers no admin query yet, so restart it on its
# root alone — start-up recovery resolves (and reports) every intent left in
# the ledger and every backend object without a record.
if [[ $SN == snapledger ]]; then
  containerd_stop
  if snapledgerd_stop; then it_pass "snapledgerd exits 0 on SIGTERM at the end"
  else it_fail "snapledgerd exits 0 on SIGTERM at the end" "got exit status $?"; fi
  if snapledgerd_start "$SNAPLEDGERD"; then
    assert_match "no intent left: recovery resolved 0 intents, 0 missing, 0 adopted" \
      "recovery: 0 intents resolved.* 0 missing, 0 adopted" "$(snapledgerd_last_log)"
    assert_eq "ledger is empty after the restart" "" "$(ledger_keys 2>&1)"
    snapledgerd_stop || it_fail "snapledgerd exits 0 on the last SIGTERM" "got exit status $?"
  else
    it_fail "snapledgerd restarts on its root after the scenario"
  fi
else
  it_skip "no intent left in the ledger" "control mode"
fi
exit 0   # the EXIT trap prints the summary and sets the status
