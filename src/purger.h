/*
 * purger.h: purging other threads' slabs (purger.c, docs/purger.md).
 */
#ifndef BITSLAB_PURGER_H
#define BITSLAB_PURGER_H

#include "types.h"

#pragma GCC visibility push(hidden)

/* purger.c: pages of other threads' heaps (docs/purger.md) */
unsigned purger_take_and_purge(superpage_t *sp, unsigned i);
unsigned purger_pass(uint32_t now, uint32_t delay);
void purger_start_if_enabled(void);
void purger_atfork_child(void);
bool purger_wants_restart(void);

#pragma GCC visibility pop

#endif /* BITSLAB_PURGER_H */
