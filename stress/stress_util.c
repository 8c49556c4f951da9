/*
 * stress_util.c: see stress_util.h.
 */
#include "stress_util.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if BITSLAB_DEBUG
#include "internal.h" /* bitslab_debug_windows, bitslab_debug_check */
#endif

stress_config_t stress_cfg = {.name = "stress", .scale = 1.0, .seed = 0x5eed5eedbadc0ffeull};

static struct timespec start_time;

/* ---- configuration -------------------------------------------------------- */

double stress_elapsed(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start_time.tv_sec) + (double)(now.tv_nsec - start_time.tv_nsec) * 1e-9;
}

void stress_log(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stdout, "[%s %7.2fs] %s\n", stress_cfg.name, stress_elapsed(), buf);
    fflush(stdout);
}

void stress_fail(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "[%s %7.2fs] FAIL: %s (seed %#" PRIx64 ")\n", stress_cfg.name, stress_elapsed(), buf,
            stress_cfg.seed);
    fflush(stderr);
    abort();
}

static double env_double(const char *name, double dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    double d = strtod(v, &end);
    if (*end || d < 0) {
        fprintf(stderr, "stress: ignoring %s=%s (not a number >= 0)\n", name, v);
        return dflt;
    }
    return d;
}

static double watchdog_seconds;

static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec ts = {(time_t)watchdog_seconds, 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    fprintf(stderr, "[%s %7.2fs] FAIL: watchdog: still running after %.0f s (hang or livelock?)\n",
            stress_cfg.name, stress_elapsed(), watchdog_seconds);
    fflush(stderr);
    abort();
    return NULL;
}

void stress_init(const char *name)
{
    clock_gettime(CLOCK_MONOTONIC, &start_time);
    stress_cfg.name = name;
    stress_cfg.scale = env_double("BITSLAB_STRESS_SCALE", 1.0);
    if (stress_cfg.scale <= 0) stress_cfg.scale = 1.0;
    stress_cfg.seconds = env_double("BITSLAB_STRESS_SECONDS", 0.0);
    stress_cfg.verbose = (unsigned)env_double("BITSLAB_STRESS_VERBOSE", 0.0);
    const char *seed = getenv("BITSLAB_STRESS_SEED");
    if (seed && *seed) stress_cfg.seed = strtoull(seed, NULL, 0);
#ifdef STRESS_TSAN
    stress_cfg.tsan = true;
#endif
    /* The watchdog: generous next to the default run (seconds under TSan), so
     * it only fires on a hang. BITSLAB_STRESS_WATCHDOG overrides it. */
    watchdog_seconds = env_double("BITSLAB_STRESS_WATCHDOG", 0.0);
    if (watchdog_seconds <= 0) watchdog_seconds = 240.0 * stress_cfg.scale + stress_cfg.seconds * 1.5 + 60.0;
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog, NULL) != 0) stress_fail("cannot start the watchdog thread");
    pthread_detach(t);
    stress_log("bitslab %s, scale %g, soak %g s, seed %#" PRIx64 ", %s%s build", BITSLAB_VERSION_STRING,
               stress_cfg.scale, stress_cfg.seconds, stress_cfg.seed, stress_cfg.tsan ? "TSan " : "",
               BITSLAB_DEBUG ? "debug" : "release");
}

size_t stress_scaled(size_t base)
{
    double v = (double)base * stress_cfg.scale;
    return v < 1.0 ? 1 : (size_t)v;
}

bool stress_more_rounds(size_t done, size_t rounds)
{
    if (done < rounds) return true;
    return stress_cfg.seconds > 0 && stress_elapsed() < stress_cfg.seconds;
}

/* ---- PRNG ------------------------------------------------------------------ */

