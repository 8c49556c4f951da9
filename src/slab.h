/*
 * slab.h: one slab's bins and bitmaps (slab.c): configuration, the word
 * cache's loads, merging remote frees, donation to purgers, page purge; and
 * the address-to-slab and address-to-bin arithmetic (slab_of_addr,
 * slab_bin_of) that block_lookup (lookup.h) validates.
 */
#ifndef BITSLAB_SLAB_H
#define BITSLAB_SLAB_H

#include "bitmap.h"
#include "debug.h"
#include "error.h"

#pragma GCC visibility push(hidden)

/* ---- address to slab and bin: the arithmetic the lookup validates --------
 * (block_lookup in lookup.h, and free's fast path inline) */

/* The slab_t of address a in the superpage at `region`, by the slab index
 * bits of a (no memory read). */
static inline uintptr_t slab_record_offset(uintptr_t a)
{
    return (a >> (SLAB_SHIFT - SLAB_T_SHIFT)) & ((uintptr_t)(SLABS_PER_SUPERPAGE - 1) << SLAB_T_SHIFT);
}

static inline slab_t *slab_of_addr(uintptr_t region, uintptr_t a)
{
    return (slab_t *)(region + offsetof(superpage_t, slabs) + slab_record_offset(a));
}

/* The local bitmap row of the slab whose slab_t lies at offset x
 * (slab_record_offset) in its superpage's record array: one lea from x. */
static inline uint64_t *local_row_of_record(uintptr_t region, uintptr_t x)
{
    return (uint64_t *)(region + offsetof(superpage_t, local) + (x << (BITMAP_ROW_SHIFT - SLAB_T_SHIFT)));
}


/* ceil(2^32 / size), the reciprocal slab_bin_of multiplies by. */
static inline uint32_t slab_recip(uint32_t size) { return (uint32_t)(0xFFFFFFFFu / size) + 1; }

#define NOT_A_BIN UINT32_MAX

/* The bin of s that starts at address a, or NOT_A_BIN, with one multiply:
 * off * ceil(2^32 / size) has the bin index in its high half, and its low
 * half is below the reciprocal exactly when off is a multiple of size (for
 * every class and off < 64 KiB; tests/test_slab.c checks all of them). A
 * slab that is not SMALL or WIDE has recip == nbins == 0, so every address
 * fails. The caller holds (or claims to hold) a live block of s, whose
 * hand-off orders the slab's configuration before these reads. */
static inline uint32_t slab_bin_of(const slab_t *s, uintptr_t a)
{
    uint64_t prod = (uint64_t)(a & (SLAB_SIZE - 1)) * s->recip;
    uint32_t idx = (uint32_t)(prod >> 32);
    return likely((uint32_t)prod < s->recip && idx < s->nbins) ? idx : NOT_A_BIN;
}

void slab_configure_small(slab_t *s, heap_t *h, unsigned cls);
void slab_donate(slab_t *s);
uint16_t slab_free_pages(const slab_t *s, const uint64_t *map);
unsigned slab_decommit_pages(slab_t *s, uint16_t pages);
uint32_t slab_merge_remote(slab_t *s);
void slab_check_no_remote(slab_t *s);
#define PURGER_P0 ((1u << 8) + 1u) /* P0 adds: one more purger, one more visit */
#define SPARSE_MIN_BINS 16u       /* slabs of fewer bins have no sparse level (slab_retrigger_partial) */
void slab_unload_word(slab_t *s, word_cache_t *c);

/* The value of `taken` at which the free fast path calls heap_slab_freed_slow
 * (slab.c: slab_retrigger_partial for a PARTIAL slab). Owner only, after any
 * change of `taken` or `state` outside the fast path. */
void slab_retrigger_partial(slab_t *s);
static inline void slab_retrigger(slab_t *s)
{
    if (s->state == STATE_PARTIAL) slab_retrigger_partial(s);
    else s->trigger = s->state == STATE_FULL ? s->nbins - 1 : 0;
}

static inline uint32_t slab_taken(const slab_t *s)
{
    /* Relaxed: only the owner writes `taken`; the atomic is for the stats walker. */
    return atomic_load_explicit(&s->taken, memory_order_relaxed);
}

static inline void slab_set_taken(slab_t *s, uint32_t v)
{
    /* Relaxed store by the owner; pairs with the walker's relaxed load (a snapshot). */
    atomic_store_explicit(&s->taken, v, memory_order_relaxed);
}

/* The slab's data was touched since its pages were last decommitted (they
 * are committed and may hold old data). Kept as a bit of the superpage's
 * dirty_mask, so that a search for committed free slabs reads one word, not
 * 31 slab records. Owner-only. A dirty slab is never decommitted. */
static inline bool slab_dirty(const slab_t *s)
{
    return (superpage_of_slab((slab_t *)s)->dirty_mask >> s->index) & 1;
}

static inline void slab_set_dirty(slab_t *s, bool v)
{
    superpage_t *sp = superpage_of_slab(s);
    sp->dirty_mask = (sp->dirty_mask & ~(1u << s->index)) | ((uint32_t)v << s->index);
}

static inline bool slab_decommitted(const slab_t *s)
{
    /* Relaxed: only the owner writes it (slab_set_decommitted); the atomic is for the heap map. */
    return atomic_load_explicit(&s->decommitted, memory_order_relaxed) != 0;
}

static inline void slab_set_decommitted(slab_t *s, bool v)
{
    /* Relaxed store by the owner; pairs with the heap map's relaxed load (a snapshot). */
    atomic_store_explicit(&s->decommitted, v, memory_order_relaxed);
}

