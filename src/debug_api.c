/*
 * debug_api.c: the debug build's test entry points that look at whole
 * heaps: the heap invariant checker (bitslab_debug_check) and the purger
 * driven by hand (bitslab_debug_purger_pass, bitslab_debug_unhinted_remote).
 * Compiled in with -Ddebug_checks=true (BITSLAB_DEBUG=1).
 */
#include "debug.h"
#include "error.h"
#include "heap.h"
#include "orphanage.h"
#include "os.h"
#include "purger.h"
#include "superpage.h"

#if BITSLAB_DEBUG

static void check(bool ok, const char *what, const void *p)
{
    if (!ok) bitslab_fatal(what, p);
}

/* Invariants of the calling thread's heap (owner-only data, so exact):
 *  - every bin is in exactly one place: live, the local map, the remote map,
 *    or the heap's word cache; so taken + local free bits == bins, where taken
 *    includes the cached and the remotely freed ones;
 *  - no bit is set in two of the maps (that would be a double free);
 *  - summary names every non-empty local word;
 *  - superpages with free slabs precede those without; every superpage's
 *    owner is this heap; nempty matches; free_mask matches the slab kinds. */
static void debug_check_heap(heap_t *h)
{
    for (unsigned c = 0; c < NUM_CLASSES; c++) { /* the partial lists, both ends */
        slab_t *last = NULL;
        for (slab_t *s = h->partial[c]; s; s = s->next) {
            check(s->prev == last && s->state == STATE_PARTIAL && s->cls == c, "invariant: partial list links", s);
            last = s;
        }
        check(h->partial_tail[c] == last, "invariant: partial list tail", h);
    }
    size_t nsp = 0, nempty = 0, dirty_free = 0, slabs_used = 0;
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
            check(!(slab_dirty(s) && slab_decommitted(s)), "invariant: a dirty slab is decommitted", s);
            if (kind == SLAB_FREE && slab_dirty(s) && !s->decommit_failed) dirty_free++;
            if (kind == SLAB_SMALL || kind == SLAB_WIDE || kind == SLAB_WIDE_TAIL) slabs_used++;
            if (kind != SLAB_SMALL && kind != SLAB_WIDE) continue;
            /* Relaxed: as above. */
            check(atomic_load_explicit(&s->heap, memory_order_relaxed) == h, "invariant: slab owner", s);
            uint64_t cached = 0;
            unsigned cached_word = BITMAP_WORDS;
            if (kind == SLAB_SMALL && h->active[s->cls] == s) {
                cached = h->cache[s->cls].bits;
                cached_word = h->cache[s->cls].word;
            }
            uint32_t free_bits = 0;
            for (unsigned w = 0; w < s->nwords; w++) {
                uint64_t l = sp->local[i][w];
                free_bits += popcount64(l);
                check(!l || (s->summary >> w) & 1, "invariant: summary misses a free word", s->data);
                /* Relaxed: a bit arriving now is not yet counted as free anyway. */
                uint64_t r = atomic_load_explicit(&sp->remote[i][w], memory_order_relaxed);
                check(!(r & l), "invariant: bin free in both bitmaps (double free)", s->data);
                if (w == cached_word) check(!(cached & (l | r)), "invariant: cached bin also free in a map", s->data);
            }
            check(slab_taken(s) + free_bits == s->nbins, "invariant: taken + free bits != bins", s->data);
            check(slab_taken(s) >= popcount64(cached), "invariant: cached bins not counted as taken", s->data);
            if (kind == SLAB_SMALL && (s->state == STATE_ACTIVE || s->state == STATE_FULL))
                check(s->donated == 0, "invariant: an active or full slab has donated bins", s->data);
            /* The free fast path's trigger (slab_retrigger): below `taken`, so
             * that frees reach it, and "was full" for a FULL slab. */
            if (kind == SLAB_SMALL && s->state == STATE_FULL)
                check(s->trigger == s->nbins - 1 && slab_taken(s) == s->nbins, "invariant: FULL slab's trigger", s->data);
            else
                check(s->trigger < slab_taken(s) || (s->trigger == 0 && slab_taken(s) == 0), "invariant: trigger not below taken",
                      s->data);
        }
    }
    check(nsp == h->nsuperpages, "invariant: superpage count", h);
    /* free's table of owned superpages: every entry in its slot, and one of
     * h's (a stale one would let free take another heap's block for h's);
     * a slot is empty only if none of h's superpages has it. */
    for (unsigned i = 0; i < HEAP_OWNED_SLOTS; i++) {
        uintptr_t n = h->owned[i];
        bool listed = false, slot_used = false;
        for (superpage_t *sp = h->superpages; sp; sp = sp->next) {
            uintptr_t m = (uintptr_t)sp >> SUPERPAGE_SHIFT;
            listed |= m == n;
            slot_used |= m % HEAP_OWNED_SLOTS == i;
        }
        if (n == OWNED_NONE) check(!slot_used, "invariant: a superpage's slot of the owned table is empty", h);
        else check(n % HEAP_OWNED_SLOTS == i && listed, "invariant: owned table names a superpage the heap does not own", h);
    }
    check(nempty == h->nempty, "invariant: empty superpage count", h);
    check(dirty_free == h->dirty_free, "invariant: dirty free slab count", h);
    check(slabs_used == h->slabs_used, "invariant: configured slab count", h);
}

