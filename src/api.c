/*
 * api.c: the public entry points and the two fast paths.
 *
 * malloc fast path (size <= 32 KiB): TLS heap -> the class's cached bitmap
 * word -> clear its lowest set bit -> base + bit * size. No atomic
 * read-modify-write, no syscall, no division.
 *
 * free fast path: region_of(p) (mask) -> registry byte -> slab_t by the slab
 * index bits of p -> owner test -> bin index by a reciprocal multiply,
 * checked exact -> set the bit in the local map (a bit already set, there or
 * in the remote map, is a double free). Everything else (NULL, huge, not
 * ours, another thread's slab) goes to heap_free_slow().
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* ---- allocation ------------------------------------------------------------ */

/* The malloc fast path for a size class: clear the lowest bit of the heap's
 * cached bitmap word. *fresh (if asked) tells calloc that the bin was never
 * handed out since its memory came from the OS (so it is all zero). */
static inline void *alloc_class(unsigned cls, bool *fresh)
{
    heap_t *h = bitslab_tls_heap;
    word_cache_t *c = &h->cache[cls];
    uint64_t bits = c->bits;
    if (unlikely(!bits)) return heap_alloc_slow(h, cls, fresh);
    unsigned b = ctz64(bits);
    c->bits = bits & (bits - 1);
    if (fresh) *fresh = (c->fresh >> b) & 1;
    return c->base + (size_t)b * c->size;
}

