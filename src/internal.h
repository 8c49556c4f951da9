/*
 * bitslab internals: constants, types and the inline fast paths.
 *
 * Glossary (docs/architecture.md draws it):
 *   superpage  2 MiB of address space aligned to 2 MiB. Slab 0 holds all the
 *              metadata (superpage header + one slab_t per slab); slabs 1..31
 *              hold only user data.
 *   slab       64 KiB. FREE, or configured for one small size class (SMALL),
 *              or part of a multi-slab allocation (WIDE head / WIDE_TAIL).
 *   bin        one block of a small slab; bin i lives at data + i * bin_size.
 *   heap       one per thread, found through TLS. Owns superpages. Never
 *              unmapped: a dying thread's heap is abandoned whole and adopted
 *              by a later thread.
 *   huge       an allocation above the wide limit, mapped on its own with a
 *              header in its first page.
 *
 * Who writes what:
 *   - owner-only fields are plain; only the owning heap's thread touches them.
 *   - fields other threads read are _Atomic and every access names its order.
 */
#ifndef BITSLAB_INTERNAL_H
#define BITSLAB_INTERNAL_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitslab.h"

/* Everything declared below is internal to the library: hidden visibility lets
 * the compiler address it PC-relative, with no GOT load on the fast path. */
#pragma GCC visibility push(hidden)

/* ---- build-time knobs (meson options feed some of these) ----------------- */

#ifndef BITSLAB_DEBUG
#define BITSLAB_DEBUG 0 /* 1: invariant checks and race-window counters */
#endif

/* ---- layout constants ----------------------------------------------------- */

#define SUPERPAGE_SHIFT 21
#define SUPERPAGE_SIZE ((uintptr_t)1 << SUPERPAGE_SHIFT) /* 2 MiB */
#define SLAB_SHIFT 16
#define SLAB_SIZE ((uintptr_t)1 << SLAB_SHIFT)           /* 64 KiB */
#define SLABS_PER_SUPERPAGE 32                           /* slab 0 = metadata */
#define DATA_SLABS_MASK 0xFFFFFFFEu                      /* slabs 1..31 */
#define OS_PAGE 4096u

#define NUM_CLASSES BITSLAB_NUM_CLASSES
#define SMALL_MAX 32768u        /* largest bin */
#define MIN_BIN 16u             /* smallest bin, and the malloc alignment */
#define BITMAP_WORDS 64         /* 64 x 64 bits = 4096 bins = 64 KiB / 16 B */
#define WIDE_MAX_SLABS 16       /* multi-slab allocations up to 1 MiB */
#define WIDE_MAX (WIDE_MAX_SLABS * SLAB_SIZE)
#define HUGE_HEADER OS_PAGE     /* a huge block starts at least this far into its mapping */

/* A heap keeps 1 + 1/8 of its superpages when they are empty, before giving
 * more to the orphanage (their pages are purged like any FREE slab's), or
 * exactly the option retain_superpages if it is >= 0 (options.c). */
#define HEAP_RETAIN_EMPTY(h) heap_retain_empty((h)->nsuperpages)
/* FREE slabs whose pages are still committed, per heap: past twice this many
 * (4 MiB plus as many as the heap has in use) the heap purges the ones past
 * the delay, then others down to this many, the longest unused first. */
#define HEAP_DIRTY_FREE_MAX(h) (64 + (h)->slabs_used)

/* Frees into the word cache between two heap_tick calls. */
#define HEAP_TICK 256

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))

/* ---- region headers ------------------------------------------------------- */

/* Every 2 MiB region bitslab maps starts with this prefix. */
enum region_kind { REGION_SUPERPAGE = 1, REGION_HUGE = 2 };
#define REGION_MAGIC 0x626974736c616221ull /* "bitslab!" */

typedef struct region_header {
    uint64_t magic; /* REGION_MAGIC ^ address: a stray pointer is caught */
    uint32_t kind;  /* enum region_kind */
} region_header_t;

/* ---- slabs ---------------------------------------------------------------- */

enum slab_kind {
    SLAB_FREE = 0,      /* not configured; owned by its superpage's free mask */
    SLAB_SMALL = 1,     /* bins of one size class */
    SLAB_WIDE = 2,      /* first slab of a multi-slab allocation (1 "bin") */
    SLAB_WIDE_TAIL = 3, /* other slabs of a multi-slab allocation */
    SLAB_META = 4,      /* slab 0: the metadata itself */
};

/* Owner-side list state of a configured slab. */
enum slab_state {
    STATE_NONE = 0,    /* FREE, META, WIDE_TAIL */
    STATE_ACTIVE = 1,  /* heap->active[cls] == slab: the fast path allocates here */
    STATE_PARTIAL = 2, /* on heap->partial[cls]: has free bins */
    STATE_FULL = 3,    /* on no list: no free bin in the local bitmap */
    STATE_WIDE = 4,    /* a live multi-slab allocation */
};

struct heap;
struct superpage;

