/*
 * test_api.c: every public entry point and its error paths, realloc across
 * classes and paths, alignment, calloc zeroing, usable size, statistics.
 */
#include "common.h"
#include "rss.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

DEFINE_THREAD_FAILURES;

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* ---- malloc / free basics ----------------------------------------------------- */

START_TEST(test_malloc_zero)
{
    void *a = bitslab_malloc(0);
    void *b = bitslab_malloc(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    ck_assert_uint_ge(bitslab_usable_size(a), 1);
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.classes[0].bins_in_use, 2);
    bitslab_free(a);
    bitslab_free(b);
    hi = heap_info();
    ck_assert_uint_eq(hi.classes[0].bins_in_use, 0);
    /* calloc(0, n), calloc(n, 0), aligned and realloc(NULL, 0) give blocks too. */
    void *c = bitslab_calloc(0, 100), *d = bitslab_calloc(100, 0), *e = bitslab_realloc(NULL, 0);
    void *f = bitslab_aligned_alloc(64, 0), *g = bitslab_memalign(4096, 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq((uintptr_t)f % 64, 0);
    ck_assert_uint_eq((uintptr_t)g % 4096, 0);
    bitslab_free(c);
    bitslab_free(d);
    bitslab_free(e);
    bitslab_free(f);
    bitslab_free(g);
    hi = heap_info();
    ck_assert_uint_eq(total_bins_in_use(&hi), 0);
    debug_check();
}
END_TEST

START_TEST(test_free_null)
{
    bitslab_free(NULL);
    bitslab_free_sized(NULL, 0);
    bitslab_free_sized(NULL, 100);
    bitslab_free_aligned_sized(NULL, 64, 64);
    ck_assert_uint_eq(bitslab_usable_size(NULL), 0);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.superpages_total, 0); /* nothing was allocated at all */
    /* ...and after the heap exists. */
    void *p = bitslab_malloc(10);
    bitslab_free(NULL);
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.classes[0].bins_in_use, 1);
    bitslab_free(p);
    debug_check();
}
END_TEST

/* Sizes nobody can have: NULL and ENOMEM, and nothing leaks. */
START_TEST(test_malloc_too_big)
{
    void *warm = bitslab_malloc(1);
    bitslab_stats_t st0 = stats();
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4096, SIZE_MAX - SUPERPAGE_SIZE,
                            (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX - 1,
                            (size_t)PTRDIFF_MAX - 2 * SUPERPAGE_SIZE};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = opaque(sizes[i]);
        errno = 0;
        void *p = bitslab_malloc(n);
        ck_assert_msg(p == NULL, "malloc(%#zx) returned %p", n, p);
        ck_assert_msg(errno == ENOMEM, "malloc(%#zx): errno %d", n, errno);
        errno = 0;
        p = bitslab_calloc(1, n);
        ck_assert_msg(p == NULL && errno == ENOMEM, "calloc(1, %#zx): %p errno %d", n, p, errno);
        errno = 0;
        p = bitslab_realloc(NULL, n);
        ck_assert_msg(p == NULL && errno == ENOMEM, "realloc(NULL, %#zx): %p errno %d", n, p, errno);
        errno = 0;
        p = bitslab_aligned_alloc(64, n);
        ck_assert_msg(p == NULL && errno == ENOMEM, "aligned_alloc(64, %#zx): %p errno %d", n, p, errno);
        errno = 0;
        p = bitslab_aligned_alloc(4 * MiB, n);
        ck_assert_msg(p == NULL && errno == ENOMEM, "aligned_alloc(4M, %#zx): %p errno %d", n, p, errno);
        errno = 0;
        p = bitslab_memalign(256, n);
        ck_assert_msg(p == NULL && errno == ENOMEM, "memalign(256, %#zx): %p errno %d", n, p, errno);
    }
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.mapped, st0.mapped);
    ck_assert_uint_eq(st1.huge_allocations, 0);
    ck_assert_uint_eq(st1.in_use, st0.in_use);
    bitslab_free(warm);
}
END_TEST

START_TEST(test_calloc_overflow)
{
    struct {
        size_t n, size;
    } cases[] = {
        {SIZE_MAX, 2},
        {2, SIZE_MAX},
        {(size_t)1 << 32, (size_t)1 << 32},
        {SIZE_MAX / 2 + 1, 2},
        {SIZE_MAX, SIZE_MAX},
        {((size_t)1 << 62), 4},
        {3, SIZE_MAX / 3 + 1},
        /* No overflow, but more than PTRDIFF_MAX. */
        {(size_t)1 << 62, 2},
        {2, (size_t)PTRDIFF_MAX / 2 + 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        errno = 0;
        void *p = bitslab_calloc(opaque(cases[i].n), opaque(cases[i].size));
        ck_assert_msg(p == NULL, "calloc(%#zx, %#zx) returned %p", cases[i].n, cases[i].size, p);
        ck_assert_msg(errno == ENOMEM, "calloc(%#zx, %#zx): errno %d", cases[i].n, cases[i].size, errno);
        errno = 0;
        p = bitslab_reallocarray(NULL, opaque(cases[i].n), opaque(cases[i].size));
        ck_assert_msg(p == NULL && errno == ENOMEM, "reallocarray(NULL, %#zx, %#zx): %p errno %d", cases[i].n,
                      cases[i].size, p, errno);
    }
    /* Products that fit are fine. */
    void *p = bitslab_calloc(1000, 3);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(check_bytes(p, 3000, 0), 3000);
    bitslab_free(p);
    p = bitslab_calloc(opaque(SIZE_MAX), 0);
    ck_assert_ptr_nonnull(p);
    bitslab_free(p);
}
END_TEST

START_TEST(test_reallocarray)
{
    char *p = bitslab_reallocarray(NULL, 10, 20);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(bitslab_usable_size(p), 200);
    fill_pattern(p, 200, 1);
    size_t usable = bitslab_usable_size(p);
    /* Overflow: NULL, ENOMEM, the old block untouched and still ours. */
    errno = 0;
    void *q = bitslab_reallocarray(p, opaque(SIZE_MAX), 2);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    q = bitslab_reallocarray(p, opaque((size_t)1 << 33), (size_t)1 << 33);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_uint_eq(check_pattern(p, 200, 1), 200);
    ck_assert_uint_eq(bitslab_usable_size(p), usable);
    /* Grow and shrink through it. */
    p = bitslab_reallocarray(p, 1000, 100);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(check_pattern(p, 200, 1), 200);
    ck_assert_uint_ge(bitslab_usable_size(p), 100000);
    p = bitslab_reallocarray(p, 5, 7);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(check_pattern(p, 35, 1), 35);
    /* count * size == 0 frees, like realloc(p, 0). */
    ck_assert_ptr_null(bitslab_reallocarray(p, 0, 7));
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    debug_check();
}
END_TEST

/* A realloc that cannot be satisfied leaves the old block as it was, on every path. */
START_TEST(test_realloc_failure_keeps_block)
{
    const size_t sizes[] = {1, 100, 4000, SMALL_MAX, 100 * KiB, WIDE_MAX, 3 * MiB};
    const size_t bad[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX - 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char *p = bitslab_malloc(sizes[i]);
        ck_assert_ptr_nonnull(p);
        fill_pattern(p, sizes[i], (unsigned)i);
        size_t usable = bitslab_usable_size(p);
        bitslab_stats_t st0 = stats();
        for (size_t j = 0; j < sizeof bad / sizeof *bad; j++) {
            errno = 0;
            void *q = bitslab_realloc(p, opaque(bad[j]));
            ck_assert_msg(q == NULL, "realloc(%zu-byte block, %#zx) returned %p", sizes[i], bad[j], q);
            ck_assert_msg(errno == ENOMEM, "realloc(%zu-byte block, %#zx): errno %d", sizes[i], bad[j], errno);
            ck_assert_uint_eq(check_pattern(p, sizes[i], (unsigned)i), sizes[i]);
            ck_assert_uint_eq(bitslab_usable_size(p), usable);
        }
        bitslab_stats_t st1 = stats();
        ck_assert_uint_eq(st1.in_use, st0.in_use);
        ck_assert_uint_eq(st1.mapped, st0.mapped);
        ck_assert_uint_eq(st1.huge_allocations, st0.huge_allocations);
        /* The block still works. */
        p = bitslab_realloc(p, sizes[i] + 1);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq(check_pattern(p, sizes[i], (unsigned)i), sizes[i]);
        bitslab_free(p);
    }
    ck_assert_uint_eq(live_bytes(), 0);
    debug_check();
}
END_TEST

START_TEST(test_realloc_null_and_zero)
{
    /* realloc(NULL, n) is malloc(n), on every path. */
    const size_t sizes[] = {0, 1, 100, SMALL_MAX, SMALL_MAX + 1, 300 * KiB, 2 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = bitslab_realloc(NULL, sizes[i]);
        ck_assert_ptr_nonnull(p);
        void *m = bitslab_malloc(sizes[i]);
        ck_assert_uint_eq(bitslab_usable_size(p), bitslab_usable_size(m));
        memset(p, 1, sizes[i]);
        bitslab_free(m);
        ck_assert_uint_gt(live_bytes(), 0);
        /* realloc(p, 0) frees p and returns NULL (glibc). */
        errno = 0;
        void *r = bitslab_realloc(p, 0);
        ck_assert_ptr_null(r);
        bitslab_stats_t st = stats();
        ck_assert_msg(live_bytes() == 0, "size %zu: %zu bytes still in use after realloc(p, 0)", sizes[i], live_bytes());
        ck_assert_uint_eq(st.huge_allocations, 0);
        ck_assert_uint_eq(st.wide_allocations, 0);
    }
    /* The freed small block is free again (in its slab's bitmap or the word cache). */
    void *a = bitslab_malloc(48);
    ck_assert_uint_eq(heap_info().classes[2].bins_in_use, 1);
    ck_assert_ptr_null(bitslab_realloc(a, 0));
    ck_assert_uint_eq(heap_info().classes[2].bins_in_use, 0);
    slab_t *s = slab_of_any(a); /* a is free: the lookup would report it */
    uint32_t bin = (uint32_t)(((char *)a - s->data) / 48);
    ck_assert(test_bin_free(s, bin));
    debug_check();
}
END_TEST

START_TEST(test_posix_memalign_errors)
{
    const size_t bad_align[] = {0, 1, 2, 3, 4, 6, 12, 24, 40, 48, 96, 100, 4097, 3 * 4096,
                                (size_t)1 << 63 | 8, SIZE_MAX};
    void *sentinel = (void *)(uintptr_t)0xdeadbeef0;
    for (size_t i = 0; i < sizeof bad_align / sizeof *bad_align; i++) {
        void *out = sentinel;
        errno = 1234;
        int rc = bitslab_posix_memalign(&out, opaque(bad_align[i]), 64);
        ck_assert_msg(rc == EINVAL, "posix_memalign(align %#zx): %d", bad_align[i], rc);
        ck_assert_ptr_eq(out, sentinel);
        ck_assert_int_eq(errno, 1234);
    }
    const size_t aligns[] = {8, 16, 64, 4096, 1u << 20, 4u << 20};
    const size_t bad_size[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX - 100};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++)
        for (size_t j = 0; j < sizeof bad_size / sizeof *bad_size; j++) {
            void *out = sentinel;
            errno = 1234;
            int rc = bitslab_posix_memalign(&out, aligns[i], opaque(bad_size[j]));
            ck_assert_msg(rc == ENOMEM, "posix_memalign(%zu, %#zx): %d", aligns[i], bad_size[j], rc);
            ck_assert_ptr_eq(out, sentinel);
            ck_assert_int_eq(errno, 1234); /* reports through its result only */
        }
    /* Valid calls. */
    void *out = sentinel;
    ck_assert_int_eq(bitslab_posix_memalign(&out, sizeof(void *), 100), 0);
    ck_assert_ptr_ne(out, sentinel);
    ck_assert_uint_eq((uintptr_t)out % sizeof(void *), 0);
    ck_assert_uint_ge(bitslab_usable_size(out), 100);
    bitslab_free(out);
    ck_assert_int_eq(bitslab_posix_memalign(&out, 8192, 0), 0);
    ck_assert_uint_eq((uintptr_t)out % 8192, 0);
    bitslab_free(out);
    ck_assert_uint_eq(live_bytes(), 0);
}
END_TEST

