/*
 * stress_util.h: the shared toolkit of the bitslab stress suite.
 *
 *   - run configuration from the environment (scale, soak seconds, seed) and
 *     a watchdog, so every program is bounded in time;
 *   - a seeded PRNG per thread (splitmix64), so a run is reproducible up to
 *     thread interleaving;
 *   - content cookies: a pattern derived from a seed, written when a block is
 *     allocated and verified before it is freed (overlapping or recycled-too-
 *     early blocks show up as a mismatch), and self-describing blocks whose
 *     header says their size, for structures that only carry a pointer;
 *   - a live-block shadow: one bit per 16 bytes of every 2 MiB region bitslab
 *     hands out, set at allocation and cleared at free, so the same address
 *     handed out twice while live is caught even if the contents agree;
 *   - thread spawning, spin-waiting, memory-bound checks after a test, and the
 *     debug build's race-window counters and invariant checker.
 *
 * Stress programs call only the prefixed API (bitslab_malloc & co.): under
 * ThreadSanitizer the symbol `malloc` belongs to TSan. Bookkeeping that is not
 * under test (the shadow, per-thread arrays in some tests) uses libc malloc.
 */
#ifndef BITSLAB_STRESS_UTIL_H
#define BITSLAB_STRESS_UTIL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bitslab.h"

#ifndef BITSLAB_DEBUG
#define BITSLAB_DEBUG 0
#endif

/* ---- ThreadSanitizer annotations ------------------------------------------ */

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(STRESS_TSAN)
#define STRESS_TSAN 1
#endif

/* -DSTRESS_TSAN_NO_ANNOTATIONS builds the liburcu clients without their
 * annotations, to see the reports they prevent (README.md). */
#if defined(STRESS_TSAN) && !defined(STRESS_TSAN_NO_ANNOTATIONS)
/* TSan's public annotation entry points (compiler-rt tsan_interface.h). */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define STRESS_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#define STRESS_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#else
#define STRESS_TSAN_ACQUIRE(addr) ((void)(addr))
#define STRESS_TSAN_RELEASE(addr) ((void)(addr))
#endif

/* ---- configuration and failure -------------------------------------------- */

typedef struct stress_config {
    const char *name; /* test name, prefixes every line */
    double scale;     /* BITSLAB_STRESS_SCALE: multiplies the work (default 1) */
    double seconds;   /* BITSLAB_STRESS_SECONDS: soak, repeat rounds this long (default 0) */
    uint64_t seed;    /* BITSLAB_STRESS_SEED (default fixed) */
    unsigned verbose; /* BITSLAB_STRESS_VERBOSE */
    bool tsan;        /* built with ThreadSanitizer */
} stress_config_t;

extern stress_config_t stress_cfg;

/* Read the environment, print a banner, arm the watchdog. */
void stress_init(const char *name);
/* `base` times the scale, at least 1. */
size_t stress_scaled(size_t base);
/* Whether to run round number `done` (0-based): yes for the first `rounds`
 * rounds (already scaled by the caller where it wants), then for as long as
 * the soak time (BITSLAB_STRESS_SECONDS) lasts. */
bool stress_more_rounds(size_t done, size_t rounds);
double stress_elapsed(void);