typedef struct slab {
    /* Cache line 0: configuration. Written by the owner only while the slab
     * holds no live block; read by freers (who hold a live block, so the
     * user's hand-off of that block orders these writes before the read) and
     * by the statistics walker (the fields it reads are relaxed atomics). */
    _Atomic(struct heap *) heap; /* owner heap while SMALL or WIDE, else NULL: the free fast path's owner test */
    uint32_t recip;              /* ceil(2^32 / bin_size): bin = offset * recip >> 32 */
    _Atomic uint32_t bin_size;   /* bytes per bin (WIDE: nslabs * 64 KiB) */
    uint32_t nbins;              /* bins in this slab (0 unless SMALL or WIDE) */
    _Atomic uint8_t kind;        /* enum slab_kind */
    uint8_t cls;                 /* size class, SMALL only */
    uint8_t state;               /* enum slab_state, owner-only */
    uint8_t nwords;              /* bitmap words in use (FREE: those of the last configuration) */
    uint8_t index;               /* slab index in its superpage (0..31) */
    uint8_t dirty;               /* data touched since it was last decommitted */
    uint8_t nslabs;              /* WIDE: run length in slabs */
    _Atomic uint8_t decommitted; /* data returned to the OS (MADV_DONTNEED), not counted as committed;
                                    owner-written, atomic for the heap map (slab_decommitted) */
    uint8_t decommit_failed;     /* FREE, dirty, and its last decommit failed: not in dirty_free, not
                                    purged again until it is used (or its superpage is released) */
    _Atomic uint16_t purged_pages; /* 4 KiB pages decommitted while the slab stayed configured and not
                                    handed out since (a hint against a second madvise; docs/purger.md) */
    _Atomic uint32_t purgers;    /* low 8 bits: purgers between P0 and P8 on this slab (its owner hands
                                    out no bin of it meanwhile, nor makes it FREE); the rest: a count
                                    of P0s, so that the owner sees a purger that came and went */
    char *data;                  /* first byte of the slab */
    struct slab *prev, *next;    /* heap->partial[cls] list, owner-only */

    /* Cache line 1: owner-mutable, written by the free fast path. */
    alignas(64) _Atomic uint32_t used; /* bins not in the local map: live, in the heap's word
                                          cache, or remote-freed and unmerged (relaxed: stats) */
    uint32_t hwm;                /* bins >= hwm were never handed out since the last decommit */
    uint64_t summary;            /* bit w set: local[w] may have a free bin */
    uint32_t freed_at;           /* FREE: when it became free (ms), for the purge delay */
    uint32_t cached;             /* the word now in the owner heap's word cache, or NO_WORD */
    _Atomic uint32_t cached_bins; /* free bins of that word when it was loaded (0 when none is):
                                     published for the stats walker, see slab_load_word */
    uint32_t trigger;            /* the free fast path goes slow when `used` falls to this: nbins - 1
                                    when FULL, the next sparse level when PARTIAL, else 0 (slab_retrigger) */
    uint32_t donated;            /* bins slab_donate moved to the remote map since the last merge
                                    (counted in `used`; owner-only) */
} slab_t;

#define NO_WORD 0xFFFFFFFFu

#define SLAB_T_SHIFT 7 /* sizeof(slab_t) == 128: the free path indexes slab_t by shift */
_Static_assert(sizeof(slab_t) == (1u << SLAB_T_SHIFT), "slab_t is two cache lines");

/* ---- the remote-free notification queue (Vyukov's intrusive MPSC) -------- */

typedef struct qnode {
    _Atomic(struct qnode *) next;
} qnode_t;

/* ---- superpages ----------------------------------------------------------- */

typedef struct superpage {
    /* Owner line. */
    region_header_t hdr;
    _Atomic(struct heap *) heap;    /* owner; NULL while orphaned */
    struct superpage *prev, *next;  /* heap's superpage list, owner-only */
    uint32_t free_mask;             /* FREE data slabs, owner-only */
    uint32_t orphan_clean;          /* set on release, read on reuse (the orphanage orders them):
                                       bit i > 0: data slab i decommitted; bit 0: metadata pages
                                       1..15 decommitted (the slab_t flags live there) */
    struct superpage *all_next;     /* global registry, immutable once published */
    _Atomic(struct superpage *) orphan_next; /* orphanage link (read racily by poppers) */

    /* Remote line: written by remote freers, never by the owner fast path. */
    alignas(64) _Atomic uint32_t remote_slabs; /* slabs with remote bits not yet taken by a drain */
    _Atomic uint32_t inflight;                 /* remote frees between their first and last touch */
    qnode_t qnode;                             /* link in the owner heap's queue */
    _Atomic uint32_t queued;                   /* 1 from a freer's claim until the drain after the pop */
    _Atomic uint32_t queued_at;                /* bitslab_clock_ms when the pusher queued sp: dates its frees */
    uint32_t on_deferred;            /* on the heap's deferred-release list: owner-only, like the */
    uint32_t empty_since;            /* owner-only: when every data slab became FREE (ms) */
    struct superpage *deferred_next; /* list link; written only on a slow path that found a freer in
                                        flight (line 0 is full) */
    _Atomic uint32_t sparse_slabs;   /* slabs the owner found sparse (docs/purger.md): set by the owner,
                                        cleared by the owner or a purger that handled them */
    _Atomic uint32_t sparse_at;      /* bitslab_clock_ms when the owner last marked a slab sparse here */
    _Atomic uint32_t purger_at;      /* when a purger last took bins here (a hint for purger_pass) */
    _Atomic uint32_t shrunk;         /* 1: only the first SHRINK_KEEP bytes are mapped (an orphan whose
                                        address space went back); written by whoever owns the orphan */

    alignas(64) slab_t slabs[SLABS_PER_SUPERPAGE];

    /* The bitmaps, one 512-byte row per slab. local[i][w]: 1 = bin free,
     * owner-only. remote[i][w]: 1 = freed by another thread and not merged;
     * remote freers write only here, never a line the owner's fast path writes. */
    alignas(64) uint64_t local[SLABS_PER_SUPERPAGE][BITMAP_WORDS];
    alignas(64) _Atomic uint64_t remote[SLABS_PER_SUPERPAGE][BITMAP_WORDS];
} superpage_t;

