/*
 * os.h: the only file that talks to the kernel (os.c): mappings, decommit,
 * the clock, and the counts of what is mapped and committed.
 */
#ifndef BITSLAB_OS_H
#define BITSLAB_OS_H

#include "base.h"

#pragma GCC visibility push(hidden)

void *os_map(size_t len);
void *os_map_aligned(size_t len, size_t align, size_t *map_len, char **map_base);
bool os_trim(char *raw, size_t over, char *keep, size_t len);
bool os_unmap(void *p, size_t len);
bool os_unmap_counted(void *p, size_t len, size_t committed);
bool os_decommit(void *p, size_t len);
bool os_purge_pages(void *p, size_t len);
bool os_map_at(void *addr, size_t len);
void os_note_committed(size_t len);
bool os_remap(void *old, size_t old_len, size_t new_len, void *to);
bool os_address_space_limited(void);
uint32_t os_now_ms(void);
/* The last os_now_ms() any thread read (relaxed): a clock that costs one
 * load, behind real time by up to the gap between two slow paths. */
extern _Atomic uint32_t bitslab_clock_ms;
extern _Atomic size_t bitslab_mapped_bytes;
extern _Atomic size_t bitslab_committed_bytes;
extern _Atomic size_t os_purged_bytes;  /* bytes given to MADV_DONTNEED */
extern _Atomic size_t os_madvise_calls; /* MADV_DONTNEED calls */

#pragma GCC visibility pop

#endif /* BITSLAB_OS_H */
