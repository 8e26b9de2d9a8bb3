#!/usr/bin/env bash
# demo-scenario.sh SNAPLEDGERD : the demo itself (install/demo.sh builds and
# calls it). Uses the integration suite's harness: a private mount and pid
# namespace, a private containerd, everything under one temp dir.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=../tests/integration/lib.sh
source "$HERE/../tests/integration/lib.sh"

SNAPLEDGERD=$(readlink -f "${1:?usage: demo-scenario.sh SNAPLEDGERD}")
export SNAPLEDGERD IT_NS=${IT_NS:-demo} IT_SUMMARY=0
it_enter_private_namespace "$@"
it_setup

show() { printf '\n$ %s\n' "$*"; "$@"; }
IMG=docker.io/snapledger/busybox:demo

echo "== starting snapledgerd and a private containerd that knows it as 'snapledger'"
snapledgerd_start "$SNAPLEDGERD" || it_die "snapledgerd did not start"
containerd_start snapledger "$IT_SL_SOCK" || it_die "containerd did not start"
echo "containerd's config registers the proxy:"
sed -n '/\[proxy_plugins/,$p' "$IT_TMP/containerd/config.toml"

"$HERE/../tests/integration/make_image.sh" "$IT_TMP/image.tar" "$IMG" \
  >/dev/null 2>&1 || it_die "cannot build the demo image"
ctrd images import --snapshotter snapledger "$IT_TMP/image.tar" >/dev/null ||
  it_die "image import failed"

echo
echo "== a container through snapledger"
show ctrd run --rm --snapshotter snapledger "$IMG" hello echo "hello from a snapledger snapshot"
echo
echo "== a container that stays (its rootfs is an active snapshot)"
ctrd run -d --snapshotter snapledger "$IMG" keeper sleep 300 >/dev/null
show ctrd snapshots --snapshotter snapledger tree
show ctrd snapshots --snapshotter snapledger ls

echo
echo "== the ledger: what snapledgerd itself records (raw containerd keys: namespace/sequence/name)"
show sld snapshots --snapshotter snapledger ls
key=$(sld snapshots --snapshotter snapledger ls | awk '$1 ~ /\/keeper$/ {print $1}')
[[ -n $key ]] && show sld snapshots --snapshotter snapledger info "$key"
echo
echo "backend objects (named by ledger ids, never by keys):"
show ls "$IT_SL_ROOT/snapshots"

echo
echo "== stopping the container; containerd's GC removes its snapshot through snapledger"
ctrd task delete -f keeper >/dev/null 2>&1
ctrd containers rm keeper >/dev/null
wait_for 20 "GC" bash -c "! ctr -a '$IT_SL_SOCK' -n '$IT_NS' snapshots --snapshotter snapledger ls | grep -q '/keeper$'"
show sld snapshots --snapshotter snapledger ls
grep -E 'Remove|Cleanup' "$IT_SL_LOG" | tail -n 3
echo
echo "demo finished: snapledgerd log at $IT_SL_LOG (kept only with KEEP=1)"
