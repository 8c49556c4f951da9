/*
 * options.h: the runtime options (options.c, docs/options.md).
 */
#ifndef BITSLAB_OPTIONS_H
#define BITSLAB_OPTIONS_H

#include "base.h"

#pragma GCC visibility push(hidden)

/* options.c: the runtime options (docs/options.md), one relaxed atomic each,
 * read from the environment once (constructor, or the first heap_acquire). */
void options_init_once(void);
extern _Atomic int32_t bitslab_verbose;    /* 1: banner at start-up */
extern _Atomic int32_t bitslab_show_stats; /* 1: statistics at exit */
/* A FREE slab's memory is decommitted this long (ms) after it emptied, by its
 * heap's next slow path; -1: never. */
extern _Atomic int32_t bitslab_purge_delay_ms;
extern _Atomic int32_t bitslab_background_purge; /* 1: the purger thread runs (purger.c) */
extern _Atomic int32_t bitslab_retain_superpages; /* -1: 1 + 1/8 of the heap's */

#pragma GCC visibility pop

#endif /* BITSLAB_OPTIONS_H */
