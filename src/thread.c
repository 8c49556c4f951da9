/*
 * thread.c: a heap per thread. A thread's first allocation gives it a heap
 * (an abandoned one from the pool, or a new one) and registers a pthread
 * key destructor; at thread exit that destructor collects the heap (merges
 * its remote frees, returns its empty memory) and pushes it onto the pool
 * of abandoned heaps, with whatever is still allocated in it
 * (docs/thread-exit.md). A thread that may not keep a heap (its destructor
 * has run, or the key could not be set) borrows one for each allocation.
 * heap.c holds the heaps themselves, the pool and the slow paths.
 */
#include <errno.h>
#include <pthread.h>

#include "thread.h"
#include "debug.h"
#include "heap.h"
#include "options.h"

/* Set when this thread may not keep a heap: its heap destructor has run (a
 * later pthread key destructor is allocating, perhaps in the last round,
 * after which no destructor would give the heap back), or the key could not
 * be set. Such a thread borrows a heap from the pool for each allocation
 * (heap_for_alloc, heap_unlend) and never holds one. */
static _Thread_local uint8_t tls_heapless __attribute__((tls_model("initial-exec")));

/* ---- thread exit ---------------------------------------------------------- */

static _Atomic uint32_t heap_key_state; /* 0: none, else key + 1 */

static void heap_thread_exit(void *arg)
{
    heap_t *h = arg;
    if (!h || h != bitslab_tls_heap) return;
    BITSLAB_ASSERT(!h->is_placeholder && !h->in_slow);
    heap_collect(h, true);
    bitslab_tls_heap = &bitslab_empty_heap;
    tls_heapless = 1; /* from now on, allocations borrow a heap (heap_for_alloc) */
    DEBUG_PARK(PARK_EXIT_COLLECTED);
    heap_pool_push(h);
}

static bool heap_key(pthread_key_t *out)
{
    /* Acquire: pairs with the release CAS below. */
    uint32_t st = atomic_load_explicit(&heap_key_state, memory_order_acquire);
    if (!st) {
        pthread_key_t k;
        if (pthread_key_create(&k, heap_thread_exit) != 0) return false;
        static _Atomic int atfork_done;
        /* Relaxed exchange: only makes the registration happen once. */
        if (!atomic_exchange_explicit(&atfork_done, 1, memory_order_relaxed))
            pthread_atfork(NULL, NULL, heap_atfork_child);
        uint32_t expected = 0;
        /* Acq_rel: publish our key, or learn the winner's (then drop ours). */
        if (atomic_compare_exchange_strong_explicit(&heap_key_state, &expected, (uint32_t)k + 1,
                                                    memory_order_acq_rel, memory_order_acquire))
            st = (uint32_t)k + 1;
        else {
            pthread_key_delete(k);
            st = expected;
        }
    }
    *out = (pthread_key_t)(st - 1);
    return true;
}

/* If this library is unloaded (dlclose of a dlopened libbitslab.so), no thread
 * may call heap_thread_exit afterwards: its code would be gone. Deleting the
 * key stops that; threads that still have heaps then simply keep them. */
__attribute__((destructor)) static void heap_key_unload(void)
{
    /* Acquire: pairs with the CAS that published the key. */
    uint32_t st = atomic_load_explicit(&heap_key_state, memory_order_acquire);
    if (st) pthread_key_delete((pthread_key_t)(st - 1));
}

/* ---- a heap for the thread ------------------------------------------------ */

/* Give the calling thread a heap of its own: an abandoned one if any, else a
 * new one. NULL with errno ENOMEM, or NULL with tls_heapless set if the
 * thread may not keep one (then the caller borrows: heap_for_alloc). */
static heap_t *heap_acquire(void)
{
    options_init_once(); /* a malloc before the constructors ran: read the options now */
    pthread_key_t key;
    if (!heap_key(&key)) {
        errno = ENOMEM;
        return NULL;
    }
    heap_t *h = heap_pop_or_new();
    if (!h) return NULL;
    /* Set TLS first: if pthread_setspecific allocates (through an override),
     * that allocation finds this heap instead of recursing here. */
    bitslab_tls_heap = h;
    if (unlikely(pthread_setspecific(key, h) != 0)) {
        /* No destructor would give the heap back at exit: do not keep it. */
        bitslab_tls_heap = &bitslab_empty_heap;
        tls_heapless = 1;
        heap_pool_push(h);
        return NULL;
    }
    return h;
}

/* The heap for an allocation by a thread whose TLS names the empty heap:
 * its own (acquired now), or, for a heapless thread, one borrowed from the
 * pool (*lent set; give it back with heap_unlend). NULL: out of memory. */
static heap_t *heap_for_alloc(bool *lent)
{
    BITSLAB_ASSERT(bitslab_tls_heap == &bitslab_empty_heap); /* the thread has no heap */
    *lent = false;
    if (likely(!tls_heapless)) {
        heap_t *h = heap_acquire();
        if (h || !tls_heapless) return h;
    }
    heap_t *h = heap_pop_or_new();
    if (!h) return NULL;
    slow_enter(h); /* until heap_unlend: a fork child leaves a lent heap alone */
    bitslab_tls_heap = h; /* for the allocation only: nothing else runs meanwhile */
    *lent = true;
    return h;
}

/* Back to the pool: the blocks just allocated stay in it, and frees of them
 * are remote frees into a pooled heap, like frees into an exited thread's. */
static void heap_unlend(heap_t *h)
{
    BITSLAB_ASSERT(bitslab_tls_heap == h && h->in_slow == 1); /* heap_for_alloc's slow_enter only */
    slow_leave(h);
    bitslab_tls_heap = &bitslab_empty_heap;
    heap_pool_push(h);
}

/* ---- the first allocation of a thread without a heap ---------------------- */

void *thread_alloc_slow(unsigned cls, bool *fresh)
{
    bool lent;
    heap_t *h = heap_for_alloc(&lent);
    if (!h) return NULL;
    void *p = heap_alloc_slow(h, cls, fresh);
    if (unlikely(lent)) heap_unlend(h);
    return p;
}

void *thread_wide_alloc(size_t size, size_t align, bool zero)
{
    bool lent;
    heap_t *h = heap_for_alloc(&lent);
    if (!h) return NULL;
    void *p = wide_alloc(h, size, align, zero);
    if (unlikely(lent)) heap_unlend(h);
    return p;
}
