/*
 * remote.c: frees from a thread that does not own the slab, and the queue
 * that tells the owner where they landed. Protocol: docs/remote-free.md.
 *
 * A remote free is a fixed sequence of single atomic instructions, with no
 * loop and no compare-and-swap, so it is wait-free as compiled (a test
 * disassembles it: tests/check-wait-free.py):
 *
 *   F1  inflight += 1              (superpage)  "I am about to touch sp"
 *   F2  remote[w] += bit           (slab)       the free itself: linearization point
 *   F3  remote_slabs |= slab bit   (superpage)  "look at this slab"
 *   F4  if queued == 0 and exchange(queued, 1) == 0: push sp on the owner's queue
 *   F5  inflight -= 1              (superpage)  "done touching sp"
 *
 * F2 adds rather than ORs: for a bit that is clear the two are the same, and
 * an add returns the old word from one `lock xadd` (a fetch_or whose result
 * is used compiles to a CAS loop). A bit that was already set is a double
 * free, which aborts the process: the carry it made is never used.
 *
 * The owner pops superpages from its queue, stores queued = 0, then takes
 * remote_slabs with an exchange and merges the slabs it names. It hands a
 * superpage to the orphanage only when inflight == 0, queued == 0 and
 * remote_slabs == 0, so no freer can still be between F1 and F5
 * (touch-after-free) and sp is not in the queue.
 *
 * The queue is Dmitry Vyukov's intrusive multi-producer single-consumer
 * queue: a push is one exchange and one store (wait-free). Its one weakness:
 * a producer stopped between its exchange and its store hides the nodes
 * pushed after it until it resumes. The owner is never blocked by that
 * (pop returns "nothing yet"); when it sees it, its slow path merges the
 * superpages of the heap directly (heap_drain_remote), so those frees are
 * still found.
 */
#include "remote.h"
#include "bitmap.h"
#include "debug.h"
#include "error.h"
#include "os.h"

static superpage_t *superpage_of_node(qnode_t *n)
{
    return (superpage_t *)((char *)n - offsetof(superpage_t, qnode));
}

static void queue_push(heap_t *h, qnode_t *n)
{
    BITSLAB_ASSERT(h && n && h->id >= 1); /* a whole heap's queue (heap_new sets it up before the id) */
    // Relaxed: n is not in the queue (we won its superpage's `queued`
    // exchange, or it is the stub); the exchange below releases this store.
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    // Acq_rel: release publishes n->next = NULL to the next producer, which
    // links after n; acquire makes the previous producer's NULL store to
    // prev->next happen before our link store below.
    qnode_t *prev = atomic_exchange_explicit(&h->q_head, n, memory_order_acq_rel);
    DEBUG_PARK(PARK_QUEUE_LINK);
    /* Release: pairs with the consumer's acquire load of prev->next. */
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

void remote_queue_init(heap_t *h)
{
    /* Relaxed: the heap is not yet visible to any other thread. */
    atomic_store_explicit(&h->q_stub.next, NULL, memory_order_relaxed);
    /* Relaxed: as above. */
    atomic_store_explicit(&h->q_head, &h->q_stub, memory_order_relaxed);
    h->q_tail = &h->q_stub;
}

/* Owner only. Returns the next queued superpage, or NULL if the queue is
 * empty or a producer is half-way through a push (then *stalled is set). */
superpage_t *remote_queue_pop(heap_t *h, bool *stalled)
{
    BITSLAB_ASSERT(h->q_tail != NULL && stalled != NULL); /* set up by remote_queue_init */
    qnode_t *tail = h->q_tail;
    /* Acquire: pairs with a producer's release link store. */
    qnode_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &h->q_stub) {
        if (!next) {
            // Acquire: pairs with producers' acq_rel exchange (queue_push); a
            // head past the stub means a producer is between its exchange and
            // its link.
            if (atomic_load_explicit(&h->q_head, memory_order_acquire) != tail) {
                DEBUG_COUNT(WIN_QUEUE_PRODUCER_STALLED);
                *stalled = true;
            }
            return NULL;
        }
        h->q_tail = next;
        tail = next;
        /* Acquire: as above. */
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
    }
    if (next) {
        h->q_tail = next;
        BITSLAB_ASSERT(tail != &h->q_stub && ((uintptr_t)superpage_of_node(tail) & (SUPERPAGE_SIZE - 1)) == 0);
        return superpage_of_node(tail);
    }
    /* Acquire: pairs with producers' acq_rel exchange. */
    qnode_t *head = atomic_load_explicit(&h->q_head, memory_order_acquire);
    if (tail != head) {
        DEBUG_COUNT(WIN_QUEUE_PRODUCER_STALLED); /* a producer is between exchange and link */
        *stalled = true;
        return NULL;
    }
    queue_push(h, &h->q_stub);
    /* Acquire: as above. */
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        h->q_tail = next;
        return superpage_of_node(tail);
    }
    *stalled = true; /* a producer came in between our two pushes' ends */
    return NULL;
}