/* Sizes above 32 KiB, or alignments the small classes cannot give. */
static NOINLINE void *alloc_large(size_t size, size_t align, bool zero)
{
    if (unlikely(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    if (size <= WIDE_MAX && align <= WIDE_MAX) return wide_alloc(bitslab_tls_heap, size, align, zero);
    return huge_alloc(size, align); /* fresh mappings are zero */
}

void *bitslab_malloc(size_t size)
{
    if (likely(size <= SMALL_MAX)) return BITSLAB_VG_MALLOC(alloc_class(size_class(size), NULL));
    return BITSLAB_VG_MALLOC(alloc_large(size, 0, false));
}

void *bitslab_calloc(size_t count, size_t size)
{
    size_t total;
    if (unlikely(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (likely(total <= SMALL_MAX)) {
        bool fresh = false;
        void *p = alloc_class(size_class(total), &fresh);
        BITSLAB_VG_CALLOC(p, fresh);
        if (p && !fresh) memset(p, 0, total);
        return p;
    }
    return BITSLAB_VG_ZEROED(alloc_large(total, 0, true));
}

/* The smallest class >= size whose bin size is a multiple of align: its bins
 * all lie on multiples of align, because slabs are 64 KiB-aligned. */
static void *alloc_aligned(size_t align, size_t size)
{
    if (align <= MIN_BIN) return bitslab_malloc(size);
    if (size <= SMALL_MAX && align <= SMALL_MAX) {
        unsigned cls = size_class(size);
        while (bitslab_class_size[cls] % align) cls++; /* ends at 32 KiB at the latest */
        return BITSLAB_VG_MALLOC(alloc_class(cls, NULL));
    }
    return BITSLAB_VG_MALLOC(alloc_large(size, align, false));
}

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

void *bitslab_aligned_alloc(size_t alignment, size_t size)
{
    if (!is_pow2(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(alignment, size);
}

int bitslab_posix_memalign(void **out, size_t alignment, size_t size)
{
    if (!is_pow2(alignment) || alignment % sizeof(void *)) return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(alignment, size);
    if (!p) {
        errno = saved; /* posix_memalign reports through its result only */
        return ENOMEM;
    }
    *out = p;
    return 0;
}

void *bitslab_memalign(size_t alignment, size_t size)
{
    /* glibc: an alignment that is not a power of two is rounded up to one. */
    if (!is_pow2(alignment)) {
        if (alignment > ((size_t)1 << (sizeof(size_t) * 8 - 1))) {
            errno = EINVAL;
            return NULL;
        }
        size_t a = 1;
        while (a < alignment) a <<= 1;
        alignment = a;
    }
    return alloc_aligned(alignment, size);
}

/* ---- free ------------------------------------------------------------------ */

static COLD _Noreturn void invalid_free(const void *p)
{
    bitslab_fatal("invalid free: not a live block from bitslab (foreign pointer, interior pointer or "
                  "freed twice)",
                  p);
}

/* Everything the fast path does not handle: NULL, huge blocks, pointers that
 * are not ours, and frees by a thread that does not own the slab. */
NOINLINE void heap_free_slow(void *p)
{
    if (!p) return;
    uintptr_t region = region_of(p);
    unsigned kind = region_kind_of(region);
    if (kind == REGION_HUGE) {
        huge_header_t *hh = (huge_header_t *)region;
        if (hh->hdr.magic != (REGION_MAGIC ^ region) || hh->hdr.kind != REGION_HUGE || !huge_owns(hh, p))
            invalid_free(p);
        huge_free(hh);
        return;
    }
    if (kind != REGION_SUPERPAGE) bitslab_fatal("free of a pointer bitslab never returned", p);
    superpage_t *sp = (superpage_t *)region;
    if (sp->hdr.magic != (REGION_MAGIC ^ region)) bitslab_fatal("corrupted superpage header", p);
    slab_t *s = &sp->slabs[((uintptr_t)p >> SLAB_SHIFT) & (SLABS_PER_SUPERPAGE - 1)];
    /* Relaxed: a live block's slab has an owner; the hand-off orders it. */
    heap_t *owner = atomic_load_explicit(&s->heap, memory_order_relaxed);
    uint32_t off = (uint32_t)((uintptr_t)p & (SLAB_SIZE - 1));
    uint32_t idx = (uint32_t)(((uint64_t)off * s->recip) >> 32);
    /* Relaxed: as above. */
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed);
    if (!owner || idx >= s->nbins || idx * size != off) invalid_free(p);
    remote_free(sp, s, idx, p);
}

void bitslab_free(void *p)
{
    BITSLAB_VG_FREE(p);
    uintptr_t a = (uintptr_t)p;
    uintptr_t region = (a - 1) & ~(SUPERPAGE_SIZE - 1);
    /* One byte tells "a superpage of ours" (NULL and huge blocks go slow). */
    if (unlikely(region_kind_of(region) != REGION_SUPERPAGE)) {
        heap_free_slow(p);
        return;
    }
    /* The slab's metadata and bitmap rows, straight from the address bits:
     * slab index i = (a >> 16) & 31; slab_t is 128 bytes, a bitmap row 512. */
    slab_t *s = (slab_t *)(region + offsetof(superpage_t, slabs) + ((a >> (SLAB_SHIFT - 7)) & (31u << 7)));
    uint64_t *local = (uint64_t *)(region + offsetof(superpage_t, local) + ((a >> (SLAB_SHIFT - 9)) & (31u << 9)));
    _Atomic uint64_t *remote = (_Atomic uint64_t *)((char *)local + (offsetof(superpage_t, remote) -
                                                                       offsetof(superpage_t, local)));
    /* Relaxed: the owner of a slab holding a live block cannot change. A slab
     * that is FREE, a wide tail or metadata has no owner and goes slow, and
     * so does another thread's slab (a remote free). */
    if (unlikely(atomic_load_explicit(&s->heap, memory_order_relaxed) != bitslab_tls_heap)) { /* relaxed: see above */
        heap_free_slow(p);
        return;
    }
    uint32_t off = (uint32_t)(a & (SLAB_SIZE - 1));
    uint32_t idx = (uint32_t)(((uint64_t)off * s->recip) >> 32);
    /* Relaxed: our own field (atomic for the stats walker). */
    if (unlikely(idx >= s->nbins || idx * atomic_load_explicit(&s->bin_size, memory_order_relaxed) != off))
        invalid_free(p);
    uint32_t w = idx >> 6;
    uint64_t bit = (uint64_t)1 << (idx & 63);
    uint64_t word = local[w];
    /* Relaxed peek at the remote map: a bin freed by another thread and not
     * merged yet must not be freed (and then handed out) again. */
    uint64_t taken = word | atomic_load_explicit(&remote[w], memory_order_relaxed); /* relaxed: a peek */
    if (s->cached == w) {
        /* The word is in the heap's cache: the bin goes back there, so the
         * next malloc of the class reuses it; a bin already there is free. */
        word_cache_t *c = &bitslab_tls_heap->cache[s->cls];
        if (unlikely((taken | c->bits) & bit)) bitslab_fatal("double free", p);
        c->bits |= bit;
        c->fresh &= ~bit;
        return; /* `used` counts cached bins as taken: it does not change */
    } else {
        if (unlikely(taken & bit)) bitslab_fatal("double free", p);
        local[w] = word | bit;
        s->summary |= (uint64_t)1 << w;
    }
    uint32_t used = slab_used(s) - 1;
    slab_set_used(s, used);
    /* One unsigned compare catches both used == 0 (empty) and
     * used == nbins - 1 (was full): the slab may change lists. */
    if (unlikely(used - 1u >= s->nbins - 2u)) heap_slab_freed_slow(bitslab_tls_heap, s, used);
}

void bitslab_free_sized(void *ptr, size_t size)
{
    (void)size; /* the bitmap knows the size; a mismatch is the caller's bug */
    bitslab_free(ptr);
}

void bitslab_free_aligned_sized(void *ptr, size_t alignment, size_t size)
{
    (void)alignment;
    (void)size;
    bitslab_free(ptr);
}

/* ---- size queries and realloc ---------------------------------------------- */

/* Validates p like free does (aborting on a bad pointer) and returns its
 * usable size; *hh is set for huge blocks. */
static size_t block_size(const void *p, huge_header_t **hh)
{
    uintptr_t region = region_of(p);
    unsigned kind = region_kind_of(region);
    *hh = NULL;
    if (kind == REGION_HUGE) {
        huge_header_t *h = (huge_header_t *)region;
        if (h->hdr.kind != REGION_HUGE || !huge_owns(h, p)) invalid_free(p);
        *hh = h;
        return huge_usable(h);
    }
    if (kind != REGION_SUPERPAGE) bitslab_fatal("pointer bitslab never returned", p);
    superpage_t *sp = (superpage_t *)region;
    slab_t *s = &sp->slabs[((uintptr_t)p >> SLAB_SHIFT) & (SLABS_PER_SUPERPAGE - 1)];
    uint32_t off = (uint32_t)((uintptr_t)p & (SLAB_SIZE - 1));
    /* Relaxed: see bitslab_free. */
    uint32_t size = atomic_load_explicit(&s->bin_size, memory_order_relaxed);
    if (!size || off % size || off / size >= s->nbins) invalid_free(p);
    return size;
}

size_t bitslab_usable_size(const void *ptr)
{
    if (!ptr) return 0;
    huge_header_t *hh;
    return block_size(ptr, &hh);
}

void *bitslab_realloc(void *ptr, size_t size)
{
    if (!ptr) return bitslab_malloc(size);
    if (size == 0) { /* glibc: free and return NULL */
        bitslab_free(ptr);
        return NULL;
    }
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    huge_header_t *hh;
    size_t usable = block_size(ptr, &hh);
    if (hh && size > WIDE_MAX) return BITSLAB_VG_HUGE_REALLOC(ptr, usable, huge_realloc(hh, size));
    /* Stay put if the block fits and is not more than twice too big. */
    if (size <= usable && (size >= usable / 2 || usable <= MIN_BIN)) return ptr;
    void *q = bitslab_malloc(size);
    if (!q) return NULL; /* errno is ENOMEM; ptr is untouched */
    memcpy(q, ptr, size < usable ? size : usable);
    bitslab_free(ptr);
    return q;
}

void *bitslab_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return bitslab_realloc(ptr, total);
}

void bitslab_collect(void)
{
    heap_collect(bitslab_tls_heap, true);
    heap_collect_abandoned();
    huge_cache_flush();
}
