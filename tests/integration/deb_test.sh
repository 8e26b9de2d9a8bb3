#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through wait_for/it_run
# deb_test.sh BUILD_DIR
#
# The .deb, end to end (README, "Installing"): `cpack -G DEB` in BUILD_DIR
# (built: snapledgerd and snapledger), the package's control data (Depends
# from dpkg-shlibdeps, every one an installed Debian package; conffiles;
# maintainer scripts that enable the unit but start nothing without systemd
# as PID 1), the package unpacked into a clean root (dpkg -x), its unit
# checked (ExecStart, Type=notify, systemd-analyze verify), then the unit's
# ExecStart command line started from the unpacked files as systemd would
# (NOTIFY_SOCKET, WATCHDOG_USEC; /run/snapledger made as RuntimeDirectory
# would, in the test's private /run; only the state directory overridden
# with --root), a private containerd that loads the package's drop-in through
# `imports` without losing its own proxy plugin, and a container run through
# it. Everything under one temp dir, cleaned up on success and failure.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

BUILD=${1:-}
[[ -n $BUILD && -f $BUILD/CPackConfig.cmake ]] ||
  { echo "usage: $0 BUILD_DIR   (a configured and built tree)" >&2; exit 2; }
BUILD=$(readlink -f "$BUILD")
for tool in cpack dpkg-deb dpkg-shlibdeps dpkg-checkbuilddeps python3; do
  command -v "$tool" >/dev/null ||
    { echo "missing $tool (install/install-deps.sh installs it)" >&2; exit 2; }
done

it_enter_private_namespace "$@"
it_setup

LISTENER_PID=
trap '[[ -n $LISTENER_PID ]] && kill "$LISTENER_PID" 2>/dev/null; it_cleanup' EXIT
ROOT=$IT_TMP/root   # the clean root the package is unpacked into

# ------------------------------------------------------------- the .deb ---
echo "== cpack -G DEB"
t0=$SECONDS
IT_TIMEOUT=600 it_run cpack --config "$BUILD/CPackConfig.cmake" -G DEB -B "$IT_TMP/pkg"
assert_eq "cpack -G DEB exits 0" 0 "$IT_RC" || it_die "cpack failed: $IT_OUT"
it_log "cpack took $((SECONDS - t0))s"
debs=("$IT_TMP"/pkg/snapledger_*.deb)
DEB=${debs[0]}
[[ -f $DEB ]] || it_die "no snapledger_*.deb in $IT_TMP/pkg"
it_pass "the package is $(basename "$DEB")"

depends=$(dpkg-deb -f "$DEB" Depends)
for lib in 'libgrpc\+\+1\.[0-9]+' 'libprotobuf[0-9]+' 'libsystemd0' 'libc6'; do
  assert_match "Depends (dpkg-shlibdeps) names the Debian library package $lib" \
    "(^|, )$lib( |,|$)" "$depends"
done
# dpkg's own check against what is installed here (versions and Provides
# included): the Depends are real Debian packages, and satisfied.
printf 'Source: snapledger-deb-test\n\nPackage: x\nArchitecture: any\n' >"$IT_TMP/control"
it_run dpkg-checkbuilddeps -d "$depends" "$IT_TMP/control"
assert_eq "every Depends is satisfied by the Debian packages installed here" "0 " "$IT_RC $IT_OUT"
assert_eq "conffiles: the config and containerd's drop-in" \
  $'/etc/snapledger/config.toml\n/etc/containerd/conf.d/snapledger.toml' \
  "$(dpkg-deb --info "$DEB" conffiles 2>&1)"

# cmake --install into another prefix: the unit names that prefix's paths;
# a config the admin edited is kept (the shipped one beside it as .new).
echo "== cmake --install --prefix"
P=$IT_TMP/prefix
assert_cmd_ok "cmake --install --prefix $P" cmake --install "$BUILD" --prefix "$P"
assert_eq "its unit starts $P/bin/snapledgerd with $P/etc/snapledger/config.toml" \
  "$P/bin/snapledgerd --config $P/etc/snapledger/config.toml" \
  "$(sed -n 's/^ExecStart=//p' "$P/lib/systemd/system/snapledgerd.service" 2>&1)"
