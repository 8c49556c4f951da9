/*
 * api.c: the public entry points and the two fast paths.
 *
 * malloc fast path (size <= 32 KiB): TLS heap -> the class's cached bitmap
 * word -> clear its lowest set bit -> base + bit * size. No atomic
 * read-modify-write, no syscall, no division.
 *
 * free fast path: the superpage number of p -> its slot in the heap's table
 * of owned superpages (one load and compare: ours, and this thread's) ->
 * slab_t by the slab index bits of p -> bin index by a reciprocal multiply,
 * checked exact -> set the bit in the local map (a bit already set, there or
 * in the remote map, is a double free) -> one compare of `taken` with the
 * slab's trigger (full, sparse, empty: the slow path). Everything else
 * (NULL, huge, not ours, another thread's slab) goes to free_slow(),
 * which validates the pointer with block_lookup() (lookup.h), the lookup realloc and
 * usable_size use too.
 */
#include <errno.h>
#include <string.h>

#include "heap.h"
#include "lookup.h"
#include "debug.h"
#include "error.h"
#include "huge.h"
#include "options.h"
#include "orphanage.h"
#include "purger.h"
#include "registry.h"
#include "remote.h"
#include "sizeclass.h"
#include "slab.h"
#include "thread.h"
#include "valgrind.h"

/* ---- Valgrind: the block hooks (meson -Dvalgrind=true; valgrind.c) ------- */

#if BITSLAB_VALGRIND
#include <sys/mman.h>
#include <valgrind/memcheck.h>

static void *vg_malloced(void *p, bool zeroed)
{
    if (p && RUNNING_ON_VALGRIND) VALGRIND_MALLOCLIKE_BLOCK(p, bitslab_usable_size(p), 0, zeroed);
    return p;
}

static void vg_quiet(void) { VALGRIND_DISABLE_ERROR_REPORTING; }

static void *vg_malloced_quiet(void *p, bool zeroed)
{
    VALGRIND_ENABLE_ERROR_REPORTING;
    return vg_malloced(p, zeroed);
}

static void vg_freeing(void *p)
{
    if (p) VALGRIND_FREELIKE_BLOCK(p, 0);
}

/* A huge block grew or shrank in place, or its pages moved (mremap: memcheck
 * moves their state along, and the block is re-registered with it). */
