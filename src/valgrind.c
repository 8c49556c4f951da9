/*
 * valgrind.c: memcheck client requests (meson -Dvalgrind=true), so that
 * memcheck reports a program's leaks, use-after-free and invalid frees of
 * bitslab blocks against the program's own code. Without the option this
 * file is empty and the BITSLAB_VG_* hooks (internal.h) expand to nothing.
 *
 * The hooks sit at the public entry points (api.c): every block handed out
 * is a MALLOCLIKE block of its usable size (the bin: bitslab_usable_size's
 * contract lets the program use all of it), and FREELIKE when freed, which
 * makes memcheck mark it inaccessible until it is handed out again.
 * bitslab never reads a block; it writes into one only to zero it (calloc)
 * or copy it (realloc), after the block was registered, or, for a wide
 * calloc, inside wide_alloc with error reporting off (BITSLAB_VG_ZEROED).
 *
 * Metadata: every superpage's slab 0, and the heap table, hold pointers to
 * bins (slab_t.data, the word caches' base), which memcheck's leak scan
 * would take for references and call a leaked block "still reachable".
 * They are marked inaccessible to memcheck, with address errors in them
 * not reported (bitslab's own reads and writes there go on as usual, and
 * memcheck treats what it reads there as defined). See docs/testing.md.
 */
#include "valgrind.h"

#if BITSLAB_VALGRIND
#include <string.h>
#include <sys/mman.h>
#include <valgrind/memcheck.h>

void *vg_malloced(void *p, bool zeroed)
{
    if (p && RUNNING_ON_VALGRIND) VALGRIND_MALLOCLIKE_BLOCK(p, bitslab_usable_size(p), 0, zeroed);
    return p;
}

void vg_quiet(void) { VALGRIND_DISABLE_ERROR_REPORTING; }

void *vg_malloced_quiet(void *p, bool zeroed)
{
    VALGRIND_ENABLE_ERROR_REPORTING;
    return vg_malloced(p, zeroed);
}

void vg_freeing(void *p)
{
    if (p) VALGRIND_FREELIKE_BLOCK(p, 0);
}

/* A huge block grew or shrank in place, or its pages moved (mremap: memcheck
 * moves their state along, and the block is re-registered with it). */
void *vg_realloced_huge(void *old, size_t old_usable, void *q)
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

void vg_metadata(void *p, size_t len)
{
    VALGRIND_MAKE_MEM_NOACCESS(p, len);
    VALGRIND_DISABLE_ADDR_ERROR_REPORTING_IN_RANGE(p, len);
}

/* A new superpage, or a shrunk one mapped again (superpage_regrow). */
void vg_superpage(void *sp)
{
    vg_metadata(sp, SLAB_SIZE);
    VALGRIND_MAKE_MEM_NOACCESS((char *)sp + SLAB_SIZE, SUPERPAGE_SIZE - SLAB_SIZE);
}
#else
typedef int bitslab_no_valgrind; /* ISO C wants something in a translation unit */
#endif
