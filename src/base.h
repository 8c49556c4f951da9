/*
 * base.h: what every file of bitslab shares: the standard headers, the
 * build-time knobs and the branch hints. What the library declares in its own
 * headers is hidden (each header pushes and pops the visibility): the
 * compiler addresses it PC-relative, with no GOT load on the fast path.
 */
#ifndef BITSLAB_BASE_H
#define BITSLAB_BASE_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitslab.h"

/* ---- build-time knobs (meson options feed some of these) ----------------- */

#ifndef BITSLAB_DEBUG
#define BITSLAB_DEBUG 0 /* 1: invariant checks and race-window counters */
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))

#endif /* BITSLAB_BASE_H */
