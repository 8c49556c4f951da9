/*
 * remote.pml: the remote-free protocol (F1..F5), Vyukov's intrusive MPSC
 * queue of superpages, the owner's drain (pop, D1, D2, merge, release), the
 * scan path (heap_scan_remote: heap_collect, and the drain after it met a
 * producer stopped half-way through a push), the word cache, and the
 * superpage release check, as written in
 *
 *   src/remote.c     remote_free (F1..F5), queue_push, remote_queue_pop
 *   src/heap.c       heap_drain_remote, heap_scan_remote, superpage_merge,
 *                    slab_after_free, heap_collect, heap_alloc_slow
 *   src/slab.c       slab_merge_remote, slab_check_no_remote,
 *                    slab_load_word, slab_unload_word, slab_configure_small
 *   src/superpage.c  superpage_try_release, superpage_reset_slabs and
 *                    superpage_return_slabs (heap_return_slabs in heap.c),
 *                    slab_reset, superpage_take_slabs
 *   src/api.c        bitslab_free (the owner's free), free_slow (the
 *                    checks before remote_free)
 *
 * Processes: one owner heap and two remote freers A and B, each freeing one
 * block the owner handed it (before the run, or during it in SCEN 3). In
 * SCEN 7..12 the purger P runs beside them (or instead of B, or of both),
 * and the owner may also donate a slab's local free bins. That part follows
 *
 *   src/purger.c     purger_take_and_purge (P0, P1, P3, P4, P5, P8, P6, P7)
 *   src/slab.c       slab_load_word (the peek at the remote word, then
 *                    slab_purger_holds), slab_donate, slab_merge_remote
 *   src/heap.c       slab_after_free + slab_empty_but_held, alloc_from_slabs,
 *                    heap_slab_freed_slow, slab_went_sparse, slab_activate,
 *                    heap_purge_sparse
 *
 * and docs/purger.md (the code after its review; purger_pass's choice of
 * slabs is replaced by "any slab, any time").
 * stress/models/README.md explains the abstraction, bounds and results.
 *
 * Granularity: every C atomic operation is one Promela step (a d_step that
 * touches exactly one variable other threads also touch; ghost variables and
 * owner-private state ride along, since no other process reads them).
 * Owner-only plain fields of the C code are local variables of the owner
 * proctype. Spin explores sequentially consistent interleavings only: the
 * memory orders are argued in docs/remote-free.md, not checked here.
 *
 * Configuration (spin -D...):
 *   SCEN=0  one superpage, one slab of three bins, active with its word in
 *           the owner's word cache; A, B and the owner free into it (default)
 *   SCEN=1  two superpages of one slab of two bins each
 *   SCEN=2  one superpage, two slabs of two bins each
 *   SCEN=3  one slab of two bins; B frees a block the owner allocates and
 *           hands it during the run (slab emptied, reconfigured, reused)
 *   SCEN=4  double free: A and B free the same block
 *   SCEN=5  double free: the owner and B free the same block (word cache)
 *   SCEN=6  double free racing with the slab emptying (no block keeps the
 *           slab alive): NOT always detected; a model of the limit
 *   SCEN=7  the purger (docs/purger.md): one slab of three bins; A frees
 *           bin 0, the owner holds bin 1, bin 2 is free in its local map; the
 *           owner may allocate and free; the purger P takes bins from the
 *           remote word and gives them back (P0..P8), NPASS passes
 *   SCEN=8  the purger and the owner's donation: as SCEN 7 without A (bins
 *           0 and 2 free in the local map); the owner may donate them
 *           (-DOWN8=3: the owner holds bins 0 and 1, bin 2 is free)
 *   SCEN=9  double free while the purger holds the bin: A and B free bin 0,
 *           the owner keeps bin 1 and allocates nothing (-DMAXALLOC=1: once)
 *   SCEN=10 double free while the purger holds the bin: A and the owner
 *           free bin 0, the owner keeps bin 1 and allocates once
 *   SCEN=11 A and the owner free bin 0, the owner also frees bin 1 (once
 *           A has passed F2) and allocates nothing: the slab may empty while
 *           the purger holds a stale bit of it (slab_empty_but_held)
 *   SCEN=12 as SCEN 11 with the slab active and its word in the cache: the
 *           slab empties in the cache, heap_collect(full) returns it
 *   Purger options (SCEN 7..12):
 *   NPASS=n  passes of the purger (default 2; 1 in SCEN 9..12)
 *   MAXDONATE=n  donations the owner may make (default 1 in SCEN 8, else 0)
 *   STRAND=1  at quiescence, every donated bin still in a remote word is
 *           announced (remote_slabs) or marked sparse: a purger pass will
 *           look at it
 *   DF_AT_P5=1  assert that a double free made while P holds the bin is
 *           reported at P5 (not so: an observation, not registered)
 *   AFIRST=1  (SCEN 11, 12) the owner frees bin 1 once A has passed F1
 *           (default 2: once A has passed F2, its bit is in the remote word)
 *   FIX_GEN=1  (the code; 0: before the model found SCEN 10) purgers carries a generation, bumped at
 *           P0; the refill reads it before and after its peek, and the
 *           empty-slab check before and after its slab_check_no_remote, and
 *           they go on only if both reads find no purger and the same
 *           generation (the code reads purgers once, after the look);
 *           FIX_GEN=2: (weaker, refill only) peek, purgers, peek again
 *   FIX_COLLECT=1  heap_collect(full) makes an empty active slab FREE only
 *           after slab_empty_but_held's check (the code does not: SCEN 12)
 *   MERGE_MAY_RELEASE=1  superpage_merge may release the superpage while it
 *           still walks the mask (the code before commit ed96630): the model
 *           must then find a violation.
 *   MUT=n   a deliberately broken protocol, to show the model notices:
 *           1 release without the inflight check   2 without the queued/remote_slabs check
 *           3 F5 before F3                         4 the drain clears queued after
 *                                                     taking the mask (D2 before D1)
 *           5 pop ignores a producer half-way through its push
 *           6 F4 pushes whatever the exchange returned
 *           7 drain clears the mask after the merge
 *           8 merge without the overlap check      9 F2 without the old-bit check
 *           10 F4 looks at queued before F3 sets remote_slabs
 *           purger (SCEN 7..12; caught by the checks of SCEN 7..12):
 *           11 P4 (inflight++) after P5            12 no P4 and no P7
 *           13 no P6 (no notification)             14 P1 reads the remote word
 *                                                     without taking it (a load)
 *           15 P3 decommits a page of which only some bins are held
 *           16 the donation does not clear the local word
 *           17 P1 takes the owner's local map instead of the remote word
 *           18 P5 without the double-free check
 *           19 the refill does not read purgers    20 the refill reads purgers
 *                                                     before its remote peek only
 *              (with FIX_GEN=1: 19 neither read, 20 only the read before)
 *           21 P8 before P5                        22 an empty slab is made FREE
 *                                                     without reading purgers
 *           23 the purger clears the sparse mark it found at the start of
 *              its pass after the pass (docs/purger.md before the review)
 *           24 no merge when a donated slab's last live bin goes
 *              (heap_slab_freed_slow)
 *           25 alloc_from_slabs merges a reused slab only when its local
 *              map is empty (not when it has donated bins)
 *   WITNESS=n  fail at witness point n (REACH(n) below): shows the window
 *           is reached. 1 pop finds a push half-way   2 release deferred by
 *           inflight   3 release deferred because queued   4 stale
 *           notification   5 collect scan merges bits   6 a superpage is
 *           handed on   7 a push links behind another superpage's node
 *           8 a slab is configured again while a freer is inside its
 *           superpage   9 F4 finds the superpage already queued
 *           10 all frees done, nothing queued, and an empty superpage is
 *           still held beyond the retention (a deferred release)
 *           11 F4 read queued == 0 but lost the exchange to another freer
 *           purger: 12 a merge peeked bits that P's P1 took before its
 *           exchange   13 P peeked bits that the owner's merge took before P's
 *           exchange   14 a release deferred by P's inflight alone (P past P5)
 *           15 the owner needs a donated slab whose bins P holds   16 P3
 *           decommits a page   17 P5 reports a double free   18 the owner
 *           frees its last block of a slab while P, before P4 and with no
 *           freer inside, holds all the others (only `taken` keeps it alive)
 *           (19: retired, P no longer writes the sparse marks)
 *           20 the owner's refill refuses the slab (purgers != 0) while P
 *           holds bins of it   21 an empty slab stays configured (purgers
 *           != 0) while P holds (stale) bits of it, no report yet   22 the
 *           refill's peek is the first to report a double free (a bin free
 *           in both maps) that met the purger (P gave the bit back)
 */

#ifndef SCEN
#define SCEN 0
#endif
#ifndef MERGE_MAY_RELEASE
#define MERGE_MAY_RELEASE 0
#endif
#ifndef MUT
#define MUT 0
#endif
/* REACH(n): a witness that an interesting interleaving is reachable (a check
 * that passes is not vacuous). With -DWITNESS=n the model must fail there. */
#ifndef WITNESS
#define WITNESS 0
#endif
#define REACH(n) assert(WITNESS != (n))

#define NONE 255                        /* NULL slab / no slab */
#define NOB 254                         /* no such freer (FB_S when B does not run) */

/* ---- scenarios -------------------------------------------------------------- */
/* NSP superpages, NSL modelled slabs per superpage, NB bins per slab (<= 3,
 * one bitmap word). FA_S/FA_B, FB_S/FB_B: the freers' blocks (slab, bin).
 * OWN_s: bins of slab s the owner holds at the start; OFREE_s: those it may
 * free during the run (it may also free what it allocates). MAXALLOC:
 * allocations the owner may make. INIT_ACTIVE: a slab that starts as the
 * active slab with its word loaded (and used up) in the word cache. DF: a
 * double-free scenario (the double-freed block is FB). */
#if SCEN == 0
#define NSP 1
#define NSL 1
#define NB 3
#define FA_S 0
#define FA_B 0
#define FB_S 0
#define FB_B 1
#define OWN_0 4
#define OFREE_0 4
#define MAXALLOC 1
#define INIT_ACTIVE 0
#define DF 0
#elif SCEN == 1
/* (no allocation: it multiplies this scenario's states by 8; SCEN 0, 2 and
 * 3 cover the allocation paths) */