/* F3 and F4 of a remote free (and of a purger giving bins back,
 * docs/purger.md): tell the owner that slab `slab_index` of sp has remote
 * bits. Between the caller's F1 and F5. p names the block in a report. */
void remote_notify(superpage_t *sp, unsigned slab_index, const void *p)
{
    BITSLAB_ASSERT(slab_index >= 1 && slab_index < SLABS_PER_SUPERPAGE); /* a data slab */
    // Between the caller's F1 (or P4) and F5 (P7): our own count is in.
    // Relaxed: a check of our own increment.
    BITSLAB_ASSERT(atomic_load_explicit(&sp->inflight, memory_order_relaxed) >= 1);
    // F3. Seq_cst (a lock or, its result unused): with the owner's seq_cst
    // store of queued = 0 and exchange of remote_slabs (D1, D2) this is a
    // Dekker pair: either D2 comes after F3 and takes our bit, or F4's load
    // comes after D1 and sees queued == 0. Release also makes F2 visible to
    // the acquire side of D2.
    atomic_fetch_or_explicit(&sp->remote_slabs, 1u << slab_index, memory_order_seq_cst);
    DEBUG_PARK(PARK_REMOTE_AFTER_F3);

    // F4. Seq_cst load (a plain mov on x86-64), paired with D1 (above); a 1
    // means a push is done or under way and a drain will follow it. The
    // exchange makes one freer the pusher; acquire pairs with D1's release,
    // so the owner's last read of sp->qnode happens before our push rewrites it.
    uint32_t seen = atomic_load_explicit(&sp->queued, memory_order_seq_cst);
    if (seen == 0) DEBUG_PARK(PARK_REMOTE_BEFORE_CLAIM);
    uint32_t won = seen == 0 && atomic_exchange_explicit(&sp->queued, 1, memory_order_seq_cst) == 0; /* F4: pairs with D1 */
#if BITSLAB_DEBUG
    if (seen == 0 && !won) DEBUG_COUNT(WIN_QUEUED_EXCHANGE_LOST);
#endif
    if (won) {
        // Relaxed: sp cannot change owner while we are inside it (F1's
        // inflight keeps it from the orphanage), and the block it held when
        // we started ordered the owner's store before us.
        heap_t *owner = atomic_load_explicit(&sp->heap, memory_order_relaxed);
        /* Only a double free racing with its superpage's release can find no
         * owner here: report it instead of pushing onto nothing. */
        if (unlikely(!owner)) bitslab_fatal("double free (the superpage was released meanwhile)", p);
#if BITSLAB_DEBUG
        /* Relaxed: debug counting only (heap_pool_push sets it). */
        if (owner->id && atomic_load_explicit(&owner->abandoned, memory_order_relaxed))
            DEBUG_COUNT(WIN_FREE_INTO_ABANDONED_HEAP);
#endif
        // Relaxed (load and store): a date for the owner's purge delay, no
        // ordering of its own; the push below publishes it (release), and
        // nobody else writes it while queued == 1.
        uint32_t now = atomic_load_explicit(&bitslab_clock_ms, memory_order_relaxed);
        /* relaxed, as above: a date for the owner's purge delay, no ordering */
        atomic_store_explicit(&sp->queued_at, now, memory_order_relaxed);
        DEBUG_PARK(PARK_REMOTE_BEFORE_PUSH);
        queue_push(owner, &sp->qnode);
    }
}

void remote_free(superpage_t *sp, slab_t *s, uint32_t idx, const void *p)
{
    /* block_lookup validated p: bin idx of slab s of sp, a live block (whose
     * hand-off orders the slab's configuration before these reads). */
    BITSLAB_ASSERT(superpage_of_slab(s) == sp && s->index >= 1 && &sp->slabs[s->index] == s);
    BITSLAB_ASSERT(idx < s->nbins && p != NULL);
    // F1. Relaxed: F2's release orders it before any owner that merges our bit;
    // that owner then reads inflight >= 1 until F5.
    atomic_fetch_add_explicit(&sp->inflight, 1, memory_order_relaxed);
    DEBUG_PARK(PARK_REMOTE_AFTER_F1);

    uint64_t bit = (uint64_t)1 << (idx & 63);
    // F2. Release: pairs with the owner's acquire exchange in slab_merge_remote,
    // so our writes to the block happen before its reuse. An add, not an or:
    // one lock xadd (see the top of this file); the old value catches a
    // double free that has not been merged yet.
    uint64_t old = atomic_fetch_add_explicit(&slab_remote(s)[idx >> 6], bit, memory_order_release);
    if (unlikely(old & bit)) bitslab_fatal("double free (freed twice by other threads)", p);
    DEBUG_PARK(PARK_REMOTE_AFTER_F2);

    remote_notify(sp, s->index, p); /* F3, F4 */
    DEBUG_PARK(PARK_REMOTE_BEFORE_F5);

    // F5. Release: pairs with the owner's acquire load of inflight in
    // superpage_try_release: all our touches of sp happen before its release.
    atomic_fetch_sub_explicit(&sp->inflight, 1, memory_order_release);
}
