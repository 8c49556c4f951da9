/*
 * test_faults.c: what bitslab does when the kernel says no.
 *
 * Linked with -Wl,--wrap=mmap,--wrap=mmap64,--wrap=munmap,--wrap=mremap,
 * --wrap=madvise against the static library: the archive's calls to those
 * functions resolve to the __wrap_ versions below (the test's link is where
 * they are resolved), which count them, track what is mapped, and can make
 * the Nth call of one of them fail.
 *
 *   test_faults inject   for each syscall S and N = 1, 2, ... (200 at most),
 *                        a fresh forked child makes the Nth call of S fail
 *                        (mmap, mremap: MAP_FAILED / ENOMEM; munmap: ENOMEM,
 *                        which is what a split past vm.max_map_count gets;
 *                        madvise: EINVAL, as on locked memory, or EAGAIN)
 *                        and runs the workload. Periodic purges are off
 *                        (purge delay -1), so every run makes the same calls
 *                        in the same order (give or take a trim: where an
 *                        over-mapping lands decides whether it has a head).
 *                        A sweep stops 8 past the last N that fired (the
 *                        child says whether it did); it fails if the
 *                        workload outgrows 200 calls.
 *   test_faults mlock    mlockall(MCL_CURRENT | MCL_FUTURE), so that every
 *                        madvise(MADV_DONTNEED) really fails (EINVAL), then
 *                        the workload, then a churn of 400 slab frees that
 *                        must cost O(n) madvise calls (a slab whose decommit
 *                        failed is not retried on every slow path). Exit 77
 *                        (skip) if mlockall is refused for lack of
 *                        RLIMIT_MEMLOCK (after raising the soft limit).
 *   test_faults clean    the workload once, no failure (a baseline).
 *   test_faults misalign the workload once, no failure, with every mmap(NULL)
 *                        of a multiple of 2 MiB answered 1 MiB off a 2 MiB
 *                        boundary (what kernels before 6.7 may do), every
 *                        other one with the 1 MiB below it taken: huge_map's
 *                        extension downwards and its fallback both run.
 *   test_faults inject-misalign  the inject sweep, mappings misaligned so.
 *   test_faults loop     huge blocks malloc'ed, touched in every page and
 *                        freed, 200 + 100 times: counts the mmap, munmap and
 *                        madvise calls and the minor page faults (getrusage)
 *                        against structural bounds (the freed mappings stay
 *                        committed in the cache and are reused).
 *
 * The workload (small blocks of every class, wide blocks, huge blocks with
 * realloc growth and shrinking and big alignments, frees, collect, calloc
 * after collect) accepts two outcomes of every call: NULL with errno ENOMEM
 * (posix_memalign: ENOMEM returned; a failed realloc keeps the old block
 * intact), or a block with the right alignment, usable size,
 * zero contents after calloc, and its own pattern intact until it is freed.
 * After every phase it checks what bitslab believes against the kernel:
 *   - mapped bytes == what the wrappers saw mapped (exact);
 *   - committed <= mapped, and every resident page (mincore) is committed;
 *   - committed == mapped - everything bitslab believes decommitted (data
 *     slabs marked decommitted, an orphan's clean mask and metadata, the
 *     huge cache);
 *   - every range bitslab believes decommitted has no resident page;
 *   - every mapped range belongs to a superpage, the heap chunk, a live or
 *     cached huge block, or a whole mapping the kernel refused to unmap
 *     (a refused split must not leave a piece behind);
 *   - heaps_total == heaps actually created (1: the workload is one thread);
 *   - the heap's count of dirty FREE slabs matches its slabs;
 *   - free and posix_memalign never change errno.
 *
 * Uses only the prefixed API (and reads internals for the checks), so glibc's
 * malloc, which stdio uses, is untouched and its mmaps are not counted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitslab.h"
#include "../src/internal.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* ---- the wrappers ------------------------------------------------------------ */

enum sys { SYS_MMAP, SYS_MUNMAP, SYS_MREMAP, SYS_MADVISE, SYS_COUNT };
static const char *const sys_name[SYS_COUNT] = {"mmap", "munmap", "mremap", "madvise"};

static unsigned calls[SYS_COUNT];   /* calls so far, per syscall */
static int fail_sys = -1;           /* the syscall to fail, -1: none */
static unsigned fail_nth;           /* ... on its Nth call */
static int fail_errno;              /* with this errno */
static bool fired;                  /* the failure happened */
static unsigned real_failures[SYS_COUNT]; /* failures the kernel itself returned */

/* Decide whether this call fails; counts it. */
static bool inject(enum sys s)
{
    calls[s]++;
    if ((int)s == fail_sys && calls[s] == fail_nth) {
        fired = true;
        return true;
    }
    return false;
}

/* What the wrappers saw mapped and not unmapped: page-aligned disjoint
 * ranges, kept sorted. bitslab maps few regions (superpages, huge blocks,
 * heap chunks), so a small array does. */
#define MAX_RANGES 4096
typedef struct range {
    uintptr_t lo, hi;
} range_t;
static range_t ranges[MAX_RANGES];
static unsigned nranges;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static uintptr_t page_up(uintptr_t x) { return (x + OS_PAGE - 1) & ~(uintptr_t)(OS_PAGE - 1); }

