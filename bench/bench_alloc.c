/*
 * bench_alloc.c: allocator workloads against plain malloc/free/realloc.
 *
 *   bitslab-bench WORKLOAD [-t THREADS] [-s SCALE] [--seed N] [--delay SECONDS] [--expect-lib NAME]
 *                 [--alarm SECONDS]
 *   bitslab-bench --smoke [--expect-lib NAME]     every workload, tiny, threads 1, 2 and 8
 *   bitslab-bench --list                          "NAME single|threaded|producers" per line
 *
 * Run it as is for glibc, or with an allocator's shared library in LD_PRELOAD.
 * Each run prints one line (and appends it to $BENCH_RESULT_FILE if set: the
 * driver times the program with hyperfine, which discards its output):
 *
 *   RESULT workload=mixed threads=1 ops=... seconds=... cpu_seconds=... ns_per_op=... base_rss_kb=...
 *          peak_rss_kb=... rss_end_kb=... maxrss_kb=... minflt=... majflt=... malloc_lib=libbitslab.so
 *          seed=42 scale=1
 *
 * (the memory workload adds rss_after_kb, rss_tick_kb, rss_exit_kb and the
 * same as % of the growth; falseshare adds threads_sharing_a_line; larson*
 * free_fn; prodcons-many consumers=1; realloc-grow* grow_to_kb). seconds is
 * the wall time of the workload only (not start-up, not the memory workload's
 * wait); cpu_seconds the CPU time of all the process's threads meanwhile;
 * maxrss_kb, minflt and majflt come from getrusage(RUSAGE_SELF) at the end
 * (the whole process). Work is fixed per run and split between the threads,
 * so on a machine with fewer cores than threads more threads cannot make it
 * faster. --alarm: the process is killed by SIGALRM after that many seconds
 * (a hang shows up as a failure instead of stalling the driver).
 *
 * Workloads (sizes 16..1024 B are skewed small, see rng_small_size):
 *   mixed       1 thread: 8192 live blocks, each op frees a random one and mallocs a new random size
 *   realloc     1 thread: the same slots; an op reallocs a block to a new size (1/8: frees it)
 *   prodcons    THREADS producer/consumer pairs: producers malloc, consumers free (every free is remote)
 *   parallel    THREADS threads doing `mixed` at once on their own blocks
 *   falseshare  Hoard's cache-scratch: the main thread mallocs one 8-byte object per thread; each thread
 *               frees its object, then mallocs 8 bytes, writes them many times, frees, in a loop. An
 *               allocator that hands the freed neighbour back to the thread makes threads write to
 *               the same cache line (passive false sharing).
 *   churn       threads that live briefly: THREADS at a time, each mallocs 256 blocks, frees 192,
 *               and swaps 64 into a shared array (freeing blocks of threads that have exited)
 *   sizes-small 1 thread, 2048 live blocks, sizes log-uniform over every small bin (16 B..32 KiB)
 *   sizes-wide  1 thread, 64 live blocks, 32 KiB..1 MiB (bitslab: multi-slab)
 *   sizes-huge  1 thread, 16 live blocks, 1 MiB..8 MiB (bitslab: own mappings)
 *   memory      THREADS threads build ~200 MB of mixed blocks (mostly small, some up to 4 MiB), then
 *               free all of it; RSS is sampled at once (rss_end), after --delay seconds (rss_after,
 *               default 2 s), after each thread has made a few small allocations (rss_tick), all
 *               with the threads alive and idle, and after they have exited (rss_exit).
 *   ring        1 thread: 4096 live blocks of 16..256 B; a step frees a random slot and mallocs a
 *               new block into it, writing its first byte. The steps run in ring_steps(), which the
 *               driver measures with callgrind --toggle-collect=ring_steps*.
 *   larson      THREADS threads, each replacing random blocks (16 B..1 KiB) of a 2048-block array;
 *               16 rounds, after each of which every array moves on to the next thread, so frees
 *               hit blocks that other threads allocated
 *   larson-sized  the same, freeing with C23 free_sized() when dlsym finds it (free otherwise)
 *   prodcons-many THREADS producers and one consumer that frees everything (a bounded ring each)
 *   huge-loop   1 thread: malloc 5..25 MiB, write one byte in every page, free; 100 times
 *   realloc-grow     1 thread: realloc one buffer from 16 B to 64 MiB in x1.25 steps, 6 times
 *   realloc-grow-4k  1 thread: the same in +4 KiB steps (16,384 reallocs), once
 *
 * Every block carries an id that is checked before it is freed (bench_util.h):
 * an allocator that hands out overlapping memory makes the program abort.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

#define MAX_THREADS 256
#define CACHE_LINE 64

typedef struct params {
    const char *workload;
    int threads;
    double scale;
    uint64_t seed;
    double delay;
} params_t;

typedef struct result {
    uint64_t ops;
    double seconds;     /* wall time of the workload */
    double cpu_seconds; /* CPU time of the whole process (all threads) in that time */
    long base_kb, peak_kb, end_kb;
    long after_kb, tick_kb, exit_kb; /* memory workload only; -1 otherwise */
    int shared;                      /* falseshare only; -1 otherwise */
    const char *free_fn;             /* larson*: the free function that ran; NULL otherwise */
    size_t grow_cap;                 /* realloc-grow*: the size grown to; 0 otherwise */
} result_t;

static uint64_t scaled(const params_t *p, double base, uint64_t min)
{
    double v = base * p->scale;
    return v < (double)min ? min : (uint64_t)v;
}

