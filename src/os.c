/*
 * os.c: the only file that talks to the kernel about memory.
 *
 * - os_map_aligned: map `len` bytes at an address aligned to `align` by
 *   over-mapping len + align and trimming both ends (os_trim).
 * - os_decommit: MADV_DONTNEED, so the pages stop counting in RSS and read
 *   back as zero; the address range stays reserved.
 * - a failed call leaves the statistics saying what the kernel has: memory
 *   whose decommit failed stays committed (and its caller keeps treating it
 *   as dirty), a range whose munmap failed stays mapped. Neither changes
 *   errno: the caller handles the failure, its own caller never sees it.
 * - the counts of what is mapped, committed and purged (the statistics
 *   read them; huge.c's mremap goes through os_remap so that they stay
 *   true).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "os.h"

/* The page size, for the assertions: types.h's OS_PAGE (os.c, of the same
 * layer, does not include it). */
#define PAGE 4096u

_Atomic size_t bitslab_mapped_bytes;
_Atomic size_t bitslab_committed_bytes;

_Atomic size_t os_purged_bytes;
_Atomic size_t os_madvise_calls;

void *os_map(size_t len)
{
    BITSLAB_ASSERT(len > 0);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    /* Relaxed: a statistics counter; no other data is published through it. */
    atomic_fetch_add_explicit(&bitslab_mapped_bytes, len, memory_order_relaxed);
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
    return p;
}

/* Unmap [p, p + len), of which `committed` bytes count as committed. False
 * if the kernel refused (munmap that splits a mapping fails with ENOMEM past
 * vm.max_map_count): the range is still mapped and still counted. */
bool os_unmap_counted(void *p, size_t len, size_t committed)
{
    BITSLAB_ASSERT(p && ((uintptr_t)p & (PAGE - 1)) == 0 && len > 0);
    BITSLAB_ASSERT(committed <= len); /* a part of the range, or all of it */
    int saved = errno;
    if (munmap(p, len) != 0) {
        errno = saved;
        return false;
    }
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_mapped_bytes, len, memory_order_relaxed);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_committed_bytes, committed, memory_order_relaxed);
    return true;
}

bool os_unmap(void *p, size_t len) { return os_unmap_counted(p, len, len); }

/* Of the mapping [raw, raw + over), keep [keep, keep + len) and unmap the
 * rest. If the kernel refuses to split the mapping, unmap all that is left
 * of it and fail (errno ENOMEM): the caller never gets a block whose
 * neighbours are mapped and counted as unmapped. */
bool os_trim(char *raw, size_t over, char *keep, size_t len)
{
    BITSLAB_ASSERT(keep >= raw && len <= over && (size_t)(keep - raw) <= over - len); /* keep lies inside */
    size_t head = (size_t)(keep - raw), tail = over - head - len;
    if (head && !os_unmap(raw, head)) {
        os_unmap(raw, over); /* if this fails too, the range stays mapped and counted */
        errno = ENOMEM;
        return false;
    }
    if (tail && !os_unmap(keep + len, tail)) {
        os_unmap(keep, len + tail);
        errno = ENOMEM;
        return false;
    }
    return true;
}

void *os_map_aligned(size_t len, size_t align, size_t *map_len, char **map_base)
{
    BITSLAB_ASSERT(align >= PAGE && (align & (align - 1)) == 0 && len > 0);
    if (len > SIZE_MAX - align) {
        errno = ENOMEM;
        return NULL;
    }
    size_t over = len + align;
    char *raw = os_map(over);
    if (!raw) return NULL;
    char *start = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (!os_trim(raw, over, start, len)) return NULL;
    BITSLAB_ASSERT(((uintptr_t)start & (align - 1)) == 0);
    *map_len = len;
    *map_base = start;
    return start;
}

/* MADV_DONTNEED, counted in the purge statistics (purged bytes, madvise
 * calls) but not out of `committed`: as it is for pages inside a slab that
 * stays configured (docs/purger.md), reused by page faults, not by a
 * recommit. errno is left alone. */
bool os_purge_pages(void *p, size_t len)
{
    BITSLAB_ASSERT(((uintptr_t)p & (PAGE - 1)) == 0 && len > 0 && len % PAGE == 0); /* whole pages */
    int saved = errno;
    /* Relaxed (two counters): statistics; pair with bitslab_stats's relaxed loads (a snapshot). */
    atomic_fetch_add_explicit(&os_purged_bytes, len, memory_order_relaxed);
    atomic_fetch_add_explicit(&os_madvise_calls, 1, memory_order_relaxed); /* relaxed, as above: statistics */
    bool ok = madvise(p, len, MADV_DONTNEED) == 0;
    errno = saved;
    return ok;
}

/* Return [p, p + len) to the OS. True if it is decommitted (and no longer
 * counted as committed). False if madvise failed (EINVAL on memory locked by
 * mlockall or mlock, EAGAIN, ...): the pages keep their contents, so the
 * caller must go on treating them as committed and dirty. A failure can come
 * half-way through the range; treating all of it as still committed errs on
 * the safe side (calloc zeroes what may not be zero, the count is an upper
 * bound of what is resident). */
