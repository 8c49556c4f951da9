/*
 * superpage.c: a heap's superpages and their free slabs.
 *
 * A heap owns superpages in a doubly linked list, kept so that every superpage
 * with a FREE data slab comes before every superpage without one: finding a
 * free slab looks at the list head. An EMPTY superpage beyond the heap's
 * retention goes to the orphanage (orphanage.c), from which any heap takes
 * it again before it maps a new one.
 */
#include <errno.h>
#include <string.h>

#include "superpage.h"
#include "debug.h"
#include "orphanage.h"
#include "os.h"
#include "registry.h"
#include "valgrind.h"

_Atomic(superpage_t *) bitslab_all_superpages; /* registry of every superpage, push-only */
_Atomic size_t bitslab_superpages_total;

/* ---- list of a heap's superpages ------------------------------------------ */

static void list_unlink(heap_t *h, superpage_t *sp)
{
    /* Lists change only inside a slow path: heap_atfork_child leaves a heap
     * that is in one alone. */
    BITSLAB_ASSERT(h->in_slow);
    BITSLAB_ASSERT(sp->prev ? sp->prev->next == sp : h->superpages == sp);
    BITSLAB_ASSERT(!sp->next || sp->next->prev == sp);
    if (sp->prev) sp->prev->next = sp->next;
    else h->superpages = sp->next;
    if (sp->next) sp->next->prev = sp->prev;
    sp->prev = sp->next = NULL;
}

static void list_push_front(heap_t *h, superpage_t *sp)
{
    BITSLAB_ASSERT(h->in_slow);
    BITSLAB_ASSERT(!sp->prev && !sp->next && h->superpages != sp); /* on no list */
    BITSLAB_ASSERT(!h->superpages || !h->superpages->prev);
    sp->prev = NULL;
    sp->next = h->superpages;
    if (h->superpages) h->superpages->prev = sp;
    h->superpages = sp;
}