#define NSP 2
#define NSL 1
#define NB 2
#define FA_S 0
#define FA_B 0
#define FB_S 1
#define FB_B 0
#define OWN_0 2
#define OWN_1 2
#define OFREE_0 2
#define OFREE_1 2
#define MAXALLOC 0
#define DF 0
#elif SCEN == 2
#define NSP 1
#define NSL 2
#define NB 2
#define FA_S 0
#define FA_B 0
#define FB_S 1
#define FB_B 0
#define OWN_0 2
#define OWN_1 2
#define OFREE_0 2
#define OFREE_1 2
#define MAXALLOC 1
#define DF 0
#elif SCEN == 3
#define NSP 1
#define NSL 1
#define NB 2
#define FA_S 0
#define FA_B 0
#define FB_S NONE                       /* handed over during the run */
#define FB_B 0
#define OWN_0 2
#define OFREE_0 2
#define MAXALLOC 2
#define DF 0
#elif SCEN == 4
/* A and B both free bin 0. The owner keeps bin 1 live and allocates nothing,
 * so the slab never empties and bin 0 is never handed out again (a freed bin
 * that was handed out again cannot be told from a live one: that is a
 * use-after-free, which no O(1) check detects; docs/remote-free.md). */
#define NSP 1
#define NSL 1
#define NB 2
#define FA_S 0
#define FA_B 0
#define FB_S 0
#define FB_B 0
#define OWN_0 2
#define OFREE_0 0
#define MAXALLOC 0
#define DF 1
#elif SCEN == 5
/* A frees bin 0; the owner and B both free bin 1; the owner keeps bin 2. The
 * slab is active with its word in the cache, so the owner's free goes to the
 * cache and the merge must look there. */
#define NSP 1
#define NSL 1
#define NB 3
#define FA_S 0
#define FA_B 0
#define FB_S 0
#define FB_B 1
#define OWN_0 6
#define OFREE_0 2
#define MAXALLOC 0
#define INIT_ACTIVE 0
#define DF 1
#elif SCEN == 6
/* A frees bin 0, the owner frees bin 1, B frees bin 0 again: nothing keeps
 * the slab alive, so the owner may empty it and hand the superpage on
 * between B's checks (free_slow) and its F1. */
#define NSP 1
#define NSL 1
#define NB 2
#define FA_S 0
#define FA_B 0
#define FB_S 0
#define FB_B 0
#define OWN_0 2
#define OFREE_0 2
#define MAXALLOC 0
#define DF 1
#elif SCEN == 7 || SCEN == 8
/* The purger. SCEN 7: A frees bin 0 (a remote free for P to take), no
 * donation. SCEN 8: no freer, the owner donates (bin 0 and bin 2 are free in
 * its local map at the start). In both the owner holds bin 1 and may free
 * it, and may allocate once; bin 2 is free in the local map of the PARTIAL
 * slab. Pages: bin 0 straddles pages 0 and 1, bin 1 starts on page 1 (its
 * other pages and bin 2's are not modelled: they are never purged whole).
 * A freer and donations together (-DSCEN=7 -DMAXDONATE=1) are too big for
 * the suite (stress/models/README.md). */
#define NSP 1
#define NSL 1
#define NB 3
#if SCEN == 7
#define FA_S 0
#ifndef MAXDONATE
#define MAXDONATE 0
#endif
#else
#define FA_S NOB
#endif
#define FA_B 0
#define FB_S NOB
#define FB_B 0
#ifndef OWN8
#define OWN8 2                          /* SCEN 8: -DOWN8=3, the owner holds bins 0 and 1 */
#endif
#if SCEN == 8
#define OWN_0 OWN8
#define OFREE_0 OWN8
#else
#define OWN_0 2
#define OFREE_0 2
#endif
#define MAXALLOC 1
#define DF 0
#define PURGE 1
#define PG0 1                           /* bins overlapping page 0 */
#define PG1 3                           /* bins overlapping page 1 */
#elif SCEN >= 9 && SCEN <= 12
/* Double free while the purger runs; donates nothing. One page per bin.
 * SCEN 9: A and B both free bin 0; the owner keeps bin 1 and allocates
 * nothing (-DMAXALLOC=1: once). SCEN 10: A and the owner free bin 0, the
 * owner keeps bin 1 and allocates once. SCEN 11: A and the owner free bin
 * 0, the owner frees bin 1 too and allocates nothing: the slab may empty
 * while P holds a stale bit of it. SCEN 12: as 11 with the slab active and
 * its (used up) word in the word cache, so that the owner's frees go to the
 * cache and heap_collect(full) returns the emptied slab. In 11 and 12 the
 * owner frees bin 1 only once A has passed F2 (AFIRST=2): the second free
 * of bin 0 is in the remote word before the slab can empty. With AFIRST=1
 * (after A's F1) it may land after the owner's empty-slab check, a double
 * free racing with the emptying (SCEN 6's limit, where the purger can hold
 * the late bit); without AFIRST the slab could go FREE and its superpage be
 * handed on between A's check of s->heap and its F1 (SCEN 6 itself). */
#define NSP 1
#define NSL 1
#define NB 2
#define FA_S 0
#define FA_B 0
#if SCEN == 9
#define FB_S 0
#define FB_B 0
#define OWN_0 2
#define OFREE_0 0
#ifndef MAXALLOC
#define MAXALLOC 0
#endif
#else
#define FB_S NOB
#define FB_B 0
#define OWN_0 3
#if SCEN == 10
#define OFREE_0 1
#define MAXALLOC 1
#else
#define OFREE_0 3
#define MAXALLOC 0
#ifndef AFIRST
#define AFIRST 2                        /* the owner's frees but bin 0's wait for A's F2 */
#endif
#if SCEN == 12
#define INIT_ACTIVE 0
#endif
#endif
#define DF_S 0
#define DF_B 0
#endif
#if MAXALLOC > 0
#define DF_ALLOC 1                      /* (d) only for double frees that met the purger */
#endif
#define DF 1
#define PURGE 1
#define MAXDONATE 0
#ifndef NPASS
#define NPASS 1
#endif
#define PG0 1
#define PG1 2
#endif

#ifndef OWN_1
#define OWN_1 0
#define OFREE_1 0
#endif
#ifndef INIT_ACTIVE
#define INIT_ACTIVE NONE
#endif
#ifndef DF_S
#define DF_S FB_S                       /* the doubly freed block */
#define DF_B FB_B
#endif
#ifndef PURGE
#define PURGE 0
#endif
#ifndef NPASS
#define NPASS 2
#endif
#ifndef MAXDONATE
#define MAXDONATE (PURGE -> 1 : 0)
#endif
#ifndef DF_ALLOC
#define DF_ALLOC 0
#endif
#ifndef DF_AT_P5
#define DF_AT_P5 0
#endif
#ifndef STRAND
#define STRAND 0
#endif
#ifndef FIX_COLLECT
#define FIX_COLLECT 1 /* the code since the model found SCEN 12 (0: before) */
#endif
#ifndef FIX_GEN
#define FIX_GEN 1 /* the code since the model found SCEN 10 (0: before) */
#endif
#ifndef AFIRST
#define AFIRST 0
#endif
#if FA_S == NOB
#define NFREE 0                         /* no freer */
#elif FB_S == NOB
#define NFREE 1                         /* freers: A only */
#else
#define NFREE 2                         /* A and B */
#endif
#define NFREERS (NFREE + PURGE)         /* processes the owner waits for (nfin) */
#define PPID (NFREE + 2)                /* the purger's _pid (init 0, owner 1, freers) */
#define WHO ((PURGE && _pid == PPID) -> 80 : 63 + _pid)   /* 'A', 'B', 'P' */

/* Other empty superpages the heap holds (not modelled in detail; only their
 * number matters, through h->nempty). One is the steady state: the heap
 * retains SUPERPAGE_RETENTION == 1 empty superpage. */
#ifndef NEMPTY_OTHERS
#define NEMPTY_OTHERS 1
#endif
#define RETAIN 1                        /* SUPERPAGE_RETENTION */

#define NS (NSP * NSL)                  /* slabs, numbered sp * NSL + k */
#define SPOFSLAB(s) ((s) / NSL)         /* superpage_of_slab */
#define SLBIT(s) (1 << ((s) % NSL))     /* 1u << s->index */
#define FULLMASK ((1 << NSL) - 1)       /* DATA_SLABS_MASK */
#define ALLBINS ((1 << NB) - 1)
#define POPC(x) (((x) & 1) + (((x) >> 1) & 1) + (((x) >> 2) & 1))
#define LOWBIT(x) (((x) & 1) -> 1 : (((x) & 2) -> 2 : 4))
#define BINOF(bit) ((bit) == 1 -> 0 : ((bit) == 2 -> 1 : 2))

/* Queue nodes: the heap's stub and each superpage's qnode. */
#define STUB 0                          /* &h->q_stub */
#define NODE(sp) ((sp) + 1)             /* &sp->qnode */
#define SPOF(n) ((n) - 1)               /* superpage_of_node */
#define NIL (NSP + 1)                   /* NULL */

#define FREE 0                          /* SLAB_FREE */
#define SMALL 1                         /* SLAB_SMALL */
#define ST_NONE 0                       /* STATE_NONE */
#define ST_ACTIVE 1
#define ST_PARTIAL 2
#define ST_FULL 3

/* bitslab_fatal("double free ..." / "invalid free"). Outside the double-free
 * scenarios a report is a false positive: the assertion fails. Inside them
 * the model records it; the process that reports stops (its later steps
 * would come after abort()) and the other safety assertions are disarmed by
 * `detected` (after abort() nothing runs). */
#define DETECT() printf("double free reported\n"); assert(DF); detected = 1

/* the owner's operations (o_op) */
#define OP_DRAIN 0
#define OP_COLLECT 1
#define OP_ALLOC 2
#define OP_FREE 3
#define OP_FINAL 4
#define OP_DONATE 5
#define OP_PURGE 6

