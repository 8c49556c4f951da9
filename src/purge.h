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
static inline bool slab_counts_dirty(const slab_t *s) { return s->dirty && !s->decommit_failed; }

/* h's dirty FREE slabs change by delta (and the process total with them). */
void purge_dirty_add(heap_t *h, int delta);
/* Slabs configured (small or wide) in all heaps change by delta. */
void purge_slabs_in_use_add(ptrdiff_t delta);
/* The process-wide cap on dirty FREE slabs, and their count now. */
size_t purge_dirty_cap(void);
size_t purge_dirty_total(void);
bool dirty_over_process_cap(unsigned factor);
/* Decommit the FREE slabs of sp in mask (owner of sp only). */
void purge_decommit_slabs(heap_t *h, superpage_t *sp, uint32_t mask);
/* A FREE slab is being put to use: its pages count as committed again. */
void slab_mark_in_use(heap_t *h, slab_t *s);
/* Decommit up to limit dirty FREE slabs of h, FREE for min_age ms or more. */
void purge_aged(heap_t *h, uint32_t min_age, size_t limit, uint32_t now);
/* Over a cap: decommit h's dirty FREE slabs down to both caps. */
void purge_down_to_caps(heap_t *h, size_t heap_cap, size_t cap);

#pragma GCC visibility pop

#endif /* BITSLAB_PURGE_H */
