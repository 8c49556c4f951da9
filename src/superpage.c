/*
 * superpage.c: superpages, their free slabs, and the orphanage.
 *
 * A heap owns superpages in a doubly linked list, kept so that every superpage
 * with a FREE data slab comes before every superpage without one: finding a
 * free slab looks at the list head.
 *
 * The orphanage (docs/orphanage.md) is a global Treiber stack of EMPTY
 * superpages. Its head is one 64-bit word: the superpage address >> 21 in
 * the low 26 bits (user addresses are below 2^47) and a 38-bit version in the
 * high bits, bumped by every push and pop, so a stale CAS fails (no ABA).
 * A superpage's first pages (header, links, slab records) are never
 * unmapped, so a popper that reads `orphan_next` of a superpage another
 * thread has just taken reads mapped memory; its CAS then fails on the
 * version. The rest of an orphan may be (superpage_shrink, below).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

_Atomic(superpage_t *) bitslab_all_superpages; /* registry of every superpage, push-only */
_Atomic size_t bitslab_superpages_total;
_Atomic size_t bitslab_superpages_orphaned;
_Atomic size_t bitslab_superpages_shrunk;

static _Atomic uint64_t orphanage_head; /* tagged: see above */

/* FREE slabs with committed pages, all heaps together: the process-wide cap
 * on memory kept for reuse (see superpage_return_slabs). */
static _Atomic size_t dirty_free_total;

static void dirty_add(heap_t *h, int delta)
{
    h->dirty_free += (uint32_t)delta;
    /* Relaxed: a counter compared with a cap; nothing is published through it. */
    atomic_fetch_add_explicit(&dirty_free_total, (size_t)(ptrdiff_t)delta, memory_order_relaxed);
}

/* Slabs configured (small or wide) in all heaps: the measure of what the
 * process uses, for the cap below. */
static _Atomic size_t slabs_in_use_total;

static void slabs_in_use_add(ptrdiff_t delta)
{
    /* Relaxed: a counter compared with a cap; nothing is published through it. */
    atomic_fetch_add_explicit(&slabs_in_use_total, (size_t)delta, memory_order_relaxed);
}

/* How many FREE-but-committed slabs the whole process keeps, at most, before
 * heaps purge theirs early: 2 MiB plus as many as are in use. Past twice
 * that, the heap that returns a slab purges its own down to it. A program
 * that frees everything thus keeps little, and one in a steady state keeps
 * the slack its fragmentation needs. */
static size_t dirty_process_cap(void)
{
    /* Relaxed: a counter compared with a cap. */
    return 32 + atomic_load_explicit(&slabs_in_use_total, memory_order_relaxed);
}

static size_t dirty_process_total(void)
{
    /* Relaxed: a counter compared with a cap. */
    return atomic_load_explicit(&dirty_free_total, memory_order_relaxed);
}

bool dirty_over_process_cap(unsigned factor) { return dirty_process_total() > factor * dirty_process_cap(); }

#define ORPHAN_PTR_BITS (47 - SUPERPAGE_SHIFT) /* 26 */
#define ORPHAN_PTR_MASK (((uint64_t)1 << ORPHAN_PTR_BITS) - 1)

static superpage_t *orphan_ptr(uint64_t word)
{
    return (superpage_t *)(uintptr_t)((word & ORPHAN_PTR_MASK) << SUPERPAGE_SHIFT);
}

static uint64_t orphan_word(superpage_t *sp, uint64_t old)
{
    uint64_t version = (old >> ORPHAN_PTR_BITS) + 1;
    return (version << ORPHAN_PTR_BITS) | ((uintptr_t)sp >> SUPERPAGE_SHIFT);
}

static void orphanage_push(superpage_t *sp)
{
    /* Relaxed: the CAS below re-validates the value. */
    uint64_t old = atomic_load_explicit(&orphanage_head, memory_order_relaxed);
    for (;;) {
        /* Relaxed: published by the release CAS that follows. */
        atomic_store_explicit(&sp->orphan_next, orphan_ptr(old), memory_order_relaxed);
        DEBUG_PARK(PARK_ORPHAN_PUSH_CAS);
        /* Release: publishes sp's reset state and its link to the popper's
         * acquire load; on failure `old` is reloaded (relaxed suffices, the
         * next attempt publishes again). */
        /* (push CAS: pairs with orphanage_pop) */
        if (atomic_compare_exchange_weak_explicit(&orphanage_head, &old, orphan_word(sp, old),
                                                  memory_order_release, memory_order_relaxed))
            break;
        DEBUG_COUNT(WIN_ORPHAN_CAS_RETRY);
    }
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_orphaned, 1, memory_order_relaxed);
}

