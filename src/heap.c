/*
 * heap.c: a heap and what it does with its memory: the allocation slow
 * path, the slab life cycle, remote-free drains, the purge policy,
 * multi-slab ("wide") allocations and collection; the heap table, the pool
 * of abandoned heaps, and the fork child's adoption of the other threads'
 * heaps. Which thread gets which heap, and when a thread gives it back, is
 * thread.c's.
 *
 * Heaps live in chunks mapped on demand and are never unmapped. A thread
 * finds its heap through TLS; before its first allocation the TLS pointer
 * refers to bitslab_empty_heap, whose word caches are all empty, so the fast
 * path needs no "initialised?" test: it fails into the slow path, and api.c
 * sends a thread whose heap is still that placeholder to thread.c first.
 *
 * An abandoned heap (its thread exited: docs/thread-exit.md) waits in the
 * pool, with whatever is still allocated in it; the next thread that needs
 * a heap pops one from there before creating a new one. Remote frees into
 * an abandoned heap go to its queue as usual and are merged by the adopter.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "heap.h"
#include "debug.h"
#include "error.h"
#include "huge.h"
#include "options.h"
#include "os.h"
#include "purge.h"
#include "purger.h"
#include "remote.h"
#include "sizeclass.h"
#include "slab.h"
#include "superpage.h"
#include "valgrind.h"

#define LFSTACK_PARK(point) DEBUG_PARK(point)
#define LFSTACK_RETRY(window) DEBUG_COUNT(window)
#define LFSTACK_ASSERT(cond) BITSLAB_ASSERT(cond)
#include "lfstack.h"

/* ---- the empty heap and TLS ----------------------------------------------- */

/* Every word cache empty: each class's first malloc takes the slow path,
 * which gives the thread a heap of its own. */
heap_t bitslab_empty_heap = {.is_placeholder = 1, .owned = {[0 ... HEAP_OWNED_SLOTS - 1] = OWNED_NONE}};

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

/* The chunk of heaps c, mapped if it is not yet; NULL (errno ENOMEM) if the
 * kernel refuses. */
static heap_t *heap_chunk(uint32_t c)
{
    /* Acquire: pairs with the release CAS below (another thread's). */
    heap_t *chunk = atomic_load_explicit(&heap_chunks[c], memory_order_acquire);
    if (chunk) return chunk;
    heap_t *mine = os_map(HEAPS_PER_CHUNK * sizeof(heap_t));
    if (!mine) return NULL;
    heap_t *expected = NULL;
    /* Release: publishes the zeroed chunk; acquire on failure: we use the winner's. */
    if (atomic_compare_exchange_strong_explicit(&heap_chunks[c], &expected, mine, memory_order_release,
                                                memory_order_acquire))
        return mine;
    os_unmap(mine, HEAPS_PER_CHUNK * sizeof(heap_t));
    return expected;
}

/* A new heap. Its id is taken only once its chunk is mapped, so a failed
 * mapping leaves no hole in the ids and heaps_total counts heaps that exist. */
