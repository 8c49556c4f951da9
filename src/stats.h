/*
 * stats.h: the statistics walker's view of slabs (stats.c; stats_print.c
 * prints it).
 */
#ifndef BITSLAB_STATS_H
#define BITSLAB_STATS_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* One slab as the statistics walker sees it, read race-free (stats.c). */
typedef struct slab_snapshot {
    uint8_t kind;         /* enum slab_kind; a slab caught mid-(re)configuration reads FREE */
    bool decommitted;     /* its data pages were returned to the OS */
    unsigned cls;         /* SMALL: size class */
    uint32_t bin_size;    /* SMALL: bin size; WIDE: bytes of the whole run */
    uint32_t bins;        /* SMALL: bins in the slab; WIDE: 1 */
    uint32_t live, cached, pending, free; /* live + cached + pending + free == bins */
    heap_t *owner;        /* SMALL, WIDE: the owning heap (compare only) */
} slab_snapshot_t;
heap_t *stats_self_heap(void); /* the calling thread's heap, NULL if it has none */
void stats_slab_snapshot(superpage_t *sp, unsigned i, heap_t *self, uint16_t meta_resident, slab_snapshot_t *out);
size_t stats_superpage_resident(superpage_t *sp, uint16_t *pages);
uint32_t stats_heap_id(const heap_t *h);

#pragma GCC visibility pop

#endif /* BITSLAB_STATS_H */
