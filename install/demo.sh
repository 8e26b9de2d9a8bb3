#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: install everything,
# build snapledger, start a private containerd with snapledger registered
# under [proxy_plugins], run containers through it, and show what the ledger
# recorded. Touches no system containerd; cleans up after itself
# (KEEP=1 keeps the temp dir with logs and roots for a look afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

./install/install-deps.sh
echo "== building snapledgerd"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target snapledgerd snapledger >/dev/null
IT_KEEP=${KEEP:-0} exec ./install/demo-scenario.sh build/plugin/server/snapledgerd \
  build/cli/snapledger
