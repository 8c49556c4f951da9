/*
 * test_threads.c: frees from other threads on every path, thread exit and
 * heap adoption, thread churn with bounded memory, simultaneous first
 * allocations, and a producer/consumer pipeline.
 */
#include <sched.h>

#include <limits.h> /* PTHREAD_DESTRUCTOR_ITERATIONS */
#include <sys/wait.h>
#include <time.h>

#include "common.h"
#include "rss.h"

DEFINE_THREAD_FAILURES;

/* ---- a thread that frees a list of blocks ---------------------------------------- */

typedef struct free_job {
    void **blocks;
    size_t n;
} free_job_t;

static void *free_all(void *arg)
{
    free_job_t *job = arg;
    for (size_t i = 0; i < job->n; i++) bitslab_free(job->blocks[i]);
    return NULL;
}

static void free_in_thread(void **blocks, size_t n)
{
    free_job_t job = {blocks, n};
    join(spawn(free_all, &job));
}

/* Small blocks of every class freed by another thread: pending until the
 * owner merges them, then all memory is back in the owner's heap. */
START_TEST(test_remote_free_small_every_class)
{
    static void *blocks[NUM_CLASSES * 200];
    size_t per[NUM_CLASSES], n = 0;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        per[c] = class_bins(c) < 200 ? class_bins(c) : 200;
        for (size_t i = 0; i < per[c]; i++) {
            blocks[n] = bitslab_malloc(bitslab_class_size[c]);
            ck_assert_ptr_nonnull(blocks[n]);
            memset(blocks[n], 0x5c, bitslab_class_size[c]);
            n++;
        }
    }
    free_in_thread(blocks, n);

    /* Freed, so not in use; pending until the owner merges them. */
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.remote_frees_pending, n);
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        ck_assert_msg(hi.classes[c].bins_in_use == 0, "class %u: %zu in use after the remote frees", c,
                      hi.classes[c].bins_in_use);
        ck_assert_msg(hi.classes[c].bins_pending == per[c], "class %u: %zu pending, expected %zu", c,
                      hi.classes[c].bins_pending, per[c]);
    }
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.remote_frees_pending, n);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.remote_frees_sent, n);
    ck_assert_uint_eq(st.remote_frees_merged, 0);
    for (unsigned c = 0; c < NUM_CLASSES; c++) ck_assert_uint_eq(st.classes[c].bins_pending, per[c]);
    debug_check();

    bitslab_collect();
    hi = heap_info();
    ck_assert_uint_eq(hi.remote_frees_pending, 0);
    ck_assert_uint_eq(hi.remote_frees_merged, n);
    for (unsigned c = 0; c < NUM_CLASSES; c++) ck_assert_uint_eq(hi.classes[c].bins_in_use, 0);
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    st = stats();
    ck_assert_uint_eq(st.remote_frees_pending, 0);
    ck_assert_uint_eq(st.remote_frees_merged, n);
    ck_assert_uint_eq(st.remote_frees_sent, n);
    ck_assert_uint_eq(st.in_use, 0);
    debug_check();
    /* The memory is reused: no new superpage for the same blocks again. */
    size_t total = st.superpages_total;
    for (size_t i = 0; i < n; i++) blocks[i] = bitslab_malloc(64);
    for (size_t i = 0; i < n; i++) bitslab_free(blocks[i]);
    ck_assert_uint_eq(stats().superpages_total, total);
}
END_TEST

/* Without a collect: the owner's next slow-path allocation merges the remote
 * frees and hands the same bins out again, with no new slab. */
START_TEST(test_remote_free_merged_by_malloc)
{
    const unsigned c = 9; /* 192 B, 341 bins */
    size_t nb = class_bins(c);
    static void *blocks[400], *again[400];
    for (size_t i = 0; i < nb; i++) blocks[i] = bitslab_malloc(bitslab_class_size[c]);
    slab_t *s = slab_of(blocks[0]);
    ck_assert_uint_eq(slab_taken(s), nb);
    free_in_thread(blocks, nb);
    ck_assert_uint_eq(heap_info().classes[c].bins_in_use, 0);
    ck_assert_uint_eq(heap_info().classes[c].bins_pending, nb);
    for (size_t i = 0; i < nb; i++) {
        again[i] = bitslab_malloc(bitslab_class_size[c]);
        ck_assert_msg(again[i] == blocks[i], "block %zu: %p, expected %p", i, again[i], blocks[i]);
    }
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.classes[c].slabs, 1);
    ck_assert_uint_eq(hi.classes[c].bins_in_use, nb);
    ck_assert_uint_eq(hi.remote_frees_pending, 0);
    for (size_t i = 0; i < nb; i++) bitslab_free(again[i]);
    debug_check();
}
END_TEST