static heap_t *heap_new(void)
{
    /* Relaxed: the CAS below re-validates it. */
    uint32_t total = atomic_load_explicit(&bitslab_heaps_total, memory_order_relaxed);
    heap_t *chunk;
    for (;;) {
        uint32_t c = total / HEAPS_PER_CHUNK; /* the chunk of id total + 1 */
        if (c >= MAX_HEAP_CHUNKS) {
            errno = ENOMEM;
            return NULL;
        }
        chunk = heap_chunk(c);
        if (!chunk) return NULL;
        BITSLAB_VG_METADATA(chunk, HEAPS_PER_CHUNK * sizeof(heap_t)); /* -Dvalgrind: see valgrind.c */
        // Relaxed: ids only need to be unique (pairs with no other access:
        // heap_chunk's CAS publishes the chunk's memory).
        if (atomic_compare_exchange_weak_explicit(&bitslab_heaps_total, &total, total + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    heap_t *h = &chunk[total % HEAPS_PER_CHUNK];
    BITSLAB_ASSERT(h->id == 0 && !h->superpages && !h->q_tail); /* ids are unique: never built before */
    remote_queue_init(h);
    for (unsigned i = 0; i < HEAP_OWNED_SLOTS; i++) h->owned[i] = OWNED_NONE;
    DEBUG_PARK(PARK_HEAP_NEW_MIDWAY);
    // The id last: a fork child (heap_atfork_child) takes a heap whose id is
    // set for a whole one. The fence keeps the compiler from moving the store
    // up; it pairs with the fork child handler's reads, in this thread's
    // image (fork is a full barrier for the hardware; this is the only order
    // a single thread's fork needs).
    atomic_signal_fence(memory_order_seq_cst);
    h->id = total + 1;
    BITSLAB_ASSERT(heap_by_id(h->id) == h);
    return h;
}

/* ---- abandoned heaps: a tagged lock-free stack of ids (lfstack.h) -------- */

/* Heap ids need 18 bits (MAX_HEAP_CHUNKS * HEAPS_PER_CHUNK = 2^18); the head
 * word keeps 20 for the id and 44 for the version, as wide as it can be
 * (the orphanage's has 38): an ABA needs a thread stalled between its read
 * and its CAS while a multiple of 2^44 other pushes and pops pass (two days
 * of back-to-back pool operations at 10^8 a second; real pool traffic is
 * thread starts and exits). */
#define POOL_ID_BITS 20
_Static_assert((uint64_t)MAX_HEAP_CHUNKS * HEAPS_PER_CHUNK < ((uint64_t)1 << POOL_ID_BITS), "heap ids fit the pool word");
static lfstack_t abandoned = LFSTACK_INIT; /* handles: heap ids, 0 = empty */
#if BITSLAB_DEBUG
static const lfstack_hooks_t pool_hooks = {PARK_POOL_PUSH_CAS, PARK_POOL_POP_CAS, WIN_HEAP_POOL_CAS_RETRY};
#define POOL_HOOKS (&pool_hooks)
#else
#define POOL_HOOKS NULL
#endif

/* The link of heap `id`: heaps are never unmapped (lfstack_pop's precondition). */
static _Atomic uint64_t *pool_link(uint64_t id)
{
    BITSLAB_ASSERT(id != 0 && (id >> POOL_ID_BITS) == 0);
    heap_t *h = heap_by_id((uint32_t)id);
    if (unlikely(!h)) bitslab_fatal("corrupt abandoned-heap pool", NULL);
    return &h->pool_next;
}

void heap_pool_push(heap_t *h)
{
    /* A whole heap (id set, queue set up) at rest, not in the pool already
     * (lfstack_push's precondition). Relaxed: our own heap's flag. */
    BITSLAB_ASSERT(h->id >= 1 && heap_by_id(h->id) == h && h->q_tail && !h->is_placeholder);
    BITSLAB_ASSERT(!h->in_slow);
    BITSLAB_ASSERT(!atomic_load_explicit(&h->abandoned, memory_order_relaxed)); /* relaxed: see above */
    // Relaxed: published by the push's release CAS; read by the fork child
    // handler (single-threaded) and by debug counters.
    atomic_store_explicit(&h->abandoned, 1, memory_order_relaxed);
    /* Release CAS inside: everything the exiting thread did to the heap
     * happens before the adopter's acquire pop. */
    lfstack_push(&abandoned, POOL_ID_BITS, h->id, &h->pool_next, POOL_HOOKS);
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_heaps_abandoned, 1, memory_order_relaxed);
}

static heap_t *heap_pool_pop(void)
{
    uint64_t id = lfstack_pop(&abandoned, POOL_ID_BITS, pool_link, POOL_HOOKS);
    if (!id) return NULL;
    heap_t *h = heap_by_id((uint32_t)id);
    BITSLAB_ASSERT(h && h->id == id && !h->in_slow);
    /* Relaxed: ours now (the pop's acquire CAS); set by its push. */
    BITSLAB_ASSERT(atomic_load_explicit(&h->abandoned, memory_order_relaxed) == 1);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_heaps_abandoned, 1, memory_order_relaxed);
    /* Relaxed: the heap is ours after the pop's acquire CAS; see heap_pool_push. */
    atomic_store_explicit(&h->abandoned, 0, memory_order_relaxed);
    return h;
}

/* ---- fork: the heaps of the parent's other threads ------------------------ */

/* In the child of a fork only the forking thread exists: the heaps of the
 * parent's other threads would never be given back (their key destructors
 * will not run here), so blocks freed into them could never be reused.
 * They become abandoned heaps, which bitslab_collect() collects and new
 * threads adopt, exactly like the heaps of exited threads. The child is
 * single-threaded while this runs, and fork() ordered every write of the
 * parent's threads before it. A heap whose thread was inside a slow path at
 * the fork may be half-way through a change of its lists: it is left alone
 * (its memory is lost to the child, never corrupted). A thread stopped in a
 * fast path leaves at most one bin or one `taken` count behind. */
static uint32_t heap_collect_pool(void);

/* Heaps the fork child handler pushed that still held memory at the last
 * look (heap_help_forked): while non-zero, a heap about to map a superpage
 * collects the pool first. Relaxed: a hint; any value is safe. */
static _Atomic uint32_t fork_heaps_holding;

void heap_atfork_child(void)
{
    purger_atfork_child(); /* the purger thread did not come along */
    uint32_t pushed = 0;
    /* Relaxed: single-threaded here (see above). */
    uint32_t n = atomic_load_explicit(&bitslab_heaps_total, memory_order_relaxed);
    for (uint32_t id = 1; id <= n; id++) {
        heap_t *h = heap_by_id(id);
        /* A heap heap_new had not finished (id or queue not set yet) is left alone too. */
        if (!h || h->id != id || !h->q_tail || h == bitslab_tls_heap || h->in_slow) continue;
        /* Relaxed: single-threaded here. */
        if (atomic_load_explicit(&h->abandoned, memory_order_relaxed)) continue;
        /* Its thread may have stopped inside a fast path, half-way through a
         * word-cache update: drop every cached word (their bins stay counted
         * as used: a leak of at most 64 bins per class, never a bin handed
         * out twice or a dirty bin taken for a fresh one). */
        for (unsigned c = 0; c < NUM_CLASSES; c++) {
            h->cache[c].bits = 0;
            h->cache[c].fresh = 0;
            if (h->active[c]) h->active[c]->cached = NO_WORD;
        }
        heap_pool_push(h);
        pushed++;
    }
    /* Relaxed: single-threaded here; read as a hint later. */
    atomic_store_explicit(&fork_heaps_holding, pushed, memory_order_relaxed);
}

/* In a forked child, the blocks of the parent's other threads are freed into
 * heaps nobody runs: their memory comes back only when those heaps are
 * collected. A child that frees them and allocates again would map new
 * superpages while the freed ones wait, so before mapping one, a heap in
 * such a child collects the pool (as bitslab_collect() does) to refill the
 * orphanage. Stops once none of those heaps holds memory. True if it ran. */
bool heap_help_forked(void)
{
    /* Relaxed: a hint (see above). */
    if (!atomic_load_explicit(&fork_heaps_holding, memory_order_relaxed)) return false;
    uint32_t holding = heap_collect_pool();
    /* Relaxed: a hint. */
    atomic_store_explicit(&fork_heaps_holding, holding, memory_order_relaxed);
    return true;
}

/* An abandoned heap, or a new one. */
heap_t *heap_pop_or_new(void)
{
    heap_t *h = heap_pool_pop();
    if (h) {
#if BITSLAB_DEBUG
        /* Acquire: pairs with the producers' exchange; only a debug count. */
        if (atomic_load_explicit(&h->q_head, memory_order_acquire) != &h->q_stub || h->q_tail != &h->q_stub)
            DEBUG_COUNT(WIN_ADOPT_WITH_PENDING_REMOTE);
#endif
        BITSLAB_ASSERT(h->q_tail != NULL && !h->in_slow);
        return h;
    }
    return heap_new();
}

/* ---- superpages and purge: the heap's policy ------------------------------ */

static void heap_purge_sparse(heap_t *h, uint32_t now, uint32_t min_age);

/* Decommit the FREE slabs of h whose pages are still committed: those empty
 * for the purge delay (PURGE_PERIODIC: at most every delay / 2, 10 ms at
 * least, and only every 16th call; PURGE_TICK: the same without the call
 * count, for heap_tick; PURGE_EXPIRED: now), or all of them
 * (PURGE_ALL). Called from slow paths only: never a syscall on a fast path. */
void heap_purge(heap_t *h, enum purge_mode mode, size_t limit)
{
    BITSLAB_ASSERT(!h->is_placeholder && mode <= PURGE_ALL && limit > 0);
    huge_cache_purge(mode == PURGE_ALL ? PURGE_EXPIRED : mode); /* freed huge mappings age here too (huge.c) */
    /* Relaxed: a setting; any value read is valid. */
    int32_t delay = atomic_load_explicit(&bitslab_purge_delay_ms, memory_order_relaxed);
    if (mode != PURGE_ALL && (delay < 0 || (h->dirty_free == 0 && !h->sparse_pending))) return;
    if (mode == PURGE_PERIODIC && (++h->slow_calls & 15)) return;
    uint32_t now = os_now_ms();
    if (mode == PURGE_PERIODIC || mode == PURGE_TICK) {
        if ((int32_t)(now - h->next_purge) < 0) return;
        h->next_purge = now + (uint32_t)(delay / 2 > 10 ? delay / 2 : 10);
    }
    uint32_t min_age = mode == PURGE_ALL ? 0 : (uint32_t)delay;
    /* Sparse slabs only from the top of a slow path (the periodic modes):
     * the other modes run inside slab returns, and heap_purge_sparse merges. */
    if (h->sparse_pending && (mode == PURGE_PERIODIC || mode == PURGE_TICK)) heap_purge_sparse(h, now, min_age);
    purge_aged(h, min_age, limit, now);
}

/* True if every configured slab of h is an active slab whose only taken
 * bins sit in the word cache: no block of the heap is live. */
static bool heap_holds_nothing(heap_t *h)
{
    if (h->slabs_used > NUM_CLASSES) return false;
    uint32_t active = 0;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        slab_t *a = h->active[c];
        if (!a) continue;
        active++;
        if (slab_taken(a) != popcount64(h->cache[c].bits)) return false;
    }
    return active == h->slabs_used;
}

