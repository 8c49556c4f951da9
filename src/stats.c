/*
 * stats.c: bitslab_heap_info (the caller's heap, exact) and bitslab_stats
 * (the process, a snapshot), and the slab snapshot the heap map shares.
 *
 * The process walk follows the push-only registry of every superpage ever
 * mapped (between orphanage_walk_begin and _end, and skipping superpages
 * that orphanage_walkable says are shrunk, so it never reads unmapped
 * memory) and reads only the fields that are atomics for this purpose:
 * slab kind, bin_size, taken, cached_bins, decommitted and heap, the remote
 * bitmaps, the superpage's heap, and each heap's remote_merged counter
 * (heaps are never unmapped either). Everything else in another thread's
 * heap is that thread's alone and is never read here.
 *
 * A small slab's `taken` counts every bin not in its local bitmap: live
 * blocks, free bins in the owner's word cache, and remotely freed bins not
 * merged yet. The walker splits it:
 *   pending = bits set in the slab's remote bitmap (atomic, exact);
 *   cached  = for the calling thread's own slabs, the popcount of its word
 *             cache (exact); for other heaps, the count their owner
 *             published when it loaded or put back the word (cached_bins):
 *             exact for exited threads (their caches are empty) and for a
 *             thread whose last action on that class was a slow path;
 *             otherwise off by the bins it took from or freed into the word
 *             since (at most 64);
 *   live    = taken - cached - pending.
 * docs/stats.md spells out what each figure means and when it is exact.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "stats.h"
#include "heap.h"
#include "huge.h"
#include "orphanage.h"
#include "os.h"
#include "sizeclass.h"
#include "slab.h"
#include "superpage.h"

/* ---- one slab, read race-free ------------------------------------------------ */

/* The row is passed by index: slab_remote(s) would read s->index, a plain
 * field that an orphan's new owner rewrites while we may be reading. A row in
 * a metadata page the kernel has not mapped (meta_resident: the resident
 * 4 KiB pages of slab 0) holds no bit, since a freer's write would have mapped
 * it: it is not read, so that reading it does not map a zero page that the
 * next resident count would include. */
static uint32_t remote_pending(superpage_t *sp, unsigned i, uint16_t meta_resident)
{
    _Atomic uint64_t *remote = sp->remote[i];
    uint32_t n = 0;
    for (unsigned w = 0; w < BITMAP_WORDS; w++) {
        size_t page = (size_t)((char *)&remote[w] - (char *)sp) / OS_PAGE; /* rows straddle pages */
        if (!((meta_resident >> page) & 1)) continue;
        // Relaxed: a snapshot count, pairs with the freers' fetch_add (F2);
        // nothing is read through these bits.
        n += popcount64(atomic_load_explicit(&remote[w], memory_order_relaxed));
    }
    return n;
}

heap_t *stats_self_heap(void)
{
    heap_t *h = bitslab_tls_heap;
    return h->is_placeholder ? NULL : h;
}

void stats_slab_snapshot(superpage_t *sp, unsigned i, heap_t *self, uint16_t meta_resident, slab_snapshot_t *o)
{
    slab_t *s = &sp->slabs[i];
    memset(o, 0, sizeof *o);
    // Relaxed (kind, bin_size, heap): snapshot reads; pair with the owner's
    // relaxed stores in slab_configure_small / wide_alloc / slab_reset. Under
    // a concurrent reconfiguration they may come from two lives of the slab:
    // every combination is handled below (no index is trusted).
    uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed); /* relaxed, as above: snapshot reads */
    o->decommitted = slab_decommitted(s);
    o->kind = kind;
    if (kind == SLAB_META || kind == SLAB_WIDE_TAIL) return;
    if (kind == SLAB_SMALL && (size < MIN_BIN || size > SMALL_MAX)) kind = SLAB_FREE; /* torn: mid-(re)configuration */
    if (kind == SLAB_WIDE && size < SLAB_SIZE) kind = SLAB_FREE;
    if (kind != SLAB_SMALL && kind != SLAB_WIDE) {
        o->kind = SLAB_FREE;
        return;
    }
    o->owner = atomic_load_explicit(&s->heap, memory_order_relaxed); /* relaxed: as above */
    uint32_t taken = slab_taken(s);
    o->pending = remote_pending(sp, i, meta_resident);
    o->bin_size = size;
    if (kind == SLAB_SMALL) {
        o->cls = size_class(size);
        o->bins = (uint32_t)(SLAB_SIZE / size);
        if (self && o->owner == self)
            /* Our own slab: s->cached and our word cache are ours to read. */
            o->cached = s->cached != NO_WORD ? popcount64(self->cache[s->cls].bits) : 0;
        else
            /* Relaxed: pairs with the owner's store in slab_load_word / slab_unload_word. */
            o->cached = atomic_load_explicit(&s->cached_bins, memory_order_relaxed);
    } else {
        o->bins = 1;
    }
    /* Each figure was read at its own moment: keep the sum consistent. */
    if (taken > o->bins) taken = o->bins;
    if (o->pending > taken) o->pending = taken;
    if (o->cached > taken - o->pending) o->cached = taken - o->pending;
    o->live = taken - o->cached - o->pending;
    o->free = o->bins - taken;
}

