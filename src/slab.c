/*
 * slab.c: a slab's bins and its two bitmaps.
 *
 * A small slab is an array of `nbins` bins of `bin_size` bytes starting at
 * the slab's first byte. Its free state is two bitmaps, 1 bit per bin, kept
 * in the superpage's metadata slab (superpage_t.local / .remote):
 *
 *   local    owner-only, plain memory. 1 = free. The owner frees by setting
 *            a bit; to allocate, it moves a whole word of free bits into its
 *            heap's word cache (slab_load_word) and the fast path then clears
 *            bits there, lowest first.
 *   remote   atomic. 1 = freed by another thread and not merged yet. Remote
 *            freers set bits with fetch_add (wait-free: one lock xadd); the owner merges a
 *            word by exchanging it with 0 and OR-ing it into local.
 *
 * A bin is free iff its bit is set in exactly one of: the local map, the
 * remote map, the heap's word cache (for the cached word of the active
 * slab). A bit set in two of them is a double free.
 *
 * `summary` has bit w set when local word w may hold a free bin, so finding
 * the next word is one ctz. `taken` counts the bins not in the local map, so
 * taken == 0 means every bin is free and nothing is cached.
 *
 * Reconfiguration: an empty slab (no live bin, no remote bit, nothing
 * cached) goes back to its superpage as FREE and may take any class later.
 */
#include <string.h>

#include "slab.h"
#include "debug.h"
#include "error.h"
#include "os.h"
#include "sizeclass.h"

/* A slab about to become FREE, or to be configured, must have no remote bit
 * left: every legitimate remote free counts in `taken`, so a bit here when
 * taken == 0 is a free of a bin that was already free. Only the words of the
 * slab's last configuration (nwords, kept across slab_reset) can hold one: a
 * wide block's check is one word, not 64. */
void slab_check_no_remote(slab_t *s)
{
    BITSLAB_ASSERT(slab_is_record(s) && s->index != 0);
    BITSLAB_ASSERT(s->nwords <= BITMAP_WORDS);
    /* No live bin: a FREE slab (or a stale notification's), an empty wide
     * block or an empty small slab on its way back. */
    BITSLAB_ASSERT(slab_taken(s) == 0);
    _Atomic uint64_t *remote = slab_remote(s);
    for (unsigned w = 0; w < s->nwords; w++) {
        /* Relaxed peek, then acquire exchange: as in slab_merge_remote. */
        if (!atomic_load_explicit(&remote[w], memory_order_relaxed)) continue;
        /* Acquire: pairs with the freer's release fetch_add (F2; we only report). */
        uint64_t bits = atomic_exchange_explicit(&remote[w], 0, memory_order_acquire);
        if (bits) {
            uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed: own field */
            bitslab_fatal("double free (a bin freed by its owner was freed again by another thread)",
                          s->data + (size_t)(w * 64 + ctz64(bits)) * size);
        }
    }
}

