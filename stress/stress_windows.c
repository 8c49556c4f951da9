/*
 * stress_windows: hammers aimed at the race windows the general stress
 * programs reach rarely on two cores (design brief 3: "a stress test that hits
 * its race windows"). Unlike park.c, nothing is forced: threads just collide
 * as often as possible, and a debug build counts how often each window was
 * actually hit. In a debug build the hammers go on (up to 40 rounds more)
 * until each of the windows in `required` below was reached, and the run
 * fails if one never was; park.c covers the other windows deterministically.
 * Every hammer still checks contents and memory like the other programs.
 *
 *   orphanage     threads take a whole superpage (a 15-slab wide block),
 *                 free it and collect, so each round trip pushes a superpage
 *                 to the orphanage and pops one: orphan_cas_retry. The main
 *                 thread walks the statistics meanwhile, over superpages
 *                 that are being released, shrunk (bitslab_collect unmaps
 *                 an orphan's address space) and mapped again: a shrink
 *                 that finds the walker leaves the orphan mapped
 *                 (shrink_walker_seen), and a walker that read an unmapped
 *                 superpage would crash.
 *   heap-pool     two threads start and end short threads as fast as they
 *                 can (every start pops the abandoned-heap pool, every exit
 *                 pushes it) while two others call bitslab_collect in a loop
 *                 (which pops and pushes back every abandoned heap):
 *                 heap_pool_cas_retry.
 *   drain         an owner merges remote frees (bitslab_collect in a loop)
 *                 while freers flip bits in the same bitmap words:
 *                 remote_free_during_drain, queue_producer_stalled.
 *   release       an owner whose superpages are emptied by remote freers
 *                 collects in a loop, so it finds superpages empty while the
 *                 last freer is still between its first and last touch
 *                 (release_deferred_inflight) or still queued
 *                 (release_deferred_queued).
 *
 * Usage: stress_windows [ROUNDS]
 */
#include <stdlib.h>

#include "stress_util.h"

#define THREADS 4
#define WIDE_15 (15u * 65536u) /* two per superpage (31 data slabs) */

static size_t ROUNDS = 1500;
static stress_barrier_t start_line;

/* ---- orphanage ----------------------------------------------------------- */

static atomic_uint orphanage_left;

static void *orphanage_thread(void *arg)
{
    stress_rng_t r = stress_rng((uintptr_t)arg);
    stress_barrier_wait(&start_line);
    for (size_t i = 0; i < ROUNDS; i++) {
        uint64_t tag = stress_rand(&r);
        void *p = stress_alloc(API_MALLOC, WIDE_15, 0);
        stress_fill(p, 0, WIDE_15, stress_seed(p, tag));
        stress_verify(p, 0, WIDE_15, stress_seed(p, tag), "orphanage hammer");
        stress_free(p, WIDE_15, &r);
        bitslab_collect(); /* the empty superpage goes to the orphanage */
    }
    stress_debug_check();
    atomic_fetch_sub(&orphanage_left, 1);
    return NULL;
}

/* ---- heap pool ------------------------------------------------------------ */

static void *tiny_thread(void *arg)
{
    uint64_t tag = (uintptr_t)arg;
    void *p = stress_alloc(API_MALLOC, 48, 0); /* first allocation: pops the pool */
    stress_fill(p, 0, 48, stress_seed(p, tag));
    stress_verify(p, 0, 48, stress_seed(p, tag), "pool hammer");
    stress_free(p, 48, NULL);
    return NULL; /* exit: pushes the heap back */
}

static atomic_uint spawners_left;

static void *pool_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    stress_barrier_wait(&start_line);
    for (size_t i = 0; i < ROUNDS / 4; i++) stress_join(stress_spawn(tiny_thread, (void *)(id << 32 | i)));
    atomic_fetch_sub(&spawners_left, 1);
    return NULL;
}

/* bitslab_collect also collects abandoned heaps: it pops every heap in the
 * pool and pushes it back, so collectors and thread starts and exits meet on
 * the pool's head. */
static void *pool_collector(void *arg)
{
    (void)arg;
    void *p = stress_alloc(API_MALLOC, 64, 0); /* a heap of our own */
    stress_barrier_wait(&start_line);
    while (atomic_load(&spawners_left)) bitslab_collect();
    stress_free(p, 64, NULL);
    return NULL;
}

/* ---- drain and release: one owner, THREADS - 1 freers --------------------- */

typedef struct batch {
    void *p[512];
    size_t size[512];
    uint64_t tag[512];
    size_t n;
} batch_t;

static batch_t batches[THREADS - 1];
static atomic_size_t posted, consumed; /* rounds posted by the owner, batches freed by freers */
static atomic_bool owner_done;

static void *freer_thread(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(500 + id);
    size_t seen = 0;
    for (;;) {
        size_t now;
        while ((now = atomic_load(&posted)) == seen) {
            if (atomic_load(&owner_done)) return NULL;
            stress_relax();
        }
        seen = now;
        batch_t *b = &batches[id];
        for (size_t i = 0; i < b->n; i++) {
            stress_verify(b->p[i], 0, b->size[i], stress_seed(b->p[i], b->tag[i]), "window freer");
            stress_free(b->p[i], b->size[i], &r); /* remote: the owner allocated it */
        }
        atomic_fetch_add(&consumed, 1);
    }
}