/* A heap that no longer holds a single live block (its thread let go of
 * everything) keeps at most 512 KiB of FREE slabs with committed pages. */
static void heap_trim_if_idle(heap_t *h)
{
    if (h->dirty_free > 8 && heap_holds_nothing(h)) heap_purge(h, PURGE_ALL, h->dirty_free - 8);
}

/* A new EMPTY superpage for h: an orphan; in a forked child, the abandoned
 * heaps of the parent's other threads are collected first (their empty
 * superpages become orphans: heap_help_forked); then a new mapping, tried
 * once more after the cached huge mappings gave back their address space.
 * NULL (errno ENOMEM) if the kernel refuses. */
static superpage_t *heap_grow(heap_t *h)
{
    BITSLAB_ASSERT(h->in_slow);
    superpage_t *sp = superpage_acquire(h, false);
    if (!sp && heap_help_forked()) sp = superpage_acquire(h, false);
    if (sp) return sp;
    int saved = errno;
    sp = superpage_acquire(h, true);
    if (!sp) {
        huge_cache_flush(); /* the kernel refused: the cached huge mappings' address space first */
        sp = superpage_acquire(h, true);
        if (sp) errno = saved; /* a success leaves errno as it was */
    }
    return sp;
}

/* n consecutive FREE slabs starting at a multiple of `step`, from h's
 * superpages or a new one; NULL (errno ENOMEM) if memory is exhausted. */
static slab_t *heap_take_slabs(heap_t *h, unsigned n, size_t step)
{
    BITSLAB_ASSERT(h->in_slow && n >= 1 && n <= WIDE_MAX_SLABS);
    slab_t *s = superpage_take_slabs(h, n, step);
    if (s) return s;
    superpage_t *sp = heap_grow(h);
    s = sp ? superpage_take_run(h, sp, n, step) : NULL;
    BITSLAB_ASSERT(!sp || s); /* an empty superpage has every run of up to 16 slabs, at any step */
    return s;
}

/* Return n slabs starting at s to their superpage as FREE; the caller has
 * checked that no remote bit is left (slab_empty_but_held, wide_release).
 * `may_release`: see superpage_return_slabs. */
static void heap_return_slabs(heap_t *h, slab_t *s, unsigned n, bool may_release)
{
    BITSLAB_ASSERT(h->in_slow && n >= 1);
    uint32_t now = os_now_ms();
    superpage_reset_slabs(h, s, n, now);
    /* Bound what waits out the purge delay, per heap and for the process: a
     * heap past twice a limit purges its own slabs down to it, the longest
     * unused first (hysteresis: not on every return). */
    size_t heap_cap = HEAP_DIRTY_FREE_MAX(h), cap = purge_dirty_cap();
    if (h->dirty_free > 2 * heap_cap || purge_dirty_total() > 2 * cap) {
        heap_purge(h, PURGE_EXPIRED, SIZE_MAX);
        purge_down_to_caps(h, heap_cap, cap);
    }
    heap_trim_if_idle(h);
    superpage_return_slabs(h, s, n, now, may_release);
}

/* ---- slab state machine --------------------------------------------------- */