#define BITMAP_ROW_SHIFT 9 /* one slab's bitmap row: 64 words of 8 bytes */
_Static_assert(BITMAP_WORDS * sizeof(uint64_t) == (1u << BITMAP_ROW_SHIFT), "bitmap rows are 512 bytes");
_Static_assert(sizeof(superpage_t) <= SLAB_SIZE, "metadata must fit in slab 0");
/* What stays mapped of an orphan whose address space went back (shrunk): the
 * header, the orphanage link and every slab record (superpage.c). */
#define SHRINK_KEEP ((offsetof(superpage_t, local) + OS_PAGE - 1) & ~(size_t)(OS_PAGE - 1))

/* ---- huge allocations ----------------------------------------------------- */

typedef struct huge_header {
    region_header_t hdr;
    char *map_base;  /* start of the mapping (== the header) */
    size_t map_len;  /* bytes mapped */
    size_t offset;   /* user pointer = map_base + offset */
} huge_header_t;

/* ---- heaps ---------------------------------------------------------------- */

/* The heap's per-class word cache: the fast path allocates from here. A
 * whole bitmap word of the active slab is taken out of the slab's local map
 * at once (slow path); malloc then only clears bits of `bits`. */
typedef struct word_cache {
    uint64_t bits;  /* free bins of the cached word */
    char *base;     /* address of the word's bin 0 */
    uint64_t fresh; /* bins of the word never handed out: calloc skips memset */
    uint32_t size;  /* bin size */
    uint32_t word;  /* which word of the active slab */
} word_cache_t;

typedef struct heap {
    /* Fast path: one entry per class. An empty heap has all bits 0, so its
     * first malloc of each class falls into the slow path. */
    word_cache_t cache[NUM_CLASSES];
    slab_t *active[NUM_CLASSES];  /* the slab cache[cls] draws from, or NULL */
    slab_t *partial[NUM_CLASSES]; /* slabs with free bins, doubly linked; the sparse ones last */
    slab_t *partial_tail[NUM_CLASSES];
    superpage_t *superpages;      /* those with free slabs first */
    size_t nsuperpages;
    size_t nempty;                /* owned superpages with every data slab free */
    size_t wide_allocations, wide_bytes;
    uint32_t next_purge;          /* ms: the next time the slow path looks for slabs to decommit */
    uint32_t dirty_free;          /* FREE slabs in owned superpages whose pages are committed */
    uint32_t slabs_used;          /* configured slabs (small or wide) in owned superpages */
    uint32_t slow_calls;          /* slow-path visits: the purge clock is read every 16th */
    uint32_t refills;             /* word-cache refills: every 8th does the housekeeping */
    uint32_t cache_frees;         /* frees into the word cache: every HEAP_TICK-th runs heap_tick */
    uint32_t id;                  /* index in the heap table, >= 1 */
    uint32_t is_static;           /* the static empty heap */
    _Atomic uint32_t abandoned;   /* in the pool of abandoned heaps (read by the fork child handler) */
    uint32_t in_slow;             /* owner-only: inside a slow path (a fork child leaves such a heap alone) */
    uint32_t sparse_pending;      /* owner-only: slabs were marked sparse since heap_purge_sparse looked */
    _Atomic uint64_t pool_next;   /* abandoned-heap stack link (tagged id) */
    struct heap *collect_next;    /* heap_collect_abandoned's private chain */
    struct superpage *deferred;   /* empty superpages whose release waited for a freer in flight */
    _Atomic size_t remote_merged; /* remote frees merged by this heap (statistics; written by its user) */

    /* Consumer side of the remote queue: owner-only. */
    qnode_t *q_tail;
    qnode_t q_stub;

    /* Producer side: remote freers exchange here. Own cache line. */
    alignas(64) _Atomic(qnode_t *) q_head;
} heap_t;

