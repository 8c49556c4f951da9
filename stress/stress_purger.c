/*
 * stress_purger: the purger (docs/purger.md) taking bins from live heaps
 * while their owners allocate, free and merge, and while other threads free
 * into them.
 *
 * Run with BITSLAB_BACKGROUND_PURGE=1 and BITSLAB_PURGE_DELAY_MS=0 (the meson
 * test sets them: options are read at load), so owners donate the free bins
 * of their sparse slabs to the remote maps and the purger thread wakes every
 * 10 ms. Besides that thread, purgers the test runs itself through
 * bitslab_debug_purger_pass() (P1..P7 on hinted slabs, no delay, no revisit
 * limit):
 *   - a dedicated thread, in a loop: mostly the slabs donated in the last
 *     2 ms (their owners are about to want them back), every 8th pass
 *     everything a purger may take;
 *   - each worker, one iteration in four: several purgers at once;
 *   - while the workers run, the main thread stops the dedicated purger for
 *     a millisecond at a time (park points), holding one slab's bins (P1..P3)
 *     or, one time in four, with them given back but not announced and its
 *     superpage pinned (P5..P6): a purger preempted at its worst moments.
 * Debug builds only (those hooks and the race-window counters); other
 * builds skip it (77).
 *
 * Each of THREADS workers, per iteration:
 *   - allocates a batch of one small size (16 B .. 8 KiB; 3 and 5 KiB bins
 *     straddle pages) of about 2.5 slabs, every block self-describing (size,
 *     tag and pattern written at malloc; calloc'd ones checked zero first);
 *   - frees 7/8 of it locally, at random or (every other batch) all but
 *     every 8th in address order, so that each slab stops exactly at its 1/8
 *     level, its last free a donation: the slabs fall to 1/4 and 1/8 live,
 *     are donated, and the purgers madvise the pages whose bins they hold,
 *     right next to the 1/8 still in use;
 *   - allocates half a batch more of that size and frees it: the active
 *     slab runs out, and the reclaim loop merges the slabs just donated,
 *     perhaps while a purger holds their bins;
 *   - swaps a third of the survivors into a shared array of slots and frees
 *     what it gets back (remote frees into the other workers' heaps, which
 *     the purgers take from their queued superpages too);
 *   - verifies every block it still holds (the survivors of its last KEEP
 *     batches): a page purged under a live block would read back zero;
 *   - frees the oldest batch of survivors.
 *
 * At the end everything is freed, the purgers stop (all but the purger
 * thread, which finds nothing left to take), and stress_finish requires
 * nothing in use or pending, every superpage back in the orphanage,
 * committed memory down to the headers (and resident pages, by mincore,
 * within it) and a bound on superpages that does not depend on the rounds
 * (every freed bin was reused); every worker ran
 * the heap invariant checker before it exited. The purger's race windows
 * are required: like stress_windows, it goes on (up to EXTRA_REPS more
 * rounds) until each was hit, and fails if one never was.
 *
 * Usage: stress_purger [ITERATIONS]
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stress_util.h"

#if !BITSLAB_DEBUG
int main(void)
{
    puts("purger: needs a -Ddebug_checks=true build (the debug purger, the race-window counters); skipped");
    return 77; /* meson: skipped */
}
#else
#include "internal.h" /* bitslab_debug_purger_pass, bitslab_debug_unhinted_remote */

#define THREADS 4
#define KEEP 4                     /* batches of survivors a worker holds */
#define BATCH_BYTES (160u << 10)   /* about 2.5 slabs of one class */
#define MAX_BATCH 4096u            /* 64 KiB of 16-byte blocks: a batch of those is 1 slab */
#define SLOTS 512
#define EXTRA_REPS 20

static const size_t sizes[] = {16, 48, 64, 112, 256, 640, 1024, 3072, 5120, 8192};
#define NSIZES (sizeof sizes / sizeof *sizes)

static size_t ITERS = 150;
static _Atomic(void *) slots[SLOTS]; /* self-describing blocks passed between workers */
static stress_barrier_t start_line;
static atomic_bool purging; /* the debug purger thread runs while set */
static atomic_uint workers_left;
static size_t stalls; /* times the debug purger was stopped holding bins or inflight */

typedef struct batch {
    void *p[MAX_BATCH];
    size_t n;
} batch_t;

typedef struct worker {
    unsigned id;
    unsigned rep;
    batch_t kept[KEEP]; /* survivors of the last KEEP iterations */
    batch_t fresh, more;
    size_t order[MAX_BATCH];
} worker_t;

static worker_t *workers; /* libc memory: not part of the figures */

static void verify_all(batch_t *b, const char *what)
{
    for (size_t i = 0; i < b->n; i++) stress_block_verify(b->p[i], what);
}

static void free_batch(batch_t *b, stress_rng_t *r, const char *what)
{
    for (size_t i = 0; i < b->n; i++) stress_free(b->p[i], stress_block_verify(b->p[i], what), r);
    b->n = 0;
}

