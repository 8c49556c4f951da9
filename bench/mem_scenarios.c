/*
 * mem_scenarios.c: how much memory an allocator gives back, and when (issue #10).
 *
 *   bitslab-mem SCENARIO [-s SCALE] [--sleep SECONDS] [--seed N] [--expect-lib NAME] [--alarm SECONDS]
 *   bitslab-mem --smoke [--expect-lib NAME]     every scenario, tiny
 *   bitslab-mem --list
 *
 * Like bitslab-bench it calls plain malloc/free, so the allocator is chosen
 * with LD_PRELOAD. Each scenario prints one RESULT line. RSS is VmRSS from
 * /proc/self/status in KiB; "growth" is peak - base, where base is sampled
 * after the program's own bookkeeping arrays (mmap'ed, not from malloc) are
 * touched, so the growth is the allocator's. A figure "_pct" is
 * (RSS - base) / growth in %: 0 = everything given back, 100 = nothing.
 * Sizes are scaled by -s (default 1); --sleep (default 2) is every idle wait.
 *
 *   idle-owner  thread A fills 256 MiB x scale with small blocks (16..1024 B); A frees half of
 *               them while thread B frees the other half at the same time (remote frees to A);
 *               A sleeps, then does 1,000 malloc(64)/free pairs. RSS after the frees, after the
 *               sleep, after the pairs (the headline: after_tick_pct), after both threads exit.
 *   sparse      1,000,000 x scale blocks of 16..2,000 B (uniform), 95 % freed in random order,
 *               5 % survive; RSS after the frees, after the sleep (headline), after 1,000 pairs.
 *               ideal_pct: the survivors' bytes as % of the growth (nothing can go lower).
 *   rlimit-as   256 MiB x scale of small blocks allocated then all freed; RLIMIT_AS is set to
 *               VmSize + 512 MiB (x scale below scale 1, at least 64 MiB) and blocks of
 *               2..16 MiB are malloc'ed (first byte written) until one fails: obtained_mib
 *               (headline; headroom_mib + whatever freed address space the allocator reuses).
 *   fork-child  2 threads allocate 64 MiB x scale each of small blocks and stay alive; the main
 *               thread forks; the child frees all of those blocks (allocated by threads that do
 *               not exist in it) and allocates the same sizes again. child_parent_ratio =
 *               child RSS at the end / parent RSS at the fork (headline; 1.0 = all reused).
 *   lazyfree    the main thread allocates 165 MiB x scale of small blocks and hands them all to
 *               a background thread that frees them (every free is remote); the main thread
 *               then idles for --sleep: after_sleep_pct (headline); then 1,000 pairs; then the
 *               background thread exits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

typedef struct params {
    const char *scenario;
    double scale;
    double sleep_s;
    uint64_t seed;
} params_t;

/* ---- helpers ------------------------------------------------------------------ */

static long vm_rss(void) { return proc_status_kb("VmRSS"); }

/* Bookkeeping memory outside the allocator under test: mapped and touched
 * before the base sample, so it is part of the base, not of the growth. */
static void *map_touched(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) bench_die("mmap(%zu): %s", bytes, strerror(errno));
    memset(p, 0, bytes);
    return p;
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static double pct(long kb, long base, long peak)
{
    return peak > base ? (double)(kb - base) * 100.0 / (double)(peak - base) : 0.0;
}

static void pairs(int n) /* a little allocation activity: gives a lazy allocator its chance to purge */
{
    for (int i = 0; i < n; i++) {
        void *b = malloc(64);
        if (!b) bench_die("malloc(64) returned NULL");
        escape(b);
        free(b);
    }
}

/* A set of blocks: pointers and sizes in mmap'ed bookkeeping arrays. */
typedef struct blocks {
    void **p;
    uint32_t *size;
    size_t n;
} blocks_t;

static blocks_t blocks_map(size_t n)
{
    return (blocks_t){map_touched(n * sizeof(void *)), map_touched(n * sizeof(uint32_t)), n};
}

static void blocks_unmap(blocks_t *b)
{
    munmap(b->p, b->n * sizeof(void *));
    munmap(b->size, b->n * sizeof(uint32_t));
}

/* Mean of rng_small_size(): 1/2 x 72 + 1/4 x 320.5 + 1/4 x 768.5 B. */
#define SMALL_MEAN 308.0

static size_t small_count(double mib) { return (size_t)(mib * 1048576.0 / SMALL_MEAN) + 16; }

