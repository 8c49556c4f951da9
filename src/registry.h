/*
 * registry.h: the region registry: one byte per 2 MiB of address space
 * saying what bitslab has there (registry.c).
 */
#ifndef BITSLAB_REGISTRY_H
#define BITSLAB_REGISTRY_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* ---- address -> metadata -------------------------------------------------- */

/* The region header of any pointer bitslab returned. A slab block lies in
 * (base, base + 2 MiB); a huge block at most 2 MiB past its header, which may
 * be exactly 2 MiB for 2 MiB-aligned huge blocks: hence the "- 1". */
static inline uintptr_t region_of(const void *p)
{
    return ((uintptr_t)p - 1) & ~(SUPERPAGE_SIZE - 1);
}

/* Region registry: one byte per 2 MiB of the 47-bit address space, saying
 * what bitslab has there (REGION_SUPERPAGE, REGION_HUGE, or 0 = not ours).
 * Lets free() reject foreign pointers without touching memory that may not
 * be mapped, and tells superpages from huge blocks in the same load. */
#define REGION_MAP_SIZE ((size_t)1 << REGION_BITS)
extern _Atomic uint8_t bitslab_region_map[REGION_MAP_SIZE];

static inline unsigned region_kind_of(uintptr_t region)
{
    uintptr_t idx = region >> SUPERPAGE_SHIFT;
    if (unlikely(idx >= REGION_MAP_SIZE)) return 0;
    // Relaxed: a valid pointer's region was registered before the block was
    // handed out, and the hand-off to this thread orders that before us.
    return atomic_load_explicit(&bitslab_region_map[idx], memory_order_relaxed);
}

bool region_register(uintptr_t region, unsigned kind);
void region_unregister(uintptr_t region);

#pragma GCC visibility pop

#endif /* BITSLAB_REGISTRY_H */