/* ---- a team of threads started together ------------------------------------------- */

typedef void (*work_fn)(int id, int n, void *ctx);

typedef struct team_arg {
    work_fn fn;
    int id, n;
    void *ctx;
    pthread_barrier_t *start;
    double t0, t1; /* this thread's start and end */
} team_arg_t;

static void *team_main(void *a)
{
    team_arg_t *t = a;
    pthread_barrier_wait(t->start);
    t->t0 = now_s();
    t->fn(t->id, t->n, t->ctx);
    t->t1 = now_s();
    return NULL;
}

/* CPU time team_run() measured, summed over its calls. */
static double team_cpu;

/* Runs fn(i, n, ctx) on n new threads released together; returns the seconds
 * from the first thread's start to the last one's end. The threads take the
 * times themselves: with more threads than cores, the main thread may not run
 * again until they are done. The process CPU time from their release to the
 * last join goes to team_cpu. */
static double team_run(int n, work_fn fn, void *ctx)
{
    pthread_t tids[MAX_THREADS];
    team_arg_t args[MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        args[i] = (team_arg_t){fn, i, n, ctx, &start, 0, 0};
        int e = pthread_create(&tids[i], NULL, team_main, &args[i]);
        if (e) bench_die("pthread_create: %s", strerror(e));
    }
    double c0 = cpu_s(); /* before the release: the process clock counts every thread */
    pthread_barrier_wait(&start);
    double t0 = 0, t1 = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(tids[i], NULL);
        if (i == 0 || args[i].t0 < t0) t0 = args[i].t0;
        if (args[i].t1 > t1) t1 = args[i].t1;
    }
    team_cpu += cpu_s() - c0;
    pthread_barrier_destroy(&start);
    return t1 - t0;
}

/* Splits `total` units of work between n threads. */
static uint64_t share(uint64_t total, int id, int n)
{
    return total / (uint64_t)n + ((uint64_t)id < total % (uint64_t)n ? 1 : 0);
}

/* ---- slots: a live set with random replacement (mixed, parallel, sizes-*) ---------- */

typedef struct slot {
    void *p;
    size_t size;
    uint64_t id;
} slot_t;

typedef size_t (*size_fn)(rng_t *r);

static size_t size_small(rng_t *r) { return rng_small_size(r); }
static size_t size_all_bins(rng_t *r) { return rng_log_size(r, 16, 32768); }
static size_t size_wide(rng_t *r) { return rng_log_size(r, 32768 + 1, 1 << 20); }
static size_t size_huge(rng_t *r) { return rng_log_size(r, (1 << 20) + 1, 8 << 20); }

static void slot_alloc(slot_t *s, size_t size, uint64_t id)
{
    s->p = malloc(size);
    if (!s->p) bench_die("malloc(%zu) returned NULL", size);
    s->size = size;
    s->id = id;
    block_fill(s->p, size, id);
}

static void slot_free(slot_t *s)
{
    block_check(s->p, s->size, s->id);
    free(s->p);
    s->p = NULL;
}

/* Fills nslots, then `ops` times frees a random slot and mallocs it anew, then
 * frees everything. Returns the number of malloc+free pairs. */
static uint64_t replace_loop(rng_t *r, size_t nslots, uint64_t ops, size_fn sz, uint64_t id)
{
    slot_t *slots = bench_xmalloc(nslots * sizeof *slots);
    for (size_t i = 0; i < nslots; i++) slot_alloc(&slots[i], sz(r), id++);
    for (uint64_t i = 0; i < ops; i++) {
        slot_t *s = &slots[rng_below(r, (uint32_t)nslots)];
        slot_free(s);
        slot_alloc(s, sz(r), id++);
    }
    for (size_t i = 0; i < nslots; i++) slot_free(&slots[i]);
    free(slots);
    return ops + nslots;
}

typedef struct replace_ctx {
    const params_t *p;
    size_t nslots;
    uint64_t total_ops;
    size_fn sz;
    _Atomic uint64_t ops;
} replace_ctx_t;

static void replace_worker(int id, int n, void *c)
{
    replace_ctx_t *x = c;
    rng_t r = rng_make(x->p->seed, (uint64_t)id);
    uint64_t done = replace_loop(&r, x->nslots, share(x->total_ops, id, n), x->sz, (uint64_t)id << 40);
    atomic_fetch_add(&x->ops, done);
}

static void run_replace(const params_t *p, result_t *res, size_t nslots, double base_ops, size_fn sz, int threads)
{
    replace_ctx_t x = {.p = p, .nslots = nslots, .total_ops = scaled(p, base_ops, 1000), .sz = sz};
    res->seconds = team_run(threads, replace_worker, &x);
    res->ops = atomic_load(&x.ops);
}

static void w_mixed(const params_t *p, result_t *res) { run_replace(p, res, 8192, 4e6, size_small, 1); }
static void w_parallel(const params_t *p, result_t *res) { run_replace(p, res, 8192, 4e6, size_small, p->threads); }
static void w_sizes_small(const params_t *p, result_t *res) { run_replace(p, res, 2048, 1.5e6, size_all_bins, 1); }
static void w_sizes_wide(const params_t *p, result_t *res) { run_replace(p, res, 64, 1e5, size_wide, 1); }
static void w_sizes_huge(const params_t *p, result_t *res) { run_replace(p, res, 16, 1.5e4, size_huge, 1); }

/* ---- realloc ------------------------------------------------------------------------ */