static void *vg_realloced_huge(void *old, size_t old_usable, void *q)
{
    if (!q || !RUNNING_ON_VALGRIND) return q; /* NULL: failed, the old block is untouched */
    size_t usable = bitslab_usable_size(q);
    if (q == old) {
        VALGRIND_RESIZEINPLACE_BLOCK(old, old_usable, usable, 0);
        return q;
    }
    /* MALLOCLIKE would reset the definedness of the moved contents: keep
     * it in a scratch mapping across the re-registration. The old block
     * goes first: the scratch mapping may land where its pages were. */
    VALGRIND_FREELIKE_BLOCK(old, 0);
    size_t keep = old_usable < usable ? old_usable : usable;
    unsigned char *vbits = mmap(NULL, keep, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool saved = vbits != MAP_FAILED && VALGRIND_GET_VBITS(q, vbits, keep) == 1;
    VALGRIND_MALLOCLIKE_BLOCK(q, usable, 0, !saved);
    if (saved) VALGRIND_SET_VBITS(q, vbits, keep);
    if (vbits != MAP_FAILED) munmap(vbits, keep);
    return q;
}
#endif

/* ---- allocation ------------------------------------------------------------ */

/* The malloc fast path for a size class: clear the lowest bit of the heap's
 * cached bitmap word. *fresh (if asked) tells calloc that the bin was never
 * handed out since its memory came from the OS (so it is all zero). */
static inline void *alloc_class(size_t cls, bool *fresh)
{
    heap_t *h = bitslab_tls_heap;
    word_cache_t *c = &h->cache[cls];
    uint64_t bits = c->bits;
    if (unlikely(!bits)) /* a thread's first malloc of the class finds the placeholder heap */
        return likely(!h->is_placeholder) ? heap_alloc_slow(h, cls, fresh) : thread_alloc_slow(cls, fresh);
    char *base = c->base; /* loaded before the store below: no reload */
    size_t size = c->size, b = ctz64(bits);
    c->bits = bits & (bits - 1);
    if (fresh) *fresh = (c->fresh >> b) & 1;
    return base + b * size;
}

/* Sizes above 32 KiB, or alignments the small classes cannot give. */
static NOINLINE void *alloc_large(size_t size, size_t align, bool zero)
{
    BITSLAB_ASSERT(size > SMALL_MAX || align > SMALL_MAX); /* what the classes cannot give */
    BITSLAB_ASSERT(align == 0 || (align & (align - 1)) == 0);
    if (unlikely(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    if (size <= WIDE_MAX && align <= WIDE_MAX) {
        heap_t *h = bitslab_tls_heap;
        return likely(!h->is_placeholder) ? wide_alloc(h, size, align, zero) : thread_wide_alloc(size, align, zero);
    }
    return huge_alloc(size, align, zero);
}

void *bitslab_malloc(size_t size)
{
    /* The common sizes first: one compare before the class table. */
    if (likely(size <= SMALL_TABLE_MAX)) return BITSLAB_VG_MALLOC(alloc_class(size_class_table(size), NULL));
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
        BITSLAB_ASSERT(cls < NUM_CLASSES && bitslab_class_size[cls] >= size);
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

static NOINLINE void free_to_cache(heap_t *h, slab_t *s, uint64_t already_free, uint64_t bit, void *p);

/* The common end of free's fast path, of free_slow and of realloc: bin idx
 * of s, a slab of h's whose local bitmap row is `row`, goes back to the
 * local map (or the word cache); a bin free already is a double free. */
static inline __attribute__((always_inline)) void free_owned(heap_t *h, slab_t *s, uint32_t idx, uint64_t *row, void *p)
{
    size_t w = idx >> 6;
    uint64_t bit = (uint64_t)1 << (idx & 63);
    uint64_t *local = row + w;
    uint64_t word = *local;
    // Relaxed peek at the remote map: a bin freed by another thread and not
    // merged yet must not be freed (and then handed out) again.
    uint64_t already_free = word | atomic_load_explicit(remote_row_of_local(local), memory_order_relaxed);
    if (unlikely(s->cached == w)) {
        free_to_cache(h, s, already_free, bit, p);
        return;
    }
    if (unlikely(already_free & bit)) bitslab_fatal_in("free", MSG_FREED, p);
    *local = word | bit;
    s->summary |= (uint64_t)1 << w;
    uint32_t taken = slab_taken(s) - 1;
    slab_set_taken(s, taken);
    /* One compare: the slab was full, went sparse, or is empty
     * (slab_retrigger sets the value; it may change lists). */
    if (unlikely(taken == s->trigger)) heap_slab_freed_slow(h, s, taken);
}

/* Everything the fast path does not handle: NULL, huge blocks, pointers that
 * are not ours, frees by a thread that does not own the slab, and the
 * caller's own blocks in a superpage that shares its slot of the heap's
 * table with another one. */
static NOINLINE void free_slow(void *p)
{
    if (!p) return;
    block_t b = block_lookup_registry(p, "free", MSG_FREED); /* the fast path asked the table */
    if (b.hh) huge_free(b.hh);
    else if (b.mine) free_owned(bitslab_tls_heap, b.s, b.idx, slab_local(b.s), p);
    else remote_free(b.sp, b.s, b.idx, p);
}

/* free's fast path for a bin of the word the heap has in its word cache: the
 * bin goes back to the cache, so the next malloc of the class reuses it; a
 * bin already there (or in either map) is free. `taken` counts cached bins as
 * taken, so it does not change. Out of line: it keeps the common path short,
 * and it carries the heap's heartbeat. */
static NOINLINE void free_to_cache(heap_t *h, slab_t *s, uint64_t already_free, uint64_t bit, void *p)
{
    word_cache_t *c = &h->cache[s->cls];
    if (unlikely((already_free | c->bits) & bit)) bitslab_fatal_in("free", MSG_FREED, p);
    c->fresh &= ~bit; /* before the bit: a dirty bin is never cached as fresh */
    c->bits |= bit;
    /* A heartbeat: a thread that only ever cycles blocks through its cache
     * never takes a slow path, so every HEAP_TICK-th such free does the
     * heap's housekeeping (merge, purge) instead. */
    if (unlikely(++h->cache_frees % HEAP_TICK == 0)) heap_tick(h);
}

void bitslab_free(void *p)
{
    BITSLAB_VG_FREE(p);
    uintptr_t a = (uintptr_t)p;
    heap_t *h = bitslab_tls_heap;
    /* One load from the heap's table says "a superpage of this thread's heap"
     * (heap_t.owned): NULL, huge blocks, other heaps' blocks and pointers
     * that are not ours go slow (block_lookup checks them against the region
     * registry). A block's address is never a superpage's first byte (slab 0
     * is metadata), so a >> SUPERPAGE_SHIFT is its superpage. */
    uintptr_t n = a >> SUPERPAGE_SHIFT;
    if (unlikely(h->owned[n % HEAP_OWNED_SLOTS] != n)) {
        free_slow(p);
        return;
    }
    uintptr_t region = n << SUPERPAGE_SHIFT;
    /* The slab's metadata, straight from the address bits. A FREE slab, a
     * wide block's tail and the metadata slab have no bins (recip and nbins
     * 0): no address there is a block start. */
    slab_t *s = slab_of_addr(region, a);
    uint32_t idx = slab_bin_of(s, a);
    if (unlikely(idx == NOT_A_BIN)) bitslab_fatal_in("free", MSG_NOT_START, p);
    // The table is right: a configured slab of ours. Relaxed (debug only):
    // the owner's own field.
    BITSLAB_ASSERT(atomic_load_explicit(&s->heap, memory_order_relaxed) == h);
    free_owned(h, s, idx, local_row_of_record(region, slab_record_offset(a)), p);
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

/* Usable bytes of a block block_lookup validated. */
static size_t block_usable(const block_t *b)
{
    if (b->hh) return huge_usable(b->hh);
    // Relaxed: the block is live, and its hand-off orders the slab's
    // configuration (bin_size with it) before this read, as in slab_bin_of.
    return atomic_load_explicit(&b->s->bin_size, memory_order_relaxed);
}

size_t bitslab_usable_size(const void *ptr)
{
    if (!ptr) return 0;
    block_t b = block_lookup(ptr, "malloc_usable_size", MSG_USED_FREED);
    return block_usable(&b);
}

void *bitslab_realloc(void *ptr, size_t size)
{
    if (!ptr) return bitslab_malloc(size);
    /* Validate first: a bad pointer aborts naming realloc, whatever the size. */
    block_t b = block_lookup(ptr, "realloc", MSG_USED_FREED);
    if (size == 0) { /* glibc: free and return NULL */
        bitslab_free(ptr);
        return NULL;
    }
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    size_t usable = block_usable(&b);
    BITSLAB_ASSERT(usable >= MIN_BIN);
    if (b.hh && size > WIDE_MAX) return BITSLAB_VG_HUGE_REALLOC(ptr, usable, huge_realloc(b.hh, size));
    /* Stay put if the block fits and is not more than twice too big. */
    if (size <= usable && (size >= usable / 2 || usable <= MIN_BIN)) return ptr;
    void *q = bitslab_malloc(size);
    if (!q) return NULL; /* errno is ENOMEM; ptr is untouched */
    memcpy(q, ptr, size < usable ? size : usable);
    /* Validated above, and still live: the caller's own block needs no
     * second lookup. */
    if (b.mine) {
        BITSLAB_VG_FREE(ptr); /* as bitslab_free's entry does */
        free_owned(bitslab_tls_heap, b.s, b.idx, slab_local(b.s), ptr);
    } else {
        bitslab_free(ptr);
    }
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
    orphanage_shrink_all(); /* their address space too */
}

/* ---- process start and exit ------------------------------------------------- */

/* The options are read here, outside any slow path, unless a malloc came
 * first (options_init_once); the purger thread starts here too. */
__attribute__((constructor)) static void options_constructor(void)
{
    options_init_once();
    purger_start_if_enabled(); /* background_purge=1: outside any slow path, as it must be */
}

__attribute__((destructor)) static void options_at_exit(void)
{
    // Relaxed: pairs with the relaxed store in set(); at exit any value read
    // is valid. Set: the table, on stderr.
    if (atomic_load_explicit(&bitslab_show_stats, memory_order_relaxed)) bitslab_stats_print(NULL, NULL, 0);
}