/* No block of slab S is live (a slab going FREE, a superpage handed on).
 * In the purger's double-free scenarios the owner may still "hold" a block
 * that A has freed (SCEN 11): there, live means handed out and not freed. */
#if PURGE && DF
#define OHELD_GONE(S) (glive[S] == 0)
#else
#define OHELD_GONE(S) (oheld[S] == 0)
#endif

/* ---- shared state (read or written by more than one thread) --------------- */
byte q_head = STUB;                     /* heap_t.q_head */
byte qnext[NSP + 1];                    /* qnode_t.next: [STUB] = h->q_stub, [NODE(sp)] = sp->qnode */
byte remote_slabs[NSP];                 /* superpage_t.remote_slabs (bit k: modelled slab k) */
bit queued[NSP];                        /* superpage_t.queued */
byte inflight[NSP];                     /* superpage_t.inflight */
byte remote[NS];                        /* the slab's remote bitmap word */
bit sheap[NS];                          /* slab_t.heap: 1 = the owner, 0 = NULL (FREE slab) */

#if PURGE
/* ---- owner-only state that ghost code of the freers reads (SCEN 7..12) ----- */
byte cbits;                             /* heap_t.cache[cls].bits */
byte cslab = NONE;                      /* the slab s with s->cached != NO_WORD */
#endif

/* ---- ghosts ----------------------------------------------------------------- */
bit released[NSP];                      /* superpage handed to the orphanage */
byte in_queue[NSP];                     /* times the superpage's node is in the queue */
bit detected;                           /* a double (or invalid) free was reported */
byte dup_frees;                         /* DF: frees of the doubly freed block FB */
byte handoff;                           /* SCEN 3: the block given to B, slab * NB + bin + 1 */
byte nfin;                              /* freers (and the purger) that finished */

#if PURGE
/* ---- the purger (docs/purger.md) ------------------------------------------ */
byte purgers[NS];                       /* slab_t.purgers: purgers between P0 and P8 */
#if FIX_GEN == 1
byte pgen[NS];                          /* FIX_GEN: the generation half of the same word */
#endif
byte sparse[NSP];                       /* superpage_t.sparse_slabs (bit k: modelled slab k);
                                           written by the owner only, read by purger_pass
                                           as a hint (the model's P takes any slab) */
/* ghosts */
byte phold[NS];                         /* bins the purger holds (taken at P1, put back at P5) */
bit pin[NSP];                           /* the purger holds bins of sp, or is between P4 and P7 */
byte glive[NS];                         /* bins handed out and not freed (live blocks) */
byte life[NS];                          /* configurations of the slab (FREE -> SMALL) so far */
byte gdup[NS];                          /* bins freed while not live (freed twice) */
byte gpeek[NS];                         /* bins of a refill between its peek and its load */
bit dfheld;                             /* a double free met the purger: a free of a bin it
                                           held, or it took the bit of a bin free in the
                                           owner's maps */
bit det_p5;                             /* the double free was reported at P5 */
#if AFIRST
byte afstep;                            /* AFIRST: A has passed F1 (1), F2 (2) */
#endif
#if DF && MAXALLOC > 0
byte nf2;                               /* freers past F2 */
#endif
#endif

/* F3 and F4 of a remote free, with the push (remote_notify in the C code):
 * slab s of superpage sp; `was` and `prv` are the caller's temporaries. The
 * freers and the purger's P6 use it. */
inline remote_notify()
{
#if MUT != 10
    /* F3: atomic_fetch_or(&sp->remote_slabs, 1u << s->index) (seq_cst, result unused) */
    d_step {
        assert(detected || !released[sp]);
        remote_slabs[sp] = remote_slabs[sp] | SLBIT(s);
        printf("%c: F3 remote_slabs[sp%d] |= slab%d\n", WHO, sp, s)
    }
#endif
    /* F4: if (load(&sp->queued) == 0 && exchange(&sp->queued, 1) == 0) push */
    d_step { assert(detected || !released[sp]); was = queued[sp] }
    if
    :: was == 0 ->
        d_step {
            assert(detected || !released[sp]);
            was = queued[sp]; queued[sp] = 1;
            printf("%c: F4 queued[sp%d] exchange -> was %d\n", WHO, sp, was)
        };
        if :: was != 0 -> REACH(11) :: else -> skip fi
    :: else -> REACH(9)
    fi;
#if MUT == 10
    d_step {
        assert(detected || !released[sp]);
        remote_slabs[sp] = remote_slabs[sp] | SLBIT(s);
        printf("%c: F3 (late) remote_slabs[sp%d] |= slab%d\n", WHO, sp, s)
    }
#endif
    if
    :: was == 0 || MUT == 6 ->
        /* queue_push(sp->heap, &sp->qnode): n->next = NULL (relaxed) */
        d_step { assert(detected || !released[sp]); qnext[NODE(sp)] = NIL }
        /* prev = atomic_exchange(&h->q_head, n): from here the node is queued */
        d_step {
            assert(detected || !released[sp]);
            prv = q_head; q_head = NODE(sp);
            printf("%c: push sp%d: exchange head, prev = node %d\n", WHO, sp, prv);
            in_queue[sp]++;
            assert(detected || in_queue[sp] == 1)   /* (c) never queued twice */
        }
        /* atomic_store(&prev->next, n) (release): a write into the previous
         * node, the stub or another superpage, which must not be handed on */
        d_step {
            assert(detected || prv == STUB || !released[SPOF(prv)]);
            if :: prv != STUB -> REACH(7) :: else -> skip fi;
            qnext[prv] = NODE(sp);
            printf("%c: push sp%d: link node %d -> node %d\n", WHO, sp, prv, NODE(sp))
        }
    :: else -> skip
    fi
}

/* ---- a remote freer: free_slow + remote_free ------------------------ */
proctype freer(byte s; byte b)
{
    byte sp, old, was, prv;

    if
    :: s == NONE ->                     /* the user hands it a block */
        d_step { handoff != 0 -> s = (handoff - 1) / NB; b = (handoff - 1) % NB }
    :: else -> skip
    fi;
    sp = SPOFSLAB(s);

    /* free_slow: owner = s->heap (relaxed); !owner -> invalid_free */
    d_step {
        if
        :: !sheap[s] -> printf("%c: free into a FREE slab: invalid free\n", WHO); DETECT()
        :: else -> skip
        fi
    }
    if
    :: detected -> goto done
    :: else -> skip
    fi;

    /* F1: atomic_fetch_add(&sp->inflight, 1) */
    d_step {
        assert(detected || !released[sp]);  /* (b) no touch of a handed-on superpage */
        inflight[sp]++;
#if PURGE
#if AFIRST
        afstep = 1;
#endif
#endif
        printf("%c: F1 inflight[sp%d]++ -> %d\n", WHO, sp, inflight[sp])
    }

    /* F2: old = atomic_fetch_add(&remote[idx >> 6], bit). For a clear bit
     * the add is an or; a set bit is a double free, reported at once, and
     * the carry the add made is never used (the process aborts). */
    d_step {
        old = remote[s]; remote[s] = old | (1 << b);
        if :: DF && s == DF_S && b == DF_B -> dup_frees++ :: else -> skip fi;
#if PURGE
        /* a free of a bin already free; not when the bin sits in the
         * owner's word cache, or in the word a refill is loading, past its
         * peek: that double free is not caught, with or without a purger
         * (docs/purger.md, "Double frees") */
        if
        :: !(glive[s] & (1 << b)) && !(cslab == s && (cbits & (1 << b))) && !(gpeek[s] & (1 << b)) ->
            gdup[s] = gdup[s] | (1 << b)
        :: else -> skip
        fi;
        glive[s] = glive[s] & ~(1 << b);
#if AFIRST
        afstep = 2;
#endif
#if DF && MAXALLOC > 0
        nf2++;
#endif
        if :: phold[s] & (1 << b) -> dfheld = 1 :: else -> skip fi;
#endif
        printf("%c: F2 remote[slab%d] += bin%d\n", WHO, s, b)
    }
    if
    :: old & (1 << b) && MUT != 9 ->    /* "double free (freed twice by other threads)" */
        DETECT();
        goto done
    :: else -> skip
    fi;

#if MUT == 3
    d_step { assert(detected || !released[sp]); inflight[sp]--; printf("%c: F5 inflight[sp%d]--\n", WHO, sp) }
#endif
    remote_notify();

#if MUT != 3
    /* F5: atomic_fetch_sub(&sp->inflight, 1) (release) */
    d_step { assert(detected || !released[sp]); inflight[sp]--; printf("%c: F5 inflight[sp%d]--\n", WHO, sp) }
#endif
done:
    nfin++
}

/* ---- the owner: inlined functions (their temporaries are owner locals) ---- */

/* remote_queue_pop(h): the popped node in p_res, NIL for "nothing (yet)".
 * Written as a little state machine (p_st) so that each step is exactly one
 * shared access plus the owner-local decisions that follow it. */
#define POPPED(n) \
    assert((n) != STUB); \
    assert(detected || in_queue[SPOF(n)] == 1); \
    in_queue[SPOF(n)]--;                                       /* ghost: it left the queue */ \
    assert(detected || queued[SPOF(n)] == 1);                  /* in the queue => queued */ \
    printf("O: pop -> sp%d\n", SPOF(n)); \
    p_res = n