static superpage_t *orphanage_pop(void)
{
    /* Acquire: pairs with the pusher's release CAS, so sp->orphan_next and the
     * superpage's reset state are visible. */
    uint64_t old = atomic_load_explicit(&orphanage_head, memory_order_acquire); /* pairs with the push CAS */
    for (;;) {
        superpage_t *sp = orphan_ptr(old);
        if (!sp) return NULL;
        /* Relaxed: if another thread popped sp meanwhile this may be stale,
         * and the version check in the CAS rejects it. Always mapped memory. */
        superpage_t *next = atomic_load_explicit(&sp->orphan_next, memory_order_relaxed); /* validated by the CAS */
        DEBUG_PARK(PARK_ORPHAN_POP_CAS);
        /* Acquire on success and failure: we read the next head's fields. */
        if (atomic_compare_exchange_weak_explicit(&orphanage_head, &old, orphan_word(next, old),
                                                  memory_order_acquire, memory_order_acquire)) {
            /* Relaxed: statistics only. */
            atomic_fetch_sub_explicit(&bitslab_superpages_orphaned, 1, memory_order_relaxed);
            return sp;
        }
        DEBUG_COUNT(WIN_ORPHAN_CAS_RETRY);
    }
}

/* ---- address space: shrinking orphans -------------------------------------
 * An orphan gives back its address space but for its first SHRINK_KEEP
 * bytes (the header, the orphanage link and the slab records: what a popper
 * and the lookup of a stale pointer read) when the orphanage already holds
 * ORPHAN_RESERVE superpages, and every orphan does when the kernel refuses a
 * mapping (superpage_shrink_orphans). Threads that read further into
 * superpages they find in the registry (the statistics, the heap map, the
 * purger) announce themselves: a Dekker pair, W1/W2 against S1/S2. Either
 * the shrinker sees the walker and leaves the superpage mapped, or the
 * walker sees the mark and skips it. The shrinker never waits. */

#define ORPHAN_RESERVE 16 /* orphans that keep their address space: 32 MiB */

static _Atomic uint32_t walkers;

void superpage_walk_begin(void)
{
    /* W1. Seq_cst: a Dekker pair with S1/S2 (superpage_shrink). */
    atomic_fetch_add_explicit(&walkers, 1, memory_order_seq_cst); /* W1: pairs with S2 */
}

void superpage_walk_end(void)
{
    /* Release: our reads of the superpages happen before the unmap of a
     * shrinker whose S2 reads the count without us. */
    atomic_fetch_sub_explicit(&walkers, 1, memory_order_release); /* pairs with S2 */
}

bool superpage_walkable(superpage_t *sp)
{
    /* W2. Seq_cst: pairs with S1; 1 means skip (it may be unmapped now). */
    return atomic_load_explicit(&sp->shrunk, memory_order_seq_cst) == 0; /* W2: pairs with S1 */
}

/* Unmap all of sp but its first SHRINK_KEEP bytes. sp is ours (popped from
 * the orphanage, or on its way there) and decommitted. False, and sp as it
 * was, if it is shrunk already, its metadata could not be decommitted, a
 * walker may be reading it, or the kernel refuses. */
static bool superpage_shrink(superpage_t *sp)
{
    uint32_t clean = sp->orphan_clean;
    /* Relaxed: our own superpage's field (walkers only read it). */
    if (atomic_load_explicit(&sp->shrunk, memory_order_relaxed) || !(clean & 1)) return false; /* ours */
    /* S1. Seq_cst: pairs with W2 (see above). */
    atomic_store_explicit(&sp->shrunk, 1, memory_order_seq_cst); /* S1: pairs with W2 */
    /* S2. Seq_cst (and acquire: pairs with walk_end's release). */
    if (atomic_load_explicit(&walkers, memory_order_seq_cst) != 0) { /* S2: pairs with W1 */
        DEBUG_COUNT(WIN_SHRINK_WALKER_SEEN);
        /* Relaxed: nothing was unmapped; a walker reading 1 skipped a mapped superpage. */
        atomic_store_explicit(&sp->shrunk, 0, memory_order_relaxed); /* see above */
        return false;
    }
    /* Data slabs whose decommit failed are still counted as committed. */
    size_t committed = (size_t)popcount64(~clean & DATA_SLABS_MASK) * SLAB_SIZE;
    if (!os_unmap_counted((char *)sp + SHRINK_KEEP, SUPERPAGE_SIZE - SHRINK_KEEP, committed)) {
        atomic_store_explicit(&sp->shrunk, 0, memory_order_relaxed); /* still mapped: as above */
        return false;
    }
    sp->orphan_clean = DATA_SLABS_MASK | 1; /* when it is mapped again: fresh zero pages */
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_shrunk, 1, memory_order_relaxed);
    return true;
}

