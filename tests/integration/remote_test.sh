#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through it_run/wait_for
# remote_test.sh SNAPLEDGERD SNAPLEDGER_CLI GO_TOOLS_DIR
#
# The remote backend against a real, private containerd 1.6 (see README.md):
#   containerd → snapledgerd (--backend remote) → snapshotter-serve
# (containerd's overlayfs snapshotter over gRPC, with -remote-snapshots: it
# answers Prepares labelled containerd.io/snapshot.ref as stargz does).
#   1. the remote-snapshot protocol, driven through containerd as its pull
#      unpacker drives it (remote-snapshot-check), and recorded in the ledger;
#   2. an image unpacked the ordinary way and a container run on it;
#   3. the downstream killed (-9): calls fail promptly, never hang; back up:
#      snapledgerd reconnects by itself and nothing recorded is lost;
#   4. both daemons killed (-9) and restarted: nothing acknowledged lost.
# `snapledger check` must be clean (exit 0) after each.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
export IT_BACKEND=remote
export IT_SNAPSHOTTER_SERVE=${3:+$3/snapshotter-serve}
export IT_REMOTE_ARGS=-remote-snapshots
GO_TOOLS=${3:-}
# shellcheck source=lib.sh
source "$HERE/lib.sh"
it_take_binaries "$@"
[[ -x $GO_TOOLS/remote-snapshot-check ]] ||
  { echo "usage: $0 SNAPLEDGERD SNAPLEDGER_CLI GO_TOOLS_DIR (tests/go/build.sh)" >&2; exit 2; }
GO_TOOLS=$(readlink -f "$GO_TOOLS")
export GO_TOOLS

it_enter_private_namespace "$@"
it_setup

IMG=docker.io/snapledger/busybox:test
SN=snapledger
ctrs() { ctrd snapshots --snapshotter "$SN" "$@"; }
ledger_keys() { sld snapshots --snapshotter snapledger ls | awk 'NR > 1 {print $1}' | sort; }
# Downstream objects that are snapledger's (its names, as the downstream
# lists them over its own socket).
ds_names() {
  timeout -k 5 "$IT_TIMEOUT" ctr -a "$IT_DS_SOCK" snapshots --snapshotter x ls |
    awk 'NR > 1 {print $1}' | sort
}
check_clean() { # NAME
  it_run "$SNAPLEDGER" --address "${IT_SL_SOCK%.sock}-admin.sock" check
  if [[ $IT_RC -eq 0 ]]; then it_pass "$1: snapledger check is clean"
  else it_fail "$1: snapledger check is clean" "exit $IT_RC: $IT_OUT"; fi
}

it_log "building the test image"
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null || it_die "make_image.sh failed"
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
containerd_start "$SN" "$IT_SL_SOCK" || it_die "containerd did not start"

# ------------------------------------------- the remote-snapshot protocol ---
echo "== remote snapshots (stargz's protocol) through containerd"
it_run timeout -k 5 120 "$GO_TOOLS/remote-snapshot-check" -address "$IT_CTRD_SOCK" \
  -namespace "$IT_NS" -snapshotter "$SN"
if [[ $IT_RC -eq 0 ]]; then it_pass "containerd skips the unpack of lazily available layers"
else it_fail "containerd skips the unpack of lazily available layers" "$IT_OUT"; fi
it_run ledger_keys
assert_contains "the ledger records layer 1 under its ref name" "sha256:remote-check-layer-1" "$IT_OUT"
assert_contains "the ledger records layer 2 under its ref name" "sha256:remote-check-layer-2" "$IT_OUT"
assert_not_contains "no extract key is left in the ledger" "extract-" "$IT_OUT"
it_run ds_names
assert_not_contains "the downstream never sees a client's name" "sha256:" "$IT_OUT"
assert_match "the downstream holds snapledger's committed objects" "^snapledger/c/[0-9]+$" "$IT_OUT"
check_clean "after the lazy pull"

# ------------------------------------------------- an ordinary container ---
echo "== an image unpacked through the chain, a container on it"
assert_cmd_ok "import the image with --snapshotter $SN" \
  ctrd images import --snapshotter "$SN" "$IT_TMP/image.tar"
it_run ctrd run --rm --snapshotter "$SN" "$IMG" t-echo echo hi
assert_eq "ctr run --rm ... echo hi prints hi" "hi" "$IT_OUT"
check_clean "after the container"

# --------------------------------------------- the downstream goes away ---
echo "== downstream killed and restarted"
before=$(ledger_keys)
downstream_stop KILL
start=$SECONDS
it_run ctrs prepare t-while-down
took=$((SECONDS - start))
if [[ $IT_RC -ne 0 ]]; then it_pass "a Prepare while the downstream is down fails"
else it_fail "a Prepare while the downstream is down fails" "$IT_OUT"; fi
assert_match "... answering Unavailable" "[Uu]navailable" "$IT_OUT"
# Not a timing assertion: a hung call would end only at ctr's own time limit.
if ((took < IT_TIMEOUT)); then it_pass "... without hanging (${took}s)"
else it_fail "... without hanging" "took ${took}s"; fi
downstream_start || it_die "the downstream did not restart"
if wait_for 30 "a Prepare through the restarted downstream" ctrs prepare t-after-restart; then it_pass "snapledgerd reconnects by itself"
else it_fail "snapledgerd reconnects by itself" "prepare still failing"; fi
it_run ledger_keys
assert_eq "every earlier record is still there" "$before" "$(grep -v t-after-restart <<<"$IT_OUT")"
check_clean "after the downstream's restart"

# ------------------------------------------------------ both killed -9 ---
echo "== snapledgerd and the downstream killed together"
before=$(ledger_keys)
kill -KILL "$IT_SL_PID" "$IT_DS_PID"
wait "$IT_SL_PID" 2>/dev/null; IT_SL_PID=
wait "$IT_DS_PID" 2>/dev/null; IT_DS_PID=
# Their sockets stay behind (stale); the harness waits for new ones.
rm -f "$IT_SL_SOCK" "$IT_DS_SOCK"
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not restart"
it_run ledger_keys
assert_eq "every acknowledged record survives" "$before" "$IT_OUT"
check_clean "after kill -9 of both"
# containerd's own connection to snapledgerd backs off before it redials.
wait_for 30 "containerd reaches the restarted snapledgerd" ctrs ls ||
  it_fail "containerd reaches the restarted snapledgerd" "ctr snapshots ls fails"
it_run ctrd run --rm --snapshotter "$SN" "$IMG" t-echo2 echo again
assert_eq "a container runs after the restart" "again" "$IT_OUT"
