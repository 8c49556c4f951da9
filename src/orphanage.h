/*
 * orphanage.h: the orphanage of EMPTY superpages and the registry walkers'
 * handshake with the superpages it shrinks (orphanage.c).
 */
#ifndef BITSLAB_ORPHANAGE_H
#define BITSLAB_ORPHANAGE_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* An orphan with its address space mapped (a shrunk one is mapped again in
 * place), or NULL. */
superpage_t *orphanage_take(void);
/* Push sp, empty and decommitted, shrinking it first beyond the reserve. */
void orphanage_give(superpage_t *sp);
/* Every orphan gives back its address space (the kernel refused a mapping);
 * true if any did. */
bool orphanage_shrink_all(void);
/* Reading superpages of bitslab_all_superpages past their first pages (the
 * statistics, the heap map, the purger): between walk_begin and walk_end,
 * and only those orphanage_walkable says are mapped. */
void orphanage_walk_begin(void);
void orphanage_walk_end(void);
bool orphanage_walkable(superpage_t *sp);
extern _Atomic size_t bitslab_superpages_orphaned;
extern _Atomic size_t bitslab_superpages_shrunk;

#pragma GCC visibility pop

#endif /* BITSLAB_ORPHANAGE_H */
