/*
 * huge.c: allocations above the wide limit (1 MiB), or aligned beyond 1 MiB.
 *
 * Each has its own mapping. A huge_header_t sits at a 2 MiB-aligned address H
 * and the user pointer p lies in (H, H + 2 MiB], so region_of(p) == H, the
 * same lookup as for slab blocks:
 *   alignment <= 2 MiB: p = H + max(4 KiB, alignment)
 *   alignment  > 2 MiB: p = H + 2 MiB, with p a multiple of the alignment
 * A new mapping is one mmap of a multiple of 2 MiB (which Linux >= 6.7 places
 * at a 2 MiB-aligned address) and one munmap of the tail past the block.
 * Realloc moves the pages with mremap (os_remap: no copy), to a new 2 MiB-aligned place
 * if they cannot grow in place, and a growth leaves a quarter more room. Any thread may free a huge block: no heap
 * owns it.
 *
 * The cache. Freeing keeps up to HUGE_CACHE_SLOTS mappings of at most 64 MiB
 * for the next huge allocations of a similar size: no mmap/munmap, and, while
 * a mapping is "dirty" (its pages still committed), no page fault either.
 * A freed mapping goes in dirty; it is decommitted (MADV_DONTNEED, "clean")
 * once it has sat there purge_delay_ms, by the next huge_cache_purge (the
 * heaps' periodic purge, huge_alloc, huge_free), or earlier, oldest first,
 * when the dirty mappings would exceed max(64 MiB, 1/4 of the live huge
 * bytes) (docs/decisions.md). bitslab_collect() unmaps them all.
 *
 * The cache is a fixed array of slots, each one 64-bit word: the mapping's
 * address (>> 21), its length in pages, a dirty bit and the time it was put
 * (ms, 22 bits), claimed (-> 0) and filled (0 ->) by CAS. Nobody reads a
 * cached mapping's memory before owning it: the word says all a chooser
 * needs. A dirty mapping is not zero: calloc taking one decommits it first,
 * or, if the kernel refuses, zeroes it with memset.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "huge.h"
#include "error.h"
#include "options.h"
#include "orphanage.h"
#include "os.h"
#include "registry.h"
#include "valgrind.h"

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

#define HUGE_CACHE_SLOTS 16
#define HUGE_CACHE_MAX_PAGES ((64u << 20) / OS_PAGE)
#define HUGE_DIRTY_MIN ((size_t)64 << 20) /* dirty bytes always allowed; 1/4 of the live huge bytes if more */
#define HUGE_FIT_SLACK ((size_t)16 << 20) /* a cached mapping serves a need up to 16 MiB (and 3x) smaller */

/* The slot word: (time << 42) | dirty << 41 | (pages << 26) | (address >> 21); 0 = empty. */
#define SLOT_ADDR_BITS REGION_BITS
#define SLOT_PAGES_BITS 15
#define SLOT_DIRTY ((uint64_t)1 << (SLOT_ADDR_BITS + SLOT_PAGES_BITS))
#define SLOT_TIME_SHIFT (SLOT_ADDR_BITS + SLOT_PAGES_BITS + 1)
#define SLOT_TIME_MASK ((uint32_t)(((uint64_t)1 << (64 - SLOT_TIME_SHIFT)) - 1))
_Static_assert(HUGE_CACHE_MAX_PAGES < (1u << SLOT_PAGES_BITS), "a cached mapping's length fits its slot");
_Static_assert(3600000u < SLOT_TIME_MASK, "the longest purge delay fits the slot's clock (70 min)");

static _Atomic uint64_t huge_cache[HUGE_CACHE_SLOTS];
/* Bytes of dirty cached mappings (all but their header page): added before
 * the release CAS that publishes a dirty word, taken off by whoever claims
 * it. An upper bound while puts are in flight; exact when nothing is. */
static _Atomic size_t huge_dirty_bytes;
/* No dirty mapping was put before this time (ms, give or take a put racing
 * with a purge): huge_cache_purge(PURGE_PERIODIC) scans the slots only once
 * it is purge_delay_ms old. */