/* The partial lists: a refill takes the head. A slab that gains free bins
 * goes to the head (reused while its memory is warm); one that falls to a
 * sparse level goes to the tail (partial_to_tail), so that fuller slabs are
 * filled first and sparse ones drain (and give their pages back). */
static void partial_push(heap_t *h, slab_t *s)
{
    BITSLAB_ASSERT(h->in_slow);
    /* A small slab of h that is on no list (its `next` may chain it on
     * alloc_from_slabs's `held` list), not active, with free bins. */
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL && s->cls < NUM_CLASSES);
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(s->state != STATE_PARTIAL && s->state != STATE_WIDE && !s->prev);
    BITSLAB_ASSERT(h->active[s->cls] != s && s->cached == NO_WORD);
    BITSLAB_ASSERT((h->partial[s->cls] == NULL) == (h->partial_tail[s->cls] == NULL));
    BITSLAB_ASSERT(!h->partial[s->cls] || !h->partial[s->cls]->prev);
    s->state = STATE_PARTIAL;
    s->prev = NULL;
    s->next = h->partial[s->cls];
    if (s->next) s->next->prev = s;
    else h->partial_tail[s->cls] = s;
    h->partial[s->cls] = s;
    slab_retrigger(s);
}

static void partial_unlink(heap_t *h, slab_t *s)
{
    BITSLAB_ASSERT(h->in_slow && s->state == STATE_PARTIAL);
    BITSLAB_ASSERT(s->prev ? s->prev->next == s : h->partial[s->cls] == s);
    BITSLAB_ASSERT(s->next ? s->next->prev == s : h->partial_tail[s->cls] == s);
    if (s->prev) s->prev->next = s->next;
    else h->partial[s->cls] = s->next;
    if (s->next) s->next->prev = s->prev;
    else h->partial_tail[s->cls] = s->prev;
    s->prev = s->next = NULL;
}

static void partial_to_tail(heap_t *h, slab_t *s)
{
    BITSLAB_ASSERT(h->in_slow && s->state == STATE_PARTIAL);
    if (h->partial_tail[s->cls] == s) return;
    partial_unlink(h, s);
    s->prev = h->partial_tail[s->cls];
    s->prev->next = s; /* not empty: s was on it, and not last */
    h->partial_tail[s->cls] = s;
    BITSLAB_ASSERT(s->next == NULL && h->partial[s->cls] != s);
}

/* A wide allocation's slabs go back to their superpage. */
static void wide_release(heap_t *h, slab_t *s, bool may_release)
{
    unsigned n = s->nslabs;
    BITSLAB_ASSERT(s->state == STATE_WIDE && slab_kind_now(s) == SLAB_WIDE && slab_taken(s) == 0);
    BITSLAB_ASSERT(n >= 1 && n <= WIDE_MAX_SLABS && s->index + n <= SLABS_PER_SUPERPAGE);
    BITSLAB_ASSERT(h->wide_allocations >= 1 && h->wide_bytes >= (size_t)n * SLAB_SIZE);
    BITSLAB_ASSERT(atomic_load_explicit(&s->bin_size, memory_order_relaxed) == n * SLAB_SIZE); /* relaxed: own */
    h->wide_allocations--;
    h->wide_bytes -= (size_t)n * SLAB_SIZE;
    slab_check_no_remote(s); /* a late free of the block's bit is a double free */
    heap_return_slabs(h, s, n, may_release);
}

/* An empty slab about to become FREE, with a purger between P0 and P8 on
 * it, or one that came and went while we looked. Every bit left in its
 * remote map is a double free (reported now); the fence orders those
 * exchanges before the second read of `purgers` (slab_purgers). */
static bool slab_empty_but_held(slab_t *s)
{
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL && slab_taken(s) == 0 && s->cached == NO_WORD);
    uint32_t purgers = slab_purgers(s);
    slab_check_no_remote(s);
    atomic_thread_fence(memory_order_seq_cst); /* pairs with P0 (see above) */
    if (!slab_purger_was_there(s, purgers)) return false;
    DEBUG_COUNT(WIN_EMPTY_WHILE_PURGER_HOLDS);
    return true;
}

/* Called after bins of s were freed: `was_full` if it had no free bin before,
 * `taken` bins remain live. `may_release`: see superpage_return_slabs. */
static void slab_after_free(heap_t *h, slab_t *s, bool was_full, uint32_t taken, bool may_release)
{
    BITSLAB_ASSERT(h->in_slow && taken == slab_taken(s));
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    /* The owner's list state matches the kind: WIDE for a wide block; a
     * small slab is ACTIVE, PARTIAL, FULL, or (empty, just taken off the
     * active slot by heap_slab_freed_slow) NONE. */
    BITSLAB_ASSERT((s->state == STATE_WIDE) == (slab_kind_now(s) == SLAB_WIDE));
    BITSLAB_ASSERT(s->state != STATE_NONE || taken == 0);
    BITSLAB_ASSERT(s->state != STATE_ACTIVE || h->active[s->cls] == s);
    if (s->state == STATE_WIDE) {
        if (taken == 0) wide_release(h, s, may_release);
        return;
    }
    if (taken == 0) {
        if (s->state == STATE_ACTIVE) return; /* keep: the next malloc reuses it */
        if (unlikely(slab_empty_but_held(s))) {
            /* Stays configured and PARTIAL (reused by a malloc, or made FREE
             * when it empties again): a purger holds bits of it, which can
             * only be bins freed twice, reported when they come back. */
            if (s->state != STATE_PARTIAL) partial_push(h, s);
            else slab_retrigger(s);
            return;
        }
        if (s->state == STATE_PARTIAL) partial_unlink(h, s);
        heap_return_slabs(h, s, 1, may_release);
        return;
    }
    if (was_full && s->state == STATE_FULL) partial_push(h, s);
    else slab_retrigger(s); /* `taken` fell: a PARTIAL slab's next sparse level */
}

