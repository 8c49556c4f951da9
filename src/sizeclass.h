/*
 * sizeclass.h: size classes (sizeclass.c has the tables).
 */
#ifndef BITSLAB_SIZECLASS_H
#define BITSLAB_SIZECLASS_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* ---- size classes --------------------------------------------------------- */

#define SMALL_TABLE_MAX 1024u
extern const uint8_t bitslab_class_of_small[SMALL_TABLE_MAX / MIN_BIN + 1]; /* by (size+15)/16 */
extern const uint32_t bitslab_class_size[NUM_CLASSES];

/* Size class of a request, size <= SMALL_MAX. 16-byte steps up to 128 B, then
 * four classes per power of two: 160 192 224 256, 320 ... 32768. */
/* size_class for size <= SMALL_TABLE_MAX: one load, no division. */
static inline unsigned size_class_table(size_t size) { return bitslab_class_of_small[(size + MIN_BIN - 1) / MIN_BIN]; }

static inline unsigned size_class(size_t size)
{
    if (likely(size <= SMALL_TABLE_MAX)) return size_class_table(size);
    size_t s = size - 1;
    unsigned p = 63u - (unsigned)__builtin_clzll(s); /* floor(log2(s)), >= 10 here */
    return 8u + (p - 7u) * 4u + (unsigned)((s >> (p - 2u)) & 3u);
}


#pragma GCC visibility pop

#endif /* BITSLAB_SIZECLASS_H */