typedef struct realloc_ctx {
    const params_t *p;
    uint64_t ops;
} realloc_ctx_t;

static void realloc_worker(int id, int n, void *c)
{
    (void)n;
    realloc_ctx_t *x = c;
    rng_t r = rng_make(x->p->seed, (uint64_t)id);
    const size_t nslots = 8192;
    slot_t *slots = bench_xmalloc(nslots * sizeof *slots);
    uint64_t next_id = 1;
    for (size_t i = 0; i < nslots; i++) slot_alloc(&slots[i], rng_small_size(&r), next_id++);
    for (uint64_t i = 0; i < x->ops; i++) {
        slot_t *s = &slots[rng_below(&r, (uint32_t)nslots)];
        if (!s->p) {
            slot_alloc(s, rng_small_size(&r), next_id++);
        } else if (rng_below(&r, 8) == 0) {
            slot_free(s);
        } else {
            size_t size = rng_small_size(&r);
            block_check(s->p, s->size, s->id);
            uintptr_t old = (uintptr_t)s->p; /* for the message only */
            void *q = realloc(s->p, size);
            if (!q) bench_die("realloc(%#lx, %zu) returned NULL", (unsigned long)old, size);
            const uint64_t *w = q; /* the first 16 bytes must have moved with the block */
            if (w[0] != s->id || w[1] != (~s->id ^ (uint64_t)s->size))
                bench_die("realloc(%#lx, %zu -> %zu) = %p lost the contents", (unsigned long)old, s->size, size, q);
            s->p = q;
            s->size = size;
            s->id = next_id++;
            block_fill(q, size, s->id);
        }
    }
    for (size_t i = 0; i < nslots; i++)
        if (slots[i].p) slot_free(&slots[i]);
    free(slots);
}

static void w_realloc(const params_t *p, result_t *res)
{
    realloc_ctx_t x = {.p = p, .ops = scaled(p, 3e6, 1000)};
    res->seconds = team_run(1, realloc_worker, &x);
    res->ops = x.ops;
}

/* ---- producer/consumer --------------------------------------------------------------- */

#define RING 4096 /* pointers per pair */
#define PUBLISH 32 /* the producer publishes its head every this many items */

typedef struct ring {
    _Alignas(CACHE_LINE) _Atomic uint64_t head; /* written by the producer */
    _Alignas(CACHE_LINE) _Atomic uint64_t tail; /* written by the consumer */
    _Alignas(CACHE_LINE) void *slot[RING];
} ring_t;

typedef struct pc_ctx {
    const params_t *p;
    int pairs;
    uint64_t total;
    ring_t *rings;
} pc_ctx_t;

static void pc_worker(int id, int n, void *c)
{
    (void)n;
    pc_ctx_t *x = c;
    int pair = id / 2;
    ring_t *q = &x->rings[pair];
    uint64_t items = share(x->total, pair, x->pairs);
    if (id % 2 == 0) { /* producer */
        rng_t r = rng_make(x->p->seed, (uint64_t)pair);
        uint64_t head = 0, tail = 0;
        for (uint64_t i = 0; i < items; i++) {
            size_t size = rng_small_size(&r);
            void *b = malloc(size);
            if (!b) bench_die("malloc(%zu) returned NULL", size);
            block_fill(b, size, ((uint64_t)pair << 40) | i);
            while (head - tail >= RING) {
                atomic_store_explicit(&q->head, head, memory_order_release);
                tail = atomic_load_explicit(&q->tail, memory_order_acquire);
                if (head - tail >= RING) sched_yield();
            }
            q->slot[head % RING] = b;
            head++;
            if (head % PUBLISH == 0) atomic_store_explicit(&q->head, head, memory_order_release);
        }
        atomic_store_explicit(&q->head, head, memory_order_release);
    } else { /* consumer */
        uint64_t tail = 0;
        while (tail < items) {
            uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
            if (head == tail) {
                sched_yield();
                continue;
            }
            for (; tail < head; tail++) {
                void *b = q->slot[tail % RING];
                block_check_self(b);
                free(b);
            }
            atomic_store_explicit(&q->tail, tail, memory_order_release);
        }
    }
}

static void w_prodcons(const params_t *p, result_t *res)
{
    pc_ctx_t x = {.p = p, .pairs = p->threads, .total = scaled(p, 2e6, 1000)};
    /* The rings come from mmap-like aligned_alloc; allocated before timing. */
    x.rings = aligned_alloc(CACHE_LINE, sizeof(ring_t) * (size_t)x.pairs);
    if (!x.rings) bench_die("aligned_alloc for the rings failed");
    memset(x.rings, 0, sizeof(ring_t) * (size_t)x.pairs);
    res->seconds = team_run(2 * x.pairs, pc_worker, &x);
    res->ops = x.total;
    free(x.rings);
}

/* ---- false sharing probe (cache-scratch) ---------------------------------------------- */

#define FS_SIZE 8
#define FS_WRITES 64

typedef struct fs_ctx {
    const params_t *p;
    uint64_t rounds;
    void **objs;
    uintptr_t *first; /* each thread's first own block */
    pthread_barrier_t all_hold; /* every thread holds its first block */
} fs_ctx_t;