START_TEST(test_aligned_alloc_errors)
{
    const size_t bad_align[] = {0, 3, 5, 6, 24, 48, 100, 4095, 12288, (size_t)1 << 63 | 1, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad_align / sizeof *bad_align; i++) {
        errno = 0;
        void *p = bitslab_aligned_alloc(opaque(bad_align[i]), 64);
        ck_assert_msg(p == NULL, "aligned_alloc(%#zx, 64) returned %p", bad_align[i], p);
        ck_assert_msg(errno == EINVAL, "aligned_alloc(%#zx, 64): errno %d", bad_align[i], errno);
    }
    /* Alignments below the natural 16 are fine. */
    for (size_t a = 1; a <= 16; a <<= 1) {
        void *p = bitslab_aligned_alloc(a, 10);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % a, 0);
        bitslab_free_aligned_sized(p, a, 10);
    }
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(total_bins_in_use(&hi), 0);
}
END_TEST

START_TEST(test_memalign)
{
    /* glibc: a non-power-of-two alignment is rounded up to one. */
    struct {
        size_t align, expect;
    } cases[] = {{3, 4}, {24, 32}, {48, 64}, {100, 128}, {1000, 1024}, {5000, 8192}, {40000, 65536},
                 {0, 1}, {1, 1}, {2, 2}, {64, 64}, {3u << 20, 4u << 20}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (size_t size = 1; size <= 100000; size *= 7) {
            char *p = bitslab_memalign(cases[i].align, size);
            ck_assert_msg(p != NULL, "memalign(%zu, %zu) failed", cases[i].align, size);
            ck_assert_msg((uintptr_t)p % cases[i].expect == 0, "memalign(%zu, %zu) = %p", cases[i].align, size,
                          (void *)p);
            ck_assert_uint_ge(bitslab_usable_size(p), size);
            memset(p, 0xcd, size);
            bitslab_free(p);
        }
    }
    errno = 0;
    ck_assert_ptr_null(bitslab_memalign(opaque(SIZE_MAX), 10));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(bitslab_memalign(opaque(((size_t)1 << 63) + 1), 10));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(bitslab_memalign(64, opaque(SIZE_MAX)));
    ck_assert_int_eq(errno, ENOMEM);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(live_bytes(), 0);
    ck_assert_uint_eq(st.huge_allocations, 0);
}
END_TEST

START_TEST(test_free_sized)
{
    const size_t sizes[] = {1, 100, 5000, SMALL_MAX, 200 * KiB, 5 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = bitslab_malloc(sizes[i]);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_gt(live_bytes(), 0);
        bitslab_free_sized(p, sizes[i]);
        bitslab_stats_t st = stats();
        ck_assert_msg(live_bytes() == 0, "free_sized(%zu): %zu bytes in use", sizes[i], live_bytes());
        /* free_aligned_sized with memory from aligned_alloc. */
        for (size_t a = 16; a <= 4 * MiB; a <<= 3) {
            p = bitslab_aligned_alloc(a, sizes[i]);
            ck_assert_ptr_nonnull(p);
            ck_assert_uint_eq((uintptr_t)p % a, 0);
            bitslab_free_aligned_sized(p, a, sizes[i]);
            st = stats();
            ck_assert_msg(live_bytes() == 0, "free_aligned_sized(align %zu, %zu): %zu bytes in use", a, sizes[i],
                          live_bytes());
            ck_assert_uint_eq(st.huge_allocations, 0);
        }
    }
    debug_check();
}
END_TEST

/* ---- realloc across classes and paths ------------------------------------------ */

/* One block walked through a list of sizes: the common prefix survives every
 * step, then the whole new size is refilled. */
static char *realloc_walk(char *p, size_t *cur, const size_t *sizes, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; i++) {
        size_t want = sizes[i];
        char *q = bitslab_realloc(p, want);
        ck_assert_msg(q != NULL, "realloc(%zu -> %zu) failed", *cur, want);
        size_t keep = *cur < want ? *cur : want;
        size_t bad = check_pattern(q, keep, *seed);
        ck_assert_msg(bad == keep, "realloc(%zu -> %zu): byte %zu lost", *cur, want, bad);
        ck_assert_msg(bitslab_usable_size(q) >= want, "realloc(%zu -> %zu): usable %zu", *cur, want,
                      bitslab_usable_size(q));
        (*seed)++;
        fill_pattern(q, want, *seed);
        p = q;
        *cur = want;
    }
    return p;
}

START_TEST(test_realloc_every_boundary)
{
    /* Up through every class edge (size and size + 1), into wide, into huge;
     * then back down. */
    static size_t up[2 * NUM_CLASSES + 32];
    size_t n = 0;
    up[n++] = 1;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        up[n++] = bitslab_class_size[c];
        up[n++] = bitslab_class_size[c] + 1; /* next class, or wide after 32 KiB */
    }
    const size_t big[] = {48 * KiB, 64 * KiB, 64 * KiB + 1, 200 * KiB, 512 * KiB + 3, WIDE_MAX - 1, WIDE_MAX,
                          WIDE_MAX + 1, 1536 * KiB, 2 * MiB, 2 * MiB + 1, 5 * MiB, 9 * MiB + 123};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) up[n++] = big[i];
    static size_t down[2 * NUM_CLASSES + 32];
    for (size_t i = 0; i < n; i++) down[i] = up[n - 1 - i];

    size_t cur = 0;
    unsigned seed = 0;
    char *p = realloc_walk(NULL, &cur, up, n, &seed);
    p = realloc_walk(p, &cur, down, n, &seed);
    /* Jumps: small <-> huge, small <-> wide, wide <-> huge. */
    const size_t jumps[] = {10, 7 * MiB, 20, 300 * KiB, 30, 3 * MiB, 900 * KiB, 2 * MiB + 5, 40 * KiB, 17, 0 + 1};
    p = realloc_walk(p, &cur, jumps, sizeof jumps / sizeof *jumps, &seed);
    bitslab_free(p);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(live_bytes(), 0);
    ck_assert_uint_eq(st.huge_allocations, 0);
    ck_assert_uint_eq(st.huge_bytes, 0);
    ck_assert_uint_eq(st.wide_allocations, 0);
    debug_check();
}
END_TEST

