/*
 * debug.h: the debug build's race-window counters, park points and test API
 * (debug.c, debug_api.c); in a release build DEBUG_COUNT and DEBUG_PARK are
 * nothing.
 */
#ifndef BITSLAB_DEBUG_H
#define BITSLAB_DEBUG_H

#include "types.h"

#pragma GCC visibility push(hidden)

#if BITSLAB_DEBUG
enum debug_window {
    WIN_REMOTE_FREE_DURING_DRAIN,   /* remote bit set while the owner merges that slab */
    WIN_RELEASE_DEFERRED_INFLIGHT,  /* owner saw an empty superpage with a freer in flight */
    WIN_RELEASE_DEFERRED_QUEUED,    /* owner saw an empty superpage still queued */
    WIN_QUEUE_PRODUCER_STALLED,     /* drain met a half-linked queue node */
    WIN_ORPHAN_CAS_RETRY,           /* orphanage push/pop lost a CAS race */
    WIN_HEAP_POOL_CAS_RETRY,        /* abandoned-heap pool lost a CAS race */
    WIN_FREE_INTO_ABANDONED_HEAP,   /* remote free into a heap whose thread exited */
    WIN_ADOPT_WITH_PENDING_REMOTE,  /* adopter found remote frees waiting */
    WIN_QUEUED_EXCHANGE_LOST,       /* F4: queued read 0, but another freer won the exchange */
    WIN_EMPTY_POP,                  /* drain popped a superpage whose mask an earlier D2 took */
    WIN_SHRINK_WALKER_SEEN,         /* an orphan's shrink saw a registry walker (S2) and left it mapped */
    WIN_REFILL_WHILE_PURGER_HOLDS,  /* a refill passed over a slab a purger holds bins of */
    WIN_EMPTY_WHILE_PURGER_HOLDS,   /* an empty slab stayed configured: a purger holds bins of it */
    /* The purger (docs/purger.md). A release deferred by a purger between P4
     * and P7 counts as WIN_RELEASE_DEFERRED_INFLIGHT, like a freer's (the
     * park test tells them apart: stress/park.c, purger points). */
    WIN_PURGER_TOOK_BINS,           /* P1 took at least one bin of a slab */
    WIN_PURGER_PURGED_PAGES,        /* P3 gave back at least one page of a slab in use */
    WIN_FREE_WHILE_PURGER_HELD,     /* P5 found bits it had not taken in a word it held bins of */
    WIN_PURGER_NOTIFY_PUSHED,       /* P6: the purger's F4 won the queued exchange and pushed */
    WIN_MERGE_WHILE_PURGER_HELD,    /* owner merge found fewer bins than the slab donated */
    WIN_RECLAIM_WAITS_FOR_PURGER,   /* reclaim loop: a donated slab's bins all held, it waits as FULL */
    WIN_PURGED_SLAB_ACTIVATED,      /* a slab with purged pages becomes active: they are handed out again */
    WIN_COUNT
};
void debug_count(enum debug_window w);

/* Park points: a debug build can stop one chosen thread at any of these
 * protocol steps (test hooks for lock-freedom; see stress/park.c). */