static void fs_worker(int id, int n, void *c)
{
    fs_ctx_t *x = c;
    free(x->objs[id]); /* a block the main thread allocated next to the other threads' ones */
    /* The first own block, recorded while every thread holds its own. */
    void *first = malloc(FS_SIZE);
    if (!first) bench_die("malloc(%d) returned NULL", FS_SIZE);
    x->first[id] = (uintptr_t)first;
    pthread_barrier_wait(&x->all_hold);
    free(first);
    uint64_t rounds = share(x->rounds, id, n);
    for (uint64_t i = 0; i < rounds; i++) {
        volatile unsigned char *b = malloc(FS_SIZE);
        if (!b) bench_die("malloc(%d) returned NULL", FS_SIZE);
        for (int j = 0; j < FS_WRITES; j++) b[j % FS_SIZE]++;
        free((void *)b);
    }
}

static void w_falseshare(const params_t *p, result_t *res)
{
    fs_ctx_t x = {.p = p, .rounds = scaled(p, 1.5e6, 1000)};
    x.objs = bench_xmalloc(sizeof(void *) * (size_t)p->threads);
    x.first = bench_xmalloc(sizeof(uintptr_t) * (size_t)p->threads);
    for (int i = 0; i < p->threads; i++) x.objs[i] = bench_xmalloc(FS_SIZE); /* adjacent for most allocators */
    pthread_barrier_init(&x.all_hold, NULL, (unsigned)p->threads);
    res->seconds = team_run(p->threads, fs_worker, &x);
    pthread_barrier_destroy(&x.all_hold);
    res->ops = x.rounds;
    /* The allocator's part, whatever this machine's cache costs: how many
     * threads got a first block on a cache line that another thread's first
     * block (live at the same time) also lies on. */
    res->shared = 0;
    for (int i = 0; i < p->threads; i++)
        for (int j = 0; j < p->threads; j++)
            if (i != j && x.first[i] / CACHE_LINE == x.first[j] / CACHE_LINE) {
                res->shared++;
                break;
            }
    free(x.first);
    free(x.objs);
}

/* ---- thread churn ------------------------------------------------------------------------ */

#define CHURN_BLOCKS 256
#define CHURN_KEEP 64
#define CHURN_EXCHANGE 4096

typedef struct churn_ctx {
    const params_t *p;
    uint64_t wave;
    _Atomic(void *) *exchange;
} churn_ctx_t;

static void churn_worker(int id, int n, void *c)
{
    churn_ctx_t *x = c;
    uint64_t tno = x->wave * (uint64_t)n + (uint64_t)id;
    rng_t r = rng_make(x->p->seed, tno);
    void *blocks[CHURN_BLOCKS];
    size_t sizes[CHURN_BLOCKS];
    for (int i = 0; i < CHURN_BLOCKS; i++) {
        sizes[i] = rng_small_size(&r);
        blocks[i] = malloc(sizes[i]);
        if (!blocks[i]) bench_die("malloc(%zu) returned NULL", sizes[i]);
        block_fill(blocks[i], sizes[i], (tno << 20) | (uint64_t)i);
    }
    for (int i = CHURN_KEEP; i < CHURN_BLOCKS; i++) {
        block_check(blocks[i], sizes[i], (tno << 20) | (uint64_t)i);
        free(blocks[i]);
    }
    for (int i = 0; i < CHURN_KEEP; i++) { /* handed over; freed by a later thread or main */
        void *old = atomic_exchange(&x->exchange[rng_below(&r, CHURN_EXCHANGE)], blocks[i]);
        if (old) {
            block_check_self(old);
            free(old);
        }
    }
}

static void w_churn(const params_t *p, result_t *res)
{
    churn_ctx_t x = {.p = p};
    x.exchange = calloc(CHURN_EXCHANGE, sizeof *x.exchange);
    if (!x.exchange) bench_die("calloc failed");
    uint64_t total = scaled(p, 2000, (uint64_t)p->threads);
    uint64_t waves = (total + (uint64_t)p->threads - 1) / (uint64_t)p->threads;
    double c0 = cpu_s();
    double t0 = now_s();
    for (x.wave = 0; x.wave < waves; x.wave++) team_run(p->threads, churn_worker, &x);
    for (int i = 0; i < CHURN_EXCHANGE; i++) {
        void *b = atomic_load(&x.exchange[i]);
        if (b) {
            block_check_self(b);
            free(b);
        }
    }
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    res->ops = waves * (uint64_t)p->threads * CHURN_BLOCKS;
    free(x.exchange);
}

/* ---- memory: peak RSS and RSS after everything is freed ---------------------------------- */

typedef struct mem_ctx {
    const params_t *p;
    uint64_t per_thread;
    pthread_barrier_t phase; /* threads + main */
    double t0[MAX_THREADS], t1[MAX_THREADS];
    _Atomic uint64_t ops;
} mem_ctx_t;

static void mem_worker(int id, int n, void *c)
{
    (void)n;
    mem_ctx_t *x = c;
    rng_t r = rng_make(x->p->seed, (uint64_t)id);
    uint64_t count = x->per_thread;
    if (count % 7919 == 0) count++; /* the free order below needs gcd(7919, count) == 1 */
    slot_t *slots = bench_xmalloc(count * sizeof *slots);
    pthread_barrier_wait(&x->phase); /* A: start */
    x->t0[id] = now_s();
    for (uint64_t i = 0; i < count; i++) {
        size_t size = (i % 4000 == 3999) ? rng_log_size(&r, 32768, 4 << 20) : rng_small_size(&r);
        slot_alloc(&slots[i], size, i + 1);
    }
    for (uint64_t i = 0; i < count; i++) slot_free(&slots[(i * 7919) % count]); /* scattered order */
    free(slots);
    atomic_fetch_add(&x->ops, count);
    x->t1[id] = now_s();
    pthread_barrier_wait(&x->phase); /* B: all freed; main samples RSS and waits */
    pthread_barrier_wait(&x->phase); /* C: a little allocation activity */
    for (int i = 0; i < 100; i++) {
        void *b = malloc(64);
        escape(b);
        free(b);
    }
    pthread_barrier_wait(&x->phase); /* D: main samples again */
    pthread_barrier_wait(&x->phase); /* E: only then may the threads exit */
}