static void alloc_one(blocks_t *b, size_t i, size_t size)
{
    void *q = malloc(size);
    if (!q) bench_die("malloc(%zu) returned NULL", size);
    block_fill(q, size, i + 1);
    b->p[i] = q;
    b->size[i] = (uint32_t)size;
}

static void free_one(blocks_t *b, size_t i)
{
    block_check(b->p[i], b->size[i], i + 1);
    free(b->p[i]);
    b->p[i] = NULL;
}

/* Fills blocks [lo, hi) with small sizes. */
static void fill_small(blocks_t *b, size_t lo, size_t hi, rng_t *r)
{
    for (size_t i = lo; i < hi; i++) alloc_one(b, i, rng_small_size(r));
}

static void result_head(const params_t *p, long base, long peak)
{
    result_add("RESULT scenario=%s base_kb=%ld peak_kb=%ld growth_kb=%ld", p->scenario, base, peak, peak - base);
}

static void result_tail(const params_t *p)
{
    result_add(" sleep_s=%g malloc_lib=%s seed=%llu scale=%g", p->sleep_s, malloc_lib(), (unsigned long long)p->seed,
               p->scale);
    result_emit();
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int e = pthread_create(&t, NULL, fn, arg);
    if (e) bench_die("pthread_create: %s", strerror(e));
    return t;
}

/* ---- idle-owner ------------------------------------------------------------------- */

typedef struct idle_ctx {
    const params_t *p;
    blocks_t b;
    pthread_barrier_t step; /* A, B and main */
    long base, peak, after_free, after_sleep, after_tick;
} idle_ctx_t;

static void *idle_owner(void *a)
{
    idle_ctx_t *x = a;
    rng_t r = rng_make(x->p->seed, 1);
    fill_small(&x->b, 0, x->b.n, &r);
    pthread_barrier_wait(&x->step); /* 1: filled; main samples the peak */
    pthread_barrier_wait(&x->step); /* 2: go */
    for (size_t i = 0; i < x->b.n; i += 2) free_one(&x->b, i); /* the even half: local frees */
    pthread_barrier_wait(&x->step); /* 3: both halves freed; main samples */
    pthread_barrier_wait(&x->step); /* 4 */
    sleep_s(x->p->sleep_s);         /* the owner idles: no allocator call */
    x->after_sleep = vm_rss();
    pairs(1000);
    x->after_tick = vm_rss();
    pthread_barrier_wait(&x->step); /* 5: done; B may exit */
    return NULL;
}

static void *idle_freer(void *a)
{
    idle_ctx_t *x = a;
    pthread_barrier_wait(&x->step); /* 1 */
    pthread_barrier_wait(&x->step); /* 2 */
    for (size_t i = 1; i < x->b.n; i += 2) free_one(&x->b, i); /* the odd half: remote frees */
    pthread_barrier_wait(&x->step); /* 3 */
    pthread_barrier_wait(&x->step); /* 4: stays alive and idle while A sleeps and works */
    pthread_barrier_wait(&x->step); /* 5 */
    return NULL;
}

static void s_idle_owner(const params_t *p)
{
    idle_ctx_t x = {.p = p};
    x.b = blocks_map(small_count(256 * p->scale));
    pthread_barrier_init(&x.step, NULL, 3);
    x.base = vm_rss();
    pthread_t a = spawn(idle_owner, &x), b = spawn(idle_freer, &x);
    pthread_barrier_wait(&x.step); /* 1 */
    x.peak = vm_rss();
    pthread_barrier_wait(&x.step); /* 2 */
    pthread_barrier_wait(&x.step); /* 3 */
    x.after_free = vm_rss();
    pthread_barrier_wait(&x.step); /* 4 */
    pthread_barrier_wait(&x.step); /* 5 */
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    long after_exit = vm_rss();
    result_head(p, x.base, x.peak);
    result_add(" blocks=%zu after_free_kb=%ld after_sleep_kb=%ld after_tick_kb=%ld after_exit_kb=%ld "
               "after_free_pct=%.1f after_sleep_pct=%.1f after_tick_pct=%.1f after_exit_pct=%.1f",
               x.b.n, x.after_free, x.after_sleep, x.after_tick, after_exit, pct(x.after_free, x.base, x.peak),
               pct(x.after_sleep, x.base, x.peak), pct(x.after_tick, x.base, x.peak), pct(after_exit, x.base, x.peak));
    result_tail(p);
    pthread_barrier_destroy(&x.step);
    blocks_unmap(&x.b);
}