static void track_remove(uintptr_t lo, size_t len)
{
    uintptr_t hi = lo + page_up(len);
    range_t out[MAX_RANGES];
    unsigned n = 0;
    for (unsigned i = 0; i < nranges; i++) {
        range_t r = ranges[i];
        if (r.hi <= lo || r.lo >= hi) {
            out[n++] = r;
            continue;
        }
        if (r.lo < lo) out[n++] = (range_t){r.lo, lo};
        if (r.hi > hi) {
            if (n == MAX_RANGES) die("too many tracked ranges");
            out[n++] = (range_t){hi, r.hi};
        }
    }
    memcpy(ranges, out, n * sizeof *out);
    nranges = n;
}

static void track_add(uintptr_t lo, size_t len)
{
    track_remove(lo, len); /* MAP_FIXED-like replacement, if ever */
    if (nranges == MAX_RANGES) die("too many tracked ranges");
    unsigned i = nranges;
    while (i > 0 && ranges[i - 1].lo > lo) {
        ranges[i] = ranges[i - 1];
        i--;
    }
    ranges[i] = (range_t){lo, lo + page_up(len)};
    nranges++;
}

static size_t tracked_bytes(void)
{
    size_t n = 0;
    for (unsigned i = 0; i < nranges; i++) n += ranges[i].hi - ranges[i].lo;
    return n;
}

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_munmap(void *addr, size_t len);
void *__real_mremap(void *old, size_t old_len, size_t new_len, int flags, ...);
int __real_madvise(void *addr, size_t len, int advice);

static void *mmap_common(void *r, size_t len)
{
    if (r == MAP_FAILED) real_failures[SYS_MMAP]++;
    else track_add((uintptr_t)r, len);
    return r;
}

/* misalign mode: an anonymous mmap(NULL, n) with n a multiple of 2 MiB
 * returns an address 1 MiB past a 2 MiB boundary; every other time the
 * 1 MiB below it stays mapped (a guard the tracker does not see), so that
 * extending the mapping down to the boundary fails. */
static bool misalign;
static unsigned misaligned, guarded;        /* mappings misaligned, and of those with a guard */
static unsigned noreplace_ok, noreplace_failed; /* MAP_FIXED_NOREPLACE calls that mapped / failed */

static void *misaligned_mmap(size_t len, int prot, int flags)
{
    const uintptr_t big = 2 * MiB;
    size_t over = len + 3 * big;
    char *raw = __real_mmap(NULL, over, prot, flags, -1, 0);
    if (raw == MAP_FAILED) return raw;
    char *boundary = (char *)((((uintptr_t)raw + big - 1) & ~(big - 1)) + big);
    char *r = boundary + MiB;
    bool guard = misaligned++ % 2;
    char *keep_from = guard ? boundary : r;
    __real_munmap(raw, (size_t)(keep_from - raw));
    __real_munmap(r + len, (size_t)(raw + over - (r + len)));
    guarded += guard;
    return r;
}