inline queue_pop()
{
    p_res = NIL;
    p_st = 0;
    do
    :: d_step {
        p_st == 0;
        p_tail = q_tail; p_next = qnext[p_tail];              /* tail = h->q_tail; next = tail->next (acquire) */
        if
        :: p_tail == STUB && p_next == NIL -> p_st = 9        /* if (!next) return NULL */
        :: p_tail == STUB && p_next != NIL ->
            q_tail = p_next; p_tail = p_next; p_st = 1        /* h->q_tail = next; tail = next */
        :: p_tail != STUB && p_next != NIL ->
            q_tail = p_next; POPPED(p_tail); p_st = 9         /* if (next) { h->q_tail = next; return tail } */
        :: else -> p_st = 2
        fi
       }
    :: d_step {
        p_st == 1;
        p_next = qnext[p_tail];                               /* next = tail->next (acquire) */
        if
        :: p_next != NIL -> q_tail = p_next; POPPED(p_tail); p_st = 9
        :: else -> p_st = 2
        fi
       }
    :: d_step {
        p_st == 2;
        p_head = q_head;                                      /* head = h->q_head (acquire) */
        if
        :: p_tail != p_head && MUT != 5 ->                    /* a producer between exchange and link */
            printf("O: pop -> nothing (a push is half-way)\n"); REACH(1);
            p_stall = 1; p_st = 9                             /* *stalled = true; return NULL */
        :: else -> p_st = 3
        fi
       }
    /* queue_push(h, &h->q_stub) */
    :: d_step { p_st == 3; qnext[STUB] = NIL; p_st = 4 }      /* stub.next = NULL */
    :: d_step { p_st == 4; p_prev = q_head; q_head = STUB; p_st = 5 }  /* prev = exchange(&h->q_head, stub) */
    :: d_step { p_st == 5; qnext[p_prev] = STUB; p_st = 6 }   /* prev->next = stub (release) */
    :: d_step {
        p_st == 6;
        p_next = qnext[p_tail];                               /* next = tail->next (acquire) */
        if
        :: p_next != NIL -> q_tail = p_next; POPPED(p_tail)   /* h->q_tail = next; return tail */
        :: else -> p_stall = 1                                /* *stalled = true; return NULL */
        fi;
        p_st = 9
       }
    :: p_st == 9 -> break
    od
}

/* superpage_try_release(h, tr_sp, tr_ret) */
inline superpage_try_release()
{
    if
    :: free_mask[tr_sp] != FULLMASK || n_empty <= tr_ret -> skip
    :: else ->
        tr_v = (MUT == 1 -> 0 : inflight[tr_sp]);             /* load inflight (acquire) */
        if
        :: tr_v != 0 -> printf("O: sp%d empty, release deferred (inflight)\n", tr_sp); REACH(2)
#if PURGE
            /* witness 14: only the purger, past its P5, holds it back */
            ; if :: pin[tr_sp] && phold[tr_sp * NSL] == 0 && phold[tr_sp * NSL + NSL - 1] == 0 -> REACH(14) :: else -> skip fi
#endif
        :: else ->
            tr_v = (MUT == 2 -> 0 : queued[tr_sp]);           /* load queued (relaxed) */
            if :: tr_v == 0 -> tr_v = (MUT == 2 -> 0 : remote_slabs[tr_sp]) :: else -> skip fi;  /* load remote_slabs */
            if
            :: tr_v != 0 -> printf("O: sp%d empty, release deferred (queued)\n", tr_sp); REACH(3)
            :: else ->
                /* list_unlink; nempty--; sp->heap = NULL; decommit; orphanage_push */
                d_step {
                    assert(detected || owned[tr_sp]);         /* released twice */
                    assert(detected || in_queue[tr_sp] == 0); /* a queued node in a handed-on superpage */
                    assert(detected || inflight[tr_sp] == 0); /* a freer still inside */
#if PURGE
                    assert(detected || !pin[tr_sp]);          /* (f) the purger holds bins or is between P4 and P7 */
                    for (t_i : 0 .. NSL - 1) { assert(detected || phold[tr_sp * NSL + t_i] == 0) }
#endif
                    for (t_i : 0 .. NSL - 1) {
                        assert(detected || (kind[tr_sp * NSL + t_i] == FREE &&
                                            remote[tr_sp * NSL + t_i] == 0 &&
                                            OHELD_GONE(tr_sp * NSL + t_i)))
                    }
                    owned[tr_sp] = 0;
                    n_empty--;
                    released[tr_sp] = 1;
#if PURGE
                    sparse[tr_sp] = 0;                        /* sp->sparse_slabs = 0 (relaxed) */
#endif
                    REACH(6);
                    printf("O: sp%d released to the orphanage\n", tr_sp)
                }
            fi
        fi
    fi
}

/* slab_check_no_remote(ck_s): a remote bit in a slab that is (about to be)
 * FREE is a free of a bin that was already free. */
inline slab_check_no_remote()
{
    k_bits = remote[ck_s];                                    /* relaxed peek */
    if
    :: k_bits != 0 ->
        d_step {                                              /* exchange(&remote[w], 0) (acquire) */
            k_bits = remote[ck_s]; remote[ck_s] = 0;
            if
            :: k_bits != 0 -> printf("O: slab%d is FREE but has remote bits %d\n", ck_s, k_bits); DETECT()
            :: else -> skip
            fi
        }
    :: else -> skip
    fi
}

/* heap_return_slabs(h, rs_s, 1, saf_mr): superpage_reset_slabs (slab_reset), superpage_return_slabs */
inline heap_return_slabs()
{
    ck_s = rs_s; slab_check_no_remote();
    d_step {
        rs_sp = SPOFSLAB(rs_s);
        assert(detected || OHELD_GONE(rs_s));
        assert(cslab != rs_s);                                /* nothing of it in the word cache */
#if PURGE
        assert(detected || phold[rs_s] == 0);                 /* no FREE slab while the purger holds its bins */
        dnt[rs_s] = 0;
#endif
        state[rs_s] = ST_NONE;
        kind[rs_s] = FREE;
        lmap[rs_s] = 0;
        used[rs_s] = 0;
        sheap[rs_s] = 0;                                      /* s->heap = NULL (relaxed) */
        free_mask[rs_sp] = free_mask[rs_sp] | SLBIT(rs_s);
        printf("O: slab%d empty, back to sp%d as FREE\n", rs_s, rs_sp)
    }
    if
    :: free_mask[rs_sp] == FULLMASK ->
        n_empty++;
        if
        :: saf_mr -> tr_sp = rs_sp; tr_ret = RETAIN; superpage_try_release()
        :: else -> skip                                       /* !may_release: the caller retries */
        fi
    :: else -> skip
    fi
}

#if PURGE
/* slab_empty_but_held(saf_s): e_v = purgers (0: the slab may go FREE) */
inline slab_empty_but_held()
{
#if FIX_GEN == 1 && MUT != 22
    d_step { e_v = purgers[saf_s]; e_g = pgen[saf_s] }        /* (the fix) v = load(&s->purgers) */
#endif
    ck_s = saf_s; slab_check_no_remote();                     /* every bit left is a double free */
    /* atomic_thread_fence(seq_cst); slab_purger_holds: load purgers (seq_cst) */
#if MUT != 22
    d_step {
#if FIX_GEN == 1
        e_v = e_v | (purgers[saf_s] != 0) | (pgen[saf_s] != e_g); e_g = 0;   /* (the fix) and unchanged */
#else
        e_v = purgers[saf_s];
#endif
        if
        :: e_v != 0 ->
            if :: !detected && phold[saf_s] != 0 -> REACH(21) :: else -> skip fi;
            printf("O: slab%d empty, but purgers %d: stays configured\n", saf_s, e_v)
        :: else -> skip
        fi
    }
#endif
}
#endif

/* slab_after_free(h, saf_s, saf_wf, saf_u, saf_mr). With the purger, an
 * empty slab goes FREE only after slab_empty_but_held: every remote bit left
 * is a double free (slab_check_no_remote), then a seq_cst fence (a no-op in
 * the model's interleavings) and the read of purgers; while a purger is
 * between P0 and P8 the slab stays configured and PARTIAL (partial_push, or
 * slab_retrigger if it is on the list already). */
inline slab_after_free()
{
    if
    :: saf_u == 0 ->
        if
        :: state[saf_s] == ST_ACTIVE -> skip                  /* keep: the next malloc reuses it */
        :: else ->
#if PURGE
            slab_empty_but_held();
            if
            :: e_v != 0 -> d_step { state[saf_s] = ST_PARTIAL; e_v = 0 }  /* held: stays configured */
            :: else -> rs_s = saf_s; heap_return_slabs() /* (partial_unlink) */
            fi
#else
            rs_s = saf_s; heap_return_slabs()            /* (partial_unlink) */
#endif
        fi
    :: else ->
        if
        :: saf_wf && state[saf_s] == ST_FULL -> state[saf_s] = ST_PARTIAL  /* partial_push */
        :: else -> skip
        fi
    fi
}

/* superpage_merge(h, m_sp, m_mask), with slab_merge_remote inlined */
inline superpage_merge()
{
    m_k = 0;
    do
    :: m_k == NSL -> break
    :: else ->
        if
        :: (m_mask >> m_k) & 1 ->
            m_s = m_sp * NSL + m_k;
            assert(detected || owned[m_sp]);                  /* never walks a handed-on superpage */
            if
            :: kind[m_s] != SMALL ->                          /* a stale notification */
                REACH(4);
                ck_s = m_s; slab_check_no_remote()
            :: else ->
                m_before = used[m_s];
#if PURGE
                d_step { m_bits = remote[m_s]; dnt[m_s] = 0 }  /* relaxed peek; (s->donated = 0, ours again or held by P) */
#else
                m_bits = remote[m_s];                         /* relaxed peek */
#endif
                if
                :: m_bits == 0 -> skip
                :: else ->
                    d_step {                                  /* bits = exchange(&remote[w], 0) (acquire) */
                        if :: (remote[m_s] & m_bits) != m_bits -> REACH(12) :: else -> skip fi;  /* P took bits we peeked */
                        m_bits = remote[m_s]; remote[m_s] = 0;
                        printf("O: merge slab%d: remote bits %d, local %d, cache %d\n", m_s, m_bits, lmap[m_s],
                               (cslab == m_s -> cbits : 0))
                    }
                    d_step {
                        /* free_here = local[w] | (the cached word's bins) */
                        if
                        :: m_bits & (lmap[m_s] | (cslab == m_s -> cbits : 0)) && MUT != 8 ->
                            DETECT()                          /* "double free (freed by another thread and again)" */
                        :: else -> skip
                        fi;
#if PURGE
                        assert(detected || DF || (m_bits & phold[m_s]) == 0);  /* no bin both merged and held by P (a double free breaks it) */
#endif
                        lmap[m_s] = lmap[m_s] | m_bits;
                        used[m_s] = used[m_s] - POPC(m_bits);
                        saf_s = m_s;
                        saf_wf = (m_before == NB);
                        saf_u = used[m_s];
                        saf_mr = MERGE_MAY_RELEASE            /* slab_after_free(..., false) */
                    }
                    slab_after_free()
                fi
            fi
        :: else -> skip
        fi;
        m_k++
    od
}

