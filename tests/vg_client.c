/*
 * vg_client: a program for memcheck (meson test valgrind, -Dvalgrind=true;
 * tests/check_valgrind.py runs it).
 *
 *   vg_client bugs    leaks one block (leak_one) and reads a freed one
 *                     (read_freed); memcheck must name both, at these
 *                     functions, and nothing else
 *   vg_client shrink  leaks a huge block shrunk in place by realloc
 *                     (leak_shrunk): memcheck must know its new size
 *   vg_client clean   every allocation path, remote frees, realloc that
 *                     stays, grows, moves (huge: mremap), calloc into reused
 *                     memory, contents checked by branches (memcheck checks
 *                     definedness there); everything freed: memcheck must
 *                     report no error and no leak
 */
#define _GNU_SOURCE
#include <bitslab.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static void *volatile sink; /* keeps the compiler from dropping what we do */

static NOINLINE void leak_one(void)
{
    /* A class nothing else uses: the first bin of a new slab, which the
     * slab's metadata and the word cache point to (valgrind.c hides them). */
    char *p = bitslab_malloc(200);
    memset(p, 1, 200);
    sink = p;
    sink = NULL; /* the only pointer to it is gone */
}

static NOINLINE int read_freed(void)
{
    char *p = bitslab_malloc(64);
    memset(p, 7, 64);
    bitslab_free(p);
    return p[10]; /* use after free */
}

static int bugs(void)
{
    leak_one();
    int v = read_freed();
    return v == 7 ? 0 : 0;
}

static NOINLINE void leak_shrunk(void)
{
    char *p = bitslab_malloc(8 << 20);
    p = bitslab_realloc(p, 3 << 20); /* a huge block shrinks in place */
    memset(p, 2, 3 << 20);
    sink = p;
    sink = NULL;
}

/* ---- a clean program ---------------------------------------------------------- */

static int failures;

static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "vg_client: %s\n", what);
        failures++;
    }
}

/* Branch on every byte: memcheck reports a conditional jump on undefined data. */
static int all_equal(const unsigned char *p, size_t n, unsigned char v)
{
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) ok = 0;
    return ok;
}

#define NBLK 4000
static void *blocks[NBLK];

static void *remote_free_half(void *arg)
{
    (void)arg;
    for (int i = 0; i < NBLK; i += 2) bitslab_free(blocks[i]);
    return NULL;
}

static int clean(void)
{
    /* Small and wide blocks, written whole, half freed by another thread. */
    for (int i = 0; i < NBLK; i++) {
        size_t n = (size_t)(1 + (i * 97) % (i % 50 == 0 ? 300000 : 3000));
        blocks[i] = bitslab_malloc(n);
        memset(blocks[i], i & 0xff, n);
    }
    pthread_t t;
    pthread_create(&t, NULL, remote_free_half, NULL);
    pthread_join(t, NULL);
    for (int i = 1; i < NBLK; i += 2) bitslab_free(blocks[i]);

    /* calloc into memory that was handed out and freed before: zero, defined. */
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(1 + (i * 131) % 3000);
        unsigned char *p = bitslab_calloc(1, n);
        expect(all_equal(p, n, 0), "calloc: not zero");
        memset(p, 0xAA, n);
        blocks[i] = p;
    }
    for (int i = 0; i < 200; i++) bitslab_free(blocks[i]);
    unsigned char *w = bitslab_calloc(3, 100000); /* wide: zeroed inside the allocator */
    expect(all_equal(w, 300000, 0), "wide calloc: not zero");
    memset(w, 1, 300000);
    bitslab_free(w);
    w = bitslab_calloc(3, 100000); /* the same slabs again, dirty this time */
    expect(all_equal(w, 300000, 0), "wide calloc after reuse: not zero");
    bitslab_free(w);

    /* realloc: stays, grows across classes (copied), up to huge and back. */
    unsigned char *r = bitslab_malloc(10);
    memset(r, 3, 10);
    size_t have = 10;
    const size_t steps[] = {12, 100, 1000, 5000, 40000, 300000, 3 << 20, 9 << 20, 20 << 20, 2 << 20, 500, 7};
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
        r = bitslab_realloc(r, steps[k]);
        size_t keep = have < steps[k] ? have : steps[k];
        expect(all_equal(r, keep, 3), "realloc lost the contents");
        memset(r, 3, steps[k]);
        have = steps[k];
    }
    bitslab_free(r);

    /* A huge block that cannot grow in place moves (mremap) with its contents. */
    unsigned char *h = bitslab_malloc(4 << 20);
    memset(h, 5, 4 << 20);
    void *fence = bitslab_malloc(4 << 20); /* likely right after it */
    h = bitslab_realloc(h, 64 << 20);
    expect(all_equal(h, 4 << 20, 5), "huge realloc lost the contents");
    memset(h + (4 << 20), 6, 1 << 20);
    bitslab_free(fence);
    bitslab_free(h);

    /* Aligned blocks, and the C23 frees. */
    for (size_t a = 16; a <= (4u << 20); a *= 4) {
        void *p = bitslab_aligned_alloc(a, 3 * a / 2);
        expect(((uintptr_t)p & (a - 1)) == 0, "misaligned");
        memset(p, 9, 3 * a / 2);
        bitslab_free_aligned_sized(p, a, 3 * a / 2);
        void *q = NULL;
        expect(bitslab_posix_memalign(&q, a, 100) == 0, "posix_memalign");
        memset(q, 9, 100);
        bitslab_free_sized(q, 100);
    }
    void *z = bitslab_realloc(NULL, 0);
    bitslab_free(bitslab_realloc(z, 0)); /* frees z, returns NULL */
    bitslab_collect();
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "bugs")) return bugs();
    if (argc == 2 && !strcmp(argv[1], "clean")) return clean();
    if (argc == 2 && !strcmp(argv[1], "shrink")) {
        leak_shrunk();
        return 0;
    }
    fprintf(stderr, "usage: %s bugs|shrink|clean\n", argv[0]);
    return 2;
}
