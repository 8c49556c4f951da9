/*
 * heap.c: thread-local heaps, the allocation slow path, slab life cycle,
 * multi-slab ("wide") allocations, and thread exit/adoption.
 *
 * Heaps live in chunks mapped on demand and are never unmapped. A thread
 * finds its heap through TLS; before its first allocation the TLS pointer
 * refers to bitslab_empty_heap, whose word caches are all empty, so the fast
 * path needs no "initialised?" test: it fails into the slow path, which then
 * gives the thread a heap.
 *
 * Thread exit (docs/thread-exit.md): a pthread key destructor merges the
 * heap's remote frees, returns its empty memory, and pushes the heap, with
 * whatever is still allocated in it, onto a global lock-free stack of
 * abandoned heaps. The next thread that needs a heap pops one from there
 * before creating a new one. Remote frees into an abandoned heap go to its
 * queue as usual and are merged by the adopter.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "internal.h"

/* ---- the empty heap and TLS ----------------------------------------------- */

/* Every word cache empty: each class's first malloc takes the slow path,
 * which gives the thread a heap of its own. */
heap_t bitslab_empty_heap = {.is_static = 1};

_Thread_local heap_t *bitslab_tls_heap __attribute__((tls_model("initial-exec"))) = &bitslab_empty_heap;

/* ---- heap table: id -> heap ----------------------------------------------- */

#define HEAPS_PER_CHUNK 64
#define MAX_HEAP_CHUNKS 4096
static _Atomic(heap_t *) heap_chunks[MAX_HEAP_CHUNKS];
_Atomic uint32_t bitslab_heaps_total; /* ids handed out; heap ids are 1..total */
_Atomic size_t bitslab_heaps_abandoned;

heap_t *heap_by_id(uint32_t id)
{
    if (id == 0 || id > MAX_HEAP_CHUNKS * HEAPS_PER_CHUNK) return NULL;
    /* Acquire: pairs with the release CAS that installed the chunk. */
    heap_t *chunk = atomic_load_explicit(&heap_chunks[(id - 1) / HEAPS_PER_CHUNK], memory_order_acquire);
    return chunk ? &chunk[(id - 1) % HEAPS_PER_CHUNK] : NULL;
}

static heap_t *heap_new(void)
{
    /* Relaxed: ids only need to be unique; the chunk CAS below publishes memory. */
    uint32_t id = atomic_fetch_add_explicit(&bitslab_heaps_total, 1, memory_order_relaxed) + 1;
    uint32_t c = (id - 1) / HEAPS_PER_CHUNK;
    if (c >= MAX_HEAP_CHUNKS) {
        errno = ENOMEM;
        return NULL;
    }
    /* Acquire: pairs with the release CAS below (another thread's). */
    heap_t *chunk = atomic_load_explicit(&heap_chunks[c], memory_order_acquire);
    if (!chunk) {
        heap_t *mine = os_map(HEAPS_PER_CHUNK * sizeof(heap_t));
        if (!mine) return NULL;
        heap_t *expected = NULL;
        /* Release: publishes the zeroed chunk; acquire on failure: we use the winner's. */
        if (atomic_compare_exchange_strong_explicit(&heap_chunks[c], &expected, mine, memory_order_release,
                                                    memory_order_acquire))
            chunk = mine;
        else {
            os_unmap(mine, HEAPS_PER_CHUNK * sizeof(heap_t));
            chunk = expected;
        }
        BITSLAB_VG_METADATA(chunk, HEAPS_PER_CHUNK * sizeof(heap_t)); /* -Dvalgrind: see valgrind.c */
    }
    heap_t *h = &chunk[(id - 1) % HEAPS_PER_CHUNK];
    h->id = id;
    remote_queue_init(h);
    return h;
}

/* ---- abandoned heaps: a Treiber stack of ids with a 32-bit version -------- */

static _Atomic uint64_t abandoned_head; /* (version << 32) | id, id 0 = empty */

static void heap_pool_push(heap_t *h)
{
    /* Relaxed: re-validated by the CAS. */
    uint64_t old = atomic_load_explicit(&abandoned_head, memory_order_relaxed);
    for (;;) {
        /* Relaxed: published by the release CAS below. */
        atomic_store_explicit(&h->pool_next, old & 0xFFFFFFFFu, memory_order_relaxed);
        uint64_t next = ((old >> 32) + 1) << 32 | h->id;
        DEBUG_PARK(PARK_POOL_PUSH_CAS);
        /* Release: everything the exiting thread did to the heap happens
         * before the adopter's acquire pop. */
        /* (release CAS: pairs with heap_pool_pop) */
        if (atomic_compare_exchange_weak_explicit(&abandoned_head, &old, next, memory_order_release,
                                                  memory_order_relaxed))
            break;
        DEBUG_COUNT(WIN_HEAP_POOL_CAS_RETRY);
    }
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_heaps_abandoned, 1, memory_order_relaxed);
}

