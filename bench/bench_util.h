/*
 * bench_util.h: what every bitslab benchmark program shares.
 *
 * The benchmarks call plain malloc/free/realloc, never bitslab_*, so one
 * binary measures any allocator: glibc when run as is, another one when that
 * allocator's shared library is put in LD_PRELOAD. Each program prints which
 * library its malloc resolved to (malloc_lib=...), so a preload that did not
 * take effect is visible (and --expect-lib turns it into an error).
 *
 * Everything random comes from a fixed seed (splitmix64 / xorshift64*), so a
 * run is reproducible: the same sizes in the same order for every allocator.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_UNUSED __attribute__((unused))

/* ---- failure ---------------------------------------------------------------- */

static BENCH_UNUSED __attribute__((noreturn, format(printf, 1, 2))) void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: FAILED: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    abort();
}

static BENCH_UNUSED void *bench_xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) bench_die("malloc(%zu) returned NULL", n);
    return p;
}

/* ---- random numbers ------------------------------------------------------------ */

static BENCH_UNUSED uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s;
} rng_t;

/* Stream `stream` (a thread index, say) of the generator seeded with `seed`. */
static BENCH_UNUSED rng_t rng_make(uint64_t seed, uint64_t stream)
{
    uint64_t t = seed ^ (stream * 0xD1B54A32D192ED03ull);
    rng_t r = {splitmix64(&t) | 1};
    return r;
}

