/*
 * fuzz_core.h: the operations of bitslab's shadow-model fuzzer, shared by the
 * seeded multi-threaded driver (fuzz.c, what CI runs) and the libFuzzer
 * entry point (fuzz_libfuzzer.c, clang only).
 *
 * Every live block has a record (id, requested size, alignment) and sits in a
 * slot of a shared array; any thread may take a block out of a slot (an
 * atomic exchange makes it the block's only user) and verify, realloc or free
 * it, so most frees are remote. A mutex-protected shadow table of the live
 * address ranges ([p, p + usable size)) catches a range handed out twice.
 * Checked on every operation:
 *   - contents: each block carries a pattern derived from its id, verified
 *     before it is freed or reallocated (realloc: the kept prefix);
 *   - calloc'd memory is zero;
 *   - alignment (16 bytes at least, the requested one for the aligned calls);
 *   - usable_size >= the requested size;
 *   - no live range overlaps another (shadow table, checked on every
 *     allocation; a free must find its exact range);
 *   - at the end, with everything freed and collected: nothing in use,
 *     nothing pending, no huge or wide allocation left;
 *   - in debug builds, now and then, the heap invariant checker.
 *
 * Every prefixed entry point is driven: malloc, calloc, realloc (also from
 * NULL and to 0), reallocarray, aligned_alloc, posix_memalign, memalign (also
 * with alignments that are not powers of two), free, free_sized,
 * free_aligned_sized, usable_size, collect; and bitslab_stats concurrently.
 * Sizes run from 0 to 4 MiB, most of them small.
 */
#ifndef BITSLAB_FUZZ_CORE_H
#define BITSLAB_FUZZ_CORE_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitslab.h"

#if BITSLAB_DEBUG
void bitslab_debug_check(void); /* debug builds' test API (src/internal.h) */
#endif

#define FZ_KiB ((size_t)1024)
#define FZ_MiB ((size_t)1024 * 1024)
#define FZ_SLOTS 512                 /* the shared hand-off array */
#define FZ_MIN_ALIGN 16              /* what every bitslab block is aligned to */
#define FZ_FULL_MAX (128 * FZ_KiB)   /* blocks up to this carry their pattern in every byte */
#define FZ_STRIDE (64 * FZ_KiB)      /* bigger ones: the first 4 KiB of every 64 KiB */
#define FZ_COVER (4 * FZ_KiB)
#define FZ_SHADOW_MAX (FZ_SLOTS + 256)

/* One live block. */
typedef struct fz_rec {
    unsigned char *p;
    size_t size;  /* requested */
    size_t align; /* requested by an aligned call, else 0 */
    uint64_t id;
    bool aligned_alloc; /* from aligned_alloc: free_aligned_sized applies */
} fz_rec_t;

/* One thread's state: a PRNG, or (libFuzzer) the input bytes. */
typedef struct fz_thread {
    uint64_t rng;
    const uint8_t *data; /* libFuzzer input, or NULL */
    size_t len, pos;
    bool exhausted;      /* the input is used up */
    unsigned index;      /* thread number */
    unsigned round;
    uint64_t ops;
    char op[160];        /* the operation under way, for failure messages */
} fz_thread_t;

static _Atomic(fz_rec_t *) fz_slots[FZ_SLOTS];
static _Atomic uint64_t fz_next_id = 1;
static uint64_t fz_seed;     /* printed in every failure */
static const char *fz_replay = ""; /* how to replay, printed in every failure */

/* ---- failure ------------------------------------------------------------- */

static void fz_fail(fz_thread_t *t, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fz_fail(fz_thread_t *t, const char *fmt, ...)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock); /* one report, even if several threads fail */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\nFUZZ FAILURE: seed %#" PRIx64 ", thread %u, round %u, op %" PRIu64 " (%s):\n  ", fz_seed,
            t->index, t->round, t->ops, t->op);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s\n", fz_replay);
    va_end(ap);
    fflush(stderr);
    abort();
}

/* ---- randomness ------------------------------------------------------------ */

static uint64_t fz_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t fz_rand(fz_thread_t *t)
{
    if (t->data) { /* libFuzzer: the input decides, 8 bytes at a time */
        uint64_t x = 0;
        if (t->pos >= t->len) {
            t->exhausted = true;
            return 0;
        }
        size_t n = t->len - t->pos < 8 ? t->len - t->pos : 8;
        memcpy(&x, t->data + t->pos, n);
        t->pos += n;
        return x;
    }
    t->rng += 0x9E3779B97F4A7C15ull; /* splitmix64 */
    return fz_mix(t->rng);
}