static _Atomic uint32_t huge_purge_floor;

static uint64_t slot_make(huge_header_t *hh, bool dirty, uint32_t now)
{
    /* What fits the word: a 2 MiB-aligned header below 2^47, a whole number
     * of pages below 2^15, and more than the header page. */
    BITSLAB_ASSERT(((uintptr_t)hh & (SUPERPAGE_SIZE - 1)) == 0 && ((uintptr_t)hh >> SUPERPAGE_SHIFT) >> SLOT_ADDR_BITS == 0);
    BITSLAB_ASSERT(hh->map_len % OS_PAGE == 0 && hh->map_len > OS_PAGE);
    BITSLAB_ASSERT(hh->map_len / OS_PAGE <= HUGE_CACHE_MAX_PAGES);
    return ((uint64_t)(now & SLOT_TIME_MASK) << SLOT_TIME_SHIFT) | (dirty ? SLOT_DIRTY : 0) |
           ((uint64_t)(hh->map_len / OS_PAGE) << SLOT_ADDR_BITS) | ((uintptr_t)hh >> SUPERPAGE_SHIFT);
}

static huge_header_t *slot_header(uint64_t w)
{
    return (huge_header_t *)(uintptr_t)((w & (((uint64_t)1 << SLOT_ADDR_BITS) - 1)) << SUPERPAGE_SHIFT);
}

static size_t slot_len(uint64_t w)
{
    return (size_t)((w >> SLOT_ADDR_BITS) & ((1u << SLOT_PAGES_BITS) - 1)) * OS_PAGE;
}

static size_t slot_body(uint64_t w) { return slot_len(w) - OS_PAGE; } /* all but the header page */
static bool slot_dirty(uint64_t w) { return (w & SLOT_DIRTY) != 0; }

/* Milliseconds since the mapping was put (modulo 70 minutes). */
static uint32_t slot_age(uint64_t w, uint32_t now)
{
    return (now - (uint32_t)(w >> SLOT_TIME_SHIFT)) & SLOT_TIME_MASK;
}

/* The same mapping, marked dirty or clean, put at `now`. */
static uint64_t slot_remake(uint64_t w, bool dirty, uint32_t now)
{
    uint64_t keep = w & ((SLOT_DIRTY - 1)); /* address and pages */
    return ((uint64_t)(now & SLOT_TIME_MASK) << SLOT_TIME_SHIFT) | (dirty ? SLOT_DIRTY : 0) | keep;
}

static void cache_dirty_add(ptrdiff_t bytes)
{
    // Relaxed: a counter that bounds the cache; no memory is published
    // through it. It never goes below zero: a claimer's subtraction comes
    // after the putter's addition, which precedes the release CAS the
    // claimer's acquire CAS read from.
    atomic_fetch_add_explicit(&huge_dirty_bytes, (size_t)bytes, memory_order_relaxed);
}

/* Claim slot i if it still holds w: the mapping is ours. */
static bool slot_claim(unsigned i, uint64_t w)
{
    BITSLAB_ASSERT(i < HUGE_CACHE_SLOTS && w != 0);
    // Acquire: pairs with the release CAS in slot_publish that put w there;
    // the mapping's header, and its decommit if clean, happen before us.
    if (!atomic_compare_exchange_strong_explicit(&huge_cache[i], &w, 0, memory_order_acquire, memory_order_relaxed))
        return false;
    if (slot_dirty(w)) cache_dirty_add(-(ptrdiff_t)slot_body(w));
    return true;
}

/* Put a mapping this thread owns in an empty slot, trying slot `first`
 * first. False if every slot is taken. */