/* ---- sparse ----------------------------------------------------------------------- */

static void s_sparse(const params_t *p)
{
    size_t n = (size_t)(1e6 * p->scale);
    if (n < 1000) n = 1000;
    blocks_t b = blocks_map(n);
    uint32_t *order = map_touched(n * sizeof *order);
    rng_t r = rng_make(p->seed, 2);
    long base = vm_rss();
    for (size_t i = 0; i < n; i++) alloc_one(&b, i, rng_range(&r, 16, 2000));
    long peak = vm_rss();
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates: a random 95 % freed in random order */
        size_t j = rng_below(&r, (uint32_t)(i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t freed = n - n / 20, survivors_bytes = 0;
    for (size_t i = 0; i < freed; i++) free_one(&b, order[i]);
    for (size_t i = freed; i < n; i++) survivors_bytes += b.size[order[i]];
    long after_free = vm_rss();
    sleep_s(p->sleep_s);
    long after_sleep = vm_rss();
    pairs(1000);
    long after_tick = vm_rss();
    result_head(p, base, peak);
    result_add(" blocks=%zu survivors=%zu survivors_kb=%zu ideal_pct=%.1f after_free_kb=%ld after_sleep_kb=%ld "
               "after_tick_kb=%ld after_free_pct=%.1f after_sleep_pct=%.1f after_tick_pct=%.1f",
               n, n - freed, survivors_bytes >> 10, peak > base ? (double)(survivors_bytes >> 10) * 100.0 / (double)(peak - base) : 0.0,
               after_free, after_sleep, after_tick, pct(after_free, base, peak), pct(after_sleep, base, peak),
               pct(after_tick, base, peak));
    result_tail(p);
    for (size_t i = freed; i < n; i++) free_one(&b, order[i]);
    munmap(order, n * sizeof *order);
    blocks_unmap(&b);
}

/* ---- rlimit-as -------------------------------------------------------------------- */

#define AS_MAX_BLOCKS 65536

static void s_rlimit_as(const params_t *p)
{
    size_t n = small_count(256 * p->scale);
    if (n % 7919 == 0) n++; /* the scattered free order below needs gcd(7919, n) == 1 */
    blocks_t b = blocks_map(n);
    void **big = map_touched(AS_MAX_BLOCKS * sizeof *big);
    rng_t r = rng_make(p->seed, 3);
    long base = vm_rss(), vm_base = proc_status_kb("VmSize");
    fill_small(&b, 0, b.n, &r);
    long peak = vm_rss(), vm_peak = proc_status_kb("VmSize");
    for (size_t i = 0; i < b.n; i++) free_one(&b, (i * 7919) % b.n); /* scattered (7919 is prime) */
    long after_free = vm_rss(), vm_after = proc_status_kb("VmSize");
    double headroom_mib = 512 * (p->scale < 1 ? p->scale : 1);
    if (headroom_mib < 64) headroom_mib = 64;

    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old) != 0) bench_die("getrlimit: %s", strerror(errno));
    struct rlimit lim = old;
    lim.rlim_cur = (rlim_t)vm_after * 1024 + (rlim_t)(headroom_mib * 1048576.0);
    if (old.rlim_max != RLIM_INFINITY && lim.rlim_cur > old.rlim_max) lim.rlim_cur = old.rlim_max;
    if (setrlimit(RLIMIT_AS, &lim) != 0) bench_die("setrlimit: %s", strerror(errno));
    /* Nothing below may need memory the limit could refuse outside malloc: no stdio. */
    size_t nbig = 0, got = 0;
    while (nbig < AS_MAX_BLOCKS) {
        size_t size = rng_range(&r, 2u << 20, 16u << 20);
        unsigned char *q = malloc(size);
        if (!q) break;
        q[0] = 1;
        big[nbig++] = q;
        got += size;
    }
    long vm_at_fail = proc_status_kb("VmSize");
    if (setrlimit(RLIMIT_AS, &old) != 0) bench_die("setrlimit (restore): %s", strerror(errno));
    for (size_t i = 0; i < nbig; i++) free(big[i]);
    result_head(p, base, peak);
    result_add(" blocks=%zu vm_base_kb=%ld vm_peak_kb=%ld vm_after_free_kb=%ld after_free_kb=%ld after_free_pct=%.1f "
               "headroom_mib=%g big_blocks=%zu obtained_mib=%.1f vm_at_failure_kb=%ld",
               b.n, vm_base, vm_peak, vm_after, after_free, pct(after_free, base, peak), headroom_mib, nbig,
               (double)got / 1048576.0, vm_at_fail);
    result_tail(p);
    munmap(big, AS_MAX_BLOCKS * sizeof *big);
    blocks_unmap(&b);
}

