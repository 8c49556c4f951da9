#!/usr/bin/env bash
# Build bitslab and run the demo: a tour of every allocation path with heap
# statistics at each step, then four threads in a ring passing mixed-size
# messages (every free a remote free). Halfway through, with every thread
# stopped, it prints bitslab_stats_print()'s table and writes the heap map,
# which tools/bitslab-heapmap draws:
#
#   build/release/heapmap.json   bitslab_heap_map()            (docs/heapmap.schema.json)
#   build/release/stats.json     bitslab_stats_print(JSON)     (docs/stats.schema.json)
#   build/release/heapmap.svg    the picture, and heapmap.png  (needs python3-matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build/release ] || meson setup build/release -Dbuildtype=release >/dev/null
ninja -C build/release >/dev/null
out=build/release
./$out/bitslab-demo --heap-map $out/heapmap.json --stats-json $out/stats.json
# Debian's python3 has Debian's matplotlib; another python3 first in PATH may not.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
if "$py" -c 'import matplotlib' 2>/dev/null; then
    echo
    "$py" tools/bitslab-heapmap $out/heapmap.json -o $out/heapmap.svg
    "$py" tools/bitslab-heapmap $out/heapmap.json -o $out/heapmap.png
else
    echo "demo.sh: matplotlib not found for $py (Debian: python3-matplotlib): no picture drawn" >&2
fi
