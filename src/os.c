/*
 * os.c: the only file that talks to the kernel about memory.
 *
 * - os_map_aligned: map `len` bytes at an address aligned to `align` by
 *   over-mapping len + align and trimming both ends.
 * - os_decommit: MADV_DONTNEED, so the pages stop counting in RSS and read
 *   back as zero; the address range stays reserved.
 * - the region registry: one byte per 2 MiB of the 47-bit user address space
 *   (a 64 MiB zero-initialised array, touched sparsely), so that
 *   free() can tell a bitslab pointer from a foreign one without reading
 *   memory that might not be mapped.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

_Atomic size_t bitslab_mapped_bytes;
_Atomic size_t bitslab_committed_bytes;

/* The registry lives in .bss (64 MiB of address space): zero pages cost no
 * memory until a byte in them is set (one 4 KiB page covers 8 GiB of address
 * space), and the fast path reads it at a fixed address. */
_Atomic uint8_t bitslab_region_map[REGION_MAP_SIZE];

void *os_map(size_t len)
{
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

void os_unmap(void *p, size_t len)
{
    munmap(p, len);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_mapped_bytes, len, memory_order_relaxed);
    /* Relaxed: statistics only. */
    atomic_fetch_sub_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
}

void *os_map_aligned(size_t len, size_t align, size_t *map_len, char **map_base)
{
    if (len > SIZE_MAX - align) {
        errno = ENOMEM;
        return NULL;
    }
    size_t over = len + align;
    char *raw = os_map(over);
    if (!raw) return NULL;
    uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)raw;
    size_t tail = over - head - len;
    if (head) os_unmap(raw, head);
    if (tail) os_unmap((char *)start + len, tail);
    *map_len = len;
    *map_base = (char *)start;
    return (void *)start;
}

void os_decommit(void *p, size_t len)
{
    if (len == 0) return;
    stats_note_purge(len); /* purged bytes and madvise calls (statistics) */
    if (madvise(p, len, MADV_DONTNEED) == 0)
        /* Relaxed: statistics only. */
        atomic_fetch_sub_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
}

/* Count a decommitted range as committed again when it is put back to use. */
void os_recommit(size_t len)
{
    /* Relaxed: statistics only. */
    atomic_fetch_add_explicit(&bitslab_committed_bytes, len, memory_order_relaxed);
}

bool region_register(uintptr_t region, unsigned kind)
{
    uintptr_t idx = region >> SUPERPAGE_SHIFT;
    if (idx >= REGION_MAP_SIZE) return false; /* a 5-level-paging address: refuse */
    /* Relaxed: read by free() on a pointer whose hand-off already orders this
     * registration before it (see region_kind_of). */
    atomic_store_explicit(&bitslab_region_map[idx], (uint8_t)kind, memory_order_relaxed); /* relaxed: see above */
    return true;
}

void region_unregister(uintptr_t region)
{
    /* Relaxed: done before munmap, so a later mapping of the same region
     * registers after this clear (the syscalls order them). */
    atomic_store_explicit(&bitslab_region_map[region >> SUPERPAGE_SHIFT], 0, memory_order_relaxed); /* relaxed: see above */
}

/* A millisecond clock for the purge delay: CLOCK_MONOTONIC_COARSE is read in
 * the vDSO, without a syscall, and is only read on slow paths. */
uint32_t os_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* ---- runtime options ------------------------------------------------------ */

_Atomic int32_t bitslab_purge_delay_ms = 250;

/* Read the environment once, at load time (getenv does not allocate).
 * Allocations made before this runs use the defaults. */
__attribute__((constructor)) static void options_init(void)
{
    const char *v = getenv("BITSLAB_PURGE_DELAY_MS");
    if (v && *v) {
        long ms = strtol(v, NULL, 10);
        /* Relaxed: a setting read by slow paths; any value is valid at any time. */
        atomic_store_explicit(&bitslab_purge_delay_ms, ms < 0 ? -1 : (ms > 3600000 ? 3600000 : (int32_t)ms),
                              memory_order_relaxed);
    }
}
