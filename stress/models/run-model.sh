#!/bin/sh
# run-model.sh: check one Promela model of stress/models/ exhaustively with spin.
#
#   run-model.sh [--expect-violation] [--collapse] [--liveness] MODEL [-DNAME=VALUE ...]
#
# MODEL is a file name in this directory without ".pml" (remote, orphanage).
# -D options go to spin's preprocessor (the model's configuration, see the
# head of each .pml file). The script generates the verifier (spin -a),
# compiles it (gcc, -DSAFETY, or without it for --liveness), runs a full
# (not bitstate) search and prints the state counts.
#
# Exit status 0 when the search is complete and found no error (assertion
# violation, invalid end state, acceptance cycle); with --expect-violation,
# 0 when it found an assertion violation (the model is a deliberately broken
# variant, and the check is that the model notices). Anything else, an
# incomplete search included (depth limit, memory limit), is a failure (1).
# A counterexample is replayed and its event lines printed.
#
#   --collapse   store states with -DCOLLAPSE (lossless; less memory, slower)
#   --liveness   check the model's ltl property (acceptance cycles, weak fairness)
#
# Environment: SPIN (default spin), CC (default gcc, else cc), MODEL_MEMLIM
# (MB, default 3072), MODEL_DEPTH (default 100000), MODEL_OPT (the C
# optimisation flag for pan, default -O1: pan.c compiles slowly at -O2).
set -eu

expect=0
collapse=0
liveness=0
while [ $# -gt 0 ]; do
    case $1 in
    --expect-violation) expect=1; shift ;;
    --collapse) collapse=1; shift ;;
    --liveness) liveness=1; shift ;;
    --) shift; break ;;
    -*) echo "run-model.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
if [ $# -lt 1 ]; then
    echo "usage: run-model.sh [--expect-violation] [--collapse] [--liveness] MODEL [-DNAME=VALUE ...]" >&2
    exit 2
fi
model=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
src=$here/$model.pml
[ -f "$src" ] || { echo "run-model.sh: no model $src" >&2; exit 2; }
spin=${SPIN:-spin}
if [ -z "${CC:-}" ]; then
    if command -v gcc >/dev/null 2>&1; then CC=gcc; else CC=cc; fi
fi
memlim=${MODEL_MEMLIM:-3072}
depth=${MODEL_DEPTH:-100000}

work=$(mktemp -d "${TMPDIR:-/tmp}/bitslab-model.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cp "$src" "$work/$model.pml"
cd "$work"

label="$model${*:+ $*}"
[ $expect -eq 1 ] && label="$label (expecting a violation)"
echo "== model $label"

"$spin" "$@" -a "$model.pml" >spin.out 2>&1 || { cat spin.out; echo "FAIL: spin -a"; exit 1; }
cflags="${MODEL_OPT:--O1} -w -DMEMLIM=$memlim -DNOFAIR"
runflags="-m$depth -n"
if [ $liveness -eq 1 ]; then
    cflags="${MODEL_OPT:--O1} -w -DMEMLIM=$memlim"
    runflags="$runflags -a -f"
else
    cflags="$cflags -DSAFETY -DNOCLAIM"
fi
[ $collapse -eq 1 ] && cflags="$cflags -DCOLLAPSE"
# shellcheck disable=SC2086
"$CC" $cflags -o pan pan.c >cc.out 2>&1 || { cat cc.out; echo "FAIL: compiling pan"; exit 1; }

start=$(date +%s)
status=0
# shellcheck disable=SC2086
./pan $runflags >pan.out 2>&1 || status=$?
end=$(date +%s)

grep -E "^pan:|^State-vector|states, stored|states, matched|transitions \(|total actual memory|elapsed time" pan.out || true
echo "wall time: $((end - start)) s"

errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.out | tail -1)
if [ -z "$errors" ]; then
    cat pan.out
    echo "FAIL: pan did not finish (exit status $status)"
    exit 1
fi
incomplete=0
if grep -qE "max search depth too small|out of memory|reached -DMEMLIM|memory limit|Search not completed" pan.out; then
    incomplete=1
fi

show_trail() {
    [ -f "$model.pml.trail" ] || return 0
    echo "-- counterexample (events; replay: spin $* -t -p $model.pml)"
    "$spin" "$@" -t "$model.pml" 2>&1 | grep -vE "^[[:space:]]*[0-9]+:[[:space:]]+proc|^[[:space:]]*$" | head -80 || true
}

if [ $expect -eq 1 ]; then
    if [ "$errors" -gt 0 ] && grep -qE "assertion violated|acceptance cycle" pan.out; then
        show_trail "$@"
        echo "OK: the violation was found"
        exit 0
    fi
    echo "FAIL: no violation found (the model no longer notices this variant, or no longer reaches this window)"
    exit 1
fi
if [ "$errors" -ne 0 ]; then
    show_trail "$@"
    echo "FAIL: $errors error(s)"
    exit 1
fi
if [ $incomplete -eq 1 ]; then
    echo "FAIL: the search is incomplete (raise MODEL_DEPTH or MODEL_MEMLIM)"
    exit 1
fi
echo "OK: exhaustive, no errors"