static bool slot_publish(uint64_t w, unsigned first)
{
    BITSLAB_ASSERT(w != 0 && first < HUGE_CACHE_SLOTS && slot_len(w) > OS_PAGE);
    /* The mapping is ours: its header says what its word says. */
    BITSLAB_ASSERT(slot_header(w)->map_len == slot_len(w) && slot_header(w)->offset == OS_PAGE);
    if (slot_dirty(w)) cache_dirty_add((ptrdiff_t)slot_body(w)); /* before the CAS: see cache_dirty_add */
    for (unsigned k = 0; k < HUGE_CACHE_SLOTS; k++) {
        unsigned i = (first + k) % HUGE_CACHE_SLOTS;
        uint64_t empty = 0;
        /* Relaxed: a hint that the slot is empty; the CAS decides. */
        if (atomic_load_explicit(&huge_cache[i], memory_order_relaxed)) continue;
        // Release: the header writes and the decommit (of a clean mapping)
        // happen before the claimer's acquire CAS (slot_claim,
        // huge_cache_take). A failed attempt moves on to the next slot.
        if (atomic_compare_exchange_strong_explicit(&huge_cache[i], &empty, w, memory_order_release,
                                                    memory_order_relaxed))
            return true;
    }
    if (slot_dirty(w)) cache_dirty_add(-(ptrdiff_t)slot_body(w));
    return false;
}

/* Unmap a claimed mapping. False if the kernel refused: it is still mapped,
 * counted, registered and ours. */
static bool slot_unmap(uint64_t w)
{
    huge_header_t *hh = slot_header(w);
    BITSLAB_ASSERT(w != 0 && hh->map_base == (char *)hh && hh->map_len == slot_len(w)); /* claimed: ours */
    /* Unregister before unmapping: the range may be mapped again at once. */
    region_unregister((uintptr_t)hh);
    if (os_unmap_counted(hh, slot_len(w), slot_dirty(w) ? slot_len(w) : OS_PAGE)) return true;
    region_register((uintptr_t)hh, REGION_HUGE); /* still ours: nobody else can map there */
    return false;
}

/* A claimed dirty mapping goes back clean, in slot i if it is still empty.
 * If the decommit fails (mlockall, EAGAIN) the mapping is unmapped rather
 * than kept dirty: under mlockall every purge would retry it. What the
 * kernel refuses to unmap goes back as it was; with nowhere to go it stays
 * mapped and counted, as a free's refused munmap does. */
static void slot_clean(uint64_t w, unsigned i, uint32_t now)
{
    huge_header_t *hh = slot_header(w);
    BITSLAB_ASSERT(slot_dirty(w) && i < HUGE_CACHE_SLOTS); /* a claimed dirty mapping */
    if (os_decommit((char *)hh + OS_PAGE, slot_body(w))) {
        uint64_t c = slot_remake(w, false, now);
        if (!slot_publish(c, i)) slot_unmap(c);
        return;
    }
    if (!slot_unmap(w)) slot_publish(slot_remake(w, true, now), i);
}

/* What a scan of the cache looks for: `score` rates a slot's word (0: not
 * wanted; the higher, the better), from the time or the need below. */
typedef struct slot_want {
    uint32_t now;
    size_t len;
    bool zero;
} slot_want_t;

/* The slot whose word scores highest (the first of equals), with that word
 * in *wp; HUGE_CACHE_SLOTS (and 0) if no word scores above 0. The caller
 * claims it with slot_claim, which re-validates the word. */
typedef uint64_t slot_score_fn(uint64_t w, const slot_want_t *want);

