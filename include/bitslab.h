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
 *   show_stats          0        0..1           1: the statistics table on stderr at exit
 *   purge_delay_ms      250      -1..3600000    ms an empty slab keeps its memory before it goes back to the OS; -1 never
 *   retain_superpages   -1       -1..65536      empty superpages a heap keeps; -1: 1 + 1/8 of the heap's superpages
 *   background_purge    0        0..1           1: a thread returns the free pages of heaps whose threads stopped calling
 *
 * bitslab_option_get stores the effective value of option `name` (as in the
 * first column, e.g. "purge_delay_ms") in *value and returns 0; an unknown
 * name, or NULL: returns -1 with errno EINVAL, *value untouched. If the
 * environment has not been read yet (a call from another library's
 * constructor), reads it first. Any thread; never allocates.
 */
BITSLAB_API int bitslab_option_get(const char *name, long *value);

/* ---- statistics ------------------------------------------------------- */

/*
 * Versioned structs. bitslab_stats_t and bitslab_heap_info_t start with
 * `struct_size`: set it to sizeof the struct before the call. The library
 * fills whole fields up to min(struct_size, the size it knows), leaves any
 * bytes past that untouched (a program built against a newer header may have
 * more fields), and sets struct_size to the number of bytes it filled, so a
 * field at offset o was filled iff o + sizeof(field) <= struct_size after the
 * call. New fields are only ever appended at the end; an incompatible change
 * renames the struct. A struct_size below sizeof(size_t) (0: forgotten) fills
 * nothing and sets errno to EINVAL.
 *
 * What the figures mean, and which are exact when: docs/stats.md.
 */

/** One size class. For every class: bins_total = bins_in_use + bins_cached
 *  + bins_pending + bins_free (each slab is read once; see bitslab_stats for
 *  what may be approximate under concurrency). */
typedef struct bitslab_class_stats {
    size_t bin_size;     /**< bytes per bin in this class */
    size_t slabs;        /**< slabs configured for this class (64 KiB each) */
    size_t bins_total;   /**< bins in those slabs */
    size_t bins_in_use;  /**< live blocks: handed out and not freed */
    size_t bins_cached;  /**< free bins waiting in a heap's word cache (the malloc fast path's next blocks) */
    size_t bins_pending; /**< freed by another thread, not merged by the owning heap yet */
    size_t bins_free;    /**< free in the slabs' own bitmaps */
    size_t bytes_in_use; /**< bins_in_use * bin_size */
    size_t waste;        /**< slabs * 64 KiB - bytes_in_use: bytes of the class's slabs not in a live block */
} bitslab_class_stats_t;

/** The calling thread's heap. Exact: the owner reads its own metadata; only
 *  bins_pending grows while other threads free into this heap. */
typedef struct bitslab_heap_info {
    size_t struct_size;          /**< in: sizeof(bitslab_heap_info_t); out: bytes filled (see above) */
    size_t superpages;           /**< superpages owned by this heap */
    size_t slabs_small;          /**< slabs configured for a small class */
    size_t slabs_wide;           /**< slabs used by multi-slab allocations */
    size_t slabs_free;           /**< unconfigured data slabs in owned superpages */
    size_t wide_allocations;     /**< live multi-slab allocations (remotely freed, unmerged ones not counted) */
    size_t wide_bytes;           /**< bytes reserved by them (whole slabs) */
    size_t bytes_in_use;         /**< live small bytes (bin-rounded) + wide_bytes */
    size_t bytes_cached;         /**< free bytes waiting in this heap's word caches */
    size_t remote_frees_pending; /**< bits set in remote bitmaps, not merged yet */
    size_t remote_frees_merged;  /**< remote frees this heap merged since it was created (its earlier threads included) */
    bitslab_class_stats_t classes[BITSLAB_NUM_CLASSES];
} bitslab_heap_info_t;

/**
 * The whole process. Counters that other threads change concurrently are read
 * without stopping them, so under concurrent use each figure is a snapshot
 * that may be slightly stale. Free bins in another live thread's word cache
 * are known as of that thread's last slow path for the class (when it loaded
 * or put back a cache word), so its per-class in_use/cached split may be off
 * by up to 64 bins per class; the calling thread's own heap and the heaps of
 * exited threads are exact. A quiescent process whose other threads called
 * bitslab_collect() (or exited) after their last allocation reads exact.
 */