/* ---- size classes --------------------------------------------------------- */

#define SMALL_TABLE_MAX 1024u
extern const uint8_t bitslab_class_of_small[SMALL_TABLE_MAX / MIN_BIN + 1]; /* by (size+15)/16 */
extern const uint32_t bitslab_class_size[NUM_CLASSES];

/* Size class of a request, size <= SMALL_MAX. 16-byte steps up to 128 B, then
 * four classes per power of two: 160 192 224 256, 320 ... 32768. */
static inline unsigned size_class(size_t size)
{
    if (likely(size <= SMALL_TABLE_MAX)) /* one load, no division */
        return bitslab_class_of_small[(size + MIN_BIN - 1) / MIN_BIN];
    size_t s = size - 1;
    unsigned p = 63u - (unsigned)__builtin_clzll(s); /* floor(log2(s)), >= 10 here */
    return 8u + (p - 7u) * 4u + (unsigned)((s >> (p - 2u)) & 3u);
}

/* ---- thread-local heap ---------------------------------------------------- */

extern heap_t bitslab_empty_heap;
extern __thread heap_t *bitslab_tls_heap __attribute__((tls_model("initial-exec")));

/* ---- address -> metadata -------------------------------------------------- */

/* The region header of any pointer bitslab returned. A slab block lies in
 * (base, base + 2 MiB); a huge block at most 2 MiB past its header, which may
 * be exactly 2 MiB for 2 MiB-aligned huge blocks: hence the "- 1". */
static inline uintptr_t region_of(const void *p)
{
    return ((uintptr_t)p - 1) & ~(SUPERPAGE_SIZE - 1);
}

/* Region registry: one byte per 2 MiB of the 47-bit address space, saying
 * what bitslab has there (REGION_SUPERPAGE, REGION_HUGE, or 0 = not ours).
 * Lets free() reject foreign pointers without touching memory that may not
 * be mapped, and tells superpages from huge blocks in the same load. */
#define REGION_MAP_SIZE ((size_t)1 << (47 - SUPERPAGE_SHIFT))
extern _Atomic uint8_t bitslab_region_map[REGION_MAP_SIZE];

static inline unsigned region_kind_of(uintptr_t region)
{
    uintptr_t idx = region >> SUPERPAGE_SHIFT;
    if (unlikely(idx >= REGION_MAP_SIZE)) return 0;
    /* Relaxed: a valid pointer's region was registered before the block was
     * handed out, and the hand-off to this thread orders that before us. */
    return atomic_load_explicit(&bitslab_region_map[idx], memory_order_relaxed); /* see above */
}

/* ---- the one pointer lookup: free, realloc, usable_size and the tests ----- */

/* The slab_t of address a in the superpage at `region`, by the slab index
 * bits of a (no memory read). */
static inline slab_t *slab_of_addr(uintptr_t region, uintptr_t a)
{
    return (slab_t *)(region + offsetof(superpage_t, slabs) +
                      ((a >> (SLAB_SHIFT - SLAB_T_SHIFT)) & ((uintptr_t)(SLABS_PER_SUPERPAGE - 1) << SLAB_T_SHIFT)));
}

/* The local bitmap row of that slab, likewise; the remote row is at a fixed
 * distance from it. */
static inline uint64_t *local_row_of_addr(uintptr_t region, uintptr_t a)
{
    return (uint64_t *)(region + offsetof(superpage_t, local) +
                        ((a >> (SLAB_SHIFT - BITMAP_ROW_SHIFT)) &
                         ((uintptr_t)(SLABS_PER_SUPERPAGE - 1) << BITMAP_ROW_SHIFT)));
}

static inline _Atomic uint64_t *remote_row_of_local(uint64_t *local)
{
    return (_Atomic uint64_t *)((char *)local + (offsetof(superpage_t, remote) - offsetof(superpage_t, local)));
}

#define NOT_A_BIN UINT32_MAX

/* The bin of s that starts at address a, or NOT_A_BIN, with one multiply:
 * off * ceil(2^32 / size) has the bin index in its high half, and its low
 * half is below the reciprocal exactly when off is a multiple of size (for
 * every class and off < 64 KiB; tests/test_slab.c checks all of them). A
 * slab that is not SMALL or WIDE has recip == nbins == 0, so every address
 * fails. The caller holds (or claims to hold) a live block of s, whose
 * hand-off orders the slab's configuration before these reads. */
static inline uint32_t slab_bin_of(const slab_t *s, uintptr_t a)
{
    uint64_t prod = (uint64_t)(a & (SLAB_SIZE - 1)) * s->recip;
    uint32_t idx = (uint32_t)(prod >> 32);
    return likely((uint32_t)prod < s->recip && idx < s->nbins) ? idx : NOT_A_BIN;
}

/* ---- internal functions (one file per concept) ---------------------------- */