/* Inlined, so that each caller's score function is too. */
static inline __attribute__((always_inline)) unsigned slot_choose(slot_score_fn *score, const slot_want_t *want, uint64_t *wp)
{
    unsigned best = HUGE_CACHE_SLOTS;
    uint64_t bw = 0, bs = 0;
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS; i++) {
        /* Relaxed: a choice; slot_claim's CAS re-validates the word. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        uint64_t s = score(w, want);
        if (s > bs) {
            best = i;
            bw = w;
            bs = s;
        }
    }
    *wp = bw;
    return best;
}

/* A dirty mapping, the one put longest ago first. */
static uint64_t score_oldest_dirty(uint64_t w, const slot_want_t *want)
{
    return slot_dirty(w) ? (uint64_t)slot_age(w, want->now) + 1 : 0;
}

/* Decommit the dirty mapping put longest ago. False if there is none (or
 * others keep taking the ones we choose). */
static bool cache_clean_oldest(uint32_t now)
{
    const slot_want_t want = {.now = now};
    for (unsigned tries = 0; tries < 4; tries++) {
        uint64_t bw;
        unsigned best = slot_choose(score_oldest_dirty, &want, &bw);
        if (best == HUGE_CACHE_SLOTS) return false;
        if (slot_claim(best, bw)) {
            slot_clean(bw, best, now);
            return true;
        }
    }
    return false;
}

/* The mapping worth least: a clean one before a dirty one, the oldest
 * first; an empty slot above all (nothing to evict). */
static uint64_t score_evict(uint64_t w, const slot_want_t *want)
{
    if (!w) return UINT64_MAX;
    return ((uint64_t)!slot_dirty(w) << 32) + slot_age(w, want->now) + 1;
}

/* Every slot is taken: unmap the cached mapping worth least (a clean one
 * before a dirty one, the oldest first) to make room for a fresher one. */
static bool cache_evict(uint32_t now)
{
    const slot_want_t want = {.now = now};
    for (unsigned tries = 0; tries < 4; tries++) {
        uint64_t bw;
        unsigned best = slot_choose(score_evict, &want, &bw);
        if (!bw) return true; /* a slot freed up meanwhile */
        if (!slot_claim(best, bw)) continue;
        if (slot_unmap(bw)) return true;
        slot_publish(bw, best); /* the kernel refused: it stays cached */
        return false;
    }
    return false;
}

/* Decommit the dirty cached mappings that have waited purge_delay_ms
 * (PURGE_PERIODIC: only if one may have, by huge_purge_floor; PURGE_EXPIRED:
 * look now), or all of them (PURGE_ALL). Cheap when there is nothing to do:
 * one load with no dirty mapping, a clock read and two loads with some. */
void huge_cache_purge(enum purge_mode mode)
{
    BITSLAB_ASSERT(mode <= PURGE_ALL);
    /* Relaxed: a hint; a put in flight is seen by a later purge. */
    if (!atomic_load_explicit(&huge_dirty_bytes, memory_order_relaxed)) return;
    /* Relaxed: a setting; any value read is valid. */
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    if (mode != PURGE_ALL && delay < 0) return;
    uint32_t now = os_now_ms();
    /* Relaxed: a hint (see huge_purge_floor); the slot words decide. */
    if (mode == PURGE_PERIODIC && (int32_t)(now - atomic_load_explicit(&huge_purge_floor, memory_order_relaxed)) < delay)
        return;
    uint32_t oldest = now; /* the put time of the oldest dirty mapping left */
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS; i++) {
        /* Relaxed: slot_claim's CAS re-validates the word. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        if (!slot_dirty(w)) continue;
        uint32_t age = slot_age(w, now);
        if (mode != PURGE_ALL && age < (uint32_t)delay) {
            if ((int32_t)(now - age - oldest) < 0) oldest = now - age;
            continue;
        }
        if (slot_claim(i, w)) slot_clean(w, i, now);
    }
    // Relaxed: a hint. A put racing with this scan may be older than what we
    // store by the length of the race; it is purged that much later.
    atomic_store_explicit(&huge_purge_floor, oldest, memory_order_relaxed);
}

/* How well cached mapping w serves a need of len bytes (zero: for calloc),
 * 0 if it cannot: one of at least len bytes and at most min(4 x len,
 * len + HUGE_FIT_SLACK), the least such first, ranks above one short by
 * less than 2 MiB (which mremap may grow in place into the tail huge_map
 * trimmed off it), the longest such first; within each, a dirty one for
 * malloc (no page fault), a clean one for calloc (no madvise). Last, for
 * malloc, a dirty one shorter still, the longest first (a block that grows
 * from one size to the next reuses what it has committed). */
static uint64_t slot_rank(uint64_t w, size_t len, bool zero)
{
    size_t have = slot_len(w);
    if (!w) return 0;
    uint64_t kind = slot_dirty(w) != zero ? 1 : 0;
    size_t slack = len < HUGE_FIT_SLACK / 3 ? 3 * len : HUGE_FIT_SLACK;
    if (have >= len && have - len <= slack) return ((uint64_t)3 << 62) | (kind << 61) | (HUGE_FIT_SLACK - (have - len));
    if (have < len && len - have < SUPERPAGE_SIZE) return ((uint64_t)1 << 62) | (kind << 61) | (SUPERPAGE_SIZE - (len - have));
    /* Shorter still, but dirty, for malloc: grown (moved by mremap if the
     * pages after it are taken), each of its committed pages is a page fault
     * saved; the longest first. */
    if (have < len && slot_dirty(w) && !zero) return ((uint64_t)1 << 60) | (have / OS_PAGE);
    return 0;
}

static uint64_t score_fit(uint64_t w, const slot_want_t *want) { return slot_rank(w, want->len, want->zero); }

/* Take the cached mapping that serves a need of len bytes best (slot_rank).
 * Returns its word, 0 if none can. */
static uint64_t huge_cache_take(size_t len, bool zero)
{
    const slot_want_t want = {.len = len, .zero = zero};
    for (unsigned tries = 0; tries < 4; tries++) {
        uint64_t bw;
        unsigned best = slot_choose(score_fit, &want, &bw);
        if (best == HUGE_CACHE_SLOTS) return 0;
        if (slot_claim(best, bw)) return bw;
    }
    return 0;
}

static huge_header_t *huge_move(huge_header_t *hh, size_t old_len, size_t *len);

/* A huge block of len bytes (offset 4 KiB) from the cache, or NULL. */
static huge_header_t *huge_from_cache(size_t len, size_t size, bool zero)
{
    uint64_t w = huge_cache_take(len, zero);
    if (!w) return NULL;
    huge_header_t *hh = slot_header(w);
    size_t have = slot_len(w), body = slot_body(w);
    /* Claimed: ours, as huge_cache_put left it (a plain block, kind cleared). */
    BITSLAB_ASSERT(hh->hdr.magic == (REGION_MAGIC ^ (uintptr_t)hh) && hh->hdr.kind == 0);
    BITSLAB_ASSERT(hh->map_base == (char *)hh && hh->map_len == have && hh->offset == OS_PAGE);
    BITSLAB_ASSERT(len > OS_PAGE && region_of(huge_user(hh)) == (uintptr_t)hh);
    if (have < len) {
        /* Grow it in place (the pages after it are usually the tail that
         * huge_map trimmed), else, if its pages are committed, move them
         * (mremap: no copy, no fault) to a longer mapping. If neither works,
         * it goes back. */
        int saved = errno;
        huge_header_t *moved = NULL;
        if (!os_remap(hh, have, len, NULL) && !(slot_dirty(w) && (moved = huge_move(hh, have, &len)))) {
            errno = saved; /* the caller maps afresh: its success leaves errno as it was */
            if (!slot_publish(w, 0) && !slot_unmap(w)) { /* stays mapped and counted, as a refused munmap */ }
            return NULL;
        }
        if (moved) hh = moved;
        hh->map_len = len;
    }
    if (!slot_dirty(w)) {
        os_note_committed(body); /* decommitted: reads as zero, calloc needs no memset */
    } else if (zero) {
        /* Old data. Decommit it (the pages read as zero, and only those the
         * caller touches come back: a huge calloc is often sparse); if the
         * kernel refuses, zero what was asked. */
        if (os_decommit((char *)hh + OS_PAGE, body)) os_note_committed(body);
        else memset(huge_user(hh), 0, size);
    }
    hh->hdr.kind = REGION_HUGE;
    return hh;
}

/* bitslab_collect(): unmap every cached mapping. One the kernel refuses to
 * unmap is still a good cached mapping: it goes back to its slot. */
void huge_cache_flush(void)
{
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS; i++) {
        /* Relaxed: slot_claim's CAS re-validates the word. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        if (!w || !slot_claim(i, w)) continue;
        /* If a put filled the slot meanwhile, the refused one goes to another
         * (or, with none free, stays mapped, counted and unused). */
        if (!slot_unmap(w)) slot_publish(w, i);
    }
}

/* For tests: the cached mappings (address, length, dirty), at most max. */
unsigned huge_cache_contents(uintptr_t *addr, size_t *len, bool *dirty, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < HUGE_CACHE_SLOTS && n < max; i++) {
        /* Relaxed: a snapshot for a quiescent test; no memory is read through it. */
        uint64_t w = atomic_load_explicit(&huge_cache[i], memory_order_relaxed);
        if (!w) continue;
        addr[n] = (uintptr_t)slot_header(w);
        len[n] = slot_len(w);
        dirty[n] = slot_dirty(w);
        n++;
    }
    return n;
}