/* For assertions: the kind of a slab, read by its owner or by a holder of
 * one of its blocks (relaxed: the configuration is ordered by the hand-off;
 * the atomic is for the walker). */
static inline unsigned slab_kind_now(const slab_t *s)
{
    return atomic_load_explicit(&s->kind, memory_order_relaxed); /* relaxed: see above */
}

/* For assertions: s is one of the 32 records of its superpage, at its index. */
static inline bool slab_is_record(const slab_t *s)
{
    return s->index < SLABS_PER_SUPERPAGE && &superpage_of_slab(s)->slabs[s->index] == s;
}

/* The owner's look at a slab's remote map against purgers (docs/purger.md):
 * read `purgers` before (slab_purgers) and after (slab_purger_was_there).
 * Seq_cst, with the purger's seq_cst P0: if both reads agree and count no
 * purger, no purger took bits before the look and gave them back during it
 * (its P0 came before the first read and its P8 after it: the count shows
 * it; or its P0 came between the reads: the visit count changed), and any
 * purger that comes later exchanges after the look, so it can only take
 * bits the look saw. */
static inline uint32_t slab_purgers(slab_t *s)
{
    return atomic_load_explicit(&s->purgers, memory_order_seq_cst); /* pairs with P0 */
}

static inline bool slab_purger_was_there(slab_t *s, uint32_t before)
{
    uint32_t now = atomic_load_explicit(&s->purgers, memory_order_seq_cst); /* pairs with P0 */
    return (now & 0xFFu) != 0 || now != before;
}

/* Move the lowest local word with free bins into the word cache. The slab
 * must have one (summary != 0). False, and nothing changed, while a purger
 * holds bins of s: one it holds may be a bin freed twice, which it gives
 * back (and the merge then reports) only after P5. Inline: the refill in
 * heap_alloc_slow is the common slow path of malloc (every few mallocs under
 * random frees), and a call there costs the registers it saves. */
static inline bool slab_load_word(slab_t *s, word_cache_t *c)
{
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL && s->state == STATE_ACTIVE);
    BITSLAB_ASSERT(s->summary != 0); /* the caller checked */
    BITSLAB_ASSERT(c == &atomic_load_explicit(&s->heap, memory_order_relaxed)->cache[s->cls]); /* relaxed: own */
    /* c is the owner's cache of this class, and it is empty: its word, if it
     * had one, was s's and is all handed out. */
    BITSLAB_ASSERT(c->bits == 0);
    BITSLAB_ASSERT(s->cached == NO_WORD || s->cached == c->word);
    BITSLAB_ASSERT(s->donated == 0); /* an active slab donates nothing */
    uint64_t *local = slab_local(s);
    unsigned w = ctz64(s->summary);
    uint64_t bits = local[w];
    /* A summary bit is set only with a free bin in its word (a load clears
     * it, a donation clears them all): the caller hands out a bin at once. */
    BITSLAB_ASSERT(w < s->nwords && bits != 0);
    uint32_t purgers = slab_purgers(s); /* before the peek: see slab_purgers */
    // A bin free here and also freed by another thread (not merged yet) was
    // freed twice: the owner's free, then a free by a thread that could not
    // see the owner's map. Caught now, before the bin is handed out (the
    // merge would catch it too, but only after it was handed out again).
    // Seq_cst: a peek (only freers, purgers and our merge write the word),
    // between the two reads of `purgers` (the Dekker pair at slab_purgers).
    uint64_t twice = bits & atomic_load_explicit(&remote_row_of_local(local)[w], memory_order_seq_cst);
    if (unlikely(twice)) {
        uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed: own field */
        bitslab_fatal("double free (freed by its owner, then by another thread)",
                      s->data + (size_t)(w * 64 + ctz64(twice)) * size);
    }
    if (unlikely(slab_purger_was_there(s, purgers))) {
        DEBUG_COUNT(WIN_REFILL_WHILE_PURGER_HOLDS);
        return false;
    }
    local[w] = 0;
    s->summary &= ~((uint64_t)1 << w);
    uint32_t n = popcount64(bits);
    slab_set_taken(s, slab_taken(s) + n);
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed: own field */
    /* Bins at or above hwm were never handed out: still zero from the OS. */
    uint32_t first = w * 64;
    uint64_t fresh = 0;
    if (s->hwm < s->nbins) { /* once every bin was handed out, none is fresh */
        if (s->hwm <= first) fresh = bits;
        else if (s->hwm < first + 64) fresh = bits & ~((((uint64_t)1) << (s->hwm - first)) - 1);
        uint32_t top = first + 64 - (unsigned)__builtin_clzll(bits); /* one past the highest bin taken */
        BITSLAB_ASSERT(top <= s->nbins); /* no bit beyond the last bin (bitmap_fill) */
        if (top > s->hwm) s->hwm = top;
    }
    s->cached = w;
    // Relaxed: published for the stats walker, which pairs with it by a
    // relaxed load (a snapshot): another thread cannot read the word cache
    // itself, so it learns how many free bins the cache holds after this
    // slow path, which hands out the word's first bin at once (both callers
    // in heap_alloc_slow do). The fast paths that later take bins from the
    // cache or put them back do not update it (docs/stats.md says what that
    // leaves approximate).
    atomic_store_explicit(&s->cached_bins, n ? n - 1 : 0, memory_order_relaxed);
    c->bits = bits;
    DEBUG_PARK(PARK_REFILL_MIDWAY);
    c->fresh = fresh;
    c->base = s->data + (size_t)first * size;
    c->size = size;
    c->word = w;
    return true;
}

#pragma GCC visibility pop

#endif /* BITSLAB_SLAB_H */
