/*
 * lookup.h: from a pointer to its block, validated (lookup.c): the one
 * lookup every entry point that takes a pointer uses, and the tests.
 */
#ifndef BITSLAB_LOOKUP_H
#define BITSLAB_LOOKUP_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* The one-line messages of a pointer that fails the lookup. */
#define MSG_FOREIGN "pointer bitslab never returned"
#define MSG_NOT_START "not the start of a live block (interior pointer, wide-block tail, or a freed slab)"
#define MSG_FREED "double free (the block is already free)"
#define MSG_USED_FREED "use after free (the block is already free)"

/* A validated block: a huge block (hh), or bin idx of slab s. */
typedef struct block {
    huge_header_t *hh;
    superpage_t *sp;
    slab_t *s;
    uint32_t idx;
} block_t;

/* The block p is the start of, from any thread. Aborts with a one-line
 * message naming `entry` (the entry point the user called) unless p is the
 * start of a live block: MSG_FOREIGN, MSG_NOT_START, or `freed` (MSG_FREED
 * or MSG_USED_FREED) for a block that is already free. Reads no memory of a
 * pointer bitslab does not own (the region registry says first). */
block_t block_lookup(const void *p, const char *entry, const char *freed);

#pragma GCC visibility pop

#endif /* BITSLAB_LOOKUP_H */