size_t stress_size_between(stress_rng_t *r, size_t lo, size_t hi)
{
    if (lo >= hi) return lo;
    unsigned lo_bit = 63u - (unsigned)__builtin_clzll(lo | 1), hi_bit = 63u - (unsigned)__builtin_clzll(hi);
    unsigned b = lo_bit + (unsigned)stress_below(r, hi_bit - lo_bit + 1);
    size_t a = (size_t)1 << b, z = (a << 1) - 1; /* [2^b, 2^(b+1)) clipped to [lo, hi] */
    if (a < lo) a = lo;
    if (z > hi) z = hi;
    return a + (size_t)stress_below(r, z - a + 1);
}

/* ---- content cookies --------------------------------------------------------- */

static inline uint64_t pattern_word(uint64_t seed, size_t word) { return stress_mix64(seed + word * 0x9e3779b97f4a7c15ull); }

static inline uint8_t pattern_byte(uint64_t seed, size_t off)
{
    return (uint8_t)(pattern_word(seed, off >> 3) >> ((off & 7) * 8)); /* little-endian view of the word */
}

/* The first stretch [a, b) of covered positions at or after pos, below to. */
static size_t covered_next(size_t pos, size_t to, size_t *end)
{
    if (pos < STRESS_FULL_BYTES) {
        *end = to < STRESS_FULL_BYTES ? to : STRESS_FULL_BYTES;
        return pos;
    }
    size_t page = pos & ~(size_t)(STRESS_PAGE - 1);
    if (pos - page >= STRESS_PAGE_SAMPLE) {
        page += STRESS_PAGE;
        pos = page;
    }
    size_t e = page + STRESS_PAGE_SAMPLE;
    *end = to < e ? to : e;
    return pos;
}

void stress_fill(void *p, size_t from, size_t to, uint64_t seed)
{
    unsigned char *c = p;
    size_t pos = from, b;
    while (pos < to) {
        size_t a = covered_next(pos, to, &b);
        if (a >= to) break;
        while (a < b && (a & 7)) c[a] = pattern_byte(seed, a), a++;
        for (; a + 8 <= b; a += 8) *(uint64_t *)(c + a) = pattern_word(seed, a >> 3);
        while (a < b) c[a] = pattern_byte(seed, a), a++;
        pos = b;
    }
}

static __attribute__((noreturn)) void mismatch(const void *p, size_t off, unsigned got, unsigned want, const char *what)
{
    const unsigned char *c = p;
    char dump[3 * 32 + 1];
    size_t at = 0, start = off & ~(size_t)15;
    for (size_t i = start; i < start + 32 && at + 4 < sizeof dump; i++)
        at += (size_t)snprintf(dump + at, sizeof dump - at, "%02x ", c[i]);
    stress_fail("%s: corrupted content at block %p + %zu: byte %#04x, expected %#04x (bytes from +%zu: %s)", what, p,
                off, got, want, start, dump);
}

void stress_verify(const void *p, size_t from, size_t to, uint64_t seed, const char *what)
{
    const unsigned char *c = p;
    size_t pos = from, b;
    while (pos < to) {
        size_t a = covered_next(pos, to, &b);
        if (a >= to) break;
        while (a < b && (a & 7)) {
            if (c[a] != pattern_byte(seed, a)) mismatch(p, a, c[a], pattern_byte(seed, a), what);
            a++;
        }
        for (; a + 8 <= b; a += 8) {
            if (*(const uint64_t *)(c + a) != pattern_word(seed, a >> 3)) {
                for (size_t i = a;; i++)
                    if (c[i] != pattern_byte(seed, i)) mismatch(p, i, c[i], pattern_byte(seed, i), what);
            }
        }
        while (a < b) {
            if (c[a] != pattern_byte(seed, a)) mismatch(p, a, c[a], pattern_byte(seed, a), what);
            a++;
        }
        pos = b;
    }
}

void stress_verify_zero(const void *p, size_t size, const char *what)
{
    const unsigned char *c = p;
    size_t pos = 0, b;
    while (pos < size) {
        size_t a = covered_next(pos, size, &b);
        if (a >= size) break;
        for (; a < b; a++)
            if (c[a]) stress_fail("%s: calloc memory not zero at block %p + %zu of %zu: byte %#04x", what, p, a, size, c[a]);
        pos = b;
    }
}