static heap_t *heap_pool_pop(void)
{
    /* Acquire: pairs with the pusher's release CAS. */
    uint64_t old = atomic_load_explicit(&abandoned_head, memory_order_acquire);
    for (;;) {
        uint32_t id = (uint32_t)old;
        if (!id) return NULL;
        heap_t *h = heap_by_id(id);
        if (unlikely(!h)) bitslab_fatal("corrupt abandoned-heap pool", NULL);
        /* Relaxed: may be stale if h was popped meanwhile; the version in the
         * CAS rejects it. Heaps are never unmapped, so the read is safe. */
        uint64_t next = atomic_load_explicit(&h->pool_next, memory_order_relaxed); /* relaxed: validated by the CAS */
        uint64_t word = ((old >> 32) + 1) << 32 | next;
        DEBUG_PARK(PARK_POOL_POP_CAS);
        /* Acquire: we take over the heap's memory (see push). */
        if (atomic_compare_exchange_weak_explicit(&abandoned_head, &old, word, memory_order_acquire,
                                                  memory_order_acquire)) {
            /* Relaxed: statistics only. */
            atomic_fetch_sub_explicit(&bitslab_heaps_abandoned, 1, memory_order_relaxed);
            return h;
        }
        DEBUG_COUNT(WIN_HEAP_POOL_CAS_RETRY);
    }
}

/* ---- thread exit ---------------------------------------------------------- */

static _Atomic uint32_t heap_key_state; /* 0: none, else key + 1 */

static void heap_thread_exit(void *arg)
{
    heap_t *h = arg;
    if (!h || h != bitslab_tls_heap) return;
    heap_collect(h, true);
    bitslab_tls_heap = &bitslab_empty_heap;
    DEBUG_PARK(PARK_EXIT_COLLECTED);
#if BITSLAB_DEBUG
    /* Relaxed: a debug flag read by remote freers for counting only. */
    atomic_store_explicit(&h->abandoned, 1, memory_order_relaxed);
#endif
    heap_pool_push(h);
}