void bitslab_debug_check(void)
{
    heap_t *h = bitslab_tls_heap;
    if (!h->is_placeholder) debug_check_heap(h);
}

unsigned bitslab_debug_purger_pass(unsigned fresh_ms)
{
    uint32_t now = os_now_ms();
    unsigned pages = fresh_ms ? 0 : purger_pass(now, 0);
    // Acquire: pairs with the release CAS that published each superpage
    // (superpage_map), as in purger_pass; all_next never changes.
    superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire);
    orphanage_walk_begin(); /* no orphan is unmapped under us (orphan_shrink) */
    for (; sp; sp = sp->all_next) {
        if (!orphanage_walkable(sp)) continue;
        /* Relaxed (three loads): hints, as in purger_pass; P1 decides. */
        uint32_t take = atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed);
        /* relaxed, as above: hints, as in purger_pass */
        if (fresh_ms && now - atomic_load_explicit(&sp->sparse_at, memory_order_relaxed) > fresh_ms) take = 0;
        /* relaxed, as above: hints, as in purger_pass */
        if (!fresh_ms) take |= atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed);
        /* From the highest slab down: the owner's partial lists are LIFO and
         * its slabs were configured from the lowest up, so the slab it will
         * want back first is more likely held first. */
        for (take &= DATA_SLABS_MASK; take;) {
            unsigned i = 31u - (unsigned)__builtin_clz(take);
            take &= ~(1u << i);
            pages += purger_take_and_purge(sp, i);
        }
    }
    orphanage_walk_end();
    return pages;
}

size_t bitslab_debug_unhinted_remote(int take)
{
    size_t bins = 0;
    /* Acquire: as in bitslab_debug_purger_pass. */
    superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire);
    orphanage_walk_begin(); /* no orphan is unmapped under us (orphan_shrink) */
    for (; sp; sp = sp->all_next) {
        if (!orphanage_walkable(sp)) continue;
        // Relaxed: an orphan has no configured slab (and its bitmap pages
        // are decommitted: not read, not faulted in).
        if (!atomic_load_explicit(&sp->heap, memory_order_relaxed)) continue;
        /* Relaxed (two loads): the hints, read as purger_pass reads them. */
        uint32_t hinted = atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed) |
                          /* relaxed, as above: the hints, read as purger_pass reads them */
                          atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed);
        for (uint32_t m = DATA_SLABS_MASK & ~hinted; m; m &= m - 1) {
            unsigned i = ctz64(m), n = 0;
            for (unsigned w = 0; w < BITMAP_WORDS; w++)
                /* Relaxed: a count; what is taken is decided by P1's exchange. */
                n += popcount64(atomic_load_explicit(&sp->remote[i][w], memory_order_relaxed));
            bins += n;
            if (n && take) purger_take_and_purge(sp, i);
        }
    }
    orphanage_walk_end();
    return bins;
}

#endif /* BITSLAB_DEBUG */
