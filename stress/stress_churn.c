/*
 * stress_churn: thread churn with frees into dead threads' memory (issue #3
 * item 1c; design brief 3.1: "thread churn must not grow memory").
 *
 * Waves of SHORT short-lived threads. Each allocates a mix of blocks (small,
 * some multi-slab, rarely huge), frees part of them itself, and returns the
 * rest as two batches when it exits. The main thread joins it (so its heap has
 * been abandoned) and then
 *   - hands batch A to the long-lived reaper thread, which verifies and frees
 *     those blocks: remote frees into an abandoned heap, or into a heap that
 *     the next wave is adopting at that very moment;
 *   - hands batch B to a thread of the next wave, which frees it: if that
 *     thread adopted the dead thread's heap, these are local frees of blocks
 *     it never allocated, otherwise remote frees.
 * After every wave the process must not hold more heaps than threads ever
 * alive at once, nor more superpages than a bound that does not depend on the
 * number of waves (a soak run with BITSLAB_STRESS_SECONDS turns any growth
 * per wave into a failure).
 *
 * Usage: stress_churn [SHORT_THREADS [WAVES [BLOCKS_PER_THREAD]]]
 */
#include <stdlib.h>

#include "stress_util.h"

typedef struct item {
    void *p;
    size_t size;
    uint64_t tag;
} item_t;

typedef struct batch {
    size_t n;
    item_t item[];
} batch_t;

/* Main -> reaper: a single-producer single-consumer ring of batches. */
#define RING_CAP 1024 /* >= 2 * SHORT */
static _Atomic(batch_t *) ring[RING_CAP];
static _Atomic size_t ring_head, ring_tail;
static atomic_bool reaper_stop;
static atomic_size_t reaper_freed;

static unsigned SHORT = 4;
static size_t BLOCKS = 400;

static size_t pick_size(stress_rng_t *r)
{
    unsigned x = (unsigned)stress_below(r, 1000);
    if (x < 700) return stress_size_between(r, 1, 1024);
    if (x < 960) return stress_size_between(r, 1025, 32768);
    if (x < 998) return stress_size_between(r, 32769, 1 << 20);
    return stress_size_between(r, (1 << 20) + 1, 3 << 20);
}

static void free_batch(batch_t *b, stress_rng_t *r, const char *who)
{
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        item_t *it = &b->item[i];
        stress_verify(it->p, 0, it->size, stress_seed(it->p, it->tag), who);
        stress_free(it->p, it->size, r);
    }
    bitslab_free(b); /* the batch itself was allocated by the dead thread too */
}

static void *reaper(void *arg)
{
    (void)arg;
    stress_rng_t r = stress_rng(0x5ea9e5);
    /* The reaper allocates too, so it has a heap of its own and a mix of local
     * and remote frees. */
    void *own[64] = {0};
    size_t freed = 0;
    for (;;) {
        /* Relaxed: only the reaper writes head. */
        size_t h = atomic_load_explicit(&ring_head, memory_order_relaxed);
        /* Acquire: pairs with main's release of tail (the batch and its blocks). */
        if (h == atomic_load_explicit(&ring_tail, memory_order_acquire)) {
            /* Stop only if still empty after seeing the flag: main set it
             * after its last push, so this second look sees that push. */
            if (atomic_load(&reaper_stop) && h == atomic_load_explicit(&ring_tail, memory_order_acquire)) break;
            stress_relax();
            continue;
        }
        batch_t *b = atomic_load_explicit(&ring[h % RING_CAP], memory_order_relaxed);
        /* Release: main may reuse the slot. */
        atomic_store_explicit(&ring_head, h + 1, memory_order_release);
        freed += b->n;
        free_batch(b, &r, "reaper");
        unsigned k = (unsigned)stress_below(&r, 64);
        if (own[k]) bitslab_free(own[k]);
        own[k] = bitslab_malloc(stress_size_between(&r, 16, 4096));
        STRESS_CHECK(own[k], "reaper malloc failed");
    }
    for (unsigned k = 0; k < 64; k++) bitslab_free(own[k]);
    atomic_store(&reaper_freed, freed);
    stress_debug_check();
    return NULL;
}

static void to_reaper(batch_t *b)
{
    size_t t = atomic_load_explicit(&ring_tail, memory_order_relaxed); /* relaxed: main writes tail */
    /* Acquire: the reaper is done with the slot we overwrite. At most two
     * waves' batches wait for the reaper, so the live set is bounded. */
    while (t - atomic_load_explicit(&ring_head, memory_order_acquire) >= 2 * (size_t)SHORT) stress_relax();
    atomic_store_explicit(&ring[t % RING_CAP], b, memory_order_relaxed);
    /* Release: publishes the slot, the batch and its blocks' contents. */
    atomic_store_explicit(&ring_tail, t + 1, memory_order_release);
}

typedef struct short_ctx {
    uint64_t id;
    batch_t *inherit;   /* a batch of a thread of the previous wave, to free */
    batch_t *out_a, *out_b;
} short_ctx_t;

static batch_t *new_batch(size_t cap)
{
    batch_t *b = bitslab_malloc(sizeof(batch_t) + cap * sizeof(item_t));
    STRESS_CHECK(b, "batch malloc failed");
    b->n = 0;
    return b;
}

