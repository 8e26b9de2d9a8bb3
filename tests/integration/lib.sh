# lib.sh — helpers for snapledger's integration tests against a real containerd.
# Source it from a bash script that has `set -uo pipefail` (not -e: checks
# must keep running after a failure so the summary is complete).
#
# Everything a test starts lives under one mktemp directory ($IT_TMP): a
# private containerd (root, state, sockets, config, log), snapledgerd (root,
# socket, log), the image archive. The test re-executes itself in a private
# mount namespace (it_enter_private_namespace) with a tmpfs over /run, because
# containerd's runc shim and ctr hard-code /run/containerd/{s,fifo,runc}; so
# nothing here touches a system containerd, /run/containerd or the host's
# mount table. it_cleanup (installed as the EXIT trap) kills tasks, stops
# containerd, the shims and snapledgerd, lazily unmounts anything under
# $IT_TMP, removes the cgroups runc made for the test namespace, and deletes
# $IT_TMP — on success and on failure.
#
# Environment knobs:
#   IT_KEEP=1        keep $IT_TMP (logs, roots) after the run (processes are
#                    still stopped and mounts still removed)
#   IT_VERBOSE=1     echo every ctr command
#   IT_TIMEOUT=SECS  bound for a single ctr command (default 60)
#   IT_BACKEND=NAME  snapledgerd's --backend: native (default), overlayfs or
#                    remote; the CTest suites run once with each. remote:
#                    snapledgerd proxies a downstream snapshotter, containerd's
#                    own one served over gRPC by tests/go's snapshotter-serve
#                    ($IT_SNAPSHOTTER_SERVE, of type $IT_REMOTE_TYPE, default
#                    overlayfs), started and stopped with snapledgerd
#   IT_REMOTE_ARGS   extra arguments for snapshotter-serve

# shellcheck disable=SC2317  # functions here are called indirectly (traps, it_run)
IT_PASSED=0
IT_FAILED=0
IT_SKIPPED=0
IT_TMP=${IT_TMP:-}   # set by the outer shell in it_enter_private_namespace
IT_NS=${IT_NS:-}     # containerd namespace; default derived from $IT_TMP (unique)
IT_TIMEOUT=${IT_TIMEOUT:-60}
IT_BACKEND=${IT_BACKEND:-native}
case $IT_BACKEND in
  native | overlayfs) IT_MOUNT_STYLE=$IT_BACKEND ;;
  remote)
    IT_REMOTE_TYPE=${IT_REMOTE_TYPE:-overlayfs}
    IT_MOUNT_STYLE=$IT_REMOTE_TYPE
    [[ -x ${IT_SNAPSHOTTER_SERVE:-} ]] || {
      echo "IT_BACKEND=remote needs IT_SNAPSHOTTER_SERVE (tests/go/build.sh)" >&2
      exit 2
    }
    IT_SNAPSHOTTER_SERVE=$(readlink -f "$IT_SNAPSHOTTER_SERVE")
    export IT_SNAPSHOTTER_SERVE IT_REMOTE_TYPE
    ;;
  *) echo "IT_BACKEND must be native, overlayfs or remote, not '$IT_BACKEND'" >&2; exit 2 ;;
esac
# What the mounts snapledgerd hands out look like: its backend's, or with
# remote, the downstream snapshotter's.
export IT_BACKEND IT_MOUNT_STYLE
IT_DS_PID=
IT_DS_SOCK=
IT_DS_ROOT=
IT_DS_LOG=
IT_CTRD_PID=
IT_CTRD_SOCK=
IT_CTRD_ROOT=
IT_CTRD_STATE=
IT_CTRD_LOG=
IT_SL_PID=
IT_SL_SOCK=
IT_SL_ROOT=
IT_SL_LOG=
IT_OUT=   # output (stdout+stderr) of the last it_run / assert_cmd_*
IT_RC=0   # exit status of the last it_run / assert_cmd_*