/* Dirty bytes the cache may hold: max(64 MiB, 1/4 of the live huge bytes). */
static size_t dirty_cap(void)
{
    /* Relaxed: statistics counter, read as a size hint. */
    size_t live = atomic_load_explicit(&bitslab_huge_bytes, memory_order_relaxed) / 4;
    return live > HUGE_DIRTY_MIN ? live : HUGE_DIRTY_MIN;
}

/* Keep a freed plain huge mapping for reuse, dirty if the cap allows (the
 * oldest dirty ones are decommitted to make room), else decommitted first
 * (once it is in a slot, another thread may take it at once). False if it
 * does not qualify or cannot be cached: the caller unmaps it. */
static bool huge_cache_put(huge_header_t *hh)
{
    BITSLAB_ASSERT(hh->hdr.kind == REGION_HUGE && hh->map_base == (char *)hh); /* a live block being freed */
    if (hh->offset != OS_PAGE || hh->map_len / OS_PAGE > HUGE_CACHE_MAX_PAGES) return false;
    uint32_t now = os_now_ms();
    size_t body = hh->map_len - OS_PAGE;
    bool dirty = true;
    size_t cap = dirty_cap();
    /* Relaxed: see cache_dirty_add; a bound, overshot by at most the puts in flight. */
    for (unsigned n = 0; atomic_load_explicit(&huge_dirty_bytes, memory_order_relaxed) + body > cap; n++) {
        if (n == HUGE_CACHE_SLOTS || !cache_clean_oldest(now)) {
            dirty = false;
            break;
        }
    }
    hh->hdr.kind = 0; /* a second free of this block is now an invalid free */
    if (!dirty && !os_decommit((char *)hh + OS_PAGE, body)) {
        /* The pages kept their data (mlockall, ...) and the cap is reached:
         * the caller unmaps the mapping. */
        hh->hdr.kind = REGION_HUGE;
        return false;
    }
    uint64_t w = slot_make(hh, dirty, now);
    if (slot_publish(w, 0) || (cache_evict(now) && slot_publish(w, 0))) return true;
    hh->hdr.kind = REGION_HUGE;
    if (!dirty) os_note_committed(body); /* the caller unmaps it, which counts it out */
    return false;
}