/* Between bins of one class and its neighbours, with other live blocks
 * around: a block growing within its bin stays put. */
START_TEST(test_realloc_between_bins)
{
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t sz = bitslab_class_size[c];
        char *before = bitslab_malloc(sz);
        char *p = bitslab_malloc(c ? bitslab_class_size[c - 1] + 1 : 1);
        char *after = bitslab_malloc(sz);
        fill_pattern(before, sz, 100);
        fill_pattern(after, sz, 101);
        size_t cur = c ? bitslab_class_size[c - 1] + 1 : 1;
        fill_pattern(p, cur, 7);
        char *q = bitslab_realloc(p, sz); /* same bin */
        ck_assert_ptr_eq(q, p);
        ck_assert_uint_eq(check_pattern(q, cur, 7), cur);
        fill_pattern(q, sz, 8);
        q = bitslab_realloc(q, sz + 1); /* next class or wide */
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq(check_pattern(q, sz, 8), sz);
        ck_assert_uint_gt(bitslab_usable_size(q), sz);
        q = bitslab_realloc(q, sz / 2 ? sz / 2 : 1); /* back down */
        ck_assert_uint_eq(check_pattern(q, sz / 2, 8), sz / 2);
        /* Neighbours untouched. */
        ck_assert_uint_eq(check_pattern(before, sz, 100), sz);
        ck_assert_uint_eq(check_pattern(after, sz, 101), sz);
        bitslab_free(q);
        bitslab_free(before);
        bitslab_free(after);
    }
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    debug_check();
}
END_TEST

/* Many blocks resized at random at once, contents checked each step. */
START_TEST(test_realloc_random)
{
    enum { N = 64 };
    char *blk[N] = {0};
    size_t len[N] = {0};
    unsigned seed[N] = {0};
    uint64_t x = 12345;
    for (int step = 0; step < 3000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int i = (int)(x % N);
        size_t want;
        unsigned r = (unsigned)(x >> 32) % 100;
        if (r < 70) want = (x >> 40) % 2048;
        else if (r < 90) want = (x >> 40) % (40 * KiB);
        else if (r < 98) want = (x >> 30) % (1200 * KiB);
        else want = (x >> 30) % (6 * MiB);
        if (want == 0) want = 1;
        char *q = bitslab_realloc(blk[i], want);
        ck_assert_ptr_nonnull(q);
        size_t keep = len[i] < want ? len[i] : want;
        ck_assert_msg(check_pattern(q, keep, seed[i]) == keep, "step %d: realloc(%zu -> %zu) lost data", step,
                      len[i], want);
        seed[i] = (unsigned)step;
        fill_pattern(q, want, seed[i]);
        blk[i] = q;
        len[i] = want;
    }
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(check_pattern(blk[i], len[i], seed[i]), len[i]);
        bitslab_free(blk[i]);
    }
    ck_assert_uint_eq(live_bytes(), 0);
    debug_check();
}
END_TEST

/* Huge realloc (mremap) keeps the accounting exact: nothing leaks. */
START_TEST(test_realloc_huge_accounting)
{
    bitslab_stats_t st0 = stats();
    const size_t sizes[] = {2 * MiB, 5 * MiB, 3 * MiB, 16 * MiB, 1536 * KiB, 33 * MiB + 7, 1 * MiB + 1};
    /* Two blocks, so that growth sometimes has to move. */
    char *a = bitslab_malloc(sizes[0]), *b = bitslab_malloc(sizes[0]);
    size_t la = sizes[0], lb = sizes[0];
    fill_pattern(a, la, 1);
    fill_pattern(b, lb, 2);
    for (size_t i = 1; i < sizeof sizes / sizeof *sizes; i++) {
        a = bitslab_realloc(a, sizes[i]);
        ck_assert_ptr_nonnull(a);
        size_t keep = la < sizes[i] ? la : sizes[i];
        ck_assert_uint_eq(check_pattern(a, keep, (unsigned)i), keep);
        la = sizes[i];
        fill_pattern(a, la, (unsigned)i + 1);
        size_t nb = sizes[sizeof sizes / sizeof *sizes - i];
        b = bitslab_realloc(b, nb);
        ck_assert_ptr_nonnull(b);
        keep = lb < nb ? lb : nb;
        ck_assert_uint_eq(check_pattern(b, keep, (unsigned)i + 1), keep);
        lb = nb;
        fill_pattern(b, lb, (unsigned)i + 2);

        bitslab_stats_t st = stats();
        ck_assert_uint_eq(st.huge_allocations, 2);
        ck_assert_uint_ge(st.huge_bytes, bitslab_usable_size(a) + bitslab_usable_size(b));
        ck_assert_uint_le(st.huge_bytes, bitslab_usable_size(a) + bitslab_usable_size(b) + 2 * SUPERPAGE_SIZE);
        ck_assert_uint_eq(st.mapped, st0.mapped + st.huge_bytes);
        /* At least what was asked; at most 5/4 of it (the room a growth
         * leaves, which a small shrink keeps). */
        size_t map = OS_PAGE + round_up(la, OS_PAGE);
        ck_assert_uint_ge(bitslab_usable_size(a), round_up(la, OS_PAGE));
        ck_assert_uint_le(bitslab_usable_size(a) + OS_PAGE, round_up(map + map / 4, OS_PAGE));
    }
    bitslab_free(a);
    bitslab_free(b);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.huge_allocations, 0);
    ck_assert_uint_eq(st.huge_bytes, 0);
    bitslab_collect(); /* freed huge mappings may be kept for reuse until a collect */
    st = stats();
    ck_assert_uint_eq(st.mapped, st0.mapped);
    ck_assert_uint_eq(st.committed, st0.committed);
}
END_TEST

/* ---- alignment -------------------------------------------------------------------- */

static void check_aligned_block(void *p, size_t align, size_t size, const char *fn)
{
    ck_assert_msg(p != NULL, "%s(%zu, %zu) failed", fn, align, size);
    ck_assert_msg((uintptr_t)p % align == 0, "%s(%zu, %zu) = %p: misaligned", fn, align, size, p);
    size_t usable = bitslab_usable_size(p);
    ck_assert_msg(usable >= size, "%s(%zu, %zu): usable %zu", fn, align, size, usable);
    memset(p, 0xa5, usable);
    if (usable) ck_assert_uint_eq(((unsigned char *)p)[usable - 1], 0xa5);
}

START_TEST(test_alignment_every_power)
{
    const size_t sizes[] = {0, 1, 100, 3000, SMALL_MAX, 200 * KiB, WIDE_MAX, 3 * MiB + 100};
    for (size_t align = 1; align <= 64 * MiB; align <<= 1) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t size = sizes[i];
            void *p = bitslab_aligned_alloc(align, size);
            check_aligned_block(p, align, size, "aligned_alloc");
            void *m = bitslab_memalign(align, size);
            check_aligned_block(m, align, size, "memalign");
            void *q = NULL;
            if (align >= sizeof(void *)) {
                ck_assert_int_eq(bitslab_posix_memalign(&q, align, size), 0);
                check_aligned_block(q, align, size, "posix_memalign");
            }
            ck_assert_ptr_ne(p, m);
            bitslab_free_aligned_sized(p, align, size);
            bitslab_free(m);
            bitslab_free(q);
            bitslab_stats_t st = stats();
            ck_assert_msg(live_bytes() == 0 && st.huge_allocations == 0,
                          "align %zu size %zu: %zu bytes, %zu huge blocks left", align, size, live_bytes(),
                          st.huge_allocations);
        }
        debug_check();
    }
}
END_TEST

/* Many aligned blocks live at once: distinct, aligned, not overlapping. */
START_TEST(test_alignment_many_live)
{
    enum { N = 200 };
    char *p[N];
    size_t sz[N];
    for (int i = 0; i < N; i++) {
        size_t align = (size_t)1 << (i % 18); /* up to 128 KiB */
        sz[i] = (size_t)(i * 97 % 5000) + 1;
        p[i] = bitslab_aligned_alloc(align, sz[i]);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_uint_eq((uintptr_t)p[i] % align, 0);
        fill_pattern(p[i], sz[i], (unsigned)i);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(check_pattern(p[i], sz[i], (unsigned)i), sz[i]);
        bitslab_free(p[i]);
    }
    ck_assert_uint_eq(live_bytes(), 0);
    debug_check();
}
END_TEST

/* ---- calloc zeroes reused memory ------------------------------------------------ */

