/*
 * orphanage.pml: the versioned Treiber stack of src/lfstack.h (lfstack_push,
 * lfstack_pop: a head word of a handle and a version; docs/orphanage.md),
 * told as its first user, the orphanage of empty superpages (src/superpage.c;
 * handle = superpage address >> 21, bits = 26, a 38-bit version). Its other
 * user, the abandoned-heap pool (src/heap.c; handle = heap id, bits = 20, a
 * 44-bit version), runs the same code and is covered by the same model.
 * The parameters map to lfstack.h's: a superpage number 0..NSP-1 is a
 * handle (NIL, NSP in the model, stands for handle 0: the empty stack and
 * the end of a link), onext[] the entries' links, head_ptr the low `bits`
 * bits of the head, head_tag the version above them, and TAGBITS stands for
 * 64 - bits (the width of the version; the model keeps it small so that it
 * can wrap).
 *
 * NT threads each run OPS operations; an operation is a pop (the heap needs
 * a superpage: superpage_acquire) or a push of a superpage the thread holds
 * (superpage_try_release). Superpages are never unmapped, so a popper may
 * read orphan_next of a superpage that another thread popped (and perhaps
 * pushed again) meanwhile: the model lets it, and the read returns whatever
 * that superpage's link holds now.
 *
 * The head is (ptr, tag): tag is the version modulo 2^TAGBITS. TAGBITS=0 is
 * a stack without a version: the model must find the ABA interleaving.
 * Every atomic operation of the C code is one Promela step; Spin explores
 * sequentially consistent interleavings only (memory orders: see
 * docs/orphanage.md).
 *
 * Configuration (spin -D...): NSP superpages (<= 4), NT threads (<= 3),
 * OPS operations per thread, NINIT superpages in the orphanage at the start
 * (the rest are held by threads 0, 1, ... one each), TAGBITS, WEAK=1 lets
 * every CAS fail spuriously (compare_exchange_weak).
 */

#ifndef NSP
#define NSP 3
#endif
#ifndef NT
#define NT 3
#endif
#ifndef OPS
#define OPS 2
#endif
#ifndef NINIT
#define NINIT 3
#endif
#ifndef TAGBITS
#define TAGBITS 3
#endif
#ifndef WEAK
#define WEAK 0
#endif
/* REACH(n): with -DWITNESS=n the model must fail there, showing that the
 * window is reached: 1 a pop reads orphan_next of a superpage that is no
 * longer in the orphanage; 2 a pop's CAS fails although the head names the
 * same superpage as before (only the version differs: ABA averted). */
#ifndef WITNESS
#define WITNESS 0
#endif
#define REACH(n) assert(WITNESS != (n))

#define TAGMOD (1 << TAGBITS)
#define NIL NSP                         /* orphan_ptr() == NULL */
#define STACK 255                       /* ghost owner: in the orphanage */

/* ---- shared ---------------------------------------------------------------- */
byte head_ptr = NIL;                    /* orphanage_head, low 26 bits: superpage >> 21 */
byte head_tag;                          /* orphanage_head, high 38 bits: version */
byte onext[NSP];                        /* superpage_t.orphan_next */

/* ---- ghosts ---------------------------------------------------------------- */
byte owner_of[NSP];                     /* STACK, or the thread that holds it */
byte ndone;

/* The stack, walked from the head, is exactly the set of superpages whose
 * ghost owner is STACK: no cycle, no superpage twice, none owned by a
 * thread, none lost. Runs inside the d_step of each successful CAS. */
#define CHECK_STACK() \
    w_seen = 0; w_n = 0; w_p = head_ptr; \
    do \
    :: w_p == NIL -> break \
    :: else -> \
        assert(w_n < NSP);                          /* a cycle */ \
        assert(((w_seen >> w_p) & 1) == 0);         /* a superpage twice */ \
        assert(owner_of[w_p] == STACK);             /* a superpage a thread holds */ \
        w_seen = w_seen | (1 << w_p); w_n++; w_p = onext[w_p] \
    od; \
    for (w_i : 0 .. NSP - 1) { \
        assert((owner_of[w_i] == STACK) == ((w_seen >> w_i) & 1)) /* lost */ \
    }; \
    w_p = 0; w_n = 0; w_seen = 0

