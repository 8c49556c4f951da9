/*
 * test_lfstack.c: the versioned Treiber stack of src/lfstack.h on its own
 * (no allocator linked).
 *
 *   test_lfstack [all|single|threads] [BITS] [OPS]
 *
 * single   one thread: LIFO order, an empty pop returns 0 and leaves the
 *          head alone, the head word layout (handle low, version high, +1 per
 *          push and pop), handles at the maximum of 20, 26 and 60 bits round
 *          trip without touching the version, and a version made to wrap
 *          (and one that wraps by itself at bits = 60) shows in the head.
 * threads  4 threads share NENTRIES entries. Each pops two, takes each one
 *          with an atomic exchange on its owner word (two holders at once
 *          abort the test at once), checks and rewrites its plain payload,
 *          and pushes them back, the first popped first (pop A, pop B,
 *          push A: the ABA pattern). The only order between successive
 *          holders is the stack's release push / acquire pop (the owner
 *          exchanges are relaxed), so under ThreadSanitizer a missing order
 *          shows as a race on the payload. LFSTACK_RETRY counts failed
 *          CASes: the test requires at least one (the race window was
 *          reached); LFSTACK_PARK yields the CPU now and then between a
 *          link read and its CAS, to widen the window. At the end the stack
 *          must hold every entry exactly once, and its version must equal
 *          the number of successful pushes and pops.
 *
 * BITS (default 26, the orphanage's) and OPS (rounds per thread, default
 * 200000; LFSTACK_TEST_OPS in the environment also sets it) apply to the
 * threaded part. Built with -DLFSTACK_TEST_NO_VERSION (src/lfstack.h keeps
 * the version constant), the single-threaded version checks are skipped and
 * the threaded part shows whether it catches the ABA. A large BITS (62: a
 * 2-bit version) shows a version that wraps within the bound.
 *
 * Exit 0 pass; abort (with a message) on failure.
 */
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

