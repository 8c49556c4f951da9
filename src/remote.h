/*
 * remote.h: remote frees (remote.c, docs/remote-free.md): the wait-free bit
 * flip into a slab's remote map, and the heap's queue of superpages that
 * received some.
 */
#ifndef BITSLAB_REMOTE_H
#define BITSLAB_REMOTE_H

#include "types.h"

#pragma GCC visibility push(hidden)

void remote_free(superpage_t *sp, slab_t *s, uint32_t idx, const void *p);
void remote_notify(superpage_t *sp, unsigned slab_index, const void *p);
void remote_queue_init(heap_t *h);
superpage_t *remote_queue_pop(heap_t *h, bool *stalled);

#pragma GCC visibility pop

#endif /* BITSLAB_REMOTE_H */
