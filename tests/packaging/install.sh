#!/usr/bin/env bash
# An installed bitslab, as a distribution or `ninja install` leaves it: builds
# this source tree with -Doverride=true, installs it into a temporary prefix,
# then builds tests/packaging/consumer.c against it
#   - with pkg-config bitslab-static: no dependency on libbitslab.so (ldd), and
#     the C library's own malloc is bitslab's although the program never calls
#     malloc (the -Wl,-u,malloc of the .pc file);
#   - with pkg-config bitslab: linked to libbitslab.so.0 (the soname), whose
#     malloc replaces the C library's;
#   - with CMake, find_package(bitslab): bitslab::bitslab (the archive, the same
#     checks) and bitslab::shared; a version the package cannot satisfy is refused.
# Also checks the installed files and the libbitslab.so -> .so.0 -> .so.0.x.y chain.
#
# Usage: install.sh SOURCE_ROOT   (CC: the compiler to use)
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
CC=${CC:-cc}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
P="$WORK/prefix"

# ---- build and install ------------------------------------------------------------
meson setup "$WORK/build" "$SRC" -Dbuildtype=release -Dwerror=true -Dtests=false -Doverride=true \
    --prefix "$P" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; fail "meson setup"; }
ninja -C "$WORK/build" install >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "ninja install"; }
version=$(meson introspect --projectinfo "$WORK/build" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
major=${version%%.*}

libdir=$(dirname "$(find "$P" -name libbitslab.a | head -1)")
[ -d "$libdir" ] || fail "no libbitslab.a installed"
echo "installed into $P; libdir ${libdir#"$P"/}"
for f in "$libdir/libbitslab.a" "$libdir/libbitslab.so.$version" "$P/include/bitslab.h" \
         "$libdir/pkgconfig/bitslab.pc" "$libdir/pkgconfig/bitslab-static.pc" \
         "$libdir/cmake/bitslab/bitslab-config.cmake" "$libdir/cmake/bitslab/bitslab-config-version.cmake"; do
    [ -f "$f" ] || fail "not installed: ${f#"$P"/}"
done
[ "$(readlink "$libdir/libbitslab.so")" = "libbitslab.so.$major" ] || fail "libbitslab.so -> $(readlink "$libdir/libbitslab.so")"
[ "$(readlink "$libdir/libbitslab.so.$major")" = "libbitslab.so.$version" ] || fail "libbitslab.so.$major -> $(readlink "$libdir/libbitslab.so.$major")"
soname=$(readelf -d "$libdir/libbitslab.so.$version" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libbitslab.so.$major" ] || fail "soname: $soname"
echo "ok: files, soname $soname, symlinks"

# A program that must not depend on libbitslab.so and whose malloc is bitslab's.
check_static() {
    local exe=$1
    # Output captured first: with pipefail, `ldd | grep -q` fails when grep exits
    # at its match and ldd is killed by SIGPIPE writing the lines after it.
    local deps; deps=$(ldd "$exe")
    if grep -q libbitslab <<<"$deps"; then echo "$deps"; fail "$exe depends on libbitslab.so"; fi
    "$exe" malloc || fail "$exe: malloc is not bitslab's"
}
# A program linked to libbitslab.so.<major>; its malloc is bitslab's too.
check_shared() {
    local exe=$1
    local dyn deps # captured first, as in check_static
    dyn=$(readelf -d "$exe")
    grep -q "NEEDED.*\[libbitslab.so.$major\]" <<<"$dyn" || { echo "$dyn"; fail "$exe: NEEDED"; }
    deps=$(LD_LIBRARY_PATH="$libdir" ldd "$exe")
    grep -q "libbitslab.so.$major => $libdir/" <<<"$deps" || { echo "$deps"; fail "$exe: ldd"; }
    LD_LIBRARY_PATH="$libdir" "$exe" malloc || fail "$exe: malloc is not bitslab's"
}

# ---- pkg-config ---------------------------------------------------------------------
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig" # only ours, not the system's
export PKG_CONFIG_PATH=
static_flags=$(pkg-config --static --cflags --libs bitslab-static)
echo "pkg-config --static --cflags --libs bitslab-static: $static_flags"
# shellcheck disable=SC2086 # word splitting intended
$CC -std=c11 -O2 "$SRC/tests/packaging/consumer.c" $static_flags -o "$WORK/pc-static" || fail "build with bitslab-static"
check_static "$WORK/pc-static"
# shellcheck disable=SC2086
$CC -std=c11 -O2 "$SRC/tests/packaging/consumer.c" $(pkg-config --cflags --libs bitslab) -o "$WORK/pc-shared" ||
    fail "build with bitslab"
check_shared "$WORK/pc-shared"
echo "ok: pkg-config bitslab-static and bitslab"

# ---- CMake ----------------------------------------------------------------------------
mkdir -p "$WORK/cm"
cat >"$WORK/cm/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(consumer C)
find_package(bitslab 99.0 QUIET)
if(bitslab_FOUND)
  message(FATAL_ERROR "find_package(bitslab 99.0) accepted version \${bitslab_VERSION}")
endif()
find_package(bitslab $version REQUIRED)
message(STATUS "bitslab \${bitslab_VERSION} in \${bitslab_DIR}")
add_executable(cm-static "$SRC/tests/packaging/consumer.c")
target_link_libraries(cm-static PRIVATE bitslab::bitslab)
add_executable(cm-shared "$SRC/tests/packaging/consumer.c")
target_link_libraries(cm-shared PRIVATE bitslab::shared)
EOF
cmake -S "$WORK/cm" -B "$WORK/cm/build" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_C_COMPILER="${CC%% *}" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log"; fail "cmake configure"; }
grep "bitslab $version in $libdir/cmake/bitslab" "$WORK/cmake.log" || { cat "$WORK/cmake.log"; fail "cmake found another bitslab"; }
cmake --build "$WORK/cm/build" -j 2 >"$WORK/cmake-build.log" 2>&1 || { cat "$WORK/cmake-build.log"; fail "cmake build"; }
check_static "$WORK/cm/build/cm-static"
check_shared "$WORK/cm/build/cm-shared"
echo "ok: CMake bitslab::bitslab and bitslab::shared"