/* Hooks: defined before the header includes them. */
static _Thread_local uint64_t tl_retries; /* failed CASes of this thread */
static _Thread_local uint64_t tl_parks;   /* park points passed by this thread */
static void park_hook(int point);
#define LFSTACK_RETRY(window) ((void)(window), tl_retries++)
#define LFSTACK_PARK(point) park_hook(point)
/* The header's preconditions (handle width, bits), checked in every build. */
static _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define LFSTACK_ASSERT(cond) ((cond) ? (void)0 : fail("lfstack.h: assertion failed: %s", #cond))
#include "lfstack.h"

#define NTHREADS 4
#define NENTRIES 64
#define HOLD 2 /* entries a thread holds at once */

enum { PARK_PUSH = 1, PARK_POP = 2, WIN_RETRY = 3 };
static const lfstack_hooks_t hooks = {PARK_PUSH, PARK_POP, WIN_RETRY};

static _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void fail(const char *fmt, ...)
{
    /* The first failure speaks; a second thread's waits for the abort. */
    static atomic_flag failing = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&failing))
        for (;;) pause();
    va_list ap;
    va_start(ap, fmt);
    fputs("test_lfstack: FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

#define CHECK(cond, ...) \
    do { \
        if (!(cond)) fail(__VA_ARGS__); \
    } while (0)

static int in_threads; /* set before the threads start: the park hook yields */

static void park_hook(int point)
{
    CHECK(point == PARK_PUSH || point == PARK_POP, "park hook called with %d", point);
    /* Every 64th link read or write of a thread: give the CPU away before
     * the CAS, so that other threads run through the window. */
    if (in_threads && (++tl_parks & 63) == 0) sched_yield();
}

static uint64_t mask_of(unsigned bits) { return ((uint64_t)1 << bits) - 1; }

/* ---- single-threaded ------------------------------------------------------ */

/* A few entries with arbitrary handles, looked up by handle. */
#define NSLOTS 8
static struct {
    uint64_t handle;
    _Atomic uint64_t link;
} slots[NSLOTS];

static _Atomic uint64_t *slot_link(uint64_t handle)
{
    for (unsigned i = 0; i < NSLOTS; i++)
        if (slots[i].handle == handle) return &slots[i].link;
    fail("link_of(%llu): no such entry", (unsigned long long)handle);
}

static _Atomic uint64_t *slot_add(unsigned i, uint64_t handle)
{
    slots[i].handle = handle;
    atomic_init(&slots[i].link, 0);
    return &slots[i].link;
}

static uint64_t head_of(lfstack_t *st) { return atomic_load_explicit(&st->head, memory_order_relaxed); }

/* The head must be (version, handle), and the fields must read back. */
static void check_head(lfstack_t *st, unsigned bits, uint64_t version, uint64_t handle, const char *what)
{
    uint64_t w = head_of(st);
    version &= lfstack_version_of(UINT64_MAX, bits); /* modulo 2^(64-bits) */
#ifdef LFSTACK_TEST_NO_VERSION
    version = lfstack_version_of(w, bits); /* constant: not checked */
#endif
    uint64_t want = (version << bits) | handle;
    CHECK(w == want, "%s (bits %u): head %#llx, want %#llx (version %llu, handle %#llx)", what, bits,
          (unsigned long long)w, (unsigned long long)want, (unsigned long long)version, (unsigned long long)handle);
    CHECK(lfstack_handle_of(w, bits) == handle, "%s: lfstack_handle_of", what);
    CHECK(lfstack_version_of(w, bits) == version, "%s: lfstack_version_of", what);
}

static void single_lifo(unsigned bits)
{
    lfstack_t st = LFSTACK_INIT;
    uint64_t max = mask_of(bits);
    check_head(&st, bits, 0, 0, "LFSTACK_INIT");
    CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == 0, "pop of an empty stack");
    CHECK(lfstack_pop(&st, bits, slot_link, NULL) == 0, "pop of an empty stack (no hooks)");
    check_head(&st, bits, 0, 0, "an empty pop leaves the head alone");

    /* Handles 1, 2, the maximum, 3: links chain them, pops come back LIFO. */
    const uint64_t h[4] = {1, 2, max, 3};
    for (unsigned i = 0; i < 4; i++) {
        _Atomic uint64_t *link = slot_add(i, h[i]);
        lfstack_push(&st, bits, h[i], link, i & 1 ? NULL : &hooks);
        check_head(&st, bits, i + 1, h[i], "push");
        CHECK(atomic_load(link) == (i ? h[i - 1] : 0), "push %u: the link holds %llu, want the handle below", i,
              (unsigned long long)atomic_load(link));
    }
    for (unsigned i = 4; i-- > 0;) {
        uint64_t got = lfstack_pop(&st, bits, slot_link, &hooks);
        CHECK(got == h[i], "pop (bits %u): %#llx, want %#llx (LIFO)", bits, (unsigned long long)got,
              (unsigned long long)h[i]);
        check_head(&st, bits, 4 + (4 - i), i ? h[i - 1] : 0, "pop");
    }
    CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == 0, "pop after all entries came back");
    check_head(&st, bits, 8, 0, "empty again");

    /* The maximum handle alone, then again under a maximal version. */
    _Atomic uint64_t *link = slot_add(0, max);
    lfstack_push(&st, bits, max, link, &hooks);
    check_head(&st, bits, 9, max, "maximum handle pushed");
    CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == max, "maximum handle round trip");
    check_head(&st, bits, 10, 0, "maximum handle popped");

    /* A version made to wrap: the next push shows version 0, the pop 1. */
    uint64_t vmax = lfstack_version_of(UINT64_MAX, bits);
    atomic_store(&st.head, vmax << bits);
    check_head(&st, bits, vmax, 0, "maximal version stored");
    lfstack_push(&st, bits, max, link, &hooks);
    check_head(&st, bits, 0, max, "the version wrapped on push");
    CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == max, "pop after the wrap");
    check_head(&st, bits, 1, 0, "after the wrap");
    atomic_store(&st.head, (vmax << bits) | max); /* wrap on the pop this time */
    atomic_store(link, 0);
    CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == max, "pop at the maximal version");
    check_head(&st, bits, 0, 0, "the version wrapped on pop");
    printf("single, bits %u: LIFO, empty pop, layout, handle %#llx, wrap at version %#llx: ok\n", bits,
           (unsigned long long)max, (unsigned long long)vmax);
}