#define HDR_KEY_SIZE 0x73697a655f6b6579ull
#define HDR_KEY_TAG 0x7461675f6b657921ull

void stress_block_fill(void *p, size_t size, uint64_t tag)
{
    if (size < STRESS_BLOCK_MIN) stress_fail("stress_block_fill: size %zu below %u (test bug)", size, STRESS_BLOCK_MIN);
    uint64_t *w = p;
    w[0] = size ^ stress_mix64((uintptr_t)p ^ HDR_KEY_SIZE);
    w[1] = tag ^ stress_mix64((uintptr_t)p ^ HDR_KEY_TAG);
    stress_fill(p, 16, size, stress_seed(p, tag));
}

size_t stress_block_verify(const void *p, const char *what)
{
    const uint64_t *w = p;
    size_t size = (size_t)(w[0] ^ stress_mix64((uintptr_t)p ^ HDR_KEY_SIZE));
    uint64_t tag = w[1] ^ stress_mix64((uintptr_t)p ^ HDR_KEY_TAG);
    size_t usable = bitslab_usable_size(p);
    if (size < STRESS_BLOCK_MIN || size > usable)
        stress_fail("%s: corrupted block header at %p: decodes to size %zu (usable %zu); words %#" PRIx64 " %#" PRIx64,
                    what, p, size, usable, w[0], w[1]);
    stress_verify(p, 16, size, stress_seed(p, tag), what);
    return size;
}

uint64_t stress_block_seed(const void *p)
{
    const uint64_t *w = p;
    return stress_seed(p, w[1] ^ stress_mix64((uintptr_t)p ^ HDR_KEY_TAG));
}

/* ---- live-block shadow ------------------------------------------------------- */

#define REGION_SIZE ((uintptr_t)2 << 20)
#define SHADOW_SLOTS 16384u
#define SHADOW_WORDS (REGION_SIZE / 16 / 64)

typedef struct shadow_region {
    uintptr_t region;
    _Atomic uint64_t bits[SHADOW_WORDS];
} shadow_region_t;

static _Atomic(shadow_region_t *) shadow[SHADOW_SLOTS];
static atomic_bool shadow_full_warned;

static shadow_region_t *shadow_find(uintptr_t region)
{
    size_t h = (size_t)stress_mix64(region) & (SHADOW_SLOTS - 1);
    shadow_region_t *mine = NULL;
    for (size_t i = 0; i < SHADOW_SLOTS; i++) {
        _Atomic(shadow_region_t *) *slot = &shadow[(h + i) & (SHADOW_SLOTS - 1)];
        /* Acquire: pairs with the release CAS that installed the region. */
        shadow_region_t *r = atomic_load_explicit(slot, memory_order_acquire);
        if (!r) {
            if (!mine) {
                mine = calloc(1, sizeof *mine);
                if (!mine) stress_fail("shadow: out of memory");
                mine->region = region;
            }
            /* Release: publishes mine->region; acquire on failure: we read the winner's. */
            if (atomic_compare_exchange_strong_explicit(slot, &r, mine, memory_order_acq_rel, memory_order_acquire))
                return mine;
        }
        if (r->region == region) {
            free(mine);
            return r;
        }
    }
    free(mine);
    if (!atomic_exchange(&shadow_full_warned, true))
        stress_log("shadow: more than %u regions seen; live-block tracking is off for the rest", SHADOW_SLOTS);
    return NULL;
}

static shadow_region_t *shadow_locate(const void *p, uint64_t *bit, size_t *word)
{
    uintptr_t a = (uintptr_t)p;
    if (!a || (a & 15)) stress_fail("block %p is not 16-byte aligned", p);
    uintptr_t region = (a - 1) & ~(REGION_SIZE - 1);
    size_t idx = (size_t)((a - region) / 16 - 1);
    *word = idx / 64;
    *bit = (uint64_t)1 << (idx % 64);
    return shadow_find(region);
}

