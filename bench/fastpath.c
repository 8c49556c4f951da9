/*
 * fastpath.c: instructions per malloc+free on the fast path, for callgrind.
 *
 *   valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=OUT \
 *       [env LD_PRELOAD=liballoc.so] bitslab-fastpath [pair|batch] [ITERATIONS]
 *
 * After a warm-up, one loop of ITERATIONS (default 1,000,000) steady-state
 * small operations runs between CALLGRIND_TOGGLE_COLLECT requests, so with
 * --collect-atstart=no callgrind's total Ir is the loop and nothing else:
 *
 *   pair   malloc(32) then free it, ITERATIONS times (LIFO: the same block every time)
 *   batch  64 x malloc(32) then the 64 frees in allocation order, ITERATIONS / 64 times
 *
 * Ir / ITERATIONS = instructions per malloc+free pair, loop overhead included
 * (a handful of instructions, the same for every allocator). Outside valgrind
 * the client requests do nothing and the program just prints its RESULT line
 * (the CI smoke test runs it that way).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#if defined(HAVE_CALLGRIND_H)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#define RUNNING_ON_VALGRIND 0
#endif

#define BATCH 64
#define SIZE 32

static __attribute__((noinline)) void loop_pair(long n)
{
    for (long i = 0; i < n; i++) {
        void *p = malloc(SIZE);
        escape(p);
        free(p);
    }
}

static __attribute__((noinline)) void loop_batch(long n)
{
    void *b[BATCH];
    for (long i = 0; i < n; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            b[j] = malloc(SIZE);
            escape(b[j]);
        }
        for (int j = 0; j < BATCH; j++) free(b[j]);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "pair";
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    const char *expect = argc > 3 ? argv[3] : NULL;
    void (*loop)(long);
    if (!strcmp(mode, "pair")) loop = loop_pair;
    else if (!strcmp(mode, "batch")) {
        loop = loop_batch;
        n -= n % BATCH;
    } else {
        fprintf(stderr, "usage: bitslab-fastpath [pair|batch] [ITERATIONS] [EXPECTED_LIB]\n");
        return 2;
    }
    if (n <= 0) n = BATCH;
    check_malloc_lib(expect);

    loop(n / 10 + BATCH); /* warm-up: thread heap, slabs, caches all set up */
    double t0 = now_s();
    CALLGRIND_TOGGLE_COLLECT;
    loop(n);
    CALLGRIND_TOGGLE_COLLECT;
    double t1 = now_s();

    printf("RESULT workload=fastpath-%s iterations=%ld seconds=%.6f ns_per_pair=%.2f on_valgrind=%d malloc_lib=%s\n",
           mode, n, t1 - t0, (t1 - t0) * 1e9 / (double)n, (int)RUNNING_ON_VALGRIND, malloc_lib());
    return 0;
}