static void list_push_back(heap_t *h, superpage_t *sp)
{
    BITSLAB_ASSERT(h->in_slow);
    BITSLAB_ASSERT(!sp->prev && !sp->next && h->superpages != sp); /* on no list */
    BITSLAB_ASSERT(sp->free_mask == 0); /* only a superpage without a FREE slab goes last */
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
static void superpage_list_promote(heap_t *h, superpage_t *sp)
{
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(sp->free_mask != 0);
    if (h->superpages == sp) return;
    list_unlink(h, sp);
    list_push_front(h, sp);
}

/* ---- the heap's table of owned superpages (free's fast path) -------------- */

static unsigned owned_slot(uintptr_t n) { return (unsigned)(n % HEAP_OWNED_SLOTS); }

/* sp is h's now: it takes its slot (a superpage there before goes slow). */
static void owned_add(heap_t *h, superpage_t *sp)
{
    uintptr_t n = (uintptr_t)sp >> SUPERPAGE_SHIFT;
    h->owned[owned_slot(n)] = n;
}

/* sp leaves h (already off its list): its slot goes to another superpage of
 * h's that shares it, if any, else it is emptied. Never a stale entry: free
 * would take a block of another heap's for its own. */
static void owned_remove(heap_t *h, superpage_t *sp)
{
    uintptr_t n = (uintptr_t)sp >> SUPERPAGE_SHIFT;
    unsigned slot = owned_slot(n);
    if (h->owned[slot] != n) return;
    h->owned[slot] = OWNED_NONE;
    for (superpage_t *t = h->superpages; t; t = t->next) {
        uintptr_t m = (uintptr_t)t >> SUPERPAGE_SHIFT;
        if (owned_slot(m) == slot) {
            h->owned[slot] = m;
            break;
        }
    }
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
    slab_set_taken(s, 0);
    // Relaxed (three stores): the walker's snapshot; no block of this slab
    // is live, so no freer reads them.
    atomic_store_explicit(&s->heap, NULL, memory_order_relaxed);
    atomic_store_explicit(&s->bin_size, 0, memory_order_relaxed); /* relaxed, as above: the walker's snapshot */
    /* relaxed, as above: the walker's snapshot */
    atomic_store_explicit(&s->kind, s->index == 0 ? SLAB_META : SLAB_FREE, memory_order_relaxed);
}

/* Every slab FREE. Data slabs in `decommitted` have their pages returned to
 * the OS (putting one to use counts it as committed again); those in `dirty`
 * may hold old data (calloc zeroes them); the others are committed zero
 * pages (a fresh mapping). */
static void superpage_reset(superpage_t *sp, uint32_t decommitted, uint32_t dirty)
{
    /* Data slabs only, and a slab is either decommitted or may hold data. */
    BITSLAB_ASSERT(!(decommitted & ~DATA_SLABS_MASK) && !(dirty & ~DATA_SLABS_MASK) && !(decommitted & dirty));
    BITSLAB_ASSERT(sp->hdr.magic == (REGION_MAGIC ^ (uintptr_t)sp) && sp->hdr.kind == REGION_SUPERPAGE);
    sp->free_mask = DATA_SLABS_MASK;
    sp->dirty_mask = dirty;
    /* Relaxed: a hint; no slab of sp is configured, so no purger takes bins here. */
    atomic_store_explicit(&sp->sparse_slabs, 0, memory_order_relaxed);
    for (unsigned i = 0; i < SLABS_PER_SUPERPAGE; i++) {
        slab_t *s = &sp->slabs[i];
        s->index = (uint8_t)i;
        s->data = (char *)sp + (uintptr_t)i * SLAB_SIZE;
        slab_set_decommitted(s, (decommitted >> i) & 1);
        s->decommit_failed = 0;
        slab_reset(s);
    }
}

/* Release the empty superpages beyond the retention that have waited out the
 * delay. Only from the top of a slow path (heap_tick, the allocation slow
 * path, a free that emptied a slab): never while a caller walks the heap's
 * superpage list or merges a superpage (heap_scan_remote, superpage_merge),
 * since a release unlinks a superpage that such a caller may hold. */
void superpage_release_aged(heap_t *h)
{
    BITSLAB_ASSERT(h->in_slow);
    size_t retain = SUPERPAGE_RETENTION(h);
    if (h->nempty <= retain) return;
    // A walk that left empty superpages beyond the retention left them
    // waiting out the delay (the others, a freer in flight or bits to merge,
    // are retried by superpage_retry_deferred and the drain): until the
    // first of them is due, and unless the heap or the delay changed, the
    // next walk would find the same. Relaxed: a setting.
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    // Skip while the due time lies ahead by at most the delay (a walk sets
    // it no later than its own time + delay): a clock far past it, even by
    // more than 2^31 ms after a long idle, walks.
    if (h->aged_nempty == h->nempty && h->aged_nsuperpages == h->nsuperpages && h->aged_delay == delay &&
        h->aged_due - os_now_ms() - 1 < (uint32_t)(delay > 0 ? delay : 0))
        return;
    uint32_t due = os_now_ms() + (delay > 0 ? (uint32_t)delay : 0);
    for (superpage_t *sp = h->superpages; sp && sp->free_mask && h->nempty > retain;) {
        superpage_t *next = sp->next;
        if (sp->free_mask == DATA_SLABS_MASK) {
            /* Read before: a released superpage is another heap's at once. */
            uint32_t sp_due = sp->empty_since + (delay > 0 ? (uint32_t)delay : 0);
            if ((int32_t)(sp_due - due) < 0) due = sp_due;
            superpage_try_release(h, sp, retain);
        }
        sp = next;
    }
    h->aged_nempty = h->nempty;
    h->aged_nsuperpages = h->nsuperpages;
    h->aged_delay = delay;
    h->aged_due = due;
}

#define RELEASE_WAIT_SLABS 4 /* committed data slabs (256 KiB) that make an empty superpage wait */

/* Data slabs of sp whose pages are still committed with data (dirty). */
static unsigned committed_data_slabs(superpage_t *sp)
{
    return popcount64(sp->dirty_mask & DATA_SLABS_MASK); /* dirty: never decommitted */
}

static superpage_t *superpage_map(void)
{
    size_t map_len;
    char *base;
    superpage_t *sp = os_map_aligned(SUPERPAGE_SIZE, SUPERPAGE_SIZE, &map_len, &base);
    if (!sp) return NULL;
    BITSLAB_ASSERT(((uintptr_t)sp & (SUPERPAGE_SIZE - 1)) == 0 && map_len == SUPERPAGE_SIZE);
    if (!region_register((uintptr_t)sp, REGION_SUPERPAGE)) {
        os_unmap(sp, SUPERPAGE_SIZE);
        return NULL;
    }
    sp->hdr.magic = REGION_MAGIC ^ (uintptr_t)sp;
    sp->hdr.kind = REGION_SUPERPAGE;
    superpage_reset(sp, 0, 0); /* fresh pages: committed and zero */
    BITSLAB_VG_SUPERPAGE(sp); /* -Dvalgrind: see valgrind.c */
    // Publish in the registry the stats walker reads. Relaxed load: the CAS
    // re-validates.
    superpage_t *head = atomic_load_explicit(&bitslab_all_superpages, memory_order_relaxed);
    do {
        sp->all_next = head;
        /* Release: the walker's acquire load sees the initialised header. */
    } while (!atomic_compare_exchange_weak_explicit(&bitslab_all_superpages, &head, sp, memory_order_release,
                                                    memory_order_relaxed));
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_superpages_total, 1, memory_order_relaxed);
    return sp;
}