/* Both names (the archive calls mmap64 where _FILE_OFFSET_BITS is 64). */
static void *wrap_mmap(void *(*real)(void *, size_t, int, int, int, off_t), void *addr, size_t len, int prot,
                       int flags, int fd, off_t off)
{
    if (inject(SYS_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    if (misalign && !addr && (flags & MAP_ANONYMOUS) && len % (2 * MiB) == 0)
        return mmap_common(misaligned_mmap(len, prot, flags), len);
    void *r = real(addr, len, prot, flags, fd, off);
    if (flags & MAP_FIXED_NOREPLACE) {
        if (r == addr) noreplace_ok++;
        else noreplace_failed++;
        if (r == MAP_FAILED) return r; /* EEXIST: the guard is there, not a real failure */
    }
    return mmap_common(r, len);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return wrap_mmap(__real_mmap, addr, len, prot, flags, fd, off);
}

void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return wrap_mmap(__real_mmap64, addr, len, prot, flags, fd, off);
}

/* A refused munmap of a whole mapping may leave it mapped for good (and
 * counted: bitslab cannot do better). A refused munmap of part of one (a
 * split: trimming an aligned mapping, shrinking a huge block) must not: the
 * mapping is either kept whole by its user or unmapped whole. "Whole": the
 * range is made of mmaps the tracker saw, none of them cut (a huge block
 * extended down to its 2 MiB boundary is two: see misaligned_mmap). */
static range_t refused_whole;

static bool whole_mappings(uintptr_t lo, uintptr_t hi)
{
    uintptr_t covered = lo;
    for (unsigned i = 0; i < nranges; i++) { /* sorted by address */
        if (ranges[i].hi <= lo || ranges[i].lo >= hi) continue;
        if (ranges[i].lo < lo || ranges[i].hi > hi || ranges[i].lo != covered) return false;
        covered = ranges[i].hi;
    }
    return covered == hi;
}

int __wrap_munmap(void *addr, size_t len)
{
    if (inject(SYS_MUNMAP)) {
        if (whole_mappings((uintptr_t)addr, (uintptr_t)addr + page_up(len)))
            refused_whole = (range_t){(uintptr_t)addr, (uintptr_t)addr + page_up(len)};
        errno = ENOMEM;
        return -1;
    }
    int rc = __real_munmap(addr, len);
    if (rc == 0) track_remove((uintptr_t)addr, len);
    else real_failures[SYS_MUNMAP]++;
    return rc;
}

void *__wrap_mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    if (inject(SYS_MREMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *r = __real_mremap(old, old_len, new_len, flags, new_addr);
    if (r == MAP_FAILED) {
        /* Growing in place fails whenever the next pages are taken: normal. */
        real_failures[SYS_MREMAP]++;
        if (flags & MREMAP_FIXED) die("a real MREMAP_FIXED failure: the tracker cannot tell what is mapped");
        return r;
    }
    track_remove((uintptr_t)old, old_len);
    if (flags & MREMAP_FIXED) track_remove((uintptr_t)new_addr, new_len);
    track_add((uintptr_t)r, new_len);
    return r;
}

int __wrap_madvise(void *addr, size_t len, int advice)
{
    if (inject(SYS_MADVISE)) {
        errno = fail_errno;
        return -1;
    }
    int rc = __real_madvise(addr, len, advice);
    if (rc != 0) real_failures[SYS_MADVISE]++;
    return rc;
}

/* ---- failure reporting --------------------------------------------------------- */

static const char *phase = "start";

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL [%s", phase);
    if (fail_sys >= 0) fprintf(stderr, ", %s call %u fails (%s)", sys_name[fail_sys], fail_nth, strerror(fail_errno));
    fprintf(stderr, "]: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    _exit(1);
}

#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        if (!(cond)) die(__VA_ARGS__);                                                              \
    } while (0)

/* ---- live blocks and their patterns ------------------------------------------- */

#define MAX_BLOCKS 1024
typedef struct live {
    unsigned char *p;
    size_t size;
    size_t align;
    uint64_t id;
} live_t;
static live_t blocks[MAX_BLOCKS];
static unsigned nblocks;
static uint64_t next_id = 1;

/* The pattern of block `id`: 8-byte words, every byte odd (never 0, so old
 * data is never mistaken for calloc's zero). */
static uint64_t pattern_word(uint64_t id, size_t w)
{
    return ((id * 0x9E3779B97F4A7C15ull) ^ (w * 0xD6E8FEB86659FD93ull)) | 0x0101010101010101ull;
}

static unsigned char pattern_at(uint64_t id, size_t i) { return (unsigned char)(pattern_word(id, i / 8) >> (i % 8 * 8)); }

/* Blocks up to 64 KiB carry their pattern in every byte; bigger ones in the
 * first 4 KiB of every 64 KiB (every slab of a wide block, every 16th page of
 * a huge one): enough to see old data anywhere it could come back, at a
 * sixteenth of the page faults. */
#define STRIDE (64 * KiB)
#define COVER (4 * KiB)

/* Calls fn on each patterned range of b within [from, to). */
static void each_range(const live_t *b, size_t from, size_t to, void (*fn)(const live_t *, size_t, size_t))
{
    size_t cover = b->size > STRIDE ? COVER : STRIDE;
    for (size_t seg = 0; seg < to; seg += STRIDE) {
        size_t lo = seg > from ? seg : from, hi = seg + cover < to ? seg + cover : to;
        if (lo < hi) fn(b, lo, hi);
    }
}

/* Blocks are 16-byte aligned: whole words are written and read directly. */
static void fill_range(const live_t *b, size_t lo, size_t hi)
{
    for (; lo < hi && lo % 8; lo++) b->p[lo] = pattern_at(b->id, lo);
    for (; lo + 8 <= hi; lo += 8) *(uint64_t *)(void *)(b->p + lo) = pattern_word(b->id, lo / 8);
    for (; lo < hi; lo++) b->p[lo] = pattern_at(b->id, lo);
}

static void verify_range(const live_t *b, size_t lo, size_t hi)
{
    while (lo + 8 <= hi && lo % 8 == 0 && *(const uint64_t *)(const void *)(b->p + lo) == pattern_word(b->id, lo / 8))
        lo += 8;
    for (; lo < hi; lo++)
        CHECK(b->p[lo] == pattern_at(b->id, lo), "block %p (%zu bytes, id %" PRIu64 "): byte %zu is %#x, not its pattern %#x",
              (void *)b->p, b->size, b->id, lo, b->p[lo], pattern_at(b->id, lo));
}

static void fill(const live_t *b, size_t from) { each_range(b, from, b->size, fill_range); }

/* The first n bytes of b hold its pattern. */
static void verify(const live_t *b, size_t n) { each_range(b, 0, n, verify_range); }

static void verify_all(void)
{
    for (unsigned i = 0; i < nblocks; i++) verify(&blocks[i], blocks[i].size);
}

static void check_zero(const unsigned char *p, size_t n, const char *what)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if (x) break;
    }
    for (; i < n; i++)
        CHECK(p[i] == 0, "%s(%zu) = %p: byte %zu is %#x, old data instead of zero", what, n, (const void *)p, i, p[i]);
}

