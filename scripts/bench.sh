#!/usr/bin/env bash
# Benchmarks (issue #5): bitslab against glibc, mimalloc, jemalloc and tcmalloc.
#
#   scripts/bench.sh                 the full comparison (6 to 8 minutes on 2 cores)
#   BENCH_REPS=3 scripts/bench.sh    fewer repetitions
#   scripts/bench.sh --help          every setting (bench/run.py)
#
# Installs what is missing (Debian packages, as root or through sudo), builds
# libbitslab.so (release, build/release) and the benchmark programs, runs every
# workload under each allocator, interleaved, then prints a Markdown report and
# writes bench/results/latest.{md,json,png}. Arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(meson ninja-build pkg-config gcc python3 valgrind gdb gnuplot-nox
      libmimalloc-dev libjemalloc-dev libgoogle-perftools-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Any gnuplot will do.
if [[ " ${missing[*]} " == *" gnuplot-nox "* ]] && command -v gnuplot >/dev/null; then
    missing=("${missing[@]/gnuplot-nox}")
fi
if [ -n "${missing[*]// /}" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            SUDO="sudo"
        else
            echo "bench.sh: missing ${missing[*]}; not root and no sudo: going on without them" >&2
            SUDO="none"
        fi
    fi
    if [ "$SUDO" != none ]; then
        echo "bench.sh: installing ${missing[*]}" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ${missing[*]} >/dev/null
    fi
fi

exec python3 bench/run.py "$@"