static size_t fz_below(fz_thread_t *t, size_t n) { return n ? (size_t)(fz_rand(t) % n) : 0; }

/* 0..4 MiB, most of them small. */
static size_t fz_size(fz_thread_t *t)
{
    unsigned r = (unsigned)fz_below(t, 100);
    if (r < 3) return 0;
    if (r < 55) return 1 + fz_below(t, 256);
    if (r < 75) return 257 + fz_below(t, 4096 - 256);
    if (r < 89) return 4097 + fz_below(t, 32 * FZ_KiB - 4096);
    if (r < 97) return 32 * FZ_KiB + 1 + fz_below(t, FZ_MiB - 32 * FZ_KiB); /* wide */
    return FZ_MiB + 1 + fz_below(t, 3 * FZ_MiB);                             /* huge */
}

/* A power of two, 1 B to 4 MiB, most of them small. */
static size_t fz_align(fz_thread_t *t)
{
    unsigned r = (unsigned)fz_below(t, 100);
    if (r < 60) return (size_t)1 << fz_below(t, 7);        /* 1 .. 64 */
    if (r < 90) return (size_t)1 << (7 + fz_below(t, 9));  /* 128 .. 32 KiB */
    if (r < 98) return (size_t)1 << (16 + fz_below(t, 6)); /* 64 KiB .. 2 MiB */
    return 4 * FZ_MiB;
}

/* ---- patterns ------------------------------------------------------------ */

/* Word w of block id's pattern: one multiply-add per word (the fill and the
 * checks are most of the fuzzer's time), different for every block. */
static uint64_t fz_base(uint64_t id) { return fz_mix(id); }
static uint64_t fz_word_b(uint64_t base, size_t w) { return base ^ ((uint64_t)w * 0x9E3779B97F4A7C15ull); }
static unsigned char fz_byte(uint64_t id, size_t i) { return (unsigned char)(fz_word_b(fz_base(id), i / 8) >> (i % 8 * 8)); }

/* The patterned ranges of a block of `size` bytes, within [0, to). */
static void fz_ranges(fz_thread_t *t, const fz_rec_t *r, size_t size, size_t to,
                      void (*fn)(fz_thread_t *, const fz_rec_t *, size_t, size_t))
{
    if (size <= FZ_FULL_MAX) {
        fn(t, r, 0, to);
        return;
    }
    for (size_t seg = 0; seg < to; seg += FZ_STRIDE) fn(t, r, seg, seg + FZ_COVER < to ? seg + FZ_COVER : to);
}

static void fz_fill_range(fz_thread_t *t, const fz_rec_t *r, size_t lo, size_t hi)
{
    (void)t;
    uint64_t base = fz_base(r->id);
    for (; lo < hi && lo % 8; lo++) r->p[lo] = fz_byte(r->id, lo);
    for (; lo + 8 <= hi; lo += 8) *(uint64_t *)(void *)(r->p + lo) = fz_word_b(base, lo / 8);
    for (; lo < hi; lo++) r->p[lo] = fz_byte(r->id, lo);
}

static void fz_check_range(fz_thread_t *t, const fz_rec_t *r, size_t lo, size_t hi)
{
    uint64_t base = fz_base(r->id);
    while (lo + 8 <= hi && lo % 8 == 0 && *(const uint64_t *)(const void *)(r->p + lo) == fz_word_b(base, lo / 8))
        lo += 8;
    for (; lo < hi; lo++)
        if (r->p[lo] != fz_byte(r->id, lo))
            fz_fail(t, "block %p (id %" PRIu64 ", %zu bytes): byte %zu is %#x, its pattern says %#x", (void *)r->p,
                    r->id, r->size, lo, r->p[lo], fz_byte(r->id, lo));
}

static void fz_fill(fz_thread_t *t, const fz_rec_t *r) { fz_ranges(t, r, r->size, r->size, fz_fill_range); }

/* The first n bytes hold the pattern of a block of `size` bytes. */
static void fz_verify(fz_thread_t *t, const fz_rec_t *r, size_t size, size_t n)
{
    fz_ranges(t, r, size, n, fz_check_range);
}

/* ---- the shadow table: live ranges, sorted, under a mutex ------------------ */

typedef struct fz_span {
    uintptr_t lo, hi;
    uint64_t id;
} fz_span_t;

