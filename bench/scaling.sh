#!/bin/bash
# bench/scaling.sh: the threaded workloads at several thread counts, every
# allocator in turn (interleaved, so that a disturbance hits all of them),
# for a machine with more cores than the 2 of the usual one.
#
#   bench/scaling.sh OUT_FILE [THREADS...]           (default threads: 1 2 4 8 16 32)
#
# Environment:
#   BENCH    the bitslab-bench binary (default build/release/bench/bitslab-bench)
#   BITSLAB  libbitslab.so to preload (default build/release/libbitslab.so)
#   PEERS    "name=path ..." of the peers' shared libraries (default: Debian's
#            mimalloc, jemalloc and tcmalloc); glibc always runs, without preload
#   LOADER   a dynamic loader to start the program with (its --library-path is
#            its own directory): lets a bundle of libraries copied to a bare
#            machine run without that machine's libc
#   REPS     repetitions (default 3), SCALE (default 1), WORKLOADS (default:
#            every threaded workload but memory, which waits seconds by design)
#
# Appends one RESULT line per run (bench_alloc.c's format, plus alloc=NAME) to
# OUT_FILE; scripts/scaling_report.py turns the file into a table of medians.
set -u
out=$1
shift
threads=${*:-1 2 4 8 16 32}
BENCH=${BENCH:-build/release/bench/bitslab-bench}
BITSLAB=${BITSLAB:-build/release/libbitslab.so}
LIBDIR=/usr/lib/x86_64-linux-gnu
PEERS=${PEERS:-mimalloc=$LIBDIR/libmimalloc.so.2 jemalloc=$LIBDIR/libjemalloc.so.2 tcmalloc=$LIBDIR/libtcmalloc_minimal.so.4}
REPS=${REPS:-3}
SCALE=${SCALE:-1}
WORKLOADS=${WORKLOADS:-larson larson-sized prodcons prodcons-many parallel churn falseshare}

run_one() { # name lib workload threads
    local name=$1 lib=$2 w=$3 t=$4 line
    local cmd=()
    if [ -n "${LOADER:-}" ]; then
        cmd=("$LOADER" --library-path "$(dirname "$LOADER")")
        [ -n "$lib" ] && cmd+=(--preload "$lib")
        cmd+=("$BENCH")
    else
        cmd=(env ${lib:+LD_PRELOAD=$lib} "$BENCH")
    fi
    line=$("${cmd[@]}" "$w" -t "$t" -s "$SCALE" --alarm 60 2>/dev/null | grep '^RESULT')
    if [ -n "$line" ]; then
        echo "$line alloc=$name" >>"$out"
    else
        echo "FAILED workload=$w threads=$t alloc=$name" >>"$out"
    fi
}

allocs=("glibc=" "bitslab=$BITSLAB" $PEERS)
for w in $WORKLOADS; do
    for t in $threads; do
        for r in $(seq "$REPS"); do
            for a in "${allocs[@]}"; do
                run_one "${a%%=*}" "${a#*=}" "$w" "$t"
            done
        done
    done
done