/* Every bin of a slab dirtied and freed, then calloc'd again (three ways). */
START_TEST(test_calloc_reuse_small)
{
    static unsigned char *blk[4096];
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t sz = bitslab_class_size[c], nb = class_bins(c);
        for (size_t i = 0; i < nb; i++) {
            blk[i] = bitslab_malloc(sz);
            memset(blk[i], 0xAA, sz);
        }
        slab_t *s = slab_of(blk[0]);
        ck_assert_ptr_eq(slab_of(blk[nb - 1]), s);
        for (int round = 0; round < 3; round++) {
            for (size_t i = 0; i < nb; i++) bitslab_free(blk[i]);
            size_t cnt = round == 1 && sz >= 64 ? 4 : 1;
            size_t want = round == 2 ? (c ? bitslab_class_size[c - 1] + 1 : 1) : sz;
            for (size_t i = 0; i < nb; i++) {
                blk[i] = round == 1 ? bitslab_calloc(cnt, sz / cnt) : bitslab_calloc(want, 1);
                ck_assert_msg(slab_of(blk[i]) == s, "class %u: calloc did not reuse the dirty slab", c);
                size_t bad = check_bytes(blk[i], want, 0);
                ck_assert_msg(bad == want, "class %u round %d: calloc'd bin %td byte %zu not zero", c, round,
                              ((char *)blk[i] - s->data) / (ptrdiff_t)sz, bad);
                memset(blk[i], 0xAA, sz);
            }
        }
        for (size_t i = 0; i < nb; i++) bitslab_free(blk[i]);
    }
    debug_check();
}
END_TEST

/* A whole dirty slab reconfigured for another class: every calloc'd bin is zero. */
START_TEST(test_calloc_reuse_reconfigured_slab)
{
    void *keep = bitslab_malloc(SMALL_MAX); /* keeps the superpage owned */
    const unsigned A = 17, B = 6;           /* 768 B, 112 B */
    size_t na = class_bins(A), nb = class_bins(B);
    void *a[128] = {0};
    ck_assert_uint_le(na, 128);
    for (size_t i = 0; i < na; i++) {
        a[i] = bitslab_malloc(bitslab_class_size[A]);
        memset(a[i], 0xAA, bitslab_class_size[A]);
    }
    slab_t *s = slab_of(a[0]);
    for (size_t i = 0; i < na; i++) bitslab_free(a[i]);
    bitslab_collect();
    ck_assert_uint_eq(slab_kind(s), SLAB_FREE);
    static void *b[1024];
    for (size_t i = 0; i < nb; i++) {
        b[i] = bitslab_calloc(1, bitslab_class_size[B]);
        ck_assert_ptr_eq(slab_of(b[i]), s);
        ck_assert_msg(check_bytes(b[i], bitslab_class_size[B], 0) == bitslab_class_size[B], "bin %zu not zero", i);
    }
    for (size_t i = 0; i < nb; i++) bitslab_free(b[i]);
    /* The same slab as a wide block, calloc'd. */
    bitslab_collect();
    unsigned char *w = bitslab_calloc(1, SMALL_MAX + 1);
    ck_assert_ptr_eq(slab_of(w), s);
    ck_assert_uint_eq(check_bytes(w, SMALL_MAX + 1, 0), SMALL_MAX + 1);
    bitslab_free(w);
    bitslab_free(keep);
    debug_check();
}
END_TEST

START_TEST(test_calloc_reuse_wide_huge)
{
    const size_t sizes[] = {SMALL_MAX + 1, 100 * KiB, 300 * KiB, WIDE_MAX, WIDE_MAX + 1, 4 * MiB + 10};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t sz = sizes[i];
        unsigned char *p = bitslab_malloc(sz);
        ck_assert_ptr_nonnull(p);
        memset(p, 0xAA, bitslab_usable_size(p));
        bitslab_free(p);
        unsigned char *q = bitslab_calloc(1, sz);
        ck_assert_ptr_nonnull(q);
        ck_assert_msg(check_bytes(q, sz, 0) == sz, "calloc(%zu): byte %zu not zero", sz, check_bytes(q, sz, 0));
        memset(q, 0xAA, sz);
        bitslab_free(q);
        q = bitslab_calloc(sz / 8 + 1, 8);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq(check_bytes(q, sz / 8 * 8 + 8, 0), sz / 8 * 8 + 8);
        bitslab_free(q);
    }
    /* Small slabs dirtied, freed, then taken by a wide calloc: the run of
     * FREE slabs whose pages are still committed is the one preferred
     * (superpage_take_slabs), so it is those dirty slabs. (The fifth slab
     * stays the active one, empty.) */
    void *keep = bitslab_malloc(16);
    void *blocks[10];
    for (int i = 0; i < 10; i++) {
        blocks[i] = bitslab_malloc(SMALL_MAX);
        memset(blocks[i], 0xAA, SMALL_MAX);
    }
    for (int i = 0; i < 10; i++) bitslab_free(blocks[i]);
    unsigned char *w = bitslab_calloc(4, SLAB_SIZE);
    ck_assert_ptr_eq(w, slab_of(blocks[0])->data);
    ck_assert_uint_eq(check_bytes(w, 4 * SLAB_SIZE, 0), 4 * SLAB_SIZE);
    bitslab_free(w);
    bitslab_free(keep);
    debug_check();
}
END_TEST

/* Memory that went back to the OS (decommitted superpage) and came back. */
START_TEST(test_calloc_after_decommit)
{
    unsigned char *p = bitslab_malloc(1000);
    memset(p, 0xAA, 1000);
    unsigned char *w = bitslab_malloc(200 * KiB);
    memset(w, 0xAA, 200 * KiB);
    bitslab_free(p);
    bitslab_free(w);
    bitslab_collect(); /* the superpage goes to the orphanage, decommitted */
    ck_assert_uint_eq(stats().superpages_orphaned, 1);
    unsigned char *q = bitslab_calloc(1, 1000);
    ck_assert_ptr_eq(sp_of(q), sp_of(p));
    ck_assert_uint_eq(check_bytes(q, 1000, 0), 1000);
    unsigned char *v = bitslab_calloc(1, 200 * KiB);
    ck_assert_ptr_eq(sp_of(v), sp_of(p));
    ck_assert_uint_eq(check_bytes(v, 200 * KiB, 0), 200 * KiB);
    bitslab_free(q);
    bitslab_free(v);
}
END_TEST

/* ---- statistics ------------------------------------------------------------------ */

START_TEST(test_stats_small_per_class)
{
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.superpages, 0);
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    for (unsigned c = 0; c < NUM_CLASSES; c++) ck_assert_uint_eq(hi.classes[c].bin_size, bitslab_class_size[c]);
    static void *blocks[NUM_CLASSES][100];
    size_t expect_bytes = 0;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t k = 3 + c * 2;
        bitslab_heap_info_t before = heap_info();
        for (size_t i = 0; i < k; i++) blocks[c][i] = bitslab_malloc(bitslab_class_size[c] - (i % 2));
        bitslab_heap_info_t after = heap_info();
        for (unsigned d = 0; d < NUM_CLASSES; d++) {
            size_t want = before.classes[d].bins_in_use + (d == c ? k : 0);
            ck_assert_msg(after.classes[d].bins_in_use == want, "after %zu mallocs of class %u: class %u has %zu bins in use, expected %zu", k, c, d, after.classes[d].bins_in_use, want);
            ck_assert_uint_eq(after.classes[d].bytes_in_use, want * bitslab_class_size[d]);
        }
        ck_assert_uint_ge(after.classes[c].bins_total, k);
        ck_assert_uint_eq(after.classes[c].bins_total, after.classes[c].slabs * class_bins(c));
        expect_bytes += k * bitslab_class_size[c];
        ck_assert_uint_eq(after.bytes_in_use, expect_bytes);
        /* The process figures are exact once the thread's caches are back. */
        bitslab_collect();
        bitslab_stats_t st = stats();
        ck_assert_uint_eq(st.in_use, expect_bytes);
        ck_assert_uint_eq(st.classes[c].bins_in_use, k);
        ck_assert_uint_eq(heap_info().bytes_in_use, expect_bytes);
    }
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t k = 3 + c * 2;
        for (size_t i = 0; i < k; i++) bitslab_free(blocks[c][i]);
        expect_bytes -= k * bitslab_class_size[c];
        hi = heap_info();
        ck_assert_uint_eq(hi.classes[c].bins_in_use, 0);
        ck_assert_uint_eq(hi.classes[c].bytes_in_use, 0);
        ck_assert_uint_eq(hi.bytes_in_use, expect_bytes);
    }
    hi = heap_info();
    ck_assert_uint_eq(hi.remote_frees_pending, 0);
    bitslab_collect();
    hi = heap_info();
    ck_assert_uint_eq(hi.slabs_small, 0);
    ck_assert_uint_eq(hi.superpages, 0);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.superpages_owned, 0);
    ck_assert_uint_eq(st.superpages_orphaned, st.superpages_total);
    ck_assert_uint_eq(st.heaps_total, 1);
    ck_assert_uint_eq(st.heaps_abandoned, 0);
    debug_check();
}
END_TEST