/* A fresh allocation's result: NULL with ENOMEM, or a good block. */
static live_t *got(void *p, size_t size, size_t align, bool zero, const char *what)
{
    if (!p) {
        CHECK(errno == ENOMEM, "%s(%zu): NULL with errno %d (%s), not ENOMEM", what, size, errno, strerror(errno));
        return NULL;
    }
    size_t a = align > MIN_BIN ? align : MIN_BIN;
    CHECK((uintptr_t)p % a == 0, "%s(%zu, align %zu) = %p: misaligned", what, size, align, p);
    CHECK(bitslab_usable_size(p) >= size, "%s(%zu) = %p: usable size %zu", what, size, p, bitslab_usable_size(p));
    if (zero) check_zero(p, size, what);
    CHECK(nblocks < MAX_BLOCKS, "too many blocks");
    live_t *b = &blocks[nblocks++];
    *b = (live_t){p, size, align, next_id++};
    fill(b, 0);
    return b;
}

static live_t *do_malloc(size_t size)
{
    errno = 0;
    return got(bitslab_malloc(size), size, 0, false, "malloc");
}

static live_t *do_calloc(size_t size)
{
    errno = 0;
    return got(bitslab_calloc(1, size), size, 0, true, "calloc");
}

static live_t *do_aligned(size_t align, size_t size, int how)
{
    errno = 0;
    if (how == 0) return got(bitslab_aligned_alloc(align, size), size, align, false, "aligned_alloc");
    if (how == 1) return got(bitslab_memalign(align, size), size, align, false, "memalign");
    void *p = (void *)1;
    errno = EDOM; /* posix_memalign must leave errno alone */
    int rc = bitslab_posix_memalign(&p, align, size);
    CHECK(errno == EDOM, "posix_memalign(%zu, %zu) changed errno to %d", align, size, errno);
    if (rc != 0) {
        CHECK(rc == ENOMEM, "posix_memalign(%zu, %zu) returned %d, not ENOMEM", align, size, rc);
        CHECK(p == (void *)1, "posix_memalign failed but wrote its out-pointer");
        return NULL;
    }
    errno = 0;
    return got(p, size, align, false, "posix_memalign");
}

/* free never changes errno (POSIX.1-2024, glibc >= 2.33), even when a
 * munmap or madvise it makes fails. */
static void do_free(unsigned i)
{
    verify(&blocks[i], blocks[i].size);
    errno = EDOM;
    if (i % 3 == 0) bitslab_free(blocks[i].p);
    else if (i % 3 == 1) bitslab_free_sized(blocks[i].p, blocks[i].size);
    else bitslab_free_aligned_sized(blocks[i].p, blocks[i].align, blocks[i].size);
    CHECK(errno == EDOM, "free(%p) (%zu bytes) changed errno to %d", (void *)blocks[i].p, blocks[i].size, errno);
    blocks[i] = blocks[--nblocks];
}

/* realloc block i to `size`: on failure the block must be intact. */
static void do_realloc(unsigned i, size_t size)
{
    live_t *b = &blocks[i];
    verify(b, b->size);
    errno = 0;
    unsigned char *q = bitslab_realloc(b->p, size);
    if (!q) {
        CHECK(errno == ENOMEM, "realloc(%zu -> %zu): NULL with errno %d", b->size, size, errno);
        CHECK(bitslab_usable_size(b->p) >= b->size, "failed realloc shrank the block");
        verify(b, b->size);
        return;
    }
    CHECK((uintptr_t)q % MIN_BIN == 0, "realloc = %p: misaligned", (void *)q);
    CHECK(bitslab_usable_size(q) >= size, "realloc(%zu) = %p: usable size %zu", size, (void *)q,
          bitslab_usable_size(q));
    size_t keep = size < b->size ? size : b->size;
    b->p = q;
    b->align = 0;
    verify(b, keep);
    b->size = size;
    fill(b, keep);
}

static void free_all(void)
{
    while (nblocks) do_free(nblocks - 1);
}

/* ---- what bitslab believes, against the kernel ------------------------------- */

/* Resident pages of [p, p + len), by mincore. */
static size_t resident(uintptr_t p, size_t len)
{
    static unsigned char vec[(64 * MiB) / OS_PAGE];
    size_t n = 0;
    while (len) {
        size_t chunk = len < sizeof vec * OS_PAGE ? len : sizeof vec * OS_PAGE;
        CHECK(mincore((void *)p, chunk, vec) == 0, "mincore(%#" PRIxPTR ", %zu): %s", p, chunk, strerror(errno));
        for (size_t i = 0; i < chunk / OS_PAGE; i++) n += vec[i] & 1;
        p += chunk;
        len -= chunk;
    }
    return n * OS_PAGE;
}

/* Every range bitslab believes decommitted has no resident page; returns
 * their total. Reads no memory of a decommitted range (a read would map the
 * zero page, which mincore counts as resident). */