static bool heap_key(pthread_key_t *out)
{
    /* Acquire: pairs with the release CAS below. */
    uint32_t st = atomic_load_explicit(&heap_key_state, memory_order_acquire);
    if (!st) {
        pthread_key_t k;
        if (pthread_key_create(&k, heap_thread_exit) != 0) return false;
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

/* Give the calling thread a heap: an abandoned one if any, else a new one. */
heap_t *heap_acquire(void)
{
    pthread_key_t key;
    if (!heap_key(&key)) {
        errno = ENOMEM;
        return NULL;
    }
    heap_t *h = heap_pool_pop();
    if (h) {
#if BITSLAB_DEBUG
        /* Relaxed: debug flag, see heap_thread_exit. */
        atomic_store_explicit(&h->abandoned, 0, memory_order_relaxed);
        /* Acquire: pairs with the producers' exchange; only a debug count. */
        if (atomic_load_explicit(&h->q_head, memory_order_acquire) != &h->q_stub || h->q_tail != &h->q_stub)
            DEBUG_COUNT(WIN_ADOPT_WITH_PENDING_REMOTE);
#endif
    } else {
        h = heap_new();
        if (!h) return NULL;
    }
    /* Set TLS first: if pthread_setspecific allocates (through an override),
     * that allocation finds this heap instead of recursing here. */
    bitslab_tls_heap = h;
    pthread_setspecific(key, h);
    return h;
}

#if BITSLAB_DEBUG
bool bitslab_heap_is_abandoned(heap_t *h)
{
    /* Relaxed: debug counting only. */
    return atomic_load_explicit(&h->abandoned, memory_order_relaxed) != 0;
}
#endif

/* ---- slab state machine --------------------------------------------------- */

static void partial_push(heap_t *h, slab_t *s)
{
    s->state = STATE_PARTIAL;
    s->prev = NULL;
    s->next = h->partial[s->cls];
    if (s->next) s->next->prev = s;
    h->partial[s->cls] = s;
}

static void partial_unlink(heap_t *h, slab_t *s)
{
    if (s->prev) s->prev->next = s->next;
    else h->partial[s->cls] = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* A wide allocation's slabs go back to their superpage. */
static void wide_release(heap_t *h, slab_t *s, bool may_release)
{
    unsigned n = s->nslabs;
    h->wide_allocations--;
    h->wide_bytes -= (size_t)n * SLAB_SIZE;
    superpage_return_slabs(h, s, n, may_release);
}

/* Called after bins of s were freed: `was_full` if it had no free bin before,
 * `used` bins remain live. `may_release`: see superpage_return_slabs. */
static void slab_after_free(heap_t *h, slab_t *s, bool was_full, uint32_t used, bool may_release)
{
    if (s->state == STATE_WIDE) {
        if (used == 0) wide_release(h, s, may_release);
        return;
    }
    if (used == 0) {
        if (s->state == STATE_ACTIVE) return; /* keep: the next malloc reuses it */
        if (s->state == STATE_PARTIAL) partial_unlink(h, s);
        superpage_return_slabs(h, s, 1, may_release);
        return;
    }
    if (was_full && s->state == STATE_FULL) partial_push(h, s);
}

/* Fast-path free found used == 0 or used == nbins - 1. */
void heap_slab_freed_slow(heap_t *h, slab_t *s, uint32_t used_after)
{
    if (used_after == 0 && s->state == STATE_ACTIVE && dirty_over_process_cap(1)) {
        /* Memory is short of the cap: an empty active slab goes back too
         * (nothing of it is cached: used counts cached bins). */
        slab_unload_word(s, &h->cache[s->cls]);
        h->active[s->cls] = NULL;
        s->state = STATE_NONE;
    }
    slab_after_free(h, s, used_after + 1 == s->nbins, used_after, true);
    if (used_after == 0) {
        heap_trim_if_idle(h);
        heap_purge(h, PURGE_PERIODIC, SIZE_MAX);
    }
}

/* Merge remote frees into every slab of sp named in `mask`. */
static void superpage_merge(heap_t *h, superpage_t *sp, uint32_t mask)
{
    while (mask) {
        slab_t *s = &sp->slabs[ctz64(mask)];
        mask &= mask - 1;
        uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed); /* relaxed: owner reads its own field */
        if (kind != SLAB_SMALL && kind != SLAB_WIDE) {
            /* A stale notification (the slab emptied after the bit was
             * merged); a bit still here would be a double free. */
            slab_check_no_remote(s);
            continue;
        }
        uint32_t before = slab_used(s);
        uint32_t n = slab_merge_remote(s);
        /* No release while we still walk sp's slabs: the caller retries it. */
        if (n) slab_after_free(h, s, before == s->nbins, before - n, false);
    }
}

void heap_drain_remote(heap_t *h)
{
    superpage_t *sp;
    while ((sp = remote_queue_pop(h))) {
        DEBUG_PARK(PARK_DRAIN_AFTER_POP);
        /* Acq_rel: acquire pairs with freers' release fetch_or (F3), making
         * their bit sets (F2) visible; release pairs with the next freer's
         * acquire F3, which then may re-push sp (we no longer touch qnode). */
        uint32_t mask = atomic_exchange_explicit(&sp->remote_slabs, 0, memory_order_acq_rel); /* D2 */
        superpage_merge(h, sp, mask);
        superpage_try_release(h, sp, HEAP_RETAIN_EMPTY(h));
    }
}

/* ---- allocation slow path ------------------------------------------------- */

/* Pop the lowest free bin of a non-empty word cache. */
static inline void *cache_pop(word_cache_t *c, bool *fresh)
{
    unsigned b = ctz64(c->bits);
    c->bits &= c->bits - 1;
    if (fresh) *fresh = (c->fresh >> b) & 1;
    return c->base + (size_t)b * c->size;
}

void *heap_alloc_slow(heap_t *h, unsigned cls, bool *fresh)
{
    if (h->is_static) {
        h = heap_acquire();
        if (!h) return NULL;
    }
    word_cache_t *c = &h->cache[cls];
    if (c->bits) return cache_pop(c, fresh); /* a heap adopted with a loaded cache */
    heap_drain_remote(h);
    if (h->deferred) superpage_try_release(h, h->deferred, HEAP_RETAIN_EMPTY(h));
    heap_purge(h, PURGE_PERIODIC, SIZE_MAX);
    slab_t *s = h->active[cls];
    if (s) {
        if (s->summary) {
            slab_load_word(s, c);
            return cache_pop(c, fresh);
        }
        slab_unload_word(s, c); /* the cache no longer speaks for s (it is empty) */
        s->state = STATE_FULL;  /* off every list until a free makes room */
        h->active[cls] = NULL;
    }
    s = h->partial[cls];
    if (s) {
        partial_unlink(h, s);
    } else {
        s = superpage_take_slabs(h, 1, 1);
        if (!s) {
            errno = ENOMEM;
            return NULL;
        }
        slab_configure_small(s, h, cls);
    }
    s->state = STATE_ACTIVE;
    h->active[cls] = s;
    slab_load_word(s, c);
    return cache_pop(c, fresh);
}

/* ---- wide allocations ----------------------------------------------------- */

void *wide_alloc(heap_t *h, size_t size, size_t align, bool zero)
{
    if (h->is_static) {
        h = heap_acquire();
        if (!h) return NULL;
    }
    heap_drain_remote(h);
    unsigned n = (unsigned)((size + SLAB_SIZE - 1) / SLAB_SIZE);
    if (n == 0) n = 1;
    size_t step = align > SLAB_SIZE ? align / SLAB_SIZE : 1;
    slab_t *s = superpage_take_slabs(h, n, step);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    uint32_t bytes = n * (uint32_t)SLAB_SIZE;
    if (zero) {
        for (unsigned i = 0; i < n; i++)
            if (s[i].dirty) memset(s[i].data, 0, i + 1 == n ? size - (size_t)i * SLAB_SIZE : SLAB_SIZE);
    }
    for (unsigned i = 0; i < n; i++) {
        slab_check_no_remote(&s[i]); /* a late double free of its previous life */
        slab_mark_in_use(h, &s[i]);
    }
    for (unsigned i = 1; i < n; i++) {
        s[i].dirty = 1;
        s[i].state = STATE_NONE;
        /* Relaxed: the walker's snapshot; frees of tail pointers read it after a hand-off. */
        atomic_store_explicit(&s[i].kind, SLAB_WIDE_TAIL, memory_order_relaxed);
    }
    s->dirty = 1;
    s->nslabs = (uint8_t)n;
    s->nbins = 1;
    s->nwords = 1;
    s->summary = 0;
    s->cached = NO_WORD;
    slab_local(s)[0] = 0; /* the one bin is taken */
    s->hwm = 1;
    s->recip = (uint32_t)(0xFFFFFFFFu / bytes) + 1;
    s->state = STATE_WIDE;
    slab_set_used(s, 1);
    /* Relaxed (three stores): as above. */
    atomic_store_explicit(&s->bin_size, bytes, memory_order_relaxed); /* relaxed: walker snapshot */
    atomic_store_explicit(&s->kind, SLAB_WIDE, memory_order_relaxed);  /* relaxed: walker snapshot */
    atomic_store_explicit(&s->heap, h, memory_order_relaxed);          /* relaxed: hand-off orders it */
    h->wide_allocations++;
    h->wide_bytes += bytes;
    return s->data;
}

/* ---- collection ----------------------------------------------------------- */

/* Merge every pending remote free, return empty slabs (the active ones too if
 * `full`) and empty superpages beyond the retention (all of them if `full`). */
void heap_collect(heap_t *h, bool full)
{
    if (h->is_static) return;
    heap_drain_remote(h);
    /* A stalled producer can hide queued superpages from the drain: merge
     * every superpage that has notifications directly. remote_slabs is left
     * alone: it still says "queued", and the later pop finds nothing to do. */
    for (superpage_t *sp = h->superpages; sp; sp = sp->next) {
        /* Acquire: pairs with freers' release F3 (makes their F2 visible). */
        uint32_t mask = atomic_load_explicit(&sp->remote_slabs, memory_order_acquire);
        if (mask) superpage_merge(h, sp, mask);
    }
    if (full) {
        /* Put every cached word back; an active slab left empty goes back to
         * its superpage. */
        for (unsigned c = 0; c < NUM_CLASSES; c++) {
            slab_t *s = h->active[c];
            if (!s) continue;
            slab_unload_word(s, &h->cache[c]);
            if (slab_used(s) == 0) {
                h->active[c] = NULL;
                s->state = STATE_NONE;
                superpage_return_slabs(h, s, 1, true);
            }
        }
    }
    size_t retain = full ? 0 : HEAP_RETAIN_EMPTY(h);
    superpage_t *sp = h->superpages;
    while (sp) {
        superpage_t *next = sp->next;
        superpage_try_release(h, sp, retain);
        sp = next;
    }
    heap_purge(h, full ? PURGE_ALL : PURGE_EXPIRED, SIZE_MAX);
}

/* Collect heaps whose threads exited: popping one from the pool makes us its
 * only user, exactly as adoption does, so its owner-only state is ours until
 * we push it back. Their remote frees are merged and their empty superpages
 * go to the orphanage, instead of waiting for a new thread to adopt them.
 * Every heap in the pool is visited: all are taken out (chained through
 * `collect_next`, ours while we hold them), then all pushed back. */
void heap_collect_abandoned(void)
{
    heap_t *chain = NULL, *h;
    while ((h = heap_pool_pop())) {
        heap_collect(h, true);
        h->collect_next = chain;
        chain = h;
    }
    while ((h = chain)) {
        chain = h->collect_next;
        heap_pool_push(h);
    }
}

