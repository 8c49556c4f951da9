#!/usr/bin/env bash
# The whole test suite (docs/testing.md): in a release build the unit tests,
# the Promela models, the override tests (libc names, LD_PRELOAD, real
# programs), the packaging tests (subproject, pkg-config, CMake), the
# benchmark smoke test, the fault suite (injected syscall failures, mlockall,
# the fuzzer) and the memory suite; in a clang release build the unit tests
# (with the wait-free disassembly check); in a -Dvalgrind=true build the
# memcheck test; in a debug build (invariant checks, race-window counters)
# the unit, stress and fault tests; in a clang ThreadSanitizer build the
# stress suite. Build directories live under build/ci-*. Ends with
# "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

run() { echo; echo "=== $*"; "$@"; }
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# meson test, with its summary kept for the closing count.
mtest() { echo; echo "=== meson test $*"; meson test "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

rm -rf build/ci-release build/ci-clang build/ci-valgrind build/ci-debug build/ci-tsan
run meson setup build/ci-release -Dbuildtype=release -Dwerror=true
mtest -C build/ci-release --print-errorlogs --suite unit --suite model --suite override --suite packaging --suite bench --suite fault --suite memory

# clang release: the unit tests again, including the wait-free disassembly
# check of what clang makes of the remote-free path.
run env CC=clang meson setup build/ci-clang -Dbuildtype=release -Dwerror=true
mtest -C build/ci-clang --print-errorlogs --suite unit

run meson setup build/ci-valgrind -Dbuildtype=release -Dvalgrind=true -Dwerror=true
mtest -C build/ci-valgrind --print-errorlogs valgrind layers

run meson setup build/ci-debug -Ddebug_checks=true -Dbuildtype=debugoptimized -Dwerror=true
mtest -C build/ci-debug --print-errorlogs --suite unit --suite stress --suite fault

run env CC=clang meson setup build/ci-tsan -Db_sanitize=thread -Db_lundef=false -Ddebug_checks=true -Dbuildtype=debugoptimized -Dwerror=true
mtest -C build/ci-tsan --print-errorlogs --suite stress
ok=$(awk '/^Ok:/ {s += $2} END {print s + 0}' "$LOG")
skipped=$(awk '/^Skipped:/ {s += $2} END {print s + 0}' "$LOG")
failed=$(awk '/^(Fail|Timeout|Unexpected Pass):/ {s += $2} END {print s + 0}' "$LOG")
echo
echo "all test suites passed"
echo "$ok passed, $failed failed, $skipped skipped"