void slab_configure_small(slab_t *s, heap_t *h, unsigned cls)
{
    BITSLAB_ASSERT(cls < NUM_CLASSES);
    BITSLAB_ASSERT(h && !h->is_placeholder);
    /* A FREE slab h has just taken out of its superpage's free mask
     * (superpage_take_slabs) and counted as in use (purge_slab_in_use). */
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_FREE && s->state == STATE_NONE);
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == NULL); /* relaxed: own field */
    BITSLAB_ASSERT(atomic_load_explicit(&superpage_of_slab(s)->heap, memory_order_relaxed) == h); /* relaxed: ours */
    BITSLAB_ASSERT(!((superpage_of_slab(s)->free_mask >> s->index) & 1));
    BITSLAB_ASSERT(!slab_decommitted(s));
    BITSLAB_ASSERT(s->prev == NULL && s->next == NULL); /* on no list */
    slab_check_no_remote(s); /* a late double free of its previous life */
    uint32_t size = bitslab_class_size[cls];
    uint32_t nbins = (uint32_t)(SLAB_SIZE / size);
    s->cls = (uint8_t)cls;
    s->nbins = nbins;
    s->nwords = (uint8_t)((nbins + 63) / 64);
    BITSLAB_ASSERT(nbins >= 2 && nbins <= BITMAP_WORDS * 64 && s->nwords <= BITMAP_WORDS);
    s->recip = slab_recip(size);
    s->summary = s->nwords == 64 ? ~(uint64_t)0 : (((uint64_t)1 << s->nwords) - 1);
    s->cached = NO_WORD;
    s->trigger = 0;
    s->donated = 0;
    slab_set_taken(s, 0);
    /* Relaxed: a hint only its owner and purgers use, paired with nothing (docs/purger.md). */
    atomic_store_explicit(&s->purged_pages, 0, memory_order_relaxed);
    /* Relaxed: the walker's snapshot (see slab_load_word). */
    atomic_store_explicit(&s->cached_bins, 0, memory_order_relaxed);
    /* Bins of a slab whose data was touched since its last decommit may hold
     * old contents; calloc zeroes every bin below hwm. */
    s->hwm = slab_dirty(s) ? nbins : 0;
    slab_set_dirty(s, true);
    bitmap_fill(slab_local(s), nbins);
    // Relaxed (three stores): the walker's snapshot; a freer learns of the
    // slab through its block, whose hand-off orders these stores.
    atomic_store_explicit(&s->bin_size, size, memory_order_relaxed);
    atomic_store_explicit(&s->kind, SLAB_SMALL, memory_order_relaxed); /* relaxed, as above: the walker's snapshot */
    atomic_store_explicit(&s->heap, h, memory_order_relaxed); /* relaxed, as above: the walker's snapshot */
}

/* Put the cached word's free bins back into the slab's local map. */
void slab_unload_word(slab_t *s, word_cache_t *c)
{
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL && s->state == STATE_ACTIVE);
    BITSLAB_ASSERT(c == &atomic_load_explicit(&s->heap, memory_order_relaxed)->cache[s->cls]); /* relaxed: own */
    /* Bits in the cache are bins of the cached word of s, free nowhere else,
     * and counted in `taken`. */
    BITSLAB_ASSERT(!c->bits || (s->cached == c->word && c->word < s->nwords));
    BITSLAB_ASSERT(!c->bits || !(slab_local(s)[c->word] & c->bits));
    BITSLAB_ASSERT(popcount64(c->bits) <= slab_taken(s));
    if (c->bits) {
        slab_local(s)[c->word] |= c->bits;
        s->summary |= (uint64_t)1 << c->word;
        slab_set_taken(s, slab_taken(s) - popcount64(c->bits));
    }
    c->bits = 0;
    c->fresh = 0;
    s->cached = NO_WORD;
    /* Relaxed: the walker's snapshot, as in slab_load_word. */
    atomic_store_explicit(&s->cached_bins, 0, memory_order_relaxed);
}

/* Merge the remote bitmap into the local one. Returns the number of bins
 * merged and lowers `taken` by it. Owner only. */