START_TEST(test_remote_free_wide)
{
    const size_t sizes[] = {SMALL_MAX + 1, 300 * KiB, WIDE_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *w = bitslab_malloc(sizes[i]);
        ck_assert_ptr_nonnull(w);
        memset(w, 0x3c, sizes[i]);
        unsigned n = (unsigned)((sizes[i] + SLAB_SIZE - 1) / SLAB_SIZE);
        free_in_thread(&w, 1);
        bitslab_heap_info_t hi = heap_info();
        ck_assert_uint_eq(hi.wide_allocations, 0); /* freed: pending until merged, not live */
        ck_assert_uint_eq(hi.wide_bytes, 0);
        ck_assert_uint_eq(hi.slabs_wide, n);       /* the slabs are still taken */
        ck_assert_uint_eq(hi.remote_frees_pending, 1);
        ck_assert_uint_eq(stats().remote_frees_pending, 1);
        bitslab_collect();
        hi = heap_info();
        ck_assert_uint_eq(hi.wide_allocations, 0);
        ck_assert_uint_eq(hi.wide_bytes, 0);
        ck_assert_uint_eq(hi.slabs_wide, 0);
        ck_assert_uint_eq(hi.remote_frees_pending, 0);
        bitslab_stats_t st = stats();
        ck_assert_uint_eq(st.wide_allocations, 0);
        ck_assert_uint_eq(st.remote_frees_pending, 0);
        /* The same slabs come back. */
        void *keep = bitslab_malloc(16); /* keep the superpage from the orphanage */
        bitslab_free(keep);
        void *v = bitslab_malloc(sizes[i]);
        ck_assert_ptr_eq(sp_of(v), sp_of(w));
        ck_assert_uint_eq(slab_of(v)->nslabs, n);
        bitslab_free(v);
        debug_check();
    }
}
END_TEST

START_TEST(test_remote_free_huge)
{
    bitslab_stats_t st0 = stats();
    void *h[3];
    h[0] = bitslab_malloc(WIDE_MAX + 1);
    h[1] = bitslab_malloc(5 * MiB);
    h[2] = bitslab_aligned_alloc(8 * MiB, 100);
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_nonnull(h[i]);
        memset(h[i], 0x11, 100);
    }
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.huge_allocations, 3);
    free_in_thread(h, 3);
    st = stats();
    ck_assert_uint_eq(st.huge_allocations, 0);
    ck_assert_uint_eq(st.huge_bytes, 0);
    bitslab_collect(); /* freed huge mappings may be kept for reuse until a collect */
    st = stats();
    ck_assert_uint_eq(st.mapped, st0.mapped);
    ck_assert_uint_eq(st.remote_frees_pending, 0);
}
END_TEST

/* realloc of a block by a thread that does not own it. */
typedef struct realloc_job {
    char *p;
    size_t from, to;
} realloc_job_t;

static void *realloc_remote(void *arg)
{
    realloc_job_t *j = arg;
    char *q = bitslab_realloc(j->p, j->to);
    TCHECK(q != NULL, "realloc %zu -> %zu", j->from, j->to);
    if (q) {
        size_t keep = j->from < j->to ? j->from : j->to;
        TCHECK(check_pattern(q, keep, 9) == keep, "realloc %zu -> %zu lost data", j->from, j->to);
    }
    j->p = q;
    return NULL;
}

START_TEST(test_remote_realloc)
{
    const size_t sizes[][2] = {{100, 5000}, {5000, 100}, {3000, 200 * KiB}, {200 * KiB, 3 * MiB}, {3 * MiB, 64}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char *p = bitslab_malloc(sizes[i][0]);
        fill_pattern(p, sizes[i][0], 9);
        realloc_job_t job = {p, sizes[i][0], sizes[i][1]};
        join(spawn(realloc_remote, &job));
        ASSERT_NO_THREAD_FAILURES();
        bitslab_free(job.p); /* a block of the helper's (abandoned) heap */
        bitslab_collect();
        bitslab_heap_info_t hi = heap_info();
        ck_assert_msg(hi.bytes_in_use == 0, "step %zu: %zu bytes in use", i, hi.bytes_in_use);
        ck_assert_uint_eq(hi.remote_frees_pending, 0);
    }
    debug_check();
}
END_TEST

/* ---- thread exit and adoption ---------------------------------------------------------- */

enum { EXIT_BLOCKS = 500 };
static void *exit_blocks[EXIT_BLOCKS + 1];
static void *exit_heap;

static void *alloc_and_exit(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXIT_BLOCKS; i++) {
        exit_blocks[i] = bitslab_malloc(64);
        TCHECK(exit_blocks[i] != NULL, "malloc");
        if (exit_blocks[i]) memset(exit_blocks[i], 0xee, 64);
    }
    exit_blocks[EXIT_BLOCKS] = bitslab_malloc(200 * KiB);
    exit_heap = bitslab_tls_heap;
    return NULL; /* exits with every block live */
}

static void *adopt_and_reuse(void *arg)
{
    (void)arg;
    /* The first allocation adopts the abandoned heap and merges the frees that
     * arrived while nobody owned it: the same bins come back, in order. */
    void *mine[EXIT_BLOCKS];
    for (int i = 0; i < EXIT_BLOCKS; i++) {
        mine[i] = bitslab_malloc(64);
        TCHECK(mine[i] == exit_blocks[i], "block %d: %p, expected %p", i, mine[i], exit_blocks[i]);
    }
    TCHECK(bitslab_tls_heap == exit_heap, "heap %p, expected the abandoned %p", (void *)bitslab_tls_heap, exit_heap);
    void *w = bitslab_malloc(200 * KiB);
    TCHECK(w == exit_blocks[EXIT_BLOCKS], "wide block %p, expected %p", w, exit_blocks[EXIT_BLOCKS]);
    bitslab_heap_info_t hi = heap_info();
    TCHECK(hi.classes[3].bins_in_use == EXIT_BLOCKS, "%zu bins in use", hi.classes[3].bins_in_use);
    TCHECK(hi.wide_allocations == 1, "%zu wide", hi.wide_allocations);
    TCHECK(hi.remote_frees_pending == 0, "%zu pending", hi.remote_frees_pending);
    for (int i = 0; i < EXIT_BLOCKS; i++) bitslab_free(mine[i]);
    bitslab_free(w);
    bitslab_collect();
    hi = heap_info();
    TCHECK(hi.bytes_in_use == 0, "%zu bytes in use", hi.bytes_in_use);
    TCHECK(hi.superpages == 0, "%zu superpages", hi.superpages);
    debug_check();
    return NULL;
}

