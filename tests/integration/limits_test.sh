#!/usr/bin/env bash
# limits_test.sh SNAPLEDGERD SNAPLEDGER SNAPBENCH
#
# Out of file descriptors, the sockets recover by themselves (issue 15,
# finding 1). snapledgerd runs with a hard limit of 64 descriptors (so it
# cannot raise its own); 100 client connections are opened at once, which
# makes the daemon's accept4() fail with EMFILE — after which gRPC 1.51
# never accepts on that socket again. Then the connections close, and within
# a bound both sockets must serve calls again: the Snapshots API (a small
# snapbench run) and the admin API (`snapledger stats`). Last, honest
# health: `snapledger check` fails while the Snapshots socket does not
# accept. Then finding 2: out of descriptors while the ledger writes, the
# ledger takes writes again once they are free. Needs python3. Everything lives in one temp dir, removed on exit.
set -uo pipefail
SNAPLEDGERD=$1 SNAPLEDGER=$2 SNAPBENCH=$3
T=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-limits.XXXXXX") || exit 1
PID=
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
FAILED=0
pass() { printf 'PASS: %s\n' "$1"; }
fail() { printf 'FAIL: %s\n' "$1"; FAILED=1; }

prlimit --nofile=64:64 "$SNAPLEDGERD" --root "$T/root" --address "$T/s.sock" \
  --backend native --log-level info >"$T/log" 2>&1 &
PID=$!
for _ in $(seq 100); do [[ -S $T/s.sock && -S $T/s-admin.sock ]] && break; sleep 0.1; done
[[ -S $T/s.sock ]] || { cat "$T/log"; echo "FAIL: daemon did not start"; exit 1; }

python3 - "$T/s.sock" "$T/s-admin.sock" <<'PY'
import socket, sys, time
held = []
for path in sys.argv[1:]:
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            break
        held.append(s)
time.sleep(2)  # the daemon tries to accept them all meanwhile
for s in held:
    s.close()
PY

if grep -q "Failed accept4" "$T/log"; then
  pass "the daemon ran out of descriptors while accepting (gRPC: Failed accept4)"
else
  fail "the flood did not exhaust the daemon's descriptors (no failed accept)"
fi

# Liveness bound (not a speed goal): the doctor retries with backoff.
ok=0
for _ in $(seq 60); do
  if "$SNAPBENCH" --address "unix://$T/s.sock" --clients 1 --chains 1 \
    --depth 2 --timeout 5 >"$T/bench.out" 2>&1; then
    ok=1
    break
  fi
  sleep 1
done
if ((ok)); then pass "the Snapshots socket serves calls again"; else
  cat "$T/bench.out"; fail "the Snapshots socket stays dead"; fi

ok=0
for _ in $(seq 60); do
  if "$SNAPLEDGER" --address "$T/s-admin.sock" stats >/dev/null 2>&1; then
    ok=1
    break
  fi
  sleep 1
done
if ((ok)); then pass "the admin socket serves calls again"; else
  fail "the admin socket stays dead"; fi

if grep -q "accepts again" "$T/log"; then
  pass "the daemon says which socket it served anew"
else
  fail "no 'accepts again' in the log"
fi
# Honest health: `check` passes now, and fails, naming the socket, while the
# Snapshots socket does not accept (a listening socket nobody accepts from,
# what gRPC leaves after a failed accept4, planted over the path).
"$SNAPLEDGER" --address "$T/s-admin.sock" check >"$T/check.out" 2>&1
rc=$?
((rc == 0)) && pass "check exits 0 once both sockets serve" ||
  { cat "$T/check.out"; fail "check exits $rc once both sockets serve"; }
python3 - "$T/s.sock" <<'PY' &
import socket, sys, os, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path + ".deaf")
s.listen(16)
os.rename(path + ".deaf", path)
time.sleep(20)
PY
DEAF=$!
sleep 1
"$SNAPLEDGER" --address "$T/s-admin.sock" check >"$T/check.out" 2>&1
rc=$?
if ((rc == 1)) && grep -q "Snapshots socket .* does not accept connections" "$T/check.out"; then
  pass "check exits 1 naming the Snapshots socket that does not accept"
else
  cat "$T/check.out"; fail "check exits $rc while the Snapshots socket does not accept"
fi
kill "$DEAF" 2>/dev/null; wait "$DEAF" 2>/dev/null

kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=

# Finding 2: out of descriptors while the ledger writes. 190 Prepares of
# 56 KiB labels, each on a connection of its own held until all are sent,
# under a limit of 200: RocksDB's switch to a new WAL fails with EMFILE (a
# fatal error Resume() cannot clear). Once the connections close, the ledger
# must take writes again by itself (it reopens the database) — before, every
# write kept answering "ledger is not writable" until a restart.
prlimit --nofile=200:200 "$SNAPLEDGERD" --root "$T/root2" \
  --address "$T/w.sock" --backend native --log-level info >"$T/log2" 2>&1 &
PID=$!
for _ in $(seq 100); do [[ -S $T/w.sock && -S $T/w-admin.sock ]] && break; sleep 0.1; done
python3 "$(dirname "$(readlink -f "$0")")/h2_flood.py" prepare "$T/w.sock" 190 $((56 << 10))
if grep -q "ledger write failed.*Too many open files" "$T/log2"; then
  pass "a ledger write failed with EMFILE"
else
  fail "the flood did not make a ledger write fail with EMFILE"
fi
ok=0
for _ in $(seq 60); do  # liveness bound: the doctor asks every 2 s
  if "$SNAPBENCH" --address "unix://$T/w.sock" --clients 1 --chains 1 \
    --depth 2 --timeout 5 >"$T/bench.out" 2>&1; then
    ok=1
    break
  fi
  sleep 1
done
if ((ok)); then pass "the ledger takes writes again without a restart"; else
  cat "$T/bench.out"; fail "the ledger stays unwritable after EMFILE"; fi
grep -q "ledger: reopened after a fatal write error" "$T/log2" &&
  pass "the daemon says it reopened the ledger" ||
  fail "no 'reopened' in the log"
"$SNAPLEDGER" --address "$T/w-admin.sock" check >"$T/check.out" 2>&1
rc=$?
((rc == 0)) && pass "check exits 0 once the ledger is healed" ||
  { cat "$T/check.out"; fail "check exits $rc after the ledger healed"; }
cat "$T/log2" >>"$T/log"

((FAILED)) && { echo "--- daemon log"; tail -40 "$T/log"; }
exit $FAILED