static size_t believed_decommitted(void)
{
    size_t total = 0;
    /* Acquire: pairs with the registry's release CAS (superpage_map). */
    for (superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire); sp; sp = sp->all_next) {
        /* Relaxed: single-threaded test. */
        if (atomic_load_explicit(&sp->heap, memory_order_relaxed)) {
            for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) {
                slab_t *s = &sp->slabs[i];
                if (!s->decommitted) continue;
                size_t r = resident((uintptr_t)s->data, SLAB_SIZE);
                CHECK(r == 0, "owned superpage %p: slab %u is marked decommitted but %zu bytes are resident",
                      (void *)sp, i, r);
                total += SLAB_SIZE;
            }
        } else if (atomic_load_explicit(&sp->shrunk, memory_order_relaxed)) { /* single-threaded test */
            /* A shrunk orphan: all but its first SHRINK_KEEP bytes unmapped. */
            for (unsigned i = 0; i < nranges; i++)
                CHECK(ranges[i].hi <= (uintptr_t)sp + SHRINK_KEEP || ranges[i].lo >= (uintptr_t)sp + SUPERPAGE_SIZE,
                      "orphan %p is marked shrunk but %#" PRIxPTR "..%#" PRIxPTR " is still mapped", (void *)sp,
                      ranges[i].lo, ranges[i].hi);
            /* Its kept pages past the first were decommitted before the shrink. */
            size_t r = resident((uintptr_t)sp + OS_PAGE, SHRINK_KEEP - OS_PAGE);
            CHECK(r == 0, "shrunk orphan %p: %zu bytes of its kept metadata are resident", (void *)sp, r);
            total += SHRINK_KEEP - OS_PAGE;
        } else {
            /* An orphan: its slab_t array may be decommitted; the header says. */
            uint32_t clean = sp->orphan_clean;
            for (unsigned i = 1; i < SLABS_PER_SUPERPAGE; i++) {
                if (!((clean >> i) & 1)) continue;
                size_t r = resident((uintptr_t)sp + i * SLAB_SIZE, SLAB_SIZE);
                CHECK(r == 0, "orphan %p: slab %u is in its clean mask but %zu bytes are resident", (void *)sp, i, r);
                total += SLAB_SIZE;
            }
            if (clean & 1) {
                size_t r = resident((uintptr_t)sp + OS_PAGE, SLAB_SIZE - OS_PAGE);
                CHECK(r == 0, "orphan %p: metadata marked decommitted but %zu bytes are resident", (void *)sp, r);
                total += SLAB_SIZE - OS_PAGE;
            }
        }
    }
    /* The huge cache: clean mappings are decommitted but their header page
     * (dirty ones are committed, and may be resident). */
    uintptr_t addr[64];
    size_t len[64];
    bool dirty[64];
    unsigned n = huge_cache_contents(addr, len, dirty, 64);
    for (unsigned i = 0; i < n; i++) {
        if (dirty[i]) continue;
        size_t r = resident(addr[i] + OS_PAGE, len[i] - OS_PAGE);
        CHECK(r == 0, "huge cache: mapping %#" PRIxPTR " (%zu bytes) has %zu bytes resident", addr[i], len[i], r);
        total += len[i] - OS_PAGE;
    }
    return total;
}

/* Every mapped range belongs to something bitslab knows of: a superpage,
 * the heap chunk, a live huge block, a cached huge mapping, or a whole
 * mapping the kernel refused to unmap. Anything else has leaked. */
static void check_no_leak(void)
{
    range_t known[MAX_RANGES];
    unsigned n = 0;
    /* Acquire: pairs with the registry's release CAS (superpage_map). */
    for (superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire); sp; sp = sp->all_next)
        known[n++] = (range_t){(uintptr_t)sp, (uintptr_t)sp + SUPERPAGE_SIZE};
    for (unsigned i = 0; i < nranges; i++) /* the heap chunk holds our heap */
        if (ranges[i].lo <= (uintptr_t)bitslab_tls_heap && (uintptr_t)bitslab_tls_heap < ranges[i].hi) known[n++] = ranges[i];
    for (unsigned i = 0; i < nblocks; i++) {
        uintptr_t region = region_of(blocks[i].p);
        if (region_kind_of(region) != REGION_HUGE) continue;
        huge_header_t *hh = (huge_header_t *)region;
        known[n++] = (range_t){(uintptr_t)hh->map_base, (uintptr_t)hh->map_base + hh->map_len};
    }
    uintptr_t addr[64];
    size_t len[64];
    bool dirty[64];
    unsigned c = huge_cache_contents(addr, len, dirty, 64);
    for (unsigned i = 0; i < c; i++) known[n++] = (range_t){addr[i], addr[i] + len[i]};
    if (refused_whole.hi) known[n++] = refused_whole;
    for (unsigned i = 0; i < nranges; i++) {
        /* Walk the range, skipping whatever a known range covers. */
        uintptr_t at = ranges[i].lo;
        while (at < ranges[i].hi) {
            uintptr_t next = at;
            for (unsigned k = 0; k < n; k++)
                if (known[k].lo <= at && at < known[k].hi && known[k].hi > next) next = known[k].hi;
            CHECK(next > at, "leaked: %#" PRIxPTR " (in the mapped range %#" PRIxPTR "..%#" PRIxPTR ") is mapped, "
                  "counted, and belongs to nothing", at, ranges[i].lo, ranges[i].hi);
            at = next;
        }
    }
}