/* ---- mappings ----------------------------------------------------------------- */

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Map [at, at + len) if nothing is mapped there (counted as committed: the
 * block is used at once). */
static bool map_exactly_at(char *at, size_t len)
{
    if (!os_map_at(at, len)) return false;
    os_note_committed(len);
    return true;
}

/* A fresh mapping of *len bytes at a 2 MiB-aligned address. One mmap of
 * round_up(len, 2 MiB), which Linux >= 6.7 places 2 MiB-aligned (THP
 * alignment of anonymous mappings of such lengths), then one munmap of what
 * lies past len. If the mapping is not aligned, it is extended down to the
 * aligned address below it when that is free (older kernels place mappings
 * top-down, so it usually is), else os_map_aligned over-maps and trims. If
 * the kernel refuses to split off the tail, the block keeps it: *len grows.
 * NULL (errno ENOMEM) if memory is exhausted. */
static char *huge_map_once(size_t *len)
{
    size_t want = *len, span = (want + SUPERPAGE_SIZE - 1) & ~(SUPERPAGE_SIZE - 1);
    char *p = os_map(span);
    if (!p) return NULL;
    size_t head = (uintptr_t)p & (SUPERPAGE_SIZE - 1);
    if (head) {
        if (!map_exactly_at(p - head, head)) {
            size_t map_len;
            char *base;
            os_unmap(p, span); /* if the kernel refuses, it stays mapped and counted */
            return os_map_aligned(want, SUPERPAGE_SIZE, &map_len, &base);
        }
        p -= head; /* one mapping now: the kernel merges the two */
        span += head;
    }
    if (span > want && !os_unmap(p + want, span - want)) want = span;
    BITSLAB_ASSERT(((uintptr_t)p & (SUPERPAGE_SIZE - 1)) == 0 && want >= *len);
    *len = want;
    return p;
}