# ------------------------------------------------------------- binaries ---
# it_take_binaries "$@" : the suites that drive both programs take them as
# SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY (or $SNAPLEDGERD / $SNAPLEDGER_CLI);
# sets and exports SNAPLEDGERD and SNAPLEDGER as absolute paths, or exits 2.
it_take_binaries() {
  SNAPLEDGERD=${1:-${SNAPLEDGERD:-}}
  SNAPLEDGER=${2:-${SNAPLEDGER_CLI:-}}
  if [[ -z $SNAPLEDGERD || -z $SNAPLEDGER ]]; then
    echo "usage: $0 SNAPLEDGERD_BINARY SNAPLEDGER_CLI_BINARY" >&2
    exit 2
  fi
  SNAPLEDGERD=$(readlink -f "$SNAPLEDGERD")
  SNAPLEDGER=$(readlink -f "$SNAPLEDGER")
  local bin
  for bin in "$SNAPLEDGERD" "$SNAPLEDGER"; do
    [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 2; }
  done
  export SNAPLEDGERD SNAPLEDGER
}

# ---------------------------------------------------------------- logging ---
it_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
it_die() {
  printf 'FATAL: %s\n' "$*" >&2
  IT_FAILED=$((IT_FAILED + 1))
  exit 1   # EXIT trap prints the summary and cleans up
}

# ------------------------------------------------------------- assertions ---
# Every assertion prints exactly one PASS/FAIL line naming the check.
it_pass() { IT_PASSED=$((IT_PASSED + 1)); printf 'PASS: %s\n' "$1"; }
it_fail() {
  IT_FAILED=$((IT_FAILED + 1))
  printf 'FAIL: %s\n' "$1"
  shift
  local arg line
  for arg in "$@"; do
    while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$arg"
  done
}
it_skip() { IT_SKIPPED=$((IT_SKIPPED + 1)); printf 'SKIP: %s (%s)\n' "$1" "$2"; }

# indent multi-line text for failure messages
it_indent() { local p='  | '; printf '%s\n' "$p${1//$'\n'/$'\n'$p}"; }