START_TEST(test_stats_wide_huge)
{
    bitslab_stats_t st0 = stats();
    void *w1 = bitslab_malloc(100 * KiB);  /* 2 slabs */
    void *w2 = bitslab_malloc(WIDE_MAX);   /* 16 slabs */
    void *h1 = bitslab_malloc(3 * MiB);
    void *h2 = bitslab_malloc(WIDE_MAX + 1);
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.wide_allocations, 2);
    ck_assert_uint_eq(hi.wide_bytes, 18 * SLAB_SIZE);
    ck_assert_uint_eq(hi.slabs_wide, 18);
    ck_assert_uint_eq(hi.bytes_in_use, 18 * SLAB_SIZE);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.wide_allocations, 2);
    ck_assert_uint_eq(st.wide_bytes, 18 * SLAB_SIZE);
    ck_assert_uint_eq(st.huge_allocations, 2);
    size_t hb = bitslab_usable_size(h1) + bitslab_usable_size(h2);
    ck_assert_uint_ge(st.huge_bytes, hb);
    ck_assert_uint_le(st.huge_bytes, hb + 2 * OS_PAGE);
    ck_assert_uint_eq(st.in_use, 18 * SLAB_SIZE + st.huge_bytes);
    ck_assert_uint_ge(st.mapped, st0.mapped + st.huge_bytes + SUPERPAGE_SIZE);
    bitslab_free(h1);
    st = stats();
    ck_assert_uint_eq(st.huge_allocations, 1);
    ck_assert_uint_ge(st.huge_bytes, bitslab_usable_size(h2));
    ck_assert_uint_le(st.huge_bytes, bitslab_usable_size(h2) + OS_PAGE);
    bitslab_free(w2);
    hi = heap_info();
    ck_assert_uint_eq(hi.wide_allocations, 1);
    ck_assert_uint_eq(hi.wide_bytes, 2 * SLAB_SIZE);
    bitslab_free(h2);
    bitslab_free(w1);
    st = stats();
    ck_assert_uint_eq(st.huge_allocations, 0);
    ck_assert_uint_eq(st.huge_bytes, 0);
    ck_assert_uint_eq(st.wide_allocations, 0);
    ck_assert_uint_eq(st.wide_bytes, 0);
    ck_assert_uint_eq(st.in_use, 0);
    debug_check();
}
END_TEST

/* The word cache's free bins are not in use: malloc(100) loads a word of
 * 64 bins of 112 B, realloc to 1000 B loads one of 64 bins of 1 KiB and frees
 * the 112 B block back into its word. Only 1 KiB is live (the old figures
 * counted both words whole: 72,704 bytes). */
START_TEST(test_stats_in_use_exact_after_realloc)
{
    void *p = bitslab_malloc(100);
    p = bitslab_realloc(p, 1000);
    ck_assert_ptr_nonnull(p);
    const unsigned c112 = size_class(100), c1k = size_class(1000);
    bitslab_stats_t st = stats();
    ck_assert_uint_eq(st.in_use, 1024);
    ck_assert_uint_eq(st.classes[c1k].bins_in_use, 1);
    ck_assert_uint_eq(st.classes[c1k].bytes_in_use, 1024);
    ck_assert_uint_eq(st.classes[c112].bins_in_use, 0);
    ck_assert_uint_eq(st.classes[c112].bins_cached, 64);
    ck_assert_uint_eq(st.classes[c1k].bins_cached, 63);
    ck_assert_uint_eq(st.cached, 64 * 112 + 63 * 1024);
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        const bitslab_class_stats_t *cs = &st.classes[c];
        ck_assert_uint_eq(cs->bins_total, cs->bins_in_use + cs->bins_cached + cs->bins_pending + cs->bins_free);
        ck_assert_uint_eq(cs->waste, cs->slabs * SLAB_SIZE - cs->bytes_in_use);
    }
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(hi.bytes_in_use, 1024);
    ck_assert_uint_eq(hi.bytes_cached, st.cached);
    ck_assert_uint_eq(hi.classes[c112].bins_cached, 64);
    bitslab_free(p);
    ck_assert_uint_eq(stats().in_use, 0);
    ck_assert_uint_eq(stats().cached, 64 * 112 + 64 * 1024);
    bitslab_collect(); /* the words go back to their slabs, the slabs to the superpage */
    st = stats();
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.cached, 0);
    debug_check();
}
END_TEST

/* struct_size: the library fills whole fields up to the smaller of the two
 * sizes, says how much it filled, and never writes past it. */
START_TEST(test_stats_struct_size)
{
    void *p = bitslab_malloc(64);
    union {
        bitslab_stats_t st;
        unsigned char bytes[sizeof(bitslab_stats_t) + 64];
    } u;
    /* An old caller that knows the first two fields only. */
    memset(&u, 0xAB, sizeof u);
    u.st.struct_size = offsetof(bitslab_stats_t, committed);
    bitslab_stats(&u.st);
    ck_assert_uint_eq(u.st.struct_size, offsetof(bitslab_stats_t, committed));
    ck_assert_uint_eq(u.st.mapped, stats().mapped);
    ck_assert_uint_ge(u.st.mapped, SUPERPAGE_SIZE);
    for (size_t i = offsetof(bitslab_stats_t, committed); i < sizeof u; i++)
        ck_assert_msg(u.bytes[i] == 0xAB, "byte %zu written past struct_size", i);
    /* A size that ends inside a field: that field is not written. */
    memset(&u, 0xAB, sizeof u);
    u.st.struct_size = offsetof(bitslab_stats_t, committed) + 3;
    bitslab_stats(&u.st);
    ck_assert_uint_eq(u.st.struct_size, offsetof(bitslab_stats_t, committed));
    for (size_t i = offsetof(bitslab_stats_t, committed); i < sizeof u; i++) ck_assert_uint_eq(u.bytes[i], 0xAB);
    /* A newer caller with a bigger struct: the rest is left alone. */
    memset(&u, 0xAB, sizeof u);
    u.st.struct_size = sizeof u;
    bitslab_stats(&u.st);
    ck_assert_uint_eq(u.st.struct_size, sizeof(bitslab_stats_t));
    ck_assert_uint_eq(u.st.in_use, 64);
    ck_assert_uint_eq(u.st.classes[NUM_CLASSES - 1].bin_size, SMALL_MAX);
    for (size_t i = sizeof(bitslab_stats_t); i < sizeof u; i++) ck_assert_uint_eq(u.bytes[i], 0xAB);
    /* Forgotten: nothing written, EINVAL. */
    memset(&u, 0xAB, sizeof u);
    u.st.struct_size = 0;
    errno = 0;
    bitslab_stats(&u.st);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_uint_eq(u.st.struct_size, 0);
    for (size_t i = sizeof(size_t); i < sizeof u; i++) ck_assert_uint_eq(u.bytes[i], 0xAB);
    /* The same rules for bitslab_heap_info. */
    union {
        bitslab_heap_info_t hi;
        unsigned char bytes[sizeof(bitslab_heap_info_t) + 64];
    } v;
    memset(&v, 0xAB, sizeof v);
    v.hi.struct_size = offsetof(bitslab_heap_info_t, slabs_small);
    bitslab_heap_info(&v.hi);
    ck_assert_uint_eq(v.hi.struct_size, offsetof(bitslab_heap_info_t, slabs_small));
    ck_assert_uint_eq(v.hi.superpages, 1);
    for (size_t i = offsetof(bitslab_heap_info_t, slabs_small); i < sizeof v; i++) ck_assert_uint_eq(v.bytes[i], 0xAB);
    memset(&v, 0xAB, sizeof v);
    v.hi.struct_size = sizeof v;
    bitslab_heap_info(&v.hi);
    ck_assert_uint_eq(v.hi.struct_size, sizeof(bitslab_heap_info_t));
    ck_assert_uint_eq(v.hi.bytes_in_use, 64);
    for (size_t i = sizeof(bitslab_heap_info_t); i < sizeof v; i++) ck_assert_uint_eq(v.bytes[i], 0xAB);
    v.hi.struct_size = sizeof(size_t) - 1;
    errno = 0;
    bitslab_heap_info(&v.hi);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_uint_eq(v.hi.struct_size, sizeof(size_t) - 1);
    bitslab_free(p);
}
END_TEST

/* Another live thread's word cache: known as of its last slow path. */
static pthread_barrier_t cache_barrier;
static void *cache_blocks[3];

static void *cache_owner(void *arg)
{
    (void)arg;
    cache_blocks[0] = bitslab_malloc(64);   /* slow path: loads a word of 64 bins, hands out one */
    cache_blocks[1] = bitslab_malloc(64);   /* fast path */
    cache_blocks[2] = bitslab_malloc(1000); /* slow path: a word of 64 bins of 1 KiB */
    pthread_barrier_wait(&cache_barrier);   /* 1: main reads the figures */
    pthread_barrier_wait(&cache_barrier);   /* 2: main is done reading */
    bitslab_free(cache_blocks[1]);          /* fast path: back into the word cache */
    bitslab_free(cache_blocks[2]);
    pthread_barrier_wait(&cache_barrier);   /* 3 */
    pthread_barrier_wait(&cache_barrier);   /* 4 */
    bitslab_collect();                      /* the words go back to the slabs: figures exact again */
    pthread_barrier_wait(&cache_barrier);   /* 5 */
    pthread_barrier_wait(&cache_barrier);   /* 6: stay alive until main has read */
    bitslab_free(cache_blocks[0]);
    return NULL;
}

