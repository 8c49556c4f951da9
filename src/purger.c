/*
 * purger.c: returning the free pages of heaps whose owners stopped calling
 * the allocator (docs/purger.md).
 *
 * A bin whose bit is set in a slab's remote map belongs to nobody, so any
 * thread may take it with the exchange the owner's merge uses (P1), give
 * back the 4 KiB pages all of whose bins it took (P3), and free the bins
 * again exactly as a remote freer does (P4..P7: inflight, an OR per word,
 * F3 and F4, inflight). The owner never waits for it: its drain merges the
 * bins whenever they come back. Two kinds of bins are there: remote frees an
 * idle owner has not merged, and the free bins of sparse slabs that their
 * owner donated (slab_donate) when the purger thread is on.
 *
 * The purger thread (option background_purge, off by default: a library
 * does not start threads behind a program's back unless asked) wakes every
 * purge_delay_ms / 2 and looks at every superpage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "purger.h"
#include "debug.h"
#include "error.h"
#include "huge.h"
#include "options.h"
#include "orphanage.h"
#include "os.h"
#include "remote.h"
#include "slab.h"
#include "superpage.h"

/* Take the remote bins of slab i of sp, decommit the pages they cover
 * wholly, and free them again (docs/purger.md, P1..P7). Returns the pages
 * decommitted. Any thread, any superpage. */
unsigned purger_take_and_purge(superpage_t *sp, unsigned i)
{
    BITSLAB_ASSERT(i >= 1 && i < SLABS_PER_SUPERPAGE); /* a data slab */
    BITSLAB_ASSERT(((uintptr_t)sp & (SUPERPAGE_SIZE - 1)) == 0);
    _Atomic uint64_t *remote = sp->remote[i];
    slab_t *s = &sp->slabs[i];
    uint64_t held[BITMAP_WORDS], any = 0;
    // P0. Seq_cst: a Dekker pair with the owner's two reads around its look
    // at the remote map (slab_purgers): the owner hands out no bin of s, and
    // does not make s FREE, while we may hold bits of it, some of which may
    // be stale (bins freed twice), nor if we came and went while it looked.
    atomic_fetch_add_explicit(&s->purgers, PURGER_P0, memory_order_seq_cst);
    for (unsigned w = 0; w < BITMAP_WORDS; w++) {
        held[w] = 0;
        // Relaxed peek: a word that reads 0 has nothing for us (and we do not
        // write, and so fault in, a decommitted metadata page).
        if (!atomic_load_explicit(&remote[w], memory_order_relaxed)) continue;
        // P1. Acquire: pairs with the release of whoever set the bits (F2, a
        // donation, a purger's P5), so the slab's configuration and their
        // writes to the bins happen before we read and decommit.
        held[w] = atomic_exchange_explicit(&remote[w], 0, memory_order_acquire);
        any |= held[w];
    }
    if (!any) {
        /* P8, early. Release (pairs with slab_purgers): nothing taken, nothing to order. */
        atomic_fetch_sub_explicit(&s->purgers, 1, memory_order_release);
        return 0;
    }
    DEBUG_COUNT(WIN_PURGER_TOOK_BINS);
    // Between P0 and P8 the low 8 bits of `purgers` count us: at most 255
    // purgers on one slab at once, or the count would carry into the visits.
    // Relaxed: a check of a count that includes our own P0.
    BITSLAB_ASSERT((atomic_load_explicit(&s->purgers, memory_order_relaxed) & 0xFFu) != 0);
    DEBUG_PARK(PARK_PURGER_HOLDING);
    char *data = (char *)sp + (uintptr_t)i * SLAB_SIZE;
    // P2. While we hold bins the slab keeps its configuration (its `taken`
    // counts them). Relaxed: ordered by P1. A wide block is not purged here.
    uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed, as above: ordered by P1 */
    unsigned pages = kind == SLAB_SMALL ? slab_decommit_pages(s, slab_free_pages(s, held)) : 0; /* P3 */
    BITSLAB_ASSERT(pages <= SLAB_SIZE / OS_PAGE);
    if (pages) DEBUG_COUNT(WIN_PURGER_PURGED_PAGES);
    // P4 (F1). Relaxed: P5's release orders it before any owner that merges
    // our bits; that owner then reads inflight >= 1 until P7.
    atomic_fetch_add_explicit(&sp->inflight, 1, memory_order_relaxed);
    for (unsigned w = 0; w < BITMAP_WORDS; w++) {
        if (!held[w]) continue;
        // P5. Release: pairs with the owner's acquire exchange (merge), as
        // F2. A bit set meanwhile is a bin freed while we held it.
        uint64_t old = atomic_fetch_or_explicit(&remote[w], held[w], memory_order_release);
        if (old & ~held[w]) DEBUG_COUNT(WIN_FREE_WHILE_PURGER_HELD); /* an OR, not a store, keeps them */
        if (unlikely(old & held[w]))
            bitslab_fatal("double free (freed again while the purger held it)",
                          data + (size_t)(w * 64 + ctz64(old & held[w])) * size);
    }
    // P8. Release, pairs with the owner's reads of purgers (slab_purgers):
    // the bins are back (P5) before the owner may hand out bins of s again
    // (it reads purgers after peeking at the remote map).
    atomic_fetch_sub_explicit(&s->purgers, 1, memory_order_release);
    DEBUG_PARK(PARK_PURGER_BEFORE_NOTIFY);
    remote_notify(sp, i, data); /* P6: F3, F4 */
    DEBUG_PARK(PARK_PURGER_BEFORE_P7);
    // P7 (F5). Release: pairs with the owner's acquire load of inflight
    // before a release (superpage_try_release).
    atomic_fetch_sub_explicit(&sp->inflight, 1, memory_order_release);
    return pages;
}