/* heap_scan_remote(h): every owned superpage with a notification is merged;
 * remote_slabs is only read (queued still says whether sp is in the queue).
 * The superpage list order is the heap's business (superpages with free
 * slabs first): the model walks it from either end. */
inline scan_remote()
{
    if
    :: c_start = 0
    :: NSP > 1 -> c_start = NSP - 1
    fi;
    c_i = 0;
    do
    :: c_i == NSP -> break
    :: else ->
        c_sp = (c_start + c_i) % NSP;
        if
        :: owned[c_sp] ->
            d_step {                                          /* mask = load(&sp->remote_slabs) (acquire) */
                c_m = remote_slabs[c_sp];
                printf("O: scan sp%d mask %d\n", c_sp, c_m)
            }
            if
            :: c_m != 0 -> REACH(5); m_sp = c_sp; m_mask = c_m; superpage_merge()
            :: else -> skip
            fi
        :: else -> skip
        fi;
        c_i++
    od;
    c_i = 0                             /* (landing point) */
}

/* heap_drain_remote(h) */
inline heap_drain_remote()
{
    do
    :: queue_pop();                                           /* pop */
        if
        :: p_res == NIL -> break
        :: else ->
            d_sp = SPOF(p_res);
#if MUT == 7
            d_mask = remote_slabs[d_sp];
            m_sp = d_sp; m_mask = d_mask; superpage_merge();
            m_k = 0;                                          /* (landing point) */
            d_step { remote_slabs[d_sp] = 0; queued[d_sp] = 0 }
#else
#if MUT != 4
            /* D1: atomic_store(&sp->queued, 0) (seq_cst) */
            d_step { assert(detected || owned[d_sp]); queued[d_sp] = 0; printf("O: D1 sp%d queued = 0\n", d_sp) }
#endif
            /* D2: mask = exchange(&sp->remote_slabs, 0) (seq_cst) */
            d_step {
                assert(detected || owned[d_sp]);
                d_mask = remote_slabs[d_sp]; remote_slabs[d_sp] = 0;
                printf("O: D2 sp%d mask %d\n", d_sp, d_mask)
            }
#if MUT == 4
            d_step { queued[d_sp] = 0; printf("O: D1 (late) sp%d queued = 0\n", d_sp) }
#endif
            m_sp = d_sp; m_mask = d_mask; superpage_merge();  /* merge */
#endif
            tr_sp = d_sp; tr_ret = RETAIN; superpage_try_release()  /* release */
        fi
    od;
    /* a producer stopped half-way hides what was queued after it: scan */
    if
    :: p_stall -> scan_remote()
    :: else -> skip
    fi;
    p_done = 0                          /* (a landing point: spin forbids a break into a d_step) */
}

/* slab_load_word(h, a_s, c): the slab's (only) local word into the cache */
#define LOAD_WORD(S) \
    cbits = lmap[S]; lmap[S] = 0; used[S] = used[S] + POPC(cbits); cslab = S

#if PURGE
/* slab_merge_remote(dn_s) outside superpage_merge (the merge of a reused
 * slab in alloc_from_slabs, heap_slab_freed_slow's, heap_purge_sparse's):
 * peek, exchange, overlap check; s->donated = 0. m_bits: the bins merged. */
inline slab_merge()
{
    d_step { m_bits = remote[dn_s]; dnt[dn_s] = 0 }           /* relaxed peek; (s->donated = 0) */
    if
    :: m_bits == 0 -> if :: phold[dn_s] != 0 && o_op == OP_ALLOC -> REACH(15) :: else -> skip fi
    :: else ->
        d_step {                                              /* bits = exchange(&remote[w], 0) (acquire) */
            if :: (remote[dn_s] & m_bits) != m_bits -> REACH(12) :: else -> skip fi;
            m_bits = remote[dn_s]; remote[dn_s] = 0;
            printf("O: merge slab%d: remote bits %d, local %d\n", dn_s, m_bits, lmap[dn_s]);
            /* free_here = local[w] | (the cached word's bins) */
            if :: m_bits & (lmap[dn_s] | (cslab == dn_s -> cbits : 0)) -> DETECT() :: else -> skip fi;
            assert(detected || DF || (m_bits & phold[dn_s]) == 0);
            lmap[dn_s] = lmap[dn_s] | m_bits;
            used[dn_s] = used[dn_s] - POPC(m_bits)
        }
    fi
}

/* heap_purge_sparse(h, now, min_age): every marked slab (the age is a
 * heuristic: any mark, any time) loses its mark; a PARTIAL one is merged
 * (slab_after_free if bins came back, may_release false). The decommit of
 * its local free pages is not modelled (the owner's own pages). */
inline purge_sparse()
{
    dn_i = 0;
    do
    :: dn_i == NS -> break
    :: else ->
        if
        :: owned[SPOFSLAB(dn_i)] && (sparse[SPOFSLAB(dn_i)] & SLBIT(dn_i)) ->
            d_step {                                          /* fetch_and(&sp->sparse_slabs, ~m) (relaxed) */
                sparse[SPOFSLAB(dn_i)] = sparse[SPOFSLAB(dn_i)] & ~SLBIT(dn_i);
                dn_s = dn_i; m_before = used[dn_i];
                printf("O: own purge of sparse slab%d\n", dn_i)
            }
            if
            :: state[dn_s] == ST_PARTIAL ->
                slab_merge();
                if
                :: m_bits != 0 ->
                    d_step { saf_s = dn_s; saf_u = used[dn_s]; saf_wf = 0; saf_mr = 0 }
                    slab_after_free()
                :: else -> skip
                fi
            :: else -> skip                                   /* active, full or FREE since */
            fi
        :: else -> skip
        fi;
        dn_i++
    od;
    dn_i = 0
}
#endif

/* heap_collect(h, c_full) after its heap_drain_remote (the owner's loop
 * drains first). The superpage list order is the heap's business
 * (superpages with free slabs first): the model walks it from either end. */
inline heap_collect_rest()
{
    scan_remote();
    /* full: slab_unload_word for the active slab; back to FREE if empty */
    if
    :: c_full && actv != NONE ->
        d_step {
            lmap[actv] = lmap[actv] | cbits;
            used[actv] = used[actv] - POPC(cbits);
            cbits = 0;
            cslab = NONE
        }
        if
        :: used[actv] == 0 ->
#if PURGE && FIX_COLLECT
            /* (the fix) only through slab_empty_but_held */
            saf_s = actv; slab_empty_but_held();
            if
            :: e_v != 0 -> d_step { state[actv] = ST_PARTIAL; actv = NONE; e_v = 0 }  /* partial_push */
            :: else ->
                d_step { rs_s = actv; actv = NONE; state[rs_s] = ST_NONE; saf_mr = 1 }
                heap_return_slabs()
            fi
#else
            /* (no slab_empty_but_held here: the code's heap_collect) */
            d_step { rs_s = actv; actv = NONE; state[rs_s] = ST_NONE; saf_mr = 1 }
            heap_return_slabs()
#endif
        :: else -> skip
        fi
    :: else -> skip
    fi;
    /* superpage_try_release over the list, retain 0 if full */
    c_i = 0;
    do
    :: c_i == NSP -> break
    :: else ->
        c_sp = (c_start + c_i) % NSP;
        if
        :: owned[c_sp] -> tr_sp = c_sp; tr_ret = (c_full -> 0 : RETAIN); superpage_try_release()
        :: else -> skip
        fi;
        c_i++
    od;
    c_i = 0                             /* (landing point, as above) */
#if PURGE
    ;
    /* full and h->sparse_pending: heap_purge_sparse(h, now, 0), after the
     * releases (as in the code) */
    if
    :: c_full -> purge_sparse()
    :: else -> skip
    fi
#endif
}

#if PURGE
/* The donation (slab_donate, from slab_went_sparse when the owner's frees
 * bring a PARTIAL slab down to a trigger level; the model: any time):
 * old = fetch_or(remote, local) (old & local is a double free), clear the
 * local word, count the bins in used and in s->donated; then the sparse mark
 * (written by the owner only, read by no modelled step of P: folded into the
 * same step). The slab stays on its PARTIAL list. */
inline donate()
{
    d_step {                                                  /* old = fetch_or(&remote[w], local[w]) (release) */
        k_bits = remote[dn_s];
        remote[dn_s] = k_bits | lmap[dn_s];
        printf("O: donate slab%d: remote |= local %d (old %d)\n", dn_s, lmap[dn_s], k_bits);
        if :: k_bits & lmap[dn_s] -> DETECT() :: else -> skip fi;
        dnt[dn_s] = dnt[dn_s] + POPC(lmap[dn_s]);             /* s->donated += n */
#if MUT != 16
        used[dn_s] = used[dn_s] + POPC(lmap[dn_s]);
        lmap[dn_s] = 0;                                       /* local[w] = 0 */
#endif
        /* slab_went_sparse: fetch_or(&sp->sparse_slabs, bit) (relaxed) */
        sparse[SPOFSLAB(dn_s)] = sparse[SPOFSLAB(dn_s)] | SLBIT(dn_s)
    }
}

/* slab_load_word(a_s): the "twice" peek at the remote word (seq_cst), then
 * slab_purger_holds (seq_cst load of purgers): a Dekker pair with P0 then
 * P1. a_ok: the word was loaded; a_ref: refused (a purger is between P0 and
 * P8 on the slab). */