/* ---- fork-child --------------------------------------------------------------------- */

#define FORK_THREADS 2

typedef struct fork_ctx {
    const params_t *p;
    blocks_t b; /* FORK_THREADS x per blocks */
    size_t per;
    pthread_barrier_t step;
} fork_ctx_t;

typedef struct fork_arg {
    fork_ctx_t *x;
    int id;
} fork_arg_t;

static void *fork_worker(void *a)
{
    fork_arg_t *f = a;
    fork_ctx_t *x = f->x;
    rng_t r = rng_make(x->p->seed, 10 + (uint64_t)f->id);
    size_t lo = (size_t)f->id * x->per;
    fill_small(&x->b, lo, lo + x->per, &r);
    pthread_barrier_wait(&x->step); /* 1: filled; main forks */
    pthread_barrier_wait(&x->step); /* 2: the child has reported; free our own blocks */
    for (size_t i = lo; i < lo + x->per; i++) free_one(&x->b, i);
    return NULL;
}

static void s_fork_child(const params_t *p)
{
    fork_ctx_t x = {.p = p};
    x.per = small_count(64 * p->scale);
    x.b = blocks_map(x.per * FORK_THREADS);
    pthread_barrier_init(&x.step, NULL, FORK_THREADS + 1);
    int fds[2];
    if (pipe(fds) != 0) bench_die("pipe: %s", strerror(errno));
    long base = vm_rss();
    pthread_t t[FORK_THREADS];
    fork_arg_t args[FORK_THREADS];
    for (int i = 0; i < FORK_THREADS; i++) {
        args[i] = (fork_arg_t){&x, i};
        t[i] = spawn(fork_worker, &args[i]);
    }
    pthread_barrier_wait(&x.step); /* 1 */
    long parent = vm_rss();
    pid_t pid = fork();
    if (pid < 0) bench_die("fork: %s", strerror(errno));
    if (pid == 0) { /* the child: one thread; the blocks' owners do not exist here */
        long c[3];
        c[0] = vm_rss();
        for (size_t i = 0; i < x.b.n; i++) free_one(&x.b, i);
        c[1] = vm_rss();
        for (size_t i = 0; i < x.b.n; i++) alloc_one(&x.b, i, x.b.size[i]); /* the same sizes again */
        c[2] = vm_rss();
        write_all(fds[1], (const char *)c, sizeof c);
        _exit(0);
    }
    close(fds[1]);
    long c[3] = {-1, -1, -1};
    ssize_t got = read(fds[0], c, sizeof c);
    close(fds[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) bench_die("waitpid: %s", strerror(errno));
    if (got != (ssize_t)sizeof c || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_die("fork-child: the child failed (%s %d)", WIFSIGNALED(status) ? "signal" : "exit status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    pthread_barrier_wait(&x.step); /* 2 */
    for (int i = 0; i < FORK_THREADS; i++) pthread_join(t[i], NULL);
    long grown = parent - base;
    result_head(p, base, parent);
    result_add(" blocks=%zu parent_kb=%ld child_start_kb=%ld child_after_free_kb=%ld child_end_kb=%ld "
               "child_parent_ratio=%.3f child_new_pct=%.1f",
               x.b.n, parent, c[0], c[1], c[2], parent > 0 ? (double)c[2] / (double)parent : 0.0,
               grown > 0 ? (double)(c[2] - c[0]) * 100.0 / (double)grown : 0.0);
    result_tail(p);
    pthread_barrier_destroy(&x.step);
    blocks_unmap(&x.b);
}

/* ---- lazyfree ------------------------------------------------------------------------ */

typedef struct lazy_ctx {
    blocks_t b;
    pthread_barrier_t step; /* main and the background thread */
} lazy_ctx_t;

static void *lazy_background(void *a)
{
    lazy_ctx_t *x = a;
    pthread_barrier_wait(&x->step); /* 1: the blocks are ours */
    for (size_t i = 0; i < x->b.n; i++) free_one(&x->b, i);
    pthread_barrier_wait(&x->step); /* 2: freed */
    pthread_barrier_wait(&x->step); /* 3: stays alive, idle, until main has measured */
    return NULL;
}

static void s_lazyfree(const params_t *p)
{
    lazy_ctx_t x;
    x.b = blocks_map(small_count(165 * p->scale));
    pthread_barrier_init(&x.step, NULL, 2);
    rng_t r = rng_make(p->seed, 4);
    long base = vm_rss();
    pthread_t bg = spawn(lazy_background, &x);
    fill_small(&x.b, 0, x.b.n, &r);
    long peak = vm_rss();
    pthread_barrier_wait(&x.step); /* 1 */
    pthread_barrier_wait(&x.step); /* 2 */
    long after_free = vm_rss();
    sleep_s(p->sleep_s); /* the allocating thread idles */
    long after_sleep = vm_rss();
    pairs(1000);
    long after_tick = vm_rss();
    pthread_barrier_wait(&x.step); /* 3 */
    pthread_join(bg, NULL);
    long after_exit = vm_rss();
    result_head(p, base, peak);
    result_add(" blocks=%zu after_free_kb=%ld after_sleep_kb=%ld after_tick_kb=%ld after_exit_kb=%ld "
               "after_free_pct=%.1f after_sleep_pct=%.1f after_tick_pct=%.1f after_exit_pct=%.1f",
               x.b.n, after_free, after_sleep, after_tick, after_exit, pct(after_free, base, peak),
               pct(after_sleep, base, peak), pct(after_tick, base, peak), pct(after_exit, base, peak));
    result_tail(p);
    pthread_barrier_destroy(&x.step);
    blocks_unmap(&x.b);
}

/* ---- main ------------------------------------------------------------------------------ */

typedef struct scenario {
    const char *name;
    void (*fn)(const params_t *p);
} scenario_t;

static const scenario_t scenarios[] = {
    {"idle-owner", s_idle_owner}, {"sparse", s_sparse},       {"rlimit-as", s_rlimit_as},
    {"fork-child", s_fork_child}, {"lazyfree", s_lazyfree},
};
#define NUM_SCENARIOS (sizeof scenarios / sizeof scenarios[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: bitslab-mem SCENARIO [-s SCALE] [--sleep SECONDS] [--seed N] [--expect-lib NAME] "
               "[--alarm SECONDS]\n"
               "       bitslab-mem --smoke [--expect-lib NAME]\n"
               "       bitslab-mem --list\n"
               "scenarios:");
    for (size_t i = 0; i < NUM_SCENARIOS; i++) fprintf(f, " %s", scenarios[i].name);
    fputc('\n', f);
}

int main(int argc, char **argv)
{
    params_t p = {.scale = 1.0, .sleep_s = 2.0, .seed = 42};
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
        } else if (!strcmp(a, "-s") && has_val) p.scale = atof(argv[++i]);
        else if (!strcmp(a, "--sleep") && has_val) p.sleep_s = atof(argv[++i]);
        else if (!strcmp(a, "--seed") && has_val) p.seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(a, "--expect-lib") && has_val) expect = argv[++i];
        else if (!strcmp(a, "--alarm") && has_val) alarm_s = atof(argv[++i]);
        else if (a[0] != '-' && !p.scenario) p.scenario = a;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (list) {
        for (size_t i = 0; i < NUM_SCENARIOS; i++) printf("%s\n", scenarios[i].name);
        return 0;
    }
    if (!(p.scale > 0) || p.sleep_s < 0) {
        fprintf(stderr, "bitslab-mem: scale must be > 0, sleep >= 0\n");
        return 2;
    }
    check_malloc_lib(expect);
    bench_alarm(alarm_s);
    if (smoke) { /* CI: every scenario once, tiny. Nothing is judged but that each runs and reports. */
        p.scale = 0.01;
        p.sleep_s = 0.05;
        for (size_t i = 0; i < NUM_SCENARIOS; i++) {
            p.scenario = scenarios[i].name;
            scenarios[i].fn(&p);
        }
        printf("smoke: %zu RESULT lines, malloc from %s\n", NUM_SCENARIOS, malloc_lib());
        return 0;
    }
    for (size_t i = 0; i < NUM_SCENARIOS; i++)
        if (p.scenario && !strcmp(scenarios[i].name, p.scenario)) {
            scenarios[i].fn(&p);
            return 0;
        }
    fprintf(stderr, "bitslab-mem: unknown scenario '%s'\n", p.scenario ? p.scenario : "");
    usage(stderr);
    return 2;
}