/* Map a shrunk superpage's address space again; false if something else
 * was mapped there meanwhile (the superpage then stays shrunk for good). */
static bool superpage_regrow(superpage_t *sp)
{
    if (!os_map_at((char *)sp + SHRINK_KEEP, SUPERPAGE_SIZE - SHRINK_KEEP)) return false;
    BITSLAB_VG_SUPERPAGE(sp); /* -Dvalgrind: as for a new superpage */
    /* Release: pairs with W2 (a walker reads the pages only after seeing 0). */
    atomic_store_explicit(&sp->shrunk, 0, memory_order_release); /* pairs with W2 */
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_superpages_shrunk, 1, memory_order_relaxed);
    return true;
}

/* ---- list of a heap's superpages ------------------------------------------ */

static void list_unlink(heap_t *h, superpage_t *sp)
{
    if (sp->prev) sp->prev->next = sp->next;
    else h->superpages = sp->next;
    if (sp->next) sp->next->prev = sp->prev;
    sp->prev = sp->next = NULL;
}

static void list_push_front(heap_t *h, superpage_t *sp)
{
    sp->prev = NULL;
    sp->next = h->superpages;
    if (h->superpages) h->superpages->prev = sp;
    h->superpages = sp;
}

static void list_push_back(heap_t *h, superpage_t *sp)
{
    superpage_t *t = h->superpages;
    if (!t) {
        list_push_front(h, sp);
        return;
    }
    /* The tail is found by walking; this happens only when a superpage fills
     * up, which is rare next to the allocations that filled it. */
    while (t->next) t = t->next;
    t->next = sp;
    sp->prev = t;
    sp->next = NULL;
}

/* A superpage got a free slab: move it among the ones that have some. */
void superpage_list_promote(heap_t *h, superpage_t *sp)
{
    if (h->superpages == sp) return;
    list_unlink(h, sp);
    list_push_front(h, sp);
}

/* ---- acquire and release -------------------------------------------------- */

/* A slab back to FREE: no bins, no owner, nothing in its bitmaps. */
static void slab_reset(slab_t *s)
{
    s->state = STATE_NONE;
    s->nbins = 0;
    s->recip = 0;
    /* nwords stays: the bitmap words the last configuration used, which
     * slab_check_no_remote looks at (a late remote bit can only be there). */
    s->summary = 0;
    s->cached = NO_WORD;
    s->trigger = 0;
    s->donated = 0;
    slab_set_used(s, 0);
    /* Relaxed (three stores): the walker's snapshot; no block of this slab
     * is live, so no freer reads them. */
    atomic_store_explicit(&s->heap, NULL, memory_order_relaxed); /* walker snapshot */
    atomic_store_explicit(&s->bin_size, 0, memory_order_relaxed); /* walker snapshot */
    atomic_store_explicit(&s->kind, s->index == 0 ? SLAB_META : SLAB_FREE, memory_order_relaxed); /* walker */
}

/* Every slab FREE. Data slabs in `decommitted` have their pages returned to
 * the OS (putting one to use counts it as committed again); those in `dirty`
 * may hold old data (calloc zeroes them); the others are committed zero
 * pages (a fresh mapping). */
static void superpage_reset(superpage_t *sp, uint32_t decommitted, uint32_t dirty)
{
    sp->free_mask = DATA_SLABS_MASK;
    /* Relaxed: a hint; no slab of sp is configured, so no purger takes bins here. */
    atomic_store_explicit(&sp->sparse_slabs, 0, memory_order_relaxed); /* a hint */
    for (unsigned i = 0; i < SLABS_PER_SUPERPAGE; i++) {
        slab_t *s = &sp->slabs[i];
        s->index = (uint8_t)i;
        s->data = (char *)sp + (uintptr_t)i * SLAB_SIZE;
        s->dirty = (dirty >> i) & 1;
        slab_set_decommitted(s, (decommitted >> i) & 1);
        s->decommit_failed = 0;
        slab_reset(s);
    }
}