START_TEST(test_exit_with_live_blocks_then_adopt)
{
    join(spawn(alloc_and_exit, NULL));
    ASSERT_NO_THREAD_FAILURES();
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.heaps_total, 1);
    ck_assert_uint_eq(st1.heaps_abandoned, 1);
    ck_assert_uint_eq(st1.in_use, EXIT_BLOCKS * 64 + 256 * KiB);
    ck_assert_uint_eq(st1.classes[3].bins_in_use, EXIT_BLOCKS);
    ck_assert_uint_eq(st1.superpages_owned, 1); /* still the abandoned heap's */

    /* Frees by the main thread (which has no heap) into the abandoned heap. */
    for (int i = 0; i <= EXIT_BLOCKS; i++) bitslab_free(exit_blocks[i]);
    bitslab_stats_t st2 = stats();
    ck_assert_uint_eq(st2.remote_frees_pending, EXIT_BLOCKS + 1);
    ck_assert_uint_eq(st2.heaps_total, 1); /* freeing created no heap */

    join(spawn(adopt_and_reuse, NULL));
    ASSERT_NO_THREAD_FAILURES();
    bitslab_stats_t st3 = stats();
    ck_assert_uint_eq(st3.heaps_total, 1);     /* adopted, not created */
    ck_assert_uint_eq(st3.heaps_abandoned, 1); /* abandoned again on exit */
    ck_assert_uint_eq(st3.superpages_total, st1.superpages_total);
    ck_assert_uint_eq(st3.remote_frees_pending, 0);
    ck_assert_uint_eq(st3.in_use, 0);
    ck_assert_uint_le(st3.mapped, st1.mapped);
}
END_TEST

/* bitslab_collect() also merges and releases the heaps of exited threads
 * that nobody adopted (include/bitslab.h). */
START_TEST(test_collect_abandoned_heaps)
{
    join(spawn(alloc_and_exit, NULL));
    ASSERT_NO_THREAD_FAILURES();
    for (int i = 0; i <= EXIT_BLOCKS; i++) bitslab_free(exit_blocks[i]);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.remote_frees_pending, EXIT_BLOCKS + 1);
    ck_assert_uint_eq(st.superpages_owned, 1);
    bitslab_collect();
    st = stats();
    ck_assert_uint_eq(st.remote_frees_pending, 0);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.wide_allocations, 0);
    ck_assert_uint_eq(st.superpages_owned, 0);
    ck_assert_uint_eq(st.superpages_orphaned, st.superpages_total);
    ck_assert_uint_eq(st.heaps_abandoned, 1); /* still there for the next thread */
    ck_assert_uint_lt(st.committed, st.mapped);
}
END_TEST

/* The same with more abandoned heaps than any batch: 100 threads alive at
 * once (100 heaps), each leaves a block that the main thread frees after they
 * exited; one bitslab_collect() must reach every one of those heaps. */
enum { MANY_HEAPS = 100 };
static void *many_blocks[MANY_HEAPS];
static pthread_barrier_t many_barrier;

static void *alloc_wait_exit(void *arg)
{
    many_blocks[(intptr_t)arg] = bitslab_malloc(64);
    TCHECK(many_blocks[(intptr_t)arg] != NULL, "malloc");
    pthread_barrier_wait(&many_barrier); /* all heaps exist at once */
    return NULL;
}

START_TEST(test_collect_every_abandoned_heap)
{
    pthread_t t[MANY_HEAPS];
    pthread_barrier_init(&many_barrier, NULL, MANY_HEAPS);
    for (intptr_t i = 0; i < MANY_HEAPS; i++) t[i] = spawn(alloc_wait_exit, (void *)i);
    for (int i = 0; i < MANY_HEAPS; i++) join(t[i]);
    pthread_barrier_destroy(&many_barrier);
    ASSERT_NO_THREAD_FAILURES();
    for (int i = 0; i < MANY_HEAPS; i++) bitslab_free(many_blocks[i]);
    bitslab_stats_t st = stats();
    ck_assert_uint_ge(st.heaps_abandoned, MANY_HEAPS);
    ck_assert_uint_eq(st.remote_frees_pending, MANY_HEAPS);
    bitslab_collect();
    st = stats();
    ck_assert_uint_eq(st.remote_frees_pending, 0);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.superpages_owned, 0);
    ck_assert_uint_ge(st.heaps_abandoned, MANY_HEAPS);
}
END_TEST

/* Many short threads, each with a block left behind that a later thread
 * frees: heaps are recycled, memory does not grow. */
static void *short_thread(void *arg)
{
    void **slot = arg;
    bitslab_free(*slot); /* the previous thread's block (remote free) */
    *slot = bitslab_malloc(100);
    TCHECK(*slot != NULL, "malloc");
    void *tmp = bitslab_malloc(5000);
    bitslab_free(tmp);
    return NULL;
}

