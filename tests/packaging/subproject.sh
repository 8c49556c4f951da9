#!/usr/bin/env bash
# bitslab as a meson subproject, exactly as README.md says: a fresh consumer
# project whose meson.build is README's ```meson snippet, with this source
# tree (the files a checkout has) in subprojects/bitslab. Checks that it
# builds and runs (and replaces malloc with -Dbitslab:override=true), that
# bitslab builds only its library there (no tests,
# stress, models, benchmarks or demo), registers none of its tests into the
# consumer's `meson test`, and installs nothing.
#
# Usage: subproject.sh SOURCE_ROOT   (CC: the compiler to use)
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# ---- the consumer ------------------------------------------------------------------
C="$WORK/consumer"
mkdir -p "$C/subprojects/bitslab"
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # What a checkout holds: tracked files plus new ones not ignored (no build/).
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$C/subprojects/bitslab"
else
    cp -r "$SRC/meson.build" "$SRC/meson_options.txt" "$SRC/src" "$SRC/include" "$SRC/cmake" "$C/subprojects/bitslab/"
fi
[ -f "$C/subprojects/bitslab/meson.build" ] || fail "could not copy the source tree"

snippet=$(awk '/^```meson$/ {on = 1; next} /^```$/ {if (on) exit} on' "$SRC/README.md")
grep -q "dependency('bitslab'" <<<"$snippet" || fail "no meson snippet with dependency('bitslab') in README.md"
{
    echo "project('consumer', 'c', default_options: ['c_std=c11'])"
    echo "$snippet"
    echo "test('server-runs', server)"
} >"$C/meson.build"
cp "$SRC/tests/packaging/consumer.c" "$C/server.c"
echo "--- consumer meson.build:"; cat "$C/meson.build"

# ---- build, run --------------------------------------------------------------------
# --force-fallback-for: use the subproject even if a bitslab is installed.
meson setup "$C/build" "$C" --force-fallback-for=bitslab -Dwerror=true >"$WORK/setup.log" 2>&1 ||
    { cat "$WORK/setup.log"; fail "meson setup of the consumer"; }
ninja -C "$C/build" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "ninja in the consumer"; }
out=$("$C/build/server") || fail "server exited with $?"
echo "$out"
[[ "$out" == "consumer: bitslab "*" ok" ]] || fail "unexpected output: $out"

# With -Dbitslab:override=true the dependency replaces malloc: the C library's
# own allocations (strdup in the consumer) come from bitslab.
"$C/build/server" malloc >/dev/null 2>&1 && fail "malloc is bitslab's without override=true?"
meson configure "$C/build" -Dbitslab:override=true >/dev/null || fail "meson configure -Dbitslab:override=true"
ninja -C "$C/build" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "ninja with override=true"; }
"$C/build/server" malloc || fail "with -Dbitslab:override=true, malloc is not bitslab's"

# ---- only the library --------------------------------------------------------------
meson introspect --targets "$C/build" >"$WORK/targets.json"
python3 - "$WORK/targets.json" <<'PY' || fail "bitslab built more than its library"
import json, sys
targets = [t for t in json.load(open(sys.argv[1])) if t.get("subproject") == "bitslab"]
built = sorted((t["name"], t["type"]) for t in targets if t["build_by_default"])
print("bitslab targets built by default:", built)
sys.exit(0 if built == [("bitslab", "static library")] else 1)
PY
[ -f "$C/build/subprojects/bitslab/libbitslab.a" ] || fail "libbitslab.a was not built"

# ---- no bitslab test in the consumer's meson test -----------------------------------
tests=$(meson test -C "$C/build" --no-rebuild --list 2>/dev/null)
echo "consumer's tests: $tests"
[ "$tests" = "server-runs" ] || fail "meson test --list in the consumer: $tests"
meson test -C "$C/build" >/dev/null 2>&1 || fail "meson test in the consumer"

# ---- nothing installed ----------------------------------------------------------------
installed=$(meson introspect --installed "$C/build")
[ "$installed" = "{}" ] || fail "the subproject installs files: $installed"

echo "ok: subproject build, run, library only, no tests registered, nothing installed"