/* bits = 60: a 4-bit version wraps by itself after 16 pushes and pops. */
static void single_natural_wrap(void)
{
    const unsigned bits = 60;
    lfstack_t st = LFSTACK_INIT;
    _Atomic uint64_t *a = slot_add(0, 5), *b = slot_add(1, mask_of(bits));
    uint64_t ops = 0;
    for (unsigned round = 0; round < 10; round++) {
        lfstack_push(&st, bits, 5, a, &hooks);
        check_head(&st, bits, ++ops % 16, 5, "bits 60: push");
        lfstack_push(&st, bits, mask_of(bits), b, &hooks);
        check_head(&st, bits, ++ops % 16, mask_of(bits), "bits 60: push of the maximum");
        CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == mask_of(bits), "bits 60: pop of the maximum");
        check_head(&st, bits, ++ops % 16, 5, "bits 60: pop");
        CHECK(lfstack_pop(&st, bits, slot_link, &hooks) == 5, "bits 60: pop");
        check_head(&st, bits, ++ops % 16, 0, "bits 60: pop to empty");
    }
    printf("single, bits 60: the version wrapped %llu times: ok\n", (unsigned long long)(ops / 16));
}

static void run_single(void)
{
    single_lifo(26); /* the orphanage's width */
    single_lifo(20); /* the heap pool's */
    single_lifo(63);
    single_natural_wrap();
}

/* ---- threads -------------------------------------------------------------- */

static struct entry {
    _Atomic uint64_t link;
    _Atomic int owner; /* 0, or the holding thread's number + 1 */
    /* Plain: written by the holder, read by the next one; only the stack
     * orders the two (TSan reports a race if it does not). */
    uint64_t a, b;
} __attribute__((aligned(64))) entries[NENTRIES];

static unsigned t_bits;  /* set before the threads start */
static uint64_t t_first; /* entry i has handle t_first - i: the top of the range */
static lfstack_t t_stack = LFSTACK_INIT;
static uint64_t t_ops;

static struct entry *entry_of(uint64_t handle)
{
    CHECK(handle <= t_first && t_first - handle < NENTRIES, "handle %#llx is no entry (corrupt stack)",
          (unsigned long long)handle);
    return &entries[t_first - handle];
}

static _Atomic uint64_t *entry_link(uint64_t handle) { return &entry_of(handle)->link; }

struct worker {
    pthread_t tid;
    int me;
    uint64_t retries, parks, pushes, pops, empty;
};

static void *worker(void *arg)
{
    struct worker *w = arg;
    int me = w->me + 1;
    uint64_t seed = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)me;
    for (uint64_t op = 0; op < t_ops; op++) {
        uint64_t held[HOLD];
        unsigned n = 0;
        for (; n < HOLD; n++) {
            held[n] = lfstack_pop(&t_stack, t_bits, entry_link, &hooks);
            if (!held[n]) break;
            struct entry *e = entry_of(held[n]);
            /* Relaxed: the test's detector, not part of the ordering. */
            int prev = atomic_exchange_explicit(&e->owner, me, memory_order_relaxed);
            CHECK(prev == 0, "thread %d popped entry %#llx, which thread %d holds (op %llu)", me,
                  (unsigned long long)held[n], prev, (unsigned long long)op);
            CHECK(e->b == ~e->a, "entry %#llx: payload %#llx/%#llx torn (op %llu)", (unsigned long long)held[n],
                  (unsigned long long)e->a, (unsigned long long)e->b, (unsigned long long)op);
            seed = seed * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
            e->a = seed;
            e->b = ~seed;
        }
        w->pops += n;
        if (n < HOLD) w->empty++; /* cannot happen with 4 x 2 of 64 held, unless corrupt */
        for (unsigned i = 0; i < n; i++) {
            struct entry *e = entry_of(held[i]);
            CHECK(e->b == ~e->a, "entry %#llx changed while held by thread %d", (unsigned long long)held[i], me);
            /* Relaxed: the test's detector, not part of the ordering. */
            int prev = atomic_exchange_explicit(&e->owner, 0, memory_order_relaxed);
            CHECK(prev == me, "thread %d gives back entry %#llx, but its owner word says %d (op %llu)", me,
                  (unsigned long long)held[i], prev, (unsigned long long)op);
            lfstack_push(&t_stack, t_bits, held[i], &e->link, &hooks);
            w->pushes++;
        }
    }
    w->retries = tl_retries;
    w->parks = tl_parks;
    return NULL;
}

