/*
 * layout.c: print the layout numbers docs/architecture.md quotes, from the
 * compiled definitions (tests/check-docs.py compares them with the page).
 */
#include <stdio.h>

#include "../src/internal.h"

int main(void)
{
    printf("superpage_bytes %zu\n", (size_t)SUPERPAGE_SIZE);
    printf("slab_bytes %zu\n", (size_t)SLAB_SIZE);
    printf("slabs_per_superpage %u\n", SLABS_PER_SUPERPAGE);
    printf("data_slabs %u\n", (unsigned)__builtin_popcount(DATA_SLABS_MASK));
    printf("metadata_bytes %zu\n", sizeof(superpage_t));
    printf("slab_t_bytes %zu\n", sizeof(slab_t));
    printf("bitmap_row_bytes %zu\n", (size_t)BITMAP_WORDS * sizeof(uint64_t));
    printf("bitmap_bins %u\n", BITMAP_WORDS * 64);
    printf("offset_slabs %zu\n", offsetof(superpage_t, slabs));
    printf("offset_local %zu\n", offsetof(superpage_t, local));
    printf("offset_remote_line %zu\n", offsetof(superpage_t, remote_slabs));
    printf("remote_row_distance %zu\n", offsetof(superpage_t, remote) - offsetof(superpage_t, local));
    printf("classes %u\n", NUM_CLASSES);
    printf("small_max %u\n", SMALL_MAX);
    printf("wide_max_slabs %u\n", WIDE_MAX_SLABS);
    printf("class_table_bytes %zu\n", sizeof bitslab_class_of_small);
    heap_t h = {0};
    h.nsuperpages = 16;
    printf("retain_empty_of_16 %zu\n", (size_t)SUPERPAGE_RETENTION(&h));
    return 0;
}
