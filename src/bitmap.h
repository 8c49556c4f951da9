/*
 * bitmap.h: bit arithmetic and where a slab's bitmap rows are: local[i][w]
 * (owner-only, 1 = bin free) and remote[i][w] (1 = freed by another thread,
 * not merged yet), one 512-byte row per slab in its superpage's metadata.
 */
#ifndef BITSLAB_BITMAP_H
#define BITSLAB_BITMAP_H

#include "types.h"

#pragma GCC visibility push(hidden)

static inline superpage_t *superpage_of_slab(const slab_t *s)
{
    return (superpage_t *)((uintptr_t)s & ~(SUPERPAGE_SIZE - 1));
}

static inline uint64_t *slab_local(slab_t *s) { return superpage_of_slab(s)->local[s->index]; }
static inline _Atomic uint64_t *slab_remote(slab_t *s) { return superpage_of_slab(s)->remote[s->index]; }

static inline unsigned ctz64(uint64_t x) { return (unsigned)__builtin_ctzll(x); }
static inline unsigned popcount64(uint64_t x)
{
#ifdef __POPCNT__
    return (unsigned)__builtin_popcountll(x);
#else
#if defined(__x86_64__) && defined(__GNUC__)
    /* Baseline x86-64 does not promise the popcnt instruction, which every
     * x86-64 CPU since 2008 has: ask libgcc's CPU model (one load and a test;
     * its constructor fills it in, so before that, in a malloc made by an
     * earlier constructor, the answer is no and the count below is used). */
    if (likely(__builtin_cpu_supports("popcnt"))) {
        uint64_t n;
        __asm__("popcnt %1, %0" : "=r"(n) : "rm"(x) : "cc");
        return (unsigned)n;
    }
#endif
    /* The builtin would call libgcc's __popcountdi2: a branch-free SWAR
     * count instead. */
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
#endif
}

/* The remote bitmap row of a slab lies at a fixed distance from its local
 * row (local_row_of_record, slab.h). */
static inline _Atomic uint64_t *remote_row_of_local(uint64_t *local)
{
    return (_Atomic uint64_t *)((char *)local + (offsetof(superpage_t, remote) - offsetof(superpage_t, local)));
}

/* Set the bins of a freshly configured slab free (bits 0..nbins-1), and
 * clear every bit beyond them. */
static inline void bitmap_fill(uint64_t *map, uint32_t nbins)
{
    uint32_t full = nbins / 64, rest = nbins % 64, w = 0;
    for (; w < full; w++) map[w] = ~(uint64_t)0; /* two plain loops: the compiler makes them stores of 16 bytes */
    if (rest) map[w++] = ((uint64_t)1 << rest) - 1;
    for (; w < BITMAP_WORDS; w++) map[w] = 0;
}

/* Bits first..last (inclusive) all set in map. */
static inline bool bitmap_all_set(const uint64_t *map, uint32_t first, uint32_t last)
{
    for (uint32_t w = first >> 6; w <= last >> 6; w++) {
        uint64_t m = ~(uint64_t)0;
        if (w == first >> 6) m &= ~(uint64_t)0 << (first & 63);
        if (w == last >> 6) m &= ~(uint64_t)0 >> (63 - (last & 63));
        if ((map[w] & m) != m) return false;
    }
    return true;
}

#pragma GCC visibility pop

#endif /* BITSLAB_BITMAP_H */
