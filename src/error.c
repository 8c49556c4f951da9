/*
 * error.c: report heap corruption and abort.
 *
 * Uses write(2) only: stdio may allocate, and we may be inside malloc.
 */
#include <stdlib.h>
#include <unistd.h>

#include "error.h"

static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at < cap) buf[at++] = *s++;
    return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uintptr_t v)
{
    char tmp[2 + 16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    at = put_str(buf, at, cap, "0x");
    while (n && at < cap) buf[at++] = tmp[--n];
    return at;
}

void bitslab_fatal(const char *what, const void *p) { bitslab_fatal_in(NULL, what, p); }

void bitslab_fatal_in(const char *entry, const char *what, const void *p)
{
    char buf[256];
    size_t cap = sizeof buf - 1, at = 0;
    at = put_str(buf, at, cap, "bitslab: ");
    if (entry) {
        at = put_str(buf, at, cap, entry);
        at = put_str(buf, at, cap, ": ");
    }
    at = put_str(buf, at, cap, what);
    if (p) {
        at = put_str(buf, at, cap, ": pointer ");
        at = put_hex(buf, at, cap, (uintptr_t)p);
    }
    buf[at++] = '\n';
    ssize_t r = write(2, buf, at);
    (void)r;
    abort();
}