START_TEST(test_sequential_thread_churn)
{
    void *slot = NULL;
    size_t mapped_after_10 = 0;
    for (int i = 0; i < 2000; i++) {
        join(spawn(short_thread, &slot));
        if (i == 10) mapped_after_10 = stats().mapped;
    }
    ASSERT_NO_THREAD_FAILURES();
    bitslab_stats_t st = stats();
    ck_assert_uint_le(st.heaps_total, 2);
    ck_assert_uint_eq(st.mapped, mapped_after_10);
    ck_assert_uint_le(st.superpages_total, 2);
    bitslab_free(slot);
}
END_TEST

/* ---- 100 threads x churn -------------------------------------------------------------- */

enum { CHURN_THREADS = 100, CHURN_ROUNDS = 10, CHURN_BLOCKS = 1500 };

typedef struct churn_thread {
    int id;
    void *blocks[CHURN_BLOCKS];
    void *wide;
} churn_thread_t;

static churn_thread_t churn[CHURN_THREADS];
static pthread_barrier_t churn_barrier;
static void *churn_leftovers[CHURN_THREADS][CHURN_BLOCKS / 4 + 1];

static size_t churn_size(int id, int i) { return 16 + (size_t)((id * 7919 + i * 104729) % 497); }

static void *churn_main(void *arg)
{
    churn_thread_t *me = arg;
    churn_thread_t *next = &churn[(me->id + 1) % CHURN_THREADS];
    /* Phase 1: allocate. */
    for (int i = 0; i < CHURN_BLOCKS; i++) {
        size_t sz = churn_size(me->id, i);
        me->blocks[i] = bitslab_malloc(sz);
        TCHECK(me->blocks[i] != NULL, "malloc(%zu)", sz);
        if (me->blocks[i]) memset(me->blocks[i], me->id & 0xff, sz);
    }
    me->wide = bitslab_malloc(100 * KiB + (size_t)me->id);
    TCHECK(me->wide != NULL, "wide malloc");
    pthread_barrier_wait(&churn_barrier);

    /* Phase 2: free my first half, free my neighbour's third quarter and its
     * wide block (remote frees while it is alive), and churn a little more. */
    for (int i = 0; i < CHURN_BLOCKS / 2; i++) {
        TCHECK(check_bytes(me->blocks[i], churn_size(me->id, i), (unsigned char)(me->id & 0xff)) ==
                   churn_size(me->id, i),
               "thread %d block %d corrupted", me->id, i);
        bitslab_free(me->blocks[i]);
    }
    for (int i = CHURN_BLOCKS / 2; i < CHURN_BLOCKS * 3 / 4; i++) {
        int nid = next->id;
        TCHECK(check_bytes(next->blocks[i], churn_size(nid, i), (unsigned char)(nid & 0xff)) == churn_size(nid, i),
               "thread %d block %d corrupted", nid, i);
        bitslab_free(next->blocks[i]);
    }
    bitslab_free(next->wide);
    for (int i = 0; i < 1000; i++) {
        void *p = bitslab_malloc(churn_size(me->id, i) * 2);
        TCHECK(p != NULL, "malloc");
        bitslab_free(p);
    }
    pthread_barrier_wait(&churn_barrier);

    /* Phase 3: every remote free of my blocks has happened; after a merge, my
     * heap holds exactly my last quarter (the previous owner's leftovers were
     * freed by the main thread before this round). */
    bitslab_collect();
    bitslab_heap_info_t hi = heap_info();
    size_t expect = 0;
    for (int i = CHURN_BLOCKS * 3 / 4; i < CHURN_BLOCKS; i++) {
        expect += bitslab_class_size[size_class(churn_size(me->id, i))];
        churn_leftovers[me->id][i - CHURN_BLOCKS * 3 / 4] = me->blocks[i];
    }
    TCHECK(hi.bytes_in_use == expect, "thread %d: %zu bytes in use, expected %zu", me->id, hi.bytes_in_use, expect);
    TCHECK(total_bins_in_use(&hi) == CHURN_BLOCKS / 4, "thread %d: %zu bins in use", me->id,
           total_bins_in_use(&hi));
    TCHECK(hi.remote_frees_pending == 0, "thread %d: %zu pending", me->id, hi.remote_frees_pending);
    TCHECK(hi.wide_allocations == 0, "thread %d: %zu wide", me->id, hi.wide_allocations);
    debug_check();
    return NULL; /* exits with a quarter of its blocks live */
}