/* A PARTIAL slab fell to a sparse level (1/4, 1/8, ... of its bins live):
 * date it in its superpage's sparse mask, where the owner's purge (and the
 * purger thread) finds it once it has stayed so for the purge delay. With
 * the purger thread on, its free bins go to the remote map first, where that
 * thread can take them (docs/purger.md). */
static void slab_went_sparse(heap_t *h, slab_t *s)
{
    superpage_t *sp = superpage_of_slab(s);
    BITSLAB_ASSERT(h->in_slow && s->state == STATE_PARTIAL && slab_kind_now(s) == SLAB_SMALL);
    BITSLAB_ASSERT(s->index >= 1 && atomic_load_explicit(&sp->heap, memory_order_relaxed) == h); /* relaxed: own */
    /* Relaxed: a setting. */
    if (atomic_load_explicit(&bitslab_background_purge, memory_order_relaxed)) slab_donate(s);
    /* Relaxed: pairs with os_now_ms's relaxed store; a coarse date suffices. */
    uint32_t now = atomic_load_explicit(&bitslab_clock_ms, memory_order_relaxed);
    // The date of the oldest mark: a later one does not put the others off
    // (only the owner sets bits, so it knows when the mask was empty).
    // Relaxed (load, store and RMW): the load reads our own bits; the purger
    // reads the store and the RMW as hints, and the bins it takes are ordered
    // by the donation's release and its acquire exchange.
    if (!atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed))
        /* relaxed, as above: a later one does not put the others off */
        atomic_store_explicit(&sp->sparse_at, now, memory_order_relaxed);
    /* relaxed, as above: a later one does not put the others off */
    atomic_fetch_or_explicit(&sp->sparse_slabs, 1u << s->index, memory_order_relaxed);
    h->sparse_pending = 1;
}

/* A slab becomes the active one: it leaves the sparse mask, and its pages
 * will be handed out (purged_pages speaks of the time since it was last
 * active, docs/purger.md). */
static void slab_activate(heap_t *h, slab_t *s)
{
    superpage_t *sp = superpage_of_slab(s);
    /* A small slab of h, just configured (NONE) or just off the partial list,
     * with free bins and no donated ones, into an empty active slot. */
    BITSLAB_ASSERT(h->in_slow && slab_kind_now(s) == SLAB_SMALL);
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(s->state == STATE_NONE || s->state == STATE_PARTIAL);
    BITSLAB_ASSERT(!s->prev && !s->next && s->cached == NO_WORD);
    BITSLAB_ASSERT(s->summary != 0 && s->donated == 0);
    BITSLAB_ASSERT(h->active[s->cls] == NULL && h->cache[s->cls].bits == 0);
    s->state = STATE_ACTIVE;
    s->trigger = 0;
    h->active[s->cls] = s;
#if BITSLAB_DEBUG
    /* Relaxed: only counts pages purged in place that are about to be reused. */
    if (atomic_load_explicit(&s->purged_pages, memory_order_relaxed)) DEBUG_COUNT(WIN_PURGED_SLAB_ACTIVATED);
#endif
    /* Relaxed (load and RMW): hints, as in slab_went_sparse. */
    if (atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed) & (1u << s->index))
        /* relaxed, as above: hints, as in slab_went_sparse */
        atomic_fetch_and_explicit(&sp->sparse_slabs, ~(1u << s->index), memory_order_relaxed);
    /* Relaxed: a hint (docs/purger.md). */
    atomic_store_explicit(&s->purged_pages, 0, memory_order_relaxed);
}

/* Give back the free pages of h's slabs that have been sparse for min_age
 * ms (page-granular purge, docs/purger.md): merge what the slab donated to
 * its remote map, then decommit every 4 KiB page all of whose bins are free
 * in the local map. Owner only, from heap_purge (a slow path); the caller
 * does not hold a superpage of h (a merge may return slabs). */
static void heap_purge_sparse(heap_t *h, uint32_t now, uint32_t min_age)
{
    BITSLAB_ASSERT(h->in_slow);
    bool left = false;
    for (superpage_t *sp = h->superpages; sp;) {
        superpage_t *next = sp->next; /* the merge may move sp in the list */
        /* Relaxed: hints (slab_went_sparse); the bins are ours. */
        uint32_t m = atomic_load_explicit(&sp->sparse_slabs, memory_order_relaxed);
        /* relaxed, as above: hints (slab_went_sparse) */
        if (m && now - atomic_load_explicit(&sp->sparse_at, memory_order_relaxed) < min_age) {
            left = true;
            m = 0;
        }
        if (m) atomic_fetch_and_explicit(&sp->sparse_slabs, ~m, memory_order_relaxed); /* a hint */
        for (; m; m &= m - 1) {
            slab_t *s = &sp->slabs[ctz64(m)];
            if (s->state != STATE_PARTIAL) continue; /* active, full or FREE since */
            uint32_t before = slab_taken(s);
            uint32_t n = slab_merge_remote(s);
            if (n) slab_after_free(h, s, false, before - n, false);
            if (s->state != STATE_PARTIAL) continue; /* emptied: a FREE slab now */
            BITSLAB_ASSERT(s->cached == NO_WORD && s->donated == 0); /* merged: nothing donated is out */
            slab_decommit_pages(s, slab_free_pages(s, slab_local(s)));
        }
        sp = next;
    }
    h->sparse_pending = left;
}

/* The free fast path found taken == trigger: the slab was full, fell to a
 * sparse level, or is empty (slab_retrigger). */