static void check_state(const char *when)
{
    const char *saved = phase;
    phase = when;
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    size_t truth = tracked_bytes();
    CHECK(st.mapped == truth, "stats say %zu bytes mapped, the kernel has %zu", st.mapped, truth);
    CHECK(st.committed <= st.mapped, "committed %zu > mapped %zu", st.committed, st.mapped);
    size_t res = 0;
    for (unsigned i = 0; i < nranges; i++) res += resident(ranges[i].lo, ranges[i].hi - ranges[i].lo);
    CHECK(res <= st.committed, "%zu bytes resident but only %zu counted as committed", res, st.committed);
    size_t dec = believed_decommitted();
    CHECK(st.committed == st.mapped - dec, "committed %zu, but mapped %zu - decommitted %zu = %zu", st.committed,
          st.mapped, dec, st.mapped - dec);
    CHECK(st.heaps_total <= 1, "heaps_total %zu: one thread made one heap", st.heaps_total);
    check_no_leak();
    /* The heap's count of FREE slabs a purge may still return (what the
     * debug checker verifies, here in every build). */
    heap_t *h = bitslab_tls_heap;
    if (!h->is_placeholder) {
        uint32_t dirty_free = 0;
        for (superpage_t *sp = h->superpages; sp; sp = sp->next)
            for (uint32_t t = sp->free_mask; t; t &= t - 1) {
                slab_t *s = &sp->slabs[ctz64(t)];
                dirty_free += slab_dirty(s) && !s->decommit_failed;
            }
        CHECK(dirty_free == h->dirty_free, "heap counts %u dirty FREE slabs, there are %u", h->dirty_free, dirty_free);
    }
#if BITSLAB_DEBUG
    bitslab_debug_check();
#endif
    phase = saved;
}

/* ---- the workload ---------------------------------------------------------------- */

static void small_and_wide(void)
{
    /* Every class, from each entry point in turn. */
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        size_t size = bitslab_class_size[c] - (c % 3) * 5;
        if (c % 4 == 0) do_malloc(size);
        else if (c % 4 == 1) do_calloc(size);
        else do_aligned(c % 4 == 2 ? 32 : 64, size, (int)(c / 4 % 3));
        do_malloc(size / 2 + 1);
    }
    do_malloc(0);
    do_calloc(1);
    /* Wide: 32 KiB .. 1 MiB, some aligned. */
    const size_t wide[] = {40 * KiB, 64 * KiB, 100 * KiB, 200 * KiB, 500 * KiB, 1 * MiB};
    for (unsigned i = 0; i < sizeof wide / sizeof *wide; i++) {
        if (i % 2) do_calloc(wide[i]);
        else do_malloc(wide[i]);
    }
    do_aligned(256 * KiB, 100 * KiB, 0);
    do_aligned(1 * MiB, 1 * MiB, 2);
}

static void huge(void)
{
    do_malloc(1 * MiB + 1);
    do_calloc(2 * MiB);
    do_aligned(4 * MiB, 1100 * KiB, 0);    /* alignment above 2 MiB */
    do_aligned(2 * MiB, 2 * MiB + 100, 2); /* alignment of 2 MiB */
    do_aligned(64 * KiB, 1536 * KiB, 1);
    /* realloc growth (mremap in place or moved) and shrinking (munmap of the tail). */
    live_t *b = do_malloc(1536 * KiB);
    if (b) {
        unsigned i = (unsigned)(b - blocks);
        do_realloc(i, 3 * MiB);
        do_realloc(i, 5 * MiB);
        do_realloc(i, 2 * MiB);
    }
    /* small -> wide -> huge -> small by realloc */
    b = do_malloc(24);
    if (b) {
        unsigned i = (unsigned)(b - blocks);
        do_realloc(i, 3000);
        do_realloc(i, 300 * KiB);
        do_realloc(i, 2 * MiB);
        do_realloc(i, 4 * MiB);
        do_realloc(i, 100);
    }
}

/* Free a huge block and calloc the same size: the huge cache hands the
 * mapping back, and it must read as zero. */
static void huge_cache_round(void)
{
    live_t *b = do_malloc(2 * MiB);
    if (!b) return;
    do_free((unsigned)(b - blocks));
    do_calloc(2 * MiB);
    b = do_malloc(1536 * KiB + 5);
    if (!b) return;
    do_free((unsigned)(b - blocks));
    do_calloc(1536 * KiB);
    /* A need a little above a cached mapping (and too far above or below
     * the others): mremap grows it in place (or, refused, it goes back to
     * the cache and a new one is mapped). */
    b = do_malloc(9 * MiB);
    if (!b) return;
    do_free((unsigned)(b - blocks));
    do_malloc(9 * MiB + 100 * KiB);
}

static void workload(void)
{
    /* No purge on a timer: the syscalls happen in the same order every run. */
    atomic_store_explicit(&bitslab_purge_delay_ms, -1, memory_order_relaxed);

    phase = "allocate";
    small_and_wide();
    huge();
    check_state("after allocating");

    phase = "free half, reuse with calloc";
    unsigned n = nblocks;
    for (unsigned i = n; i-- > 0;)
        if (i % 2) do_free(i);
    small_and_wide();
    huge_cache_round();
    verify_all();
    check_state("after reuse");

    /* Keep one small block: its superpage stays owned, and collect purges
     * its other slabs (heap_purge) instead of orphaning it. */
    phase = "free all but one, collect";
    live_t *anchor = do_malloc(100);
    while (nblocks > (anchor ? 1u : 0u)) {
        unsigned i = nblocks - 1;
        if (anchor && blocks[i].p == anchor->p) i--;
        do_free(i);
    }
    bitslab_collect();
    verify_all();
    check_state("after collect");

    phase = "calloc after collect";
    const size_t sizes[] = {16, 100, 1000, 5000, 30000, 40 * KiB, 300 * KiB, 1 * MiB, 2 * MiB};
    for (unsigned r = 0; r < 2; r++) {
        for (unsigned c = 0; c < NUM_CLASSES; c++) do_calloc(bitslab_class_size[c]);
        for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) do_calloc(sizes[i]);
    }
    verify_all();
    check_state("after calloc");

    phase = "free all, collect";
    free_all();
    bitslab_collect();
    check_state("at the end");
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    CHECK(st.in_use == 0, "%zu bytes in use after freeing everything", st.in_use);
}