static void *mem_thread(void *a)
{
    team_arg_t *t = a;
    t->fn(t->id, t->n, t->ctx);
    return NULL;
}

static void w_memory(const params_t *p, result_t *res)
{
    mem_ctx_t x = {.p = p};
    int n = p->threads;
    x.per_thread = scaled(p, 6e5, 1000) / (uint64_t)n;
    if (x.per_thread < 100) x.per_thread = 100;
    pthread_barrier_init(&x.phase, NULL, (unsigned)n + 1);
    pthread_t tids[MAX_THREADS];
    team_arg_t args[MAX_THREADS];
    for (int i = 0; i < n; i++) {
        args[i] = (team_arg_t){mem_worker, i, n, &x, NULL, 0, 0};
        int e = pthread_create(&tids[i], NULL, mem_thread, &args[i]);
        if (e) bench_die("pthread_create: %s", strerror(e));
    }
    double c0 = cpu_s();
    pthread_barrier_wait(&x.phase); /* A */
    pthread_barrier_wait(&x.phase); /* B */
    res->cpu_seconds = cpu_s() - c0;
    double t0 = x.t0[0], t1 = x.t1[0];
    for (int i = 1; i < n; i++) {
        if (x.t0[i] < t0) t0 = x.t0[i];
        if (x.t1[i] > t1) t1 = x.t1[i];
    }
    res->seconds = t1 - t0;
    res->end_kb = rss_kb();
    struct timespec ts = {(time_t)p->delay, (long)((p->delay - (double)(time_t)p->delay) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    res->after_kb = rss_kb();
    pthread_barrier_wait(&x.phase); /* C */
    pthread_barrier_wait(&x.phase); /* D */
    res->tick_kb = rss_kb();
    pthread_barrier_wait(&x.phase); /* E */
    for (int i = 0; i < n; i++) pthread_join(tids[i], NULL);
    res->exit_kb = rss_kb();
    pthread_barrier_destroy(&x.phase);
    res->ops = atomic_load(&x.ops);
}

/* ---- ring: steady state of 4096 small blocks (also the callgrind ring figure) ------------- */

#define RING_SLOTS 4096

/* One step: free a random slot's block, malloc a new one of 16..256 B into
 * it and touch its first byte (which the next free of that slot checks). */
static inline __attribute__((always_inline)) void ring_step(unsigned char **slots, rng_t *r)
{
    uint32_t i = rng_below(r, RING_SLOTS);
    unsigned char *b = slots[i];
    if (b[0] != (unsigned char)i) bench_die("ring: block %p of slot %u was overwritten", (void *)b, i);
    free(b);
    size_t size = 16 + rng_below(r, 241);
    b = malloc(size);
    if (!b) bench_die("malloc(%zu) returned NULL", size);
    b[0] = (unsigned char)i;
    slots[i] = b;
}

/* The measured steps, in a function of their own: the driver counts the
 * instructions of the allocator under callgrind with --toggle-collect=ring_steps*
 * (collection on inside this function only) and subtracts this function's own
 * instructions (the loop, the random numbers, the touch). Not inlined, so that
 * the symbol exists; the warm-up in w_ring() inlines the step (a second function
 * with the same code could be folded into this one by the linker or compiler). */
__attribute__((noinline)) void ring_steps(unsigned char **slots, rng_t *r, uint64_t n);
__attribute__((noinline)) void ring_steps(unsigned char **slots, rng_t *r, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) ring_step(slots, r);
}

static void w_ring(const params_t *p, result_t *res)
{
    rng_t r = rng_make(p->seed, 0);
    unsigned char **slots = bench_xmalloc(RING_SLOTS * sizeof *slots);
    uint64_t ops = scaled(p, 1e7, 1000);
    double c0 = cpu_s(), t0 = now_s();
    for (uint32_t i = 0; i < RING_SLOTS; i++) {
        size_t size = 16 + rng_below(&r, 241);
        slots[i] = bench_xmalloc(size);
        slots[i][0] = (unsigned char)i;
    }
    for (uint32_t k = 0; k < RING_SLOTS; k++) ring_step(slots, &r); /* warm-up: every slot replaced ~once */
    ring_steps(slots, &r, ops);
    for (uint32_t i = 0; i < RING_SLOTS; i++) free(slots[i]);
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    res->ops = ops;
    free(slots);
}

/* ---- larson: a server whose connections move between threads ---------------------------- */

#define LARSON_BLOCKS 2048 /* blocks per array (one array per thread) */
#define LARSON_ROUNDS 16   /* after each round, every array moves on to the next thread */

typedef void (*free_sized_fn)(void *, size_t);

typedef struct larson_ctx {
    const params_t *p;
    uint64_t total_steps;
    slot_t *arrays; /* threads x LARSON_BLOCKS */
    pthread_barrier_t round;
    free_sized_fn free_sized; /* NULL: plain free */
    _Atomic uint64_t ops;
} larson_ctx_t;

static void larson_free(larson_ctx_t *x, slot_t *s)
{
    block_check(s->p, s->size, s->id);
    if (x->free_sized) x->free_sized(s->p, s->size);
    else free(s->p);
    s->p = NULL;
}

static void larson_worker(int id, int n, void *c)
{
    larson_ctx_t *x = c;
    rng_t r = rng_make(x->p->seed, (uint64_t)id);
    uint64_t next_id = ((uint64_t)id << 40) + 1;
    slot_t *own = &x->arrays[(size_t)id * LARSON_BLOCKS];
    for (int i = 0; i < LARSON_BLOCKS; i++) slot_alloc(&own[i], 16 + rng_below(&r, 1009), next_id++);
    uint64_t steps = share(x->total_steps, id, n), done = LARSON_BLOCKS;
    for (int round = 0; round < LARSON_ROUNDS; round++) {
        pthread_barrier_wait(&x->round); /* the arrays of the previous round are let go */
        /* round r: thread id holds the array thread id - r started with */
        slot_t *a = &x->arrays[(size_t)((id + n - round % n) % n) * LARSON_BLOCKS];
        uint64_t k = share(steps, round, LARSON_ROUNDS);
        for (uint64_t i = 0; i < k; i++) {
            slot_t *s = &a[rng_below(&r, LARSON_BLOCKS)];
            larson_free(x, s);
            slot_alloc(s, 16 + rng_below(&r, 1009), next_id++);
        }
        done += k;
    }
    pthread_barrier_wait(&x->round);
    slot_t *last = &x->arrays[(size_t)((id + n - LARSON_ROUNDS % n) % n) * LARSON_BLOCKS];
    for (int i = 0; i < LARSON_BLOCKS; i++) larson_free(x, &last[i]);
    atomic_fetch_add(&x->ops, done);
}

static void run_larson(const params_t *p, result_t *res, bool sized)
{
    larson_ctx_t x = {.p = p, .total_steps = scaled(p, 4e6, 1000)};
    if (sized) {
        /* C23 free_sized: glibc 2.36 lacks it; the allocator in LD_PRELOAD may have it. */
        x.free_sized = (free_sized_fn)dlsym(RTLD_DEFAULT, "free_sized");
    }
    res->free_fn = x.free_sized ? "free_sized" : "free";
    x.arrays = bench_xmalloc(sizeof(slot_t) * LARSON_BLOCKS * (size_t)p->threads);
    pthread_barrier_init(&x.round, NULL, (unsigned)p->threads);
    res->seconds = team_run(p->threads, larson_worker, &x);
    res->ops = atomic_load(&x.ops);
    pthread_barrier_destroy(&x.round);
    free(x.arrays);
}

static void w_larson(const params_t *p, result_t *res) { run_larson(p, res, false); }
static void w_larson_sized(const params_t *p, result_t *res) { run_larson(p, res, true); }

/* ---- prodcons-many: several producers, one consumer -------------------------------------- */

typedef struct pcm_ctx {
    const params_t *p;
    int producers;
    uint64_t total;
    ring_t *rings; /* one bounded ring per producer, all drained by the consumer */
} pcm_ctx_t;

static void pcm_worker(int id, int n, void *c)
{
    (void)n;
    pcm_ctx_t *x = c;
    if (id < x->producers) { /* producer: the same code as prodcons */
        ring_t *q = &x->rings[id];
        uint64_t items = share(x->total, id, x->producers);
        rng_t r = rng_make(x->p->seed, (uint64_t)id);
        uint64_t head = 0, tail = 0;
        for (uint64_t i = 0; i < items; i++) {
            size_t size = rng_small_size(&r);
            void *b = malloc(size);
            if (!b) bench_die("malloc(%zu) returned NULL", size);
            block_fill(b, size, ((uint64_t)id << 40) | i);
            while (head - tail >= RING) {
                atomic_store_explicit(&q->head, head, memory_order_release);
                tail = atomic_load_explicit(&q->tail, memory_order_acquire);
                if (head - tail >= RING) sched_yield();
            }
            q->slot[head % RING] = b;
            head++;
            if (head % PUBLISH == 0) atomic_store_explicit(&q->head, head, memory_order_release);
        }
        atomic_store_explicit(&q->head, head, memory_order_release);
        return;
    }
    /* the consumer: takes what each ring holds in turn and frees it */
    uint64_t left = x->total;
    uint64_t tails[MAX_THREADS] = {0};
    while (left > 0) {
        bool got = false;
        for (int k = 0; k < x->producers; k++) {
            ring_t *q = &x->rings[k];
            uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire), tail = tails[k];
            if (head == tail) continue;
            got = true;
            for (; tail < head; tail++) {
                void *b = q->slot[tail % RING];
                block_check_self(b);
                free(b);
            }
            left -= tail - tails[k];
            tails[k] = tail;
            atomic_store_explicit(&q->tail, tail, memory_order_release);
        }
        if (!got) sched_yield();
    }
}