/* Bytes of sp that the kernel reports resident, and (if `pages` is given)
 * a mask of the resident 4 KiB pages of each slab. mincore reads only the
 * page tables; the caller walks (orphanage_walk_begin), so sp is mapped. */
size_t stats_superpage_resident(superpage_t *sp, uint16_t *pages)
{
    unsigned char vec[SUPERPAGE_SIZE / OS_PAGE];
    int saved = errno;
    if (pages) memset(pages, 0, SLABS_PER_SUPERPAGE * sizeof *pages);
    if (mincore(sp, SUPERPAGE_SIZE, vec) != 0) {
        errno = saved;
        return 0;
    }
    size_t n = 0;
    const unsigned per_slab = SLAB_SIZE / OS_PAGE;
    for (unsigned p = 0; p < SUPERPAGE_SIZE / OS_PAGE; p++) {
        if (!(vec[p] & 1)) continue;
        n++;
        if (pages) pages[p / per_slab] |= (uint16_t)(1u << (p % per_slab));
    }
    return n * OS_PAGE;
}

/* The id of a heap (1..heaps_total), 0 if not found. Compares addresses
 * only: the heap's own fields (its id among them) are its owner's. */
uint32_t stats_heap_id(const heap_t *h)
{
    /* Relaxed: a snapshot bound; pairs with heap_new's fetch_add. */
    uint32_t n = atomic_load_explicit(&bitslab_heaps_total, memory_order_relaxed);
    for (uint32_t id = 1; id <= n; id++)
        if (heap_by_id(id) == h) return id;
    return 0;
}

/* ---- totals ----------------------------------------------------------------- */

typedef struct totals {
    heap_t *self; /* the calling thread's heap, NULL if it has none (stats_self_heap) */
    bitslab_class_stats_t *classes;
    size_t small_bytes, cached_bytes, pending;
    size_t wide_n, wide_bytes;
    size_t slabs_small, slabs_wide, slabs_free;
} totals_t;

static void add_slab(totals_t *t, const slab_snapshot_t *o)
{
    switch (o->kind) {
    case SLAB_FREE:
        t->slabs_free++;
        break;
    case SLAB_SMALL: {
        bitslab_class_stats_t *c = &t->classes[o->cls];
        c->slabs++;
        c->bins_total += o->bins;
        c->bins_in_use += o->live;
        c->bins_cached += o->cached;
        c->bins_pending += o->pending;
        c->bins_free += o->free;
        t->small_bytes += (size_t)o->live * o->bin_size;
        t->cached_bytes += (size_t)o->cached * o->bin_size;
        t->pending += o->pending;
        t->slabs_small++;
        break;
    }
    case SLAB_WIDE:
        t->wide_n += o->live;
        t->wide_bytes += o->live ? o->bin_size : 0;
        t->pending += o->pending;
        t->slabs_wide++;
        break;
    case SLAB_WIDE_TAIL:
        t->slabs_wide++;
        break;
    default:
        break;
    }
}

static void finish_classes(bitslab_class_stats_t *c)
{
    for (unsigned i = 0; i < NUM_CLASSES; i++) {
        c[i].bin_size = bitslab_class_size[i];
        c[i].bytes_in_use = c[i].bins_in_use * c[i].bin_size;
        c[i].waste = c[i].slabs * SLAB_SIZE - c[i].bytes_in_use;
    }
}

/* ---- struct_size ------------------------------------------------------------ */

/* Bytes to fill: whole fields, at most what both sides know. 0: none. */
static size_t fill_size(size_t caller, size_t ours)
{
    size_t n = caller < ours ? caller : ours;
    n -= n % sizeof(size_t);
    if (n < sizeof(size_t)) {
        errno = EINVAL;
        return 0;
    }
    return n;
}

/* Start a report into `ours`, a versioned struct of `size` bytes whose
 * caller's copy has `caller` bytes: ours zeroed, t empty, adding into
 * `classes` (ours) for this thread's heap. Returns the bytes to fill; 0 (errno
 * EINVAL): none, nothing done. */
static size_t report_begin(size_t caller, void *ours, size_t size, bitslab_class_stats_t *classes, totals_t *t)
{
    size_t n = fill_size(caller, size);
    if (n) {
        memset(ours, 0, size);
        *t = (totals_t){.self = stats_self_heap(), .classes = classes};
    }
    return n;
}

