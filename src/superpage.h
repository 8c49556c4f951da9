/*
 * superpage.h: a heap's superpages and their FREE slabs (superpage.c).
 */
#ifndef BITSLAB_SUPERPAGE_H
#define BITSLAB_SUPERPAGE_H

#include "options.h"
#include "purge.h"

#pragma GCC visibility push(hidden)

/* A heap keeps 1 + 1/8 of its superpages when they are empty, before giving
 * more to the orphanage (their pages are purged like any FREE slab's), or
 * exactly the option retain_superpages if it is >= 0 (options.c). */
static inline size_t superpage_retention(size_t nsuperpages)
{
    /* Relaxed: pairs with the relaxed store in options.c; a setting, any value is valid. */
    int32_t r = atomic_load_explicit(&bitslab_retain_superpages, memory_order_relaxed);
    return r < 0 ? 1 + nsuperpages / 8 : (size_t)r;
}
#define SUPERPAGE_RETENTION(h) superpage_retention((h)->nsuperpages)

superpage_t *superpage_acquire(heap_t *h, bool map_new);
void superpage_try_release(heap_t *h, superpage_t *sp, size_t retain);
void superpage_retry_deferred(heap_t *h);
void superpage_release_aged(heap_t *h);
slab_t *superpage_take_slabs(heap_t *h, unsigned n, size_t step);
slab_t *superpage_take_run(heap_t *h, superpage_t *sp, unsigned n, size_t step);
void superpage_reset_slabs(heap_t *h, slab_t *s, unsigned n, uint32_t now);
void superpage_return_slabs(heap_t *h, slab_t *s, unsigned n, uint32_t now, bool may_release);
/* Every superpage ever mapped, newest first (push-only: a superpage stays in
 * it for the life of the process, shrunk or not). */
extern _Atomic(superpage_t *) bitslab_all_superpages;
extern _Atomic size_t bitslab_superpages_total;

#pragma GCC visibility pop

#endif /* BITSLAB_SUPERPAGE_H */