START_TEST(test_stats_other_thread_cache)
{
    pthread_barrier_init(&cache_barrier, NULL, 2);
    pthread_t t = spawn(cache_owner, NULL);
    pthread_barrier_wait(&cache_barrier); /* 1 */
    bitslab_stats_t st = stats();         /* the main thread has no heap: every figure is another thread's */
    /* Published at the slow path: the 64 B class took one more bin since
     * (fast path), which still reads as cached. */
    ck_assert_uint_eq(st.classes[3].bins_in_use, 1);
    ck_assert_uint_eq(st.classes[3].bins_cached, 63);
    ck_assert_uint_eq(st.classes[19].bins_in_use, 1);
    ck_assert_uint_eq(st.classes[19].bins_cached, 63);
    ck_assert_uint_eq(st.in_use, 64 + 1024);
    ck_assert_uint_eq(st.cached, 63 * 64 + 63 * 1024);
    pthread_barrier_wait(&cache_barrier); /* 2 */
    pthread_barrier_wait(&cache_barrier); /* 3 */
    /* Freed by the owner into its word cache, which no other thread can
     * read: the 1 KiB block still reads as in use (the documented
     * approximation: at most 64 bins per class and thread). */
    st = stats();
    ck_assert_uint_eq(st.classes[3].bins_in_use, 1);
    ck_assert_uint_eq(st.classes[19].bins_in_use, 1);
    pthread_barrier_wait(&cache_barrier); /* 4 */
    pthread_barrier_wait(&cache_barrier); /* 5 */
    st = stats();
    ck_assert_uint_eq(st.in_use, 64);
    ck_assert_uint_eq(st.cached, 0);
    ck_assert_uint_eq(st.classes[3].bins_in_use, 1);
    ck_assert_uint_eq(st.classes[3].bins_free, class_bins(3) - 1);
    ck_assert_uint_eq(st.classes[19].slabs, 0);
    pthread_barrier_wait(&cache_barrier); /* 6 */
    join(t);
    pthread_barrier_destroy(&cache_barrier);
}
END_TEST

/* ---- bitslab_stats_print ------------------------------------------------------ */

typedef struct capture {
    char text[64 * 1024];
    size_t len, chunks;
    bool bad_chunk; /* a chunk that was empty, too long or not a whole line */
} capture_t;

static capture_t cap;

static void capture_out(const char *msg, void *arg)
{
    capture_t *c = arg;
    size_t n = strlen(msg);
    if (n == 0 || n >= 1024 || msg[n - 1] != '\n') c->bad_chunk = true;
    ck_assert_uint_lt(c->len + n, sizeof c->text);
    memcpy(c->text + c->len, msg, n + 1);
    c->len += n;
    c->chunks++;
}

static void capture(int flags)
{
    memset(&cap, 0, sizeof cap);
    bitslab_stats_print(capture_out, &cap, flags);
}

static size_t count_lines(const char *s, const char *prefix)
{
    size_t n = 0;
    for (const char *l = s; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (!strncmp(l, prefix, strlen(prefix))) n++;
    return n;
}

START_TEST(test_stats_print_callback)
{
    void *a = bitslab_malloc(100), *b = bitslab_malloc(5000);
    capture(0);
    ck_assert(!cap.bad_chunk);
    ck_assert_ptr_nonnull(strstr(cap.text, "bitslab " BITSLAB_VERSION_STRING " statistics\n"));
    ck_assert_ptr_nonnull(strstr(cap.text, "  class     bin  slabs     live   cached  pending     free      in use       waste\n"));
    /* One row per class with slabs: 112 B and 5120 B. */
    ck_assert_ptr_nonnull(strstr(cap.text, "\n      6     112      1        1       63        0      521       112 B    63.9 KiB\n"));
    ck_assert_ptr_nonnull(strstr(cap.text, "\n     28    5120      1        1       11        0        0     5.0 KiB    59.0 KiB\n"));
    ck_assert_uint_eq(count_lines(cap.text, "     "), 2);
    capture(BITSLAB_STATS_ALL_CLASSES);
    ck_assert_uint_eq(count_lines(cap.text, "     "), NUM_CLASSES);

    capture(BITSLAB_STATS_JSON);
    ck_assert(!cap.bad_chunk);
    ck_assert_uint_gt(cap.chunks, 1); /* the JSON is longer than one chunk */
    ck_assert_ptr_eq(strstr(cap.text, "{\"schema_version\": 1, "), cap.text);
    char want[64];
    snprintf(want, sizeof want, "\"in_use\": %zu,", stats().in_use);
    ck_assert_ptr_nonnull(strstr(cap.text, want));
    ck_assert_ptr_nonnull(strstr(cap.text, "{\"class\": 28, \"bin_size\": 5120, \"slabs\": 1, \"bins_total\": 12, "
                                           "\"bins_in_use\": 1, \"bins_cached\": 11, \"bins_pending\": 0, "
                                           "\"bins_free\": 0, \"bytes_in_use\": 5120, \"waste\": 60416}"));
    ck_assert_uint_eq(count_lines(cap.text, "  {\"class\": "), NUM_CLASSES);
    ck_assert_str_eq(cap.text + cap.len - 4, " ]}\n");
    bitslab_free(a);
    bitslab_free(b);
}
END_TEST

/* out == NULL: the same text on standard error, through write(2). */
START_TEST(test_stats_print_stderr)
{
    void *a = bitslab_malloc(100);
    capture(BITSLAB_STATS_JSON);
    char path[] = "/tmp/bitslab-stats-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    bitslab_stats_print(NULL, NULL, BITSLAB_STATS_JSON);
    dup2(saved, 2);
    close(saved);
    static char got[sizeof cap.text];
    ssize_t n = pread(fd, got, sizeof got - 1, 0);
    close(fd);
    ck_assert_int_eq(n, (ssize_t)cap.len);
    got[n] = '\0';
    ck_assert_str_eq(got, cap.text);
    bitslab_free(a);
}
END_TEST

START_TEST(test_version)
{
    ck_assert_int_eq(BITSLAB_VERSION_MAJOR, 0);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", BITSLAB_VERSION_MAJOR, BITSLAB_VERSION_MINOR, BITSLAB_VERSION_PATCH);
    ck_assert_str_eq(buf, BITSLAB_VERSION_STRING);
    /* The library's version (meson.build's) matches the header's. */
    ck_assert_str_eq(bitslab_version(), BITSLAB_VERSION_STRING);
    ck_assert_int_eq(BITSLAB_VERSION_NUMBER,
                     BITSLAB_VERSION_MAJOR * 10000 + BITSLAB_VERSION_MINOR * 100 + BITSLAB_VERSION_PATCH);
    ck_assert_int_eq(bitslab_version_number(), BITSLAB_VERSION_NUMBER);
}
END_TEST

/* ---- the huge cache: freed mappings stay committed for a while ------------- */

/* Resident bytes of [p, p + len), by mincore (reads no memory). */
static size_t resident_bytes(uintptr_t p, size_t len)
{
    static unsigned char vec[(64 * MiB) / OS_PAGE];
    ck_assert_uint_le(len, 64 * MiB);
    ck_assert_int_eq(mincore((void *)p, len, vec), 0);
    size_t n = 0;
    for (size_t i = 0; i < (len + OS_PAGE - 1) / OS_PAGE; i++) n += vec[i] & 1;
    return n * OS_PAGE;
}

/* The cached mapping whose header is at region_of(p): its index in the
 * snapshot, or -1. */
typedef struct cache_view {
    uintptr_t addr[64];
    size_t len[64];
    bool dirty[64];
    unsigned n;
} cache_view_t;

static cache_view_t cache_view(void)
{
    cache_view_t v;
    v.n = huge_cache_contents(v.addr, v.len, v.dirty, 64);
    return v;
}

static int cache_find(const cache_view_t *v, const void *p)
{
    for (unsigned i = 0; i < v->n; i++)
        if (v->addr[i] == region_of(p)) return (int)i;
    return -1;
}

static size_t cache_dirty_bytes(const cache_view_t *v)
{
    size_t n = 0;
    for (unsigned i = 0; i < v->n; i++) n += v->dirty[i] ? v->len[i] - OS_PAGE : 0;
    return n;
}

static void set_purge_delay(int32_t ms)
{
    /* Relaxed: the option's own order (options.c); this test is one thread. */
    atomic_store_explicit(&bitslab_purge_delay_ms, ms, memory_order_relaxed);
}

static void touch_pages(unsigned char *p, size_t n, unsigned char v)
{
    for (size_t off = 0; off < n; off += OS_PAGE) p[off] = v;
    p[n - 1] = v;
}

/* Wait until the clock the purge reads is past t + ms (no bound on how long
 * that takes: nothing here measures time). */
static void wait_past(uint32_t t, uint32_t ms)
{
    while (os_now_ms() - t <= ms) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* A freed huge block's mapping is cached with its pages committed: the
 * statistics keep counting it as committed (and mapped), its pages stay
 * resident, and the next malloc of that size gets the same pages back
 * without a page fault (before: MADV_DONTNEED at every free). */
START_TEST(test_huge_free_keeps_pages)
{
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    set_purge_delay(-1);
    bitslab_stats_t st0 = stats();
    unsigned char *p = bitslab_malloc(8 * MiB);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xAA, 8 * MiB);
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.mapped, st0.mapped + 8 * MiB + OS_PAGE);
    ck_assert_uint_eq(st1.committed, st0.committed + 8 * MiB + OS_PAGE);
    bitslab_free(p);
    bitslab_stats_t st2 = stats();
    ck_assert_uint_eq(st2.mapped, st1.mapped);
    ck_assert_uint_eq(st2.committed, st1.committed); /* a dirty cached mapping is committed */
    ck_assert_uint_eq(st2.huge_bytes, 0);
    cache_view_t v = cache_view();
    int i = cache_find(&v, p);
    ck_assert_int_ge(i, 0);
    ck_assert(v.dirty[i]);
    ck_assert_uint_eq(v.len[i], 8 * MiB + OS_PAGE);
    ck_assert_uint_eq(resident_bytes(region_of(p) + OS_PAGE, 8 * MiB), 8 * MiB);
    /* The same pages, still holding what was written. */
    unsigned char *q = bitslab_malloc(8 * MiB - 5000);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(check_bytes(q, 8 * MiB, 0xAA), 8 * MiB);
    ck_assert_uint_eq(bitslab_usable_size(q), 8 * MiB);
    bitslab_stats_t st3 = stats();
    ck_assert_uint_eq(st3.committed, st1.committed);
    ck_assert_uint_eq(st3.huge_bytes, st1.huge_bytes);
    ck_assert_uint_eq(st3.in_use, st1.in_use);
    bitslab_free(q);
    bitslab_collect();
    bitslab_stats_t st4 = stats();
    ck_assert_uint_eq(st4.mapped, st0.mapped);
    ck_assert_uint_eq(st4.committed, st0.committed);
    ck_assert_uint_eq(cache_view().n, 0);
}
END_TEST