/* os.c */
void *os_map(size_t len);
void *os_map_aligned(size_t len, size_t align, size_t *map_len, char **map_base);
bool os_trim(char *raw, size_t over, char *keep, size_t len);
bool os_unmap(void *p, size_t len);
bool os_unmap_counted(void *p, size_t len, size_t committed);
bool os_decommit(void *p, size_t len);
bool os_purge_pages(void *p, size_t len);
bool os_map_at(void *addr, size_t len);
void os_recommit(size_t len);
uint32_t os_now_ms(void);
/* The last os_now_ms() any thread read (relaxed): a clock that costs one
 * load, behind real time by up to the gap between two slow paths. */
extern _Atomic uint32_t bitslab_clock_ms;
bool region_register(uintptr_t region, unsigned kind);
void region_unregister(uintptr_t region);
extern _Atomic size_t bitslab_mapped_bytes;
extern _Atomic size_t bitslab_committed_bytes;

/* options.c: the runtime options (docs/options.md), one relaxed atomic each,
 * read from the environment once (constructor, or the first heap_acquire). */
void options_init_once(void);
extern _Atomic int32_t bitslab_verbose;    /* 1: banner at start-up */
extern _Atomic int32_t bitslab_show_stats; /* 1: statistics at exit */
/* A FREE slab's memory is decommitted this long (ms) after it emptied, by its
 * heap's next slow path; -1: never. */
extern _Atomic int32_t bitslab_purge_delay_ms;
extern _Atomic int32_t bitslab_retain_superpages; /* -1: 1 + 1/8 of the heap's */

static inline size_t heap_retain_empty(size_t nsuperpages)
{
    /* Relaxed: pairs with the relaxed store in options.c; a setting, any value is valid. */
    int32_t r = atomic_load_explicit(&bitslab_retain_superpages, memory_order_relaxed);
    return r < 0 ? 1 + nsuperpages / 8 : (size_t)r;
}
/* stats.c (and stats_print.c) */
void stats_note_purge(size_t len); /* os_decommit: one madvise of len bytes */
/* One slab as the statistics walker sees it, read race-free (stats.c). */
typedef struct slab_snapshot {
    uint8_t kind;         /* enum slab_kind; a slab caught mid-(re)configuration reads FREE */
    bool decommitted;     /* its data pages were returned to the OS */
    unsigned cls;         /* SMALL: size class */
    uint32_t bin_size;    /* SMALL: bin size; WIDE: bytes of the whole run */
    uint32_t bins;        /* SMALL: bins in the slab; WIDE: 1 */
    uint32_t live, cached, pending, free; /* live + cached + pending + free == bins */
    heap_t *owner;        /* SMALL, WIDE: the owning heap (compare only) */
} slab_snapshot_t;
heap_t *stats_self_heap(void); /* the calling thread's heap, NULL if it has none */
void stats_slab_snapshot(superpage_t *sp, unsigned i, heap_t *self, uint16_t meta_resident, slab_snapshot_t *out);
size_t stats_superpage_resident(superpage_t *sp, uint16_t *pages);
uint32_t stats_heap_id(const heap_t *h);

/* error.c */
COLD _Noreturn void bitslab_fatal(const char *what, const void *p);
/* The same, naming the entry point the user called: "bitslab: realloc: ...". */
COLD _Noreturn void bitslab_fatal_in(const char *entry, const char *what, const void *p);

/* slab.c */
void slab_configure_small(slab_t *s, heap_t *h, unsigned cls);
void slab_retrigger_partial(slab_t *s);
void slab_donate(slab_t *s);
uint16_t slab_free_pages(const slab_t *s, const uint64_t *map);
unsigned slab_decommit_pages(slab_t *s, uint16_t pages);
uint32_t slab_merge_remote(slab_t *s);
void slab_check_no_remote(slab_t *s);
bool slab_load_word(slab_t *s, word_cache_t *c);
uint32_t slab_purgers(slab_t *s);
bool slab_purger_was_there(slab_t *s, uint32_t before);
#define PURGER_P0 ((1u << 8) + 1u) /* P0 adds: one more purger, one more visit */
#define SPARSE_MIN_BINS 16u       /* slabs of fewer bins have no sparse level (slab_retrigger_partial) */
void slab_unload_word(slab_t *s, word_cache_t *c);

/* superpage.c */
superpage_t *superpage_acquire(heap_t *h);
void superpage_try_release(heap_t *h, superpage_t *sp, size_t retain);
void superpage_retry_deferred(heap_t *h);
void superpage_release_aged(heap_t *h);
void superpage_list_promote(heap_t *h, superpage_t *sp);
slab_t *superpage_take_slabs(heap_t *h, unsigned n, size_t align);
void superpage_return_slabs(heap_t *h, slab_t *s, unsigned n, bool may_release);
void slab_mark_in_use(heap_t *h, slab_t *s);
bool dirty_over_process_cap(unsigned factor);
void heap_trim_if_idle(heap_t *h);
extern _Atomic(superpage_t *) bitslab_all_superpages;
/* Reading superpages of bitslab_all_superpages past their first pages (the
 * statistics, the heap map, the purger): between walk_begin and walk_end,
 * and only those superpage_walkable says are mapped. */
