#!/usr/bin/env bash
# Build bitslab and run the demo (heap statistics through every allocation path).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build/release ] || meson setup build/release -Dbuildtype=release >/dev/null
ninja -C build/release >/dev/null
./build/release/bitslab-demo