static pthread_mutex_t fz_shadow_lock = PTHREAD_MUTEX_INITIALIZER;
static fz_span_t fz_shadow[FZ_SHADOW_MAX];
static size_t fz_nshadow;

/* Index of the first span with lo > x. */
static size_t fz_upper(uintptr_t x)
{
    size_t a = 0, b = fz_nshadow;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (fz_shadow[m].lo <= x) a = m + 1;
        else b = m;
    }
    return a;
}

static void fz_shadow_insert(fz_thread_t *t, const fz_rec_t *r)
{
    size_t usable = bitslab_usable_size(r->p);
    uintptr_t lo = (uintptr_t)r->p, hi = lo + (usable ? usable : 1);
    pthread_mutex_lock(&fz_shadow_lock);
    size_t i = fz_upper(lo);
    const fz_span_t *clash = NULL;
    if (i > 0 && fz_shadow[i - 1].hi > lo) clash = &fz_shadow[i - 1];
    else if (i < fz_nshadow && fz_shadow[i].lo < hi) clash = &fz_shadow[i];
    if (clash) {
        fz_span_t c = *clash;
        pthread_mutex_unlock(&fz_shadow_lock);
        fz_fail(t, "block %p..%p (id %" PRIu64 ") overlaps live block %p..%p (id %" PRIu64 "): handed out twice",
                (void *)lo, (void *)hi, r->id, (void *)c.lo, (void *)c.hi, c.id);
    }
    if (fz_nshadow == FZ_SHADOW_MAX) {
        pthread_mutex_unlock(&fz_shadow_lock);
        fz_fail(t, "shadow table full");
    }
    memmove(&fz_shadow[i + 1], &fz_shadow[i], (fz_nshadow - i) * sizeof *fz_shadow);
    fz_shadow[i] = (fz_span_t){lo, hi, r->id};
    fz_nshadow++;
    pthread_mutex_unlock(&fz_shadow_lock);
}

/* Before the block is freed (after, its range may be someone else's). */
static void fz_shadow_remove(fz_thread_t *t, const fz_rec_t *r)
{
    pthread_mutex_lock(&fz_shadow_lock);
    size_t i = fz_upper((uintptr_t)r->p);
    if (i == 0 || fz_shadow[i - 1].lo != (uintptr_t)r->p || fz_shadow[i - 1].id != r->id) {
        pthread_mutex_unlock(&fz_shadow_lock);
        fz_fail(t, "block %p (id %" PRIu64 ") is not in the shadow table", (void *)r->p, r->id);
    }
    memmove(&fz_shadow[i - 1], &fz_shadow[i], (fz_nshadow - i) * sizeof *fz_shadow);
    fz_nshadow--;
    pthread_mutex_unlock(&fz_shadow_lock);
}

/* ---- operations -------------------------------------------------------------- */

static void fz_check_block(fz_thread_t *t, const void *p, size_t size, size_t align, const char *what)
{
    if (!p) fz_fail(t, "%s(%zu) returned NULL (errno %d)", what, size, errno);
    size_t a = align > FZ_MIN_ALIGN ? align : FZ_MIN_ALIGN;
    if ((uintptr_t)p % a) fz_fail(t, "%s(%zu) = %p: not aligned to %zu", what, size, p, a);
    size_t usable = bitslab_usable_size(p);
    if (usable < size) fz_fail(t, "%s(%zu) = %p: usable size %zu", what, size, p, usable);
}

static void fz_check_zero(fz_thread_t *t, const unsigned char *p, size_t n, const char *what)
{
    size_t i = 0;
    while (i + 8 <= n && *(const uint64_t *)(const void *)(p + i) == 0) i += 8;
    for (; i < n; i++)
        if (p[i]) fz_fail(t, "%s(%zu) = %p: byte %zu is %#x, not zero", what, n, (const void *)p, i, p[i]);
}