/* A buffer grown by realloc in 4 KiB steps from 2 MiB to 64 MiB gets room
 * to grow into: its mapping changes (one mremap each) once per quarter of
 * growth, about 16 times, not at every step (16,000 mremaps before); the
 * contents follow; a shrink within the room keeps the block where it is. */
START_TEST(test_huge_realloc_grows_with_room)
{
    size_t n = 2 * MiB;
    unsigned char *p = bitslab_malloc(n);
    ck_assert_ptr_nonnull(p);
    p[0] = 1;
    unsigned changes = 0;
    size_t usable = bitslab_usable_size(p);
    while (n < 64 * MiB) {
        n += 4 * KiB;
        unsigned char *q = bitslab_realloc(p, n);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq(q[0], 1);
        q[n - 1] = 2;
        if (bitslab_usable_size(q) != usable || q != p) changes++;
        ck_assert_uint_ge(bitslab_usable_size(q), n);
        usable = bitslab_usable_size(q);
        p = q;
    }
    ck_assert_msg(changes <= 20, "the mapping changed %u times in 15872 steps", changes);
    ck_assert_uint_eq(p[n - 1], 2);
    unsigned char *q = bitslab_realloc(p, usable - usable / 8);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(bitslab_usable_size(q), usable);
    q = bitslab_realloc(p, n / 2); /* more than the room: pages past the end go back */
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(bitslab_usable_size(q), n / 2);
    bitslab_free(q);
    bitslab_collect();
}
END_TEST

/* Under RLIMIT_AS a growth takes no room: the room would be address space
 * another allocation may need (an adversarial reader's case: with 100 MiB
 * live after a realloc from 64 MiB and a limit 195 MiB above the start, a
 * malloc of 134 MiB failed while a quarter of the realloc'ed block was
 * unused reservation). In a child: the limit stays there. */
START_TEST(test_huge_realloc_no_room_under_rlimit)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        unsigned char *p = bitslab_malloc(64 * MiB);
        if (!p) _exit(10);
        p[0] = 1;
        struct rlimit rl = {.rlim_cur = vm_kib() * KiB + 195 * MiB, .rlim_max = RLIM_INFINITY};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(11);
        unsigned char *q = bitslab_realloc(p, 100 * MiB);
        if (!q || q[0] != 1) _exit(12);
        if (bitslab_usable_size(q) != 100 * MiB) _exit(13); /* exactly: no room */
        void *r = bitslab_malloc(134 * MiB);
        _exit(r ? 0 : 14);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child: status %#x (13: the realloc took room; 14: the malloc after it failed)", status);
}
END_TEST

/* A malloc larger than every cached mapping grows a dirty one (moving its
 * pages by mremap when the address space after it is taken) instead of
 * mapping afresh: the pages it had stay resident and keep their contents
 * (no page fault), and the statistics stay exact. */
START_TEST(test_huge_cache_grows_dirty_mapping)
{
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    set_purge_delay(-1);
    bitslab_collect();
    bitslab_stats_t st0 = stats();
    unsigned char *p = bitslab_malloc(4 * MiB);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xAB, 4 * MiB);
    /* Something right after it, so that it cannot grow in place. */
    void *fence = mmap(p + 4 * MiB, 2 * MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    ck_assert_ptr_ne(fence, MAP_FAILED);
    bitslab_free(p);
    cache_view_t v = cache_view();
    ck_assert_int_ge(cache_find(&v, p), 0);
    unsigned char *q = bitslab_malloc(24 * MiB);
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_ne(q, p); /* moved */
    v = cache_view();
    ck_assert_int_lt(cache_find(&v, p), 0); /* taken from the cache */
    ck_assert_uint_eq(resident_bytes((uintptr_t)q, 4 * MiB), 4 * MiB);
    ck_assert_uint_eq(check_bytes(q, 4 * MiB, 0xAB), 4 * MiB);
    ck_assert_uint_ge(bitslab_usable_size(q), 24 * MiB);
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.mapped, st0.mapped + OS_PAGE + bitslab_usable_size(q));
    ck_assert_uint_eq(st1.huge_bytes, OS_PAGE + bitslab_usable_size(q));
    memset(q, 0, 24 * MiB);
    bitslab_free(q);
    bitslab_collect();
    bitslab_stats_t st2 = stats();
    ck_assert_uint_eq(st2.mapped, st0.mapped);
    ck_assert_uint_eq(st2.committed, st0.committed);
    munmap(fence, 2 * MiB);
}
END_TEST

/* calloc never gets a dirty mapping's old data: right after a huge block of
 * that size (or a bit larger) is freed dirty, calloc reuses the mapping and
 * it reads as zero. With a clean and a dirty mapping that both fit, calloc
 * takes the clean one and malloc the dirty one. */
START_TEST(test_huge_calloc_after_dirty_free)
{
    set_purge_delay(-1);
    unsigned char *p = bitslab_malloc(6 * MiB);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xAA, bitslab_usable_size(p));
    bitslab_free(p);
    unsigned char *q = bitslab_calloc(1, 6 * MiB);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(check_bytes(q, 6 * MiB, 0), 6 * MiB);
    memset(q, 0xBB, 6 * MiB);
    bitslab_free(q);
    q = bitslab_calloc(2 * MiB, 1); /* a smaller need, the same mapping */
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(check_bytes(q, 2 * MiB, 0), 2 * MiB);
    bitslab_free(q);

    /* One clean, one dirty. Purge delay 0: the free's own purge decommits. */
    unsigned char *a = bitslab_malloc(6 * MiB), *b = bitslab_malloc(6 * MiB);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    memset(a, 0xCC, 6 * MiB);
    memset(b, 0xDD, 6 * MiB);
    bitslab_collect(); /* only a and b from here on */
    set_purge_delay(0);
    bitslab_free(a);
    set_purge_delay(-1);
    bitslab_free(b);
    cache_view_t v = cache_view();
    ck_assert_uint_eq(v.n, 2);
    ck_assert(!v.dirty[cache_find(&v, a)]);
    ck_assert(v.dirty[cache_find(&v, b)]);
    unsigned char *c = bitslab_calloc(1, 6 * MiB);
    ck_assert_ptr_eq(c, a);
    ck_assert_uint_eq(check_bytes(c, 6 * MiB, 0), 6 * MiB);
    unsigned char *m = bitslab_malloc(6 * MiB);
    ck_assert_ptr_eq(m, b);
    bitslab_free(c);
    bitslab_free(m);
    bitslab_collect();
    ck_assert_uint_eq(stats().huge_allocations, 0);
}
END_TEST

/* A dirty cached mapping is decommitted once it has waited purge_delay_ms,
 * at the next allocator slow path: a small malloc's (the heaps' periodic
 * purge) or a huge allocation's. Not before: with a delay of an hour, the
 * same slow path leaves it dirty. */