/* orphanage_pop(): the superpage in res, NIL if the orphanage was empty */
inline orphanage_pop()
{
    /* old = atomic_load(&orphanage_head) (acquire) */
    d_step { o_ptr = head_ptr; o_tag = head_tag; printf("T%d pop: head = (%d, v%d)\n", me, o_ptr, o_tag) }
    do
    :: o_ptr == NIL -> res = NIL; break                        /* if (!sp) return NULL */
    :: else ->
        /* next = sp->orphan_next (relaxed): maybe stale, sp maybe taken by
         * another thread meanwhile; the memory is mapped all the same */
        d_step {
            nx = onext[o_ptr];
            printf("T%d pop: %d->orphan_next = %d\n", me, o_ptr, nx);
            if :: owner_of[o_ptr] != STACK -> REACH(1) :: else -> skip fi
        }
        /* CAS(&orphanage_head, &old, orphan_word(next, old)) (acquire) */
        atomic {
            if
            :: head_ptr == o_ptr && head_tag == o_tag ->
                head_ptr = nx;
                head_tag = (o_tag + 1) % TAGMOD;
                assert(owner_of[o_ptr] == STACK);              /* the popper is its only owner */
                owner_of[o_ptr] = me;
                res = o_ptr;
                printf("T%d pop: CAS ok, took %d, head = (%d, v%d)\n", me, o_ptr, head_ptr, head_tag);
                CHECK_STACK();
                ok = 1
            :: WEAK && head_ptr == o_ptr && head_tag == o_tag ->
                ok = 0                                         /* spurious failure: old is unchanged */
            :: else ->
                if :: head_ptr == o_ptr -> REACH(2) :: else -> skip fi;
                o_ptr = head_ptr; o_tag = head_tag; ok = 0;    /* failure: old = the current head */
                printf("T%d pop: CAS fails, head = (%d, v%d)\n", me, o_ptr, o_tag)
            fi
        }
        if
        :: ok -> break                                         /* return sp */
        :: else -> skip                                        /* DEBUG_COUNT(WIN_ORPHAN_CAS_RETRY) */
        fi
    od;
    nx = 0; ok = 0; o_ptr = 0; o_tag = 0
}

/* orphanage_push(sp) */
inline orphanage_push(sp)
{
    assert(owner_of[sp] == me);
    /* old = atomic_load(&orphanage_head) (relaxed) */
    d_step { o_ptr = head_ptr; o_tag = head_tag }
    do
    :: onext[sp] = o_ptr;                                      /* sp->orphan_next = orphan_ptr(old) */
        /* CAS(&orphanage_head, &old, orphan_word(sp, old)) (release) */
        atomic {
            if
            :: head_ptr == o_ptr && head_tag == o_tag ->
                head_ptr = sp;
                head_tag = (o_tag + 1) % TAGMOD;
                owner_of[sp] = STACK;
                printf("T%d push %d: CAS ok, %d->orphan_next = %d, head = (%d, v%d)\n", me, sp, sp, onext[sp], head_ptr, head_tag);
                CHECK_STACK();
                ok = 1
            :: WEAK && head_ptr == o_ptr && head_tag == o_tag ->
                ok = 0
            :: else ->
                o_ptr = head_ptr; o_tag = head_tag; ok = 0;
                printf("T%d push %d: CAS fails, head = (%d, v%d)\n", me, sp, o_ptr, o_tag)
            fi
        }
        if
        :: ok -> break
        :: else -> skip
        fi
    od;
    ok = 0; o_ptr = 0; o_tag = 0
}

proctype worker(byte me)
{
    byte mine;                          /* superpages this thread holds (bit set) */
    byte n, res, pick, o_ptr, o_tag, nx;
    bit ok;
    byte w_seen, w_n, w_p, w_i;

    if
    :: NINIT + me < NSP -> mine = 1 << (NINIT + me)
    :: else -> skip
    fi;
    do
    :: n == OPS -> break
    :: else ->
        n++;
        if
        :: orphanage_pop();                                    /* superpage_acquire */
            if
            :: res != NIL -> mine = mine | (1 << res)
            :: else -> skip                                    /* would map a new superpage */
            fi;
            res = 0
        :: mine != 0 ->                                        /* superpage_try_release */
            if
            :: mine & 1 -> pick = 0
            :: mine & 2 -> pick = 1
            :: mine & 4 -> pick = 2
            :: mine & 8 -> pick = 3
            fi;
            orphanage_push(pick);
            mine = mine & ~(1 << pick);
            pick = 0
        fi
    od;
    ndone++
}

init
{
    byte i, w_seen, w_n, w_p, w_i;
    atomic {
        /* the orphanage holds 0 .. NINIT-1, 0 on top; thread t holds NINIT + t */
        for (i : 0 .. NSP - 1) {
            if
            :: i < NINIT ->
                owner_of[i] = STACK;
                onext[i] = (i + 1 < NINIT -> i + 1 : NIL)
            :: else ->
                owner_of[i] = i - NINIT;
                onext[i] = NIL
            fi
        }
        head_ptr = (NINIT > 0 -> 0 : NIL);
        CHECK_STACK();
        for (i : 0 .. NT - 1) { run worker(i) }
    }
    /* quiescence: every thread is done */
    ndone == NT;
    d_step { CHECK_STACK() }
}