static void w_prodcons_many(const params_t *p, result_t *res)
{
    pcm_ctx_t x = {.p = p, .producers = p->threads, .total = scaled(p, 3e6, 1000)};
    x.rings = aligned_alloc(CACHE_LINE, sizeof(ring_t) * (size_t)x.producers);
    if (!x.rings) bench_die("aligned_alloc for the rings failed");
    memset(x.rings, 0, sizeof(ring_t) * (size_t)x.producers);
    res->seconds = team_run(x.producers + 1, pcm_worker, &x);
    res->ops = x.total;
    free(x.rings);
}

/* ---- huge-loop: big buffers allocated, used and freed over and over ----------------------- */

#define PAGE 4096

static void w_huge_loop(const params_t *p, result_t *res)
{
    rng_t r = rng_make(p->seed, 0);
    uint64_t iters = scaled(p, 100, 3);
    double c0 = cpu_s(), t0 = now_s();
    for (uint64_t i = 0; i < iters; i++) {
        size_t size = rng_range(&r, 5u << 20, 25u << 20);
        volatile unsigned char *b = malloc(size);
        if (!b) bench_die("malloc(%zu) returned NULL", size);
        /* Used as a buffer is: one byte written in every page, so a page the
         * allocator gave back to the OS costs a page fault here. */
        for (size_t off = 0; off < size; off += PAGE) b[off] = (unsigned char)i;
        b[size - 1] = (unsigned char)i;
        if (b[0] != (unsigned char)i) bench_die("huge-loop: block %p overwritten", (void *)b);
        free((void *)b);
    }
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    res->ops = iters;
}