START_TEST(test_huge_purge_after_delay)
{
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    set_purge_delay(3600000);
    bitslab_free(bitslab_malloc(100)); /* the heap and its superpage exist from here on */
    unsigned char *p = bitslab_malloc(8 * MiB);
    ck_assert_ptr_nonnull(p);
    touch_pages(p, 8 * MiB, 1);
    bitslab_free(p);
    uint32_t freed = os_now_ms();
    bitslab_stats_t st1 = stats();
    bitslab_free(bitslab_malloc(300)); /* the first malloc of its class: a heap slow path */
    cache_view_t v = cache_view();
    ck_assert_uint_eq(v.n, 1);
    ck_assert(v.dirty[0]);
    ck_assert_uint_eq(stats().committed, st1.committed);

    set_purge_delay(20);
    wait_past(freed, 20);
    /* The first malloc of another class: the heap's slow path, whose
     * periodic purge ages the huge cache too. */
    bitslab_free(bitslab_malloc(5000));
    v = cache_view();
    ck_assert_uint_eq(v.n, 1);
    ck_assert_msg(!v.dirty[0], "the cached mapping is still dirty after the purge delay and a slow path");
    bitslab_stats_t st2 = stats();
    ck_assert_uint_eq(st2.committed, st1.committed - 8 * MiB);
    ck_assert_uint_eq(st2.mapped, st1.mapped);
    ck_assert_uint_eq(resident_bytes(v.addr[0] + OS_PAGE, 8 * MiB), 0);

    /* The same through the huge path: free dirty, wait, one huge allocation
     * that the cache cannot serve (an alignment above 2 MiB). */
    p = bitslab_malloc(8 * MiB);
    ck_assert_ptr_eq((void *)region_of(p), (void *)v.addr[0]);
    touch_pages(p, 8 * MiB, 2);
    bitslab_free(p);
    freed = os_now_ms();
    ck_assert(cache_view().dirty[0]);
    wait_past(freed, 20);
    void *x = bitslab_aligned_alloc(4 * MiB, 1100 * KiB);
    ck_assert_ptr_nonnull(x);
    v = cache_view();
    ck_assert_int_ge(cache_find(&v, p), 0);
    ck_assert_msg(!v.dirty[cache_find(&v, p)], "the cached mapping is still dirty after a huge allocation");
    ck_assert_uint_eq(resident_bytes(region_of(p) + OS_PAGE, 8 * MiB), 0);
    bitslab_free(x);
    bitslab_collect();
}
END_TEST

/* The cache keeps at most max(64 MiB, 1/4 of the live huge bytes) of dirty
 * mappings; past it, the ones freed longest ago are decommitted. */
START_TEST(test_huge_dirty_cap)
{
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    set_purge_delay(-1);
    enum { N = 6 };
    unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = bitslab_malloc(16 * MiB);
        ck_assert_ptr_nonnull(b[i]);
        touch_pages(b[i], 16 * MiB, 3);
    }
    bitslab_stats_t st0 = stats();
    for (int i = 0; i < N; i++) bitslab_free(b[i]);
    cache_view_t v = cache_view();
    ck_assert_uint_eq(v.n, N);
    ck_assert_uint_eq(cache_dirty_bytes(&v), 64 * MiB); /* 4 of 16 MiB */
    for (int i = 0; i < N; i++) {
        int k = cache_find(&v, b[i]);
        ck_assert_int_ge(k, 0);
        ck_assert_msg(v.dirty[k] == (i >= 2), "block %d (freed %d of %d): dirty %d", i, i + 1, N, v.dirty[k]);
        if (!v.dirty[k]) ck_assert_uint_eq(resident_bytes(v.addr[k] + OS_PAGE, 16 * MiB), 0);
    }
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.mapped, st0.mapped);
    ck_assert_uint_eq(st1.committed, st0.committed - 2 * 16 * MiB);
    bitslab_collect();

    /* 400 MiB live (untouched: no memory) raise the cap to 100 MiB: all six
     * stay dirty. */
    void *live[8];
    for (int i = 0; i < 8; i++) ck_assert_ptr_nonnull(live[i] = bitslab_malloc(50 * MiB));
    for (int i = 0; i < N; i++) {
        b[i] = bitslab_malloc(16 * MiB);
        ck_assert_ptr_nonnull(b[i]);
        touch_pages(b[i], 16 * MiB, 4);
    }
    for (int i = 0; i < N; i++) bitslab_free(b[i]);
    v = cache_view();
    ck_assert_uint_eq(v.n, N);
    ck_assert_uint_eq(cache_dirty_bytes(&v), N * 16 * MiB);
    for (int i = 0; i < 8; i++) bitslab_free(live[i]);
    bitslab_collect();
}
END_TEST

/* With every slot taken, a freed mapping takes the place of the one cached
 * longest ago, which is unmapped. */
START_TEST(test_huge_cache_full)
{
    set_purge_delay(-1);
    enum { N = 17 };
    void *b[N];
    for (int i = 0; i < N; i++) ck_assert_ptr_nonnull(b[i] = bitslab_malloc(2 * MiB));
    bitslab_stats_t st0 = stats();
    for (int i = 0; i < N; i++) bitslab_free(b[i]);
    cache_view_t v = cache_view();
    ck_assert_uint_eq(v.n, N - 1);
    ck_assert_int_lt(cache_find(&v, b[0]), 0);
    for (int i = 1; i < N; i++) ck_assert_int_ge(cache_find(&v, b[i]), 0);
    ck_assert_uint_eq(stats().mapped, st0.mapped - (2 * MiB + OS_PAGE));
    bitslab_collect();
}
END_TEST

/* A need a little above a cached mapping grows it in place (into the tail
 * that the first mapping trimmed off) instead of mapping anew. */
START_TEST(test_huge_cache_grows_near_miss)
{
    set_purge_delay(-1);
    unsigned char *p = bitslab_malloc(3 * MiB);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x5A, 3 * MiB);
    bitslab_free(p);
    bitslab_stats_t st0 = stats();
    unsigned char *q = bitslab_malloc(3 * MiB + 512 * KiB);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(bitslab_usable_size(q), 3 * MiB + 512 * KiB);
    ck_assert_uint_eq(check_bytes(q, 3 * MiB, 0x5A), 3 * MiB);
    ck_assert_uint_eq(check_bytes(q + 3 * MiB, 512 * KiB, 0), 512 * KiB);
    memset(q, 0x5B, 3 * MiB + 512 * KiB);
    bitslab_stats_t st1 = stats();
    ck_assert_uint_eq(st1.mapped, st0.mapped + 512 * KiB);
    ck_assert_uint_eq(st1.committed, st0.committed + 512 * KiB);
    ck_assert_uint_eq(st1.huge_bytes, 3 * MiB + 512 * KiB + OS_PAGE);
    ck_assert_uint_eq(cache_view().n, 0);
    bitslab_free(q);
    bitslab_collect();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase("basics");
    tcase_add_test(tc, test_malloc_zero);
    tcase_add_test(tc, test_free_null);
    tcase_add_test(tc, test_malloc_too_big);
    tcase_add_test(tc, test_calloc_overflow);
    tcase_add_test(tc, test_reallocarray);
    tcase_add_test(tc, test_realloc_failure_keeps_block);
    tcase_add_test(tc, test_realloc_null_and_zero);
    tcase_add_test(tc, test_posix_memalign_errors);
    tcase_add_test(tc, test_aligned_alloc_errors);
    tcase_add_test(tc, test_memalign);
    tcase_add_test(tc, test_free_sized);
    tcase_add_test(tc, test_version);
    suite_add_tcase(s, tc);
    tc = tcase("realloc");
    tcase_add_test(tc, test_realloc_every_boundary);
    tcase_add_test(tc, test_realloc_between_bins);
    tcase_add_test(tc, test_realloc_random);
    tcase_add_test(tc, test_realloc_huge_accounting);
    tcase_add_test(tc, test_huge_realloc_grows_with_room);
    tcase_add_test(tc, test_huge_realloc_no_room_under_rlimit);
    suite_add_tcase(s, tc);
    tc = tcase("alignment");
    tcase_add_test(tc, test_alignment_every_power);
    tcase_add_test(tc, test_alignment_many_live);
    suite_add_tcase(s, tc);
    tc = tcase("calloc");
    tcase_add_test(tc, test_calloc_reuse_small);
    tcase_add_test(tc, test_calloc_reuse_reconfigured_slab);
    tcase_add_test(tc, test_calloc_reuse_wide_huge);
    tcase_add_test(tc, test_calloc_after_decommit);
    suite_add_tcase(s, tc);
    tc = tcase("stats");
    tcase_add_test(tc, test_stats_small_per_class);
    tcase_add_test(tc, test_stats_wide_huge);
    tcase_add_test(tc, test_stats_in_use_exact_after_realloc);
    tcase_add_test(tc, test_stats_struct_size);
    tcase_add_test(tc, test_stats_other_thread_cache);
    tcase_add_test(tc, test_stats_print_callback);
    tcase_add_test(tc, test_stats_print_stderr);
    suite_add_tcase(s, tc);
    tc = tcase("huge cache");
    tcase_add_test(tc, test_huge_free_keeps_pages);
    tcase_add_test(tc, test_huge_cache_grows_dirty_mapping);
    tcase_add_test(tc, test_huge_calloc_after_dirty_free);
    tcase_add_test(tc, test_huge_purge_after_delay);
    tcase_add_test(tc, test_huge_dirty_cap);
    tcase_add_test(tc, test_huge_cache_full);
    tcase_add_test(tc, test_huge_cache_grows_near_miss);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