void stress_live_add(const void *p)
{
    uint64_t bit;
    size_t w;
    shadow_region_t *r = shadow_locate(p, &bit, &w);
    if (!r) return;
    /* Relaxed: the word's modification order is all we need (see the header). */
    if (atomic_fetch_or_explicit(&r->bits[w], bit, memory_order_relaxed) & bit)
        stress_fail("block %p handed out while still live (allocated twice)", p);
}

void stress_live_del(const void *p)
{
    uint64_t bit;
    size_t w;
    shadow_region_t *r = shadow_locate(p, &bit, &w);
    if (!r) return;
    /* Relaxed: as above. */
    if (!(atomic_fetch_and_explicit(&r->bits[w], ~bit, memory_order_relaxed) & bit))
        stress_fail("freeing block %p that the shadow does not know as live", p);
}

/* ---- checked allocation ------------------------------------------------------- */

void *stress_alloc(enum stress_api how, size_t size, size_t align)
{
    void *p = NULL;
    switch (how) {
    case API_MALLOC: p = bitslab_malloc(size); break;
    case API_CALLOC:
        if (size % 16 == 0 && size >= 64) p = bitslab_calloc(size / 16, 16);
        else p = bitslab_calloc(size, 1);
        break;
    case API_ALIGNED: p = bitslab_aligned_alloc(align, size); break;
    case API_POSIX_MEMALIGN: {
        int rc = bitslab_posix_memalign(&p, align, size);
        if (rc) stress_fail("posix_memalign(%zu, %zu) failed: %s", align, size, strerror(rc));
        break;
    }
    case API_MEMALIGN: p = bitslab_memalign(align, size); break;
    case API_REALLOC_NULL: p = bitslab_realloc(NULL, size); break;
    default: stress_fail("stress_alloc: bad api %d", (int)how);
    }
    if (!p) stress_fail("allocation of %zu bytes (api %d, alignment %zu) failed: %s", size, (int)how, align,
                        strerror(errno));
    size_t want = align > 16 ? align : 16;
    if ((uintptr_t)p % want) stress_fail("block %p of %zu bytes not aligned to %zu (api %d)", p, size, want, (int)how);
    size_t usable = bitslab_usable_size(p);
    if (usable < size) stress_fail("usable size %zu of block %p below the %zu requested", usable, p, size);
    stress_live_add(p);
    if (how == API_CALLOC) stress_verify_zero(p, size, "calloc");
    return p;
}

enum stress_api stress_pick_api(stress_rng_t *r, size_t size, size_t *align)
{
    (void)size;
    unsigned x = (unsigned)stress_below(r, 100);
    *align = 0;
    if (x < 55) return API_MALLOC;
    if (x < 75) return API_CALLOC;
    if (x < 80) return API_REALLOC_NULL;
    /* Aligned: mostly up to a page, sometimes up to 2 MiB, rarely 4 MiB. */
    unsigned y = (unsigned)stress_below(r, 100);
    unsigned shift = y < 80 ? 4 + (unsigned)stress_below(r, 9) : y < 99 ? 13 + (unsigned)stress_below(r, 9) : 22;
    *align = (size_t)1 << shift;
    if (x < 90) return API_ALIGNED;
    if (x < 95) return API_POSIX_MEMALIGN;
    return API_MEMALIGN;
}

void stress_free(void *p, size_t size, stress_rng_t *r)
{
    stress_live_del(p);
    unsigned x = r ? (unsigned)stress_below(r, 10) : 0;
    if (x == 8) bitslab_free_sized(p, size);
    else if (x == 9) bitslab_free_aligned_sized(p, 16, size);
    else bitslab_free(p);
}

/* ---- threads -------------------------------------------------------------------- */

pthread_t stress_spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    if (rc) stress_fail("pthread_create: %s", strerror(rc));
    return t;
}