static void run_threads(unsigned bits, uint64_t ops)
{
    t_bits = bits;
    t_first = mask_of(bits);
    t_ops = ops;
    CHECK(t_first >= NENTRIES, "bits %u: too few handles", bits);
    uint64_t setup = 0;
    for (unsigned i = 0; i < NENTRIES; i++) {
        entries[i].b = ~entries[i].a;
        lfstack_push(&t_stack, bits, t_first - i, &entries[i].link, &hooks);
        setup++;
    }
    in_threads = 1;
    struct worker w[NTHREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < NTHREADS; i++) {
        w[i].me = i;
        CHECK(pthread_create(&w[i].tid, NULL, worker, &w[i]) == 0, "pthread_create");
    }
    uint64_t retries = 0, parks = 0, done = setup, empty = 0;
    for (int i = 0; i < NTHREADS; i++) {
        CHECK(pthread_join(w[i].tid, NULL) == 0, "pthread_join");
        retries += w[i].retries;
        parks += w[i].parks;
        done += w[i].pushes + w[i].pops;
        empty += w[i].empty;
    }
    in_threads = 0;
    printf("threads, bits %u: %d x %llu rounds, %llu pushes and pops, %llu failed CASes, %llu yields, "
           "%llu empty pops\n",
           bits, NTHREADS, (unsigned long long)ops, (unsigned long long)done, (unsigned long long)retries,
           (unsigned long long)(parks / 64), (unsigned long long)empty);
    CHECK(empty == 0, "%llu pops found the stack empty with at most %d of %d entries held",
          (unsigned long long)empty, NTHREADS * HOLD, NENTRIES);

    /* Quiescent: the stack holds every entry once, and nothing else. */
    uint64_t version = lfstack_version_of(head_of(&t_stack), bits);
    uint64_t seen[(NENTRIES + 63) / 64] = {0};
    unsigned n = 0;
    for (uint64_t h; (h = lfstack_pop(&t_stack, bits, entry_link, &hooks)); n++) {
        CHECK(n < NENTRIES, "more than %d entries in the stack: a cycle or a duplicate", NENTRIES);
        unsigned i = (unsigned)(entry_of(h) - entries);
        CHECK(!(seen[i / 64] >> (i % 64) & 1), "entry %#llx twice in the stack", (unsigned long long)h);
        seen[i / 64] |= (uint64_t)1 << (i % 64);
        CHECK(atomic_load(&entries[i].owner) == 0, "entry %#llx in the stack and held", (unsigned long long)h);
    }
    CHECK(n == NENTRIES, "%u entries in the stack at the end, want %d (lost entries)", n, NENTRIES);
#ifndef LFSTACK_TEST_NO_VERSION
    uint64_t want = done & lfstack_version_of(UINT64_MAX, bits);
    CHECK(version == want, "version %llu at the end, want %llu (the pushes and pops, modulo 2^%u)",
          (unsigned long long)version, (unsigned long long)want, 64 - bits);
#else
    (void)version;
#endif
    CHECK(retries > 0, "no CAS ever failed: the race window was not reached (raise OPS)");
    printf("threads, bits %u: every entry held by one thread at a time, all %d back at the end: ok\n", bits,
           NENTRIES);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    unsigned bits = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 26;
    const char *env = getenv("LFSTACK_TEST_OPS");
    uint64_t ops = argc > 3 ? strtoull(argv[3], NULL, 0) : env ? strtoull(env, NULL, 0) : 200000;
    if (bits < 7 || bits > 63 || ops == 0 ||
        (strcmp(what, "all") && strcmp(what, "single") && strcmp(what, "threads"))) {
        fprintf(stderr, "usage: test_lfstack [all|single|threads] [BITS 7..63] [OPS > 0]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
#ifdef LFSTACK_TEST_NO_VERSION
    printf("test_lfstack: built with LFSTACK_TEST_NO_VERSION: the version stays constant\n");
#endif
    if (strcmp(what, "threads")) run_single();
    if (strcmp(what, "single")) run_threads(bits, ops);
    printf("test_lfstack: all checks passed\n");
    return 0;
}