/* ---- realloc-grow: one buffer grown from 16 B to 64 MiB --------------------------------- */

static unsigned char grow_tag(size_t size) { return (unsigned char)(size * 131 + 17); }

/* Grows a buffer from 16 B to `cap` by realloc, each step to max(size * 5/4,
 * size + 16) (`factor`) or size + 4 KiB (!factor), writing one byte in every
 * new page and the new last byte, and checking the old last byte survived the
 * move. Returns the number of reallocs. */
static uint64_t grow_once(size_t cap, bool factor)
{
    size_t size = 16;
    unsigned char *b = malloc(size);
    if (!b) bench_die("malloc(16) returned NULL");
    b[0] = 0xA5;
    b[size - 1] = grow_tag(size);
    uint64_t n = 0;
    while (size < cap) {
        size_t next = factor ? size + (size / 4 > 16 ? size / 4 : 16) : size + 4096;
        if (next > cap) next = cap;
        unsigned char *q = realloc(b, next);
        if (!q) bench_die("realloc(%zu -> %zu) returned NULL", size, next);
        if (q[0] != 0xA5 || q[size - 1] != grow_tag(size))
            bench_die("realloc(%zu -> %zu) = %p lost the contents", size, next, (void *)q);
        for (size_t off = (size + PAGE - 1) & ~(size_t)(PAGE - 1); off < next; off += PAGE) q[off] = 1;
        q[next - 1] = grow_tag(next);
        b = q;
        size = next;
        n++;
    }
    free(b);
    return n;
}

static void run_grow(const params_t *p, result_t *res, bool factor, double base_cycles)
{
    /* 64 MiB, repeated; below scale 1 the target shrinks instead (at least 1 MiB). */
    size_t cap = (size_t)64 << 20;
    if (p->scale < 1) {
        cap = (size_t)((double)cap * p->scale);
        if (cap < ((size_t)1 << 20)) cap = (size_t)1 << 20;
    }
    uint64_t cycles = p->scale < 1 ? 1 : scaled(p, base_cycles, 1);
    uint64_t ops = 0;
    double c0 = cpu_s(), t0 = now_s();
    for (uint64_t i = 0; i < cycles; i++) ops += grow_once(cap, factor);
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    res->ops = ops;
    res->grow_cap = cap;
}

static void w_realloc_grow(const params_t *p, result_t *res) { run_grow(p, res, true, 6); }
static void w_realloc_grow_4k(const params_t *p, result_t *res) { run_grow(p, res, false, 1); }

/* ---- the table of workloads ----------------------------------------------------------------- */

typedef enum { SINGLE, THREADED, PRODUCERS } kind_t;
static const char *const kind_names[] = {"single", "threaded", "producers"};

typedef struct workload {
    const char *name;
    void (*fn)(const params_t *p, result_t *res);
    kind_t kind; /* SINGLE ignores -t; THREADED: -t threads; PRODUCERS: -t producers + 1 consumer */
} workload_t;

static const workload_t workloads[] = {
    {"mixed", w_mixed, SINGLE},
    {"realloc", w_realloc, SINGLE},
    {"prodcons", w_prodcons, THREADED},
    {"parallel", w_parallel, THREADED},
    {"falseshare", w_falseshare, THREADED},
    {"churn", w_churn, THREADED},
    {"sizes-small", w_sizes_small, SINGLE},
    {"sizes-wide", w_sizes_wide, SINGLE},
    {"sizes-huge", w_sizes_huge, SINGLE},
    {"memory", w_memory, THREADED},
    {"ring", w_ring, SINGLE},
    {"larson", w_larson, THREADED},
    {"larson-sized", w_larson_sized, THREADED},
    {"prodcons-many", w_prodcons_many, PRODUCERS},
    {"huge-loop", w_huge_loop, SINGLE},
    {"realloc-grow", w_realloc_grow, SINGLE},
    {"realloc-grow-4k", w_realloc_grow_4k, SINGLE},
};
#define NUM_WORKLOADS (sizeof workloads / sizeof workloads[0])

static double pct_of_growth(long kb, long base, long peak)
{
    return peak > base ? (double)(kb - base) * 100.0 / (double)(peak - base) : 0.0;
}