/* A FREE slab counts in dirty_free while its pages may hold data and a
 * decommit may still return them. */
static bool slab_counts_dirty(const slab_t *s) { return s->dirty && !s->decommit_failed; }

/* Return the data pages of the slabs in `mask` to the OS, one madvise per run
 * of adjacent slabs; skips slabs already decommitted. A run whose madvise
 * fails keeps its pages: its slabs stay committed and dirty (calloc zeroes
 * them), marked decommit_failed so that purges do not retry them on every
 * slow path (under mlockall every madvise fails); they leave dirty_free
 * either way. */
static void decommit_slabs(heap_t *h, superpage_t *sp, uint32_t mask)
{
    uint32_t m = 0;
    for (uint32_t t = mask; t; t &= t - 1) {
        unsigned i = ctz64(t);
        if (!slab_decommitted(&sp->slabs[i])) m |= 1u << i;
    }
    while (m) {
        unsigned first = ctz64(m);
        unsigned len = ctz64(~(uint64_t)(m >> first)); /* length of the run of set bits */
        bool ok = os_decommit((char *)sp + (uintptr_t)first * SLAB_SIZE, (size_t)len * SLAB_SIZE);
        for (unsigned i = first; i < first + len; i++) {
            slab_t *s = &sp->slabs[i];
            if (slab_counts_dirty(s)) dirty_add(h, -1); /* only FREE slabs are decommitted */
            if (ok) {
                s->dirty = 0;
                slab_set_decommitted(s, true);
                s->decommit_failed = 0;
            } else if (s->dirty) {
                s->decommit_failed = 1;
            }
        }
        m &= ~(uint32_t)((((uint64_t)1 << len) - 1) << first);
    }
}

/* A FREE slab is being put to use: its pages count as committed again. */
void slab_mark_in_use(heap_t *h, slab_t *s)
{
    slabs_in_use_add(1);
    h->slabs_used++;
    if (slab_counts_dirty(s)) dirty_add(h, -1);
    s->decommit_failed = 0;
    if (slab_decommitted(s)) {
        os_recommit(SLAB_SIZE);
        slab_set_decommitted(s, false);
    }
}

/* Decommit up to `limit` FREE slabs of h whose pages are still committed
 * and that have been FREE for at least min_age ms. */
static void purge_aged(heap_t *h, uint32_t min_age, size_t limit, uint32_t now)
{
    for (superpage_t *sp = h->superpages; sp && sp->free_mask && limit; sp = sp->next) {
        uint32_t m = 0;
        for (uint32_t t = sp->free_mask; t && limit; t &= t - 1) {
            slab_t *s = &sp->slabs[ctz64(t)];
            if (slab_counts_dirty(s) && !slab_decommitted(s) && now - s->freed_at >= min_age) {
                m |= 1u << s->index;
                limit--;
            }
        }
        if (m) decommit_slabs(h, sp, m);
    }
}

/* Decommit the FREE slabs of h whose pages are still committed: those empty
 * for the purge delay (PURGE_PERIODIC: at most every delay / 2, 10 ms at
 * least, and only every 16th call; PURGE_TICK: the same without the call
 * count, for heap_tick; PURGE_EXPIRED: now), or all of them
 * (PURGE_ALL). Called from slow paths only: never a syscall on a fast path. */
void heap_purge(heap_t *h, enum purge_mode mode, size_t limit)
{
    huge_cache_purge(mode == PURGE_ALL ? PURGE_EXPIRED : mode); /* freed huge mappings age here too (huge.c) */
    /* Relaxed: a setting; any value read is valid. */
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    if (mode != PURGE_ALL && (delay < 0 || (h->dirty_free == 0 && !h->sparse_pending))) return;
    if (mode == PURGE_PERIODIC && (++h->slow_calls & 15)) return;
    uint32_t now = os_now_ms();
    if (mode == PURGE_PERIODIC || mode == PURGE_TICK) {
        if ((int32_t)(now - h->next_purge) < 0) return;
        h->next_purge = now + (uint32_t)(delay / 2 > 10 ? delay / 2 : 10);
    }
    uint32_t min_age = mode == PURGE_ALL ? 0 : (uint32_t)delay;
    /* Sparse slabs only from the top of a slow path (the periodic modes):
     * the other modes run inside slab returns, and heap_purge_sparse merges. */
    if (h->sparse_pending && (mode == PURGE_PERIODIC || mode == PURGE_TICK)) heap_purge_sparse(h, now, min_age);
    purge_aged(h, min_age, limit, now);
}

