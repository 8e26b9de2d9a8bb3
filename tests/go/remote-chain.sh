#!/usr/bin/env bash
# remote-chain.sh --root ROOT --address SOCK [ARGS...]
#
# snapledgerd with --backend remote in front of a fresh snapshotter-serve
# (containerd's own snapshotter over gRPC), as one daemon: what
# snapshotter-suite starts per test case for the chain
#   suite → snapledgerd (remote) → snapshotter-serve.
# The downstream lives beside ROOT ("<dirname ROOT>/downstream"). SIGTERM
# stops snapledgerd, then the downstream; the exit status is snapledgerd's.
# Environment: SNAPLEDGERD, SNAPSHOTTER_SERVE (binaries), REMOTE_TYPE
# (native or overlayfs, default overlayfs), DOWNSTREAM (optional: a second
# snapledgerd's binary to use as the downstream instead, "snapledgerd behind
# snapledgerd").
set -u
args=("$@")
root=
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) root=$2; shift 2 ;;
    *) shift ;;
  esac
done
[[ -n $root ]] || { echo "remote-chain.sh: --root is required" >&2; exit 2; }
ds=$(dirname "$root")/downstream
if [[ -n ${DOWNSTREAM:-} ]]; then
  "$DOWNSTREAM" --root "$ds" --address "$ds.sock" --backend "${REMOTE_TYPE:-overlayfs}" &
else
  "$SNAPSHOTTER_SERVE" -type "${REMOTE_TYPE:-overlayfs}" -root "$ds" -address "$ds.sock" -quiet &
fi
dspid=$!
for _ in $(seq 300); do
  [[ -S $ds.sock ]] && break
  kill -0 "$dspid" 2>/dev/null || { echo "remote-chain.sh: downstream exited" >&2; exit 1; }
  sleep 0.1
done
"$SNAPLEDGERD" "${args[@]}" --backend remote --remote-address "unix://$ds.sock" &
slpid=$!
trap 'kill -TERM "$slpid" 2>/dev/null' TERM INT
rc=0
while kill -0 "$slpid" 2>/dev/null; do
  wait "$slpid"
  rc=$?
done
kill -TERM "$dspid" 2>/dev/null
wait "$dspid"
exit "$rc"