void *stress_join(pthread_t t)
{
    void *ret = NULL;
    int rc = pthread_join(t, &ret);
    if (rc) stress_fail("pthread_join: %s", strerror(rc));
    return ret;
}

void stress_relax(void) { sched_yield(); }

void stress_barrier_init(stress_barrier_t *b, unsigned n)
{
    if (pthread_barrier_init(&b->b, NULL, n)) stress_fail("pthread_barrier_init");
}

void stress_barrier_wait(stress_barrier_t *b) { pthread_barrier_wait(&b->b); }

void stress_barrier_destroy(stress_barrier_t *b) { pthread_barrier_destroy(&b->b); }

/* ---- statistics ------------------------------------------------------------------- */

#define MiB (1024.0 * 1024.0)

void stress_print_stats(const char *label)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    stress_log("%s: mapped %.1f MiB, committed %.2f MiB, in use %.2f MiB; superpages %zu (owned %zu, orphaned %zu);"
               " wide %zu, huge %zu; heaps %zu (abandoned %zu); remote pending %zu",
               label, st.mapped / MiB, st.committed / MiB, st.in_use / MiB, st.superpages_total, st.superpages_owned,
               st.superpages_orphaned, st.wide_allocations, st.huge_allocations, st.heaps_total, st.heaps_abandoned,
               st.remote_frees_pending);
}

typedef struct drain_ctx {
    stress_barrier_t *all_adopted;
} drain_ctx_t;

static void *drain_thread(void *arg)
{
    drain_ctx_t *c = arg;
    void *p = bitslab_malloc(16); /* first allocation: adopts an abandoned heap and merges its remote frees */
    if (!p) stress_fail("drain: malloc failed");
    stress_barrier_wait(c->all_adopted); /* every heap is held by one of us: none is adopted twice */
    bitslab_free(p);
    bitslab_collect();
    stress_debug_check();
    return NULL; /* thread exit collects the heap again and abandons it empty */
}

size_t stress_drain_abandoned(void)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    size_t n = st.heaps_abandoned;
    if (!n) return 0;
    stress_barrier_t b;
    stress_barrier_init(&b, (unsigned)n);
    drain_ctx_t c = {&b};
    pthread_t *t = calloc(n, sizeof *t);
    if (!t) stress_fail("drain: out of memory");
    for (size_t i = 0; i < n; i++) t[i] = stress_spawn(drain_thread, &c);
    for (size_t i = 0; i < n; i++) stress_join(t[i]);
    free(t);
    stress_barrier_destroy(&b);
    return n;
}

