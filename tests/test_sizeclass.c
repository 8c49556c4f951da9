/*
 * test_sizeclass.c: the size-class table and size_class(), checked against
 * an independent construction of the classes, for every size 0..32768.
 */
#include "common.h"

DEFINE_THREAD_FAILURES;

/* The classes as the design states them: 16-byte steps up to 128, then four
 * per power of two (2^p + k * 2^(p-2), k = 1..4) up to 32 KiB. */
static size_t expected_classes(uint32_t out[64])
{
    size_t n = 0;
    for (uint32_t s = 16; s <= 128; s += 16) out[n++] = s;
    for (unsigned p = 7; p < 15; p++)
        for (uint32_t k = 1; k <= 4; k++) out[n++] = (1u << p) + k * (1u << (p - 2));
    return n;
}

START_TEST(test_class_table)
{
    uint32_t want[64];
    size_t n = expected_classes(want);
    ck_assert_uint_eq(n, BITSLAB_NUM_CLASSES);
    ck_assert_uint_eq(NUM_CLASSES, 40);
    for (size_t c = 0; c < n; c++) {
        ck_assert_msg(bitslab_class_size[c] == want[c], "class %zu: size %u, expected %u", c,
                      bitslab_class_size[c], want[c]);
        ck_assert_uint_eq(bitslab_class_size[c] % MIN_BIN, 0);
    }
    ck_assert_uint_eq(bitslab_class_size[0], MIN_BIN);
    ck_assert_uint_eq(bitslab_class_size[NUM_CLASSES - 1], SMALL_MAX);
    /* A 64 KiB slab holds exactly two 32 KiB bins. */
    ck_assert_uint_eq(SLAB_SIZE / SMALL_MAX, 2);
    /* Every class fits its bitmap. */
    ck_assert_uint_le(SLAB_SIZE / MIN_BIN, BITMAP_WORDS * 64);
}
END_TEST

/* size_class(n) is the smallest class whose bins hold n bytes, for every n. */
START_TEST(test_size_class_every_size)
{
    unsigned expect = 0;
    for (size_t n = 0; n <= SMALL_MAX; n++) {
        while (bitslab_class_size[expect] < n) expect++;
        unsigned got = size_class(n);
        ck_assert_msg(got == expect, "size_class(%zu) = %u, expected %u", n, got, expect);
        ck_assert_msg(got < NUM_CLASSES, "size_class(%zu) = %u out of range", n, got);
        ck_assert(bitslab_class_size[got] >= n);
        if (got > 0) ck_assert(bitslab_class_size[got - 1] < n);
    }
}
END_TEST

/* Internal fragmentation: at most a quarter of a bin above 48 bytes, under 16
 * bytes (one step) up to 128 bytes; above 64 bytes also under 25 % of the request. */
START_TEST(test_size_class_waste)
{
    for (size_t n = 1; n <= SMALL_MAX; n++) {
        size_t bin = bitslab_class_size[size_class(n)];
        size_t waste = bin - n;
        if (n > 48) ck_assert_msg(waste * 4 <= bin, "size %zu: bin %zu wastes %zu bytes (> 25%%)", n, bin, waste);
        if (n <= 128) ck_assert_msg(waste < 16, "size %zu: bin %zu wastes %zu bytes", n, bin, waste);
        if (n > 64) ck_assert_msg(waste * 4 < n, "size %zu: bin %zu wastes %zu bytes (>= 25%% of request)", n, bin, waste);
    }
}
END_TEST

/* The public allocator maps every size through the same table: the usable
 * size of malloc(n) is exactly the class size, and the block is 16-aligned. */
START_TEST(test_malloc_every_size_usable)
{
    for (size_t n = 0; n <= SMALL_MAX; n++) {
        void *p = bitslab_malloc(n);
        ck_assert_msg(p != NULL, "malloc(%zu) failed", n);
        ck_assert_uint_eq((uintptr_t)p % MIN_BIN, 0);
        size_t u = bitslab_usable_size(p);
        ck_assert_msg(u == bitslab_class_size[size_class(n)], "usable_size(malloc(%zu)) = %zu, class size %u", n, u,
                      bitslab_class_size[size_class(n)]);
        if (n) {
            ((unsigned char *)p)[0] = 1;
            ((unsigned char *)p)[n - 1] = 2;
        }
        bitslab_free(p);
    }
    bitslab_heap_info_t hi = heap_info();
    ck_assert_uint_eq(total_bins_in_use(&hi), 0);
    ck_assert_uint_eq(hi.bytes_in_use, 0);
    debug_check();
}
END_TEST

/* Usable size per class, and for multi-slab (wide) and huge blocks. */
START_TEST(test_usable_size_paths)
{
    ck_assert_uint_eq(bitslab_usable_size(NULL), 0);
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t sz = bitslab_class_size[c];
        void *a = bitslab_malloc(sz);
        void *b = bitslab_malloc(sz - (c ? 1 : 15)); /* just above the previous class */
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(bitslab_usable_size(a), sz);
        ck_assert_uint_eq(bitslab_usable_size(b), sz);
        memset(a, 0x11, sz);
        memset(b, 0x22, sz);
        bitslab_free(a);
        bitslab_free(b);
    }
    /* Wide: whole slabs. */
    const size_t wide_sizes[] = {SMALL_MAX + 1, 40 * KiB, 64 * KiB, 64 * KiB + 1, 100 * KiB, 500 * KiB,
                                 WIDE_MAX - 1, WIDE_MAX};
    for (size_t i = 0; i < sizeof wide_sizes / sizeof *wide_sizes; i++) {
        size_t n = wide_sizes[i];
        void *p = bitslab_malloc(n);
        ck_assert_ptr_nonnull(p);
        size_t want = (n + SLAB_SIZE - 1) / SLAB_SIZE * SLAB_SIZE;
        ck_assert_msg(bitslab_usable_size(p) == want, "usable_size(malloc(%zu)) = %zu, expected %zu", n,
                      bitslab_usable_size(p), want);
        memset(p, 0x33, bitslab_usable_size(p));
        bitslab_free(p);
    }
    /* Huge: whole pages. */
    const size_t huge_sizes[] = {WIDE_MAX + 1, WIDE_MAX + 4096, 3 * MiB + 5, 8 * MiB};
    for (size_t i = 0; i < sizeof huge_sizes / sizeof *huge_sizes; i++) {
        size_t n = huge_sizes[i];
        void *p = bitslab_malloc(n);
        ck_assert_ptr_nonnull(p);
        size_t want = (n + OS_PAGE - 1) / OS_PAGE * OS_PAGE;
        ck_assert_msg(bitslab_usable_size(p) == want, "usable_size(malloc(%zu)) = %zu, expected %zu", n,
                      bitslab_usable_size(p), want);
        memset(p, 0x44, bitslab_usable_size(p));
        bitslab_free(p);
    }
    debug_check();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sizeclass");
    TCase *tc = tcase("classes");
    tcase_add_test(tc, test_class_table);
    tcase_add_test(tc, test_size_class_every_size);
    tcase_add_test(tc, test_size_class_waste);
    tcase_add_test(tc, test_malloc_every_size_usable);
    tcase_add_test(tc, test_usable_size_paths);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