void superpage_walk_begin(void);
void superpage_walk_end(void);
bool superpage_walkable(superpage_t *sp);
bool superpage_shrink_orphans(void);
extern _Atomic size_t bitslab_superpages_shrunk;
extern _Atomic size_t bitslab_superpages_total;
extern _Atomic size_t bitslab_superpages_orphaned;

/* heap.c */
void *heap_alloc_slow(heap_t *h, unsigned cls, bool *fresh);
void heap_slab_freed_slow(heap_t *h, slab_t *s, uint32_t used_after);
void heap_free_slow(void *p);
void heap_drain_remote(heap_t *h);
void heap_tick(heap_t *h);
void heap_collect(heap_t *h, bool full);
void heap_collect_abandoned(void);
bool heap_help_forked(void);
enum purge_mode { PURGE_PERIODIC, PURGE_TICK, PURGE_EXPIRED, PURGE_ALL };
void heap_purge(heap_t *h, enum purge_mode mode, size_t limit);
void heap_purge_sparse(heap_t *h, uint32_t now, uint32_t min_age);
heap_t *heap_by_id(uint32_t id);
extern _Atomic uint32_t bitslab_heaps_total;
extern _Atomic size_t bitslab_heaps_abandoned;

/* remote.c */
void remote_free(superpage_t *sp, slab_t *s, uint32_t idx, const void *p);
void remote_notify(superpage_t *sp, unsigned slab_index, const void *p);

/* purger.c: pages of other threads' heaps (docs/purger.md) */
unsigned purger_take_and_purge(superpage_t *sp, unsigned i);
unsigned purger_pass(uint32_t now, uint32_t delay);
void purger_start_if_enabled(void);
void purger_atfork_child(void);
bool purger_wants_restart(void);
extern _Atomic int32_t bitslab_background_purge; /* 1: the purger thread runs */
void remote_queue_init(heap_t *h);
superpage_t *remote_queue_pop(heap_t *h, bool *stalled);

/* wide (in heap.c) and huge.c */
void *wide_alloc(heap_t *h, size_t size, size_t align, bool zero);
void *huge_alloc(size_t size, size_t align, bool zero);
void huge_free(huge_header_t *hh);
void huge_cache_flush(void);
/* Decommit the freed huge mappings cached past purge_delay_ms (heap_purge's
 * modes; PURGE_ALL: every one). A load when there is none. */
void huge_cache_purge(enum purge_mode mode);
unsigned huge_cache_contents(uintptr_t *addr, size_t *len, bool *dirty, unsigned max);
void *huge_realloc(huge_header_t *hh, size_t size);
size_t huge_usable(huge_header_t *hh);
bool huge_owns(huge_header_t *hh, const void *p);
extern _Atomic size_t bitslab_huge_count;
extern _Atomic size_t bitslab_huge_bytes;

/* debug.c */
#if BITSLAB_DEBUG
enum debug_window {
    WIN_REMOTE_FREE_DURING_DRAIN,   /* remote bit set while the owner merges that slab */
    WIN_RELEASE_DEFERRED_INFLIGHT,  /* owner saw an empty superpage with a freer in flight */
    WIN_RELEASE_DEFERRED_QUEUED,    /* owner saw an empty superpage still queued */
    WIN_QUEUE_PRODUCER_STALLED,     /* drain met a half-linked queue node */
    WIN_ORPHAN_CAS_RETRY,           /* orphanage push/pop lost a CAS race */
    WIN_HEAP_POOL_CAS_RETRY,        /* abandoned-heap pool lost a CAS race */
    WIN_FREE_INTO_ABANDONED_HEAP,   /* remote free into a heap whose thread exited */
    WIN_ADOPT_WITH_PENDING_REMOTE,  /* adopter found remote frees waiting */
    WIN_QUEUED_EXCHANGE_LOST,       /* F4: queued read 0, but another freer won the exchange */
    WIN_EMPTY_POP,                  /* drain popped a superpage whose mask an earlier D2 took */
    WIN_SHRINK_WALKER_SEEN,         /* an orphan's shrink saw a registry walker (S2) and left it mapped */
    WIN_REFILL_WHILE_PURGER_HOLDS,  /* a refill passed over a slab a purger holds bins of */
    WIN_EMPTY_WHILE_PURGER_HOLDS,   /* an empty slab stayed configured: a purger holds bins of it */
    /* The purger (docs/purger.md). A release deferred by a purger between P4
     * and P7 counts as WIN_RELEASE_DEFERRED_INFLIGHT, like a freer's (the
     * park test tells them apart: stress/park.c, purger points). */
    WIN_PURGER_TOOK_BINS,           /* P1 took at least one bin of a slab */
    WIN_PURGER_PURGED_PAGES,        /* P3 gave back at least one page of a slab in use */
    WIN_FREE_WHILE_PURGER_HELD,     /* P5 found bits it had not taken in a word it held bins of */
    WIN_PURGER_NOTIFY_PUSHED,       /* P6: the purger's F4 won the queued exchange and pushed */
    WIN_MERGE_WHILE_PURGER_HELD,    /* owner merge found fewer bins than the slab donated */
    WIN_RECLAIM_WAITS_FOR_PURGER,   /* reclaim loop: a donated slab's bins all held, it waits as FULL */
    WIN_PURGED_SLAB_ACTIVATED,      /* a slab with purged pages becomes active: they are handed out again */
    WIN_COUNT
};
void debug_count(enum debug_window w);

