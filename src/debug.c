/*
 * debug.c: race-window counters and park points, compiled in with
 * -Ddebug_checks=true (BITSLAB_DEBUG=1). Release builds have neither. The
 * invariant checker and the purger's test entry points are debug_api.c.
 */
#include "debug.h"

#if BITSLAB_DEBUG
#include <sched.h>

static _Atomic uint64_t window_hits[WIN_COUNT];

static const char *const window_names[WIN_COUNT] = {
    "remote_free_during_drain",  "release_deferred_inflight", "release_deferred_queued",
    "queue_producer_stalled",    "orphan_cas_retry",          "heap_pool_cas_retry",
    "free_into_abandoned_heap",  "adopt_with_pending_remote", "queued_exchange_lost", "empty_pop",
    "shrink_walker_seen",        "refill_while_purger_holds", "empty_while_purger_holds",
    "purger_took_bins",          "purger_purged_pages",       "free_while_purger_held",
    "purger_notify_pushed",      "merge_while_purger_held",   "reclaim_waits_for_purger",
    "purged_slab_activated",
};

void debug_count(enum debug_window w)
{
    /* Relaxed: an event counter; nothing is published through it. */
    atomic_fetch_add_explicit(&window_hits[w], 1, memory_order_relaxed);
}

unsigned bitslab_debug_windows(const char **names, uint64_t *hits, unsigned max)
{
    unsigned n = max < WIN_COUNT ? max : WIN_COUNT;
    for (unsigned i = 0; i < n; i++) {
        names[i] = window_names[i];
        /* Relaxed: a snapshot of the counters. */
        hits[i] = atomic_load_explicit(&window_hits[i], memory_order_relaxed);
    }
    return WIN_COUNT;
}

/* ---- park points ----------------------------------------------------------
 * Test infrastructure, not allocator code: a parked thread waits (yielding)
 * for the test to release it. The allocator itself never waits. */

static _Atomic int park_armed = -1; /* the armed point, -1 = none */
/* Per point, so that two threads can be parked at two points at once: 0 idle,
 * 1 a thread is parked there, 2 released, not yet gone. */
static _Atomic int park_state[PARK_COUNT];
static _Atomic int park_last = -1; /* the last point armed: what the calls without _at act on */
static _Thread_local int park_eligible;

static const char *const park_names[PARK_COUNT] = {
    "remote_after_F1",     "remote_after_F2",   "remote_after_F3",   "remote_before_claim", "remote_before_push",
    "queue_link",          "remote_before_F5",    "drain_after_pop",   "orphan_push_cas",   "orphan_pop_cas",
    "pool_push_cas",       "pool_pop_cas",      "exit_collected",
    "refill_midway",       "heap_new_midway",   "purger_holding",    "purger_before_notify",
    "purger_before_P7",    "merge_peeked",
};

const char *bitslab_debug_park_name(int point)
{
    return point >= 0 && point < PARK_COUNT ? park_names[point] : "?";
}

void bitslab_debug_park_self(int on) { park_eligible = on; }

void bitslab_debug_park_arm(int point)
{
    if (point < 0 || point >= PARK_COUNT) return;
    // A thread released from this point just now may not have seen it yet:
    // resetting the state under it would park it for good. Acquire: pairs
    // with its store on leaving.
    while (atomic_load_explicit(&park_state[point], memory_order_acquire) == 2) sched_yield();
    /* Relaxed (two stores): ordered before the arm by the release store below. */
    atomic_store_explicit(&park_state[point], 0, memory_order_relaxed);
    /* relaxed, as above: ordered before the arm by the release store below */
    atomic_store_explicit(&park_last, point, memory_order_relaxed);
    /* Release: pairs with the parking thread's acquire CAS. */
    atomic_store_explicit(&park_armed, point, memory_order_release);
}

int bitslab_debug_park_disarm(void)
{
    int armed = atomic_load_explicit(&park_armed, memory_order_relaxed); /* the CAS re-validates */
    if (armed < 0) return 0;
    /* Relaxed: on success nobody parks, nothing is published. */
    return atomic_compare_exchange_strong_explicit(&park_armed, &armed, -1, memory_order_relaxed, memory_order_relaxed);
}

int bitslab_debug_park_parked_at(int point)
{
    /* Acquire: pairs with the parked thread's release store. */
    return point >= 0 && point < PARK_COUNT && atomic_load_explicit(&park_state[point], memory_order_acquire) == 1;
}

void bitslab_debug_park_release_at(int point)
{
    /* Release: pairs with the parked thread's acquire load. */
    if (point >= 0 && point < PARK_COUNT) atomic_store_explicit(&park_state[point], 2, memory_order_release);
}

int bitslab_debug_park_parked(void)
{
    /* Relaxed: the test thread that armed reads back its own store. */
    return bitslab_debug_park_parked_at(atomic_load_explicit(&park_last, memory_order_relaxed));
}

void bitslab_debug_park_release(void)
{
    /* Relaxed: as in bitslab_debug_park_parked. */
    bitslab_debug_park_release_at(atomic_load_explicit(&park_last, memory_order_relaxed));
}

/* Set between the purger's PARK_PURGER_BEFORE_NOTIFY and PARK_PURGER_BEFORE_P7
 * (its P6, remote_notify): a push there (PARK_REMOTE_BEFORE_PUSH, reached
 * only by the F4 that won the queued exchange) is the purger's. */
static _Thread_local int purger_notifying;

void debug_park(enum debug_park_point point)
{
    if (point == PARK_PURGER_BEFORE_NOTIFY) purger_notifying = 1;
    else if (point == PARK_PURGER_BEFORE_P7) purger_notifying = 0;
    else if (point == PARK_REMOTE_BEFORE_PUSH && purger_notifying) debug_count(WIN_PURGER_NOTIFY_PUSHED);
    if (!park_eligible) return;
    int expected = (int)point;
    /* Acq_rel: one shot; pairs with the arm's release store. */
    if (!atomic_compare_exchange_strong_explicit(&park_armed, &expected, -1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return;
    /* Release: pairs with bitslab_debug_park_parked's acquire load. */
    atomic_store_explicit(&park_state[point], 1, memory_order_release);
    /* Acquire: pairs with bitslab_debug_park_release. */
    while (atomic_load_explicit(&park_state[point], memory_order_acquire) != 2) sched_yield();
    /* Gone: the point may be armed again. Release: pairs with the arm's wait. */
    atomic_store_explicit(&park_state[point], 0, memory_order_release);
}

#endif