void stress_finish(const stress_bounds_t *b)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    stress_log("before final collection: in use %.2f MiB, remote pending %zu, heaps abandoned %zu", st.in_use / MiB,
               st.remote_frees_pending, st.heaps_abandoned);
    bitslab_collect();
    stress_debug_check();
    /* The growth bounds are checked before any drain: draining adopts every
     * abandoned heap at once, and each adopter maps a superpage for its one
     * block, which says nothing about the test. */
    bitslab_stats(&st);
    if (b && b->max_superpages)
        STRESS_CHECK(st.superpages_total <= b->max_superpages,
                     "memory grew: %zu superpages mapped over the run, bound %zu", st.superpages_total,
                     b->max_superpages);
    if (b && b->max_heaps)
        STRESS_CHECK(st.heaps_total <= b->max_heaps, "heaps grew: %zu heaps created, bound %zu", st.heaps_total,
                     b->max_heaps);
    /* Memory still held by heaps of exited threads (remote frees that reached
     * them after their exit) is merged by whoever adopts them; adopt them all. */
    size_t drained = 0;
    if (st.in_use || st.remote_frees_pending || st.superpages_owned) {
        drained = stress_drain_abandoned();
        bitslab_collect();
        stress_log("drained %zu abandoned heaps (%.2f MiB were in use, %zu remote frees pending)", drained,
                   st.in_use / MiB, st.remote_frees_pending);
    }
    /* A collection defers the release of an empty superpage while a freer
     * or a purger is between its first and last touch of it (inflight, or
     * a notification it has yet to send: docs/remote-free.md, purger.md);
     * the next collection retries it. With the purger thread on, its pass
     * may be there at this very moment: collect again, for up to a second,
     * before a superpage still owned counts as lost. */
    bitslab_stats(&st);
    unsigned retries = 0;
    for (; (st.superpages_owned || st.remote_frees_pending) && retries < 1000; retries++) {
        struct timespec ms = {0, 1000 * 1000};
        nanosleep(&ms, NULL);
        bitslab_collect();
        bitslab_stats(&st);
    }
    if (retries) stress_log("final collection retried %u time(s)", retries);
    stress_print_stats("final");
    bitslab_stats(&st);
    STRESS_CHECK(st.in_use == 0, "leak: %zu bytes still in use after freeing everything (drained %zu heaps)", st.in_use,
                 drained);
    STRESS_CHECK(st.remote_frees_pending == 0, "%zu remote frees never merged", st.remote_frees_pending);
    STRESS_CHECK(st.wide_allocations == 0 && st.wide_bytes == 0, "%zu wide allocations (%zu bytes) still live",
                 st.wide_allocations, st.wide_bytes);
    STRESS_CHECK(st.huge_allocations == 0 && st.huge_bytes == 0, "%zu huge allocations (%zu bytes) still live",
                 st.huge_allocations, st.huge_bytes);
    STRESS_CHECK(st.superpages_owned == 0, "%zu superpages still owned by a heap although every block is free",
                 st.superpages_owned);
    STRESS_CHECK(st.superpages_orphaned == st.superpages_total, "orphanage holds %zu of %zu superpages",
                 st.superpages_orphaned, st.superpages_total);
    /* Empty superpages keep their first page; heaps live in chunks of 64. */
    size_t heap_chunks = (st.heaps_total + 63) / 64;
    size_t committed_bound = st.superpages_total * 4096 + heap_chunks * (256u << 10) + (256u << 10);
    STRESS_CHECK(st.committed <= committed_bound, "committed %zu bytes after freeing everything, bound %zu",
                 st.committed, committed_bound);
    size_t mapped_bound = st.superpages_total * (2u << 20) + heap_chunks * (256u << 10) + (256u << 10);
    STRESS_CHECK(st.mapped <= mapped_bound, "mapped %zu bytes after freeing everything, bound %zu", st.mapped,
                 mapped_bound);
    stress_debug_windows(b ? b->targets : NULL);
    stress_log("PASS in %.2f s", stress_elapsed());
}

/* ---- debug builds ----------------------------------------------------------------- */

void stress_debug_check(void)
{
#if BITSLAB_DEBUG
    bitslab_debug_check();
#endif
}

void stress_debug_windows(const char *const *targets)
{
#if BITSLAB_DEBUG
    const char *names[32];
    uint64_t hits[32];
    unsigned n = bitslab_debug_windows(names, hits, 32);
    if (n > 32) n = 32;
    stress_log("race-window counters (debug build; '*' = windows this test aims at):");
    for (unsigned i = 0; i < n; i++) {
        bool target = false;
        for (const char *const *t = targets; t && *t; t++)
            if (!strcmp(*t, names[i])) target = true;
        stress_log("  %c %-28s %12" PRIu64 "%s", target ? '*' : ' ', names[i], hits[i],
                   target && !hits[i] ? "   <- aimed at, never reached" : "");
    }
#else
    (void)targets;
#endif
}

unsigned stress_windows_missing(const char *const *required)
{
#if BITSLAB_DEBUG
    const char *names[32];
    uint64_t hits[32];
    unsigned n = bitslab_debug_windows(names, hits, 32), missing = 0;
    if (n > 32) n = 32;
    for (const char *const *r = required; r && *r; r++)
        for (unsigned i = 0; i < n; i++)
            if (!strcmp(*r, names[i]) && !hits[i]) missing++;
    return missing;
#else
    (void)required;
    return 0;
#endif
}

