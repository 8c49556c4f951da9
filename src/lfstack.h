/*
 * lfstack.h: a lock-free Treiber stack of integer handles, with a version in
 * the head word against ABA. Header-only; needs nothing but the standard
 * headers below.
 *
 * Entries are named by nonzero integer handles of at most `bits` bits
 * (1 <= bits <= 63, a compile-time constant of each stack, passed to every
 * call); handle 0 means "none" (the empty stack, the end of the list). Each
 * entry has an `_Atomic uint64_t` link that holds the handle of the entry
 * below it. The head is one 64-bit atomic word:
 *
 *    63                        bits  bits-1               0
 *   +------------------------------+-----------------------+
 *   | version (64 - bits bits)     | handle of the top     |
 *   +------------------------------+-----------------------+
 *
 * Every successful push and pop adds 1 to the version (modulo 2^(64-bits)).
 *
 * Why the version (ABA). A popper reads head = A and A's link = B, then
 * stalls before its CAS. Meanwhile others pop A, pop B and push A again: the
 * head names A once more, but B is now held by someone else. Without the
 * version the stalled popper's CAS would succeed and make B the head, handing
 * B out twice. With it the head is (A, v + 3), not (A, v), and the CAS fails.
 * The bound: an ABA needs a thread stalled between its read of the head and
 * its CAS while a multiple of 2^(64-bits) other pushes and pops pass, ending
 * with the same handle on top: 2^38 (2.7 x 10^11) for the orphanage, 2^44
 * (1.8 x 10^13) for the heap pool, 45 minutes and two days of back-to-back
 * operations at 10^8 a second.
 *
 * Precondition of lfstack_pop: an entry's link must stay readable memory
 * forever (superpage first pages are never unmapped; heaps are never freed),
 * because a popper may read the link of an entry that another thread popped
 * (and perhaps pushed elsewhere, or reused) in the meantime. What it reads
 * then may be stale; the CAS fails on the version and the value is dropped.
 * An entry is pushed by the thread that holds it, and must not be in the
 * stack already.
 *
 * Memory orders, and what each pairs with:
 *   push  load of the head      relaxed  a guess; the CAS validates it
 *         store of the link     relaxed  published by the push CAS
 *         CAS of the head       release  pairs with the pop's acquire load
 *                                        and acquire CAS: everything the
 *                                        pusher wrote to the entry (its link
 *                                        included) happens before the popper
 *                                        reads the link and owns the entry;
 *                               relaxed on failure: the next try publishes
 *   pop   load of the head      acquire  pairs with the push CAS that put
 *                                        the top entry there
 *         load of the link      relaxed  maybe stale; the versioned CAS
 *                                        rejects a stale value
 *         CAS of the head       acquire  success: the entry is ours (pairs
 *                                        with its push); failure: the
 *                                        reloaded top's link is read next
 *                                        (pairs with that top's push)
 * Every change of the head is a CAS (a read-modify-write), so each push's
 * release heads a release sequence that all later CASes continue: a popper
 * that reads a head written by a later pop or push still synchronizes with
 * the push of every entry below it.
 *
 * Users (docs/orphanage.md):
 *   - the orphanage of empty superpages (src/orphanage.c): handle =
 *     superpage address >> 21, bits = 26, link = the superpage's orphan link;
 *   - the abandoned-heap pool (src/heap.c): handle = heap id, bits = 20,
 *     link = the heap's pool link.
 * stress/models/orphanage.pml models lfstack_push/lfstack_pop.
 *
 * Debug hooks: define, before including this file,
 *   LFSTACK_PARK(point)   called with hooks->park_push after the push's link
 *                         store and hooks->park_pop after the pop's link
 *                         read, each just before the CAS;
 *   LFSTACK_RETRY(window) called with hooks->retry after every failed CAS
 *                         (a lost race or a spurious failure of the weak CAS).
 * Both default to nothing. The library defines them as DEBUG_PARK and
 * DEBUG_COUNT. `hooks` may be NULL (no hooks called).
 *   LFSTACK_ASSERT(cond)  checks the preconditions above (bits in 1..63,
 *                         a handle nonzero and below 2^bits, a link that
 *                         holds a handle); defaults to nothing, the library
 *                         defines it as BITSLAB_ASSERT.
 */
#ifndef BITSLAB_LFSTACK_H
#define BITSLAB_LFSTACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef LFSTACK_PARK
#define LFSTACK_PARK(point) ((void)0)
#endif
#ifndef LFSTACK_RETRY
#define LFSTACK_RETRY(window) ((void)0)
#endif
#ifndef LFSTACK_ASSERT
#define LFSTACK_ASSERT(cond) ((void)0)
#endif

/* The head. Zero (LFSTACK_INIT, or a static object) is the empty stack. */
typedef struct lfstack {
    _Atomic uint64_t head;
} lfstack_t;

#define LFSTACK_INIT {0}

