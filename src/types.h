/*
 * types.h: the data layout every file shares: the layout constants and the
 * records of regions, slabs, superpages, huge blocks and heaps. No code:
 * the functions on each record live in the header of its concept
 * (docs/architecture.md, "Source layout").
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
#ifndef BITSLAB_TYPES_H
#define BITSLAB_TYPES_H

#include "base.h"

#pragma GCC visibility push(hidden)

/* ---- layout constants ----------------------------------------------------- */

#define SUPERPAGE_SHIFT 21
#define SUPERPAGE_SIZE ((uintptr_t)1 << SUPERPAGE_SHIFT) /* 2 MiB */
#define SLAB_SHIFT 16
#define SLAB_SIZE ((uintptr_t)1 << SLAB_SHIFT)           /* 64 KiB */
#define SLABS_PER_SUPERPAGE 32                           /* slab 0 = metadata */
#define DATA_SLABS_MASK 0xFFFFFFFEu                      /* slabs 1..31 */
#define OS_PAGE 4096u
#define ADDRESS_BITS 47 /* user addresses are below 2^47 (4-level paging) */
#define REGION_BITS (ADDRESS_BITS - SUPERPAGE_SHIFT) /* 26: a 2 MiB region's number */

#define NUM_CLASSES BITSLAB_NUM_CLASSES
#define SMALL_MAX 32768u        /* largest bin */
#define MIN_BIN 16u             /* smallest bin, and the malloc alignment */
#define BITMAP_WORDS 64         /* 64 x 64 bits = 4096 bins = 64 KiB / 16 B */
#define WIDE_MAX_SLABS 16       /* multi-slab allocations up to 1 MiB */
#define WIDE_MAX (WIDE_MAX_SLABS * SLAB_SIZE)
#define HUGE_HEADER OS_PAGE     /* a huge block starts at least this far into its mapping */

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
    _Atomic(struct heap *) heap; /* owner heap while SMALL or WIDE, else NULL: block_lookup's owner test (free's
                                    fast path asks the heap's owned table instead) */
    uint32_t recip;              /* ceil(2^32 / bin_size): bin = offset * recip >> 32 */
    _Atomic uint32_t bin_size;   /* bytes per bin (WIDE: nslabs * 64 KiB) */
    uint32_t nbins;              /* bins in this slab (0 unless SMALL or WIDE) */
    _Atomic uint8_t kind;        /* enum slab_kind */
    uint8_t cls;                 /* size class, SMALL only */
    uint8_t state;               /* enum slab_state, owner-only */
    uint8_t nwords;              /* bitmap words in use (FREE: those of the last configuration) */
    uint8_t index;               /* slab index in its superpage (0..31) */
    uint8_t nslabs;              /* WIDE: run length in slabs */
    _Atomic uint8_t decommitted; /* data returned to the OS (MADV_DONTNEED), not counted as committed;
                                    owner-written, atomic for the heap map (slab_decommitted) */
    uint8_t decommit_failed;     /* FREE, dirty (slab_dirty), and its last decommit failed: not in dirty_free, not
                                    purged again until it is used (or its superpage is released) */
    _Atomic uint16_t purged_pages; /* 4 KiB pages decommitted while the slab stayed configured and not
                                    handed out since (a hint against a second madvise; docs/purger.md) */
    _Atomic uint32_t purgers;    /* low 8 bits: purgers between P0 and P8 on this slab (its owner hands
                                    out no bin of it meanwhile, nor makes it FREE); the rest: a count
                                    of P0s, so that the owner sees a purger that came and went */
    char *data;                  /* first byte of the slab */
    struct slab *prev, *next;    /* heap->partial[cls] list, owner-only */

    /* Cache line 1: owner-mutable, written by the free fast path. */
    alignas(64) _Atomic uint32_t taken; /* bins taken out of the local map: live, in the heap's word
                                          cache, or remote-freed and unmerged (relaxed: stats) */
    uint32_t hwm;                /* bins >= hwm were never handed out since the last decommit */
    uint64_t summary;            /* bit w set: local[w] may have a free bin */
    uint32_t freed_at;           /* FREE: when it became free (ms), for the purge delay */
    uint32_t cached;             /* the word now in the owner heap's word cache, or NO_WORD */
    _Atomic uint32_t cached_bins; /* free bins of that word when it was loaded (0 when none is):
                                     published for the stats walker, see slab_load_word */
    uint32_t trigger;            /* the free fast path goes slow when `taken` falls to this: nbins - 1
                                    when FULL, the next sparse level when PARTIAL, else 0 (slab_retrigger) */
    uint32_t donated;            /* bins slab_donate moved to the remote map since the last merge
                                    (counted in `taken`; owner-only) */
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
    _Atomic uint64_t orphan_next;   /* orphanage link: the next orphan's address >> 21 (lfstack.h;
                                       read racily by poppers) */

    /* Remote line: written by remote freers, never by the owner fast path. */
    alignas(64) _Atomic uint32_t remote_slabs; /* slabs with remote bits not yet taken by a drain */
    _Atomic uint32_t inflight;                 /* remote frees between their first and last touch */
    qnode_t qnode;                             /* link in the owner heap's queue */
    _Atomic uint32_t queued;                   /* 1 from a freer's claim until the drain after the pop */
    _Atomic uint32_t queued_at;                /* bitslab_clock_ms when the pusher queued sp: dates its frees */
    uint32_t on_deferred;            /* on the heap's deferred-release list: owner-only, like the */
    uint32_t empty_since;            /* owner-only: when every data slab became FREE (ms) */
    uint32_t dirty_mask;             /* owner-only (slow paths; line 0 is full): data slabs touched since
                                        they were last decommitted (slab_dirty), one word to search */
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
 * header, the orphanage link and every slab record (orphanage.c). */
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