START_TEST(test_churn_100_threads_bounded)
{
    pthread_barrier_init(&churn_barrier, NULL, CHURN_THREADS);
    size_t mapped[CHURN_ROUNDS], sp_total[CHURN_ROUNDS], committed[CHURN_ROUNDS];
    for (int r = 0; r < CHURN_ROUNDS; r++) {
        pthread_t t[CHURN_THREADS];
        for (int i = 0; i < CHURN_THREADS; i++) {
            churn[i].id = i;
            t[i] = spawn(churn_main, &churn[i]);
        }
        for (int i = 0; i < CHURN_THREADS; i++) join(t[i]);
        ASSERT_NO_THREAD_FAILURES();
        bitslab_stats_t st = stats();
        ck_assert_uint_eq(st.heaps_total, CHURN_THREADS); /* round 1 creates them, later rounds adopt */
        ck_assert_uint_eq(st.heaps_abandoned, CHURN_THREADS);
        /* Leftovers of exited threads, freed by a thread without a heap. */
        for (int i = 0; i < CHURN_THREADS; i++)
            for (int j = 0; j < CHURN_BLOCKS / 4; j++) bitslab_free(churn_leftovers[i][j]);
        st = stats();
        ck_assert_uint_eq(st.remote_frees_pending, (size_t)CHURN_THREADS * (CHURN_BLOCKS / 4));
        mapped[r] = st.mapped;
        sp_total[r] = st.superpages_total;
        committed[r] = st.committed;
    }
    pthread_barrier_destroy(&churn_barrier);
    /* A fixed bound: a thread's live blocks (~400 KiB over ~18 slabs) fit in
     * one superpage, and 100 threads are live at once. */
    const size_t sp_bound = CHURN_THREADS + CHURN_THREADS / 4;
    for (int r = 0; r < CHURN_ROUNDS; r++) {
        ck_assert_msg(sp_total[r] <= sp_bound, "round %d: %zu superpages (bound %zu)", r + 1, sp_total[r], sp_bound);
        ck_assert_msg(mapped[r] <= sp_bound * SUPERPAGE_SIZE + 16 * MiB, "round %d: %zu MiB mapped", r + 1,
                      mapped[r] >> 20);
        ck_assert_msg(committed[r] <= mapped[r], "round %d: committed %zu > mapped %zu", r + 1, committed[r], mapped[r]);
    }
    /* No growth after the second round (a little slack for placement). */
    ck_assert_msg(mapped[CHURN_ROUNDS - 1] <= mapped[1] + mapped[1] / 20,
                  "mapped grew from %zu MiB (round 2) to %zu MiB (round %d)", mapped[1] >> 20,
                  mapped[CHURN_ROUNDS - 1] >> 20, CHURN_ROUNDS);
    ck_assert_msg(sp_total[CHURN_ROUNDS - 1] <= sp_total[1] + sp_total[1] / 20,
                  "superpages grew from %zu (round 2) to %zu (round %d)", sp_total[1], sp_total[CHURN_ROUNDS - 1],
                  CHURN_ROUNDS);
}
END_TEST

/* ---- releases deferred by freers in flight ---------------------------------------------
 * An empty superpage with a remote freer still inside it (inflight != 0)
 * cannot go to the orphanage yet; the owner retries at its next slow path.
 * Every such superpage must be retried, not only the last one deferred. */

START_TEST(test_every_deferred_release_retried)
{
    enum { PER_SP = 62, NSP_PINNED = 3, N = PER_SP * NSP_PINNED + 10 }; /* 32 KiB bins: 2 per slab, 31 slabs */
    /* Release as soon as empty (the test is about the deferral by inflight,
     * not about the purge delay empty superpages otherwise wait out). */
    atomic_store(&bitslab_purge_delay_ms, 0);
    static void *p[N];
    for (int i = 0; i < N; i++) ck_assert_ptr_nonnull(p[i] = bitslab_malloc(SMALL_MAX));
    superpage_t *pinned[NSP_PINNED];
    for (int k = 0; k < NSP_PINNED; k++) {
        pinned[k] = sp_of(p[k * PER_SP]);
        for (int i = k * PER_SP; i < (k + 1) * PER_SP; i++) ck_assert_ptr_eq(sp_of(p[i]), pinned[k]);
        /* A freer between F1 and F5, as far as the owner can tell. */
        atomic_fetch_add(&pinned[k]->inflight, 1);
    }
    for (int i = 0; i < PER_SP * NSP_PINNED; i++) bitslab_free(p[i]); /* three superpages empty out */
    ck_assert_uint_eq(stats().superpages_orphaned, 0);                  /* all deferred */
    for (int k = 0; k < NSP_PINNED; k++) atomic_fetch_sub(&pinned[k]->inflight, 1);
    void *q = bitslab_malloc(100); /* a slow path: retries the deferred releases */
    /* The heap keeps SUPERPAGE_RETENTION (1 + superpages / 8) empty ones. */
    ck_assert_uint_eq(stats().superpages_orphaned, NSP_PINNED - 1);
    bitslab_free(q);
    for (int i = PER_SP * NSP_PINNED; i < N; i++) bitslab_free(p[i]);
    debug_check();
}
END_TEST

/* ---- fork: the parent's other threads' heaps are abandoned in the child -----------------
 * In the child only the forking thread exists. Blocks the parent's other
 * threads allocated, freed in the child, must become reusable there: their
 * heaps are abandoned heaps in the child (collected like exited threads'). */

enum { FORK_THREADS = 2, FORK_BLOCKS = 4096, FORK_SIZE = 2000 };
static void *fork_blocks[FORK_THREADS][FORK_BLOCKS];
static pthread_barrier_t fork_barrier;

static void *fork_helper(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < FORK_BLOCKS; i++) {
        fork_blocks[id][i] = bitslab_malloc(FORK_SIZE);
        TCHECK(fork_blocks[id][i] != NULL, "malloc");
        if (fork_blocks[id][i]) memset(fork_blocks[id][i], id + 1, FORK_SIZE);
    }
    pthread_barrier_wait(&fork_barrier); /* allocated */
    pthread_barrier_wait(&fork_barrier); /* the parent has forked and checked the child */
    for (int i = 0; i < FORK_BLOCKS; i++) bitslab_free(fork_blocks[id][i]);
    return NULL;
}