/* mode 0 (drain): many 16-byte blocks of the same slabs, so freers and the
 * owner's merge meet on the same bitmap words. mode 1 (release): wide blocks
 * that fill whole superpages, so the owner's collect finds them empty just as
 * the last freer finishes. */
static void run_owner(int mode, size_t rounds)
{
    stress_rng_t r = stress_rng(600 + (uint64_t)mode);
    pthread_t t[THREADS - 1];
    atomic_store(&posted, 0);
    atomic_store(&consumed, 0);
    atomic_store(&owner_done, false);
    for (unsigned i = 0; i < THREADS - 1; i++) t[i] = stress_spawn(freer_thread, (void *)(uintptr_t)i);
    for (size_t round = 0; round < rounds; round++) {
        for (unsigned f = 0; f < THREADS - 1; f++) {
            batch_t *b = &batches[f];
            b->n = mode == 0 ? 512 : 2;
            for (size_t i = 0; i < b->n; i++) {
                b->size[i] = mode == 0 ? 16 : WIDE_15;
                b->tag[i] = stress_rand(&r);
                b->p[i] = stress_alloc(API_MALLOC, b->size[i], 0);
                stress_fill(b->p[i], 0, b->size[i], stress_seed(b->p[i], b->tag[i]));
            }
        }
        atomic_store(&posted, round + 1); /* seq_cst: publishes the batches */
        /* Merge and release while the freers are at work. */
        while (atomic_load(&consumed) < (round + 1) * (THREADS - 1)) bitslab_collect();
        bitslab_collect();
        bitslab_heap_info_t hi = {.struct_size = sizeof hi};
        bitslab_heap_info(&hi);
        STRESS_CHECK(hi.bytes_in_use == 0 && hi.remote_frees_pending == 0,
                     "owner after collect: %zu bytes in use, %zu pending", hi.bytes_in_use, hi.remote_frees_pending);
    }
    atomic_store(&owner_done, true);
    for (unsigned i = 0; i < THREADS - 1; i++) stress_join(t[i]);
    stress_debug_check();
}

static void *owner_thread(void *arg)
{
    run_owner((int)(uintptr_t)arg, (int)(uintptr_t)arg == 0 ? ROUNDS / 10 : ROUNDS / 3);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("windows");
    if (argc > 1) ROUNDS = (size_t)atol(argv[1]);
    ROUNDS = stress_scaled(ROUNDS);
    stress_log("%u threads, %zu rounds per hammer", THREADS, ROUNDS);
    /* Two cores reach these by collision within a few rounds; the two
     * deferred-release windows need a freer preempted between two atomic
     * steps, which park.c forces instead. */
    static const char *const required[] = {"orphan_cas_retry", "heap_pool_cas_retry", "remote_free_during_drain",
                                           "queue_producer_stalled", "shrink_walker_seen", NULL};
    for (size_t rep = 0; stress_more_rounds(rep, 1) || (rep < 40 && stress_windows_missing(required)); rep++) {
        pthread_t t[THREADS];
        stress_barrier_init(&start_line, THREADS);
        atomic_store(&orphanage_left, THREADS);
        for (uintptr_t i = 0; i < THREADS; i++) t[i] = stress_spawn(orphanage_thread, (void *)(rep * 8 + i));
        /* Meanwhile the statistics walker visits superpages as they go to the
         * orphanage and come back (reset by their new owner). */
        size_t walks = 0;
        while (atomic_load(&orphanage_left)) {
            bitslab_stats_t st = {.struct_size = sizeof st};
            bitslab_stats(&st);
            walks++;
        }
        for (unsigned i = 0; i < THREADS; i++) stress_join(t[i]);
        if (stress_cfg.verbose) stress_log("%zu statistics walks during the orphanage hammer", walks);
        stress_barrier_destroy(&start_line);
        stress_print_stats("orphanage hammer");
        stress_debug_windows(NULL); /* cumulative counts after each hammer */

        stress_barrier_init(&start_line, THREADS);
        atomic_store(&spawners_left, THREADS / 2);
        for (uintptr_t i = 0; i < THREADS; i++)
            t[i] = stress_spawn(i < THREADS / 2 ? pool_thread : pool_collector, (void *)(rep * 8 + i));
        for (unsigned i = 0; i < THREADS; i++) stress_join(t[i]);
        stress_barrier_destroy(&start_line);
        stress_print_stats("heap-pool hammer");
        stress_debug_windows(NULL);

        for (uintptr_t mode = 0; mode < 2; mode++) {
            stress_join(stress_spawn(owner_thread, (void *)mode));
            stress_print_stats(mode == 0 ? "drain hammer" : "release hammer");
            stress_debug_windows(NULL);
        }
    }
    static const char *const targets[] = {"orphan_cas_retry", "heap_pool_cas_retry", "remote_free_during_drain",
                                          "queue_producer_stalled", "release_deferred_inflight",
                                          "release_deferred_queued", NULL};
    if (stress_windows_missing(required)) {
        stress_debug_windows(required);
        stress_fail("%u required race window(s) never reached", stress_windows_missing(required));
    }
    stress_bounds_t b = {.max_superpages = 64, .targets = targets};
    stress_finish(&b);
    return 0;
}
