/*
 * huge.h: blocks above the wide limit, each its own mapping, and the cache
 * of freed mappings (huge.c).
 */
#ifndef BITSLAB_HUGE_H
#define BITSLAB_HUGE_H

#include "purge.h"

#pragma GCC visibility push(hidden)

void *huge_alloc(size_t size, size_t align, bool zero);
void huge_free(huge_header_t *hh);
void huge_cache_flush(void);
/* Decommit the freed huge mappings cached past purge_delay_ms (heap_purge's
 * modes; PURGE_ALL: every one). A load when there is none. */
void huge_cache_purge(enum purge_mode mode);
unsigned huge_cache_contents(uintptr_t *addr, size_t *len, bool *dirty, unsigned max);
void *huge_realloc(huge_header_t *hh, size_t size);
size_t huge_usable(huge_header_t *hh);
bool huge_owns(huge_header_t *hh, const void *p);
extern _Atomic size_t bitslab_huge_count;
extern _Atomic size_t bitslab_huge_bytes;

#pragma GCC visibility pop

#endif /* BITSLAB_HUGE_H */
