/*
 * test_fork_park.c: fork while another thread is stopped half-way through an
 * allocator operation (debug builds: the park points of src/debug.c). The
 * child's fork handler must not hand it a heap in a half-updated state.
 *
 *   refill     a thread is parked inside a word-cache refill (bits loaded,
 *              base not yet); in the child a new thread allocates: it must
 *              never get a block the parked thread still holds
 *   heap-new   a thread is parked inside heap_new (queue set up, id not yet)
 *              while another thread's heap waits in the pool; in the child a
 *              new thread must adopt the pooled heap (a half-built heap
 *              pushed with id 0 would empty the pool), and collect must work
 *
 * Exit 0 pass, 1 fail, 77 skipped (not a debug build).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitslab.h"
#include "internal.h"

#if !BITSLAB_DEBUG
int main(void)
{
    puts("test_fork_park: needs a -Ddebug_checks=true build; skipped");
    return 77;
}
#else

#define FAIL(...)                                                                                            \
    do {                                                                                                     \
        fprintf(stderr, "test_fork_park: FAIL: " __VA_ARGS__);                                               \
        fputc('\n', stderr);                                                                                 \
        exit(1);                                                                                             \
    } while (0)

enum { MAXHELD = 8192 };
static void *held[MAXHELD];
static _Atomic int nheld, ready, armed;
static heap_t *parked_heap;

static void wait_parked(void)
{
    for (long i = 0; !bitslab_debug_park_parked(); i++) {
        if (i > 100000000L) FAIL("the thread never reached the park point");
        sched_yield();
    }
}

/* Fork now; the child runs fn and its exit status is checked. */
static void fork_and_check(int (*fn)(void), const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) FAIL("fork");
    if (pid == 0) _exit(fn());
    int status;
    if (waitpid(pid, &status, 0) != pid) FAIL("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("%s: child status %#x", what, status);
}

/* ---- refill ---------------------------------------------------------------- */

static void *refill_thread(void *arg)
{
    (void)arg;
    bitslab_debug_park_self(1);
    for (int i = 0; i < MAXHELD; i++) {
        void *p = bitslab_malloc(64);
        if (!p) FAIL("malloc");
        memset(p, 0x5c, 64);
        held[i] = p;
        atomic_store(&nheld, i + 1);
        parked_heap = bitslab_tls_heap;
        heap_t *h = bitslab_tls_heap;
        slab_t *a = h->active[size_class(64)];
        /* Armed from here: the next refill parks. Pick a moment when that
         * refill is the common one (the active slab has another word, and
         * it is not every 8th refill, which takes the full slow path). */
        if (i >= 1000 && !atomic_load(&ready) && ((h->refills + 1) & 7) && a && a->summary) {
            atomic_store(&ready, 1);
            while (!atomic_load(&armed)) sched_yield();
        }
    }
    return NULL;
}

static void *child_alloc(void *arg)
{
    int *bad = arg;
    int n = atomic_load(&nheld);
    void *first = bitslab_malloc(64);
    if (bitslab_tls_heap == parked_heap) fprintf(stderr, "child: adopted the parked thread's heap\n");
    bitslab_free(first);
    for (int k = 0; k < 2000; k++) {
        void *p = bitslab_malloc(64);
        if (!p) {
            *bad = 2;
            return NULL;
        }
        for (int i = 0; i < n; i++)
            if (held[i] == p) {
                fprintf(stderr, "child: malloc(64) returned %p, still held by the parked thread\n", p);
                *bad = 1;
                return NULL;
            }
    }
    return NULL;
}

static int refill_child(void)
{
    int bad = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, child_alloc, &bad)) return 3;
    pthread_join(t, NULL);
    bitslab_collect();
    return bad;
}

static void scenario_refill(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, refill_thread, NULL)) FAIL("pthread_create");
    while (!atomic_load(&ready)) sched_yield();
    bitslab_debug_park_arm(PARK_REFILL_MIDWAY);
    atomic_store(&armed, 1);
    wait_parked();
    fork_and_check(refill_child, "refill");
    bitslab_debug_park_release();
    pthread_join(t, NULL);
    puts("test_fork_park: refill: the child never got a block the parked thread holds");
}

/* ---- heap-new ---------------------------------------------------------------- */

static heap_t *pooled_heap;
static _Atomic int may_exit;

static void *exiting_thread(void *arg)
{
    (void)arg;
    void *p = bitslab_malloc(100); /* a heap of its own, abandoned at exit */
    pooled_heap = bitslab_tls_heap;
    bitslab_free(p);
    atomic_store(&ready, 1);
    while (!atomic_load(&may_exit)) sched_yield();
    return NULL;
}

static void *new_heap_thread(void *arg)
{
    (void)arg;
    bitslab_debug_park_self(1);
    void *p = bitslab_malloc(64); /* the pool is empty: heap_new, which parks half-way */
    bitslab_free(p);
    return NULL;
}

static void *adopter(void *arg)
{
    heap_t **got = arg;
    void *p = bitslab_malloc(64);
    *got = bitslab_tls_heap;
    bitslab_free(p);
    return NULL;
}

static int heap_new_child(void)
{
    heap_t *got = NULL;
    pthread_t t;
    if (pthread_create(&t, NULL, adopter, &got)) return 3;
    pthread_join(t, NULL);
    if (got != pooled_heap) {
        fprintf(stderr, "child: a new thread took heap %p, not the pooled one %p (pool emptied)\n", (void *)got,
                (void *)pooled_heap);
        return 1;
    }
    bitslab_collect();
    return 0;
}

static void scenario_heap_new(void)
{
    pthread_t e, parker;
    atomic_store(&ready, 0);
    if (pthread_create(&e, NULL, exiting_thread, NULL)) FAIL("pthread_create");
    while (!atomic_load(&ready)) sched_yield();
    /* The pool is empty: the parker creates a heap and stops half-way. */
    bitslab_debug_park_arm(PARK_HEAP_NEW_MIDWAY);
    if (pthread_create(&parker, NULL, new_heap_thread, NULL)) FAIL("pthread_create");
    wait_parked();
    /* Now a heap goes into the pool. */
    atomic_store(&may_exit, 1);
    pthread_join(e, NULL);
    fork_and_check(heap_new_child, "heap-new");
    bitslab_debug_park_release();
    pthread_join(parker, NULL);
    puts("test_fork_park: heap-new: the child adopted the pooled heap; the half-built one was left alone");
}

int main(int argc, char **argv)
{
    bitslab_free(bitslab_malloc(16)); /* main's own heap first */
    const char *sc = argc > 1 ? argv[1] : "refill";
    if (!strcmp(sc, "refill")) scenario_refill();
    else if (!strcmp(sc, "heap-new")) scenario_heap_new();
    else FAIL("unknown scenario %s", sc);
    return 0;
}
#endif
