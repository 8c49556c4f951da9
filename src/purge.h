/*
 * purge.h: decommit of FREE slabs and the caps on what stays committed
 * (purge.c).
 */
#ifndef BITSLAB_PURGE_H
#define BITSLAB_PURGE_H

#include "slab.h"

#pragma GCC visibility push(hidden)

/* When heap_purge runs, and what it takes: the slabs past the delay (the
 * periodic modes: at most every delay / 2 ms; PURGE_TICK without the call
 * count), those past it now (PURGE_EXPIRED), or all (PURGE_ALL). */
enum purge_mode { PURGE_PERIODIC, PURGE_TICK, PURGE_EXPIRED, PURGE_ALL };

/* A FREE slab counts in dirty_free while its pages may hold data and a
 * decommit may still return them. */
static inline bool purge_counts_dirty(const slab_t *s) { return slab_dirty(s) && !s->decommit_failed; }

/* The dirty counts: inline, they are on the paths that take and return slabs. */
/* FREE slabs with committed pages, all heaps together: the process-wide cap
 * on memory kept for reuse (see heap_return_slabs, heap.c). */
extern _Atomic size_t purge_dirty_free_total;

static inline void purge_dirty_add(heap_t *h, int delta)
{
    BITSLAB_ASSERT(delta >= 0 || h->dirty_free >= (uint32_t)-delta); /* counts FREE slabs: never below 0 */
    h->dirty_free += (uint32_t)delta;
    /* Relaxed: a counter compared with a cap; nothing is published through it. */
    atomic_fetch_add_explicit(&purge_dirty_free_total, (size_t)(ptrdiff_t)delta, memory_order_relaxed);
}

/* Slabs configured (small or wide) in all heaps: the measure of what the
 * process uses, for the cap below. */
extern _Atomic size_t purge_slabs_in_use_total;

static inline void purge_slabs_in_use_add(ptrdiff_t delta)
{
    /* Relaxed: a counter compared with a cap; nothing is published through it. */
    atomic_fetch_add_explicit(&purge_slabs_in_use_total, (size_t)delta, memory_order_relaxed);
}

/* How many FREE-but-committed slabs the whole process keeps, at most, before
 * heaps purge theirs early: 2 MiB plus as many as are in use. Past twice
 * that, the heap that returns a slab purges its own down to it. A program
 * that frees everything thus keeps little, and one in a steady state keeps
 * the slack its fragmentation needs. */
static inline size_t purge_dirty_cap(void)
{
    /* Relaxed: a counter compared with a cap. */
    return 32 + atomic_load_explicit(&purge_slabs_in_use_total, memory_order_relaxed);
}

static inline size_t purge_dirty_total(void)
{
    /* Relaxed: a counter compared with a cap. */
    return atomic_load_explicit(&purge_dirty_free_total, memory_order_relaxed);
}

static inline bool purge_over_process_cap(unsigned factor) { return purge_dirty_total() > factor * purge_dirty_cap(); }

/* Decommit the FREE slabs of sp in mask (owner of sp only). */
void purge_decommit_slabs(heap_t *h, superpage_t *sp, uint32_t mask);
/* A FREE slab is being put to use: its pages count as committed again. */
void purge_slab_in_use(heap_t *h, slab_t *s);
/* Decommit up to limit dirty FREE slabs of h, FREE for min_age ms or more. */
void purge_aged(heap_t *h, uint32_t min_age, size_t limit, uint32_t now);
/* Over a cap: decommit h's dirty FREE slabs down to both caps. */
void purge_down_to_caps(heap_t *h, size_t heap_cap, size_t cap);

#pragma GCC visibility pop

#endif /* BITSLAB_PURGE_H */
