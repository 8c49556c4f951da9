/*
 * waitfree_selftest.c: one entry per way a remote-free path could fail to be
 * wait-free, so that the wait-free test (check-wait-free.py --self-test) is
 * shown to report each: a compare-and-swap loop, a plain loop, a call through
 * a function pointer, a call outside the library (it could block), and
 * recursion; st_clean must pass. Built as a module, never linked into anything.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

_Atomic uint64_t selftest_word;
_Atomic uint32_t selftest_mask;
volatile unsigned selftest_sink;
pthread_mutex_t selftest_lock = PTHREAD_MUTEX_INITIALIZER;
void (*volatile selftest_fn)(unsigned);

/* A fetch_or whose old value is used (a CAS loop with clang 14) and an
 * explicit compare-and-swap retry loop. */
__attribute__((noinline)) int st_cas(unsigned bit)
{
    uint32_t was = atomic_fetch_or(&selftest_mask, 1u << (bit & 31));
    uint64_t old = atomic_load_explicit(&selftest_word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(&selftest_word, &old, old | ((uint64_t)1 << (bit & 63)))) {
    }
    return was == 0;
}

/* A spin loop on an atomic, no CAS. */
__attribute__((noinline)) void st_loop(unsigned n)
{
    while (atomic_load_explicit(&selftest_mask, memory_order_acquire) != n) selftest_sink++;
}

__attribute__((noinline)) void st_indirect(unsigned n) { selftest_fn(n); }

__attribute__((noinline)) void st_external(unsigned n)
{
    pthread_mutex_lock(&selftest_lock);
    selftest_sink = n;
    pthread_mutex_unlock(&selftest_lock);
}

static __attribute__((noinline)) void recursion_b(unsigned n);
static __attribute__((noinline)) void recursion_a(unsigned n)
{
    if (n) recursion_b(n - 1);
    selftest_sink = n;
}
static __attribute__((noinline)) void recursion_b(unsigned n)
{
    if (n) recursion_a(n - 1);
    selftest_sink = n + 1;
}
__attribute__((noinline)) void st_recursion(unsigned n) { recursion_a(n); }

/* Wait-free: one atomic add, one or, no loop. */
__attribute__((noinline)) unsigned st_clean(unsigned n)
{
    atomic_fetch_add_explicit(&selftest_word, n, memory_order_release);
    atomic_fetch_or_explicit(&selftest_mask, 1u, memory_order_relaxed);
    return n + 1;
}