/* A heap's table of the superpages it owns, for free's fast path: slot
 * n % HEAP_OWNED_SLOTS holds n = address >> SUPERPAGE_SHIFT of one of them, or
 * OWNED_NONE. Owner-only, changed with the heap's superpage list. */
#define HEAP_OWNED_SLOTS 128
#define OWNED_NONE UINTPTR_MAX

typedef struct heap {
    /* Fast path: one entry per class. An empty heap has all bits 0, so its
     * first malloc of each class falls into the slow path. */
    word_cache_t cache[NUM_CLASSES];
    /* free's fast path: one load says "a superpage of this heap" (the
     * superpages that share a slot with another one go slow). */
    uintptr_t owned[HEAP_OWNED_SLOTS];
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
    uint32_t is_placeholder;      /* bitslab_empty_heap: a thread's heap before its first slow path */
    _Atomic uint32_t abandoned;   /* in the pool of abandoned heaps (read by the fork child handler) */
    uint32_t in_slow;             /* owner-only: inside a slow path (a fork child leaves such a heap alone) */
    uint32_t sparse_pending;      /* owner-only: slabs were marked sparse since heap_purge_sparse looked */
    _Atomic uint64_t pool_next;   /* abandoned-heap pool link: the next heap's id (lfstack.h) */
    struct heap *collect_next;    /* heap_collect_abandoned's private chain */
    struct superpage *deferred;   /* empty superpages whose release waited for a freer in flight */
    size_t aged_nempty, aged_nsuperpages; /* superpage_release_aged's last walk: the heap then, */
    int32_t aged_delay;                   /* the purge delay then, */
    uint32_t aged_due;                    /* and when the first superpage it left waiting is due (ms) */
    _Atomic size_t remote_merged; /* remote frees merged by this heap (statistics; written by its user) */

    /* Consumer side of the remote queue: owner-only. */
    qnode_t *q_tail;
    qnode_t q_stub;

    /* Producer side: remote freers exchange here. Own cache line. */
    alignas(64) _Atomic(qnode_t *) q_head;
} heap_t;

#pragma GCC visibility pop

#endif /* BITSLAB_TYPES_H */
