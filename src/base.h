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

/* Built with ThreadSanitizer (gcc or clang): os.c avoids what TSan cannot
 * see (mremap moves). */
#if defined(__SANITIZE_THREAD__)
#define BITSLAB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BITSLAB_TSAN 1
#endif
#endif
#ifndef BITSLAB_TSAN
#define BITSLAB_TSAN 0
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))

/* ---- assertions ----------------------------------------------------------- */

/* BITSLAB_ASSERT(cond): a precondition or invariant the design guarantees
 * (the comment next to it, or the function's, says which). With
 * BITSLAB_DEBUG (-Ddebug_checks=true), a false one prints
 *   bitslab: assertion failed: <cond> (<file>:<line>, <function>)
 * on stderr with one write(2) (no stdio, no malloc: we may be inside
 * malloc) and aborts. Without it, it compiles to nothing and cond is not
 * evaluated (only type-checked). Not on the malloc and free fast paths.
 * The reporter lives here, in layer 0, so that every layer may assert (a
 * call into error.c from os.c would point sideways); each file that asserts
 * gets its own copy, in debug builds only. */
#if BITSLAB_DEBUG
#include <unistd.h>

static inline size_t bitslab_assert_put(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at < cap) buf[at++] = *s++;
    return at;
}

__attribute__((cold, noinline, noreturn, unused)) static void bitslab_assert_failed(const char *cond,
                                                                                  const char *file, int line,
                                                                                  const char *func)
{
    char buf[512], num[12];
    size_t cap = sizeof buf - 1, at = 0;
    char *d = num + sizeof num; /* the line number, written backwards */
    *--d = 0;
    unsigned v = line > 0 ? (unsigned)line : 0;
    do *--d = (char)('0' + v % 10);
    while ((v /= 10) && d > num);
    at = bitslab_assert_put(buf, at, cap, "bitslab: assertion failed: ");
    at = bitslab_assert_put(buf, at, cap, cond);
    at = bitslab_assert_put(buf, at, cap, " (");
    at = bitslab_assert_put(buf, at, cap, file);
    at = bitslab_assert_put(buf, at, cap, ":");
    at = bitslab_assert_put(buf, at, cap, d);
    at = bitslab_assert_put(buf, at, cap, ", ");
    at = bitslab_assert_put(buf, at, cap, func);
    at = bitslab_assert_put(buf, at, cap, ")");
    buf[at++] = '\n';
    ssize_t r = write(2, buf, at);
    (void)r;
    __builtin_abort();
}

#define BITSLAB_ASSERT(cond) \
    (likely(cond) ? (void)0 : bitslab_assert_failed(#cond, __FILE__, __LINE__, __func__))
#else
#define BITSLAB_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#endif /* BITSLAB_BASE_H */
