/*
 * sizeclass.c: the size classes: 16-byte steps up to 128 B, then four per
 * power of two up to 32 KiB (size_class() in sizeclass.h maps a request).
 */
#include "sizeclass.h"

/* size_class(size) (sizeclass.h) for size <= 1024, indexed by (size + 15) / 16. */
const uint8_t bitslab_class_of_small[SMALL_TABLE_MAX / MIN_BIN + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  8,  9,  9,  10, 10, 11, 11, 12, 12, 12, 12, 13,
    13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17,
    17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19,
};

const uint32_t bitslab_class_size[NUM_CLASSES] = {
    16,   32,   48,   64,   80,   96,    112,   128,   160,   192,   224,   256,   320,   384,
    448,  512,  640,  768,  896,  1024,  1280,  1536,  1792,  2048,  2560,  3072,  3584,  4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};