echo '# edited by the admin' >>"$P/etc/snapledger/config.toml"
assert_cmd_ok "cmake --install again over an edited config" cmake --install "$BUILD" --prefix "$P"
assert_eq "the edited config is kept, the shipped one put beside it" \
  "# edited by the admin|$(sha256sum <"$HERE/../../install/config.toml" | cut -d' ' -f1)" \
  "$(tail -n1 "$P/etc/snapledger/config.toml")|$(sha256sum <"$P/etc/snapledger/config.toml.new" 2>&1 | cut -d' ' -f1)"

# The maintainer scripts, with stand-ins for deb-systemd-helper,
# deb-systemd-invoke and systemctl that log their calls. This /run is the
# test's own tmpfs: no /run/systemd/system, as in a chroot.
echo "== maintainer scripts"
mkdir -p "$IT_TMP/ctrl" "$IT_TMP/stubs"
dpkg-deb -e "$DEB" "$IT_TMP/ctrl"
for s in deb-systemd-helper deb-systemd-invoke systemctl; do
  # shellcheck disable=SC2016  # $1 and $* are the stand-in's own
  printf '#!/bin/sh\n[ "$1" = --quiet ] && shift\necho "%s $*" >>"%s"\n[ "$1" != was-enabled ] || [ ! -e "%s" ]\n' \
    "$s" "$IT_TMP/calls" "$IT_TMP/disabled" >"$IT_TMP/stubs/$s"
  chmod +x "$IT_TMP/stubs/$s"
done
maint() { : >"$IT_TMP/calls"; PATH=$IT_TMP/stubs:$PATH sh -e "$IT_TMP/ctrl/$1" "${@:2}" && cat "$IT_TMP/calls"; }
it_run maint postinst configure
assert_eq "postinst (first install, no systemd running): enables the unit, starts nothing" \
  $'deb-systemd-helper was-enabled snapledgerd.service\ndeb-systemd-helper enable snapledgerd.service' "$IT_OUT"
mkdir -p /run/systemd/system
it_run maint postinst configure
assert_contains "postinst (first install, under systemd): starts the unit" \
  "deb-systemd-invoke start snapledgerd.service" "$IT_OUT"
touch "$IT_TMP/disabled"
it_run maint postinst configure 0.0.9
assert_eq "postinst (upgrade of a unit the admin disabled): keeps it disabled, restarts it" \
  $'deb-systemd-helper was-enabled snapledgerd.service\ndeb-systemd-helper update-state snapledgerd.service\nsystemctl --system daemon-reload\ndeb-systemd-invoke restart snapledgerd.service' "$IT_OUT"
it_run maint prerm remove
assert_eq "prerm remove (under systemd): stops the unit" \
  "deb-systemd-invoke stop snapledgerd.service" "$IT_OUT"
it_run maint postrm purge
assert_contains "postrm purge: forgets the unit's state" \
  "deb-systemd-helper purge snapledgerd.service" "$IT_OUT"
rm -rf /run/systemd

# ------------------------------------------------- into a clean root ---
echo "== dpkg -x into a clean root"
assert_cmd_ok "dpkg -x the package into $ROOT" dpkg -x "$DEB" "$ROOT"
for f in usr/bin/snapledgerd usr/bin/snapledger usr/lib/systemd/system/snapledgerd.service \
         etc/snapledger/config.toml etc/containerd/conf.d/snapledger.toml \
         usr/share/doc/snapledger/README.md usr/share/doc/snapledger/architecture.md; do
  if [[ -s $ROOT/$f ]]; then it_pass "installs /$f"; else it_fail "installs /$f"; fi
done
assert_no_match "the binaries find every shared library here" "not found" \
  "$(ldd "$ROOT/usr/bin/snapledgerd" "$ROOT/usr/bin/snapledger" 2>&1)"
UNIT=$ROOT/usr/lib/systemd/system/snapledgerd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
assert_eq "the unit starts /usr/bin/snapledgerd with /etc/snapledger/config.toml" \
  "/usr/bin/snapledgerd --config /etc/snapledger/config.toml" "$exec_start"
assert_match "the unit is Type=notify" "^Type=notify$" "$(cat "$UNIT")"
assert_match "the unit has a watchdog" "^WatchdogSec=[1-9]" "$(cat "$UNIT")"
watchdog_sec=$(sed -n 's/^WatchdogSec=\([0-9]*\)$/\1/p' "$UNIT")
# The unit as it would be on the host, its binary where dpkg -x put it.
sed "s#^ExecStart=/#ExecStart=$ROOT/#" "$UNIT" >"$IT_TMP/snapledgerd.service"
if command -v systemd-analyze >/dev/null; then
  it_run systemd-analyze verify "$IT_TMP/snapledgerd.service"
  assert_eq "systemd-analyze verify: no complaint about the unit" "0 " "$IT_RC $IT_OUT"
