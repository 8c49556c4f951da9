/*
 * huge.c: allocations above the wide limit (1 MiB), or aligned beyond 1 MiB.
 *
 * Each has its own mapping. A huge_header_t sits at a 2 MiB-aligned address H
 * and the user pointer p lies in (H, H + 2 MiB], so region_of(p) == H, the
 * same lookup as for slab blocks:
 *   alignment <= 2 MiB: p = H + max(4 KiB, alignment)
 *   alignment  > 2 MiB: p = H + 2 MiB, with p a multiple of the alignment
 * Realloc moves the pages with mremap (no copy), to a new 2 MiB-aligned place
 * if they cannot grow in place. Any thread may free a huge block: no heap
 * owns it.
 *
 * Freeing keeps up to HUGE_CACHE_SLOTS mappings of at most 64 MiB, their
 * pages decommitted, for the next huge allocations of a similar size: one
 * madvise on free instead of a munmap, and no mmap/munmap on allocation.
 * The cache is a fixed array of slots, each one 64-bit word holding the
 * mapping's address (>> 21) and length in pages, claimed and filled by CAS:
 * nobody ever reads a cached mapping's memory before owning it. A cached
 * mapping is always decommitted (it reads as zero: calloc needs no memset);
 * one whose madvise fails is unmapped instead (docs/decisions.md).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

_Atomic size_t bitslab_huge_count;
_Atomic size_t bitslab_huge_bytes;

static size_t round_page(size_t n) { return (n + OS_PAGE - 1) & ~(size_t)(OS_PAGE - 1); }

static void huge_account(ptrdiff_t count, ptrdiff_t bytes)
{
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_huge_count, (size_t)count, memory_order_relaxed);
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_huge_bytes, (size_t)bytes, memory_order_relaxed);
}

static void *huge_user(huge_header_t *hh) { return hh->map_base + hh->offset; }

/* ---- the cache of freed mappings ------------------------------------------ */


#define HUGE_CACHE_SLOTS 8
#define HUGE_CACHE_MAX_PAGES ((64u << 20) / OS_PAGE)
#define SLOT_ADDR_BITS (47 - SUPERPAGE_SHIFT)
static _Atomic uint64_t huge_cache[HUGE_CACHE_SLOTS]; /* (pages << 26) | (address >> 21), 0 = empty */

static uint64_t slot_word(huge_header_t *hh)
{
    return ((uint64_t)(hh->map_len / OS_PAGE) << SLOT_ADDR_BITS) | ((uintptr_t)hh >> SUPERPAGE_SHIFT);
}

static huge_header_t *slot_header(uint64_t word)
{
    return (huge_header_t *)(uintptr_t)((word & (((uint64_t)1 << SLOT_ADDR_BITS) - 1)) << SUPERPAGE_SHIFT);
}

/* Take a cached mapping of at least `len` bytes (and at most twice that). */
static huge_header_t *huge_cache_take(size_t len)
{
    uint64_t need = len / OS_PAGE;
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS; i++) {
        /* Relaxed: the CAS below re-validates the exact word. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        uint64_t pages = w >> SLOT_ADDR_BITS;
        if (!w || pages < need || pages > 2 * need) continue;
        /* Acquire: pairs with the release CAS in huge_cache_put; the mapping is ours now. */
        if (atomic_compare_exchange_strong_explicit(&huge_cache[i], &w, 0, memory_order_acquire,
                                                    memory_order_relaxed))
            return slot_header(w);
    }
    return NULL;
}

/* bitslab_collect(): unmap every cached mapping. One the kernel refuses to
 * unmap is still a good cached mapping: it goes back to its slot. */