/* A new block from one of the allocating entry points. */
static fz_rec_t *fz_alloc(fz_thread_t *t)
{
    size_t size = fz_size(t), align = 0, elem = 0, count = 0;
    bool zero = false, aligned = false;
    void *p = NULL;
    const char *what;
    unsigned how = (unsigned)fz_below(t, 9);
    static const size_t elems[] = {1, 8, 16, 24};
    switch (how) {
    case 0:
    case 1:
    case 2:
        what = "malloc";
        snprintf(t->op, sizeof t->op, "malloc(%zu)", size);
        p = bitslab_malloc(size);
        break;
    case 3:
        what = "calloc";
        elem = elems[fz_below(t, 4)];
        count = size / elem;
        size = count * elem;
        zero = true;
        snprintf(t->op, sizeof t->op, "calloc(%zu, %zu)", count, elem);
        p = bitslab_calloc(count, elem);
        break;
    case 4:
        what = "aligned_alloc";
        align = fz_align(t);
        aligned = true;
        snprintf(t->op, sizeof t->op, "aligned_alloc(%zu, %zu)", align, size);
        p = bitslab_aligned_alloc(align, size);
        break;
    case 5: {
        what = "posix_memalign";
        align = fz_align(t);
        if (align < sizeof(void *)) align = sizeof(void *);
        snprintf(t->op, sizeof t->op, "posix_memalign(%zu, %zu)", align, size);
        int rc = bitslab_posix_memalign(&p, align, size);
        if (rc) fz_fail(t, "posix_memalign(%zu, %zu) returned %d", align, size, rc);
        break;
    }
    case 6: {
        what = "memalign";
        align = fz_align(t);
        size_t asked = align;
        if (align > 2 && fz_below(t, 4) == 0) asked = align / 2 + 1 + fz_below(t, align / 2 - 1); /* rounded up to align */
        snprintf(t->op, sizeof t->op, "memalign(%zu, %zu)", asked, size);
        p = bitslab_memalign(asked, size);
        break;
    }
    case 7:
        what = "realloc";
        snprintf(t->op, sizeof t->op, "realloc(NULL, %zu)", size);
        p = bitslab_realloc(NULL, size);
        break;
    default:
        what = "reallocarray";
        elem = elems[fz_below(t, 4)];
        count = size / elem;
        size = count * elem;
        snprintf(t->op, sizeof t->op, "reallocarray(NULL, %zu, %zu)", count, elem);
        p = bitslab_reallocarray(NULL, count, elem);
        break;
    }
    fz_check_block(t, p, size, align, what);
    if (zero) fz_check_zero(t, p, size, what);
    fz_rec_t *r = malloc(sizeof *r); /* glibc's malloc: the shadow stays out of bitslab */
    if (!r) fz_fail(t, "out of memory for a record");
    /* Relaxed: ids only need to be unique. */
    *r = (fz_rec_t){p, size, align, atomic_fetch_add_explicit(&fz_next_id, 1, memory_order_relaxed), aligned};
    fz_shadow_insert(t, r);
    fz_fill(t, r);
    return r;
}

static void fz_free(fz_thread_t *t, fz_rec_t *r)
{
    fz_verify(t, r, r->size, r->size);
    fz_shadow_remove(t, r);
    unsigned how = (unsigned)fz_below(t, 3);
    if (how == 2 && r->aligned_alloc) {
        snprintf(t->op, sizeof t->op, "free_aligned_sized(%p, %zu, %zu)", (void *)r->p, r->align, r->size);
        bitslab_free_aligned_sized(r->p, r->align, r->size);
    } else if (how >= 1) {
        snprintf(t->op, sizeof t->op, "free_sized(%p, %zu)", (void *)r->p, r->size);
        bitslab_free_sized(r->p, r->size);
    } else {
        snprintf(t->op, sizeof t->op, "free(%p)", (void *)r->p);
        bitslab_free(r->p);
    }
    free(r);
}

/* realloc or reallocarray to a new size; NULL if it freed the block (size 0). */
static fz_rec_t *fz_realloc(fz_thread_t *t, fz_rec_t *r)
{
    size_t size;
    unsigned r100 = (unsigned)fz_below(t, 100);
    if (r100 < 2) size = 0;
    else if (r100 < 30) { /* near the old size: in place or the next class */
        size_t d = fz_below(t, r->size / 4 + 64);
        size = fz_below(t, 2) && r->size > d ? r->size - d : r->size + d;
    } else {
        size = fz_size(t);
    }
    bool array = fz_below(t, 4) == 0;
    size_t elem = array ? (size_t)1 << fz_below(t, 4) : 1, count = size / elem;
    size = count * elem;
    fz_verify(t, r, r->size, r->size);
    fz_shadow_remove(t, r);
    void *q;
    if (array) {
        snprintf(t->op, sizeof t->op, "reallocarray(%p [%zu], %zu, %zu)", (void *)r->p, r->size, count, elem);
        q = bitslab_reallocarray(r->p, count, elem);
    } else {
        snprintf(t->op, sizeof t->op, "realloc(%p [%zu], %zu)", (void *)r->p, r->size, size);
        q = bitslab_realloc(r->p, size);
    }
    if (size == 0) { /* glibc's behaviour: the block is freed, NULL returned */
        if (q) fz_fail(t, "realloc to 0 returned %p, not NULL", q);
        free(r);
        return NULL;
    }
    fz_check_block(t, q, size, 0, array ? "reallocarray" : "realloc");
    size_t old = r->size;
    r->p = q;
    r->align = 0;
    r->aligned_alloc = false;
    fz_verify(t, r, old, size < old ? size : old); /* what the old block's pattern covered */
    r->size = size;
    fz_shadow_insert(t, r);
    fz_fill(t, r);
    return r;
}

