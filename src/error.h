/*
 * error.h: the one-line message and abort of a detected misuse (error.c).
 */
#ifndef BITSLAB_ERROR_H
#define BITSLAB_ERROR_H

#include "base.h"

#pragma GCC visibility push(hidden)

COLD _Noreturn void bitslab_fatal(const char *what, const void *p);
/* The same, naming the entry point the user called: "bitslab: realloc: ...". */
COLD _Noreturn void bitslab_fatal_in(const char *entry, const char *what, const void *p);

#pragma GCC visibility pop

#endif /* BITSLAB_ERROR_H */