/* Release the empty superpages beyond the retention that have waited out the
 * delay. Only from the top of a slow path (heap_tick, the allocation slow
 * path, a free that emptied a slab): never while a caller walks the heap's
 * superpage list or merges a superpage (heap_scan_remote, superpage_merge),
 * since a release unlinks a superpage that such a caller may hold. */
void superpage_release_aged(heap_t *h)
{
    size_t retain = HEAP_RETAIN_EMPTY(h);
    for (superpage_t *sp = h->superpages; sp && sp->free_mask && h->nempty > retain;) {
        superpage_t *next = sp->next;
        if (sp->free_mask == DATA_SLABS_MASK) superpage_try_release(h, sp, retain);
        sp = next;
    }
}

#define RELEASE_WAIT_SLABS 4 /* committed data slabs (256 KiB) that make an empty superpage wait */

/* Data slabs of sp whose pages are still committed with data (dirty). */
static unsigned committed_data_slabs(superpage_t *sp)
{
    unsigned n = 0;
    for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) n += sp->slabs[i].dirty && !slab_decommitted(&sp->slabs[i]);
    return n;
}

/* FREE-but-committed slabs h must give up to be within both caps. */
static size_t dirty_excess(heap_t *h, size_t heap_cap, size_t cap)
{
    size_t total = dirty_process_total();
    size_t over_heap = h->dirty_free > heap_cap ? h->dirty_free - heap_cap : 0;
    size_t over_process = total > cap ? total - cap : 0;
    return over_heap > over_process ? over_heap : over_process;
}

/* Over a cap: decommit the slabs unused the longest first (those past the
 * delay, then past half of it, a quarter, ... down to 16 ms), and only then
 * any (the caps are hard). Slabs freed a moment ago are the likeliest to be
 * reused at once: purging them first meant a madvise and a refault per reuse
 * on programs that churn large blocks. */
static void purge_down_to_caps(heap_t *h, size_t heap_cap, size_t cap)
{
    /* Relaxed: a setting; any value read is valid. */
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    uint32_t now = os_now_ms(), age = delay > 0 ? (uint32_t)delay : 0;
    for (;;) {
        size_t over = dirty_excess(h, heap_cap, cap);
        if (!over) return;
        purge_aged(h, age, over, now);
        if (age == 0) return;
        age = age > 16 ? age / 2 : 0;
    }
}

static superpage_t *superpage_map(void)
{
    size_t map_len;
    char *base;
    superpage_t *sp = os_map_aligned(SUPERPAGE_SIZE, SUPERPAGE_SIZE, &map_len, &base);
    if (!sp) return NULL;
    if (!region_register((uintptr_t)sp, REGION_SUPERPAGE)) {
        os_unmap(sp, SUPERPAGE_SIZE);
        return NULL;
    }
    sp->hdr.magic = REGION_MAGIC ^ (uintptr_t)sp;
    sp->hdr.kind = REGION_SUPERPAGE;
    superpage_reset(sp, 0, 0); /* fresh pages: committed and zero */
    BITSLAB_VG_SUPERPAGE(sp); /* -Dvalgrind: see valgrind.c */
    /* Publish in the registry the stats walker reads. Relaxed load: the CAS
     * re-validates. */
    superpage_t *head = atomic_load_explicit(&bitslab_all_superpages, memory_order_relaxed); /* the CAS re-validates */
    do {
        sp->all_next = head;
        /* Release: the walker's acquire load sees the initialised header. */
    } while (!atomic_compare_exchange_weak_explicit(&bitslab_all_superpages, &head, sp, memory_order_release,
                                                    memory_order_relaxed));
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_total, 1, memory_order_relaxed);
    return sp;
}

/* An orphan with its address space mapped: a shrunk one is mapped again in
 * place. One whose address range something else holds now goes back to the
 * orphanage (it may be free later), after at most 4 tries. */