uint32_t slab_merge_remote(slab_t *s)
{
    /* Relaxed: our own field. The cache is read only if s->cached names a word. */
    heap_t *h = atomic_load_explicit(&s->heap, memory_order_relaxed);
    BITSLAB_ASSERT(h != NULL); /* configured: SMALL or WIDE, owned by h */
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL || slab_kind_now(s) == SLAB_WIDE);
    BITSLAB_ASSERT(s->nwords <= BITMAP_WORDS);
    /* Only the active slab has a cached word, and it is the cache's word. */
    BITSLAB_ASSERT(s->cached == NO_WORD ||
                   (s->state == STATE_ACTIVE && s->cached < s->nwords && h->cache[s->cls].word == s->cached));
    const word_cache_t *cache = s->cached != NO_WORD ? &h->cache[s->cls] : NULL;
    uint64_t *local = slab_local(s);
    _Atomic uint64_t *remote = slab_remote(s);
    uint32_t merged = 0;
    for (uint32_t w = 0; w < s->nwords; w++) {
        // Relaxed peek: a word that reads 0 here either has no pending bit or
        // has a bit whose notification (remote_slabs) comes after our drain
        // and will bring us back. Skipping it loses nothing.
        if (!atomic_load_explicit(&remote[w], memory_order_relaxed)) continue;
        DEBUG_PARK(PARK_MERGE_PEEKED);
        // Acquire: pairs with the freer's release fetch_add (F2), so everything the
        // freeing thread wrote into the block happens before we reuse it.
        uint64_t bits = atomic_exchange_explicit(&remote[w], 0, memory_order_acquire);
        if (!bits) continue; /* a purger's P1 took the word after our peek (docs/purger.md) */
        uint64_t free_here = local[w];
        if (w == s->cached) free_here |= cache->bits; /* bins waiting in the word cache are free too */
        if (unlikely(bits & free_here)) {
            uint32_t bin = w * 64 + ctz64(bits & free_here);
            uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* own field */
            bitslab_fatal("double free (freed by another thread and again)", s->data + (size_t)bin * size);
        }
        /* Only bins of s have remote bits (the lookup refuses the others). */
        BITSLAB_ASSERT(w * 64 + 63 - (unsigned)__builtin_clzll(bits) < s->nbins);
        local[w] |= bits;
        s->summary |= (uint64_t)1 << w;
        merged += popcount64(bits);
#if BITSLAB_DEBUG
        /* Relaxed: only counts whether a freer landed in this word mid-drain. */
        if (atomic_load_explicit(&remote[w], memory_order_relaxed)) DEBUG_COUNT(WIN_REMOTE_FREE_DURING_DRAIN);
#endif
    }
    /* Donated bins are in the remote map or held by a purger: fewer merged
     * means a purger holds some of them now. */
    if (merged < s->donated) DEBUG_COUNT(WIN_MERGE_WHILE_PURGER_HELD);
    s->donated = 0; /* taken back, or held by a purger that frees them again */
    if (merged) {
        BITSLAB_ASSERT(merged <= slab_taken(s)); /* every remote bit was a taken bin */
        slab_set_taken(s, slab_taken(s) - merged);
        // Relaxed load and store: only the heap's current user writes this
        // counter (the pool's hand-off orders one user before the next); the
        // stats walker's relaxed load pairs with the store (a snapshot).
        atomic_store_explicit(&h->remote_merged,
                              /* relaxed, as above: only the heap's current user writes this counter */
                              atomic_load_explicit(&h->remote_merged, memory_order_relaxed) + merged,
                              memory_order_relaxed);
    }
    return merged;
}

/* ---- sparse slabs: the fast path's trigger, donation, page purge ----------
 * (docs/purger.md) */

/* The trigger of a PARTIAL slab (slab_retrigger in slab.h): the next
 * sparse level below its live bins (1/4, 1/8, 1/16, 1/32 of its bins; plus
 * the bins it donated, which `taken` counts), then `donated` (no bin live:
 * empty, or empty once the donated bins are back). Slabs of fewer than
 * SPARSE_MIN_BINS bins (classes above 4 KiB) have no sparse level: a few
 * frees would reach each, a slow path for little to purge. A FULL slab's
 * is its first free (nbins - 1); any other's is 0. */
void slab_retrigger_partial(slab_t *s)
{
    BITSLAB_ASSERT(s->state == STATE_PARTIAL && slab_kind_now(s) == SLAB_SMALL);
    BITSLAB_ASSERT(s->donated <= slab_taken(s)); /* donated bins count in `taken` */
    /* Donated bins count in `taken` but are free: the levels are of the rest. */
    uint32_t t = s->donated, live = slab_taken(s) - s->donated; /* no level left: when no bin is live */
    for (unsigned k = 2; k <= 5 && s->nbins >= SPARSE_MIN_BINS; k++) {
        uint32_t level = s->nbins >> k;
        if (level && level < live) {
            t = level + s->donated;
            break;
        }
    }
    BITSLAB_ASSERT(t <= slab_taken(s)); /* a free reaches it: `taken` only falls to it */
    s->trigger = t;
}

