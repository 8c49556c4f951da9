#!/usr/bin/env bash
# The whole test suite: unit tests (release, gcc), unit + stress tests with the
# debug invariant checks, the stress suite under clang ThreadSanitizer, and the
# Promela model checks. Build directories live under build/ci-*.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

run() { echo; echo "=== $*"; "$@"; }

rm -rf build/ci-release build/ci-debug build/ci-tsan
run meson setup build/ci-release -Dbuildtype=release -Dwerror=true
run meson test -C build/ci-release --print-errorlogs --suite unit --suite model --suite override --suite bench

run meson setup build/ci-debug -Ddebug_checks=true -Dbuildtype=debugoptimized -Dwerror=true
run meson test -C build/ci-debug --print-errorlogs --suite unit --suite stress

run env CC=clang meson setup build/ci-tsan -Db_sanitize=thread -Db_lundef=false -Ddebug_checks=true -Dbuildtype=debugoptimized -Dwerror=true
run meson test -C build/ci-tsan --print-errorlogs --suite stress
echo
echo "all test suites passed"
