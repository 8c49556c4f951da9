/*
 * test_libc.c: the libc allocation surface, through the libc names, in a
 * program where bitslab has replaced malloc. Built three ways (see
 * meson.build): linked with the static override archive, linked with
 * libbitslab.so (and run with LD_PRELOAD), and fully static (-static).
 *
 * A plain harness (no Check) so that it can be linked fully statically; it
 * ends with the line "N passed, N failed".
 *
 * Also covers the robustness items of issue #4: libc's own allocations go
 * to bitslab, fork in a threaded program, a pthread-key destructor that
 * allocates after bitslab's own destructor ran ("reincarnation"), frees from
 * destructors after the heap was handed off, and dlclose of a library that
 * allocated.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitslab.h"

/* C23 names glibc 2.36 does not declare. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t alignment, size_t size);

static int passed, failed;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (cond) passed++;                                                                                  \
        else {                                                                                               \
            failed++;                                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

/* The compiler must not see through malloc/free pairs or constant sizes. */
static volatile size_t opaque_size_max = SIZE_MAX;
static volatile size_t opaque_align_24 = 24; /* clang rejects a constant non-power-of-two alignment */
static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;

/* Is p a block bitslab handed out? usable_size agrees and the heap counts it. */
static int is_bitslab(void *p) { return p && bitslab_usable_size(p) == malloc_usable_size(p); }

static void test_basic(void)
{
    bitslab_heap_info_t before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
    bitslab_heap_info(&before);
    char *p = malloc(100);
    CHECK(p != NULL);
    memset(p, 1, 100);
    bitslab_heap_info(&after);
    CHECK(after.bytes_in_use >= before.bytes_in_use + 100); /* malloc went to bitslab */
    CHECK(malloc_usable_size(p) >= 100);
    free(p);

    /* libc's own allocations come from bitslab too: strdup, and the buffers
     * open_memstream grows with realloc. */
    char *s = strdup("interposed");
    CHECK(is_bitslab(s));
    free(s);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (int i = 0; i < 5000; i++) fprintf(f, "%d,", i);
    fclose(f);
    CHECK(len > 20000 && is_bitslab(buf));
    free(buf);

    void *z = malloc(0);
    CHECK(z != NULL);
    free(z);
    free(NULL);
}

static void test_errors(void)
{
    errno = 0;
    CHECK(malloc_fn(opaque_size_max) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(opaque_size_max / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(NULL, opaque_size_max / 2, 3) == NULL && errno == ENOMEM);
    char *p = malloc(10);
    strcpy(p, "keep");
    errno = 0;
    CHECK(realloc_fn(p, opaque_size_max) == NULL && errno == ENOMEM && strcmp(p, "keep") == 0);
    free(p);

    void *out = (void *)0x1234;
    CHECK(posix_memalign(&out, 3, 8) == EINVAL && out == (void *)0x1234);
    CHECK(posix_memalign(&out, 4, 8) == EINVAL && out == (void *)0x1234); /* < sizeof(void *) */
    CHECK(posix_memalign(&out, 64, opaque_size_max) == ENOMEM && out == (void *)0x1234);
    errno = 0;
    CHECK(aligned_alloc(opaque_align_24, 48) == NULL && errno == EINVAL);
}

static void test_surface(void)
{
    char *p = calloc(100, 10);
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= p[i] == 0;
    CHECK(zero);
    p = realloc(p, 5000);
    CHECK(p && p[999] == 0);
    p = reallocarray(p, 100, 100);
    CHECK(p && malloc_usable_size(p) >= 10000);
    free(p);

    for (size_t a = 1; a <= ((size_t)1 << 22); a <<= 1) {
        void *q = aligned_alloc(a, 3 * a);
        CHECK(q && ((uintptr_t)q & (a - 1)) == 0);
        memset(q, 0x5a, 3 * a);
        free_aligned_sized(q, a, 3 * a);
        void *r = memalign(a, 100);
        CHECK(r && ((uintptr_t)r & (a - 1)) == 0);
        free(r);
        if (a >= sizeof(void *)) {
            void *t = NULL;
            CHECK(posix_memalign(&t, a, 1000) == 0 && ((uintptr_t)t & (a - 1)) == 0);
            free(t);
        }
    }
    void *v = valloc(100);
    CHECK(v && ((uintptr_t)v & 4095) == 0);
    free(v);
    void *pv = pvalloc(5000);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 8192);
    free(pv);

    void *s = malloc(300);
    free_sized(s, 300);

    /* glibc extensions keep working. */
    CHECK(mallopt(M_ARENA_MAX, 1) == 1);
    void *big[64];
    for (int i = 0; i < 64; i++) big[i] = malloc(20000);
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.uordblks >= 64 * 20000);
    for (int i = 0; i < 64; i++) free(big[i]);
    CHECK(malloc_trim(0) == 1);
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    CHECK(hi.classes[36].bins_in_use == 0); /* 20480-byte class empty after the frees */
}

