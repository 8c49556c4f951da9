/*
 * waitfree_selftest.c: a remote-free path that is NOT wait-free, so that the
 * wait-free test (check-wait-free.py) is shown to fail on one: a fetch_or
 * whose whole old value is used (a CAS loop with clang 14) and an explicit
 * compare-and-swap retry loop. Built as a module, never linked into anything.
 */
#include <stdatomic.h>
#include <stdint.h>

_Atomic uint64_t selftest_word;
_Atomic uint32_t selftest_mask;

__attribute__((noinline)) int remote_free(unsigned bit)
{
    uint32_t was = atomic_fetch_or(&selftest_mask, 1u << (bit & 31));
    uint64_t old = atomic_load_explicit(&selftest_word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(&selftest_word, &old, old | ((uint64_t)1 << (bit & 63)))) {
    }
    return was == 0;
}

int heap_free_slow(unsigned bit) { return remote_free(bit) + 1; }