__attribute__((noreturn, format(printf, 1, 2))) void stress_fail(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void stress_log(const char *fmt, ...);

#define STRESS_CHECK(cond, ...)                                                                              \
    do {                                                                                                     \
        if (!(cond)) stress_fail(__VA_ARGS__);                                                              \
    } while (0)

/* ---- PRNG (splitmix64) ----------------------------------------------------- */

typedef struct stress_rng {
    uint64_t s;
} stress_rng_t;

static inline uint64_t stress_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A generator for stream `stream` (for example a thread number) of this run. */
static inline stress_rng_t stress_rng(uint64_t stream)
{
    stress_rng_t r = {stress_mix64(stress_cfg.seed ^ stress_mix64(stream + 0x51ed2701u))};
    return r;
}

static inline uint64_t stress_rand(stress_rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return stress_mix64(r->s);
}

/* Uniform in [0, n). */
static inline uint64_t stress_below(stress_rng_t *r, uint64_t n) { return n ? stress_rand(r) % n : 0; }

/* True with probability percent / 100. */
static inline bool stress_chance(stress_rng_t *r, unsigned percent) { return stress_below(r, 100) < percent; }

/* Log-uniform in [lo, hi]: every power of two between them equally likely. */
size_t stress_size_between(stress_rng_t *r, size_t lo, size_t hi);

/* ---- content cookies -------------------------------------------------------- */

/* Positions a block's pattern covers: every byte of the first 64 KiB, then
 * the first 64 bytes of each 4 KiB page (so large and huge blocks cost little,
 * yet any overlap of a page or more is seen). The set depends only on the
 * offset, so it is prefix-closed: a realloc'd block's preserved prefix is
 * checked exactly. */
#define STRESS_FULL_BYTES 65536u
#define STRESS_PAGE 4096u
#define STRESS_PAGE_SAMPLE 64u

/* The pattern over [from, to) of a block at p, from `seed`. */
void stress_fill(void *p, size_t from, size_t to, uint64_t seed);
/* Verify it; on a mismatch print the offset and both values and abort. */
void stress_verify(const void *p, size_t from, size_t to, uint64_t seed, const char *what);
/* Verify that [0, size) reads as zero (sampled like the pattern). */
void stress_verify_zero(const void *p, size_t size, const char *what);

/* A seed that depends on the block's address and a per-allocation tag: two
 * live blocks never share a pattern. */
static inline uint64_t stress_seed(const void *p, uint64_t tag) { return stress_mix64((uintptr_t)p ^ stress_mix64(tag)); }

/* Self-describing blocks (size >= STRESS_BLOCK_MIN): word 0 holds the size,
 * word 1 the tag, both keyed to the address; the rest carries the pattern.
 * For structures that pass bare pointers (transfer arrays). */
#define STRESS_BLOCK_MIN 16u
void stress_block_fill(void *p, size_t size, uint64_t tag);
/* Verify and return the size; aborts on a corrupted header or payload. */
size_t stress_block_verify(const void *p, const char *what);
/* The payload seed of a self-describing block (bytes from offset 16 on). */
uint64_t stress_block_seed(const void *p);

/* ---- live-block shadow ------------------------------------------------------ */

/* Mark p live; abort if it already is (one address handed out twice). */
void stress_live_add(const void *p);
/* Mark p free; abort if it was not live (a test bug or a lost block). */
void stress_live_del(const void *p);

/* ---- checked allocation helpers -------------------------------------------- */

/* Allocate with the API picked by `how` (see the enum), register the block in
 * the shadow, check alignment and usable size, check calloc zeroing. Returns
 * NULL only if bitslab did (and then aborts unless allow_null). */
enum stress_api { API_MALLOC, API_CALLOC, API_ALIGNED, API_POSIX_MEMALIGN, API_MEMALIGN, API_REALLOC_NULL, API_COUNT };
void *stress_alloc(enum stress_api how, size_t size, size_t align);
/* Pick an API at random (malloc most often); *align receives the alignment. */
enum stress_api stress_pick_api(stress_rng_t *r, size_t size, size_t *align);
/* Free through a random free entry point (free, free_sized, free_aligned_sized). */
void stress_free(void *p, size_t size, stress_rng_t *r);

/* ---- threads ---------------------------------------------------------------- */

pthread_t stress_spawn(void *(*fn)(void *), void *arg);
void *stress_join(pthread_t t);
/* Called while waiting for another thread: yields the CPU (2 cores, up to 16
 * threads: a pure spin would starve the thread we wait for). */
void stress_relax(void);

typedef struct stress_barrier {
    pthread_barrier_t b;
} stress_barrier_t;
void stress_barrier_init(stress_barrier_t *b, unsigned n);
void stress_barrier_wait(stress_barrier_t *b);
void stress_barrier_destroy(stress_barrier_t *b);

/* ---- statistics and bounds --------------------------------------------------- */

void stress_print_stats(const char *label);

/* Adopt every abandoned heap (one thread per heap, all alive at once), merge
 * its remote frees, and let it go again fully collected. Returns the number
 * of heaps adopted. */
size_t stress_drain_abandoned(void);

typedef struct stress_bounds {
    size_t max_superpages;      /* superpages ever mapped; 0: no bound */
    size_t max_heaps;           /* heaps ever created; 0: no bound */
    const char *const *targets; /* race windows this test aims at (NULL-terminated) */
} stress_bounds_t;

/* After the test freed everything and joined its threads: collect the main
 * thread's heap, drain abandoned heaps, and require in_use == 0, no pending
 * remote frees, no wide or huge allocation, every superpage back in the
 * orphanage, committed memory down to the superpage headers, and the bounds.
 * Prints the statistics, the race-window counters (debug builds) and PASS. */
void stress_finish(const stress_bounds_t *b);

/* ---- debug builds -------------------------------------------------------------- */

/* Run the invariant checker on the calling thread's heap (debug builds). */
void stress_debug_check(void);
/* Print the race-window counters (debug builds; nothing otherwise). The
 * windows in `targets` (NULL-terminated names, may be NULL) are marked as the
 * ones this test aims at. Never fails: the lead decides which are required. */
void stress_debug_windows(const char *const *targets);
/* Debug builds: how many of the windows in `required` (NULL-terminated) were
 * never reached so far; 0 in other builds. */
unsigned stress_windows_missing(const char *const *required);

#endif /* BITSLAB_STRESS_UTIL_H */