/* ---- fork while other threads allocate ------------------------------------- */

static atomic_int stop_threads;

static void *allocating_thread(void *arg)
{
    (void)arg;
    unsigned x = 1;
    void *keep[32] = {0};
    while (!atomic_load(&stop_threads)) {
        x = x * 1103515245 + 12345;
        unsigned i = (x >> 16) % 32;
        free(keep[i]);
        keep[i] = malloc((x >> 8) % 5000 + 1);
    }
    for (int i = 0; i < 32; i++) free(keep[i]);
    return NULL;
}

static void test_fork(void)
{
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, allocating_thread, NULL);
    void *before = malloc(777);
    memset(before, 7, 777);
    int ok = 1;
    for (int round = 0; round < 20; round++) {
        usleep(1000);
        pid_t pid = fork();
        if (pid == 0) {
            /* The child: other threads are gone, maybe mid-allocation. */
            unsigned char *b = before;
            int good = b[0] == 7 && b[776] == 7;
            free(before); /* allocated before the fork */
            void *arr[1000];
            for (int i = 0; i < 1000; i++) arr[i] = malloc((size_t)(i * 37) % 3000 + 1);
            for (int i = 0; i < 1000; i++) free(arr[i]);
            void *h = malloc(4 << 20);
            free(h);
            _exit(good ? 0 : 3);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    atomic_store(&stop_threads, 1);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    free(before);
    CHECK(ok);
}

/* ---- destructors that allocate or free after bitslab's own ran ------------ */

static pthread_key_t late_key;
static atomic_int late_allocs;

static void late_destructor(void *arg)
{
    /* Frees a block the thread allocated (its heap may be handed off
     * already), then allocates again: the thread gets a heap once more. */
    free(arg);
    void *p = malloc(64);
    memset(p, 1, 64);
    free(p);
    atomic_fetch_add(&late_allocs, 1);
}

static void *reincarnating_thread(void *arg)
{
    (void)arg;
    void *mine = malloc(100);
    for (int i = 0; i < 50; i++) free(malloc(200));
    pthread_setspecific(late_key, mine);
    return NULL;
}

static void test_reincarnation(void)
{
    pthread_key_create(&late_key, late_destructor);
    bitslab_stats_t st = {.struct_size = sizeof st};
    for (int round = 0; round < 100; round++) {
        pthread_t t;
        pthread_create(&t, NULL, reincarnating_thread, NULL);
        pthread_join(t, NULL);
    }
    bitslab_stats(&st);
    CHECK(atomic_load(&late_allocs) == 100);
    CHECK(st.heaps_total < 20); /* heaps are adopted again, not created per thread */
}

/* ---- dlclose of a library that allocated ---------------------------------- */

static void test_dlclose(void)
{
#ifdef BITSLAB_NO_DLOPEN
    puts("skip: dlclose (static build)");
    return;
#endif
    const char *path = getenv("BITSLAB_TEST_PLUGIN");
    if (!path) {
        puts("skip: dlclose (no BITSLAB_TEST_PLUGIN)");
        return;
    }
    void *h = dlopen(path, RTLD_NOW);
    CHECK(h != NULL);
    if (!h) return;
    void *(*make)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_make");
    CHECK(make != NULL);
    void *blocks[100];
    for (int i = 0; i < 100; i++) blocks[i] = make((size_t)i * 100 + 1);
    dlclose(h);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        ok &= is_bitslab(blocks[i]) && ((unsigned char *)blocks[i])[0] == (unsigned char)i;
        free(blocks[i]);
    }
    CHECK(ok);
}

int main(void)
{
    test_basic();
    test_errors();
    test_surface();
    test_fork();
    test_reincarnation();
    test_dlclose();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
