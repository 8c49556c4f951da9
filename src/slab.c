/*
 * slab.c: size classes and the two bitmaps of a slab.
 *
 * A small slab is an array of `nbins` bins of `bin_size` bytes starting at
 * the slab's first byte. Its free state is two bitmaps, 1 bit per bin:
 *
 *   local[]   owner-only, plain memory. 1 = free. The owner allocates the
 *             lowest set bit (ctz of word `cursor`) and frees by setting a bit.
 *   remote[]  atomic. 1 = freed by another thread and not merged yet. Remote
 *             freers set bits with fetch_or (wait-free); the owner merges a
 *             word by exchanging it with 0 and OR-ing it into local[].
 *
 * A bin is free iff its bit is set in exactly one of the two maps; a bit set in
 * both is a double free, caught when the owner merges.
 *
 * `cursor` is the lowest word that may hold a set local bit: allocation only
 * ever looks at local[cursor], and moves the cursor forward (here, off the
 * fast path) when that word is empty; frees move it back.
 *
 * Reconfiguration: an empty slab (no live bin, no remote bit) goes back to its
 * superpage as FREE and may be configured for any class later.
 */
#include <string.h>

#include "internal.h"

/* class_of(size) for size <= 1024, indexed by (size + 15) / 16. */
const uint8_t bitslab_class_of_small[SMALL_TABLE_MAX / MIN_BIN + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  8,  9,  9,  10, 10, 11, 11, 12, 12, 12, 12, 13,
    13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17,
    17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19,
};

const uint32_t bitslab_class_size[NUM_CLASSES] = {
    16,   32,   48,   64,   80,   96,    112,   128,   160,   192,   224,   256,   320,   384,
    448,  512,  640,  768,  896,  1024,  1280,  1536,  1792,  2048,  2560,  3072,  3584,  4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};

/* Set the bins of a freshly configured slab free, and nothing beyond them. */
static void bitmap_fill(uint64_t *map, uint32_t nbins)
{
    uint32_t full = nbins / 64, rest = nbins % 64;
    for (uint32_t w = 0; w < full; w++) map[w] = ~(uint64_t)0;
    if (rest) map[full] = ((uint64_t)1 << rest) - 1;
}

void slab_configure_small(slab_t *s, unsigned cls)
{
    uint32_t size = bitslab_class_size[cls];
    uint32_t nbins = (uint32_t)(SLAB_SIZE / size);
    s->cls = (uint8_t)cls;
    s->nbins = nbins;
    s->nwords = (uint8_t)((nbins + 63) / 64);
    s->recip = (uint32_t)(0xFFFFFFFFu / size) + 1; /* ceil(2^32 / size) */
    /* Relaxed: only the stats walker reads these without a hand-off. */
    atomic_store_explicit(&s->bin_size, size, memory_order_relaxed);
    s->cursor = 0;
    slab_set_used(s, 0);
    /* Bins of a slab whose data was touched since its last decommit may hold
     * old contents; calloc zeroes every bin below hwm. */
    s->hwm = s->dirty ? nbins : 0;
    s->dirty = 1;
    memset(s->local, 0, sizeof s->local);
    bitmap_fill(s->local, nbins);
    /* Relaxed: the walker's snapshot; a freer learns of the slab through its block. */
    atomic_store_explicit(&s->kind, SLAB_SMALL, memory_order_relaxed);
}

/* Move the cursor to the first word with a free bin. False if there is none
 * (the cursor then rests on an empty word, so the fast path keeps failing). */
bool slab_advance_cursor(slab_t *s)
{
    for (uint32_t w = s->cursor; w < s->nwords; w++) {
        if (s->local[w]) {
            s->cursor = w;
            return true;
        }
    }
    s->cursor = s->nwords - 1u;
    return false;
}

/* Merge the remote bitmap into the local one. Returns the number of bins
 * merged and lowers `used` by it. Owner only. */
uint32_t slab_merge_remote(slab_t *s)
{
    uint32_t merged = 0;
    for (uint32_t w = 0; w < s->nwords; w++) {
        /* Relaxed peek: a word that reads 0 here either has no pending bit or
         * has a bit whose notification (remote_slabs) comes after our drain
         * and will bring us back. Skipping it loses nothing. */
        if (!atomic_load_explicit(&s->remote[w], memory_order_relaxed)) continue;
        /* Acquire: pairs with the freer's release fetch_or, so everything the
         * freeing thread wrote into the block happens before we reuse it. */
        uint64_t bits = atomic_exchange_explicit(&s->remote[w], 0, memory_order_acquire);
        if (unlikely(bits & s->local[w])) {
            uint32_t bin = w * 64 + ctz64(bits & s->local[w]);
            bitslab_fatal("double free (freed by another thread and again)",
                          s->data + (size_t)bin * atomic_load_explicit(&s->bin_size, memory_order_relaxed));
        }
        s->local[w] |= bits;
        merged += popcount64(bits);
        if (w < s->cursor) s->cursor = w;
#if BITSLAB_DEBUG
        /* Relaxed: only counts whether a freer landed in this word mid-drain. */
        if (atomic_load_explicit(&s->remote[w], memory_order_relaxed)) DEBUG_COUNT(WIN_REMOTE_FREE_DURING_DRAIN);
#endif
    }
    if (merged) slab_set_used(s, slab_used(s) - merged);
    return merged;
}
