/*
 * stress_transfer: all threads free random blocks of all threads through a
 * shared transfer array (issue #3 items 1b and 1g). A port of mimalloc's
 * test/test-stress.c to the bitslab API, with its checks made stricter.
 *
 * Each iteration creates THREADS threads, which start together on a barrier
 * (so their first allocations, and the adoption of the heaps the previous
 * iteration abandoned, race each other) and run a random mix:
 *   - allocate (calloc: the memory must read zero; then a self-describing
 *     pattern is written) into a local array, sometimes into a "retained"
 *     array kept until the thread ends;
 *   - free a random earlier block (verifying its pattern);
 *   - exchange a local block with a random slot of the shared 1000-slot
 *     transfer array (atomic_exchange), so blocks of any thread are freed by
 *     any other, and blocks outlive their allocating thread (the threads are
 *     destroyed at the end of each iteration: the next iteration's threads,
 *     or the main thread, free them into abandoned or re-adopted heaps).
 * Sizes are powers of two words (8 B .. 128 B, retained ones up to 512 B),
 * with 0.9 % of blocks x100, 0.1 % x1000 (multi-slab) and 0.01 % x10000
 * (huge). The local arrays grow with bitslab_realloc (small -> wide -> huge).
 * The main thread frees half of the transfer slots after each iteration, and
 * all of them at the end. Every block is also tracked by the live-block
 * shadow (an address handed out twice aborts).
 *
 * Usage: stress_transfer [THREADS [SCALE [ITER]]]  (mimalloc's argument order;
 * defaults 8 25 20; 16 threads on 2 cores is the "more threads than cores" run)
 */
#include <stdlib.h>

#include "stress_util.h"

#define TRANSFERS 1000

static _Atomic(void *) transfer[TRANSFERS];
static unsigned THREADS = 8;
static unsigned SCALE = 25;
static unsigned ITER = 20;
static stress_barrier_t start_line;
static _Atomic uint64_t next_tag;

static bool chance(unsigned perc, stress_rng_t *r) { return stress_chance(r, perc); }

static void *alloc_items(size_t items, stress_rng_t *r)
{
    if (chance(1, r)) { /* mimalloc's mix */
        if (chance(1, r)) items *= 10000;       /* 0.01 %: up to 5 MiB, huge */
        else if (chance(10, r)) items *= 1000;  /* 0.1 %: up to 500 KiB, multi-slab */
        else items *= 100;                      /* 0.9 %: up to 50 KiB */
    }
    if (items == 0) items = 1;
    size_t size = items * sizeof(uintptr_t);
    if (size < STRESS_BLOCK_MIN) size = STRESS_BLOCK_MIN;
    void *p = stress_alloc(API_CALLOC, size, 0); /* checks the zeroing */
    /* Relaxed: unique tags only. */
    stress_block_fill(p, size, atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed));
    return p;
}

static void free_items(void *p, stress_rng_t *r)
{
    if (!p) return;
    size_t size = stress_block_verify(p, "transfer free");
    stress_free(p, size, r);
}

typedef struct tctx {
    unsigned tid;
    unsigned iter;
} tctx_t;