START_TEST(test_fork_child_reuses_other_threads_memory)
{
    pthread_barrier_init(&fork_barrier, NULL, FORK_THREADS + 1);
    pthread_t t[FORK_THREADS];
    for (int i = 0; i < FORK_THREADS; i++) t[i] = spawn(fork_helper, (void *)(intptr_t)i);
    pthread_barrier_wait(&fork_barrier);
    ASSERT_NO_THREAD_FAILURES();
    size_t parent_rss = rss_kib();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The child frees what the parent's other threads allocated, then
         * allocates as much again. */
        size_t mapped_before = stats().mapped;
        for (int k = 0; k < FORK_THREADS; k++)
            for (int i = 0; i < FORK_BLOCKS; i++) {
                if (check_bytes(fork_blocks[k][i], FORK_SIZE, (unsigned char)(k + 1)) != FORK_SIZE) _exit(10);
                bitslab_free(fork_blocks[k][i]);
            }
        /* No bitslab_collect(): a program that only calls malloc and free
         * must get the memory back too. */
        for (int k = 0; k < FORK_THREADS; k++)
            for (int i = 0; i < FORK_BLOCKS; i++) {
                fork_blocks[k][i] = bitslab_malloc(FORK_SIZE);
                if (!fork_blocks[k][i]) _exit(11);
                memset(fork_blocks[k][i], 0x77, FORK_SIZE);
            }
        size_t grew = stats().mapped - mapped_before, child_rss = rss_kib();
        fprintf(stderr, "fork child: mapped grew by %zu KiB; RSS %zu KiB, parent's %zu KiB (%.2fx)\n", grew >> 10,
                child_rss, parent_rss, (double)child_rss / (double)parent_rss);
        if (grew > 4 * MiB) _exit(12);                    /* a new superpage or two, not 16 MiB */
        if (child_rss * 4 > parent_rss * 5) _exit(13);   /* within 1.25x of the parent */
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    pthread_barrier_wait(&fork_barrier);
    for (int i = 0; i < FORK_THREADS; i++) join(t[i]);
    pthread_barrier_destroy(&fork_barrier);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x (10: contents, 11: malloc, 12: mapped grew, 13: RSS over 1.25x)", status);
}
END_TEST

/* ---- a purge never releases a superpage ----------------------------------------------
 * heap_purge runs inside merges (a slab the merge empties goes back to its
 * superpage, which may purge over a cap), and the merge's caller may hold the
 * next superpage of the heap's list (heap_scan_remote): a purge that released
 * superpages would leave it walking one the heap no longer owns. Releases of
 * aged empty superpages happen only in superpage_release_aged, from the top
 * of a slow path. */
START_TEST(test_purge_never_releases)
{
    enum { PER_SP = 62, NSP = 4, N = PER_SP * NSP }; /* 32 KiB bins: 62 per superpage */
    static void *p[N];
    atomic_store(&bitslab_purge_delay_ms, 1);
    for (int i = 0; i < N; i++) {
        ck_assert_ptr_nonnull(p[i] = bitslab_malloc(SMALL_MAX));
        memset(p[i], 0x33, SMALL_MAX); /* committed: an empty superpage then waits */
    }
    superpage_t *a = sp_of(p[PER_SP]), *b = sp_of(p[2 * PER_SP]);
    for (int i = 0; i < N; i++)
        if (sp_of(p[i]) == a || sp_of(p[i]) == b) {
            bitslab_free(p[i]);
            p[i] = NULL;
        }
    heap_t *h = bitslab_tls_heap;
    size_t before = h->nsuperpages;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL); /* both empty superpages are now past the delay */
    heap_purge(h, PURGE_EXPIRED, SIZE_MAX);
    heap_purge(h, PURGE_ALL, SIZE_MAX);
    ck_assert_uint_eq(h->nsuperpages, before);
    h->in_slow++; /* as a slow path does (slow_enter): superpage lists change only inside one */
    superpage_release_aged(h); /* the top of a slow path: now they go */
    h->in_slow--;
    ck_assert_uint_lt(h->nsuperpages, before);
    for (int i = 0; i < N; i++) bitslab_free(p[i]);
    debug_check();
}
END_TEST

/* ---- a thread that frees its peak and then blocks ---------------------------------------
 * Its empty superpages must not all wait for its next call: what waits out
 * the purge delay is bounded (only superpages with committed slabs, within
 * the dirty caps), the rest go to the orphanage at once for other threads. */
enum { IDLE_BLOCKS = 2048 }; /* 64 MiB of 32 KiB blocks: 33 superpages */
static pthread_barrier_t idle_barrier;

static void *peak_then_block(void *arg)
{
    (void)arg;
    static void *p[IDLE_BLOCKS];
    for (int i = 0; i < IDLE_BLOCKS; i++) {
        p[i] = bitslab_malloc(SMALL_MAX);
        TCHECK(p[i] != NULL, "malloc");
        if (p[i]) memset(p[i], 0x44, SMALL_MAX);
    }
    for (int i = 0; i < IDLE_BLOCKS; i++) bitslab_free(p[i]);
    pthread_barrier_wait(&idle_barrier); /* freed everything; now idle */
    pthread_barrier_wait(&idle_barrier); /* the main thread has looked */
    return NULL;
}

START_TEST(test_idle_thread_keeps_little)
{
    pthread_barrier_init(&idle_barrier, NULL, 2);
    pthread_t t = spawn(peak_then_block, NULL);
    pthread_barrier_wait(&idle_barrier);
    bitslab_stats_t st = stats();
    pthread_barrier_wait(&idle_barrier);
    join(t);
    pthread_barrier_destroy(&idle_barrier);
    ASSERT_NO_THREAD_FAILURES();
    ck_assert_msg(st.superpages_total >= 30, "%zu superpages", st.superpages_total);
    ck_assert_msg(st.superpages_owned <= 10, "an idle thread holds %zu of %zu superpages", st.superpages_owned,
                  st.superpages_total);
}
END_TEST