void heap_slab_freed_slow(heap_t *h, slab_t *s, uint32_t taken_after)
{
    /* The owner's free fast path: a slab of h whose `taken` fell to its trigger. */
    BITSLAB_ASSERT(taken_after == slab_taken(s) && taken_after == s->trigger);
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(slab_kind_now(s) == SLAB_SMALL || slab_kind_now(s) == SLAB_WIDE);
    slow_enter(h);
    if (taken_after == 0 && s->state == STATE_ACTIVE && purge_over_process_cap(1)) {
        /* Memory is short of the cap: an empty active slab goes back too
         * (nothing of it is cached: taken counts cached bins). */
        slab_unload_word(s, &h->cache[s->cls]);
        h->active[s->cls] = NULL;
        s->state = STATE_NONE;
    }
    if (unlikely(s->donated) && taken_after == s->donated) {
        /* Every live bin of a slab that donated its free bins is gone: take
         * them back (those a purger holds come back with a notification),
         * so that the slab can empty. */
        slab_merge_remote(s);
        taken_after = slab_taken(s);
    }
    BITSLAB_ASSERT(!s->donated || taken_after != s->donated); /* taken back above */
    bool sparse = taken_after && s->state == STATE_PARTIAL && taken_after == s->trigger;
    slab_after_free(h, s, taken_after + 1 == s->nbins, taken_after, true);
    if (sparse) {
        slab_went_sparse(h, s);
        slab_retrigger(s); /* after a donation: the next level counts it */
        partial_to_tail(h, s); /* fuller slabs are refilled first: this one drains */
    }
    if (taken_after == 0) {
        heap_trim_if_idle(h);
        heap_purge(h, PURGE_PERIODIC, SIZE_MAX);
        superpage_release_aged(h);
    }
    slow_leave(h);
}

/* Merge remote frees into every slab of sp named in `mask`. A slab the merge
 * empties counts as FREE since `as_of` (when the superpage was queued) if
 * that is earlier: the purge delay then runs from the frees, not from when
 * the owner got round to merging them (an owner back from a long sleep
 * purges what others freed meanwhile at once). */
static void superpage_merge(heap_t *h, superpage_t *sp, uint32_t mask, uint32_t as_of)
{
    BITSLAB_ASSERT(h->in_slow);
    BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h); /* relaxed: the owner's own */
    BITSLAB_ASSERT(!(mask & ~DATA_SLABS_MASK)); /* notifications name data slabs (remote_notify, the purger) */
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
        uint32_t before = slab_taken(s);
        uint32_t n = slab_merge_remote(s);
        /* No release while we still walk sp's slabs: the caller retries it. */
        if (n) slab_after_free(h, s, before == s->nbins, before - n, false); /* and its trigger */
        /* Relaxed: the owner reads its own field. */
        if (atomic_load_explicit(&s->kind, memory_order_relaxed) == SLAB_FREE &&
            (int32_t)(s->freed_at - as_of) > 0)
            s->freed_at = as_of;
    }
}

/* Merge every superpage of h with a remote notification, queued or not.
 * remote_slabs is only read: `queued` still says whether sp sits in the
 * queue, and the drain that pops it finds little or nothing left to do. */
static void heap_scan_remote(heap_t *h)
{
    BITSLAB_ASSERT(h->in_slow);
    uint32_t now = os_now_ms();
    superpage_t *sp = h->superpages;
    while (sp) {
        superpage_t *next = sp->next; /* the merge may move sp in the list */
        /* Acquire: pairs with freers' seq_cst F3 (makes their F2 visible). */
        uint32_t mask = atomic_load_explicit(&sp->remote_slabs, memory_order_acquire);
        if (mask) superpage_merge(h, sp, mask, now); /* no date: as of now */
        sp = next;
    }
}

void heap_drain_remote(heap_t *h)
{
    superpage_t *sp;
    bool stalled = false;
    BITSLAB_ASSERT(h->in_slow);
    while ((sp = remote_queue_pop(h, &stalled))) {
        // Only h's superpages are in its queue, and `queued` stays 1 from the
        // pusher's claim until D1 below. Relaxed (two loads): ours, a check.
        BITSLAB_ASSERT(atomic_load_explicit(&sp->heap, memory_order_relaxed) == h);
        /* relaxed, as above: ours, a check */
        BITSLAB_ASSERT(atomic_load_explicit(&sp->queued, memory_order_relaxed) == 1);
        DEBUG_PARK(PARK_DRAIN_AFTER_POP);
        // Relaxed: written by the pusher before its release push, which our
        // pop's acquire load read; rewritten only after D1.
        uint32_t as_of = atomic_load_explicit(&sp->queued_at, memory_order_relaxed);
        // D1. Seq_cst store, pairs with F4: with F3/F4 a Dekker pair
        // (remote.c): a freer whose F3 comes after D2 sees queued == 0 and
        // queues sp again. Release: our reads of sp->qnode happen before that
        // push.
        atomic_store_explicit(&sp->queued, 0, memory_order_seq_cst);
        // D2. Seq_cst exchange: acquire pairs with F3's release (makes F2
        // visible); the order with D1 is the Dekker pair above.
        uint32_t mask = atomic_exchange_explicit(&sp->remote_slabs, 0, memory_order_seq_cst);
        if (!mask) DEBUG_COUNT(WIN_EMPTY_POP);
        superpage_merge(h, sp, mask, as_of);
        superpage_try_release(h, sp, SUPERPAGE_RETENTION(h));
    }
    /* A producer stopped half-way through a push hides the superpages queued
     * after it: merge them directly, so the owner reuses their bins instead
     * of growing (they stay queued, and are released after the producer
     * resumes and the drain pops them). */
    if (unlikely(stalled)) heap_scan_remote(h);
}

/* The heap's housekeeping from a fast path that would otherwise never leave
 * it (free_to_cache calls it every HEAP_TICK frees): an owner that only
 * cycles blocks through its word cache still merges what others freed into
 * its memory and purges what has been free for the delay. */
void heap_tick(heap_t *h)
{
    /* From the owner's free fast path; in_slow may be set: a lent heap is entered for its whole
     * allocation, and a purger thread restarted inside one allocates and frees through it. */
    BITSLAB_ASSERT(h == bitslab_tls_heap);
    slow_enter(h);
    heap_drain_remote(h);
    if (h->deferred) superpage_retry_deferred(h);
    heap_purge(h, PURGE_TICK, SIZE_MAX);
    superpage_release_aged(h);
    slow_leave(h);
}

