/*
 * internal.h: every internal header at once, for the tests, the stress
 * programs and the tools that look inside the library. No file of src/
 * includes it: each includes the headers of the concepts it uses, and
 * scripts/check-layers.py checks that they only point downward
 * (docs/architecture.md, "Source layout").
 */
#ifndef BITSLAB_INTERNAL_H
#define BITSLAB_INTERNAL_H

#include "base.h"
#include "types.h"
#include "debug.h"
#include "error.h"
#include "valgrind.h"
#include "os.h"
#include "options.h"
#include "bitmap.h"
#include "sizeclass.h"
#include "registry.h"
#include "slab.h"
#include "remote.h"
#include "purge.h"
#include "orphanage.h"
#include "superpage.h"
#include "huge.h"
#include "purger.h"
#include "heap.h"
#include "thread.h"
#include "stats.h"
#include "lookup.h"

#endif /* BITSLAB_INTERNAL_H */