typedef struct bitslab_stats {
    size_t struct_size;          /**< in: sizeof(bitslab_stats_t); out: bytes filled (see above) */
    size_t mapped;               /**< bytes of address space mapped from the OS */
    size_t committed;            /**< mapped bytes not decommitted (upper bound of resident) */
    size_t resident;             /**< estimate: superpage pages the kernel reports resident (mincore) + huge_bytes */
    size_t in_use;               /**< live bytes: small (bin-rounded) + wide + huge */
    size_t cached;               /**< free bytes waiting in word caches (not in in_use) */
    size_t purged_bytes;         /**< bytes returned to the OS with madvise(MADV_DONTNEED), ever */
    size_t madvise_calls;        /**< madvise calls that returned them */
    size_t superpages_total;     /**< superpages ever mapped (their first pages are never unmapped) */
    size_t superpages_owned;     /**< superpages owned by a heap */
    size_t superpages_orphaned;  /**< empty superpages in the orphanage */
    size_t huge_allocations;     /**< live huge allocations */
    size_t huge_bytes;           /**< bytes mapped for them */
    size_t wide_allocations;     /**< live multi-slab allocations */
    size_t wide_bytes;           /**< bytes reserved by them */
    size_t heaps_total;          /**< thread heaps ever created */
    size_t heaps_abandoned;      /**< heaps of exited threads waiting for adoption */
    size_t remote_frees_pending; /**< remote frees not merged by their owner yet */
    size_t remote_frees_merged;  /**< remote frees merged by their owners, ever */
    size_t remote_frees_sent;    /**< remote frees ever made: merged + pending */
    bitslab_class_stats_t classes[BITSLAB_NUM_CLASSES];
    size_t superpages_shrunk;    /**< orphaned superpages whose address space went back but for their first
                                      8 KiB (counted in superpages_orphaned; added in 0.1.1, after classes) */
} bitslab_stats_t;

/**
 * Fill *out with the calling thread's heap statistics (exact). Set
 * out->struct_size first (see above). Never blocks, allocates nothing; a
 * thread that has not allocated yet reads all zeros.
 */
BITSLAB_API void bitslab_heap_info(bitslab_heap_info_t *out);

/**
 * Fill *out with process-wide statistics. Set out->struct_size first (see
 * above). Any thread, any time: walks every superpage without stopping the
 * threads that use them (a snapshot, see bitslab_stats_t), allocates
 * nothing, makes one mincore(2) call per superpage for `resident`.
 */
BITSLAB_API void bitslab_stats(bitslab_stats_t *out);

/** bitslab_stats_print flag: JSON (docs/stats.schema.json) instead of a table. */
#define BITSLAB_STATS_JSON 1
/** bitslab_stats_print flag: list every size class, not only those with slabs (the JSON always does). */
#define BITSLAB_STATS_ALL_CLASSES 2

/**
 * Print bitslab_stats() (the process figures and one row per size class) as
 * a human-readable table, or as one JSON object when `flags` has
 * BITSLAB_STATS_JSON ("schema_version": 1, docs/stats.schema.json).
 *
 * `out` receives the text in NUL-terminated chunks of whole lines, at most
 * 1 KiB each (a chunk is only valid during the call), with `arg`; with
 * out == NULL the text goes to standard error with write(2). Allocates
 * nothing (it formats into a stack buffer), so it may be called where malloc
 * may not, e.g. from an out-of-memory path; write errors are ignored. Unknown
 * flag bits are ignored. Thread safety: as bitslab_stats.
 */
BITSLAB_API void bitslab_stats_print(void (*out)(const char *msg, void *arg), void *arg, int flags);

/**
 * Dump the heap map as one JSON object (docs/heapmap.schema.json): every
 * superpage ever mapped, and in each its 32 slabs with their kind, size
 * class, bins live/cached/pending/total, whether the slab's pages are
 * committed, and which of its 4 KiB pages are resident (mincore). Output as
 * for bitslab_stats_print (chunks of whole lines to `out`, or stderr when
 * out == NULL; no allocation). `flags` must be 0 (reserved). Thread safety:
 * any thread, any time; a snapshot, as bitslab_stats. tools/bitslab-heapmap
 * draws it.
 */
BITSLAB_API void bitslab_heap_map(void (*out)(const char *msg, void *arg), void *arg, int flags);

#ifdef __cplusplus
}
#endif

#endif /* BITSLAB_H */