inline load_word()
{
#if FIX_GEN == 1
    /* (the fix) v = load(&s->purgers); no purger may be there */
#if MUT != 19
    d_step { a_v = purgers[a_s]; a_g = pgen[a_s] }
#endif
#elif MUT == 20
    d_step { a_v = purgers[a_s] }                             /* (broken) purgers read before the peek */
#endif
    d_step {                                                  /* twice = local[w] & load(&remote[w]) */
        a_t = lmap[a_s] & remote[a_s];
        if
        :: a_t != 0 ->
            if :: !detected && dfheld -> REACH(22) :: else -> skip fi;
            printf("O: refill slab%d: bins %d free in both maps\n", a_s, a_t); DETECT()
        :: else -> skip
        fi;
        a_t = 0;
        gpeek[a_s] = lmap[a_s]                                /* ghost: the owner's last look at them */
    }
#if FIX_GEN == 1
    /* (the fix) and the same value after the peek: no purger came and went */
#if MUT != 19 && MUT != 20
    d_step { a_v = a_v | (purgers[a_s] != 0) | (pgen[a_s] != a_g); a_g = 0 }
#endif
#elif MUT != 19 && MUT != 20
    d_step { a_v = purgers[a_s] }                             /* slab_purger_holds(s) */
#endif
#if FIX_GEN == 2
    /* (a weaker fix, for comparison) the peek again after purgers */
    if
    :: a_v == 0 ->
        d_step {
            a_t = lmap[a_s] & remote[a_s];
            if :: a_t != 0 -> printf("O: refill slab%d: bins %d free in both maps (second peek)\n", a_s, a_t); DETECT() :: else -> skip fi;
            a_t = 0
        }
    :: else -> skip
    fi;
#endif
    if
    :: a_v != 0 ->
        d_step {
            if :: phold[a_s] != 0 -> REACH(20) :: else -> skip fi;   /* (witness: while P holds bins) */
            printf("O: refill slab%d refused: purgers %d\n", a_s, a_v); a_ok = 0; a_ref = 1; a_v = 0; a_g = 0; gpeek[a_s] = 0
        }
    :: else -> d_step { LOAD_WORD(a_s); a_ok = 1; a_g = 0; gpeek[a_s] = 0 }
    fi
}

/* slab_activate(a_s) (state, active, its sparse mark cleared), then
 * slab_load_word; refused: set aside (STATE_NONE), pushed back later */
inline activate_load()
{
    d_step {
        state[a_s] = ST_ACTIVE; actv = a_s;
        sparse[SPOFSLAB(a_s)] = sparse[SPOFSLAB(a_s)] & ~SLBIT(a_s)  /* fetch_and (relaxed), owner-only */
    }
    load_word();
    if
    :: a_ok -> skip
    :: else -> d_step { actv = NONE; state[a_s] = ST_NONE; a_aside = a_aside | (1 << a_s) }
    fi
}
#endif

/* alloc_class and heap_alloc_slow (after its heap_drain_remote, which the
 * owner's loop does when the cached word is empty), for the one size class
 * modelled */
inline alloc_rest()
{
#if PURGE
    /* alloc_from_slabs as in the code: the active slab, then the partial
     * list (a slab with donated bins or an empty local map is merged first),
     * then a FREE slab configured again; a slab whose refill is refused is
     * set aside and goes back on the partial list at the end */
    if
    :: cbits != 0 -> skip                                     /* fast path: the cached word has a bin */
    :: else ->
        if
        :: actv != NONE && lmap[actv] != 0 ->                 /* s->summary != 0 */
            a_s = actv; load_word();
            if
            :: a_ok -> skip
            :: else -> d_step { cslab = NONE; state[actv] = ST_PARTIAL; actv = NONE }  /* unload; active = NULL; partial_push */
            fi
        :: actv != NONE && lmap[actv] == 0 ->                 /* unload (empty cache); FULL; off the lists */
            d_step { cslab = NONE; state[actv] = ST_FULL; actv = NONE }
        :: actv == NONE -> skip
        fi;
        do
        :: a_ok -> break
        :: else ->
            d_step {                                          /* s = h->partial[cls] */
                a_s = NONE;
                for (a_i : 0 .. NS - 1) {
                    if
                    :: a_s == NONE && state[a_i] == ST_PARTIAL -> a_s = a_i
                    :: else -> skip
                    fi
                }
                a_i = 0
            }
            if
            :: a_s != NONE ->                                 /* partial_unlink */
                if
#if MUT == 25
                :: lmap[a_s] == 0 -> dn_s = a_s; slab_merge()
#else
                :: lmap[a_s] == 0 || dnt[a_s] != 0 -> dn_s = a_s; slab_merge()  /* donated bins are ours again */
#endif
                :: else -> skip
                fi;
                if
                :: lmap[a_s] == 0 -> state[a_s] = ST_FULL      /* FULL; continue */
                :: else -> activate_load()
                fi
            :: else ->                                        /* superpage_take_slabs(h, 1, 1) */
                d_step {
                    for (a_i : 0 .. NS - 1) {
                        if
                        :: a_s == NONE && owned[SPOFSLAB(a_i)] && kind[a_i] == FREE -> a_s = a_i
                        :: else -> skip
                        fi
                    }
                    a_i = 0
                }
                if
                :: a_s == NONE -> break                       /* ENOMEM (the heap would map a superpage: not modelled) */
                :: else ->
                    /* slab_configure_small */
                    ck_s = a_s; slab_check_no_remote();       /* a late double free of its previous life */
                    d_step {
                        if
                        :: free_mask[SPOFSLAB(a_s)] == FULLMASK -> n_empty--
                        :: else -> skip
                        fi;
                        free_mask[SPOFSLAB(a_s)] = free_mask[SPOFSLAB(a_s)] & ~SLBIT(a_s);
                        kind[a_s] = SMALL;
                        lmap[a_s] = ALLBINS;
                        used[a_s] = 0;
                        dnt[a_s] = 0;
                        life[a_s]++;                          /* ghost: a new configuration */
                        sheap[a_s] = 1;                       /* s->heap = h (relaxed) */
                        printf("O: slab%d configured again (life %d)\n", a_s, life[a_s]);
                        if :: inflight[SPOFSLAB(a_s)] != 0 -> REACH(8) :: else -> skip fi
                    }
                    activate_load()
                fi
            fi
        od;
        a_i = 0;                                              /* (landing point for the breaks) */
        d_step {                                              /* the slabs set aside: partial_push */
            for (a_i : 0 .. NS - 1) {
                if
                :: (a_aside >> a_i) & 1 -> state[a_i] = ST_PARTIAL
                :: else -> skip
                fi
            }
            a_i = 0; a_aside = 0;
            /* refused and nothing allocated here: the allocation is served
             * elsewhere (not modelled); the owner may allocate again later */
            if :: !a_ok && a_ref -> allocs-- :: else -> skip fi;
            a_ok = 0; a_ref = 0
        }
    fi;
#else
    if
    :: cbits != 0 -> skip                                     /* fast path: the cached word has a bin */
    :: else ->
        d_step {
            if
            :: actv != NONE && lmap[actv] != 0 -> LOAD_WORD(actv)  /* s->summary != 0 */
            :: else ->
                if
                :: actv != NONE ->                            /* unload (empty cache); FULL; off the lists */
                    cslab = NONE; state[actv] = ST_FULL; actv = NONE
                :: else -> skip
                fi;
                a_s = NONE;
                /* s = h->partial[cls]; partial_unlink */
                for (a_i : 0 .. NS - 1) {
                    if
                    :: a_s == NONE && state[a_i] == ST_PARTIAL -> a_s = a_i
                    :: else -> skip
                    fi
                }
                /* else superpage_take_slabs(h, 1, 1) + slab_configure_small */
                for (a_i : 0 .. NS - 1) {
                    if
                    :: a_s == NONE && owned[SPOFSLAB(a_i)] && kind[a_i] == FREE ->
                        a_s = a_i;
                        if
                        :: free_mask[SPOFSLAB(a_i)] == FULLMASK -> n_empty--
                        :: else -> skip
                        fi;
                        free_mask[SPOFSLAB(a_i)] = free_mask[SPOFSLAB(a_i)] & ~SLBIT(a_i);
                        kind[a_i] = SMALL;
                        lmap[a_i] = ALLBINS;
                        used[a_i] = 0;
                        sheap[a_i] = 1;                       /* s->heap = h (relaxed) */
                        if :: inflight[SPOFSLAB(a_i)] != 0 -> REACH(8) :: else -> skip fi
                    :: else -> skip
                    fi
                }
                /* none: the heap would take an orphan or map a superpage (not modelled) */
                if
                :: a_s != NONE -> state[a_s] = ST_ACTIVE; actv = a_s; LOAD_WORD(a_s)
                :: else -> skip                               /* ENOMEM */
                fi
            fi
        }
    fi;
#endif
    if
    :: cbits != 0 ->                                          /* cache_pop */
        d_step {
            a_i = LOWBIT(cbits);
            cbits = cbits & ~a_i;
#if PURGE
            assert(detected || (phold[cslab] & a_i) == 0);   /* (e) never hand out a bin the purger holds */
            assert(detected || (glive[cslab] & a_i) == 0);   /* (e) never hand out a live bin */
            /* (d) a bin freed twice whose double free met the purger is not
             * handed out before the double free is reported */
            assert(detected || !(dfheld && (gdup[cslab] & a_i)));
            glive[cslab] = glive[cslab] | a_i;
#endif
            oheld[cslab] = oheld[cslab] | a_i;
            ofree[cslab] = ofree[cslab] | a_i;                /* it may free it again */
            printf("O: alloc slab%d bin%d\n", cslab, BINOF(a_i))
        };
        if
        :: FB_S == NONE && handoff == 0 ->                    /* the user hands the block to B */
            d_step {
                oheld[cslab] = oheld[cslab] & ~a_i;
                ofree[cslab] = ofree[cslab] & ~a_i;
                handoff = cslab * NB + BINOF(a_i) + 1
            }
        :: else -> skip
        fi
    :: else -> skip
    fi
}

/* bitslab_free(p) by the owner, block (f_s, f_b). With the purger (SCEN
 * 11) the owner may free a block of a slab that has gone FREE meanwhile (a
 * double free): s->heap is NULL, free_slow reports an invalid free. */
