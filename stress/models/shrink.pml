/*
 * shrink.pml: unmapping an orphan's address space while other threads walk
 * the superpage registry (src/superpage.c: orphan_shrink,
 * orphan_regrow, orphanage_walk_begin/_end, orphanage_walkable;
 * docs/orphanage.md). The walkers are the statistics, the heap map and the
 * purger: they read superpages they found in the registry past their first
 * pages. The shrinker owns the orphan (it popped it, or is about to push it)
 * and never waits.
 *
 *   walker:   W1 walkers += 1; for each superpage: W2 read shrunk; if 0, read
 *             its pages (several steps); walkers -= 1
 *   shrinker: S1 shrunk = 1; S2 read walkers; if 0, unmap; else shrunk = 0
 *   regrow:   map again, then shrunk = 0
 *
 * All seq_cst in the C code; Spin explores sequentially consistent
 * interleavings. The property: a walker never reads an unmapped page.
 *
 * Configuration: NW walkers (<= 2), ROUNDS shrink/regrow rounds of the
 * owner of superpage 0 (superpage 1 is never shrunk: the walk goes on past
 * the shrunk one), MUT=n a deliberately broken variant the check must
 * reject: 1 the shrinker does not look at the walkers (S2 missing); 2 the
 * walker reads `shrunk` before announcing itself (W2 before W1); 3 the
 * shrinker reads the walkers before marking (S2 before S1); 4 the regrow
 * clears `shrunk` before mapping. WITNESS=n must fail at REACH(n): 1 a
 * shrink saw a walker and left the superpage mapped; 2 a walker skipped a
 * shrunk superpage; 3 a walker read a superpage that had been shrunk and
 * mapped again.
 */

#ifndef NW
#define NW 2
#endif
#ifndef ROUNDS
#define ROUNDS 2
#endif
#ifndef MUT
#define MUT 0
#endif
#ifndef WITNESS
#define WITNESS 0
#endif
#define REACH(n) assert(WITNESS != (n))

#define NSP 2

byte walkers;         /* superpage.c: walkers */
bit shrunk[NSP];      /* superpage_t.shrunk */
bit mapped[NSP];      /* ghost: the pages past SHRINK_KEEP are mapped */
bit regrown;          /* ghost: superpage 0 was shrunk and mapped again */

inline read_pages(i)
{
    /* Two reads of the superpage's pages, with anything in between. */
    assert(mapped[i]);
    assert(mapped[i])
}

proctype walker()
{
    byte i;
#if MUT == 2
    /* W2 before W1 for the first superpage. */
    bit first = shrunk[0];
    walkers++;
    if
    :: first == 0 -> read_pages(0)
    :: else -> skip
    fi;
    i = 1;
#else
    walkers++; /* W1 */
    i = 0;
#endif
    do
    :: i < NSP ->
        if
        :: shrunk[i] == 0 -> /* W2 */
            if
            :: i == 0 && regrown -> REACH(3)
            :: else -> skip
            fi;
            read_pages(i)
        :: else -> REACH(2)
        fi;
        i++
    :: else -> break
    od;
    walkers--
}

proctype owner()
{
    byte r = 0;
    do
    :: r < ROUNDS ->
        /* orphan_shrink */
#if MUT == 3
        if
        :: walkers == 0 -> shrunk[0] = 1; mapped[0] = 0
        :: else -> skip
        fi;
#else
        shrunk[0] = 1; /* S1 */
#if MUT == 1
        mapped[0] = 0;
#else
        if
        :: walkers == 0 -> mapped[0] = 0 /* S2, then munmap */
        :: else -> REACH(1); shrunk[0] = 0
        fi;
#endif
#endif
        /* orphan_regrow, when the orphan is popped for use */
        if
        :: mapped[0] == 0 ->
#if MUT == 4
            shrunk[0] = 0;
            mapped[0] = 1;
#else
            mapped[0] = 1;
            shrunk[0] = 0;
#endif
            regrown = 1
        :: else -> skip
        fi;
        r++
    :: else -> break
    od
}

init
{
    mapped[0] = 1;
    mapped[1] = 1;
    atomic {
        byte k = 0;
        do
        :: k < NW -> run walker(); k++
        :: else -> break
        od;
        run owner()
    }
}