bool os_decommit(void *p, size_t len)
{
    BITSLAB_ASSERT(((uintptr_t)p & (PAGE - 1)) == 0 && len % PAGE == 0); /* whole pages */
    if (len == 0) return true;
    if (!os_purge_pages(p, len)) return false;
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
    return true;
}

/* Map len bytes at exactly addr (fresh zero pages, counted as mapped, not as
 * committed: the caller counts them when it uses them), unless something is
 * mapped there: then false, and nothing changed. */
bool os_map_at(void *addr, size_t len)
{
    BITSLAB_ASSERT(addr && ((uintptr_t)addr & (PAGE - 1)) == 0 && len > 0 && len % PAGE == 0);
    int saved = errno;
    void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
                   -1, 0);
    if (p != addr) {
        if (p != MAP_FAILED) munmap(p, len); /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
        errno = saved;
        return false;
    }
    /* Relaxed: a statistics counter. */
    atomic_fetch_add_explicit(&bitslab_mapped_bytes, len, memory_order_relaxed);
    return true;
}


/* Count len bytes as committed again (a decommitted range put back to use:
 * its pages fault in on touch). No system call. */
void os_note_committed(size_t len)
{
    BITSLAB_ASSERT(len % PAGE == 0); /* whole pages put back to use */
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
}

/* A millisecond clock for the purge delay: CLOCK_MONOTONIC_COARSE is read in
 * the vDSO, without a syscall, and is only read on slow paths. */
_Atomic uint32_t bitslab_clock_ms;

uint32_t os_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    uint32_t now = (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    // Relaxed: a hint for the dates remote freers (and slab_went_sparse) read
    // relaxed; any recent value does.
    atomic_store_explicit(&bitslab_clock_ms, now, memory_order_relaxed);
    return now;
}

/* mremap: grow [old, old + old_len) in place to new_len bytes (to == NULL),
 * or move it onto [to, to + new_len), a range the caller mapped and counted
 * (MREMAP_FIXED replaces it). The counts follow; errno is left alone. False,
 * and nothing changed, if the kernel refuses. */
bool os_remap(void *old, size_t old_len, size_t new_len, void *to)
{
    BITSLAB_ASSERT(((uintptr_t)old & (PAGE - 1)) == 0 && ((uintptr_t)to & (PAGE - 1)) == 0);
    BITSLAB_ASSERT(to || new_len > old_len); /* in place: it grows */
    BITSLAB_ASSERT(!to || to != old);
    int saved = errno;
#if BITSLAB_TSAN
    // ThreadSanitizer does not intercept mremap: a range a move unmaps would
    // keep its old accesses in TSan's shadow memory, and the next mapping
    // there would "race" with them (a false report in the user's program).
    // Under TSan a move copies, then unmaps with munmap, which TSan sees.
    void *r = MAP_FAILED;
    if (!to) r = mremap(old, old_len, new_len, 0);
    else if ((memcpy(to, old, old_len), munmap(old, old_len) == 0)) r = to;
#else
    void *r = to ? mremap(old, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, to) : mremap(old, old_len, new_len, 0);
#endif
    errno = saved;
    if (r == MAP_FAILED) return false;
    /* Grown in place: new_len - old_len more bytes; moved: the old range is
     * gone (the new one was counted when it was mapped). */
    size_t delta = to ? old_len : new_len - old_len;
    if (to) {
        /* Relaxed (two counters): statistics; pair with bitslab_stats's relaxed loads (a snapshot). */
        atomic_fetch_sub_explicit(&bitslab_mapped_bytes, delta, memory_order_relaxed);
        /* relaxed, as above: statistics */
        atomic_fetch_sub_explicit(&bitslab_committed_bytes, delta, memory_order_relaxed);
    } else {
        /* Relaxed (two counters): as in the branch above. */
        atomic_fetch_add_explicit(&bitslab_mapped_bytes, delta, memory_order_relaxed);
        /* relaxed: statistics, as in the branch above */
        atomic_fetch_add_explicit(&bitslab_committed_bytes, delta, memory_order_relaxed);
    }
    return true;
}

/* vm.overcommit_memory, read once (0 until then, 1 + the value after). */
static _Atomic int overcommit_mode;

/* True if address space costs more than the pages a program touches: under
 * an RLIMIT_AS (a reservation counts against it) or strict overcommit
 * accounting (vm.overcommit_memory = 2: a writable private mapping counts
 * against the commit limit, touched or not). Then nothing maps more than it
 * needs (huge_realloc's room). The limit is read at each call (one syscall;
 * callers are about to map anyway), the overcommit mode once. */
bool os_address_space_limited(void)
{
    int saved = errno;
    struct rlimit rl;
    bool limited = getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY;
    // Relaxed: the mode is the same for every reader (a racing first read
    // stores the same value); nothing else is published through it.
    int mode = atomic_load_explicit(&overcommit_mode, memory_order_relaxed);
    if (!mode) {
        char c = '0';
        int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (read(fd, &c, 1) != 1) c = '0';
            close(fd);
        }
        mode = 1 + (c - '0');
        /* Relaxed: as the load above. */
        atomic_store_explicit(&overcommit_mode, mode, memory_order_relaxed);
    }
    errno = saved;
    return limited || mode == 1 + 2;
}
