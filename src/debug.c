/*
 * debug.c: race-window counters and the heap invariant checker, compiled in
 * with -Ddebug_checks=true (BITSLAB_DEBUG=1). Release builds have neither.
 */
#include "internal.h"

#if BITSLAB_DEBUG
#include <stdio.h>

static _Atomic uint64_t window_hits[WIN_COUNT];

static const char *const window_names[WIN_COUNT] = {
    "remote_free_during_drain",  "release_deferred_inflight", "release_deferred_queued",
    "queue_producer_stalled",    "orphan_cas_retry",          "heap_pool_cas_retry",
    "free_into_abandoned_heap",  "adopt_with_pending_remote",
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

static void check(bool ok, const char *what, const void *p)
{
    if (!ok) bitslab_fatal(what, p);
}

/* Invariants of the calling thread's heap (owner-only data, so exact):
 *  - a slab's used count equals its bins minus the free bits in local[];
 *  - no bit is set in both local[] and remote[] (would be a double free);
 *  - superpages with free slabs precede those without; every superpage's
 *    owner is this heap; nempty matches. */
void debug_check_heap(heap_t *h)
{
    size_t nsp = 0, nempty = 0;
    bool seen_full = false;
    for (superpage_t *sp = h->superpages; sp; sp = sp->next) {
        nsp++;
        /* Relaxed: owner-side check of its own superpages. */
        check(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h, "invariant: superpage owner", sp);
        if (!sp->free_mask) seen_full = true;
        else check(!seen_full, "invariant: superpage list order", sp);
        if (sp->free_mask == DATA_SLABS_MASK) nempty++;
        for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) {
            slab_t *s = &sp->slabs[i];
            /* Relaxed: the owner's own field. */
            uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
            check(((sp->free_mask >> i) & 1) == (kind == SLAB_FREE), "invariant: free mask vs slab kind", s);
            if (kind != SLAB_SMALL && kind != SLAB_WIDE) continue;
            uint32_t free_bits = 0;
            for (unsigned w = 0; w < s->nwords; w++) {
                free_bits += popcount64(s->local[w]);
                /* Relaxed: a bit arriving now is not yet counted as free anyway. */
                uint64_t r = atomic_load_explicit(&s->remote[w], memory_order_relaxed);
                check(!(r & s->local[w]), "invariant: bin free in both bitmaps (double free)", s->data);
            }
            check(slab_used(s) + free_bits == s->nbins, "invariant: used + free bits != bins", s->data);
        }
    }
    check(nsp == h->nsuperpages, "invariant: superpage count", h);
    check(nempty == h->nempty, "invariant: empty superpage count", h);
}

void bitslab_debug_check(void)
{
    heap_t *h = bitslab_tls_heap;
    if (!h->is_static) debug_check_heap(h);
}
#endif
