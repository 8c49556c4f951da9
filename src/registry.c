/*
 * registry.c: the region registry, one byte per 2 MiB of the 47-bit user
 * address space saying what bitslab has there (REGION_SUPERPAGE,
 * REGION_HUGE, 0: not ours), so that free() tells a bitslab pointer from a
 * foreign one without reading memory that might not be mapped.
 */
#include "registry.h"

/* The registry lives in .bss (64 MiB of address space): zero pages cost no
 * memory until a byte in them is set (one 4 KiB page covers 8 GiB of address
 * space), and the fast path reads it at a fixed address. */
_Atomic uint8_t bitslab_region_map[REGION_MAP_SIZE];

bool region_register(uintptr_t region, unsigned kind)
{
    BITSLAB_ASSERT((region & (SUPERPAGE_SIZE - 1)) == 0 && (kind == REGION_SUPERPAGE || kind == REGION_HUGE));
    uintptr_t idx = region >> SUPERPAGE_SHIFT;
    if (idx >= REGION_MAP_SIZE) return false; /* a 5-level-paging address: refuse */
    // Relaxed: read by free() on a pointer whose hand-off already orders this
    // registration before it (see region_kind_of).
    atomic_store_explicit(&bitslab_region_map[idx], (uint8_t)kind, memory_order_relaxed);
    return true;
}

void region_unregister(uintptr_t region)
{
    BITSLAB_ASSERT((region & (SUPERPAGE_SIZE - 1)) == 0 && (region >> SUPERPAGE_SHIFT) < REGION_MAP_SIZE);
    // Only a registered huge mapping is unregistered (superpages stay).
    // Relaxed: a check; the region is ours.
    BITSLAB_ASSERT(atomic_load_explicit(&bitslab_region_map[region >> SUPERPAGE_SHIFT], memory_order_relaxed) ==
                   REGION_HUGE);
    // Relaxed: done before munmap, so a later mapping of the same region
    // registers after this clear (the syscalls order them).
    atomic_store_explicit(&bitslab_region_map[region >> SUPERPAGE_SHIFT], 0, memory_order_relaxed);
}