/* The kernel refused address space: give back what bitslab keeps mapped
 * for reuse (orphaned superpages' address space, cached huge mappings).
 * True if anything went. */
static bool reclaim_address_space(void)
{
    /* Relaxed: statistics counters, compared before and after. */
    size_t before = atomic_load_explicit(&bitslab_mapped_bytes, memory_order_relaxed);
    orphanage_shrink_all();
    huge_cache_flush();
    return atomic_load_explicit(&bitslab_mapped_bytes, memory_order_relaxed) < before; /* stats */
}

/* huge_map_once, again after reclaim_address_space if the kernel refused. */
static char *huge_map(size_t *len)
{
    size_t want = *len;
    int saved = errno;
    char *p = huge_map_once(len);
    if (!p && reclaim_address_space()) {
        *len = want;
        p = huge_map_once(len);
        if (p) errno = saved; /* a success leaves errno as it was */
    }
    return p;
}

/* Move mapping hh (old_len bytes, ours: a live block or a claimed cached
 * one) with its pages (mremap: no copy) to a fresh 2 MiB-aligned mapping of
 * *len bytes (huge_map may make it longer: *len says), registered in its
 * place. NULL (errno ENOMEM), and nothing changed, if the kernel refuses. */
static huge_header_t *huge_move(huge_header_t *hh, size_t old_len, size_t *len)
{
    BITSLAB_ASSERT(hh->map_base == (char *)hh && hh->map_len == old_len && *len > old_len);
    size_t offset = hh->offset;
    char *dst = huge_map(len);
    if (!dst) return NULL;
    if (!region_register((uintptr_t)dst, REGION_HUGE)) {
        os_unmap(dst, *len);
        errno = ENOMEM;
        return NULL;
    }
    region_unregister((uintptr_t)hh);
    if (!os_remap(hh, old_len, *len, dst)) {
        region_register((uintptr_t)hh, REGION_HUGE);
        region_unregister((uintptr_t)dst);
        os_unmap(dst, *len);
        errno = ENOMEM;
        return NULL;
    }
    huge_header_t *nh = (huge_header_t *)dst;
    /* The pages moved, header and all: the same block at a new 2 MiB boundary. */
    BITSLAB_ASSERT(nh->offset == offset && region_of(dst + offset) == (uintptr_t)dst);
    (void)offset;
    nh->hdr.magic = REGION_MAGIC ^ (uintptr_t)dst;
    nh->map_base = dst;
    nh->map_len = *len;
    return nh;
}

