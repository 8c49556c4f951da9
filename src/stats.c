/*
 * stats.c: bitslab_heap_info (the caller's heap, exact) and bitslab_stats
 * (the process, a snapshot).
 *
 * The process walk follows the push-only registry of every superpage ever
 * mapped (superpages are never unmapped, so the walk never reads unmapped
 * memory) and reads only the slab fields that are atomics for this purpose:
 * kind, bin_size, used and the remote bitmaps. Other threads' word caches
 * are theirs alone, so bins cached there (at most 64 per class and thread)
 * count as in use in the process figures; bitslab_collect() in a thread, or
 * its exit, puts them back.
 */
#include <string.h>

#include "internal.h"

static void class_names(bitslab_class_stats_t *c)
{
    for (unsigned i = 0; i < NUM_CLASSES; i++) c[i].bin_size = bitslab_class_size[i];
}

/* The row is passed by index: slab_remote(s) would read s->index, a plain
 * field that an orphan's new owner rewrites while we may be reading. */
static size_t remote_pending(_Atomic uint64_t *remote)
{
    size_t n = 0;
    for (unsigned w = 0; w < BITMAP_WORDS; w++)
        /* Relaxed: a snapshot count; nothing is read through these bits. */
        n += popcount64(atomic_load_explicit(&remote[w], memory_order_relaxed));
    return n;
}

/* Add the slabs of one owned superpage into the class table. Returns the
 * small bytes in use; wide figures and free slabs through the pointers. */
static size_t walk_superpage(superpage_t *sp, bitslab_class_stats_t *classes, size_t *wide_n, size_t *wide_bytes,
                             size_t *slabs_small, size_t *slabs_wide, size_t *slabs_free, size_t *pending)
{
    size_t bytes = 0;
    for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) {
        slab_t *s = &sp->slabs[i];
        /* Relaxed: snapshot reads, see the file comment. */
        uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
        /* Relaxed: as above. */
        uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed);
        uint32_t used = slab_used(s);
        if (kind == SLAB_FREE) {
            (*slabs_free)++;
        } else if (kind == SLAB_SMALL && size) {
            unsigned cls = size_class(size);
            classes[cls].slabs++;
            classes[cls].bins_total += SLAB_SIZE / size;
            classes[cls].bins_in_use += used;
            classes[cls].bytes_in_use += (size_t)used * size;
            bytes += (size_t)used * size;
            (*slabs_small)++;
            *pending += remote_pending(sp->remote[i]);
        } else if (kind == SLAB_WIDE && size) {
            (*wide_n)++;
            *wide_bytes += size;
            (*slabs_wide)++;
            *pending += remote_pending(sp->remote[i]);
        } else if (kind == SLAB_WIDE_TAIL) {
            (*slabs_wide)++;
        }
    }
    return bytes;
}

void bitslab_heap_info(bitslab_heap_info_t *out)
{
    memset(out, 0, sizeof *out);
    class_names(out->classes);
    heap_t *h = bitslab_tls_heap;
    size_t wide_n = 0, wide_bytes = 0, small = 0;
    for (superpage_t *sp = h->superpages; sp; sp = sp->next) {
        out->superpages++;
        small += walk_superpage(sp, out->classes, &wide_n, &wide_bytes, &out->slabs_small, &out->slabs_wide,
                                &out->slabs_free, &out->remote_frees_pending);
    }
    /* Bins waiting in the word caches are free, though their slabs count them
     * as taken. */
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        if (!h->active[c]) continue;
        size_t cached = popcount64(h->cache[c].bits);
        out->classes[c].bins_in_use -= cached;
        out->classes[c].bytes_in_use -= cached * out->classes[c].bin_size;
        small -= cached * out->classes[c].bin_size;
    }
    out->wide_allocations = wide_n;
    out->wide_bytes = wide_bytes;
    out->bytes_in_use = small + wide_bytes;
}

void bitslab_stats(bitslab_stats_t *out)
{
    memset(out, 0, sizeof *out);
    class_names(out->classes);
    size_t small = 0, slabs_small = 0, slabs_wide = 0, slabs_free = 0;
    /* Acquire: pairs with the release CAS that published each superpage. */
    for (superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire); sp;
         sp = sp->all_next) {
        /* Relaxed: a snapshot of who owns it. */
        if (!atomic_load_explicit(&sp->heap, memory_order_relaxed)) continue;
        out->superpages_owned++;
        small += walk_superpage(sp, out->classes, &out->wide_allocations, &out->wide_bytes, &slabs_small,
                                &slabs_wide, &slabs_free, &out->remote_frees_pending);
    }
    /* Relaxed (each load): statistics counters; no data is published through them. */
    out->mapped = atomic_load_explicit(&bitslab_mapped_bytes, memory_order_relaxed); /* stats */
    out->committed = atomic_load_explicit(&bitslab_committed_bytes, memory_order_relaxed); /* stats */
    out->superpages_total = atomic_load_explicit(&bitslab_superpages_total, memory_order_relaxed); /* stats */
    out->superpages_orphaned = atomic_load_explicit(&bitslab_superpages_orphaned, memory_order_relaxed); /* stats */
    out->huge_allocations = atomic_load_explicit(&bitslab_huge_count, memory_order_relaxed); /* stats */
    out->huge_bytes = atomic_load_explicit(&bitslab_huge_bytes, memory_order_relaxed); /* stats */
    out->heaps_total = atomic_load_explicit(&bitslab_heaps_total, memory_order_relaxed); /* stats */
    out->heaps_abandoned = atomic_load_explicit(&bitslab_heaps_abandoned, memory_order_relaxed); /* stats */
    out->in_use = small + out->wide_bytes + out->huge_bytes;
}