enum debug_park_point {
    PARK_REMOTE_AFTER_F1,   /* remote free: inflight incremented, bit not set */
    PARK_REMOTE_AFTER_F2,   /* remote free: bit set, remote_slabs not yet */
    PARK_REMOTE_AFTER_F3,   /* remote free: remote_slabs set, queued not yet looked at */
    PARK_REMOTE_BEFORE_CLAIM, /* remote free: queued read 0, its exchange not done */
    PARK_REMOTE_BEFORE_PUSH, /* remote free: queued 0 -> 1 claimed, before the push */
    PARK_QUEUE_LINK,        /* queue push: after the exchange, before the link store */
    PARK_REMOTE_BEFORE_F5,  /* remote free: everything done but inflight-- */
    PARK_DRAIN_AFTER_POP,   /* owner drain: superpage popped, mask not cleared */
    PARK_ORPHAN_PUSH_CAS,   /* orphanage push: link written, before the CAS */
    PARK_ORPHAN_POP_CAS,    /* orphanage pop: next read, before the CAS */
    PARK_POOL_PUSH_CAS,     /* abandoned-heap push: before the CAS */
    PARK_POOL_POP_CAS,      /* abandoned-heap pop: next read, before the CAS */
    PARK_EXIT_COLLECTED,    /* thread exit: heap collected, not yet in the pool */
    PARK_REFILL_MIDWAY,     /* word-cache refill: bits loaded, base not yet (tests/test_fork_park.c) */
    PARK_HEAP_NEW_MIDWAY,   /* heap_new: queue set up, id not yet (tests/test_fork_park.c) */
    PARK_PURGER_HOLDING,    /* purger: bins taken from a remote map (P1), pages not yet purged */
    PARK_PURGER_BEFORE_NOTIFY, /* purger: bins given back (P5), no notification yet (P6) */
    PARK_PURGER_BEFORE_P7,  /* purger: notified (P6), inflight not yet decremented (P7) */
    PARK_MERGE_PEEKED,      /* owner merge: a remote word peeked non-zero, not yet exchanged */
    PARK_COUNT
};
void debug_park(enum debug_park_point point);
/* Test API. The calling thread may be parked (on != 0) or not. */
BITSLAB_API void bitslab_debug_park_self(int on);
/* Arm one park point: the next eligible thread reaching it stops there. */
BITSLAB_API void bitslab_debug_park_arm(int point);
/* Take back an armed point nobody reached yet: 1 if it was (no thread
 * will park), 0 if none was armed or a thread took it (it parks, or is
 * parked: release it once bitslab_debug_park_parked says so). */
BITSLAB_API int bitslab_debug_park_disarm(void);
/* 1 while a thread is parked (at the point armed last). */
BITSLAB_API int bitslab_debug_park_parked(void);
/* Let the parked thread go on (the one at the point armed last). */
BITSLAB_API void bitslab_debug_park_release(void);
/* The same for a given point: with two points armed in turn, two threads
 * can be parked at once, and released in either order. */
BITSLAB_API int bitslab_debug_park_parked_at(int point);
BITSLAB_API void bitslab_debug_park_release_at(int point);
BITSLAB_API const char *bitslab_debug_park_name(int point);
#define DEBUG_PARK(p) debug_park(p)
/* For tests: names and hit counts of the race windows; returns WIN_COUNT. */
BITSLAB_API unsigned bitslab_debug_windows(const char **names, uint64_t *hits, unsigned max);
/* For tests: run the invariant checker on the calling thread's heap. */
BITSLAB_API void bitslab_debug_check(void);
/* For tests: one purger pass by the calling thread, any thread, with no
 * delay and no revisit limit: purger_pass(now, 0), then P1..P7
 * (purger_take_and_purge) on every slab of every superpage that has a
 * sparse mark or a remote notification, whatever its dates. With
 * fresh_ms > 0, only the sparse slabs of superpages that had one marked in
 * the last fresh_ms ms (just donated: the owner is likely to want them
 * back). Returns the pages decommitted. The calling thread may park at the
 * purger's points. */
BITSLAB_API unsigned bitslab_debug_purger_pass(unsigned fresh_ms);
/* For tests: the bins set in remote maps of slabs that neither hint names
 * (no sparse mark, no remote_slabs bit): no drain, scan, sparse purge or
 * purger_pass looks there, so in a quiescent process they are bins nobody
 * will merge. With take != 0, also runs P1..P7 on those slabs (the purger's
 * notification, P6, then brings them to their owner). */
BITSLAB_API size_t bitslab_debug_unhinted_remote(int take);
#define DEBUG_COUNT(w) debug_count(w)
#else
#define DEBUG_COUNT(w) ((void)0)
#define DEBUG_PARK(p) ((void)0)
#endif

#pragma GCC visibility pop

#endif /* BITSLAB_DEBUG_H */