else
  it_skip "systemd-analyze verify" "no systemd-analyze"
fi

# --------------------------------------- the unit's command line, run ---
echo "== the unit's ExecStart, from the unpacked files"
# Absolute paths in the command line are the package's: under $ROOT here.
read -r -a cmd <<<"$exec_start"
for i in "${!cmd[@]}"; do
  [[ ${cmd[$i]} == /* && -e $ROOT${cmd[$i]} ]] && cmd[i]=$ROOT${cmd[$i]}
done
mkdir -m 0750 /run/snapledger   # RuntimeDirectory=snapledger
IT_SL_ROOT=$IT_TMP/state           # instead of StateDirectory's /var/lib/snapledger
IT_SL_SOCK=/run/snapledger/snapledger.sock
IT_SL_LOG=$IT_TMP/snapledgerd.log
mkdir -p "$IT_SL_ROOT"
python3 "$HERE/notify_listener.py" "$IT_TMP/notify.sock" "$IT_TMP/notify.events" \
  "$IT_SL_LOG" "$IT_SL_SOCK" /run/snapledger/snapledger-admin.sock &
LISTENER_PID=$!
wait_for 10 "the notify listener" grep -q listening "$IT_TMP/notify.events" ||
  it_die "the notify listener did not start"
NOTIFY_SOCKET=$IT_TMP/notify.sock WATCHDOG_USEC=$((watchdog_sec * 1000000)) \
  "${cmd[@]}" --root "$IT_SL_ROOT" >>"$IT_SL_LOG" 2>&1 &
IT_SL_PID=$!
if wait_for 60 "READY=1" grep -q " msg READY=1" "$IT_TMP/notify.events"; then
  it_pass "the unit's command line reports READY=1"
else
  it_die "no READY=1 from ${cmd[*]}: $(tail -n 20 "$IT_SL_LOG")"
fi
assert_match "at READY=1 its socket accepts" \
  "connect $IT_SL_SOCK ok\$" "$(cat "$IT_TMP/notify.events")"
assert_match "it serves the shipped config (backend overlayfs, socket in /run/snapledger)" \
  "serving on $IT_SL_SOCK .*backend overlayfs" "$(cat "$IT_SL_LOG")"
assert_match "it pets the watchdog at half of WatchdogSec" \
  "watchdog: petting every $((watchdog_sec / 2))s" "$(cat "$IT_SL_LOG")"

# containerd with a proxy plugin of its own, importing the package's drop-in.
IT_CTRD_IMPORTS="$ROOT/etc/containerd/conf.d/*.toml" \
  containerd_start keep-me "$IT_TMP/keep-me.sock" || it_die "containerd did not start"
it_run ctrd plugins ls
assert_match "containerd loads 'snapledger' from the drop-in" \
  "^io\.containerd\.snapshotter\.v1[[:space:]]+snapledger[[:space:]].*[[:space:]]ok[[:space:]]*$" "$IT_OUT"
assert_match "and keeps its own proxy plugin (the maps merge)" \
  "^io\.containerd\.snapshotter\.v1[[:space:]]+keep-me[[:space:]]" "$IT_OUT"

IMG=docker.io/snapledger/busybox:test
"$HERE/make_image.sh" "$IT_TMP/image.tar" "$IMG" 2>/dev/null || it_die "make_image.sh failed"
assert_cmd_ok "import the image with --snapshotter snapledger" \
  ctrd images import --snapshotter snapledger "$IT_TMP/image.tar"
it_run ctrd run --rm --snapshotter snapledger "$IMG" t-deb echo hi-from-deb
assert_eq "a container runs through the installed snapledgerd" "hi-from-deb" "$IT_OUT"
it_run "$ROOT/usr/bin/snapledger" ls
assert_match "the installed CLI lists the image's layer over the default admin socket" \
  "sha256:[0-9a-f]+" "$IT_OUT"
containerd_stop
snapledgerd_stop
assert_eq "the installed snapledgerd exits 0 on SIGTERM" 0 "$?"
assert_match "STOPPING=1 on SIGTERM" " msg STOPPING=1" "$(cat "$IT_TMP/notify.events")"
exit 0   # the EXIT trap prints the summary and sets the status