/* Park points: a debug build can stop one chosen thread at any of these
 * protocol steps (test hooks for lock-freedom; see stress/park.c). */
enum debug_park_point {
    PARK_REMOTE_AFTER_F1,   /* remote free: inflight incremented, bit not set */
    PARK_REMOTE_AFTER_F2,   /* remote free: bit set, remote_slabs not yet */
    PARK_REMOTE_AFTER_F3,   /* remote free: remote_slabs set, queued not yet looked at */
    PARK_REMOTE_BEFORE_CLAIM, /* remote free: queued read 0, its exchange not done */
    PARK_REMOTE_BEFORE_PUSH, /* remote free: queued 0 -> 1 claimed, before the push */
    PARK_QUEUE_LINK,        /* queue push: after the exchange, before the link store */
    PARK_REMOTE_BEFORE_F5,  /* remote free: everything done but inflight-- */
    PARK_DRAIN_AFTER_POP,   /* owner drain: superpage popped, mask not cleared */
    PARK_ORPHAN_PUSH_CAS,   /* orphanage push: link written, before the CAS */
    PARK_ORPHAN_POP_CAS,    /* orphanage pop: next read, before the CAS */
    PARK_POOL_PUSH_CAS,     /* abandoned-heap push: before the CAS */
    PARK_POOL_POP_CAS,      /* abandoned-heap pop: next read, before the CAS */
    PARK_EXIT_COLLECTED,    /* thread exit: heap collected, not yet in the pool */
    PARK_REFILL_MIDWAY,     /* word-cache refill: bits loaded, base not yet (tests/test_fork_park.c) */
    PARK_HEAP_NEW_MIDWAY,   /* heap_new: queue set up, id not yet (tests/test_fork_park.c) */
    PARK_PURGER_HOLDING,    /* purger: bins taken from a remote map (P1), pages not yet purged */
    PARK_PURGER_BEFORE_NOTIFY, /* purger: bins given back (P5), no notification yet (P6) */
    PARK_PURGER_BEFORE_P7,  /* purger: notified (P6), inflight not yet decremented (P7) */
    PARK_MERGE_PEEKED,      /* owner merge: a remote word peeked non-zero, not yet exchanged */
    PARK_COUNT
};
void debug_park(enum debug_park_point point);
/* Test API. The calling thread may be parked (on != 0) or not. */
BITSLAB_API void bitslab_debug_park_self(int on);
/* Arm one park point: the next eligible thread reaching it stops there. */
BITSLAB_API void bitslab_debug_park_arm(int point);
/* Take back an armed point nobody reached yet: 1 if it was (no thread
 * will park), 0 if none was armed or a thread took it (it parks, or is
 * parked: release it once bitslab_debug_park_parked says so). */
BITSLAB_API int bitslab_debug_park_disarm(void);
/* 1 while a thread is parked (at the point armed last). */
BITSLAB_API int bitslab_debug_park_parked(void);
/* Let the parked thread go on (the one at the point armed last). */
BITSLAB_API void bitslab_debug_park_release(void);
/* The same for a given point: with two points armed in turn, two threads
 * can be parked at once, and released in either order. */
BITSLAB_API int bitslab_debug_park_parked_at(int point);
BITSLAB_API void bitslab_debug_park_release_at(int point);
BITSLAB_API const char *bitslab_debug_park_name(int point);
#define DEBUG_PARK(p) debug_park(p)
/* For tests: names and hit counts of the race windows; returns WIN_COUNT. */
BITSLAB_API unsigned bitslab_debug_windows(const char **names, uint64_t *hits, unsigned max);
/* For tests: run the invariant checker on the calling thread's heap. */
BITSLAB_API void bitslab_debug_check(void);
/* For tests: one purger pass by the calling thread, any thread, with no
 * delay and no revisit limit: purger_pass(now, 0), then P1..P7
 * (purger_take_and_purge) on every slab of every superpage that has a
 * sparse mark or a remote notification, whatever its dates. With
 * fresh_ms > 0, only the sparse slabs of superpages that had one marked in
 * the last fresh_ms ms (just donated: the owner is likely to want them
 * back). Returns the pages decommitted. The calling thread may park at the
 * purger's points. */
