/*
 * valgrind.h: Valgrind client requests (meson -Dvalgrind=true; valgrind.c).
 */
#ifndef BITSLAB_VALGRIND_H
#define BITSLAB_VALGRIND_H

#include "base.h"

#pragma GCC visibility push(hidden)

/* ---- Valgrind hooks (meson -Dvalgrind=true; valgrind.c) -------------------- */

/* Expressions yield their pointer argument; without the option every hook
 * is that argument alone, or nothing, and costs nothing. */
#ifndef BITSLAB_VALGRIND
#define BITSLAB_VALGRIND 0
#endif
#if BITSLAB_VALGRIND
/* The block hooks (BITSLAB_VG_MALLOC ... BITSLAB_VG_HUGE_REALLOC) are
 * defined in api.c, their only user. */
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

#pragma GCC visibility pop

#endif /* BITSLAB_VALGRIND_H */
