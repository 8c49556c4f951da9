/*
 * bitslab: a lock-free bitmap slab allocator.
 *
 * Public API. Every function behaves like its libc namesake (errno included);
 * the prefix keeps bitslab usable next to the system allocator, for example
 * inside a ThreadSanitizer build, where TSan owns the `malloc` symbol.
 *
 * Thread safety: every function may be called from any thread at any time.
 * No function takes a lock or waits for another thread.
 *
 * Signal safety: like glibc's malloc, jemalloc, mimalloc and tcmalloc, bitslab
 * is not async-signal-safe: do not call any of these functions (or malloc and
 * free when bitslab replaces them) from a signal handler that may interrupt
 * the allocator in the same thread.
 */
#ifndef BITSLAB_H
#define BITSLAB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BITSLAB_VERSION_MAJOR 0
#define BITSLAB_VERSION_MINOR 1
#define BITSLAB_VERSION_PATCH 0
#define BITSLAB_VERSION_STRING "0.1.0"
/** The version as one number, as bitslab_version_number() returns it. */
#define BITSLAB_VERSION_NUMBER (BITSLAB_VERSION_MAJOR * 10000 + BITSLAB_VERSION_MINOR * 100 + BITSLAB_VERSION_PATCH)

/** Number of small size classes (16 B ... 32 KiB). */
#define BITSLAB_NUM_CLASSES 40

#if defined(__GNUC__)
#define BITSLAB_API __attribute__((visibility("default")))
#define BITSLAB_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define BITSLAB_ALLOC_SIZE(...) __attribute__((alloc_size(__VA_ARGS__)))
#else
#define BITSLAB_API
#define BITSLAB_MALLOC_ATTR
#define BITSLAB_ALLOC_SIZE(...)
#endif

/* ---- allocation ------------------------------------------------------- */

BITSLAB_API void *bitslab_malloc(size_t size) BITSLAB_MALLOC_ATTR BITSLAB_ALLOC_SIZE(1);
BITSLAB_API void *bitslab_calloc(size_t count, size_t size) BITSLAB_MALLOC_ATTR BITSLAB_ALLOC_SIZE(1, 2);
BITSLAB_API void *bitslab_realloc(void *ptr, size_t size) BITSLAB_ALLOC_SIZE(2);
BITSLAB_API void *bitslab_reallocarray(void *ptr, size_t count, size_t size) BITSLAB_ALLOC_SIZE(2, 3);
BITSLAB_API void *bitslab_aligned_alloc(size_t alignment, size_t size) BITSLAB_MALLOC_ATTR BITSLAB_ALLOC_SIZE(2);
BITSLAB_API int bitslab_posix_memalign(void **out, size_t alignment, size_t size);
BITSLAB_API void *bitslab_memalign(size_t alignment, size_t size) BITSLAB_MALLOC_ATTR BITSLAB_ALLOC_SIZE(2);

/* ---- release ---------------------------------------------------------- */

BITSLAB_API void bitslab_free(void *ptr);
/** C23 free_sized: `size` must be the size that was requested. */
BITSLAB_API void bitslab_free_sized(void *ptr, size_t size);
/** C23 free_aligned_sized: for memory from bitslab_aligned_alloc. */
BITSLAB_API void bitslab_free_aligned_sized(void *ptr, size_t alignment, size_t size);

/** Bytes usable at `ptr` (>= the size requested); 0 for NULL. */
BITSLAB_API size_t bitslab_usable_size(const void *ptr);

/**
 * Merge the calling thread's pending remote frees, give its empty slabs back
 * to their superpages and its empty superpages to the orphanage (whose memory
 * is returned to the OS). Does the same for the heaps of exited threads that
 * no thread has adopted yet, and unmaps the freed huge mappings kept for
 * reuse. Never blocks.
 */
BITSLAB_API void bitslab_collect(void);

/* ---- version and runtime options --------------------------------------- */

/**
 * The library's version, "MAJOR.MINOR.PATCH" (the library that is running,
 * which may differ from BITSLAB_VERSION_STRING, the header's). A static
 * string; never fails; any thread.
 */
BITSLAB_API const char *bitslab_version(void);

/**
 * The running library's version as MAJOR * 10000 + MINOR * 100 + PATCH
 * (0.1.0 is 100): compare with BITSLAB_VERSION_NUMBER. Never fails; any thread.
 */