/* A stack's debug park points and race-window counter (see above). */
typedef struct lfstack_hooks {
    int park_push; /* LFSTACK_PARK: push, link written, before the CAS */
    int park_pop;  /* LFSTACK_PARK: pop, link read, before the CAS */
    int retry;     /* LFSTACK_RETRY: a push or pop CAS failed */
} lfstack_hooks_t;

/* The handle field of a head word. */
static inline uint64_t lfstack_handle_of(uint64_t word, unsigned bits)
{
    return word & (((uint64_t)1 << bits) - 1);
}

/* The version field of a head word. */
static inline uint64_t lfstack_version_of(uint64_t word, unsigned bits)
{
    return word >> bits;
}

/* The head word that follows `old` with `handle` on top: the version of old
 * plus 1 (wrapping at 2^(64-bits)). LFSTACK_TEST_NO_VERSION (tests only)
 * keeps the version, to show what the version prevents. */
static inline uint64_t lfstack_next_word(uint64_t old, unsigned bits, uint64_t handle)
{
#ifdef LFSTACK_TEST_NO_VERSION
    uint64_t version = lfstack_version_of(old, bits);
#else
    uint64_t version = lfstack_version_of(old, bits) + 1;
#endif
    LFSTACK_ASSERT(bits >= 1 && bits <= 63);
    LFSTACK_ASSERT((handle >> bits) == 0); /* a handle is at most `bits` wide: it would spill into the version */
    return (version << bits) | handle;
}

/* Push the entry `handle` (nonzero, below 2^bits), whose link is *link. The
 * calling thread holds the entry; what it wrote to the entry before the push
 * is visible to the thread that pops it. */
static inline void lfstack_push(lfstack_t *st, unsigned bits, uint64_t handle, _Atomic uint64_t *link,
                                const lfstack_hooks_t *hooks)
{
    (void)hooks;
    LFSTACK_ASSERT(bits >= 1 && bits <= 63);
    LFSTACK_ASSERT(handle != 0 && (handle >> bits) == 0); /* 0 is "none" */
    LFSTACK_ASSERT(link != NULL);
    /* Relaxed: a guess, paired with nothing; the CAS below validates it. */
    uint64_t old = atomic_load_explicit(&st->head, memory_order_relaxed);
    for (;;) {
        // Relaxed: published by the release CAS below (pairs with the
        // popper's acquire read of the head).
        atomic_store_explicit(link, lfstack_handle_of(old, bits), memory_order_relaxed);
        if (hooks) LFSTACK_PARK(hooks->park_push);
        // Release on success: pairs with the pop's acquire load and acquire
        // CAS, so the entry's link and everything written to the entry before
        // happen before its popper uses them. Relaxed on failure: `old` is
        // only the next guess; nothing is read through it, and the next try
        // publishes again.
        if (atomic_compare_exchange_weak_explicit(&st->head, &old, lfstack_next_word(old, bits, handle),
                                                  memory_order_release, memory_order_relaxed))
            return;
        if (hooks) LFSTACK_RETRY(hooks->retry);
    }
}

/* Pop the top entry: its handle, or 0 if the stack is empty. The entry is
 * the caller's from then on, with what its pusher wrote before the push.
 * link_of(handle) returns the entry's link; it must be readable for every
 * handle ever pushed, forever (see the precondition above). */
static inline uint64_t lfstack_pop(lfstack_t *st, unsigned bits, _Atomic uint64_t *(*link_of)(uint64_t handle),
                                   const lfstack_hooks_t *hooks)
{
    (void)hooks;
    LFSTACK_ASSERT(bits >= 1 && bits <= 63);
    LFSTACK_ASSERT(link_of != NULL);
    // Acquire: pairs with the release CAS of the push that put the top entry
    // there (through the head's release sequence), so its link is visible.
    uint64_t old = atomic_load_explicit(&st->head, memory_order_acquire);
    for (;;) {
        uint64_t handle = lfstack_handle_of(old, bits);
        if (!handle) return 0;
        // Relaxed: pairs with the pusher's link store, ordered by our acquire
        // read of `old`; a newer value (the entry popped and pushed again
        // meanwhile) means the head changed, and the versioned CAS fails.
        uint64_t next = atomic_load_explicit(link_of(handle), memory_order_relaxed);
        /* Stale or not, a link only ever holds a handle (push writes nothing else). */
        LFSTACK_ASSERT((next >> bits) == 0);
        if (hooks) LFSTACK_PARK(hooks->park_pop);
        // Acquire on success: pairs with the entry's push (the entry and what
        // its pusher wrote are ours now). Acquire on failure: the reloaded
        // head's top entry has its link read next, so pair with its push as
        // the load above does.
        if (atomic_compare_exchange_weak_explicit(&st->head, &old, lfstack_next_word(old, bits, next),
                                                  memory_order_acquire, memory_order_acquire))
            return handle;
        if (hooks) LFSTACK_RETRY(hooks->retry);
    }
}

#endif /* BITSLAB_LFSTACK_H */
