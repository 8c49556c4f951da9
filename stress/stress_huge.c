/*
 * stress_huge: the huge cache (src/huge.c) under contention. THREADS threads
 * malloc and calloc huge blocks (1..8 MiB, log-uniform), fill them, and free
 * them, locally or after handing them to another thread through shared slots,
 * so that puts, takes (dirty and clean mappings, exact fits, bigger fits and
 * near misses grown by mremap) and the cache's purges race. Thread 0 also
 * cycles the purge delay through 0, 1 ms, never and 250 ms (so purges by age
 * claim mappings while others take and put them) and calls
 * bitslab_collect() now and then (flushes racing with everything).
 *
 * Some of the steps (40 % of those that find a block) realloc it to 1..24 MiB (growth in place,
 * growth that moves the pages to a new mapping, shrinks): the contents must
 * follow, and under TSan the ranges a move leaves must not carry old
 * accesses into the next mapping there (os_remap copies under TSan).
 *
 * Every calloc must read as zero (a dirty cached mapping handed to calloc
 * without being decommitted or zeroed would show the old pattern, which was
 * written where the zero check looks), and every block keeps its pattern
 * until it is freed. At the end everything must be unmapped after a collect
 * (stress_finish).
 *
 * Usage: stress_huge [THREADS [STEPS_PER_THREAD]]
 */
#include <stdlib.h>

#include "stress_util.h"
#include "internal.h"

#define SLOTS 2
#define XSLOTS 4

static _Atomic(void *) xslot[XSLOTS];
static _Atomic uint64_t next_tag = 1;
static stress_barrier_t start_line;

typedef struct worker {
    unsigned id;
    size_t steps;
    size_t callocs, mallocs, handed, moved;
} worker_t;

static void *new_block(stress_rng_t *r, worker_t *w)
{
    size_t size = stress_size_between(r, (1 << 20) + 1, 8 << 20);
    bool zero = stress_chance(r, 50);
    void *p = stress_alloc(zero ? API_CALLOC : API_MALLOC, size, 0); /* checks calloc's zeroes */
    if (zero) w->callocs++;
    else w->mallocs++;
    /* Relaxed: unique tags only. */
    stress_block_fill(p, size, atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed));
    return p;
}

/* Realloc a huge block to 1..24 MiB: growth in place, growth that moves the
 * pages to a new mapping (huge_move), a shrink; the moved-away range is
 * mapped again by other threads' blocks. The contents must follow; then the
 * block gets a new pattern at its new address. */
static void *resize_block(void *p, stress_rng_t *r, worker_t *w)
{
    size_t old = stress_block_verify(p, "before realloc");
    uint64_t seed = stress_block_seed(p);
    size_t size = stress_size_between(r, (1 << 20) + 1, 24 << 20);
    stress_live_del(p);
    void *q = bitslab_realloc(p, size);
    STRESS_CHECK(q, "realloc(%p, %zu) failed", p, size);
    stress_live_add(q);
    stress_verify(q, 16, old < size ? old : size, seed, "realloc kept the contents");
    if (q != p) w->moved++;
    /* Relaxed: unique tags only. */
    stress_block_fill(q, size, atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed));
    return q;
}

static void drop_block(void *p, stress_rng_t *r)
{
    size_t size = stress_block_verify(p, "before free");
    stress_free(p, size, r);
}

static void *worker_main(void *arg)
{
    static const int32_t delays[] = {0, 1, -1, 250};
    worker_t *w = arg;
    stress_rng_t r = stress_rng(w->id);
    void *slot[SLOTS] = {0};
    stress_barrier_wait(&start_line);
    for (size_t step = 0; step < w->steps; step++) {
        if (w->id == 0 && step % 16 == 0)
            /* Relaxed: a setting, as options.c stores it; any value is valid. */
            atomic_store_explicit(&bitslab_purge_delay_ms, delays[step / 16 % 4], memory_order_relaxed);
        if (w->id == 0 && step % 64 == 63) bitslab_collect();
        unsigned k = (unsigned)stress_below(&r, SLOTS);
        if (!slot[k]) {
            slot[k] = new_block(&r, w);
        } else if (stress_chance(&r, 40)) {
            slot[k] = resize_block(slot[k], &r, w);
        } else if (stress_chance(&r, 60)) {
            drop_block(slot[k], &r);
            slot[k] = NULL;
        } else {
            unsigned j = (unsigned)stress_below(&r, XSLOTS);
            slot[k] = atomic_exchange(&xslot[j], slot[k]); /* seq_cst: hands over the contents */
            w->handed++;
        }
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (slot[k]) drop_block(slot[k], &r);
    stress_debug_check();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("huge");
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    size_t steps = stress_scaled(argc > 2 ? (size_t)atol(argv[2]) : 600);
    if (threads < 1) threads = 1;
    stress_log("%u threads, %zu steps each, %u local + %u shared slots", threads, steps, SLOTS, XSLOTS);
    worker_t *w = calloc(threads, sizeof *w);
    pthread_t *t = calloc(threads, sizeof *t);
    STRESS_CHECK(w && t, "out of memory");
    size_t callocs = 0, mallocs = 0, handed = 0, moved = 0;
    for (size_t round = 0; stress_more_rounds(round, 1); round++) {
        stress_barrier_init(&start_line, threads);
        for (unsigned i = 0; i < threads; i++) {
            w[i] = (worker_t){.id = (unsigned)(round * threads + i), .steps = steps};
            t[i] = stress_spawn(worker_main, &w[i]);
        }
        for (unsigned i = 0; i < threads; i++) {
            stress_join(t[i]);
            callocs += w[i].callocs;
            mallocs += w[i].mallocs;
            handed += w[i].handed;
            moved += w[i].moved;
        }
        stress_barrier_destroy(&start_line);
        stress_print_stats("round");
    }
    stress_rng_t r = stress_rng(77);
    for (unsigned j = 0; j < XSLOTS; j++) {
        void *p = atomic_exchange(&xslot[j], NULL);
        if (p) drop_block(p, &r);
    }
    stress_log("%zu huge mallocs, %zu huge callocs, %zu handed to another thread, %zu moved by realloc", mallocs, callocs,
               handed, moved);
    /* The window: a range a realloc moved away, mapped again by another
     * thread (under TSan a false report if the move was not seen). */
    STRESS_CHECK(moved > 0, "no realloc moved a block: the test lost its point");
    free(w);
    free(t);
    stress_bounds_t b = {.max_superpages = 0};
    stress_finish(&b);
    return 0;
}
