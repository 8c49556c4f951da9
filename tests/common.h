/*
 * common.h: helpers shared by the bitslab unit tests.
 *
 * Every test runs in its own forked process (CK_FORK, forced in run_suite):
 * the tests start from a fresh allocator each time, so statistics compare
 * exactly, and a death test's abort cannot take the rest down with it.
 *
 * The tests only use the prefixed API, so Check itself (and glibc) keep the
 * system malloc and never disturb bitslab's statistics.
 */
#ifndef BITSLAB_TEST_COMMON_H
#define BITSLAB_TEST_COMMON_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitslab.h"
#include "../src/internal.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Hide a constant from the compiler, so that alloc_size warnings about
 * deliberately impossible sizes (SIZE_MAX, ...) do not fire. */
static inline size_t opaque(size_t x)
{
    volatile size_t v = x;
    return v;
}

/* Run the invariant checker of a debug build on the calling thread's heap. */
static inline void debug_check(void)
{
#if BITSLAB_DEBUG
    bitslab_debug_check();
#endif
}

/* ---- byte patterns ------------------------------------------------------- */

static inline unsigned char pattern_byte(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131u + (i >> 8) * 7u + seed * 29u + 1u) & 0xff);
}

static inline void fill_pattern(void *p, size_t n, unsigned seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = pattern_byte(i, seed);
}

/* Index of the first byte that differs from the pattern, or n. */
static inline size_t check_pattern(const void *p, size_t n, unsigned seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != pattern_byte(i, seed)) return i;
    return n;
}

/* Index of the first byte that is not `v`, or n. */
static inline size_t check_bytes(const void *p, size_t n, unsigned char v)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != v) return i;
    return n;
}

/* ---- internals ------------------------------------------------------------ */

static inline uint64_t *test_local_map(slab_t *s) { return slab_local(s); }
static inline _Atomic uint64_t *test_remote_map(slab_t *s) { return slab_remote(s); }

/* A bin is free if its bit is set in its slab's local map or, for the word
 * the owner heap has in its word cache (the calling thread's heap here), in
 * that cache. */
static inline bool test_bin_free(slab_t *s, uint32_t idx)
{
    if ((test_local_map(s)[idx >> 6] >> (idx & 63)) & 1) return true;
    if (s->cached == (idx >> 6)) return (bitslab_tls_heap->cache[s->cls].bits >> (idx & 63)) & 1;
    return false;
}

/* The region registry says bitslab has a superpage at `region`. */
static inline bool test_region_is_superpage(uintptr_t region) { return region_kind_of(region) == REGION_SUPERPAGE; }

/* ---- metadata lookup ----------------------------------------------------- */

static inline superpage_t *sp_of(const void *p) { return (superpage_t *)region_of(p); }

/* The slab of a live block p, by the allocator's own lookup-and-validate
 * (block_lookup, src/lookup.c): a pointer that is not the start of a live
 * small or wide block aborts the test with the allocator's message. */
static inline slab_t *slab_of(const void *p) { return block_lookup(p, "test", MSG_USED_FREED).s; }
/* The slab of a block that may be free already: the first steps of the
 * same lookup (slab_of_addr, as free's fast path does), without the checks. */
static inline slab_t *slab_of_any(const void *p) { return slab_of_addr(region_of(p), (uintptr_t)p); }
/* The same lookup's bin index of p in its slab. */
static inline uint32_t bin_of(const void *p) { return block_lookup(p, "test", MSG_USED_FREED).idx; }

static inline uint8_t slab_kind(const slab_t *s) { return atomic_load_explicit(&s->kind, memory_order_relaxed); }

static inline uint32_t slab_bin_size(const slab_t *s)
{
    return atomic_load_explicit(&s->bin_size, memory_order_relaxed);
}

static inline size_t class_bins(unsigned cls) { return SLAB_SIZE / bitslab_class_size[cls]; }

/* ---- statistics ---------------------------------------------------------- */

static inline bitslab_heap_info_t heap_info(void)
{
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    return hi;
}

static inline bitslab_stats_t stats(void)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    return st;
}

/* Bytes the calling thread holds in small and wide blocks, plus all huge
 * blocks: exact in a single-threaded test. */
static inline size_t live_bytes(void) { return heap_info().bytes_in_use + stats().huge_bytes; }

static inline size_t total_bins_in_use(const bitslab_heap_info_t *hi)
{
    size_t n = 0;
    for (unsigned c = 0; c < BITSLAB_NUM_CLASSES; c++) n += hi->classes[c].bins_in_use;
    return n;
}

/* ---- checks inside helper threads ------------------------------------------
 * Check's assertions are meant for the test's own thread; helper threads
 * record their first failure here and the test thread asserts on it. */

typedef struct thread_failures {
    _Atomic unsigned count;
    _Atomic int claimed;
    char first[256];
} thread_failures_t;

extern thread_failures_t tfail;

#define TCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            atomic_fetch_add(&tfail.count, 1);                                                     \
            if (!atomic_exchange(&tfail.claimed, 1)) {                                             \
                int n_ = snprintf(tfail.first, sizeof tfail.first, "%s:%d: %s: ", __FILE__,        \
                                  __LINE__, #cond);                                                \
                if (n_ > 0 && (size_t)n_ < sizeof tfail.first)                                     \
                    snprintf(tfail.first + n_, sizeof tfail.first - (size_t)n_, __VA_ARGS__);      \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define ASSERT_NO_THREAD_FAILURES()                                                                \
    ck_assert_msg(atomic_load(&tfail.count) == 0, "%u failure(s) in helper threads, first: %s",   \
                  atomic_load(&tfail.count), tfail.first)

/* Start a thread or fail the test. */
static inline pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    ck_assert_msg(rc == 0, "pthread_create: %s", strerror(rc));
    return t;
}

static inline void *join(pthread_t t)
{
    void *ret = NULL;
    int rc = pthread_join(t, &ret);
    ck_assert_msg(rc == 0, "pthread_join: %s", strerror(rc));
    return ret;
}

/* ---- suite runner ----------------------------------------------------------- */

/* Default per-test timeout in seconds (CK_DEFAULT_TIMEOUT may raise it). */
#define TEST_TIMEOUT 60

static inline TCase *tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, TEST_TIMEOUT);
    return tc;
}

static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    /* Fresh allocator per test, and isolated death tests: always fork. */
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#define DEFINE_THREAD_FAILURES thread_failures_t tfail

#endif /* BITSLAB_TEST_COMMON_H */