/* ---- allocation slow path ------------------------------------------------- */

/* Pop the lowest free bin of a non-empty word cache. */
static inline void *cache_pop(word_cache_t *c, bool *fresh)
{
    BITSLAB_ASSERT(c->bits != 0);
    unsigned b = ctz64(c->bits);
    c->bits &= c->bits - 1;
    if (fresh) *fresh = (c->fresh >> b) & 1;
    return c->base + (size_t)b * c->size;
}

/* The slow path proper: housekeeping, then the next slab for the class. */
static void *alloc_from_slabs(heap_t *h, unsigned cls, word_cache_t *c, slab_t *s, bool *fresh)
{
    BITSLAB_ASSERT(h->in_slow && cls < NUM_CLASSES && c == &h->cache[cls] && c->bits == 0);
    BITSLAB_ASSERT(s == h->active[cls] && (!s || s->state == STATE_ACTIVE));
    heap_drain_remote(h);
    if (h->deferred) superpage_retry_deferred(h);
    heap_purge(h, PURGE_PERIODIC, SIZE_MAX);
    superpage_release_aged(h);
    /* The housekeeping above leaves the active slab as it was: a merge or
     * purge never makes it FREE (slab_after_free keeps an empty active one). */
    BITSLAB_ASSERT(s == h->active[cls]);
    if (s) {
        if (s->summary && slab_load_word(s, c)) return cache_pop(c, fresh);
        slab_unload_word(s, c); /* the cache no longer speaks for s (it is empty) */
        h->active[cls] = NULL;
        if (s->summary) {
            partial_push(h, s); /* a purger holds bins of it: another slab for now */
        } else {
            s->state = STATE_FULL; /* off every list until a free makes room */
            slab_retrigger(s);
        }
    }
    /* A sparse slab may have given its free bins to the remote map
     * (slab_donate): take them back. One whose bins a purger holds right now
     * waits as FULL (the purger gives them back with a notification), or,
     * if it has free bins the owner may not hand out yet (slab_load_word),
     * goes back to the partial list after this search. */
    slab_t *held = NULL;
    for (;;) { /* ends: each purger holds one slab at a time, and slabs run out */
        s = h->partial[cls];
        if (!s) {
            s = heap_take_slabs(h, 1, 1);
            if (!s) {
                errno = ENOMEM;
                break;
            }
            purge_slab_in_use(h, s); /* purge.c: its pages count as committed again */
            slab_configure_small(s, h, cls);
        } else {
            BITSLAB_ASSERT(s->cls == cls && s->state == STATE_PARTIAL && s->cached == NO_WORD);
            partial_unlink(h, s);
            if (!s->summary || s->donated) slab_merge_remote(s); /* donated bins are ours again */
            BITSLAB_ASSERT(s->donated == 0);
            if (!s->summary) {
                DEBUG_COUNT(WIN_RECLAIM_WAITS_FOR_PURGER); /* its free bins are all donated and held */
                s->state = STATE_FULL;
                slab_retrigger(s);
                continue;
            }
        }
        slab_activate(h, s);
        if (slab_load_word(s, c)) break;
        h->active[cls] = NULL; /* a purger holds bins of it: set it aside */
        s->state = STATE_NONE;
        s->next = held;
        held = s;
    }
    while (held) { /* back on the partial list */
        slab_t *t = held;
        held = t->next;
        partial_push(h, t);
    }
    BITSLAB_ASSERT(!s || (h->active[cls] == s && s->state == STATE_ACTIVE && s->cached == c->word));
    return s ? cache_pop(c, fresh) : NULL;
}


/* Everything heap_alloc_slow's common case does not do (out of line: that
 * case stays a short function with few registers to save). */
static NOINLINE void *alloc_slower(heap_t *h, unsigned cls, bool *fresh)
{
    word_cache_t *c = &h->cache[cls];
    if (c->bits) return cache_pop(c, fresh); /* a heap adopted with a loaded cache */
    if (unlikely(purger_wants_restart())) purger_start_if_enabled(); /* a fork child: before slow_enter */
    slow_enter(h);
    void *p = alloc_from_slabs(h, cls, c, h->active[cls], fresh);
    slow_leave(h);
    return p;
}

void *heap_alloc_slow(heap_t *h, unsigned cls, bool *fresh)
{
    BITSLAB_ASSERT(cls < NUM_CLASSES && !h->is_placeholder && h == bitslab_tls_heap);
    word_cache_t *c = &h->cache[cls];
    /* The word cache speaks for the active slab's cached word, or is empty. */
    BITSLAB_ASSERT(!c->bits || (h->active[cls] && h->active[cls]->cached == c->word));
    slab_t *s = h->active[cls];
    /* The common slow path: the next word of the active slab. The heap's
     * housekeeping (merge remote frees, retry deferred releases, the purge
     * clock) runs on every 8th refill, and whenever the active slab has run
     * out: it costs more than the refill itself. */
    if (likely(!c->bits && s && s->summary && (++h->refills & 7))) {
        slow_enter(h);
        bool loaded = slab_load_word(s, c);
        slow_leave(h);
        if (likely(loaded)) return cache_pop(c, fresh);
    }
    return alloc_slower(h, cls, fresh);
}

/* ---- wide allocations ----------------------------------------------------- */

