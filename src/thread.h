/*
 * thread.h: a heap per thread (thread.c): the first allocation of a thread
 * whose TLS still names the placeholder heap gives it one; thread exit
 * gives it back.
 */
#ifndef BITSLAB_THREAD_H
#define BITSLAB_THREAD_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* heap_alloc_slow and wide_alloc for a thread whose heap is still
 * bitslab_empty_heap: its own heap first (or, for a thread that may not
 * keep one, a heap lent for this allocation). NULL, errno ENOMEM: out of
 * memory. */
void *thread_alloc_slow(unsigned cls, bool *fresh);
void *thread_wide_alloc(size_t size, size_t align, bool zero);

#pragma GCC visibility pop

#endif /* BITSLAB_THREAD_H */