#if PURGE
#define SHEAP_OK(S) sheap[S] &&
#else
#define SHEAP_OK(S)
#endif
inline local_free()
{
    d_step {
        oheld[f_s] = oheld[f_s] & ~(1 << f_b);
        printf("O: local free slab%d bin%d\n", f_s, f_b);
#if PURGE
        if :: !(glive[f_s] & (1 << f_b)) -> gdup[f_s] = gdup[f_s] | (1 << f_b) :: else -> skip fi;
        glive[f_s] = glive[f_s] & ~(1 << f_b);
        if :: phold[f_s] & (1 << f_b) -> dfheld = 1 :: else -> skip fi;
#endif
        if :: DF && f_s == DF_S && f_b == DF_B -> dup_frees++ :: else -> skip fi;
        /* taken = local[w] | relaxed peek at remote[w] */
        f_t = lmap[f_s] | remote[f_s];
        if
#if PURGE
        :: !sheap[f_s] ->                                     /* s->heap != h: free_slow, invalid free */
            printf("O: free into a FREE slab: invalid free\n"); DETECT(); f_done = 1
#endif
        :: SHEAP_OK(f_s) cslab == f_s ->                                    /* s->cached == w: back into the cache */
            if :: (f_t | cbits) & (1 << f_b) -> DETECT() :: else -> skip fi;
            cbits = cbits | (1 << f_b);
            f_done = 1                                        /* `taken` does not change */
        :: SHEAP_OK(f_s) cslab != f_s ->
            if :: f_t & (1 << f_b) -> DETECT() :: else -> skip fi;
            lmap[f_s] = lmap[f_s] | (1 << f_b);
            used[f_s]--;
#if PURGE
            /* witness 18: the owner frees its last block of the slab while
             * the purger, before P4 (no freer inside), holds the rest */
            if :: phold[f_s] != 0 && used[f_s] == POPC(phold[f_s]) && inflight[SPOFSLAB(f_s)] == 0 -> REACH(18) :: else -> skip fi;
#endif
            saf_s = f_s;
            saf_u = used[f_s];
            saf_wf = (saf_u + 1 == NB);
            saf_mr = 1                                        /* heap_slab_freed_slow: may release */
        fi
    }
#if PURGE && MUT != 24
    /* heap_slab_freed_slow: every live bin of a slab that donated its free
     * bins is gone (used == s->donated): take them back (those P holds come
     * back with a notification), so that the slab can empty */
    if
    :: !f_done && dnt[f_s] != 0 && used[f_s] == dnt[f_s] ->
        dn_s = f_s; slab_merge();
        d_step { saf_u = used[f_s]; saf_wf = (saf_u + 1 == NB) }
    :: else -> skip
    fi;
#endif
    if
    :: f_done -> skip
    :: else -> slab_after_free()                              /* (used - 1u >= nbins - 2u) */
    fi
}

/* Temporaries are dead between owner operations: zero them, so that stale
 * values do not split otherwise equal states. */
#define RESET_TEMPS() \
    p_tail = 0; p_next = 0; p_head = 0; p_prev = 0; p_res = 0; p_st = 0; p_done = 0; p_stall = 0; \
    d_sp = 0; d_mask = 0; m_sp = 0; m_mask = 0; m_k = 0; m_s = 0; m_bits = 0; m_before = 0; \
    saf_s = 0; saf_u = 0; saf_wf = 0; saf_mr = 0; rs_s = 0; rs_sp = 0; ck_s = 0; k_bits = 0; \
    tr_sp = 0; tr_ret = 0; tr_v = 0; t_i = 0; c_i = 0; c_sp = 0; c_m = 0; c_start = 0; c_full = 0; \
    a_s = 0; a_i = 0; f_s = 0; f_b = 0; f_t = 0; f_done = 0; o_op = 0 PURGE_TEMPS
#if PURGE
#define PURGE_TEMPS ; dn_s = 0; dn_i = 0; a_t = 0; a_v = 0; a_g = 0; a_ok = 0; a_ref = 0; a_aside = 0; e_v = 0; e_g = 0
#else
#define PURGE_TEMPS
#endif

#if PURGE
#if AFIRST
#define AFOK(S, B) (afstep >= AFIRST || ((S) == DF_S && (B) == DF_B))   /* SCEN 11, 12: after A's F1 / F2 */
#else
#define AFOK(S, B) 1
#endif
#else
#define AFOK(S, B) 1
#endif
/* In the purger's double-free scenarios the owner allocates only once every
 * freer has passed F2: a second free that lands after the owner's refill
 * has looked at the bin (its peek) is not caught, with or without a purger
 * (docs/purger.md, "Double frees"), and is not what these scenarios check. */
#if PURGE && DF && MAXALLOC > 0
#define ALLOC_OK (nf2 == NFREE)
#else
#define ALLOC_OK 1
#endif
#define OWNER_FREE(S, B) \
    :: (S) < NS && (ofree[S] >> (B)) & 1 && (oheld[S] >> (B)) & 1 && AFOK(S, B) -> \
        d_step { ofree[S] = ofree[S] & ~(1 << (B)); f_s = S; f_b = B; o_op = OP_FREE }

/* a PARTIAL slab with local free bins and used != 0 (heap_slab_freed_slow
 * donates at a sparse level, never when the slab is empty) */
#define DONATABLE(S) (state[S] == ST_PARTIAL && lmap[S] != 0 && used[S] != 0)

proctype owner()
{
    /* owner-only state: plain fields in the C code */
    byte q_tail = STUB;                 /* heap_t.q_tail */
    byte lmap[NS];                      /* the slab's local bitmap word */
    byte used[NS];                      /* slab_t.taken (named `used` before): bins not in the local map */
    byte kind[NS];                      /* slab_t.kind (the owner's view) */
    byte state[NS];                     /* slab_t.state */
    byte free_mask[NSP];                /* superpage_t.free_mask, modelled slabs */
    bit owned[NSP];                     /* on h->superpages */
    byte n_empty = NEMPTY_OTHERS;       /* heap_t.nempty */
    byte actv = NONE;                   /* heap_t.active[cls] */
    byte oheld[NS];                     /* ghost: bins the owner holds live */
    byte ofree[NS];                     /* scenario: bins the owner may still free */
    byte allocs;
#if !PURGE
    byte cbits;                         /* heap_t.cache[cls].bits */
    byte cslab = NONE;                  /* the slab s with s->cached != NO_WORD */
#endif
    /* temporaries of the inlined functions */
    byte p_tail, p_next, p_head, p_prev, p_res, p_st;
    bit p_done, p_stall;
    byte d_sp, d_mask;
    byte m_sp, m_mask, m_k, m_s, m_bits, m_before;
    byte saf_s, saf_u;
    bit saf_wf, saf_mr;
    byte rs_s, rs_sp, ck_s, k_bits;
    byte tr_sp, tr_ret, tr_v, t_i;
    byte c_i, c_sp, c_m, c_start;
    bit c_full;
    byte a_s, a_i;
    byte f_s, f_b, f_t;
    bit f_done;
    byte o_op;                          /* the operation of this round */
#if PURGE
    byte dnt[NS];                       /* slab_t.donated: bins donated since the last merge */
    byte ndon;                          /* donations made */
    byte dn_s, dn_i;
    byte a_t, a_v, a_g, a_aside, e_v, e_g;
    bit a_ok, a_ref;
#endif

    /* The start: every modelled slab is SMALL, FULL or PARTIAL (or active,
     * its word in the cache); the freers' and the owner's blocks are live,
     * the other bins free. */
    d_step {
        for (t_i : 0 .. NS - 1) {
            kind[t_i] = SMALL;
            oheld[t_i] = (t_i == 0 -> OWN_0 : OWN_1);
            ofree[t_i] = (t_i == 0 -> OFREE_0 : OFREE_1);
            lmap[t_i] = ALLBINS & ~oheld[t_i];
            if
            :: FA_S == t_i -> lmap[t_i] = lmap[t_i] & ~(1 << FA_B)
            :: else -> skip
            fi;
            if
            :: FB_S == t_i -> lmap[t_i] = lmap[t_i] & ~(1 << FB_B)
            :: else -> skip
            fi;
            used[t_i] = NB - POPC(lmap[t_i]);
            state[t_i] = (lmap[t_i] == 0 -> ST_FULL : ST_PARTIAL)
        }
        for (t_i : 0 .. NSP - 1) { owned[t_i] = 1; free_mask[t_i] = 0 }
        if
        :: INIT_ACTIVE != NONE ->
            assert(lmap[INIT_ACTIVE] == 0);   /* its word was loaded and used up */
            actv = INIT_ACTIVE; state[actv] = ST_ACTIVE; cslab = actv; cbits = 0
        :: else -> skip
        fi;
        t_i = 0
    }

    /* One operation per round; every function is expanded once, below. The
     * round after the freers are done is the final collect (thread exit or
     * bitslab_collect), after which the checks run. */
    do
    :: if
        :: nfin == NFREERS && (!DF || (ofree[0] | ofree[NS - 1]) == 0) ->
            /* witness 10: every free is done and nothing is queued, yet the
             * heap holds an empty superpage beyond its retention (a release
             * deferred by `inflight` that nothing retries before a collect) */
            d_step {
                for (t_i : 0 .. NSP - 1) {
                    if
                    :: owned[t_i] && free_mask[t_i] == FULLMASK && n_empty > RETAIN &&
                       in_queue[t_i] == 0 && queued[t_i] == 0 && remote_slabs[t_i] == 0 -> REACH(10)
                    :: else -> skip
                    fi
                }
#if PURGE && STRAND
                /* every donated bin still in a remote word is announced or
                 * marked sparse: some purger pass will look at it */
                for (t_i : 0 .. NS - 1) {
                    assert(remote[t_i] == 0 || (remote_slabs[SPOFSLAB(t_i)] & SLBIT(t_i)) ||
                           (sparse[SPOFSLAB(t_i)] & SLBIT(t_i)))
                }
#endif
                t_i = 0
            };
            o_op = OP_FINAL; c_full = 1
        :: else ->
            if
            :: o_op = OP_DRAIN                                /* heap_alloc_slow, wide_alloc */
            :: o_op = OP_COLLECT; c_full = 0
            :: o_op = OP_COLLECT; c_full = 1                  /* bitslab_collect */
            :: allocs < MAXALLOC && ALLOC_OK -> o_op = OP_ALLOC; allocs++
            OWNER_FREE(0, 0)
            OWNER_FREE(0, 1)
            OWNER_FREE(0, 2)
            OWNER_FREE(1, 0)
            OWNER_FREE(1, 1)
#if PURGE
            :: ndon < MAXDONATE && DONATABLE(0) -> o_op = OP_DONATE; dn_s = 0; ndon++
            :: NS > 1 && ndon < MAXDONATE && DONATABLE(NS - 1) -> o_op = OP_DONATE; dn_s = NS - 1; ndon++
            /* heap_purge's heap_purge_sparse (a slow path; the age is a heuristic) */
            :: MAXDONATE > 0 && (sparse[0] | sparse[NSP - 1]) != 0 -> o_op = OP_PURGE
#endif
            fi
        fi;
        if
        :: o_op == OP_FREE -> local_free()
#if PURGE
        :: o_op == OP_DONATE -> donate()
#endif
        :: o_op == OP_ALLOC && cbits != 0 -> skip             /* the fast path does not drain */
        :: else -> heap_drain_remote()
        fi;
        if
#if PURGE
        :: o_op == OP_COLLECT || o_op == OP_FINAL -> heap_collect_rest()
        :: o_op == OP_PURGE -> purge_sparse()
#else
        :: o_op == OP_COLLECT || o_op == OP_FINAL -> heap_collect_rest()
#endif
        :: o_op == OP_ALLOC -> alloc_rest()
        :: else -> skip
        fi;
        if
        :: o_op == OP_FINAL -> break
        :: else -> d_step { RESET_TEMPS() }
        fi
    od;
    t_i = 0;                            /* (landing point for the break) */

#if DF
#if DF_ALLOC
    assert(!dfheld || detected);        /* (d) a double free that met the purger was reported */
#else
    assert(detected);                   /* (d) the double free was reported */
#endif
#if PURGE && DF_AT_P5
    assert(!dfheld || det_p5);          /* ... and at P5 (docs/purger.md) */
#endif
#else
    d_step {
        /* (a) no lost free, no phantom free: a bin is free exactly when nobody
         * holds it, and nothing is left pending anywhere */
        assert(q_head == STUB && q_tail == STUB && qnext[STUB] == NIL);
        assert(cbits == 0 && cslab == NONE);
        for (t_i : 0 .. NSP - 1) {
            assert(inflight[t_i] == 0 && remote_slabs[t_i] == 0 && queued[t_i] == 0 && in_queue[t_i] == 0);
            /* a full collect hands on every empty superpage */
            assert(!owned[t_i] || free_mask[t_i] != FULLMASK);
            assert(owned[t_i] != released[t_i])
        }
        for (t_i : 0 .. NS - 1) {
            assert(remote[t_i] == 0);
#if PURGE
            assert(phold[t_i] == 0 && purgers[t_i] == 0);
            assert(glive[t_i] == oheld[t_i]);                  /* ghost check: the live blocks are the owner's */
#endif
            if
            :: kind[t_i] == SMALL ->
                assert(sheap[t_i]);
                assert(lmap[t_i] == (ALLBINS & ~oheld[t_i]));
                assert(used[t_i] == POPC(oheld[t_i]))
            :: else ->
                assert(!sheap[t_i] && oheld[t_i] == 0 && lmap[t_i] == 0)
            fi
        }
    }
#endif
}

