/*
 * valgrind.c: memcheck client requests (meson -Dvalgrind=true), so that
 * memcheck reports a program's leaks, use-after-free and invalid frees of
 * bitslab blocks against the program's own code. Without the option this
 * file is empty and the BITSLAB_VG_* hooks (valgrind.h) expand to nothing.
 * This file has the hooks for bitslab's own memory (metadata, superpages);
 * those for the blocks are api.c's (they need the block's usable size).
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
#include "types.h"

#if BITSLAB_VALGRIND
#include <string.h>
#include <sys/mman.h>
#include <valgrind/memcheck.h>

void vg_metadata(void *p, size_t len)
{
    VALGRIND_MAKE_MEM_NOACCESS(p, len);
    VALGRIND_DISABLE_ADDR_ERROR_REPORTING_IN_RANGE(p, len);
}

/* A new superpage, or a shrunk one mapped again (orphan_regrow). */
void vg_superpage(void *sp)
{
    vg_metadata(sp, SLAB_SIZE);
    VALGRIND_MAKE_MEM_NOACCESS((char *)sp + SLAB_SIZE, SUPERPAGE_SIZE - SLAB_SIZE);
}
#else
typedef int bitslab_no_valgrind; /* ISO C wants something in a translation unit */
#endif