static void run_one(const workload_t *w, const params_t *p)
{
    result_t res = {.after_kb = -1, .tick_kb = -1, .exit_kb = -1, .shared = -1};
    res.base_kb = rss_kb();
    team_cpu = 0;
    w->fn(p, &res);
    if (res.cpu_seconds == 0) res.cpu_seconds = team_cpu;
    res.peak_kb = peak_rss_kb();
    if (!res.end_kb) res.end_kb = rss_kb();
    bench_usage_t u = bench_usage(); /* the whole process: start-up and every thread included */
    result_add("RESULT workload=%s threads=%d ops=%llu seconds=%.6f cpu_seconds=%.6f ns_per_op=%.2f base_rss_kb=%ld "
               "peak_rss_kb=%ld rss_end_kb=%ld maxrss_kb=%ld minflt=%ld majflt=%ld",
               w->name, w->kind == SINGLE ? 1 : p->threads, (unsigned long long)res.ops, res.seconds,
               res.cpu_seconds, res.ops ? res.seconds * 1e9 / (double)res.ops : 0.0, res.base_kb, res.peak_kb,
               res.end_kb, u.maxrss_kb, u.minflt, u.majflt);
    if (w->kind == PRODUCERS) result_add(" consumers=1");
    if (res.after_kb >= 0)
        result_add(" rss_after_kb=%ld rss_tick_kb=%ld rss_exit_kb=%ld delay_s=%g rss_end_pct=%.1f "
                   "rss_after_pct=%.1f rss_tick_pct=%.1f rss_exit_pct=%.1f",
                   res.after_kb, res.tick_kb, res.exit_kb, p->delay,
                   pct_of_growth(res.end_kb, res.base_kb, res.peak_kb),
                   pct_of_growth(res.after_kb, res.base_kb, res.peak_kb),
                   pct_of_growth(res.tick_kb, res.base_kb, res.peak_kb),
                   pct_of_growth(res.exit_kb, res.base_kb, res.peak_kb));
    if (res.shared >= 0) result_add(" threads_sharing_a_line=%d", res.shared);
    if (res.free_fn) result_add(" free_fn=%s", res.free_fn);
    if (res.grow_cap) result_add(" grow_to_kb=%zu", res.grow_cap >> 10);
    result_add(" malloc_lib=%s seed=%llu scale=%g", malloc_lib(), (unsigned long long)p->seed, p->scale);
    result_emit();
}

static const workload_t *find_workload(const char *name)
{
    for (size_t i = 0; i < NUM_WORKLOADS; i++)
        if (!strcmp(workloads[i].name, name)) return &workloads[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bitslab-bench WORKLOAD [-t THREADS] [-s SCALE] [--seed N] [--delay SECONDS] [--expect-lib NAME]\n"
               "                     [--alarm SECONDS]\n"
               "       bitslab-bench --smoke [--expect-lib NAME]\n"
               "       bitslab-bench --list\n"
               "workloads:");
    for (size_t i = 0; i < NUM_WORKLOADS; i++)
        fprintf(f, " %s%s", workloads[i].name,
                workloads[i].kind == THREADED ? "*" : workloads[i].kind == PRODUCERS ? "+" : "");
    fprintf(f, "\n(* -t threads; + -t producers and one consumer; the others run on one thread)\n");
}

int main(int argc, char **argv)
{
    params_t p = {.threads = 1, .scale = 1.0, .seed = 42, .delay = 2.0};
    const char *expect = NULL;
    double alarm_s = 0;
    bool smoke = false, list = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--smoke")) smoke = true;
        else if (!strcmp(a, "--list")) list = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-t") && has_val) p.threads = atoi(argv[++i]);
        else if (!strcmp(a, "-s") && has_val) p.scale = atof(argv[++i]);
        else if (!strcmp(a, "--seed") && has_val) p.seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(a, "--delay") && has_val) p.delay = atof(argv[++i]);
        else if (!strcmp(a, "--expect-lib") && has_val) expect = argv[++i];
        else if (!strcmp(a, "--alarm") && has_val) alarm_s = atof(argv[++i]);
        else if (a[0] != '-' && !p.workload) p.workload = a;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (list) {
        for (size_t i = 0; i < NUM_WORKLOADS; i++) printf("%s %s\n", workloads[i].name, kind_names[workloads[i].kind]);
        return 0;
    }
    if (p.threads < 1 || p.threads > MAX_THREADS / 2 || !(p.scale > 0) || p.delay < 0) {
        fprintf(stderr, "bitslab-bench: threads must be 1..%d, scale > 0, delay >= 0\n", MAX_THREADS / 2);
        return 2;
    }
    check_malloc_lib(expect);
    bench_alarm(alarm_s);

    if (smoke) { /* CI: every workload, tiny, at 1, 2 and 8 threads. No timing is judged. */
        static const int counts[] = {1, 2, 8};
        int lines = 0;
        p.scale = 0.002;
        p.delay = 0.01;
        for (size_t i = 0; i < NUM_WORKLOADS; i++)
            for (size_t c = 0; c < (workloads[i].kind == SINGLE ? 1u : 3u); c++) {
                p.threads = counts[c];
                run_one(&workloads[i], &p);
                lines++;
            }
        printf("smoke: %d RESULT lines, malloc from %s\n", lines, malloc_lib());
        return 0;
    }
    if (!p.workload) {
        usage(stderr);
        return 2;
    }
    const workload_t *w = find_workload(p.workload);
    if (!w) {
        fprintf(stderr, "bitslab-bench: unknown workload '%s'\n", p.workload);
        usage(stderr);
        return 2;
    }
    run_one(w, &p);
    return 0;
}
