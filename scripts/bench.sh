#!/usr/bin/env bash
# Benchmarks (issues #5, #9, #10, #11): bitslab against glibc, mimalloc, jemalloc and tcmalloc.
#
#   scripts/bench.sh                                   the full comparison (about 10 minutes on 2 cores)
#   BENCH_REPS=3 scripts/bench.sh                      fewer hyperfine runs
#   BENCH_SCALE=0.05 BENCH_REPS=1 scripts/bench.sh     a quick check that everything runs
#   scripts/bench.sh --help                            every setting (bench/run.py)
#
# Installs what is missing (Debian packages, as root or through sudo), builds
# libbitslab.so (release, build/release) and the benchmark programs, times every
# workload under each allocator with hyperfine, counts system calls (strace) and
# instructions (callgrind), runs the memory scenarios, then prints a Markdown
# report and writes bench/results/latest.{md,json,png}. Arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(meson ninja-build pkg-config gcc python3 python3-matplotlib hyperfine strace valgrind gdb
      libmimalloc-dev libjemalloc-dev libgoogle-perftools-dev)
missing=()
for p in "${pkgs[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
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
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# Debian's python3 is the one python3-matplotlib is installed for (a python3
# earlier in PATH, from pyenv say, would not see it).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" bench/run.py "$@"
