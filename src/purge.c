/*
 * purge.c: giving FREE slabs' pages back to the OS, and how much a heap and
 * the process may keep committed meanwhile.
 *
 * A FREE slab whose pages may hold data is "dirty" and counts in its heap's
 * dirty_free and in the process total. Reusing it costs no page fault, so
 * it is kept for the purge delay (bitslab_purge_delay_ms) and decommitted
 * after (purge_aged, from heap_purge); past a cap (twice HEAP_DIRTY_FREE_MAX
 * per heap, twice purge_dirty_cap for the process) the heap that returns a
 * slab purges its own down to the cap, the longest unused first
 * (purge_down_to_caps). The policy that decides when (heap_purge, the
 * sparse slabs, idle heaps) is the heap's: heap.c.
 */
#include "purge.h"
#include "bitmap.h"
#include "options.h"
#include "os.h"

_Atomic size_t purge_dirty_free_total;
_Atomic size_t purge_slabs_in_use_total;



/* Return the data pages of the slabs in `mask` to the OS, one madvise per run
 * of adjacent slabs; skips slabs already decommitted. A run whose madvise
 * fails keeps its pages: its slabs stay committed and dirty (calloc zeroes
 * them), marked decommit_failed so that purges do not retry them on every
 * slow path (under mlockall every madvise fails); they leave dirty_free
 * either way. */
void purge_decommit_slabs(heap_t *h, superpage_t *sp, uint32_t mask)
{
    BITSLAB_ASSERT(!(mask & ~DATA_SLABS_MASK)); /* never the metadata slab */
    BITSLAB_ASSERT(!(mask & ~sp->free_mask));    /* FREE slabs only */
    /* Relaxed: the owner's own field (NULL: on its way to the orphanage). */
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h ||
                   /* relaxed, as above: the owner's own field */
                   atomic_load_explicit(&sp->heap, memory_order_relaxed) == NULL);
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
            BITSLAB_ASSERT(slab_kind_now(s) == SLAB_FREE && !slab_decommitted(s));
            if (purge_counts_dirty(s)) purge_dirty_add(h, -1); /* only FREE slabs are decommitted */
            if (ok) {
                slab_set_dirty(s, false);
                slab_set_decommitted(s, true);
                s->decommit_failed = 0;
            } else if (slab_dirty(s)) {
                s->decommit_failed = 1;
            }
        }
        m &= ~(uint32_t)((((uint64_t)1 << len) - 1) << first);
    }
}

/* A FREE slab is being put to use: its pages count as committed again. */
void purge_slab_in_use(heap_t *h, slab_t *s)
{
    /* FREE, and just taken out of its superpage's free mask by h. */
    BITSLAB_ASSERT(slab_is_record(s) && s->index >= 1 && slab_kind_now(s) == SLAB_FREE);
    BITSLAB_ASSERT(!((superpage_of_slab(s)->free_mask >> s->index) & 1));
    /* Relaxed: the owner's own field. */
    BITSLAB_ASSERT(atomic_load_explicit(&superpage_of_slab(s)->heap, memory_order_relaxed) == h);
    BITSLAB_ASSERT(!s->decommit_failed || slab_dirty(s)); /* decommit_failed: "FREE, dirty, and ..." */
    BITSLAB_ASSERT(!(slab_dirty(s) && slab_decommitted(s))); /* a decommit leaves it clean */
    purge_slabs_in_use_add(1);
    h->slabs_used++;
    if (purge_counts_dirty(s)) purge_dirty_add(h, -1);
    s->decommit_failed = 0;
    if (slab_decommitted(s)) {
        os_note_committed(SLAB_SIZE);
        slab_set_decommitted(s, false);
    }
}

/* Decommit up to `limit` FREE slabs of h whose pages are still committed
 * and that have been FREE for at least min_age ms. */
void purge_aged(heap_t *h, uint32_t min_age, size_t limit, uint32_t now)
{
    for (superpage_t *sp = h->superpages; sp && sp->free_mask && limit; sp = sp->next) {
        uint32_t m = 0;
        for (uint32_t t = sp->free_mask; t && limit; t &= t - 1) {
            slab_t *s = &sp->slabs[ctz64(t)];
            BITSLAB_ASSERT(slab_kind_now(s) == SLAB_FREE); /* the free mask names FREE slabs */
            if (purge_counts_dirty(s) && !slab_decommitted(s) && now - s->freed_at >= min_age) {
                m |= 1u << s->index;
                limit--;
            }
        }
        if (m) purge_decommit_slabs(h, sp, m);
    }
}

/* FREE-but-committed slabs h must give up to be within both caps. */
static size_t dirty_excess(heap_t *h, size_t heap_cap, size_t cap)
{
    size_t total = purge_dirty_total();
    size_t over_heap = h->dirty_free > heap_cap ? h->dirty_free - heap_cap : 0;
    size_t over_process = total > cap ? total - cap : 0;
    return over_heap > over_process ? over_heap : over_process;
}

/* Over a cap: decommit the slabs unused the longest first (those past the
 * delay, then past half of it, a quarter, ... down to 16 ms), and only then
 * any (the caps are hard). Slabs freed a moment ago are the likeliest to be
 * reused at once: purging them first meant a madvise and a refault per reuse
 * on programs that churn large blocks. */
void purge_down_to_caps(heap_t *h, size_t heap_cap, size_t cap)
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