/* ---- allocations in the last round of key destructors -------------------------------------
 * glibc runs pthread key destructors in up to PTHREAD_DESTRUCTOR_ITERATIONS
 * rounds. A destructor that allocates after bitslab's own ran, in the last
 * round, must not leave a heap (and its superpage) behind for good: the
 * thread borrows a heap for each such allocation instead. */

enum { LATE_THREADS = 3000, LATE_KEEP = 64 };
static pthread_key_t late_key;
static void *late_kept[LATE_KEEP];
static _Atomic unsigned late_allocs;

static void late_destructor(void *arg)
{
    uintptr_t round = (uintptr_t)arg;
    if (round < PTHREAD_DESTRUCTOR_ITERATIONS) {
        pthread_setspecific(late_key, (void *)(round + 1)); /* again in the next round */
        return;
    }
    /* The last round: bitslab's destructor ran in round 1. */
    void *p = bitslab_malloc(48), *w = bitslab_malloc(100 * KiB);
    unsigned n = atomic_fetch_add(&late_allocs, 1);
    TCHECK(p && w, "late malloc failed");
    if (p) memset(p, 0x5a, 48);
    if (w) memset(w, 0x5a, 100 * KiB);
    bitslab_free(w);
    if (n < LATE_KEEP) late_kept[n] = p; /* freed later by the main thread */
    else bitslab_free(p);
}

static void *late_main(void *arg)
{
    (void)arg;
    void *p = bitslab_malloc(64); /* a heap of its own (bitslab's key is set) */
    bitslab_free(p);
    pthread_setspecific(late_key, (void *)(uintptr_t)1);
    return NULL;
}

START_TEST(test_alloc_in_last_destructor_round_bounded)
{
    /* bitslab's key first: keys run in creation order within a round, so the
     * user's destructor runs after bitslab's in the last round as well. */
    bitslab_free(bitslab_malloc(8));
    ck_assert_int_eq(pthread_key_create(&late_key, late_destructor), 0);
    for (int i = 0; i < LATE_THREADS; i++) join(spawn(late_main, NULL));
    ASSERT_NO_THREAD_FAILURES();
    ck_assert_uint_eq(atomic_load(&late_allocs), LATE_THREADS);
    for (int i = 0; i < LATE_KEEP; i++) {
        ck_assert_uint_eq(check_bytes(late_kept[i], 48, 0x5a), 48);
        bitslab_free(late_kept[i]);
    }
    bitslab_collect();
    bitslab_stats_t st = stats();
    /* One thread at a time: a handful of heaps and superpages, not one each. */
    ck_assert_msg(st.heaps_total <= 4, "%zu heaps for %d sequential threads", st.heaps_total, LATE_THREADS);
    ck_assert_msg(st.superpages_total <= 4, "%zu superpages mapped", st.superpages_total);
    ck_assert_msg(st.heaps_abandoned + 1 == st.heaps_total, "%zu of %zu heaps back in the pool (one is ours)",
                  st.heaps_abandoned, st.heaps_total);
    ck_assert_uint_eq(st.in_use, 0);
}
END_TEST

/* ---- simultaneous first allocations --------------------------------------------------- */

enum { FIRST_THREADS = 32 };
static pthread_barrier_t first_barrier;
static void *first_ptr[FIRST_THREADS][2];
static void *first_heap[FIRST_THREADS];

static void *first_alloc(void *arg)
{
    int id = (int)(intptr_t)arg;
    pthread_barrier_wait(&first_barrier);
    size_t sz = 24 + (size_t)id; /* several threads share a class */
    unsigned char *p = bitslab_malloc(sz);
    unsigned char *q = bitslab_malloc(id % 2 ? 40 * KiB : 700);
    TCHECK(p != NULL && q != NULL, "thread %d: malloc failed", id);
    first_ptr[id][0] = p;
    first_ptr[id][1] = q;
    first_heap[id] = bitslab_tls_heap;
    if (p) memset(p, id, sz);
    if (q) memset(q, id, 700);
    pthread_barrier_wait(&first_barrier); /* everyone has written */
    if (p) TCHECK(check_bytes(p, sz, (unsigned char)id) == sz, "thread %d: block overwritten", id);
    if (q) TCHECK(check_bytes(q, 700, (unsigned char)id) == 700, "thread %d: block overwritten", id);
    /* Both blocks live in superpages of this thread's own heap. */
    if (p) TCHECK(atomic_load(&sp_of(p)->heap) == bitslab_tls_heap, "thread %d: foreign superpage", id);
    if (q) TCHECK(atomic_load(&sp_of(q)->heap) == bitslab_tls_heap, "thread %d: foreign superpage", id);
    pthread_barrier_wait(&first_barrier); /* everyone has checked */
    bitslab_free(p);
    bitslab_free(q);
    return NULL;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_simultaneous_first_alloc)
{
    for (int round = 0; round < 5; round++) {
        pthread_barrier_init(&first_barrier, NULL, FIRST_THREADS);
        memset(first_ptr, 0, sizeof first_ptr);
        pthread_t t[FIRST_THREADS];
        for (int i = 0; i < FIRST_THREADS; i++) t[i] = spawn(first_alloc, (void *)(intptr_t)i);
        for (int i = 0; i < FIRST_THREADS; i++) join(t[i]);
        pthread_barrier_destroy(&first_barrier);
        ASSERT_NO_THREAD_FAILURES();
        uintptr_t all[FIRST_THREADS * 2], heaps[FIRST_THREADS];
        for (int i = 0; i < FIRST_THREADS; i++) {
            all[2 * i] = (uintptr_t)first_ptr[i][0];
            all[2 * i + 1] = (uintptr_t)first_ptr[i][1];
            heaps[i] = (uintptr_t)first_heap[i];
        }
        qsort(all, FIRST_THREADS * 2, sizeof *all, cmp_ptr);
        for (int i = 1; i < FIRST_THREADS * 2; i++) ck_assert_msg(all[i] != all[i - 1], "round %d: block handed out twice", round);
        qsort(heaps, FIRST_THREADS, sizeof *heaps, cmp_ptr);
        for (int i = 1; i < FIRST_THREADS; i++) ck_assert_msg(heaps[i] != heaps[i - 1], "round %d: heap shared", round);
        bitslab_stats_t st = stats();
        ck_assert_uint_eq(st.heaps_total, FIRST_THREADS);
        ck_assert_uint_eq(st.heaps_abandoned, FIRST_THREADS);
        ck_assert_uint_eq(st.in_use, 0);
    }
}
END_TEST