static superpage_t *orphanage_pop_usable(void)
{
    superpage_t *sp, *blocked = NULL;
    for (unsigned tries = 0; tries < 4 && (sp = orphanage_pop()); tries++) {
        /* Relaxed: our own orphan's field now. */
        if (!atomic_load_explicit(&sp->shrunk, memory_order_relaxed) || superpage_regrow(sp)) break; /* ours */
        sp->deferred_next = blocked; /* ours while popped */
        blocked = sp;
        sp = NULL;
    }
    while (blocked) {
        superpage_t *b = blocked;
        blocked = b->deferred_next;
        orphanage_push(b);
    }
    return sp;
}

/* Every orphan that is not shrunk yet gives back its address space (the
 * kernel refused a mapping). All are popped, then pushed back, so the
 * orphanage looks empty meanwhile. True if any was shrunk. */
bool superpage_shrink_orphans(void)
{
    superpage_t *chain = NULL, *sp;
    bool any = false;
    while ((sp = orphanage_pop())) {
        any |= superpage_shrink(sp);
        sp->deferred_next = chain; /* ours while popped */
        chain = sp;
    }
    while ((sp = chain)) {
        chain = sp->deferred_next;
        orphanage_push(sp);
    }
    return any;
}

/* A new EMPTY superpage for heap h: from the orphanage if it has one. */
superpage_t *superpage_acquire(heap_t *h)
{
    superpage_t *sp = orphanage_pop_usable();
    if (!sp && heap_help_forked()) sp = orphanage_pop_usable(); /* a forked child: see heap.c */
    if (sp) {
        /* What the releaser managed to decommit (orphan_clean): the metadata
         * counts as committed again now, clean data slabs as they are used;
         * the others kept their pages and old data. */
        uint32_t clean = sp->orphan_clean;
        if (clean & 1) os_recommit(SLAB_SIZE - OS_PAGE);
        superpage_reset(sp, clean & DATA_SLABS_MASK, ~clean & DATA_SLABS_MASK);
        uint32_t now = os_now_ms();
        for (uint32_t t = ~clean & DATA_SLABS_MASK; t; t &= t - 1) sp->slabs[ctz64(t)].freed_at = now;
        dirty_add(h, (int)popcount64(~clean & DATA_SLABS_MASK));
    } else {
        int saved = errno;
        sp = superpage_map();
        if (!sp) {
            huge_cache_flush(); /* the kernel refused: the cached huge mappings' address space first */
            sp = superpage_map();
            if (sp) errno = saved; /* a success leaves errno as it was */
        }
        if (!sp) return NULL;
    }
    /* Relaxed: no live block exists in sp yet, so no freer reads this; blocks
     * handed out later carry the hand-off ordering. */
    atomic_store_explicit(&sp->heap, h, memory_order_relaxed); /* no live block yet */
    list_push_front(h, sp);
    h->nsuperpages++;
    h->nempty++;
    sp->empty_since = os_now_ms();
    return sp;
}

/* Decommit an empty superpage on its way to the orphanage: its data slabs,
 * then all of slab 0 but the first page (header, links). Records in
 * orphan_clean, which lies in that first page, what was decommitted: the
 * slab_t flags that tell it now are themselves in the pages that follow. */
static void superpage_decommit_for_orphanage(heap_t *h, superpage_t *sp)
{
    decommit_slabs(h, sp, DATA_SLABS_MASK);
    uint32_t clean = 0;
    for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++)
        if (slab_decommitted(&sp->slabs[i])) clean |= 1u << i;
    if (os_decommit((char *)sp + OS_PAGE, SLAB_SIZE - OS_PAGE)) clean |= 1;
    sp->orphan_clean = clean; /* published by the orphanage push's release CAS */
}

/* Give an EMPTY superpage to the orphanage, unless the heap wants to keep it
 * (it has `retain` or fewer empty ones) or a remote freer may still touch it. */