#if PURGE
/* ---- the purger: purger_pass + purger_take_and_purge (src/purger.c) -------
 * NPASS passes; each takes one slab. Which slabs a pass looks at (the
 * remote_slabs of a superpage queued longer than the delay, and the sparse
 * marks) and the delay are heuristics that safety must not depend on: the
 * model lets a pass take any slab at any time. P does not write the sparse
 * marks (the owner clears them). P3's decommit is an assertion that no bin
 * on a decommitted page is live (the pages' contents are lost); purged_pages
 * is not modelled (it only makes P skip pages). Order: P0, P1, (P2, P3), P4,
 * P5, P8, P6, P7; P8 right after P1 when it took nothing. */
#define PAGEOK(PG, H) (((PG) & (H)) == (PG))   /* every bin overlapping the page is held */

proctype purger()
{
    byte s, sp, held, old, was, prv, dec, pass, plife;
#if MUT == 23
    bit pk;
#endif

    do
    :: pass == NPASS -> break
    :: else ->
        if
        :: s = 0
        :: NS > 1 -> s = NS - 1
        fi;
        sp = SPOFSLAB(s);
#if MUT == 23
        pk = (sparse[sp] >> (s % NSL)) & 1;                   /* (broken) the mark as the pass found it */
#endif
        /* P0: fetch_add(&s->purgers, 1) (seq_cst) */
        d_step {
            purgers[s]++;
#if FIX_GEN == 1
            pgen[s]++;                                        /* fetch_add(&s->purgers, 1 + GEN) */
#endif
            printf("P: P0 purgers[slab%d]++ -> %d\n", s, purgers[s])
        }

        /* P1: held = exchange(&remote[w], 0) (acquire) after a relaxed peek */
#if MUT == 17
        held = owner[1]:lmap[s];                              /* (broken) the owner's local map */
        d_step { phold[s] = held; pin[sp] = (held != 0); plife = life[s]; printf("P: P1 (broken) slab%d takes local %d\n", s, held) }
#else
        held = remote[s];                                     /* relaxed peek */
        if
        :: held != 0 ->
            d_step {
                if :: (remote[s] & held) != held -> REACH(13) :: else -> skip fi;
                held = remote[s];
#if MUT != 14
                remote[s] = 0;
#endif
                assert(detected || held == 0 || !released[sp]);
                phold[s] = held;
                pin[sp] = (held != 0);
                plife = life[s];
                if :: held & gdup[s] -> dfheld = 1 :: else -> skip fi;   /* a stale bit (a bin freed twice) */
                printf("P: P1 slab%d takes %d\n", s, held)
            }
        :: else -> skip
        fi;
#endif
        if
        :: held == 0 ->                                       /* P2: nothing taken: P8 and stop */
            d_step { purgers[s]--; printf("P: P8 purgers[slab%d]-- (nothing taken)\n", s) }
        :: else ->
            /* P2: read the slab's configuration (fixed while P holds bins).
             * P3: madvise(MADV_DONTNEED) the pages all of whose bins are held */
            d_step {
                assert(detected || !released[sp]);
                /* (g) one configuration: the one the held bits were set in */
                assert(detected || (sheap[s] && life[s] == plife));
                dec = 0;
#if MUT == 15
                if :: PG0 & held -> dec = dec | PG0 :: else -> skip fi;   /* (broken) any held bin */
                if :: PG1 & held -> dec = dec | PG1 :: else -> skip fi;
#else
                if :: PAGEOK(PG0, held) -> dec = dec | PG0 :: else -> skip fi;
                if :: PAGEOK(PG1, held) -> dec = dec | PG1 :: else -> skip fi;
#endif
                /* (e) no live block on a decommitted page */
                assert(detected || (dec & glive[s]) == 0);
                if :: dec != 0 -> REACH(16); printf("P: P3 slab%d decommits bins %d\n", s, dec) :: else -> skip fi
            }
#if MUT != 11 && MUT != 12
            /* P4: F1, inflight += 1 */
            d_step { assert(detected || !released[sp]); inflight[sp]++; printf("P: P4 inflight[sp%d]++ -> %d\n", sp, inflight[sp]) }
#endif
#if MUT == 21
            d_step { purgers[s]--; printf("P: P8 (early) purgers[slab%d]--\n", s) }
#endif
            /* P5: old = fetch_or(&remote[w], held) (release) */
            d_step {
                assert(detected || !released[sp]);
                assert(detected || life[s] == plife);         /* (g) back into the configuration they came from */
                old = remote[s]; remote[s] = old | held;
                phold[s] = 0;
                printf("P: P5 remote[slab%d] |= %d (old %d)\n", s, held, old)
            }
            if
            :: old & held && MUT != 18 ->                     /* "double free" with the block's address */
                printf("P: P5 finds a double free\n"); REACH(17);
                det_p5 = 1;
                DETECT();
                goto done
            :: else -> skip
            fi;
#if MUT == 11
            d_step { assert(detected || !released[sp]); inflight[sp]++; printf("P: P4 (late) inflight[sp%d]++ -> %d\n", sp, inflight[sp]) }
#endif
#if MUT != 21
            /* P8: fetch_sub(&s->purgers, 1) (release) */
            d_step { purgers[s]--; printf("P: P8 purgers[slab%d]-- -> %d\n", s, purgers[s]) }
#endif
#if MUT != 13
            /* P6: F3, F4 and the push */
            remote_notify();
#endif
            /* P7: F5, inflight -= 1 (release) */
#if MUT != 12
            d_step {
                assert(detected || !released[sp]);
                inflight[sp]--;
                pin[sp] = 0;
                printf("P: P7 inflight[sp%d]-- -> %d\n", sp, inflight[sp])
            }
#else
            pin[sp] = 0;
#endif
        fi;
#if MUT == 23
        /* (broken) after the pass: clear the mark it found (atomic and) */
        if
        :: pk -> d_step { sparse[sp] = sparse[sp] & ~SLBIT(s); printf("P: sparse[sp%d] &= ~slab%d\n", sp, s) }
        :: else -> skip
        fi;
#endif
        pass++
    od;
done:
    nfin++
}
#endif

#if DF
/* (d) as a liveness property: in every weakly fair run in which the block has
 * been freed twice, the double free is eventually reported, also in runs
 * where the owner never leaves its loop. (A run in which the owner never
 * makes its free holds no double free.) run-model.sh --liveness. */
ltl detect { [] (dup_frees == 2 -> <> detected) }
#endif

init
{
    byte i;
    atomic {
        for (i : 0 .. NSP) { qnext[i] = NIL }
        for (i : 0 .. NS - 1) { sheap[i] = 1 }       /* every modelled slab is configured */
#if PURGE
        for (i : 0 .. NS - 1) {
            glive[i] = (i == 0 -> OWN_0 : OWN_1) | (FA_S == i -> 1 << FA_B : 0) | (FB_S == i -> 1 << FB_B : 0)
        }
#endif
        run owner();
#if NFREE > 0
        run freer(FA_S, FA_B);
#endif
#if NFREE > 1
        run freer(FB_S, FB_B);
#endif
#if PURGE
        run purger();
#endif
        skip
    }
}