/* ---- producer / consumer ----------------------------------------------------------------- */

enum { RING = 1024, PRODUCERS = 2, ITEMS = 100000 };

typedef struct ring {
    _Atomic size_t head, tail;
    void *slot[RING];
    _Atomic size_t consumed;
} ring_t;

static ring_t rings[PRODUCERS];

static size_t item_size(size_t i)
{
    if (i % 20000 == 19999) return 2 * MiB + 1;       /* huge */
    if (i % 1000 == 999) return 100 * KiB + i % 4096; /* wide */
    return 16 + (i * 2654435761u) % 3000; /* >= 16: the tag byte never overlaps p[0] */
}

static void *producer(void *arg)
{
    ring_t *r = arg;
    for (size_t i = 0; i < ITEMS; i++) {
        size_t sz = item_size(i);
        size_t *p = bitslab_malloc(sz);
        TCHECK(p != NULL, "malloc(%zu)", sz);
        if (!p) break;
        p[0] = i;
        ((unsigned char *)p)[sz - 1] = (unsigned char)i;
        size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        while (h - atomic_load_explicit(&r->tail, memory_order_acquire) == RING) sched_yield();
        r->slot[h % RING] = p;
        atomic_store_explicit(&r->head, h + 1, memory_order_release);
    }
    /* Wait until the consumer has freed everything, then take it all back. */
    while (atomic_load_explicit(&r->consumed, memory_order_acquire) < ITEMS) sched_yield();
    bitslab_collect();
    bitslab_heap_info_t hi = heap_info();
    TCHECK(hi.bytes_in_use == 0, "producer: %zu bytes in use", hi.bytes_in_use);
    TCHECK(hi.remote_frees_pending == 0, "producer: %zu pending", hi.remote_frees_pending);
    debug_check();
    return NULL;
}

static void *consumer(void *arg)
{
    ring_t *r = arg;
    for (size_t i = 0; i < ITEMS; i++) {
        size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        while (atomic_load_explicit(&r->head, memory_order_acquire) == t) sched_yield();
        size_t *p = r->slot[t % RING];
        atomic_store_explicit(&r->tail, t + 1, memory_order_release);
        size_t sz = item_size(i);
        TCHECK(p[0] == i && ((unsigned char *)p)[sz - 1] == (unsigned char)i, "item %zu corrupted", i);
        TCHECK(bitslab_usable_size(p) >= sz, "item %zu: usable %zu < %zu", i, bitslab_usable_size(p), sz);
        bitslab_free(p);
        atomic_store_explicit(&r->consumed, i + 1, memory_order_release);
    }
    return NULL;
}

START_TEST(test_producer_consumer)
{
    pthread_t p[PRODUCERS], c[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = spawn(producer, &rings[i]);
        c[i] = spawn(consumer, &rings[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        join(p[i]);
        join(c[i]);
    }
    ASSERT_NO_THREAD_FAILURES();
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.huge_allocations, 0);
    ck_assert_uint_eq(st.remote_frees_pending, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase("remote");
    tcase_add_test(tc, test_remote_free_small_every_class);
    tcase_add_test(tc, test_remote_free_merged_by_malloc);
    tcase_add_test(tc, test_remote_free_wide);
    tcase_add_test(tc, test_remote_free_huge);
    tcase_add_test(tc, test_remote_realloc);
    suite_add_tcase(s, tc);
    tc = tcase("lifecycle");
    tcase_add_test(tc, test_exit_with_live_blocks_then_adopt);
    tcase_add_test(tc, test_collect_abandoned_heaps);
    tcase_add_test(tc, test_collect_every_abandoned_heap);
    tcase_add_test(tc, test_sequential_thread_churn);
    tcase_add_test(tc, test_churn_100_threads_bounded);
    tcase_add_test(tc, test_simultaneous_first_alloc);
    tcase_add_test(tc, test_producer_consumer);
    tcase_add_test(tc, test_alloc_in_last_destructor_round_bounded);
    tcase_add_test(tc, test_every_deferred_release_retried);
    tcase_add_test(tc, test_purge_never_releases);
    tcase_add_test(tc, test_idle_thread_keeps_little);
    tcase_add_test(tc, test_fork_child_reuses_other_threads_memory);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
