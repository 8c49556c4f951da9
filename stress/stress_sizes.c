/*
 * stress_sizes: mixed sizes across every path (issue #3 item 1d): small
 * classes (16 B .. 32 KiB), multi-slab "wide" blocks (32 KiB .. 1 MiB) and
 * huge blocks (> 1 MiB, their own mapping), through every allocation entry
 * point (malloc, calloc, aligned_alloc, posix_memalign, memalign with
 * alignments up to 4 MiB, realloc(NULL)) and every free entry point.
 *
 * THREADS threads each own SLOTS local slots and share XSLOTS transfer slots
 * (atomic exchange of self-describing blocks). Each step picks a local slot:
 * an empty one gets a new block; a full one is verified and then freed (60 %)
 * or realloc'd to a size of any category (40 %, the preserved prefix is
 * verified: small <-> wide <-> huge moves, mremap growth of huge blocks). Now
 * and then a local block is exchanged with a transfer slot, so every category
 * is also freed and realloc'd by threads that did not allocate it (remote
 * frees of wide blocks, huge frees from any thread).
 *
 * Usage: stress_sizes [THREADS [STEPS_PER_THREAD]]
 */
#include <stdlib.h>

#include "stress_util.h"

#define SLOTS 48
#define XSLOTS 64

static _Atomic(void *) xslot[XSLOTS];
static _Atomic uint64_t next_tag = 1;
static stress_barrier_t start_line;

typedef struct worker {
    unsigned id;
    size_t steps;
    size_t counts[4]; /* small, wide, huge, realloc */
} worker_t;

static size_t pick_size(stress_rng_t *r, unsigned *cat)
{
    unsigned x = (unsigned)stress_below(r, 100);
    if (x < 62) return *cat = 0, stress_size_between(r, STRESS_BLOCK_MIN, 32768);
    if (x < 94) return *cat = 1, stress_size_between(r, 32769, 1 << 20);
    return *cat = 2, stress_size_between(r, (1 << 20) + 1, 4 << 20);
}

static void *new_block(stress_rng_t *r, worker_t *w)
{
    unsigned cat;
    size_t size = pick_size(r, &cat), align;
    w->counts[cat]++;
    enum stress_api api = stress_pick_api(r, size, &align);
    void *p = stress_alloc(api, size, align);
    /* Relaxed: unique tags only. */
    stress_block_fill(p, size, atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed));
    return p;
}

/* Realloc a self-describing block to a new size: the old pattern must survive
 * in the prefix; then the block is re-described at its new address. */
static void *resize_block(void *p, stress_rng_t *r, worker_t *w)
{
    size_t old = stress_block_verify(p, "before realloc");
    uint64_t seed = stress_block_seed(p); /* the payload pattern is keyed to the old address */
    unsigned cat;
    size_t size = pick_size(r, &cat);
    w->counts[3]++;
    stress_live_del(p);
    void *q;
    if (stress_chance(r, 10)) {
        size = (size / 16 + 1) * 16;
        q = bitslab_reallocarray(p, size / 16, 16);
    } else
        q = bitslab_realloc(p, size);
    STRESS_CHECK(q, "realloc of %p from %zu to %zu failed", p, old, size);
    stress_live_add(q);
    STRESS_CHECK(bitslab_usable_size(q) >= size, "realloc'd block %p: usable %zu < %zu", q, bitslab_usable_size(q), size);
    size_t keep = old < size ? old : size;
    stress_verify(q, 16, keep, seed, "realloc preserved prefix");
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
    worker_t *w = arg;
    stress_rng_t r = stress_rng(w->id);
    void *slot[SLOTS] = {0};
    stress_barrier_wait(&start_line);
    for (size_t step = 0; step < w->steps; step++) {
        unsigned k = (unsigned)stress_below(&r, SLOTS);
        if (!slot[k]) slot[k] = new_block(&r, w);
        else if (stress_chance(&r, 60)) {
            drop_block(slot[k], &r);
            slot[k] = NULL;
        } else
            slot[k] = resize_block(slot[k], &r, w);
        if (stress_chance(&r, 15)) {
            unsigned j = (unsigned)stress_below(&r, XSLOTS);
            k = (unsigned)stress_below(&r, SLOTS);
            slot[k] = atomic_exchange(&xslot[j], slot[k]); /* seq_cst: hands over the contents */
        }
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (slot[k]) drop_block(slot[k], &r);
    stress_debug_check();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("sizes");
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    size_t steps = stress_scaled(argc > 2 ? (size_t)atol(argv[2]) : 5000);
    if (threads < 1) threads = 1;
    stress_log("%u threads, %zu steps each, %u local + %u shared slots", threads, steps, SLOTS, XSLOTS);
    worker_t *w = calloc(threads, sizeof *w);
    pthread_t *t = calloc(threads, sizeof *t);
    STRESS_CHECK(w && t, "out of memory");
    size_t totals[4] = {0};
    for (size_t round = 0; stress_more_rounds(round, 1); round++) {
        stress_barrier_init(&start_line, threads);
        for (unsigned i = 0; i < threads; i++) {
            w[i] = (worker_t){.id = (unsigned)(round * threads + i), .steps = steps};
            t[i] = stress_spawn(worker_main, &w[i]);
        }
        for (unsigned i = 0; i < threads; i++) {
            stress_join(t[i]);
            for (unsigned c = 0; c < 4; c++) totals[c] += w[i].counts[c];
        }
        stress_barrier_destroy(&start_line);
        stress_print_stats("round");
    }
    stress_rng_t r = stress_rng(77);
    for (unsigned j = 0; j < XSLOTS; j++) {
        void *p = atomic_exchange(&xslot[j], NULL);
        if (p) drop_block(p, &r);
    }
    stress_log("allocated %zu small, %zu wide, %zu huge blocks; %zu reallocs", totals[0], totals[1], totals[2],
               totals[3]);
    free(w);
    free(t);
    static const char *const targets[] = {"remote_free_during_drain", "release_deferred_inflight",
                                          "release_deferred_queued", "orphan_cas_retry", NULL};
    /* Live at most (threads * SLOTS + XSLOTS) blocks, 4 % of them huge (own
     * mappings) and 32 % wide (<= 1 MiB, in superpages). */
    stress_bounds_t b = {.max_superpages = 64 + 16 * (size_t)threads, .targets = targets};
    stress_finish(&b);
    return 0;
}