/* Swap p into a random slot; free what was there (usually another worker's
 * block: a remote free). */
static void swap_out(void *p, stress_rng_t *r)
{
    void *q = atomic_exchange(&slots[stress_below(r, SLOTS)], p); /* seq_cst: publishes p's contents */
    if (q) stress_free(q, stress_block_verify(q, "slot block"), r);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    stress_rng_t r = stress_rng(1000u * w->rep + w->id);
    stress_barrier_wait(&start_line);
    for (size_t it = 0; it < ITERS; it++) {
        size_t size = sizes[stress_below(&r, NSIZES)];
        size_t n = BATCH_BYTES / size;
        if (n > MAX_BATCH) n = MAX_BATCH;
        batch_t *b = &w->fresh;
        b->n = n;
        for (size_t i = 0; i < n; i++) {
            /* calloc now and then: a bin of a page a purger gave back must
             * read zero (stress_alloc checks), like any reused bin. */
            b->p[i] = stress_alloc(stress_chance(&r, 10) ? API_CALLOC : API_MALLOC, size, 0);
            stress_block_fill(b->p[i], size, stress_rand(&r));
            w->order[i] = i;
        }
        for (size_t i = n - 1; i > 0; i--) { /* a random order */
            size_t j = stress_below(&r, i + 1), t = w->order[i];
            w->order[i] = w->order[j];
            w->order[j] = t;
        }
        /* 7/8 freed locally (see the top): every other batch all but every
         * 8th block in address order, so that each slab stops at its 1/8
         * level with no local free bin. */
        bool regular = it & 1;
        batch_t *k = &w->kept[it % KEEP];
        free_batch(k, &r, "oldest survivor");
        for (size_t i = 0; i < n; i++) {
            void *p = b->p[regular ? i : w->order[i]];
            if (i % 8 == 0) k->p[k->n++] = p;
            else stress_free(p, stress_block_verify(p, "batch block"), &r);
        }
        /* Workers purge too (other heaps' slabs and their own): several
         * purgers at once, on the same slabs. */
        if (it % 4 == w->id % 4) bitslab_debug_purger_pass(0);
        /* Half a batch more of the same size, at once: the active slab runs
         * out and the reclaim loop merges the slabs just donated, which a
         * purger may hold right now (then they wait as FULL). Freed again
         * after a check. */
        if (regular) stress_relax(); /* let the purger find the fresh donations */
        batch_t *more = &w->more;
        more->n = n / 2;
        for (size_t i = 0; i < more->n; i++) {
            more->p[i] = stress_alloc(API_MALLOC, size, 0);
            stress_block_fill(more->p[i], size, stress_rand(&r));
        }
        free_batch(more, &r, "refill block");
        /* A third of the survivors go to the slots (remote frees). */
        size_t kept = 0;
        for (size_t i = 0; i < k->n; i++) {
            if (stress_chance(&r, 33)) swap_out(k->p[i], &r);
            else k->p[kept++] = k->p[i];
        }
        k->n = kept;
        for (unsigned j = 0; j < KEEP; j++) verify_all(&w->kept[j], "survivor");
    }
    for (unsigned j = 0; j < KEEP; j++) free_batch(&w->kept[j], &r, "last survivor");
    bitslab_collect();
    stress_debug_check();
    atomic_fetch_sub(&workers_left, 1);
    return NULL;
}

static atomic_size_t passes, pages_purged;

static void *purger_thread(void *arg)
{
    (void)arg;
    bitslab_debug_park_self(1); /* the main thread stops it now and then (run_rep) */
    while (atomic_load_explicit(&purging, memory_order_relaxed)) {
        size_t n = atomic_fetch_add_explicit(&passes, 1, memory_order_relaxed);
        /* Mostly the slabs donated in the last 2 ms, which their owners are
         * about to take back; every 8th pass everything a purger may take. */
        atomic_fetch_add_explicit(&pages_purged, bitslab_debug_purger_pass(n % 8 ? 2 : 0), memory_order_relaxed);
    }
    return NULL;
}