assert_eq() { # NAME EXPECTED GOT
  if [[ "$2" == "$3" ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected: $(printf %q "$2")" "got:      $(printf %q "$3")"
  return 1
}

assert_contains() { # NAME NEEDLE HAYSTACK   (fixed string)
  if [[ "$3" == *"$2"* ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected to contain: $2" "got:" "$(it_indent "$3")"
  return 1
}

assert_not_contains() { # NAME NEEDLE HAYSTACK
  if [[ "$3" != *"$2"* ]]; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected NOT to contain: $2" "got:" "$(it_indent "$3")"
  return 1
}

assert_match() { # NAME ERE HAYSTACK   (grep -E, any line)
  if grep -Eq -- "$2" <<<"$3"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected a line matching: $2" "got:" "$(it_indent "$3")"
  return 1
}

assert_no_match() { # NAME ERE HAYSTACK
  if ! grep -Eq -- "$2" <<<"$3"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected no line matching: $2" "got:" "$(it_indent "$3")"
  return 1
}

# it_run CMD... : run, capture output in IT_OUT, status in IT_RC. Commands
# run under a timeout; shell functions run as they are (the ones here bound
# every command they call: ctrd, ctrs, sld).
it_run() {
  [[ ${IT_VERBOSE:-0} == 1 ]] && it_log "+ $*"
  if [[ $(type -t "$1") == function ]]; then
    IT_OUT=$("$@" 2>&1)
  else
    IT_OUT=$(timeout --kill-after=5 "$IT_TIMEOUT" "$@" 2>&1)
  fi
  IT_RC=$?
  return 0
}

assert_cmd_ok() { # NAME CMD...
  local name=$1; shift
  it_run "$@"
  if [[ $IT_RC -eq 0 ]]; then it_pass "$name"; return 0; fi
  it_fail "$name" "command: $*" "expected: exit 0" "got:      exit $IT_RC" \
    "$(it_indent "$IT_OUT")"
  return 1
}

assert_cmd_fails() { # NAME ERE CMD...  (non-zero exit AND output matches ERE)
  local name=$1 re=$2; shift 2
  it_run "$@"
  if [[ $IT_RC -ne 0 && $IT_RC -ne 124 ]] && grep -Eiq -- "$re" <<<"$IT_OUT"; then
    it_pass "$name"; return 0
  fi
  it_fail "$name" "command: $*" "expected: failure with output matching /$re/" \
    "got:      exit $IT_RC" "$(it_indent "$IT_OUT")"
  return 1
}

# assert_log_match NAME ERE FILE / assert_log_no_match NAME ERE FILE
assert_log_match() {
  if grep -Eq -- "$2" "$3"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected a line matching: $2" "in: $3 (last 10 lines:)" \
    "$(it_indent "$(tail -n 10 "$3")")"
  return 1
}
assert_log_no_match() {
  if ! grep -Eq -- "$2" "$3"; then it_pass "$1"; return 0; fi
  it_fail "$1" "expected no line matching: $2" "in: $3; matching lines:" \
    "$(it_indent "$(grep -E -- "$2" "$3" | head -n 10)")"
  return 1
}

# ------------------------------------------------------------------ waits ---
# wait_for SECS DESCRIPTION CMD... : poll CMD every 0.1s until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      it_log "timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.1
  done
  return 0
}

# wait_pid_exit PID SECS : 0 once PID has gone (reaped or not our child).
wait_pid_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    # a zombie child counts as gone
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
  return 0
}

# ------------------------------------------------------------ environment ---
# it_enter_private_namespace "$@" : call first thing in a test script. Checks
# requirements, then re-executes the script as pid 1 of a new pid namespace
# inside a private mount namespace with a fresh tmpfs on /run.
it_enter_private_namespace() {
  if [[ ${IT_IN_PRIVATE_NS:-} != 1 ]]; then
    [[ $(id -u) == 0 ]] || { echo "SKIP: integration tests need root" >&2; exit 77; }
    local tool
    for tool in containerd ctr runc containerd-shim-runc-v2 unshare mount \
                umount timeout jq sha256sum tar "${BUSYBOX:-/bin/busybox}"; do
      command -v "$tool" >/dev/null ||
        { echo "SKIP: missing required tool: $tool" >&2; exit 77; }
    done
    # A pid namespace too: should the inner script die without cleaning up
    # (even by SIGKILL), the kernel kills containerd, shims, containers and
    # snapledgerd with it, and the mount namespace takes the mounts along.
    # unshare --fork ignores INT/TERM itself, so this outer shell forwards
    # them to the inner script (pid 1 inside), which then cleans up;
    # --kill-child does the same if unshare is killed outright.
    # The temp dir is made out here so that this shell can still remove it
    # if the inner script is killed before its own cleanup.
    IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-it.XXXXXX") || exit 1
    export IT_TMP IT_NS=${IT_NS:-snapledger-it-${IT_TMP##*.}}
    IT_IN_PRIVATE_NS=1 unshare --mount --propagation private --pid --fork \
      --mount-proc --kill-child=SIGTERM -- bash "$(readlink -f "$0")" "$@" &
    local upid=$! inner rc
    it_forward() {
      inner=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null)
      [[ -n $inner ]] && kill -TERM "${inner%% *}" 2>/dev/null
    }
    trap it_forward INT TERM HUP
    while :; do
      wait "$upid"; rc=$?
      kill -0 "$upid" 2>/dev/null || break
    done
    # Normally the inner script has removed it all already.
    it_remove_cgroups
    if [[ -d $IT_TMP && ${IT_KEEP:-0} != 1 ]]; then
      rm -rf --one-file-system "$IT_TMP"
    fi
    exit "$rc"
  fi
  # Inside: our own /run (ctr FIFOs, shim sockets, runc state).
  mount -n -t tmpfs -o mode=0755,size=64m snapledger-it-run /run ||
    { echo "cannot mount a private tmpfs on /run" >&2; exit 1; }
  mkdir -p /run/containerd /run/lock
}

# it_setup : create $IT_TMP (unless made before the namespace was entered)
# and install the cleanup trap.
it_setup() {
  if [[ -z $IT_TMP || ! -d $IT_TMP ]]; then
    IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-it.XXXXXX") || exit 1
  fi
  chmod 0711 "$IT_TMP"
  # Unique per run: runc names cgroups /<namespace>/<container id>.
  [[ -n $IT_NS ]] || IT_NS=snapledger-it-${IT_TMP##*.}
  trap it_cleanup EXIT
  trap 'it_log "interrupted"; exit 130' INT
  trap 'it_log "terminated"; exit 143' TERM
  trap 'exit 129' HUP
  trap 'exit 141' PIPE
  it_log "temp dir: $IT_TMP, containerd namespace: $IT_NS"
}

# ------------------------------------------------------------- containerd ---
# containerd_start [PROXY_NAME PROXY_SOCKET] : start a private containerd.
containerd_start() {
  local proxy_name=${1:-} proxy_sock=${2:-}
  local d=$IT_TMP/containerd
  mkdir -p "$d"
  # IT_CTRD_IMPORTS=GLOB: an `imports` line (config drop-ins, deb_test.sh).
  local imports_line=
  [[ -n ${IT_CTRD_IMPORTS:-} ]] && imports_line="imports = [\"$IT_CTRD_IMPORTS\"]"
  IT_CTRD_ROOT=$d/root
  IT_CTRD_STATE=$d/state
  IT_CTRD_SOCK=$d/containerd.sock
  IT_CTRD_LOG=$d/containerd.log
  {
    cat <<EOF
version = 2
root = "$IT_CTRD_ROOT"
state = "$IT_CTRD_STATE"
$imports_line
# No CRI; no snapshotters that only log noise here; no /opt/containerd.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$IT_CTRD_SOCK"
[ttrpc]
  address = "$IT_CTRD_SOCK.ttrpc"
[debug]
  address = "$d/debug.sock"
  level = "debug"
[metrics]
  address = ""

# Collect promptly: one deletion triggers a GC pass without delay.
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
  deletion_threshold = 1
  mutation_threshold = 100
  schedule_delay = "0ms"
  startup_delay = "100ms"
EOF
    if [[ -n $proxy_name ]]; then
      cat <<EOF

[proxy_plugins.$proxy_name]
  type = "snapshot"
  address = "$proxy_sock"
EOF
    fi
  } >"$d/config.toml"
  containerd --config "$d/config.toml" >"$IT_CTRD_LOG" 2>&1 &
  IT_CTRD_PID=$!
  if ! wait_for 30 "containerd socket" ctr -a "$IT_CTRD_SOCK" version; then
    it_log "containerd log tail:"; tail -n 30 "$IT_CTRD_LOG" >&2
    return 1
  fi
  it_log "containerd pid $IT_CTRD_PID on $IT_CTRD_SOCK"
}

containerd_stop() {
  [[ -n $IT_CTRD_PID ]] || return 0
  kill -TERM "$IT_CTRD_PID" 2>/dev/null
  if ! wait_pid_exit "$IT_CTRD_PID" 20; then
    it_log "containerd did not stop on SIGTERM; SIGKILL"
    kill -KILL "$IT_CTRD_PID" 2>/dev/null
    wait_pid_exit "$IT_CTRD_PID" 5
  fi
  wait "$IT_CTRD_PID" 2>/dev/null
  IT_CTRD_PID=
}

# ctrd ARGS... : ctr against the private containerd, in the test namespace.
ctrd() { timeout -k 5 "$IT_TIMEOUT" ctr -a "$IT_CTRD_SOCK" -n "$IT_NS" "$@"; }

# ------------------------------------------------------------ snapledgerd ---
# downstream_start : with IT_BACKEND=remote, the snapshotter snapledgerd
# proxies (snapshotter-serve); a no-op if it runs. Its objects live in
# $IT_DS_ROOT/snapshots (numeric directories, as containerd's snapshotters
# name them).
downstream_start() {
  [[ $IT_BACKEND == remote && -z $IT_DS_PID ]] || return 0
  IT_DS_ROOT=$IT_TMP/downstream
  IT_DS_SOCK=$IT_TMP/downstream.sock
  IT_DS_LOG=$IT_TMP/downstream.log
  # shellcheck disable=SC2086  # IT_REMOTE_ARGS: words on purpose
  "$IT_SNAPSHOTTER_SERVE" -type "$IT_REMOTE_TYPE" -root "$IT_DS_ROOT" \
    -address "$IT_DS_SOCK" ${IT_REMOTE_ARGS:-} >>"$IT_DS_LOG" 2>&1 &
  IT_DS_PID=$!
  local deadline=$((SECONDS + 30))
  until [[ -S $IT_DS_SOCK ]]; do
    if ! kill -0 "$IT_DS_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      it_log "snapshotter-serve did not start; log tail:"
      tail -n 20 "$IT_DS_LOG" >&2
      IT_DS_PID=
      return 1
    fi
    sleep 0.1
  done
  it_log "downstream snapshotter-serve ($IT_REMOTE_TYPE) pid $IT_DS_PID on $IT_DS_SOCK"
}

# downstream_stop [SIGNAL] : stop the downstream (SIGTERM, or SIGNAL).
downstream_stop() {
  [[ -n $IT_DS_PID ]] || return 0
  kill "-${1:-TERM}" "$IT_DS_PID" 2>/dev/null
  wait_pid_exit "$IT_DS_PID" 20 || kill -KILL "$IT_DS_PID" 2>/dev/null
  wait "$IT_DS_PID" 2>/dev/null
  IT_DS_PID=
}

# it_backend_dir : where the backend keeps its objects (one entry each).
it_backend_dir() {
  if [[ $IT_BACKEND == remote ]]; then
    echo "$IT_TMP/downstream/snapshots"
  else
    echo "$IT_SL_ROOT/snapshots"
  fi
}

# snapledgerd_start BINARY [EXTRA_ARGS...]
snapledgerd_start() {
  local bin=$1; shift
  IT_SL_ROOT=$IT_TMP/snapledger
  IT_SL_SOCK=$IT_TMP/snapledger.sock
  IT_SL_LOG=$IT_TMP/snapledgerd.log
  mkdir -p "$IT_SL_ROOT"
  local -a backend_args=(--backend "$IT_BACKEND")
  if [[ $IT_BACKEND == remote ]]; then
    downstream_start || return 1
    backend_args+=(--remote-address "unix://$IT_DS_SOCK")
  fi
  IT_SL_STARTS=$((${IT_SL_STARTS:-0} + 1))
  echo "=== snapledger-it: start $IT_SL_STARTS ===" >>"$IT_SL_LOG"
  "$bin" --root "$IT_SL_ROOT" --address "$IT_SL_SOCK" "${backend_args[@]}" \
    --log-level debug "$@" >>"$IT_SL_LOG" 2>&1 &
  IT_SL_PID=$!
  local deadline=$((SECONDS + 30))
  until [[ -S $IT_SL_SOCK ]]; do
    if ! kill -0 "$IT_SL_PID" 2>/dev/null; then
      wait "$IT_SL_PID"; local rc=$?
      it_log "snapledgerd exited with status $rc before creating its socket; log tail:"
      tail -n 30 "$IT_SL_LOG" >&2
      IT_SL_PID=
      return 1
    fi
    if ((SECONDS >= deadline)); then
      it_log "snapledgerd did not create $IT_SL_SOCK within 30s; log tail:"
      tail -n 30 "$IT_SL_LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  it_log "snapledgerd pid $IT_SL_PID on $IT_SL_SOCK"
}

# snapledgerd_last_log : the log of the latest start only.
snapledgerd_last_log() {
  awk -v m="=== snapledger-it: start $IT_SL_STARTS ===" \
    '$0 == m {on = 1; next} on' "$IT_SL_LOG"
}

# snapledgerd_stop : SIGTERM; returns the daemon's exit status (137 if it had
# to be killed).
snapledgerd_stop() {
  [[ -n $IT_SL_PID ]] || return 0
  local rc
  kill -TERM "$IT_SL_PID" 2>/dev/null
  if wait_pid_exit "$IT_SL_PID" 20; then
    wait "$IT_SL_PID"; rc=$?
  else
    it_log "snapledgerd did not stop within 20s of SIGTERM; SIGKILL"
    kill -KILL "$IT_SL_PID" 2>/dev/null
    wait "$IT_SL_PID" 2>/dev/null
    rc=137
  fi
  IT_SL_PID=
  return "$rc"
}

# sld ARGS... : ctr speaking the Snapshots API directly to snapledgerd (no
# containerd in between): what snapledgerd itself lists, with its raw keys
# ("<namespace>/<seq>/<key>"). Only read-only subcommands are meaningful.
sld() { timeout -k 5 "$IT_TIMEOUT" ctr -a "$IT_SL_SOCK" -n "$IT_NS" "$@"; }

# sl_mounts KEY : what snapledgerd's Mounts returns for KEY (its raw key), as
# `ctr snapshots mounts` prints it: one "mount -t TYPE SOURCE TARGET -o OPTS"
# line per mount (TARGET a placeholder).
sl_mounts() {
  local out
  out=$(sld snapshots --snapshotter snapledger mounts "$IT_TMP/unused" "$1") ||
    { echo "mounts $1 failed: $out" >&2; return 1; }
  [[ $(grep -c . <<<"$out") -eq 1 ]] ||
    { echo "expected exactly one mount for $1, got: $out" >&2; return 1; }
  echo "$out"
}
# sl_mount_option OPTS NAME : the value of NAME=... in a comma-separated list.
sl_mount_option() {
  local o
  local -a opts
  IFS=, read -r -a opts <<<"$1"
  for o in "${opts[@]}"; do
    [[ $o == "$2="* ]] && { echo "${o#"$2="}"; return 0; }
  done
  return 1
}
# sl_bind_source KEY : the directory holding KEY's own tree (its raw key),
# what a write through its mount lands in. native: the source of the one bind
# mount snapledgerd returns. overlayfs: the same for a snapshot without a
# parent (a bind mount of its fs/), else the upperdir of the overlay mount (an
# active snapshot's own layer); a view of a parent has no tree of its own
# (it is a read-only bind of the parent's or an overlay without upperdir):
# an error.
sl_bind_source() {
  local out _m _t type src _target _o opts dir
  out=$(sl_mounts "$1") || return 1
  read -r _m _t type src _target _o opts <<<"$out"
  case $IT_MOUNT_STYLE/$type in
    */bind) dir=$src ;;
    overlayfs/overlay)
      dir=$(sl_mount_option "$opts" upperdir) ||
        { echo "overlay mount without upperdir (a view?): $out" >&2; return 1; }
      ;;
    *) echo "unexpected mount type for the $IT_MOUNT_STYLE backend: $out" >&2; return 1 ;;
  esac
  [[ -d $dir ]] || { echo "not a directory: $dir (mounts: $out)" >&2; return 1; }
  echo "$dir"
}
# sl_hold_mount KEY DIR : mount KEY (its raw key) at DIR as a container's
# rootfs is mounted, so that the backend refuses to remove it (busy). native:
# a bind mount of its tree. overlayfs: the mount Mounts returns, performed as
# returned (a bind of its fs/ without a parent, else an overlay whose
# upperdir is its fs/ and whose lowerdirs are its ancestors').
sl_hold_mount() {
  local out _m _t type src _target _o opts
  mkdir -p "$2" || return 1
  if [[ $IT_MOUNT_STYLE == native ]]; then
    src=$(sl_bind_source "$1") || return 1
    mount -n --bind "$src" "$2"
    return
  fi
  out=$(sl_mounts "$1") || return 1
  read -r _m _t type src _target _o opts <<<"$out"
  mount -n -t "$type" -o "$opts" "$src" "$2"
}

# it_image_chain_ids TAR : the chain ids of the image in archive TAR (as
# make_image.sh writes it), lowest layer first, one per line: the keys of its
# committed snapshots. C1 = D1, Ck = sha256(C(k-1) + " " + Dk).
it_image_chain_ids() {
  local m c d chain=
  m=$(tar -xOf "$1" index.json | jq -r '.manifests[0].digest') || return 1
  c=$(tar -xOf "$1" "blobs/sha256/${m#sha256:}" | jq -r .config.digest) || return 1
  while IFS= read -r d; do
    if [[ -z $chain ]]; then chain=$d
    else chain=sha256:$(printf '%s %s' "$chain" "$d" | sha256sum | cut -d' ' -f1); fi
    echo "$chain"
  done < <(tar -xOf "$1" "blobs/sha256/${c#sha256:}" | jq -r '.rootfs.diff_ids[]')
  [[ -n $chain ]]
}

# ---------------------------------------------------------------- cleanup ---
# Kill every task and delete every container in every namespace.
it_kill_tasks() {
  [[ -n $IT_CTRD_PID && -S $IT_CTRD_SOCK ]] || return 0
  local ns id
  for ns in $(timeout 10 ctr -a "$IT_CTRD_SOCK" namespaces ls -q 2>/dev/null); do
    for id in $(timeout 10 ctr -a "$IT_CTRD_SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
      timeout 10 ctr -a "$IT_CTRD_SOCK" -n "$ns" tasks kill -a -s KILL "$id" >/dev/null 2>&1
      timeout 10 ctr -a "$IT_CTRD_SOCK" -n "$ns" tasks rm -f "$id" >/dev/null 2>&1
    done
    for id in $(timeout 10 ctr -a "$IT_CTRD_SOCK" -n "$ns" containers ls -q 2>/dev/null); do
      timeout 10 ctr -a "$IT_CTRD_SOCK" -n "$ns" containers rm "$id" >/dev/null 2>&1
    done
  done
}

# Shims outlive containerd; kill the ones this containerd started (by pid,
# from their shim.pid files, after checking the pid is still a shim).
it_kill_shims() {
  [[ -n $IT_CTRD_STATE && -d $IT_CTRD_STATE ]] || return 0
  local f pid
  while IFS= read -r f; do
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q containerd-shim; then
      kill -KILL "$pid" 2>/dev/null
      wait_pid_exit "$pid" 5
    fi
  done < <(find "$IT_CTRD_STATE" -name shim.pid 2>/dev/null)
}

it_unmount_all() { # lazily unmount everything under $IT_TMP, deepest first
  [[ -n $IT_TMP ]] || return 0
  local mp
  while IFS= read -r mp; do
    umount -n -l "$mp" 2>/dev/null || it_log "could not unmount $mp"
  done < <(awk -v p="$IT_TMP" '$5 == p || index($5, p "/") == 1 {print $5}' \
             /proc/self/mountinfo | sort -r)
}

it_remove_cgroups() { # runc's cgroups for our namespace: /sys/fs/cgroup/*/$IT_NS
  local d
  for d in /sys/fs/cgroup/*/"$IT_NS" /sys/fs/cgroup/"$IT_NS"; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null ||
      it_log "could not remove cgroup $d"
  done
}

it_dump_logs() {
  local f
  for f in "$IT_SL_LOG" "$IT_CTRD_LOG" "$IT_DS_LOG"; do
    [[ -n $f && -s $f ]] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

it_cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM HUP PIPE   # finish cleaning up whatever happens to stdout
  [[ $IT_FAILED -gt 0 || $rc -ne 0 ]] && it_dump_logs
  it_kill_tasks
  containerd_stop
  it_kill_shims
  if [[ -n $IT_SL_PID ]]; then snapledgerd_stop; fi
  downstream_stop
  it_unmount_all
  it_remove_cgroups
  if [[ -n $IT_TMP && -d $IT_TMP ]]; then
    if [[ ${IT_KEEP:-0} == 1 ]]; then
      it_log "kept $IT_TMP"
    else
      rm -rf --one-file-system "$IT_TMP"
    fi
  fi
  if [[ $rc -ne 0 && $IT_FAILED -eq 0 ]]; then IT_FAILED=1; fi
  if [[ ${IT_SUMMARY:-1} == 1 ]]; then  # the demo sets IT_SUMMARY=0
    [[ $IT_SKIPPED -gt 0 ]] && echo "($IT_SKIPPED skipped)"
    echo "$IT_PASSED passed, $IT_FAILED failed"
  fi
  [[ $IT_FAILED -eq 0 ]] && exit 0
  exit 1
}