/* One operation: take a slot's block (or make one), act on it, put a block back. */
static void fz_step(fz_thread_t *t)
{
    t->ops++;
    unsigned i = (unsigned)fz_below(t, FZ_SLOTS);
    /* Acq_rel: acquire pairs with the release exchange that put the block
     * there (its contents and record are ours now); release publishes the
     * NULL (nothing to order). */
    fz_rec_t *r = atomic_exchange_explicit(&fz_slots[i], NULL, memory_order_acq_rel);
    if (!r) {
        r = fz_alloc(t);
    } else {
        unsigned a = (unsigned)fz_below(t, 100);
        if (a < 45) {
            fz_free(t, r);
            r = NULL;
        } else if (a < 70) {
            r = fz_realloc(t, r);
        } else if (a < 85) {
            snprintf(t->op, sizeof t->op, "usable_size(%p)", (void *)r->p);
            size_t u = bitslab_usable_size(r->p);
            if (u < r->size) fz_fail(t, "usable_size %zu < %zu requested", u, r->size);
            fz_verify(t, r, r->size, r->size);
        } /* else: back as it is, for another thread */
    }
    unsigned rare = (unsigned)fz_below(t, 4096);
    if (rare == 0) {
        snprintf(t->op, sizeof t->op, "collect");
        bitslab_collect();
    } else if (rare == 1) {
        snprintf(t->op, sizeof t->op, "stats");
        bitslab_stats_t st = {.struct_size = sizeof st};
        bitslab_stats(&st); /* the walker, concurrently with everything */
        if (st.committed > st.mapped) fz_fail(t, "committed %zu > mapped %zu", st.committed, st.mapped);
    } else if (rare == 2) {
        snprintf(t->op, sizeof t->op, "free(NULL), usable_size(NULL)");
        bitslab_free(NULL);
        if (bitslab_usable_size(NULL) != 0) fz_fail(t, "usable_size(NULL) != 0");
    }
#if BITSLAB_DEBUG
    if (rare < 64) {
        snprintf(t->op, sizeof t->op, "debug check");
        bitslab_debug_check(); /* the invariant checker, on this thread's heap */
    }
#endif
    if (r) {
        /* Acq_rel: release publishes the block to the next taker; acquire
         * pairs with the exchange that put a block we now displace. */
        fz_rec_t *old = atomic_exchange_explicit(&fz_slots[i], r, memory_order_acq_rel);
        if (old) fz_free(t, old);
    }
}

/* Free every block left in the slots (one thread, at the end). */
static void fz_drain(fz_thread_t *t)
{
    for (unsigned i = 0; i < FZ_SLOTS; i++) {
        /* Acquire: pairs with the release exchange that put it there. */
        fz_rec_t *r = atomic_exchange_explicit(&fz_slots[i], NULL, memory_order_acquire);
        if (r) fz_free(t, r);
    }
}

/* Everything freed, every heap collected: nothing may be left. */
static void fz_check_empty(fz_thread_t *t)
{
    snprintf(t->op, sizeof t->op, "final checks");
    bitslab_collect();
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    if (fz_nshadow) fz_fail(t, "%zu blocks left in the shadow table", fz_nshadow);
    if (st.in_use || st.remote_frees_pending || st.huge_allocations || st.wide_allocations)
        fz_fail(t, "after freeing everything: in_use %zu, remote frees pending %zu, huge %zu, wide %zu", st.in_use,
                st.remote_frees_pending, st.huge_allocations, st.wide_allocations);
    if (st.committed > st.mapped) fz_fail(t, "committed %zu > mapped %zu", st.committed, st.mapped);
}

#endif /* BITSLAB_FUZZ_CORE_H */