/* A new EMPTY superpage for heap h: an orphan, or with map_new a new
 * mapping. NULL if there is none (with map_new: errno ENOMEM, the kernel
 * refused). The heap decides which to try when (heap_grow). */
superpage_t *superpage_acquire(heap_t *h, bool map_new)
{
    BITSLAB_ASSERT(h->in_slow && !h->is_placeholder);
    superpage_t *sp = map_new ? NULL : orphanage_take();
    if (sp) {
        // An orphan: no owner, empty, mapped, and no remote freer or purger
        // can still be in it or have left a notification (superpage_try_release
        // gave it away only with inflight, queued and remote_slabs at 0, and
        // with no live block in it nobody frees into it since). Relaxed
        // (four loads): ours now (the orphanage pop's acquire).
        BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == NULL);
        /* relaxed: ours now (the pop's acquire), as above */
        BITSLAB_ASSERT(atomic_load_explicit(&sp->shrunk, memory_order_relaxed) == 0);
        /* relaxed: ours now (the pop's acquire), as above */
        BITSLAB_ASSERT(atomic_load_explicit(&sp->inflight, memory_order_relaxed) == 0);
        /* relaxed: ours now (the pop's acquire), as above */
        BITSLAB_ASSERT(atomic_load_explicit(&sp->queued, memory_order_relaxed) == 0 &&
                       /* relaxed: ours now (the pop's acquire), as above */
                       atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed) == 0);
        BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK && !sp->on_deferred);
        BITSLAB_ASSERT(!sp->prev && !sp->next);
        /* What the releaser managed to decommit (orphan_clean): the metadata
         * counts as committed again now, clean data slabs as they are used;
         * the others kept their pages and old data. */
        uint32_t clean = sp->orphan_clean;
        if (clean & 1) os_note_committed(SLAB_SIZE - OS_PAGE);
        superpage_reset(sp, clean & DATA_SLABS_MASK, ~clean & DATA_SLABS_MASK);
        uint32_t now = os_now_ms();
        for (uint32_t t = ~clean & DATA_SLABS_MASK; t; t &= t - 1) sp->slabs[ctz64(t)].freed_at = now;
        purge_dirty_add(h, (int)popcount64(~clean & DATA_SLABS_MASK));
    } else if (!map_new || !(sp = superpage_map())) {
        return NULL;
    }
    // Relaxed: no live block exists in sp yet, so no freer reads this; blocks
    // handed out later carry the hand-off ordering.
    atomic_store_explicit(&sp->heap, h, memory_order_relaxed);
    list_push_front(h, sp);
    owned_add(h, sp);
    h->nsuperpages++;
    h->nempty++;
    BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK && h->nempty <= h->nsuperpages);
    sp->empty_since = os_now_ms();
    return sp;
}

/* Decommit an empty superpage on its way to the orphanage: its data slabs,
 * then all of slab 0 but the first page (header, links). Records in
 * orphan_clean, which lies in that first page, what was decommitted: the
 * slab_t flags that tell it now are themselves in the pages that follow. */
