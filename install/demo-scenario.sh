#!/usr/bin/env bash
# demo-scenario.sh SNAPLEDGERD SNAPLEDGER_CLI : the demo itself
# (install/demo.sh builds and calls it). Uses the integration suite's harness:
# a private mount and pid namespace, a private containerd, everything under
# one temp dir. snapledgerd runs with remove_policy = "defer" and watches the
# private containerd (docs/owners.md), to show a removal that has to wait
# (a running container's rootfs, and the image's layer under it), the
# container reported dead once its task is killed, and the queue finishing
# both once the container is gone.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=../tests/integration/lib.sh
source "$HERE/../tests/integration/lib.sh"

USAGE="usage: demo-scenario.sh SNAPLEDGERD SNAPLEDGER_CLI"
SNAPLEDGERD=$(readlink -f "${1:?$USAGE}")
SNAPLEDGER_CLI=$(readlink -f "${2:?$USAGE}")
# The demo runs the production backend: overlayfs, as install/config.toml.
export SNAPLEDGERD SNAPLEDGER_CLI IT_NS=${IT_NS:-demo} IT_SUMMARY=0 \
  IT_BACKEND=${IT_BACKEND:-overlayfs}
it_enter_private_namespace "$@"
it_setup

show() { printf '\n$ %s\n' "$*"; "$@"; }
IMG=docker.io/snapledger/busybox:demo

echo "== starting snapledgerd and a private containerd that knows it as 'snapledger'"
cat >"$IT_TMP/snapledger.toml" <<EOF
backend = "$IT_BACKEND"
remove_policy = "defer"
containerd_address = "$IT_TMP/containerd/containerd.sock"
# Prometheus metrics on loopback (docs/metrics.md); port 0: a free one, which
# the daemon's log names.
metrics_address = "127.0.0.1:0"
[containers]
dead_after = "2s"
[remove_queue]
initial_backoff = "500ms"
EOF
snapledgerd_start "$SNAPLEDGERD" --config "$IT_TMP/snapledger.toml" ||
  it_die "snapledgerd did not start"
# The admin CLI, on the admin socket beside the main one.
ADMIN_SOCK=${IT_SL_SOCK%.sock}-admin.sock
snapledger() { "$SNAPLEDGER_CLI" --address "$ADMIN_SOCK" "$@"; }
ledger_empty() { [[ $(snapledger --json ls --all | jq length) == 0 ]]; }
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
echo "== the admin CLI's view of the same ledger"
show snapledger tree
show snapledger ls
wait_for 10 "the watcher to name keeper's owner" bash -c \
  "'$SNAPLEDGER_CLI' --address '$ADMIN_SOCK' --json inspect '$key' | jq -e '.owner == \"keeper\"' >/dev/null" ||
  it_log "the owner of $key is not known yet"
echo "who holds it (snapledgerd follows containerd's containers and leases):"
show snapledger inspect "$key"

echo
echo "== a removal that cannot happen now: the snapshot is still in use"
echo "   (a build's cleanup removes the rootfs of a container that still runs)"
show ctrd snapshots --snapshotter snapledger rm keeper
ctrd images rm --sync "$IMG" >/dev/null
wait_for 30 "both removals queued" bash -c \
  "[[ \$('$SNAPLEDGER_CLI' --address '$ADMIN_SOCK' --json pending | jq length) == 2 ]]" ||
  it_log "the removals were not queued"
echo "containerd has forgotten both; snapledger kept the storage (remove_policy = defer):"
show ctrd snapshots --snapshotter snapledger ls
show ls "$IT_SL_ROOT/snapshots"
show snapledger pending
show snapledger tree --all

echo
echo "== the build is cancelled: its task is killed, the container stays behind"
echo "   (no live task for dead_after = 2s: a dead container, pinning its chain)"
ctrd task kill -s KILL keeper >/dev/null 2>&1
dead_keeper() { [[ $(snapledger --json dead | jq '.dead | length') == 1 ]]; }
wait_for 30 "keeper to be reported dead" dead_keeper || it_log "keeper is not reported dead"
show snapledger dead
show snapledger check
grep -E 'dead container' "$IT_SL_LOG" | sed 's/^/  log: /'

echo
echo "== the same state as Prometheus metrics (docs/metrics.md; alert rules in"
echo "   install/snapledger-alerts.rules.yml): the queue, the dead container and"
echo "   the bytes it pins"
METRICS_URL=$(sed -nE 's#.*metrics on (http://[^ ]+/metrics)$#\1#p' "$IT_SL_LOG" | tail -n1)
PORT=${METRICS_URL##*:}; PORT=${PORT%%/*}
show_metrics() {
  curl -s "http://127.0.0.1:$PORT/metrics" | grep snapledger_ |
    grep -E '^snapledger_(snapshots|removal_queue|removal_oldest|dead_container|watcher_connected|ledger_size)'
}
printf '\n$ curl -s http://127.0.0.1:%s/metrics | grep snapledger_ | grep -E %s\n' "$PORT" \
  "'^snapledger_(snapshots|removal_queue|removal_oldest|dead_container|watcher_connected|ledger_size)'"
show_metrics

echo "== what the prune would take (docs/prune.md): a dry run changes nothing"
echo "   (--until 1s: a TTL for this pass; keeper has been dead longer)"
show snapledger prune --dry-run --until 1s

echo
echo "== the container is deleted: the queue removes its snapshot, then the"
echo "   layer (cascade, leaf first)"
ctrd task delete keeper >/dev/null 2>&1
ctrd containers rm keeper >/dev/null 2>&1
wait_for 30 "the ledger to empty" ledger_empty || it_log "the ledger is not empty yet"
grep -E 'removal queue|deferred as|queued as' "$IT_SL_LOG" | sed 's/^/  log: /'
show snapledger history -n 8
show ls "$IT_SL_ROOT/snapshots"
show snapledger tree --all
show snapledger check
echo
echo "demo finished: snapledgerd log at $IT_SL_LOG (kept only with KEEP=1)"