/* A superpage is looked at again at most this often: an owner that stays
 * idle leaves its sparse marks and queue entry as they were, and their pages
 * are purged already. */
#define PURGER_REVISIT_MS 1000u

/* One pass over every superpage: the sparse slabs marked at least `delay`
 * ms ago, and the remote frees of superpages queued at least that long ago
 * (their owner has not drained them). Returns the pages decommitted. */
unsigned purger_pass(uint32_t now, uint32_t delay)
{
    unsigned pages = 0;
    // Acquire: pairs with the release CAS that published each superpage
    // (superpage_map); all_next never changes after that.
    superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire);
    orphanage_walk_begin(); /* no orphan is unmapped under us (orphan_shrink) */
    for (; sp; sp = sp->all_next) {
        if (!orphanage_walkable(sp)) continue;
        // Relaxed (six loads): hints for where to look; what is taken is
        // decided by P1's exchanges.
        if (now - atomic_load_explicit(&sp->purger_at, memory_order_relaxed) < PURGER_REVISIT_MS) continue;
        /* relaxed, as above: hints for where to look */
        uint32_t take = atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed);
        /* relaxed, as above: hints for where to look */
        if (take && now - atomic_load_explicit(&sp->sparse_at, memory_order_relaxed) < delay) take = 0;
        if (atomic_load_explicit(&sp->queued, memory_order_relaxed) && /* relaxed, as above: hints for where to look */
            /* relaxed, as above: hints for where to look */
            now - atomic_load_explicit(&sp->queued_at, memory_order_relaxed) >= delay)
            /* relaxed, as above: hints for where to look */
            take |= atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed);
        take &= DATA_SLABS_MASK;
        if (!take) continue;
        // Relaxed: only purgers read it, as a hint. The sparse marks stay:
        // the owner's own purge (heap_purge_sparse) clears them.
        atomic_store_explicit(&sp->purger_at, now, memory_order_relaxed);
        for (uint32_t m = take; m; m &= m - 1) pages += purger_take_and_purge(sp, ctz64(m));
    }
    orphanage_walk_end();
    return pages;
}

/* ---- the thread ----------------------------------------------------------- */

enum { PURGER_OFF, PURGER_RUNNING, PURGER_RESTART };
static _Atomic int purger_state;

static void *purger_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signals go to its own threads */
    for (;;) {
        /* Relaxed: a setting. */
        int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
        uint32_t ms = delay < 20 ? 10 : delay / 2 > 1000 ? 1000 : (uint32_t)delay / 2;
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (delay < 0) continue;
        purger_pass(os_now_ms(), (uint32_t)delay);
        huge_cache_purge(PURGE_PERIODIC);
    }
    return NULL;
}

static void purger_create(void)
{
    pthread_attr_t attr;
    pthread_t t;
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&t, &attr, purger_main, NULL) == 0;
        pthread_attr_destroy(&attr);
    }
    // Relaxed: nobody waits for it; a failed start is tried again at the
    // next chance (purger_start_if_enabled).
    if (!ok) atomic_store_explicit(&purger_state, PURGER_OFF, memory_order_relaxed);
}

/* Start the purger thread if the option asks for it and it is not running
 * (after a fork, the child's first allocation slow path restarts it). Never
 * from inside a slow path: pthread_create allocates. */
void purger_start_if_enabled(void)
{
    /* Relaxed (two loads): a setting, and the state the CAS re-validates. */
    if (!atomic_load_explicit(&bitslab_background_purge, memory_order_relaxed)) return;
    /* relaxed, as above: a setting, and the state the CAS re-validates */
    int st = atomic_load_explicit(&purger_state, memory_order_relaxed);
    if (st == PURGER_RUNNING) return;
    /* Relaxed: the CAS only elects one starter; the thread reads nothing we wrote. */
    if (atomic_compare_exchange_strong_explicit(&purger_state, &st, PURGER_RUNNING, memory_order_relaxed,
                                                memory_order_relaxed))
        purger_create();
}

/* In a fork child: the thread did not come along. */
void purger_atfork_child(void)
{
    /* Relaxed: the child runs one thread now. */
    if (atomic_load_explicit(&purger_state, memory_order_relaxed) == PURGER_RUNNING)
        /* relaxed, as above: the child runs one thread now */
        atomic_store_explicit(&purger_state, PURGER_RESTART, memory_order_relaxed);
}

/* 1 if the child of a fork has still to restart the thread: one load, for
 * the allocation slow path. */
bool purger_wants_restart(void)
{
    /* Relaxed: a flag for this process's one restart. */
    return atomic_load_explicit(&purger_state, memory_order_relaxed) == PURGER_RESTART;
}