BITSLAB_API unsigned bitslab_debug_purger_pass(unsigned fresh_ms);
/* For tests: the bins set in remote maps of slabs that neither hint names
 * (no sparse mark, no remote_slabs bit): no drain, scan, sparse purge or
 * purger_pass looks there, so in a quiescent process they are bins nobody
 * will merge. With take != 0, also runs P1..P7 on those slabs (the purger's
 * notification, P6, then brings them to their owner). */
BITSLAB_API size_t bitslab_debug_unhinted_remote(int take);
void debug_check_heap(heap_t *h);
bool bitslab_heap_is_abandoned(heap_t *h);
#define DEBUG_COUNT(w) debug_count(w)
#else
#define DEBUG_COUNT(w) ((void)0)
#define DEBUG_PARK(p) ((void)0)
#endif

/* ---- Valgrind hooks (meson -Dvalgrind=true; valgrind.c) -------------------- */

/* Expressions yield their pointer argument; without the option every hook
 * is that argument alone, or nothing, and costs nothing. */
#ifndef BITSLAB_VALGRIND
#define BITSLAB_VALGRIND 0
#endif
#if BITSLAB_VALGRIND
void *vg_malloced(void *p, bool zeroed);
void vg_quiet(void);
void *vg_malloced_quiet(void *p, bool zeroed);
void vg_freeing(void *p);
void *vg_realloced_huge(void *old, size_t old_usable, void *q);
void vg_metadata(void *p, size_t len);
void vg_superpage(void *sp);
/* A block handed out: memcheck's MALLOCLIKE (contents undefined). */
#define BITSLAB_VG_MALLOC(expr) vg_malloced((expr), false)
/* The same as a statement, `zeroed`: its contents read as zero. */
#define BITSLAB_VG_CALLOC(p, zeroed) ((void)vg_malloced((p), (zeroed)))
/* A zeroed block that bitslab zeroes itself before it is registered (wide
 * calloc): reporting is off while `expr` runs. */
#define BITSLAB_VG_ZEROED(expr) (vg_quiet(), vg_malloced_quiet((expr), true))
/* A block about to be freed: memcheck's FREELIKE (reports an invalid free). */
#define BITSLAB_VG_FREE(p) vg_freeing(p)
/* `expr` resized the huge block `old` (usable size `old_usable`) in place or moved it. */
#define BITSLAB_VG_HUGE_REALLOC(old, old_usable, expr) vg_realloced_huge((old), (old_usable), (expr))
/* Allocator metadata holding pointers into blocks: hidden from memcheck's leak scan. */
#define BITSLAB_VG_METADATA(p, len) vg_metadata((p), (len))
/* A new superpage: metadata as above, data slabs inaccessible until handed out. */
#define BITSLAB_VG_SUPERPAGE(sp) vg_superpage(sp)
#else
#define BITSLAB_VG_MALLOC(expr) (expr)
#define BITSLAB_VG_CALLOC(p, zeroed) ((void)0)
#define BITSLAB_VG_ZEROED(expr) (expr)
#define BITSLAB_VG_FREE(p) ((void)0)
#define BITSLAB_VG_HUGE_REALLOC(old, old_usable, expr) (expr)
#define BITSLAB_VG_METADATA(p, len) ((void)0)
#define BITSLAB_VG_SUPERPAGE(sp) ((void)0)
#endif

/* ---- small helpers -------------------------------------------------------- */

/* The value of `used` at which the free fast path calls heap_slab_freed_slow
 * (slab.c: slab_retrigger_partial for a PARTIAL slab). Owner only, after any
 * change of `used` or `state` outside the fast path. */
void slab_retrigger_partial(slab_t *s);
static inline void slab_retrigger(slab_t *s)
{
    if (s->state == STATE_PARTIAL) slab_retrigger_partial(s);
    else s->trigger = s->state == STATE_FULL ? s->nbins - 1 : 0;
}

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
    /* Baseline x86-64 has no popcnt instruction, and the builtin would call
     * libgcc's __popcountdi2: a branch-free SWAR count instead. */
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
#endif
}

static inline uint32_t slab_used(const slab_t *s)
{
    /* Relaxed: only the owner writes `used`; the atomic is for the stats walker. */
    return atomic_load_explicit(&s->used, memory_order_relaxed);
}

static inline void slab_set_used(slab_t *s, uint32_t v)
{
    /* Relaxed store by the owner; pairs with the walker's relaxed load (a snapshot). */
    atomic_store_explicit(&s->used, v, memory_order_relaxed);
}

static inline bool slab_decommitted(const slab_t *s)
{
    /* Relaxed: only the owner writes it (slab_set_decommitted); the atomic is for the heap map. */
    return atomic_load_explicit(&s->decommitted, memory_order_relaxed) != 0;
}

static inline void slab_set_decommitted(slab_t *s, bool v)
{
    /* Relaxed store by the owner; pairs with the heap map's relaxed load (a snapshot). */
    atomic_store_explicit(&s->decommitted, v, memory_order_relaxed);
}

#pragma GCC visibility pop

#endif /* BITSLAB_INTERNAL_H */
