/*
 * override.c: the libc allocation surface, forwarded to bitslab.
 *
 * Compiled into libbitslab.so (for LD_PRELOAD) and, with -Doverride=true,
 * into libbitslab.a (static override: a program that links the archive gets
 * bitslab for every malloc, including libc's own). bitslab never calls the
 * system malloc and needs no initialisation before its first allocation, so
 * allocations made inside the dynamic loader or libc start-up just work.
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "types.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t size) { return bitslab_malloc(size); }
EXPORT void free(void *p) { bitslab_free(p); }
EXPORT void *calloc(size_t n, size_t size) { return bitslab_calloc(n, size); }
EXPORT void *realloc(void *p, size_t size) { return bitslab_realloc(p, size); }
EXPORT void *reallocarray(void *p, size_t n, size_t size) { return bitslab_reallocarray(p, n, size); }
EXPORT void *aligned_alloc(size_t align, size_t size) { return bitslab_aligned_alloc(align, size); }
EXPORT int posix_memalign(void **out, size_t align, size_t size) { return bitslab_posix_memalign(out, align, size); }
EXPORT void *memalign(size_t align, size_t size) { return bitslab_memalign(align, size); }
EXPORT void *valloc(size_t size) { return bitslab_memalign(OS_PAGE, size); }

EXPORT void *pvalloc(size_t size)
{
    size_t rounded = (size + OS_PAGE - 1) & ~(size_t)(OS_PAGE - 1);
    if (rounded < size) {
        errno = ENOMEM;
        return NULL;
    }
    return bitslab_memalign(OS_PAGE, rounded ? rounded : OS_PAGE);
}

EXPORT size_t malloc_usable_size(void *p) { return bitslab_usable_size(p); }
EXPORT void free_sized(void *p, size_t size) { bitslab_free_sized(p, size); }
EXPORT void free_aligned_sized(void *p, size_t align, size_t size) { bitslab_free_aligned_sized(p, align, size); }

/* glibc extensions that programs call and expect to keep working. */
EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    bitslab_collect();
    return 1;
}

EXPORT int mallopt(int param, int value)
{
    (void)param;
    (void)value;
    return 1; /* accepted; bitslab has no glibc tunables */
}

EXPORT struct mallinfo2 mallinfo2(void)
{
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    mi.arena = st.mapped - st.huge_bytes; /* non-mmapped space: superpages */
    mi.hblks = st.huge_allocations;
    mi.hblkhd = st.huge_bytes;
    mi.uordblks = st.in_use;
    mi.fordblks = st.committed > st.in_use ? st.committed - st.in_use : 0;
    mi.keepcost = 0;
    return mi;
}
