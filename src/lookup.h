/*
 * lookup.h: from a pointer to its block, validated: the region registry
 * (is it ours, a superpage or a huge block), the header's magic, the slab
 * by the address bits, the bin by one multiply (a block start or not), and
 * the maps (is it free already). The one lookup every entry point that
 * takes a pointer uses, and the tests; free's fast path does the same steps
 * inline (api.c).
 */
#ifndef BITSLAB_LOOKUP_H
#define BITSLAB_LOOKUP_H

#include "error.h"
#include "heap.h"
#include "huge.h"
#include "registry.h"
#include "slab.h"

#pragma GCC visibility push(hidden)

/* The one-line messages of a pointer that fails the lookup. */
#define MSG_FOREIGN "pointer bitslab never returned"
#define MSG_NOT_START "not the start of a live block (interior pointer, wide-block tail, or a freed slab)"
#define MSG_FREED "double free (the block is already free)"
#define MSG_USED_FREED "use after free (the block is already free)"

/* A validated block: a huge block (hh), or bin idx of slab s. */
typedef struct block {
    huge_header_t *hh;
    superpage_t *sp;
    slab_t *s;
    uint32_t idx;
    bool mine; /* s is the calling thread's heap's */
} block_t;

/* Bin idx of s is free as far as this thread can see without a data race
 * (a non-owner cannot see a bin its owner freed: that double free is caught
 * at the owner's next load of the word or merge, docs/remote-free.md):
 * its owner sees the local map, the word cache and the remote map; any
 * other thread sees the remote map (a relaxed peek at a line only freers and
 * the owner's merge write). */
static inline bool bin_is_free(slab_t *s, uint32_t idx, bool mine)
{
    uint64_t bit = (uint64_t)1 << (idx & 63);
    uint32_t w = idx >> 6;
    /* Relaxed: a peek, see above. */
    uint64_t already_free = atomic_load_explicit(&slab_remote(s)[w], memory_order_relaxed);
    if (mine) {
        already_free |= slab_local(s)[w];
        if (s->cached == w) already_free |= bitslab_tls_heap->cache[s->cls].bits;
    }
    return (already_free & bit) != 0;
}

/* The one lookup (inline: realloc and usable_size would pay a call and a
 * returned struct): every entry point that takes a pointer (free's slow path
 * and the remote free behind it, realloc, usable_size) validates it here
 * (block_lookup below, or this registry part directly), with the same
 * messages; free's fast path is the same steps inlined (the owned table,
 * slab_of_addr, slab_bin_of). Aborts with a one-line message naming `entry`
 * unless p is the start of a live block; a block that is already free is
 * reported as `freed` says (MSG_FREED for the entry points that free it,
 * MSG_USED_FREED for those that use it). */
static inline block_t block_lookup_registry(const void *p, const char *entry, const char *freed)
{
    block_t b = {0};
    uintptr_t a = (uintptr_t)p, region = region_of(p);
    unsigned kind = region_kind_of(region);
    if (kind == REGION_HUGE) {
        huge_header_t *hh = (huge_header_t *)region;
        if (hh->hdr.magic != (REGION_MAGIC ^ region)) bitslab_fatal_in(entry, "corrupted huge block header", p);
        /* kind is cleared when a freed mapping is cached for reuse. */
        if (hh->hdr.kind != REGION_HUGE) bitslab_fatal_in(entry, freed, p);
        if (!huge_owns(hh, p)) bitslab_fatal_in(entry, MSG_NOT_START, p);
        b.hh = hh;
        return b;
    }
    if (kind != REGION_SUPERPAGE) bitslab_fatal_in(entry, MSG_FOREIGN, p);
    b.sp = (superpage_t *)region;
    if (b.sp->hdr.magic != (REGION_MAGIC ^ region)) bitslab_fatal_in(entry, "corrupted superpage header", p);
    b.s = slab_of_addr(region, a);
    /* Relaxed: a live block's slab has an owner; the hand-off orders it. */
    heap_t *owner = atomic_load_explicit(&b.s->heap, memory_order_relaxed);
    b.idx = owner ? slab_bin_of(b.s, a) : NOT_A_BIN;
    if (b.idx == NOT_A_BIN) bitslab_fatal_in(entry, MSG_NOT_START, p);
    b.mine = owner == bitslab_tls_heap;
    if (bin_is_free(b.s, b.idx, b.mine)) bitslab_fatal_in(entry, freed, p);
    return b;
}

/* The same, asking the caller's heap's table of owned superpages first (as
 * free's fast path does): a hit is ours, mapped, and its configured slabs
 * are the caller's, with no registry or header to read. A block never
 * starts at a superpage's first byte, so a >> SUPERPAGE_SHIFT is its
 * superpage. free_slow, reached on a miss of that table, calls
 * block_lookup_registry directly. */
static inline block_t block_lookup(const void *p, const char *entry, const char *freed)
{
    uintptr_t a = (uintptr_t)p, n = a >> SUPERPAGE_SHIFT;
    if (bitslab_tls_heap->owned[n % HEAP_OWNED_SLOTS] != n) return block_lookup_registry(p, entry, freed);
    block_t b = {0};
    b.sp = (superpage_t *)(n << SUPERPAGE_SHIFT);
    b.s = slab_of_addr((uintptr_t)b.sp, a);
    b.idx = slab_bin_of(b.s, a);
    if (b.idx == NOT_A_BIN) bitslab_fatal_in(entry, MSG_NOT_START, p);
    b.mine = true;
    if (bin_is_free(b.s, b.idx, true)) bitslab_fatal_in(entry, freed, p);
    return b;
}

#pragma GCC visibility pop

#endif /* BITSLAB_LOOKUP_H */