void huge_cache_flush(void)
{
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS; i++) {
        /* Acquire: pairs with huge_cache_put's release CAS; the mapping is ours. */
        uint64_t w = atomic_exchange_explicit(&huge_cache[i], 0, memory_order_acquire);
        if (!w) continue;
        huge_header_t *hh = slot_header(w);
        size_t len = hh->map_len;
        region_unregister((uintptr_t)hh);
        if (os_unmap_counted(hh, len, OS_PAGE)) continue; /* all of it was decommitted but the header */
        region_register((uintptr_t)hh, REGION_HUGE); /* still ours: nobody else can map there */
        uint64_t empty = 0;
        /* Release: as in huge_cache_put (pairs with huge_cache_take's acquire
         * CAS). If a put filled the slot meanwhile, the mapping stays mapped,
         * counted, and unused. */
        atomic_compare_exchange_strong_explicit(&huge_cache[i], &empty, w, memory_order_release,
                                                memory_order_relaxed);
    }
}

/* For tests: the cached mappings (address, length), at most max of them. */
unsigned huge_cache_contents(uintptr_t *addr, size_t *len, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS && n < max; i++) {
        /* Relaxed: a snapshot for a quiescent test; no memory is read through it. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        if (!w) continue;
        addr[n] = (uintptr_t)slot_header(w);
        len[n] = (size_t)(w >> SLOT_ADDR_BITS) * OS_PAGE;
        n++;
    }
    return n;
}

/* Keep a freed plain huge mapping for reuse, its pages decommitted first
 * (once it is in a slot, another thread may take it at once). False if it
 * does not qualify or every slot is taken. */
static bool huge_cache_put(huge_header_t *hh)
{
    if (hh->offset != OS_PAGE || hh->map_len / OS_PAGE > HUGE_CACHE_MAX_PAGES) return false;
    unsigned i = 0;
    /* Relaxed: a hint that a slot is free; the CAS below decides. */
    while (i < HUGE_CACHE_SLOTS && atomic_load_explicit(&huge_cache[i], memory_order_relaxed)) i++;
    if (i == HUGE_CACHE_SLOTS) return false;
    hh->hdr.kind = 0; /* a second free of this block is now an invalid free */
    if (!os_decommit((char *)hh + OS_PAGE, hh->map_len - OS_PAGE)) {
        /* The pages kept their data (mlockall, ...): cached, they would be
         * handed to calloc as zero. The caller unmaps the mapping instead. */
        hh->hdr.kind = REGION_HUGE;
        return false;
    }
    uint64_t word = slot_word(hh);
    for (; i < HUGE_CACHE_SLOTS; i++) {
        uint64_t empty = 0;
        /* Release: the header write and the decommit happen before the
         * taker's acquire CAS. A failed attempt moves on to the next slot. */
        /* (put CAS: pairs with huge_cache_take) */
        if (atomic_compare_exchange_strong_explicit(&huge_cache[i], &empty, word, memory_order_release,
                                                    memory_order_relaxed))
            return true;
    }
    hh->hdr.kind = REGION_HUGE;
    os_recommit(hh->map_len - OS_PAGE); /* the caller unmaps it, which counts it out */
    return false;
}

void *huge_alloc(size_t size, size_t align)
{
    if (size > PTRDIFF_MAX - 2 * SUPERPAGE_SIZE || align > PTRDIFF_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    size_t body = round_page(size ? size : 1);
    size_t offset = align <= OS_PAGE ? OS_PAGE : (align <= SUPERPAGE_SIZE ? align : SUPERPAGE_SIZE);
    size_t len = offset + body;
    if (offset == OS_PAGE) {
        huge_header_t *hh = huge_cache_take(len);
        if (hh) {
            os_recommit(hh->map_len - OS_PAGE);
            hh->hdr.kind = REGION_HUGE;
            huge_account(1, (ptrdiff_t)hh->map_len);
            return huge_user(hh); /* pages read as zero again: calloc needs no memset */
        }
    }
    char *h;
    if (align <= SUPERPAGE_SIZE) {
        size_t map_len;
        char *base;
        h = os_map_aligned(len, SUPERPAGE_SIZE, &map_len, &base);
        if (!h) return NULL;
    } else {
        size_t over = len + align;
        char *raw = os_map(over);
        if (!raw) return NULL;
        uintptr_t p = ((uintptr_t)raw + SUPERPAGE_SIZE + align - 1) & ~(uintptr_t)(align - 1);
        h = (char *)(p - SUPERPAGE_SIZE);
        if (!os_trim(raw, over, h, len)) return NULL;
    }
    if (!region_register((uintptr_t)h, REGION_HUGE)) {
        os_unmap(h, len);
        errno = ENOMEM;
        return NULL;
    }
    huge_header_t *hh = (huge_header_t *)h;
    hh->hdr.magic = REGION_MAGIC ^ (uintptr_t)h;
    hh->hdr.kind = REGION_HUGE;
    hh->map_base = h;
    hh->map_len = len;
    hh->offset = offset;
    huge_account(1, (ptrdiff_t)len);
    return h + offset;
}

void huge_free(huge_header_t *hh)
{
    size_t len = hh->map_len;
    huge_account(-1, -(ptrdiff_t)len);
    if (huge_cache_put(hh)) return;
    /* Unregister before unmapping: once unmapped the region may be mapped
     * again by another thread, whose registration must come after ours. */
    region_unregister((uintptr_t)hh);
    os_unmap(hh, len); /* if the kernel refuses, the mapping stays, counted as mapped */
}

size_t huge_usable(huge_header_t *hh) { return hh->map_len - hh->offset; }

bool huge_owns(huge_header_t *hh, const void *p) { return p == huge_user(hh); }

/* Resize in place or move the pages; NULL (errno ENOMEM, block intact) if the
 * kernel refuses. */
void *huge_realloc(huge_header_t *hh, size_t size)
{
    if (size > PTRDIFF_MAX - 2 * SUPERPAGE_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t old_len = hh->map_len;
    size_t len = hh->offset + round_page(size ? size : 1);
    if (len <= old_len) {
        /* Shrink: give back whole pages past the new end. If the kernel
         * refuses (a split past vm.max_map_count), the block keeps them. */
        if (len < old_len && !os_unmap((char *)hh + len, old_len - len)) len = old_len;
        hh->map_len = len;
        huge_account(0, (ptrdiff_t)len - (ptrdiff_t)old_len);
        return huge_user(hh);
    }
    /* Grow in place if the pages after us are free. */
    void *r = mremap(hh, old_len, len, 0);
    if (r != MAP_FAILED) {
        hh->map_len = len;
        /* Relaxed: statistics only. */
        atomic_fetch_add_explicit(&bitslab_mapped_bytes, len - old_len, memory_order_relaxed);
        /* Relaxed: statistics only. */
        atomic_fetch_add_explicit(&bitslab_committed_bytes, len - old_len, memory_order_relaxed);
        huge_account(0, (ptrdiff_t)(len - old_len));
        return huge_user(hh);
    }
    /* Move: reserve a 2 MiB-aligned range, then move our pages over it. */
    size_t map_len;
    char *base;
    char *dst = os_map_aligned(len, SUPERPAGE_SIZE, &map_len, &base);
    if (!dst) return NULL;
    if (!region_register((uintptr_t)dst, REGION_HUGE)) {
        os_unmap(dst, len);
        errno = ENOMEM;
        return NULL;
    }
    size_t offset = hh->offset;
    region_unregister((uintptr_t)hh);
    r = mremap(hh, old_len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    if (r == MAP_FAILED) {
        region_register((uintptr_t)hh, REGION_HUGE);
        region_unregister((uintptr_t)dst);
        os_unmap(dst, len);
        errno = ENOMEM;
        return NULL;
    }
    huge_header_t *nh = (huge_header_t *)dst;
    nh->hdr.magic = REGION_MAGIC ^ (uintptr_t)dst;
    nh->map_base = dst;
    nh->map_len = len;
    /* The old range is gone: os_map_aligned counted len, mremap dropped old_len. */
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_mapped_bytes, old_len, memory_order_relaxed);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_committed_bytes, old_len, memory_order_relaxed);
    huge_account(0, (ptrdiff_t)(len - old_len));
    return dst + offset;
}