static inline uint64_t rng_next(rng_t *r) /* xorshift64* */
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n) (n < 2^32; the bias is negligible for benchmarks). */
static inline uint32_t rng_below(rng_t *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* The "mixed small" size distribution, skewed to small sizes as real
 * programs are: 1/2 in 16..128 B, 1/4 in 129..512 B, 1/4 in 513..1024 B. */
static inline size_t rng_small_size(rng_t *r)
{
    uint64_t x = rng_next(r);
    unsigned pick = (unsigned)(x >> 62);
    uint64_t y = x & 0xFFFFFFFFu;
    if (pick < 2) return 16 + (size_t)(y % 113);
    if (pick == 2) return 129 + (size_t)(y % 384);
    return 513 + (size_t)(y % 512);
}

/* Log-uniform in [lo, hi]: every power of two gets the same share. */
static BENCH_UNUSED size_t rng_log_size(rng_t *r, size_t lo, size_t hi)
{
    unsigned lo_b = 63 - (unsigned)__builtin_clzll(lo), hi_b = 63 - (unsigned)__builtin_clzll(hi);
    for (;;) {
        unsigned b = lo_b + rng_below(r, hi_b - lo_b + 1);
        size_t base = (size_t)1 << b;
        size_t s = base + (size_t)(rng_next(r) % base);
        if (s >= lo && s <= hi) return s;
    }
}

/* ---- block contents: catches a block handed out twice or too small ------------ */

/* Every benchmark writes an id at the start of a block and a check byte at its
 * last requested byte (above 16 B), and verifies both before freeing it. Two live blocks
 * that overlap, a block shorter than requested, or memory scribbled by the
 * allocator shows up as a mismatch and the program aborts. Sizes are >= 16. */
static inline void block_fill(void *p, size_t size, uint64_t id)
{
    uint64_t *w = p;
    w[0] = id;
    w[1] = ~id ^ (uint64_t)size;
    if (size > 16) ((volatile unsigned char *)p)[size - 1] = (unsigned char)(id * 31 + 7);
}

static inline void block_check(const void *p, size_t size, uint64_t id)
{
    const uint64_t *w = p;
    if (w[0] != id || w[1] != (~id ^ (uint64_t)size) ||
        (size > 16 && ((const unsigned char *)p)[size - 1] != (unsigned char)(id * 31 + 7)))
        bench_die("block %p (size %zu, id %llu) was overwritten: allocator handed out overlapping or short memory",
                  p, size, (unsigned long long)id);
}

/* For blocks whose id the freeing side does not know (producer/consumer):
 * the block carries its own id and size. */
static inline size_t block_check_self(const void *p)
{
    const uint64_t *w = p;
    uint64_t id = w[0];
    size_t size = (size_t)(w[1] ^ ~id);
    if (size < 16 || size > ((size_t)1 << 40) ||
        (size > 16 && ((const unsigned char *)p)[size - 1] != (unsigned char)(id * 31 + 7)))
        bench_die("block %p (id %llu) was overwritten", p, (unsigned long long)id);
    return size;
}

/* ---- time and memory ----------------------------------------------------------- */

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (every thread) so far. */
static inline double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident set size now, in KiB (/proc/self/statm, field 2). */
static BENCH_UNUSED long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, res = -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Peak resident set size of the process so far (VmHWM), in KiB. */
static BENCH_UNUSED long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* A field of /proc/self/status in KiB ("VmRSS", "VmSize", "VmHWM"); -1 if absent. */
static BENCH_UNUSED long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    size_t n = strlen(key);
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* Peak RSS (ru_maxrss, KiB) and minor / major page faults of the whole
 * process (every thread, live or joined) since it started. */
typedef struct bench_usage {
    long maxrss_kb, minflt, majflt;
} bench_usage_t;

static BENCH_UNUSED bench_usage_t bench_usage(void)
{
    struct rusage ru;
    bench_usage_t u = {-1, -1, -1};
    if (getrusage(RUSAGE_SELF, &ru) == 0) u = (bench_usage_t){ru.ru_maxrss, ru.ru_minflt, ru.ru_majflt};
    return u;
}

/* ---- the RESULT line ---------------------------------------------------------- */

/* A RESULT line is built in a static buffer (no allocation: a scenario may
 * print it while malloc fails), then written to stdout and, when the
 * environment names one in BENCH_RESULT_FILE, appended to that file: the
 * driver times the programs with hyperfine, which discards their output. */
static char bench_line[4096];
static size_t bench_line_len;

static BENCH_UNUSED __attribute__((format(printf, 1, 2))) void result_add(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (bench_line_len < sizeof bench_line) {
        int n = vsnprintf(bench_line + bench_line_len, sizeof bench_line - bench_line_len, fmt, ap);
        if (n > 0) bench_line_len += (size_t)n;
    }
    va_end(ap);
}

static BENCH_UNUSED void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* Ends the line started by result_add("RESULT ...") and emits it. */
static BENCH_UNUSED void result_emit(void)
{
    if (bench_line_len >= sizeof bench_line - 1) bench_line_len = sizeof bench_line - 2;
    bench_line[bench_line_len++] = '\n';
    fflush(stdout);
    write_all(1, bench_line, bench_line_len);
    const char *path = getenv("BENCH_RESULT_FILE");
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            write_all(fd, bench_line, bench_line_len); /* one write: O_APPEND keeps lines whole */
            close(fd);
        }
    }
    bench_line_len = 0;
}

/* A run that has not finished after `seconds` is killed by SIGALRM (the
 * driver sees the signal and reruns it under gdb). 0: no limit. */
static BENCH_UNUSED void bench_alarm(double seconds)
{
    if (seconds > 0) alarm((unsigned)(seconds + 0.999));
}

/* The shared object that `malloc` resolves to in this process: "libc.so.6"
 * without a preload, the preloaded library with one. */
static BENCH_UNUSED const char *malloc_lib(void)
{
    static char name[256];
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (!sym || !dladdr(sym, &info) || !info.dli_fname) return "unknown";
    const char *slash = strrchr(info.dli_fname, '/');
    snprintf(name, sizeof name, "%s", slash ? slash + 1 : info.dli_fname);
    return name;
}

static BENCH_UNUSED void check_malloc_lib(const char *expect)
{
    if (expect && !strstr(malloc_lib(), expect))
        bench_die("malloc comes from %s, expected %s (LD_PRELOAD not in effect?)", malloc_lib(), expect);
}

/* Keeps the compiler from deleting an allocation whose result looks unused. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "g"(p) : "memory");
}

#endif /* BENCH_UTIL_H */