/* ---- drivers ------------------------------------------------------------------------- */

enum child_result { CHILD_OK = 0, CHILD_FAILED = 1, CHILD_NOT_FIRED = 3 };

/* Run the workload in a fresh child with the Nth call of `s` failing.
 * Returns the child's result; a crash is a failure. */
static int run_child(int s, unsigned nth, int err)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        fail_sys = s;
        fail_nth = nth;
        fail_errno = err;
        workload();
        _exit(s >= 0 && !fired ? CHILD_NOT_FIRED : CHILD_OK);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        exit(1);
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "FAIL: %s call %u fails: the child died of signal %d (%s)\n", s >= 0 ? sys_name[s] : "no",
                nth, WTERMSIG(status), strsignal(WTERMSIG(status)));
        return CHILD_FAILED;
    }
    return WEXITSTATUS(status);
}

#define SWEEP_MAX 200
#define SWEEP_SLACK 8 /* N past the last call that fired, to allow for a few more calls in some runs */

static int inject_main(void)
{
    if (run_child(-1, 0, 0) != CHILD_OK) {
        fprintf(stderr, "FAIL: the workload fails without any injected failure\n");
        return 1;
    }
    unsigned failures = 0;
    for (int s = 0; s < SYS_COUNT; s++) {
        unsigned last_fired = 0, runs = 0;
        for (unsigned nth = 1; nth <= SWEEP_MAX && nth <= last_fired + SWEEP_SLACK; nth++) {
            /* madvise fails with EINVAL (locked memory) and EAGAIN in turn. */
            int err = s != SYS_MADVISE ? ENOMEM : nth % 2 ? EINVAL : EAGAIN;
            int r = run_child(s, nth, err);
            runs++;
            if (r == CHILD_NOT_FIRED) continue;
            last_fired = nth;
            if (r != CHILD_OK) failures++;
        }
        printf("%-8s: failed calls 1..%u, %u runs\n", sys_name[s], last_fired, runs);
        if (last_fired == 0) {
            fprintf(stderr, "FAIL: the workload never calls %s\n", sys_name[s]);
            failures++;
        }
        if (last_fired + SWEEP_SLACK > SWEEP_MAX) {
            fprintf(stderr, "FAIL: the workload makes more than %u calls of %s; raise SWEEP_MAX\n",
                    SWEEP_MAX - SWEEP_SLACK, sys_name[s]);
            failures++;
        }
    }
    if (failures) fprintf(stderr, "%u failing runs\n", failures);
    return failures ? 1 : 0;
}

static int mlock_main(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_MEMLOCK, &rl);
    }
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        if (errno == EPERM || errno == ENOMEM) {
            printf("SKIP: mlockall: %s (RLIMIT_MEMLOCK too small, no CAP_IPC_LOCK)\n", strerror(errno));
            return 77;
        }
        fprintf(stderr, "FAIL: mlockall: %s\n", strerror(errno));
        return 1;
    }
    workload();

    /* With every madvise failing, a slab whose decommit failed must not be
     * tried again on every slow path (it no longer counts towards the purge
     * caps): freeing n slabs costs O(n) madvise calls, not O(n^2). */
    phase = "churn under mlockall";
    unsigned before = calls[SYS_MADVISE];
    enum { WIDE_BLOCKS = 200, ROUNDS = 200 };
    for (unsigned i = 0; i < WIDE_BLOCKS; i++) CHECK(do_malloc(SLAB_SIZE), "malloc(64 KiB) failed");
    /* Keep every 16th: the superpages stay owned, with many dirty FREE slabs. */
    for (unsigned i = nblocks; i-- > 0;)
        if (i % 16) do_free(i);
    for (unsigned i = 0; i < ROUNDS; i++) {
        live_t *b = do_malloc(SLAB_SIZE);
        CHECK(b, "malloc(64 KiB) failed");
        do_free((unsigned)(b - blocks));
    }
    unsigned churn = calls[SYS_MADVISE] - before;
    free_all();
    bitslab_collect();
    check_state("after the churn");
    printf("under mlockall: %u madvise calls (%u in the churn of %u slabs), %u refused by the kernel\n",
           calls[SYS_MADVISE], churn, WIDE_BLOCKS + ROUNDS, real_failures[SYS_MADVISE]);
    CHECK(churn <= 2 * (WIDE_BLOCKS + ROUNDS), "%u madvise calls to free %u slabs", churn, WIDE_BLOCKS + ROUNDS);
    CHECK(real_failures[SYS_MADVISE] > 0, "madvise never failed under mlockall: the test tests nothing");
    return 0;
}

