/*
 * orphanage.c: the orphanage of EMPTY superpages (docs/orphanage.md), and
 * the address space orphans give back.
 *
 * The orphanage is a global tagged lock-free stack (lfstack.h) of superpage
 * addresses >> 21: 26 bits (user addresses are below 2^47), and a 38-bit
 * version. A superpage's first pages (header, links, slab records) are
 * never unmapped, so a popper that reads `orphan_next` of a superpage
 * another thread has just taken reads mapped memory; its CAS then fails on
 * the version. The rest of an orphan may be (orphan_shrink, below).
 */
#include "orphanage.h"
#include "bitmap.h"
#include "debug.h"
#include "os.h"
#include "valgrind.h"

#define LFSTACK_PARK(point) DEBUG_PARK(point)
#define LFSTACK_RETRY(window) DEBUG_COUNT(window)
#define LFSTACK_ASSERT(cond) BITSLAB_ASSERT(cond)
#include "lfstack.h"

_Atomic size_t bitslab_superpages_orphaned;
_Atomic size_t bitslab_superpages_shrunk;

static lfstack_t orphanage = LFSTACK_INIT; /* handles: superpage address >> 21 */
#if BITSLAB_DEBUG
static const lfstack_hooks_t orphanage_hooks = {PARK_ORPHAN_PUSH_CAS, PARK_ORPHAN_POP_CAS, WIN_ORPHAN_CAS_RETRY};
#define ORPHANAGE_HOOKS (&orphanage_hooks)
#else
#define ORPHANAGE_HOOKS NULL
#endif

static superpage_t *orphan_of(uint64_t handle) { return (superpage_t *)(uintptr_t)(handle << SUPERPAGE_SHIFT); }

/* The link of the orphan named by handle: always mapped (the first pages
 * of a superpage are never unmapped, lfstack_pop's precondition). */
static _Atomic uint64_t *orphan_link(uint64_t handle) { return &orphan_of(handle)->orphan_next; }

static void orphanage_push(superpage_t *sp)
{
    /* An orphan: a superpage, empty and owned by nobody (the pusher holds it). */
    BITSLAB_ASSERT(((uintptr_t)sp & (SUPERPAGE_SIZE - 1)) == 0 && sp->hdr.kind == REGION_SUPERPAGE);
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == NULL); /* relaxed: we hold sp */
    BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK && !sp->on_deferred);
    lfstack_push(&orphanage, REGION_BITS, (uintptr_t)sp >> SUPERPAGE_SHIFT, &sp->orphan_next, ORPHANAGE_HOOKS);
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_orphaned, 1, memory_order_relaxed);
}

static superpage_t *orphanage_pop(void)
{
    uint64_t handle = lfstack_pop(&orphanage, REGION_BITS, orphan_link, ORPHANAGE_HOOKS);
    if (!handle) return NULL;
    BITSLAB_ASSERT(orphan_of(handle)->hdr.magic == (REGION_MAGIC ^ (uintptr_t)orphan_of(handle)));
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_superpages_orphaned, 1, memory_order_relaxed);
    return orphan_of(handle);
}

/* ---- address space: shrinking orphans -------------------------------------
 * An orphan gives back its address space but for its first SHRINK_KEEP
 * bytes (the header, the orphanage link and the slab records: what a popper
 * and the lookup of a stale pointer read) when the orphanage already holds
 * ORPHAN_RESERVE superpages, and every orphan does when the kernel refuses a
 * mapping (orphanage_shrink_all). Threads that read further into
 * superpages they find in the registry (the statistics, the heap map, the
 * purger) announce themselves: a Dekker pair, W1/W2 against S1/S2. Either
 * the shrinker sees the walker and leaves the superpage mapped, or the
 * walker sees the mark and skips it. The shrinker never waits. */

#define ORPHAN_RESERVE 16 /* orphans that keep their address space: 32 MiB */

static _Atomic uint32_t walkers;

void orphanage_walk_begin(void)
{
    /* W1. Seq_cst: a Dekker pair with S1/S2 (orphan_shrink). */
    atomic_fetch_add_explicit(&walkers, 1, memory_order_seq_cst);
}

void orphanage_walk_end(void)
{
    // Release, pairs with S2: our reads of the superpages happen before the
    // unmap of a shrinker whose S2 reads the count without us.
    atomic_fetch_sub_explicit(&walkers, 1, memory_order_release);
}

bool orphanage_walkable(superpage_t *sp)
{
    /* W2. Seq_cst: pairs with S1; 1 means skip (it may be unmapped now). */
    return atomic_load_explicit(&sp->shrunk, memory_order_seq_cst) == 0;
}

/* Unmap all of sp but its first SHRINK_KEEP bytes. sp is ours (popped from
 * the orphanage, or on its way there) and decommitted. False, and sp as it
 * was, if it is shrunk already, its metadata could not be decommitted, a
 * walker may be reading it, or the kernel refuses. */