static void *short_main(void *arg)
{
    short_ctx_t *c = arg;
    stress_rng_t r = stress_rng(c->id);
    free_batch(c->inherit, &r, "next-wave thread"); /* first: possibly local frees into an adopted heap */
    c->inherit = NULL;
    batch_t *a = new_batch(BLOCKS), *b = new_batch(BLOCKS);
    item_t *mine = malloc(BLOCKS * sizeof *mine);
    STRESS_CHECK(mine, "out of memory");
    size_t nmine = 0;
    for (size_t i = 0; i < BLOCKS; i++) {
        item_t it = {NULL, pick_size(&r), c->id << 32 | i};
        size_t align;
        enum stress_api api = stress_pick_api(&r, it.size, &align);
        it.p = stress_alloc(api, it.size, align);
        stress_fill(it.p, 0, it.size, stress_seed(it.p, it.tag));
        unsigned where = (unsigned)stress_below(&r, 4);
        if (where == 0) a->item[a->n++] = it;
        else if (where == 1) b->item[b->n++] = it;
        else mine[nmine++] = it;
        /* Free some of our own blocks as we go (local frees). */
        if (nmine && stress_chance(&r, 40)) {
            size_t k = stress_below(&r, nmine);
            stress_verify(mine[k].p, 0, mine[k].size, stress_seed(mine[k].p, mine[k].tag), "short thread");
            stress_free(mine[k].p, mine[k].size, &r);
            mine[k] = mine[--nmine];
        }
    }
    for (size_t k = 0; k < nmine; k++) {
        stress_verify(mine[k].p, 0, mine[k].size, stress_seed(mine[k].p, mine[k].tag), "short thread");
        stress_free(mine[k].p, mine[k].size, &r);
    }
    free(mine);
    c->out_a = a;
    c->out_b = b;
    stress_debug_check();
    return NULL; /* exit: the heap is collected and abandoned, a and b stay live in it */
}

int main(int argc, char **argv)
{
    stress_init("churn");
    if (argc > 1) SHORT = (unsigned)atoi(argv[1]);
    size_t waves = stress_scaled(argc > 2 ? (size_t)atol(argv[2]) : 150);
    if (argc > 3) BLOCKS = (size_t)atol(argv[3]);
    if (SHORT < 1) SHORT = 1;
    if (SHORT > RING_CAP / 2) SHORT = RING_CAP / 2;
    stress_log("%u short threads per wave, %zu waves, %zu blocks per thread", SHORT, waves, BLOCKS);

    pthread_t reaper_t = stress_spawn(reaper, NULL);
    short_ctx_t *c = calloc(SHORT, sizeof *c);
    pthread_t *t = calloc(SHORT, sizeof *t);
    batch_t **carry = calloc(SHORT, sizeof *carry);
    STRESS_CHECK(c && t && carry, "out of memory");

    /* Bounds that do not depend on the number of waves: the reaper, one heap
     * per short thread (they are adopted, not created anew), and superpages
     * for what a wave keeps live (two batches per thread) plus what each heap
     * may retain. */
    const size_t max_heaps = SHORT + 2;
    const size_t max_superpages = 32 + 24 * (size_t)SHORT;
    size_t wave = 0, threads = 0, peak_sp = 0;
    for (; stress_more_rounds(wave, waves); wave++) {
        for (unsigned i = 0; i < SHORT; i++) {
            c[i] = (short_ctx_t){.id = wave * SHORT + i + 1, .inherit = carry[i]};
            carry[i] = NULL;
            t[i] = stress_spawn(short_main, &c[i]);
        }
        for (unsigned i = 0; i < SHORT; i++) {
            stress_join(t[i]); /* the thread is gone: its blocks live on in an abandoned heap */
            threads++;
            to_reaper(c[i].out_a);
            carry[(i + 1) % SHORT] = c[i].out_b; /* to a thread of the next wave */
        }
        bitslab_stats_t st = {.struct_size = sizeof st};
        bitslab_stats(&st);
        if (st.superpages_total > peak_sp) peak_sp = st.superpages_total;
        STRESS_CHECK(st.heaps_total <= max_heaps, "wave %zu: %zu heaps for at most %zu threads alive at once", wave,
                     st.heaps_total, max_heaps);
        STRESS_CHECK(st.superpages_total <= max_superpages,
                     "wave %zu: memory grows with thread churn: %zu superpages mapped, bound %zu", wave,
                     st.superpages_total, max_superpages);
        if (stress_cfg.verbose || wave % 50 == 0) {
            char label[64];
            snprintf(label, sizeof label, "wave %zu", wave);
            stress_print_stats(label);
        }
    }
    /* The last wave's B batches: freed by the main thread. */
    stress_rng_t r = stress_rng(0x3a1);
    for (unsigned i = 0; i < SHORT; i++) free_batch(carry[i], &r, "main");
    atomic_store(&reaper_stop, true);
    stress_join(reaper_t);
    stress_log("%zu waves, %zu short threads, reaper freed %zu blocks, peak %zu superpages", wave, threads,
               atomic_load(&reaper_freed), peak_sp);
    free(c);
    free(t);
    free(carry);

    static const char *const targets[] = {"free_into_abandoned_heap", "adopt_with_pending_remote",
                                          "heap_pool_cas_retry", "release_deferred_inflight",
                                          "release_deferred_queued", "orphan_cas_retry", NULL};
    stress_bounds_t b = {.max_superpages = max_superpages, .max_heaps = max_heaps + 1, .targets = targets};
    stress_finish(&b);
    return 0;
}