void superpage_try_release(heap_t *h, superpage_t *sp, size_t retain)
{
    if (sp->free_mask != DATA_SLABS_MASK || h->nempty <= retain) return;
    /* Beyond the heap's retention an empty superpage that still holds at
     * least RELEASE_WAIT_SLABS committed data slabs waits out the purge
     * delay, like a FREE slab: a program that frees and allocates large
     * blocks in turn reuses it instead of refaulting a new one. One with less
     * committed memory goes at once, as does everything at a full collect
     * (retain == 0) or with the delay off (-1). What waits is bounded by the
     * dirty caps (its slabs count in them). superpage_release_aged releases
     * it once the delay has passed. Relaxed: a setting. */
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed); /* a setting */
    if (retain && delay > 0 && os_now_ms() - sp->empty_since < (uint32_t)delay &&
        committed_data_slabs(sp) >= RELEASE_WAIT_SLABS)
        return;
    /* Acquire: pairs with each freer's release fetch_sub of `inflight` (F5).
     * Every freer whose bit we merged incremented it before setting the bit,
     * so reading 0 means all of them have finished touching sp
     * (docs/remote-free.md). */
    if (atomic_load_explicit(&sp->inflight, memory_order_acquire) != 0) { /* pairs with F5 */
        DEBUG_COUNT(WIN_RELEASE_DEFERRED_INFLIGHT);
        /* Nothing else would bring us back to sp once that freer is done:
         * the next slow path retries every deferred superpage. */
        if (!sp->on_deferred) {
            sp->on_deferred = 1;
            sp->deferred_next = h->deferred;
            h->deferred = sp;
        }
        return;
    }
    /* Relaxed (two loads): ordered after the acquire above. queued != 0: sp
     * sits in (or is being pushed onto) our remote queue, and the drain that
     * pops it retries the release; remote_slabs != 0: bits a drain or scan
     * has still to merge. */
    if (atomic_load_explicit(&sp->queued, memory_order_relaxed) != 0 || /* after the acquire */
        atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed) != 0) { /* after the acquire */
        DEBUG_COUNT(WIN_RELEASE_DEFERRED_QUEUED);
        return;
    }
    if (sp->on_deferred) { /* unlink: the list is short (one entry per stopped freer) */
        superpage_t **pp = &h->deferred;
        while (*pp != sp) pp = &(*pp)->deferred_next;
        *pp = sp->deferred_next;
        sp->on_deferred = 0;
    }
    list_unlink(h, sp);
    h->nsuperpages--;
    h->nempty--;
    /* Relaxed: nobody holds a block in sp; the push below releases it. */
    atomic_store_explicit(&sp->heap, NULL, memory_order_relaxed);
    /* Relaxed: a hint; an empty superpage has no sparse slab for purgers. */
    atomic_store_explicit(&sp->sparse_slabs, 0, memory_order_relaxed); /* a hint */
    /* Keep the first page (header, links); return the rest to the OS. */
    superpage_decommit_for_orphanage(h, sp);
    /* Relaxed: a count compared with the reserve (any recent value does). */
    if (atomic_load_explicit(&bitslab_superpages_orphaned, memory_order_relaxed) >= ORPHAN_RESERVE) /* see above */
        superpage_shrink(sp);
    orphanage_push(sp);
}

/* Retry the releases deferred by a freer in flight (slow path). */
void superpage_retry_deferred(heap_t *h)
{
    superpage_t *sp = h->deferred;
    h->deferred = NULL;
    while (sp) {
        superpage_t *next = sp->deferred_next;
        sp->on_deferred = 0;
        superpage_try_release(h, sp, HEAP_RETAIN_EMPTY(h)); /* may defer it again */
        sp = next;
    }
}

/* ---- slab runs ------------------------------------------------------------ */

/* Starting positions of runs of n set bits in mask, restricted to multiples of
 * `step` slabs. */
static uint32_t run_starts(uint32_t mask, unsigned n, unsigned step)
{
    uint32_t m = mask;
    for (unsigned i = 1; i < n && m; i++) m &= mask >> i;
    if (step > 1) {
        uint32_t aligned = 0;
        for (unsigned i = 0; i < SLABS_PER_SUPERPAGE; i += step) aligned |= 1u << i;
        m &= aligned;
    }
    return m;
}

/* Take n consecutive FREE slabs starting at a multiple of `step`, from the
 * heap's superpages or a new one. NULL (errno ENOMEM) if memory is exhausted. */
/* The FREE slabs of sp whose pages are still committed (dirty, not
 * decommitted): reusing them costs no page fault. */