/* Add the data slabs of sp to t, reading no remote row in a page the kernel
 * has not mapped (remote_pending). Returns sp's resident bytes. */
static size_t add_superpage(totals_t *t, superpage_t *sp)
{
    uint16_t pages[SLABS_PER_SUPERPAGE];
    size_t resident = stats_superpage_resident(sp, pages);
    for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) {
        slab_snapshot_t o;
        stats_slab_snapshot(sp, i, t->self, pages[0], &o);
        add_slab(t, &o);
    }
    return resident;
}

void bitslab_heap_info(bitslab_heap_info_t *out)
{
    bitslab_heap_info_t hi;
    totals_t t;
    size_t n = report_begin(out->struct_size, &hi, sizeof hi, hi.classes, &t);
    if (!n) return;
    heap_t *h = t.self;
    if (h) {
        for (superpage_t *sp = h->superpages; sp; sp = sp->next) {
            hi.superpages++;
            add_superpage(&t, sp);
        }
        /* Relaxed: our own counter (we are its only writer). */
        hi.remote_frees_merged = atomic_load_explicit(&h->remote_merged, memory_order_relaxed);
    }
    finish_classes(hi.classes);
    hi.slabs_small = t.slabs_small;
    hi.slabs_wide = t.slabs_wide;
    hi.slabs_free = t.slabs_free;
    hi.wide_allocations = t.wide_n;
    hi.wide_bytes = t.wide_bytes;
    hi.bytes_in_use = t.small_bytes + t.wide_bytes;
    hi.bytes_cached = t.cached_bytes;
    hi.remote_frees_pending = t.pending;
    hi.struct_size = n;
    memcpy(out, &hi, n);
}

void bitslab_stats(bitslab_stats_t *out)
{
    bitslab_stats_t st;
    totals_t t;
    size_t n = report_begin(out->struct_size, &st, sizeof st, st.classes, &t);
    if (!n) return;
    size_t resident = 0;
    orphanage_walk_begin(); /* no orphan is unmapped under us (orphan_shrink) */
    /* Acquire: pairs with the release CAS that published each superpage. */
    for (superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire); sp;
         sp = sp->all_next) {
        if (!orphanage_walkable(sp)) continue; /* a shrunk orphan: its first pages only, not resident */
        /* Relaxed: a snapshot of who owns it; pairs with superpage_acquire's store. */
        if (!atomic_load_explicit(&sp->heap, memory_order_relaxed)) {
            resident += stats_superpage_resident(sp, NULL);
            continue;
        }
        st.superpages_owned++;
        resident += add_superpage(&t, sp);
    }
    orphanage_walk_end();
    finish_classes(st.classes);
    // Relaxed (each load): statistics counters; each pairs with its relaxed
    // fetch_add/fetch_sub (os.c, superpage.c, orphanage.c, huge.c, heap.c, above).
    st.mapped = atomic_load_explicit(&bitslab_mapped_bytes, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.committed = atomic_load_explicit(&bitslab_committed_bytes, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.superpages_total = atomic_load_explicit(&bitslab_superpages_total, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.superpages_orphaned = atomic_load_explicit(&bitslab_superpages_orphaned, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.superpages_shrunk = atomic_load_explicit(&bitslab_superpages_shrunk, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.huge_allocations = atomic_load_explicit(&bitslab_huge_count, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.huge_bytes = atomic_load_explicit(&bitslab_huge_bytes, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.heaps_total = atomic_load_explicit(&bitslab_heaps_total, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.heaps_abandoned = atomic_load_explicit(&bitslab_heaps_abandoned, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.purged_bytes = atomic_load_explicit(&os_purged_bytes, memory_order_relaxed);
    /* relaxed, as above: statistics counters */
    st.madvise_calls = atomic_load_explicit(&os_madvise_calls, memory_order_relaxed);
    for (uint32_t id = 1; id <= st.heaps_total; id++) {
        heap_t *h = heap_by_id(id);
        /* Relaxed: pairs with the owner's relaxed store in slab_merge_remote (a snapshot). */
        if (h) st.remote_frees_merged += atomic_load_explicit(&h->remote_merged, memory_order_relaxed);
    }
    st.wide_allocations = t.wide_n;
    st.wide_bytes = t.wide_bytes;
    st.remote_frees_pending = t.pending;
    st.remote_frees_sent = st.remote_frees_merged + t.pending;
    st.in_use = t.small_bytes + t.wide_bytes + st.huge_bytes;
    st.cached = t.cached_bytes;
    st.resident = resident + st.huge_bytes;
    st.struct_size = n;
    memcpy(out, &st, n);
}