static void *wide_alloc_owned(heap_t *h, size_t size, size_t align, bool zero)
{
    BITSLAB_ASSERT(h->in_slow && size <= WIDE_MAX && align <= WIDE_MAX); /* alloc_large's choice */
    heap_drain_remote(h);
    unsigned n = (unsigned)((size + SLAB_SIZE - 1) / SLAB_SIZE);
    if (n == 0) n = 1;
    BITSLAB_ASSERT(n <= WIDE_MAX_SLABS);
    size_t step = align > SLAB_SIZE ? align / SLAB_SIZE : 1;
    slab_t *s = heap_take_slabs(h, n, step);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    uint32_t bytes = n * (uint32_t)SLAB_SIZE;
    if (zero) {
        for (unsigned i = 0; i < n; i++)
            if (slab_dirty(&s[i])) memset(s[i].data, 0, i + 1 == n ? size - (size_t)i * SLAB_SIZE : SLAB_SIZE);
    }
    for (unsigned i = 0; i < n; i++) {
        BITSLAB_ASSERT(slab_kind_now(&s[i]) == SLAB_FREE && s[i].state == STATE_NONE); /* a FREE run */
        slab_check_no_remote(&s[i]); /* a late double free of its previous life */
        purge_slab_in_use(h, &s[i]);
    }
    for (unsigned i = 1; i < n; i++) {
        slab_set_dirty(&s[i], true);
        s[i].state = STATE_NONE;
        /* Relaxed: the walker's snapshot; frees of tail pointers read it after a hand-off. */
        atomic_store_explicit(&s[i].kind, SLAB_WIDE_TAIL, memory_order_relaxed);
    }
    slab_set_dirty(s, true);
    s->nslabs = (uint8_t)n;
    s->nbins = 1;
    s->nwords = 1;
    s->summary = 0;
    s->cached = NO_WORD;
    slab_local(s)[0] = 0; /* the one bin is taken */
    s->hwm = 1;
    s->recip = slab_recip(bytes);
    s->state = STATE_WIDE;
    s->trigger = 0;
    slab_set_taken(s, 1);
    // Relaxed (three stores): the walker's snapshot; a freer learns of the
    // slab through its block, whose hand-off orders these stores.
    atomic_store_explicit(&s->bin_size, bytes, memory_order_relaxed);
    atomic_store_explicit(&s->kind, SLAB_WIDE, memory_order_relaxed); /* relaxed, as above: the walker's snapshot */
    atomic_store_explicit(&s->heap, h, memory_order_relaxed); /* relaxed, as above: the walker's snapshot */
    h->wide_allocations++;
    h->wide_bytes += bytes;
    return s->data;
}

void *wide_alloc(heap_t *h, size_t size, size_t align, bool zero)
{
    BITSLAB_ASSERT(!h->is_placeholder); /* thread_wide_alloc first gives the thread a heap */
    slow_enter(h);
    void *p = wide_alloc_owned(h, size, align, zero);
    slow_leave(h);
    return p;
}

/* ---- collection ----------------------------------------------------------- */

/* Merge every pending remote free, return empty slabs (the active ones too if
 * `full`) and empty superpages beyond the retention (all of them if `full`). */
void heap_collect(heap_t *h, bool full)
{
    if (h->is_placeholder) return;
    BITSLAB_ASSERT(h->id >= 1 && h->q_tail);
    slow_enter(h);
    heap_drain_remote(h);
    /* A producer stopped before its push hides nothing from the queue, but
     * one stopped between F3 and F4 leaves a mask that no drain will take
     * until it resumes: merge every notified superpage directly. */
    heap_scan_remote(h);
    if (full) {
        /* Put every cached word back; an active slab left empty goes back to
         * its superpage. */
        for (unsigned c = 0; c < NUM_CLASSES; c++) {
            slab_t *s = h->active[c];
            if (!s) continue;
            slab_unload_word(s, &h->cache[c]);
            if (slab_taken(s) == 0 && !slab_empty_but_held(s)) {
                h->active[c] = NULL;
                s->state = STATE_NONE;
                heap_return_slabs(h, s, 1, true);
            }
        }
        for (unsigned c = 0; c < NUM_CLASSES; c++) BITSLAB_ASSERT(h->cache[c].bits == 0); /* all put back */
    }
    /* Every sparse slab now (its merge may empty it), before the releases. */
    if (full && h->sparse_pending) heap_purge_sparse(h, os_now_ms(), 0);
    /* An empty slab that stayed PARTIAL because a purger held bits of it
     * when it emptied (slab_after_free) goes back now, unless a purger is
     * there again: nothing else would return it if no malloc reuses it. */
    if (full)
        for (unsigned c = 0; c < NUM_CLASSES; c++)
            for (slab_t *s = h->partial[c], *next; s; s = next) {
                next = s->next;
                if (slab_taken(s) != 0 || slab_empty_but_held(s)) continue;
                partial_unlink(h, s);
                heap_return_slabs(h, s, 1, false); /* the releases follow */
            }
    size_t retain = full ? 0 : SUPERPAGE_RETENTION(h);
    superpage_t *sp = h->superpages;
    while (sp) {
        superpage_t *next = sp->next;
        superpage_try_release(h, sp, retain);
        sp = next;
    }
    heap_purge(h, full ? PURGE_ALL : PURGE_EXPIRED, SIZE_MAX);
    slow_leave(h);
}

/* Collect heaps whose threads exited: popping one from the pool makes us its
 * only user, exactly as adoption does, so its owner-only state is ours until
 * we push it back. Their remote frees are merged and their empty superpages
 * go to the orphanage, instead of waiting for a new thread to adopt them.
 * Every heap in the pool is visited: all are popped (chained through
 * `collect_next`, ours while we hold them), collected, then all pushed
 * back. Returns how many still own superpages afterwards. */
static uint32_t heap_collect_pool(void)
{
    heap_t *chain = NULL, *h;
    uint32_t holding = 0;
    while ((h = heap_pool_pop())) {
        heap_collect(h, true);
        if (h->nsuperpages) holding++;
        h->collect_next = chain;
        chain = h;
    }
    while ((h = chain)) {
        chain = h->collect_next;
        heap_pool_push(h);
    }
    return holding;
}

void heap_collect_abandoned(void) { (void)heap_collect_pool(); }

