/*
 * heap.h: thread-local heaps (heap.c): the slow path of malloc, the owner's
 * free slow path (heap_slab_freed_slow; a free by another thread is api.c's
 * free_slow), the slab lists, remote-free drains, the purge policy, wide
 * blocks, thread exit, adoption of abandoned heaps, fork.
 */
#ifndef BITSLAB_HEAP_H
#define BITSLAB_HEAP_H

#include "purge.h"

#pragma GCC visibility push(hidden)

/* FREE slabs whose pages are still committed, per heap: past twice this many
 * (4 MiB plus as many as the heap has in use) the heap purges the ones past
 * the delay, then others down to this many, the longest unused first. */
#define HEAP_DIRTY_FREE_MAX(h) (64 + (h)->slabs_used)

/* Frees into the word cache between two heap_tick calls. */
#define HEAP_TICK 256

/* ---- thread-local heap ---------------------------------------------------- */

extern heap_t bitslab_empty_heap;
extern __thread heap_t *bitslab_tls_heap __attribute__((tls_model("initial-exec")));

/* The malloc slow path of a class, for a thread with a heap of its own
 * (thread_alloc_slow gives one first). */
void *heap_alloc_slow(heap_t *h, unsigned cls, bool *fresh);
void heap_slab_freed_slow(heap_t *h, slab_t *s, uint32_t taken_after);
void heap_drain_remote(heap_t *h);
void heap_tick(heap_t *h);
void heap_collect(heap_t *h, bool full);
void heap_collect_abandoned(void);
/* Decommit h's FREE slabs (and sparse slabs' free pages, and aged huge
 * mappings) as `mode` says, at most `limit` slabs. Slow paths only. */
void heap_purge(heap_t *h, enum purge_mode mode, size_t limit);
bool heap_help_forked(void);
heap_t *heap_by_id(uint32_t id);
/* The pool of abandoned heaps: a heap to adopt (or a new one), and one
 * given back (thread exit, a heap lent for one allocation). */
heap_t *heap_pop_or_new(void);
void heap_pool_push(heap_t *h);
/* pthread_atfork's child handler (thread.c registers it). */
void heap_atfork_child(void);
extern _Atomic uint32_t bitslab_heaps_total;
extern _Atomic size_t bitslab_heaps_abandoned;

/* Wide blocks (above 32 KiB, up to WIDE_MAX): runs of whole slabs. */
void *wide_alloc(heap_t *h, size_t size, size_t align, bool zero);

/* A heap's owner is inside a slow path: the fork child handler leaves such a
 * heap alone (it may be half-way through a list update). The signal fences
 * keep the compiler from moving the heap's updates outside the marks; the
 * fork, in this thread's image, needs no more. */
static inline void slow_enter(heap_t *h)
{
    BITSLAB_ASSERT(!h->is_placeholder); /* the empty heap is never entered: it owns nothing */
    h->in_slow++;
    atomic_signal_fence(memory_order_seq_cst); /* pairs with the fork child handler's read of in_slow */
}

static inline void slow_leave(heap_t *h)
{
    BITSLAB_ASSERT(h->in_slow >= 1); /* paired with a slow_enter */
    atomic_signal_fence(memory_order_seq_cst); /* pairs with the fork child handler's read of in_slow */
    h->in_slow--;
}

#pragma GCC visibility pop

#endif /* BITSLAB_HEAP_H */