static void superpage_decommit_for_orphanage(heap_t *h, superpage_t *sp)
{
    BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK); /* every data slab FREE */
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == NULL); /* relaxed: released by us */
    purge_decommit_slabs(h, sp, DATA_SLABS_MASK);
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
    // sp is h's: on its list, its deferred list or popped from its queue.
    // Relaxed: the owner reads its own field.
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h);
    BITSLAB_ASSERT(h->in_slow && h->nempty <= h->nsuperpages);
    if (sp->free_mask != DATA_SLABS_MASK || h->nempty <= retain) return;
    // Beyond the heap's retention an empty superpage that still holds at
    // least RELEASE_WAIT_SLABS committed data slabs waits out the purge
    // delay, like a FREE slab: a program that frees and allocates large
    // blocks in turn reuses it instead of refaulting a new one. One with less
    // committed memory goes at once, as does everything at a full collect
    // (retain == 0) or with the delay off (-1). What waits is bounded by the
    // dirty caps (its slabs count in them). superpage_release_aged releases
    // it once the delay has passed. Relaxed: a setting.
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    if (retain && delay > 0 && os_now_ms() - sp->empty_since < (uint32_t)delay &&
        committed_data_slabs(sp) >= RELEASE_WAIT_SLABS)
        return;
    // Acquire: pairs with each freer's release fetch_sub of `inflight` (F5).
    // Every freer whose bit we merged incremented it before setting the bit,
    // so reading 0 means all of them have finished touching sp
    // (docs/remote-free.md).
    if (atomic_load_explicit(&sp->inflight, memory_order_acquire) != 0) {
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
    // Relaxed (two loads): ordered after the acquire above. queued != 0: sp
    // sits in (or is being pushed onto) our remote queue, and the drain that
    // pops it retries the release; remote_slabs != 0: bits a drain or scan
    // has still to merge.
    if (atomic_load_explicit(&sp->queued, memory_order_relaxed) != 0 ||
        /* relaxed, as above: ordered after the acquire above */
        atomic_load_explicit(&sp->remote_slabs, memory_order_relaxed) != 0) {
        DEBUG_COUNT(WIN_RELEASE_DEFERRED_QUEUED);
        return;
    }
    if (sp->on_deferred) { /* unlink: the list is short (one entry per stopped freer) */
        superpage_t **pp = &h->deferred;
        while (*pp != sp) pp = &(*pp)->deferred_next;
        *pp = sp->deferred_next;
        sp->on_deferred = 0;
    }
    BITSLAB_ASSERT(h->nempty >= 1 && h->nsuperpages >= h->nempty);
    list_unlink(h, sp);
    owned_remove(h, sp);
    h->nsuperpages--;
    h->nempty--;
    /* Relaxed: nobody holds a block in sp; the push below releases it. */
    atomic_store_explicit(&sp->heap, NULL, memory_order_relaxed);
    /* Relaxed: a hint; an empty superpage has no sparse slab for purgers. */
    atomic_store_explicit(&sp->sparse_slabs, 0, memory_order_relaxed);
    /* Keep the first page (header, links); return the rest to the OS. */
    superpage_decommit_for_orphanage(h, sp);
    orphanage_give(sp);
}

/* Retry the releases deferred by a freer in flight (slow path). */
void superpage_retry_deferred(heap_t *h)
{
    BITSLAB_ASSERT(h->in_slow);
    superpage_t *sp = h->deferred;
    h->deferred = NULL;
    while (sp) {
        superpage_t *next = sp->deferred_next;
        BITSLAB_ASSERT(sp->on_deferred);
        sp->on_deferred = 0;
        superpage_try_release(h, sp, SUPERPAGE_RETENTION(h)); /* may defer it again */
        sp = next;
    }
}

/* ---- slab runs ------------------------------------------------------------ */

/* Starting positions of runs of n set bits in mask, restricted to multiples of
 * `step` slabs. */
static uint32_t run_starts(uint32_t mask, unsigned n, unsigned step)
{
    BITSLAB_ASSERT(n >= 1 && n <= WIDE_MAX_SLABS && step >= 1 && step <= WIDE_MAX_SLABS);
    BITSLAB_ASSERT(!(mask & ~DATA_SLABS_MASK)); /* slab 0 is never FREE */
    /* m: the starts of runs of k set bits, k doubling up to n (log n steps). */
    uint32_t m = mask;
    for (unsigned k = 1; k < n && m;) {
        unsigned step_k = k < n - k ? k : n - k;
        m &= m >> step_k;
        k += step_k;
    }
    if (step > 1) {
        uint32_t aligned = 0;
        for (unsigned i = 0; i < SLABS_PER_SUPERPAGE; i += step) aligned |= 1u << i;
        m &= aligned;
    }
    return m;
}

/* The FREE slabs of sp whose pages are still committed (dirty, not
 * decommitted): reusing them costs no page fault. */
static uint32_t committed_free_mask(superpage_t *sp)
{
    return sp->free_mask & sp->dirty_mask; /* dirty: never decommitted */
}

/* Take the n slabs of sp at the first of `starts` (a non-empty mask of
 * run starts). */
static slab_t *take_run(heap_t *h, superpage_t *sp, uint32_t starts, unsigned n)
{
    BITSLAB_ASSERT(starts != 0 && n >= 1 && n <= WIDE_MAX_SLABS);
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    unsigned first = ctz64(starts);
    uint32_t bits = (n == 32 ? ~0u : ((1u << n) - 1)) << first;
    BITSLAB_ASSERT(first >= 1 && first + n <= SLABS_PER_SUPERPAGE && (sp->free_mask & bits) == bits);
    BITSLAB_ASSERT(sp->free_mask != DATA_SLABS_MASK || h->nempty >= 1);
    if (sp->free_mask == DATA_SLABS_MASK) h->nempty--;
    sp->free_mask &= ~bits;
    if (!sp->free_mask && sp->next) {
        list_unlink(h, sp);
        list_push_back(h, sp);
    }
    return &sp->slabs[first];
}