BITSLAB_API int bitslab_version_number(void);

/**
 * Runtime options, read once at start-up from the environment: a list
 * BITSLAB_OPTIONS="key=value,key=value", then one variable per option,
 * BITSLAB_<NAME> (upper case), which wins over the list. Values are decimal
 * integers. A bad item (unknown key, no '=', not an integer, out of range,
 * trailing characters) prints one "bitslab: warning: ..." line on stderr and
 * is ignored. Details: docs/options.md.
 *
 *   option              default  range          effect
 *   verbose             0        0..1           1: a one-line banner with the version and options on stderr at start-up
 *   show_stats          0        0..1           1: a statistics summary on stderr at exit
 *   purge_delay_ms      250      -1..3600000    ms an empty slab keeps its memory before it goes back to the OS; -1 never
 *   retain_superpages   -1       -1..65536      empty superpages a heap keeps; -1: 1 + 1/8 of the heap's superpages
 *
 * bitslab_option_get stores the effective value of option `name` (as in the
 * first column, e.g. "purge_delay_ms") in *value and returns 0; an unknown
 * name, or NULL: returns -1 with errno EINVAL, *value untouched. If the
 * environment has not been read yet (a call from another library's
 * constructor), reads it first. Any thread; never allocates.
 */
BITSLAB_API int bitslab_option_get(const char *name, long *value);

/* ---- statistics ------------------------------------------------------- */

typedef struct bitslab_class_stats {
    size_t bin_size;     /**< bytes per bin in this class */
    size_t slabs;        /**< slabs configured for this class */
    size_t bins_total;   /**< bins in those slabs */
    size_t bins_in_use;  /**< bins handed out (remotely freed but unmerged bins count as in use) */
    size_t bytes_in_use; /**< bins_in_use * bin_size */
} bitslab_class_stats_t;

/** The calling thread's heap. Exact (the owner reads its own metadata). */
typedef struct bitslab_heap_info {
    size_t superpages;           /**< superpages owned by this heap */
    size_t slabs_small;          /**< slabs configured for a small class */
    size_t slabs_wide;           /**< slabs used by multi-slab allocations */
    size_t slabs_free;           /**< unconfigured data slabs in owned superpages */
    size_t wide_allocations;     /**< live multi-slab allocations */
    size_t wide_bytes;           /**< bytes reserved by them (whole slabs) */
    size_t bytes_in_use;         /**< small bytes in use + wide_bytes */
    size_t remote_frees_pending; /**< bits set in remote bitmaps, not merged yet */
    bitslab_class_stats_t classes[BITSLAB_NUM_CLASSES];
} bitslab_heap_info_t;

/**
 * The whole process. Counters that other threads change concurrently are read
 * without stopping them, so under concurrent use each figure is a snapshot
 * that may be slightly stale. Free bins waiting in a live thread's word cache
 * (at most 64 per size class and thread) count as in use here, since only
 * their thread may read that cache; after bitslab_collect() in every thread,
 * or their exit, the figures of a quiescent process are exact.
 */
typedef struct bitslab_stats {
    size_t mapped;               /**< bytes of address space mapped from the OS */
    size_t committed;            /**< mapped bytes not decommitted (upper bound of resident) */
    size_t in_use;               /**< bytes handed out: small (bin-rounded) + wide + huge */
    size_t superpages_total;     /**< superpages ever mapped (they are never unmapped) */
    size_t superpages_owned;     /**< superpages owned by a heap */
    size_t superpages_orphaned;  /**< empty superpages in the orphanage */
    size_t huge_allocations;     /**< live huge allocations */
    size_t huge_bytes;           /**< bytes mapped for them */
    size_t wide_allocations;     /**< live multi-slab allocations */
    size_t wide_bytes;           /**< bytes reserved by them */
    size_t heaps_total;          /**< thread heaps ever created */
    size_t heaps_abandoned;      /**< heaps of exited threads waiting for adoption */
    size_t remote_frees_pending; /**< remote frees not merged by their owner yet */
    bitslab_class_stats_t classes[BITSLAB_NUM_CLASSES];
} bitslab_stats_t;

/** Fill *out with the calling thread's heap statistics. */
BITSLAB_API void bitslab_heap_info(bitslab_heap_info_t *out);
/** Fill *out with process-wide statistics. */
BITSLAB_API void bitslab_stats(bitslab_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* BITSLAB_H */