static bool orphan_shrink(superpage_t *sp)
{
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == NULL); /* relaxed: ours, see above */
    BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK);
    uint32_t clean = sp->orphan_clean;
    /* Relaxed: our own superpage's field (walkers only read it). */
    if (atomic_load_explicit(&sp->shrunk, memory_order_relaxed) || !(clean & 1)) return false;
    /* S1. Seq_cst: pairs with W2 (see above). */
    atomic_store_explicit(&sp->shrunk, 1, memory_order_seq_cst);
    /* S2. Seq_cst: pairs with W1 (and acquire: with walk_end's release). */
    if (atomic_load_explicit(&walkers, memory_order_seq_cst) != 0) {
        DEBUG_COUNT(WIN_SHRINK_WALKER_SEEN);
        /* Relaxed: nothing was unmapped; a walker reading 1 skipped a mapped superpage. */
        atomic_store_explicit(&sp->shrunk, 0, memory_order_relaxed);
        return false;
    }
    /* Data slabs whose decommit failed are still counted as committed. */
    size_t committed = (size_t)popcount64(~clean & DATA_SLABS_MASK) * SLAB_SIZE;
    if (!os_unmap_counted((char *)sp + SHRINK_KEEP, SUPERPAGE_SIZE - SHRINK_KEEP, committed)) {
        atomic_store_explicit(&sp->shrunk, 0, memory_order_relaxed); /* relaxed: still mapped, as the store above */
        return false;
    }
    sp->orphan_clean = DATA_SLABS_MASK | 1; /* when it is mapped again: fresh zero pages */
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_shrunk, 1, memory_order_relaxed);
    return true;
}

/* Map a shrunk superpage's address space again; false if something else
 * was mapped there meanwhile (the superpage then stays shrunk for good). */
static bool orphan_regrow(superpage_t *sp)
{
    /* Relaxed: ours (popped), as in orphanage_take. */
    BITSLAB_ASSERT(atomic_load_explicit(&sp->shrunk, memory_order_relaxed) == 1);
    if (!os_map_at((char *)sp + SHRINK_KEEP, SUPERPAGE_SIZE - SHRINK_KEEP)) return false;
    BITSLAB_VG_SUPERPAGE(sp); /* -Dvalgrind: as for a new superpage */
    /* Release: pairs with W2 (a walker reads the pages only after seeing 0). */
    atomic_store_explicit(&sp->shrunk, 0, memory_order_release);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_superpages_shrunk, 1, memory_order_relaxed);
    return true;
}

/* An orphan with its address space mapped: a shrunk one is mapped again in
 * place. One whose address range something else holds now goes back to the
 * orphanage (it may be free later), after at most 4 tries. */
superpage_t *orphanage_take(void)
{
    superpage_t *sp, *blocked = NULL;
    for (unsigned tries = 0; tries < 4 && (sp = orphanage_pop()); tries++) {
        /* Relaxed: our own orphan's field now. */
        if (!atomic_load_explicit(&sp->shrunk, memory_order_relaxed) || orphan_regrow(sp)) break;
        sp->deferred_next = blocked; /* ours while popped */
        blocked = sp;
        sp = NULL;
    }
    /* Relaxed: ours, as above. */
    BITSLAB_ASSERT(!sp || atomic_load_explicit(&sp->shrunk, memory_order_relaxed) == 0);
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
bool orphanage_shrink_all(void)
{
    // Nothing to shrink (every orphan is shrunk already, or there is none):
    // popping them all would make the orphanage look empty to the heaps that
    // look for a superpage meanwhile, and they would map new ones (a thread
    // calling bitslab_collect in a loop made the others map dozens).
    // Relaxed (two loads): statistics counters read as a hint; a count that
    // races with a push or a shrink is right for the next call.
    size_t orphans = atomic_load_explicit(&bitslab_superpages_orphaned, memory_order_relaxed);
    if (orphans <= atomic_load_explicit(&bitslab_superpages_shrunk, memory_order_relaxed)) /* relaxed: as above */
        return false;
    superpage_t *chain = NULL, *sp;
    bool any = false;
    while ((sp = orphanage_pop())) {
        any |= orphan_shrink(sp);
        sp->deferred_next = chain; /* ours while popped */
        chain = sp;
    }
    while ((sp = chain)) {
        chain = sp->deferred_next;
        orphanage_push(sp);
    }
    return any;
}

/* Give an empty, decommitted superpage to the orphanage; beyond
 * ORPHAN_RESERVE orphans it first gives back its address space. */
void orphanage_give(superpage_t *sp)
{
    // Released by superpage_try_release: no freer in flight, no notification
    // pending, the metadata's state recorded in orphan_clean. Relaxed (three
    // loads): ours; the release's acquire load of inflight came first.
    BITSLAB_ASSERT(atomic_load_explicit(&sp->inflight, memory_order_relaxed) == 0);
    /* relaxed: released with none pending, as above */
    BITSLAB_ASSERT(atomic_load_explicit(&sp->queued, memory_order_relaxed) == 0 &&
                   /* relaxed: released with none pending, as above */
                   atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed) == 0);
    BITSLAB_ASSERT(!(sp->orphan_clean & ~(DATA_SLABS_MASK | 1)));
    /* Relaxed: a count compared with the reserve (any recent value does). */
    if (atomic_load_explicit(&bitslab_superpages_orphaned, memory_order_relaxed) >= ORPHAN_RESERVE)
        orphan_shrink(sp);
    orphanage_push(sp);
}