void *huge_alloc(size_t size, size_t align, bool zero)
{
    if (size > PTRDIFF_MAX - 2 * SUPERPAGE_SIZE || align > PTRDIFF_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    size_t body = round_page(size ? size : 1);
    size_t offset = align <= OS_PAGE ? OS_PAGE : (align <= SUPERPAGE_SIZE ? align : SUPERPAGE_SIZE);
    size_t len = offset + body;
    if (offset == OS_PAGE) {
        huge_header_t *hh = huge_from_cache(len, size, zero);
        if (hh) {
            huge_account(1, (ptrdiff_t)hh->map_len);
            huge_cache_purge(PURGE_PERIODIC);
            return huge_user(hh);
        }
    }
    char *h;
    if (align <= SUPERPAGE_SIZE) {
        h = huge_map(&len);
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
    /* The header at a 2 MiB boundary H, the block in (H, H + 2 MiB]: region_of
     * finds H, as for a slab block; and aligned as asked. */
    BITSLAB_ASSERT(((uintptr_t)h & (SUPERPAGE_SIZE - 1)) == 0 && region_of(h + offset) == (uintptr_t)h);
    BITSLAB_ASSERT(offset >= OS_PAGE && offset + body <= len);
    BITSLAB_ASSERT(align <= 1 || ((uintptr_t)(h + offset) & (align - 1)) == 0);
    hh->hdr.magic = REGION_MAGIC ^ (uintptr_t)h;
    hh->hdr.kind = REGION_HUGE;
    hh->map_base = h;
    hh->map_len = len;
    hh->offset = offset;
    huge_account(1, (ptrdiff_t)len);
    huge_cache_purge(PURGE_PERIODIC);
    return h + offset;
}

void huge_free(huge_header_t *hh)
{
    /* block_lookup validated it: a live huge block's header. */
    BITSLAB_ASSERT(hh->hdr.kind == REGION_HUGE && hh->map_base == (char *)hh);
    BITSLAB_ASSERT(hh->offset >= OS_PAGE && hh->offset <= SUPERPAGE_SIZE && hh->map_len > hh->offset);
    size_t len = hh->map_len;
    huge_account(-1, -(ptrdiff_t)len);
    if (!huge_cache_put(hh)) {
        /* Unregister before unmapping: once unmapped the region may be mapped
         * again by another thread, whose registration must come after ours. */
        region_unregister((uintptr_t)hh);
        os_unmap(hh, len); /* if the kernel refuses, the mapping stays, counted as mapped */
    }
    huge_cache_purge(PURGE_PERIODIC);
}

size_t huge_usable(huge_header_t *hh) { return hh->map_len - hh->offset; }

bool huge_owns(huge_header_t *hh, const void *p) { return p == huge_user(hh); }

/* Resize in place or move the pages; NULL (errno ENOMEM, block intact) if the
 * kernel refuses. A block that grows gets room to grow into (a quarter of its
 * new length, address space only: the pages are not touched), so that a
 * buffer grown step by step costs one mremap per quarter of growth, not one
 * per step; a block shrunk by no more than that keeps its pages. Its mapping
 * is thus never more than 5/4 of (its size + its offset), plus a page, once realloc has
 * resized it (docs/decisions.md). No room where address space is limited
 * (RLIMIT_AS, strict overcommit): there it is memory another block may need. */
void *huge_realloc(huge_header_t *hh, size_t size)
{
    if (size > PTRDIFF_MAX - 2 * SUPERPAGE_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    BITSLAB_ASSERT(hh->hdr.kind == REGION_HUGE && hh->map_base == (char *)hh); /* validated by block_lookup */
    size_t old_len = hh->map_len;
    size_t len = hh->offset + round_page(size ? size : 1);
    if (len <= old_len) {
        if (old_len - len <= len / 4) return huge_user(hh); /* within the room a growth leaves */
        /* Shrink: give back whole pages past the new end. If the kernel
         * refuses (a split past vm.max_map_count), the block keeps them. */
        if (!os_unmap((char *)hh + len, old_len - len)) len = old_len;
        hh->map_len = len;
        huge_account(0, (ptrdiff_t)len - (ptrdiff_t)old_len);
        return huge_user(hh);
    }
    /* Grow, with room if the address space allows (else exactly): in place
     * if the pages after us are free, else by moving them. */
    int saved = errno;
    size_t roomy = len <= PTRDIFF_MAX / 2 && !os_address_space_limited() ? round_page(len + len / 4) : len;
    for (size_t want = roomy;; want = len) {
        size_t got = want;
        if (os_remap(hh, old_len, got, NULL)) {
            hh->map_len = got;
            break;
        }
        huge_header_t *nh = huge_move(hh, old_len, &got);
        if (nh) {
            hh = nh;
            hh->map_len = got;
            break;
        }
        if (want == len) return NULL; /* errno ENOMEM, from huge_move */
    }
    errno = saved;
    huge_account(0, (ptrdiff_t)(hh->map_len - old_len));
    return huge_user(hh);
}