#define TAKE_COMMITTED_SCAN 8 /* superpages looked at for a committed run first */

/* Take n consecutive FREE slabs starting at a multiple of `step` from the
 * heap's superpages; NULL if none has such a run (the heap then acquires a
 * superpage: superpage_take_run). */
slab_t *superpage_take_slabs(heap_t *h, unsigned n, size_t step)
{
    /* step: an alignment of 128 KiB .. 1 MiB in slabs, or 1. */
    BITSLAB_ASSERT(step >= 1 && step <= WIDE_MAX_SLABS && (step & (step - 1)) == 0);
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
    if (!sp || !starts) return NULL;
    return take_run(h, sp, starts, n);
}

/* The same from sp, a superpage h has just acquired (every data slab FREE). */
slab_t *superpage_take_run(heap_t *h, superpage_t *sp, unsigned n, size_t step)
{
    BITSLAB_ASSERT(sp->free_mask == DATA_SLABS_MASK); /* just acquired */
    return take_run(h, sp, run_starts(sp->free_mask, n, (unsigned)step), n);
}

/* Make the n slabs starting at s FREE (as of `now`), first half of a
 * return: the caller has checked that no remote bit is left
 * (slab_check_no_remote), and calls superpage_return_slabs next. */
void superpage_reset_slabs(heap_t *h, slab_t *s, unsigned n, uint32_t now)
{
    BITSLAB_ASSERT(h->in_slow && n >= 1 && n <= WIDE_MAX_SLABS && h->slabs_used >= n);
    BITSLAB_ASSERT(slab_is_record(s) && s->index >= 1 && s->index + n <= SLABS_PER_SUPERPAGE);
    /* A run of configured slabs of h (a small slab, or a wide block's head
     * and tails), none in the free mask, with no live bin, on no list and
     * with no cached word. */
    BITSLAB_ASSERT((slab_kind_now(s) == SLAB_SMALL && n == 1) || slab_kind_now(s) == SLAB_WIDE);
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(slab_taken(s) == 0 && s->state != STATE_ACTIVE);
    BITSLAB_ASSERT(!(superpage_of_slab(s)->free_mask & (((1u << n) - 1) << s->index)));
    for (unsigned i = 0; i < n; i++) {
        BITSLAB_ASSERT(i == 0 || slab_kind_now(&s[i]) == SLAB_WIDE_TAIL);
        BITSLAB_ASSERT(s[i].cached == NO_WORD && !s[i].prev && !s[i].next && !slab_decommitted(&s[i]));
    }
    purge_slabs_in_use_add(-(ptrdiff_t)n);
    h->slabs_used -= n;
    for (unsigned i = 0; i < n; i++) {
        slab_reset(s + i);
        s[i].freed_at = now;
        if (slab_dirty(&s[i])) purge_dirty_add(h, 1);
    }
}

/* Second half: give the n FREE slabs at s back to their superpage. If that
 * empties the superpage, it may go to the orphanage now (`may_release`);
 * callers that still walk the superpage's slabs pass false and retry the
 * release after. */
void superpage_return_slabs(heap_t *h, slab_t *s, unsigned n, uint32_t now, bool may_release)
{
    superpage_t *sp = superpage_of_slab(s);
    BITSLAB_ASSERT(h->in_slow && n >= 1 && n <= WIDE_MAX_SLABS);
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(s->index >= 1 && s->index + n <= SLABS_PER_SUPERPAGE);
    BITSLAB_ASSERT(!(sp->free_mask & (((1u << n) - 1) << s->index))); /* not FREE in the mask yet */
    for (unsigned i = 0; i < n; i++) BITSLAB_ASSERT(slab_kind_now(&s[i]) == SLAB_FREE); /* superpage_reset_slabs */
    bool was_full = sp->free_mask == 0;
    sp->free_mask |= ((n == 32 ? ~0u : ((1u << n) - 1)) << s->index);
    if (was_full) superpage_list_promote(h, sp);
    if (sp->free_mask == DATA_SLABS_MASK) {
        h->nempty++;
        BITSLAB_ASSERT(h->nempty <= h->nsuperpages);
        sp->empty_since = now;
        if (may_release) superpage_try_release(h, sp, SUPERPAGE_RETENTION(h));
    }
}