static uint32_t committed_free_mask(superpage_t *sp)
{
    uint32_t m = 0;
    for (uint32_t t = sp->free_mask; t; t &= t - 1) {
        slab_t *s = &sp->slabs[ctz64(t)];
        if (s->dirty && !slab_decommitted(s)) m |= 1u << s->index;
    }
    return m;
}

#define TAKE_COMMITTED_SCAN 8 /* superpages looked at for a committed run first */

slab_t *superpage_take_slabs(heap_t *h, unsigned n, size_t step)
{
    superpage_t *sp = h->superpages;
    uint32_t starts = 0;
    /* First a run of slabs whose pages are still committed, in the first
     * few superpages with free slabs: a run that was decommitted (or never
     * touched) faults its pages in again; the purge takes the others. */
    unsigned looked = 0;
    for (; sp && sp->free_mask && looked < TAKE_COMMITTED_SCAN; sp = sp->next, looked++) {
        starts = run_starts(committed_free_mask(sp), n, (unsigned)step);
        if (starts) break;
    }
    if (!starts) {
        for (sp = h->superpages; sp && sp->free_mask; sp = sp->next) {
            starts = run_starts(sp->free_mask, n, (unsigned)step);
            if (starts) break;
        }
    }
    if (!sp || !starts) {
        sp = superpage_acquire(h);
        if (!sp) return NULL;
        starts = run_starts(sp->free_mask, n, (unsigned)step);
    }
    unsigned first = ctz64(starts);
    uint32_t bits = (n == 32 ? ~0u : ((1u << n) - 1)) << first;
    if (sp->free_mask == DATA_SLABS_MASK) h->nempty--;
    sp->free_mask &= ~bits;
    if (!sp->free_mask && sp->next) {
        list_unlink(h, sp);
        list_push_back(h, sp);
    }
    return &sp->slabs[first];
}

/* True if every configured slab of h is an active slab whose only taken
 * bins sit in the word cache: no block of the heap is live. */
static bool heap_holds_nothing(heap_t *h)
{
    if (h->slabs_used > NUM_CLASSES) return false;
    uint32_t active = 0;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        slab_t *a = h->active[c];
        if (!a) continue;
        active++;
        if (slab_used(a) != popcount64(h->cache[c].bits)) return false;
    }
    return active == h->slabs_used;
}

/* A heap that no longer holds a single live block (its thread let go of
 * everything) keeps at most 512 KiB of FREE slabs with committed pages. */
void heap_trim_if_idle(heap_t *h)
{
    if (h->dirty_free > 8 && heap_holds_nothing(h)) heap_purge(h, PURGE_ALL, h->dirty_free - 8);
}

/* Return n slabs starting at s to their superpage as FREE; the caller has
 * checked that no remote bit is left (slab_check_no_remote). If that empties
 * the superpage, it may go to the orphanage now (`may_release`); callers that
 * still walk the superpage's slabs pass false and retry the release after. */
void superpage_return_slabs(heap_t *h, slab_t *s, unsigned n, bool may_release)
{
    superpage_t *sp = superpage_of_slab(s);
    uint32_t now = os_now_ms();
    /* The caller checked the remote map (slab_empty_but_held, wide_release). */
    slabs_in_use_add(-(ptrdiff_t)n);
    h->slabs_used -= n;
    for (unsigned i = 0; i < n; i++) {
        slab_reset(s + i);
        s[i].freed_at = now;
        if (s[i].dirty) dirty_add(h, 1);
    }
    /* Bound what waits out the purge delay, per heap and for the process: a
     * heap past twice a limit purges its own slabs down to it, the longest
     * unused first (hysteresis: not on every return). */
    size_t heap_cap = HEAP_DIRTY_FREE_MAX(h), cap = dirty_process_cap();
    if (h->dirty_free > 2 * heap_cap || dirty_process_total() > 2 * cap) {
        heap_purge(h, PURGE_EXPIRED, SIZE_MAX);
        purge_down_to_caps(h, heap_cap, cap);
    }
    heap_trim_if_idle(h);
    bool was_full = sp->free_mask == 0;
    sp->free_mask |= ((n == 32 ? ~0u : ((1u << n) - 1)) << s->index);
    if (was_full) superpage_list_promote(h, sp);
    if (sp->free_mask == DATA_SLABS_MASK) {
        h->nempty++;
        sp->empty_since = now;
        if (may_release) superpage_try_release(h, sp, HEAP_RETAIN_EMPTY(h));
    }
}