static void run_rep(unsigned rep)
{
    atomic_store(&purging, true);
    pthread_t pt = stress_spawn(purger_thread, NULL);
    pthread_t t[THREADS];
    stress_barrier_init(&start_line, THREADS);
    atomic_store(&workers_left, THREADS);
    for (unsigned i = 0; i < THREADS; i++) {
        workers[i].id = i;
        workers[i].rep = rep;
        t[i] = stress_spawn(worker_main, &workers[i]);
    }
    /* Meanwhile, stall the debug purger: stop it for a millisecond holding
     * bins (P1..P3), or, one time in four, with its bins given back but not
     * announced and inflight held (P5..P6), while the workers go on. A
     * preempted purger at its worst moments: owners merge around it, reclaim
     * the slabs it holds, free into its words, try to release its superpage. */
    for (unsigned k = 0; atomic_load(&workers_left); k++) {
        bitslab_debug_park_arm(k % 4 == 3 ? PARK_PURGER_BEFORE_NOTIFY : PARK_PURGER_HOLDING);
        while (!bitslab_debug_park_parked() && atomic_load(&workers_left)) stress_relax();
        if (!bitslab_debug_park_parked()) {
            if (bitslab_debug_park_disarm()) break; /* nobody took it */
            while (!bitslab_debug_park_parked()) stress_relax(); /* taken just now: it is parking */
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
        bitslab_debug_park_release();
        stalls++;
    }
    for (unsigned i = 0; i < THREADS; i++) stress_join(t[i]);
    stress_barrier_destroy(&start_line);
    atomic_store(&purging, false);
    stress_join(pt);
    stress_rng_t r = stress_rng(77 + rep);
    for (unsigned i = 0; i < SLOTS; i++) { /* remote frees into the exited workers' heaps */
        void *q = atomic_exchange(&slots[i], NULL);
        if (q) stress_free(q, stress_block_verify(q, "slot block"), &r);
    }
    stress_print_stats("round");
}

/* A quiescent process has no remote bit that no hint (a notification, a
 * sparse mark) names: nobody would ever merge it. The first version left
 * the bins of a donated slab that was reactivated with local free bins so
 * (stress/purger_regressions.c, cases activated and refilled). */
static void orphaned_donations(void)
{
    bitslab_collect();
    stress_drain_abandoned();
    bitslab_collect();
    size_t n = bitslab_debug_unhinted_remote(0);
    for (int i = 0; n && i < 5; i++) { /* a purger between P5 and P6 has not announced its bins yet */
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        n = bitslab_debug_unhinted_remote(0);
    }
    if (n) stress_fail("%zu free bins in remote maps that no hint names: nobody will ever merge them", n);
}

/* The purger thread never stops: it may hold bins of an abandoned heap just
 * as the final check runs. Collect (and adopt) until nothing is in use,
 * pending or owned, waiting 20 ms between tries, before stress_finish checks
 * the same strictly. */
static void settle(void)
{
    for (int i = 0; i < 50; i++) {
        bitslab_collect();
        bitslab_stats_t st = {.struct_size = sizeof st};
        bitslab_stats(&st);
        if (!st.in_use && !st.remote_frees_pending && !st.superpages_owned) return;
        stress_drain_abandoned();
        bitslab_collect();
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    stress_init("purger");
    if (argc > 1) ITERS = (size_t)atol(argv[1]);
    ITERS = stress_scaled(ITERS);
    const char *bg = getenv("BITSLAB_BACKGROUND_PURGE"), *delay = getenv("BITSLAB_PURGE_DELAY_MS");
    stress_log("%u workers, %zu iterations, a debug purger hammering; BITSLAB_BACKGROUND_PURGE=%s "
               "BITSLAB_PURGE_DELAY_MS=%s",
               THREADS, ITERS, bg ? bg : "(unset)", delay ? delay : "(unset)");
    /* Without the option nothing is donated (slab_went_sparse): half the
     * protocol would not run. */
    long on = 0;
    if (bitslab_option_get("background_purge", &on) != 0 || on != 1)
        stress_fail("run with BITSLAB_BACKGROUND_PURGE=1 (the meson test sets it)");
    workers = calloc(THREADS, sizeof *workers);
    if (!workers) stress_fail("out of memory");
    /* The purger's windows (docs/purger.md, "Why it is safe"): it took bins
     * and purged pages next to live blocks; a free landed in a word it held
     * (P5 must OR); the owner merged while it held donated bins, and its
     * reclaim loop left a slab FULL for it; its notification (P6) queued the
     * superpage itself; purged pages were handed out again. */
    static const char *const required[] = {"purger_took_bins",        "purger_purged_pages",
                                           "free_while_purger_held",  "merge_while_purger_held",
                                           "reclaim_waits_for_purger", "purger_notify_pushed",
                                           "purged_slab_activated",   NULL};
    unsigned rep = 0;
    for (; stress_more_rounds(rep, 1) || (rep <= EXTRA_REPS && stress_windows_missing(required)); rep++) {
        run_rep(rep);
        stress_debug_windows(required);
    }
    stress_log("debug purger: %zu passes, %zu pages purged, stopped %zu times", atomic_load(&passes),
               atomic_load(&pages_purged), stalls);
    if (stress_windows_missing(required))
        stress_fail("%u required race window(s) never reached in %u rounds", stress_windows_missing(required), rep);
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    STRESS_CHECK(st.purged_bytes > 0, "the purger was on and nothing was ever purged");
    orphaned_donations();
    settle();
    stress_bounds_t b = {.max_superpages = 24, .targets = required}; /* 5 to 8 seen */
    /* What the kernel says (mincore), once everything is back: nothing of
     * the purged pages resident behind the statistics' back. */
    bitslab_stats(&st);
    stress_log("settled: resident %zu KiB, committed %zu KiB", st.resident >> 10, st.committed >> 10);
    STRESS_CHECK(st.resident <= st.committed, "resident %zu bytes above committed %zu", st.resident, st.committed);
    stress_finish(&b);
    free(workers);
    return 0;
}
#endif