static void *stress(void *arg)
{
    tctx_t *c = arg;
    stress_rng_t r = stress_rng((uint64_t)c->iter * 1000 + c->tid);
    const size_t max_item_shift = 5;
    const size_t max_item_retained_shift = max_item_shift + 2;
    size_t allocs = 100 * (size_t)SCALE * (c->tid % 8 + 1);
    size_t retain = allocs / 2;
    void **data = NULL;
    size_t data_size = 0, data_top = 0;
    void **retained = bitslab_calloc(retain ? retain : 1, sizeof(void *));
    size_t retain_top = 0;
    STRESS_CHECK(retained, "calloc of the retained array failed");

    stress_barrier_wait(&start_line); /* first allocations race each other */
    while (allocs > 0 || retain > 0) {
        if (retain == 0 || (chance(50, &r) && allocs > 0)) {
            allocs--;
            if (data_top >= data_size) {
                /* Grow by 4096 entries (mimalloc: 100000) so the array crosses
                 * small, wide and huge sizes within a TSan-sized run. */
                data_size += 4096;
                data = bitslab_realloc(data, data_size * sizeof(void *));
                STRESS_CHECK(data, "realloc of the data array to %zu entries failed", data_size);
            }
            data[data_top++] = alloc_items((size_t)1 << (stress_rand(&r) % max_item_shift), &r);
        } else {
            retained[retain_top++] = alloc_items((size_t)1 << (stress_rand(&r) % max_item_retained_shift), &r);
            retain--;
        }
        if (chance(66, &r) && data_top > 0) {
            size_t idx = stress_below(&r, data_top);
            free_items(data[idx], &r);
            data[idx] = NULL;
        }
        if (chance(25, &r) && data_top > 0) {
            size_t data_idx = stress_below(&r, data_top);
            size_t transfer_idx = stress_below(&r, TRANSFERS);
            /* Seq_cst exchange: publishes our block (and its pattern) to the
             * next taker and acquires the previous owner's writes. */
            data[data_idx] = atomic_exchange(&transfer[transfer_idx], data[data_idx]);
        }
    }
    for (size_t i = 0; i < retain_top; i++) free_items(retained[i], &r);
    for (size_t i = 0; i < data_top; i++) free_items(data[i], &r);
    bitslab_free(retained);
    bitslab_free(data);
    stress_debug_check();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init(argc > 1 && atoi(argv[1]) > 8 ? "transfer-many" : "transfer");
    if (argc > 1) THREADS = (unsigned)atoi(argv[1]);
    if (argc > 2) SCALE = (unsigned)atoi(argv[2]);
    if (argc > 3) ITER = (unsigned)atoi(argv[3]);
    if (THREADS < 1) THREADS = 1;
    ITER = (unsigned)stress_scaled(ITER);
    stress_log("%u threads, scale %u, %u iterations", THREADS, SCALE, ITER);

    stress_rng_t r = stress_rng(0xabcdef);
    pthread_t *t = calloc(THREADS, sizeof *t);
    tctx_t *c = calloc(THREADS, sizeof *c);
    STRESS_CHECK(t && c, "out of memory");
    size_t peak_committed = 0;
    for (unsigned n = 0; stress_more_rounds(n, ITER); n++) {
        stress_barrier_init(&start_line, THREADS);
        for (unsigned i = 0; i < THREADS; i++) {
            c[i] = (tctx_t){.tid = i, .iter = n};
            t[i] = stress_spawn(stress, &c[i]);
        }
        for (unsigned i = 0; i < THREADS; i++) stress_join(t[i]);
        stress_barrier_destroy(&start_line);
        /* Free half of the transfer slots (from the main thread: remote frees
         * into heaps whose threads have all exited). */
        for (size_t i = 0; i < TRANSFERS; i++) {
            if (chance(50, &r)) free_items(atomic_exchange(&transfer[i], NULL), &r);
        }
        bitslab_stats_t st = {.struct_size = sizeof st};
        bitslab_stats(&st);
        if (st.committed > peak_committed) peak_committed = st.committed;
        if (stress_cfg.verbose || n % 5 == 0) {
            char label[64];
            snprintf(label, sizeof label, "iteration %u", n);
            stress_print_stats(label);
        }
        /* Heaps are adopted, never multiplied: a thread takes an abandoned heap
         * before it creates one. */
        STRESS_CHECK(st.heaps_total <= THREADS + 1, "heaps_total %zu > %u threads + main", st.heaps_total, THREADS);
    }
    for (size_t i = 0; i < TRANSFERS; i++) free_items(atomic_exchange(&transfer[i], NULL), &r);
    free(t);
    free(c);
    stress_log("peak committed between iterations %.1f MiB", peak_committed / 1048576.0);

    static const char *const targets[] = {"remote_free_during_drain", "queue_producer_stalled",
                                          "release_deferred_inflight", "release_deferred_queued",
                                          "orphan_cas_retry", "heap_pool_cas_retry", "free_into_abandoned_heap",
                                          "adopt_with_pending_remote", NULL};
    stress_bounds_t b = {.max_superpages = 32 + 8 * (size_t)THREADS, .max_heaps = THREADS + 2, .targets = targets};
    stress_finish(&b);
    return 0;
}