/* Move the free bins of a sparse PARTIAL slab (no cached word) from the local
 * map to the remote map, where a purger can take them; the owner takes them
 * back with slab_merge_remote. `taken` counts them as out of the local map,
 * like remote frees. Owner only. */
void slab_donate(slab_t *s)
{
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL && s->state == STATE_PARTIAL);
    BITSLAB_ASSERT(s->cached == NO_WORD); /* not the active slab */
    BITSLAB_ASSERT(s->nwords <= BITMAP_WORDS);
    uint64_t *local = slab_local(s);
    _Atomic uint64_t *remote = slab_remote(s);
    uint32_t n = 0;
    for (uint64_t t = s->summary; t; t &= t - 1) {
        unsigned w = ctz64(t);
        uint64_t bits = local[w];
        if (!bits) continue;
        // Release: pairs with the acquire exchange that takes the bins (a
        // purger's P1, or our own merge); a bit already there is a bin freed
        // by its owner and by another thread.
        uint64_t old = atomic_fetch_or_explicit(&remote[w], bits, memory_order_release);
        if (unlikely(old & bits)) {
            uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed: own field */
            bitslab_fatal("double free (freed by its owner, then by another thread)",
                          s->data + (size_t)(w * 64 + ctz64(old & bits)) * size);
        }
        local[w] = 0;
        n += popcount64(bits);
    }
    s->summary = 0;
    s->donated += n;
    slab_set_taken(s, slab_taken(s) + n);
    BITSLAB_ASSERT(s->donated <= slab_taken(s));
}

/* The 4 KiB pages of s every bin of which is set in `map` (bit i: page i).
 * The caller owns the slab, or holds bins of it (so its configuration cannot
 * change). */
uint16_t slab_free_pages(const slab_t *s, const uint64_t *map)
{
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed: fixed while held */
    uint32_t nbins = s->nbins;
    /* Held or owned: a small slab's configuration, fixed meanwhile. */
    BITSLAB_ASSERT(size >= MIN_BIN && size <= SMALL_MAX && nbins == SLAB_SIZE / size);
    uint16_t pages = 0;
    for (uint32_t pg = 0; pg < SLAB_SIZE / OS_PAGE; pg++) {
        uint32_t first = pg * OS_PAGE / size, last = ((pg + 1) * OS_PAGE - 1) / size;
        if (first >= nbins) break; /* the slab's tail: never handed out, never touched */
        if (last >= nbins) last = nbins - 1;
        if (bitmap_all_set(map, first, last)) pages |= (uint16_t)(1u << pg);
    }
    return pages;
}

/* madvise(MADV_DONTNEED) the pages of s in `pages` that are not decommitted
 * already, one call per run; records those that went back in purged_pages
 * (a failed call leaves its pages as they were). Returns how many went back.
 * The caller owns every bin of those pages (docs/purger.md). */
unsigned slab_decommit_pages(slab_t *s, uint16_t pages)
{
    superpage_t *sp = superpage_of_slab(s);
    BITSLAB_ASSERT(s > sp->slabs && s < sp->slabs + SLABS_PER_SUPERPAGE); /* a data slab's record */
    char *data = (char *)sp + (uintptr_t)(s - sp->slabs) * SLAB_SIZE;
    /* Relaxed (load and store): a hint; see docs/purger.md, "stale purged_pages". */
    uint32_t done = atomic_load_explicit(&s->purged_pages, memory_order_relaxed);
    uint32_t m = pages & ~done;
    unsigned n = 0;
    while (m) {
        unsigned first = ctz64(m);
        unsigned len = ctz64(~(uint64_t)(m >> first));
        uint32_t run = (uint32_t)((((uint64_t)1 << len) - 1) << first);
        if (os_purge_pages(data + (size_t)first * OS_PAGE, (size_t)len * OS_PAGE)) {
            done |= run;
            n += len;
        }
        m &= ~run;
    }
    atomic_store_explicit(&s->purged_pages, (uint16_t)done, memory_order_relaxed); /* a hint, see above */
    return n;
}