/* Huge blocks of sizes from [lo, hi) (a fixed sequence) malloc'ed, one byte
 * written in every page, checked and freed, n times; returns the minor page
 * faults it took and adds the pages it touched to *touched. */
static long huge_loop(size_t lo, size_t hi, unsigned n, size_t *touched)
{
    uint64_t x = 42;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    for (unsigned i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t size = lo + (size_t)((x >> 33) % (hi - lo));
        unsigned char *p = bitslab_malloc(size);
        CHECK(p, "malloc(%zu) failed", size);
        for (size_t off = 0; off < size; off += OS_PAGE) p[off] = (unsigned char)i;
        p[size - 1] = (unsigned char)i;
        CHECK(p[0] == (unsigned char)i, "block %p overwritten", (void *)p);
        *touched += (size + OS_PAGE - 1) / OS_PAGE;
        bitslab_free(p);
    }
    getrusage(RUSAGE_SELF, &ru1);
    return ru1.ru_minflt - ru0.ru_minflt;
}

/* The huge cache keeps freed mappings committed: a loop of huge blocks of
 * varying sizes maps a few and reuses them, with neither madvise nor page
 * faults once they exist. Before it, every free was a madvise and every
 * page of every block a fault. Bounds are structural, not timings: purges
 * by age are off (purge delay -1). */
static int loop_main(void)
{
    atomic_store_explicit(&bitslab_purge_delay_ms, -1, memory_order_relaxed);
    phase = "loop of 4..12 MiB blocks";
    /* Everything fits under the 64 MiB of dirty mappings the cache may keep,
     * and a mapping serves any need from a quarter of its size up: at most a
     * few mappings, each touched once. */
    size_t touched = 0;
    long faults = huge_loop(4 * MiB, 12 * MiB, 200, &touched);
    printf("200 blocks of 4..12 MiB (%zu pages touched): %ld minor faults, mmap %u, munmap %u, mremap %u, madvise %u\n",
           touched, faults, calls[SYS_MMAP], calls[SYS_MUNMAP], calls[SYS_MREMAP], calls[SYS_MADVISE]);
    size_t max_pages = 12 * MiB / OS_PAGE;
    /* 3 mappings here; where the kernel does not align them a new mapping
     * may take up to 3 mmaps (huge_map's extension, its fallback). */
    CHECK(calls[SYS_MMAP] <= 12, "%u mmap calls: freed mappings are not reused", calls[SYS_MMAP]);
    CHECK(calls[SYS_MADVISE] == 0, "%u madvise calls: freed mappings are decommitted", calls[SYS_MADVISE]);
    CHECK(faults <= (long)(6 * max_pages), "%ld page faults for %zu pages touched: more than 6 blocks' first touch",
          faults, touched);
    check_state("after the loop");

    phase = "loop of 5..25 MiB blocks";
    /* bench/ huge-loop: the cap keeps only some of the mappings dirty. */
    unsigned m0 = calls[SYS_MMAP], a0 = calls[SYS_MADVISE];
    touched = 0;
    faults = huge_loop(5 * MiB, 25 * MiB, 100, &touched);
    printf("100 blocks of 5..25 MiB (%zu pages touched): %ld minor faults, mmap %u, madvise %u\n", touched, faults,
           calls[SYS_MMAP] - m0, calls[SYS_MADVISE] - a0);
    CHECK(faults <= (long)(touched / 4), "%ld page faults for %zu pages touched", faults, touched);
    CHECK(calls[SYS_MMAP] - m0 <= 20, "%u mmap calls for 100 blocks", calls[SYS_MMAP] - m0);
    CHECK(calls[SYS_MADVISE] - a0 <= 20, "%u madvise calls for 100 blocks", calls[SYS_MADVISE] - a0);
    check_state("after the second loop");
    bitslab_collect();
    check_state("after collect");
    return 0;
}

static int misalign_main(void)
{
    misalign = true;
    workload();
    printf("misaligned mappings: %u (%u with the 1 MiB below taken); MAP_FIXED_NOREPLACE: %u mapped, %u refused\n",
           misaligned, guarded, noreplace_ok, noreplace_failed);
    CHECK(noreplace_ok > 0, "no misaligned huge mapping was extended down to its 2 MiB boundary");
    CHECK(noreplace_failed > 0, "no misaligned huge mapping took the over-map fallback");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* No transparent huge pages: a collapsed huge page would make pages
     * resident that bitslab rightly believes decommitted. */
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    const char *mode = argc > 1 ? argv[1] : "inject";
    if (!strcmp(mode, "inject")) return inject_main();
    if (!strcmp(mode, "mlock")) return mlock_main();
    if (!strcmp(mode, "loop")) return loop_main();
    if (!strcmp(mode, "misalign")) return misalign_main();
    if (!strcmp(mode, "inject-misalign")) {
        misalign = true;
        return inject_main();
    }
    if (!strcmp(mode, "clean")) {
        workload();
        printf("calls: mmap %u, munmap %u, mremap %u, madvise %u\n", calls[SYS_MMAP], calls[SYS_MUNMAP],
               calls[SYS_MREMAP], calls[SYS_MADVISE]);
        return 0;
    }
    fprintf(stderr, "usage: %s [inject|inject-misalign|mlock|clean|misalign|loop]\n", argv[0]);
    return 2;
}
