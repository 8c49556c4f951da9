/*
 * slab.h: one slab's bins and bitmaps (slab.c): configuration, the word
 * cache's loads, merging remote frees, donation to purgers, page purge; and
 * the address-to-slab and address-to-bin arithmetic (slab_of_addr,
 * slab_bin_of) that block_lookup (lookup.h) validates.
 */
#ifndef BITSLAB_SLAB_H
#define BITSLAB_SLAB_H

#include "bitmap.h"

#pragma GCC visibility push(hidden)

/* ---- address to slab and bin: the arithmetic the lookup validates --------
 * (block_lookup in lookup.h, and free's fast path inline) */

/* The slab_t of address a in the superpage at `region`, by the slab index
 * bits of a (no memory read). */
static inline slab_t *slab_of_addr(uintptr_t region, uintptr_t a)
{
    return (slab_t *)(region + offsetof(superpage_t, slabs) +
                      ((a >> (SLAB_SHIFT - SLAB_T_SHIFT)) & ((uintptr_t)(SLABS_PER_SUPERPAGE - 1) << SLAB_T_SHIFT)));
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
bool slab_load_word(slab_t *s, word_cache_t *c);
uint32_t slab_purgers(slab_t *s);
bool slab_purger_was_there(slab_t *s, uint32_t before);
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

#pragma GCC visibility pop

#endif /* BITSLAB_SLAB_H */
