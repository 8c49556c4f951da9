/*
 * stress_ring: producer/consumer rings between thread pairs (issue #3 item 1a).
 *
 * PAIRS pairs of threads; each pair is joined by two single-producer
 * single-consumer rings, one per direction, so each thread both allocates
 * (pushing into its out-ring) and frees what its partner allocated (popping
 * from its in-ring): every free in this test is a remote free, and every
 * owner keeps allocating while the frees arrive, which exercises the merge
 * of remote bits into slabs the owner is using (remote_free_during_drain)
 * and the notification queue under load.
 *
 * Each item carries its pointer, size and a tag; the producer writes a
 * pattern keyed to (pointer, tag), the consumer verifies it before freeing.
 * The main thread reads bitslab_stats() while the pairs run, so the
 * statistics walker races with allocation, frees and superpage release.
 *
 * Usage: stress_ring [PAIRS [ITEMS_PER_THREAD]]
 */
#include <stdlib.h>

#include "stress_util.h"

#define RING_CAP 512 /* power of two */

typedef struct item {
    void *p;
    size_t size;
    uint64_t tag;
} item_t;

typedef struct ring {
    alignas(64) _Atomic size_t head; /* consumer position */
    alignas(64) _Atomic size_t tail; /* producer position */
    alignas(64) item_t slot[RING_CAP];
} ring_t;

static bool ring_push(ring_t *r, const item_t *it)
{
    /* Relaxed: only this thread (the producer) writes tail. */
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* Acquire: the consumer finished reading the slot before it moved head. */
    if (t - atomic_load_explicit(&r->head, memory_order_acquire) == RING_CAP) return false;
    r->slot[t & (RING_CAP - 1)] = *it;
    /* Release: the slot and the block's contents are visible to the consumer. */
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return true;
}

static bool ring_pop(ring_t *r, item_t *it)
{
    /* Relaxed: only this thread (the consumer) writes head. */
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    /* Acquire: pairs with the producer's release of tail. */
    if (h == atomic_load_explicit(&r->tail, memory_order_acquire)) return false;
    *it = r->slot[h & (RING_CAP - 1)];
    /* Release: pairs with the producer's acquire of head. */
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return true;
}

typedef struct worker {
    unsigned id;
    ring_t *out, *in;
    size_t items; /* to produce, and to consume */
    size_t bytes; /* produced, for the log */
} worker_t;

static atomic_size_t workers_done;

/* Mostly small blocks, all size classes, a few wide ones. */
static size_t pick_size(stress_rng_t *r)
{
    unsigned x = (unsigned)stress_below(r, 1000);
    if (x < 600) return 1 + stress_below(r, 256);
    if (x < 850) return stress_size_between(r, 257, 4096);
    if (x < 990) return stress_size_between(r, 4097, 32768);
    return stress_size_between(r, 32769, 256 << 10);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    stress_rng_t r = stress_rng(w->id);
    size_t produced = 0, consumed = 0, idle = 0;
    uint64_t tag = (uint64_t)w->id << 48;
    while (produced < w->items || consumed < w->items) {
        bool progress = false;
        /* Produce a burst (or until the ring is full). */
        for (unsigned burst = 1 + (unsigned)stress_below(&r, 64); burst && produced < w->items; burst--) {
            item_t it = {NULL, pick_size(&r), ++tag};
            size_t align;
            enum stress_api api = stress_pick_api(&r, it.size, &align);
            if (align > 4096) align = 4096; /* keep the rings about small blocks */
            it.p = stress_alloc(api, it.size, align);
            stress_fill(it.p, 0, it.size, stress_seed(it.p, it.tag));
            if (!ring_push(w->out, &it)) {
                stress_live_del(it.p); /* full: free locally and try later */
                bitslab_free(it.p);
                break;
            }
            produced++;
            w->bytes += it.size;
            progress = true;
        }
        /* Consume everything available. */
        item_t it;
        while (ring_pop(w->in, &it)) {
            stress_verify(it.p, 0, it.size, stress_seed(it.p, it.tag), "ring consumer");
            stress_free(it.p, it.size, &r);
            consumed++;
            progress = true;
        }
        if (!progress && ++idle % 4 == 0) stress_relax();
    }
    stress_debug_check(); /* this thread's heap, before it is abandoned */
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("ring");
    unsigned pairs = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    size_t items = stress_scaled(argc > 2 ? (size_t)atol(argv[2]) : 60000);
    if (pairs < 1) pairs = 1;
    stress_log("%u pairs (%u threads), %zu items per thread", pairs, 2 * pairs, items);

    size_t round = 0;
    while (stress_more_rounds(round, 1)) {
        unsigned n = 2 * pairs;
        ring_t *rings = aligned_alloc(64, n * sizeof(ring_t));
        worker_t *w = calloc(n, sizeof *w);
        pthread_t *t = calloc(n, sizeof *t);
        if (!rings || !w || !t) stress_fail("out of memory");
        for (unsigned i = 0; i < n; i++) {
            atomic_init(&rings[i].head, 0);
            atomic_init(&rings[i].tail, 0);
        }
        atomic_store(&workers_done, 0);
        for (unsigned i = 0; i < n; i++) {
            unsigned partner = i ^ 1;
            w[i] = (worker_t){.id = (unsigned)(round * n + i), .out = &rings[i], .in = &rings[partner], .items = items};
        }
        for (unsigned i = 0; i < n; i++) t[i] = stress_spawn(worker_main, &w[i]);

        /* Watch the statistics while the pairs run: the walker must be race-free. */
        size_t samples = 0, peak = 0;
        while (atomic_load(&workers_done) < n) {
            bitslab_stats_t st = {.struct_size = sizeof st};
            bitslab_stats(&st);
            STRESS_CHECK(st.committed <= st.mapped, "committed %zu > mapped %zu", st.committed, st.mapped);
            if (st.committed > peak) peak = st.committed;
            samples++;
            stress_relax();
        }
        size_t bytes = 0;
        for (unsigned i = 0; i < n; i++) {
            stress_join(t[i]);
            bytes += w[i].bytes;
        }
        stress_log("round %zu: %zu items, %.1f MiB through the rings, peak committed %.1f MiB (%zu stats samples)",
                   round, items * n, bytes / 1048576.0, peak / 1048576.0, samples);
        free(rings);
        free(w);
        free(t);
        round++;
    }
    static const char *const targets[] = {"remote_free_during_drain", "queue_producer_stalled",
                                          "release_deferred_inflight", "release_deferred_queued",
                                          "orphan_cas_retry", NULL};
    /* 8 threads with a few MiB live each: far below this unless memory leaks per round. */
    stress_bounds_t b = {.max_superpages = 16 + 8 * (size_t)pairs, .targets = targets};
    stress_finish(&b);
    return 0;
}
