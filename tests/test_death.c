/*
 * test_death.c: invalid frees must abort (SIGABRT) with a one-line message
 * "bitslab: <what>: pointer 0x<address>".
 *
 * Each scenario runs twice: once as a Check death test
 * (tcase_add_test_raise_signal, in Check's own forked child), and once in a
 * grandchild whose stderr is captured, to check the message names the pointer.
 * Scenarios publish the pointer they are about to misuse in a shared page.
 *
 * In a debug build (-Ddebug_checks=true), "assertion" also breaks internal
 * preconditions on purpose and checks that BITSLAB_ASSERT aborts with its
 * one line "bitslab: assertion failed: <cond> (<file>:<line>, <function>)".
 */
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

DEFINE_THREAD_FAILURES;

static _Atomic uintptr_t *bad_pointer; /* MAP_SHARED: visible to the parent */

static void about_to_misuse(const void *p) { atomic_store(bad_pointer, (uintptr_t)p); }

/* ---- helpers: frees in other threads ------------------------------------------------ */

static void *free_one(void *p)
{
    bitslab_free(p);
    return NULL;
}

static void free_in_thread(void *p) { join(spawn(free_one, p)); }

/* ---- the scenarios ----------------------------------------------------------------- */

static void sc_double_free_small(void)
{
    void *keep = bitslab_malloc(64);
    void *p = bitslab_malloc(64);
    (void)keep;
    bitslab_free(p);
    about_to_misuse(p);
    bitslab_free(p);
}

/* The slab is not the active one any more (it is on the partial list). */
static void sc_double_free_partial_slab(void)
{
    void *a0 = bitslab_malloc(SMALL_MAX), *a1 = bitslab_malloc(SMALL_MAX);
    void *a2 = bitslab_malloc(SMALL_MAX); /* new slab; a0's is FULL */
    (void)a1;
    (void)a2;
    bitslab_free(a0);
    about_to_misuse(a0);
    bitslab_free(a0);
}

/* The slab went back to its superpage in between. */
static void sc_double_free_returned_slab(void)
{
    void *a0 = bitslab_malloc(SMALL_MAX), *a1 = bitslab_malloc(SMALL_MAX);
    void *a2 = bitslab_malloc(SMALL_MAX);
    (void)a2;
    bitslab_free(a0);
    bitslab_free(a1);
    about_to_misuse(a0);
    bitslab_free(a0);
}

static void sc_double_free_wide(void)
{
    void *keep = bitslab_malloc(16);
    (void)keep;
    void *w = bitslab_malloc(300 * KiB);
    bitslab_free(w);
    about_to_misuse(w);
    bitslab_free(w);
}

static void sc_double_free_huge(void)
{
    void *h = bitslab_malloc(4 * MiB);
    bitslab_free(h);
    about_to_misuse(h);
    bitslab_free(h);
}

/* Two other threads free the same block (the owner does not merge in between). */
static void sc_double_free_remote(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    free_in_thread(p);
    about_to_misuse(p);
    free_in_thread(p);
}

static void sc_double_free_remote_wide(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *w = bitslab_malloc(100 * KiB);
    free_in_thread(w);
    about_to_misuse(w);
    free_in_thread(w);
}

/* Another thread frees the block, then the owner frees it too. */
static void sc_double_free_remote_then_owner(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    free_in_thread(p);
    about_to_misuse(p);
    bitslab_free(p);
    bitslab_collect(); /* at the latest, the merge must see it */
}

/* The owner frees the block, then another thread frees it too. */
static void sc_double_free_owner_then_remote(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    bitslab_free(p);
    about_to_misuse(p);
    free_in_thread(p);
    bitslab_collect(); /* the merge finds the bin free in both maps */
}

/* Owner frees a0, another thread frees a0 again, then the owner frees the
 * slab's last block so the slab empties and goes back to its superpage before
 * any merge. The double free must still be caught: the stale remote bit would
 * otherwise survive into the slab's next configuration and mark a live bin
 * free, handing one block out twice (checked below if nothing aborted). */
static void sc_double_free_hidden_by_slab_return(void)
{
    void *keep = bitslab_malloc(16);
    void *a0 = bitslab_malloc(SMALL_MAX), *a1 = bitslab_malloc(SMALL_MAX);
    void *a2 = bitslab_malloc(SMALL_MAX); /* a0's slab is now FULL, not active */
    slab_t *s = slab_of(a0);
    bitslab_free(a0);
    about_to_misuse(a0);
    free_in_thread(a0); /* the double free */
    bitslab_free(a1);   /* slab empty: back to the superpage */
    bitslab_collect();
    /* Nothing aborted so far. Show the consequence: reuse the slab for 32 B
     * blocks, fill it, let another thread free one block legitimately, and
     * see whether the next malloc returns a block that is still live. */
    static void *b[2048];
    for (int i = 0; i < 2048; i++) b[i] = bitslab_malloc(32);
    ck_assert_ptr_eq(slab_of(b[0]), s);
    ck_assert_ptr_eq(slab_of(b[2047]), s);
    free_in_thread(b[100]);
    void *q = bitslab_malloc(32);
    ck_assert_msg(q == b[100],
                  "double free of %p (local, then remote) went undetected; after its slab was reused, malloc "
                  "returned %p, which is still live (expected the freed %p)",
                  a0, q, b[100]);
    (void)keep;
    (void)a2;
}

/* Two bins freed; one is handed out again; the other is freed a second time
 * while the allocator has not handed it out since. */
static void sc_double_free_after_reuse(void)
{
    void *b[64];
    for (int i = 0; i < 64; i++) b[i] = bitslab_malloc(64); /* exactly one bitmap word's worth */
    bitslab_free(b[0]);
    bitslab_free(b[1]);
    void *p = bitslab_malloc(64); /* one of the two */
    ck_assert(p == b[0] || p == b[1]);
    void *q = p == b[0] ? b[1] : b[0];
    about_to_misuse(q);
    bitslab_free(q);
    /* Not caught yet? Then the bin is handed out twice: show it. */
    void *r1 = bitslab_malloc(64), *r2 = bitslab_malloc(64);
    bitslab_collect();
    void *r3 = bitslab_malloc(64);
    ck_abort_msg("double free of %p not detected (then malloc returned %p, %p, %p)", q, r1, r2, r3);
}

/* A pointer to a bin that bitslab never handed out (the neighbour of a live
 * block, right on a bin boundary). */
static void sc_free_unallocated_bin(void)
{
    char *p = bitslab_malloc(64); /* bin 0 of a fresh slab: bin 1 was never handed out */
    about_to_misuse(p + 64);
    bitslab_free(p + 64);
    void *r1 = bitslab_malloc(64), *r2 = bitslab_malloc(64);
    ck_abort_msg("free of never-allocated %p not detected (then malloc returned %p, %p)", (void *)(p + 64), r1, r2);
}

static void sc_foreign_stack(void)
{
    char local[64];
    about_to_misuse(local + 16);
    bitslab_free(local + 16);
}

static void sc_foreign_glibc_small(void)
{
    void *warm = bitslab_malloc(16); /* bitslab is initialised */
    (void)warm;
    void *p = malloc(40);
    about_to_misuse(p);
    bitslab_free(p);
}

static void sc_foreign_glibc_large(void)
{
    void *p = malloc(8 * MiB); /* glibc mmaps this one */
    about_to_misuse(p);
    bitslab_free(p);
}

static void sc_foreign_static(void)
{
    static char buf[256];
    about_to_misuse(buf);
    bitslab_free(buf);
}

static void sc_interior_small(void)
{
    char *p = bitslab_malloc(100); /* 112-byte bin */
    about_to_misuse(p + 16);
    bitslab_free(p + 16);
}

static void sc_interior_small_odd(void)
{
    char *p = bitslab_malloc(3000);
    about_to_misuse(p + 1);
    bitslab_free(p + 1);
}

static void sc_interior_huge(void)
{
    char *h = bitslab_malloc(4 * MiB);
    about_to_misuse(h + 4096);
    bitslab_free(h + 4096);
}

static void sc_interior_huge_far(void)
{
    char *h = bitslab_malloc(6 * MiB);
    about_to_misuse(h + 3 * MiB);
    bitslab_free(h + 3 * MiB);
}

static void sc_wide_tail(void)
{
    char *w = bitslab_malloc(300 * KiB);
    about_to_misuse(w + SLAB_SIZE);
    bitslab_free(w + SLAB_SIZE);
}

static void sc_wide_tail_last(void)
{
    char *w = bitslab_malloc(WIDE_MAX);
    about_to_misuse(w + 15 * SLAB_SIZE);
    bitslab_free(w + 15 * SLAB_SIZE);
}

static void sc_wide_interior(void)
{
    char *w = bitslab_malloc(300 * KiB);
    about_to_misuse(w + 4096);
    bitslab_free(w + 4096);
}

static void sc_metadata_slab(void)
{
    char *p = bitslab_malloc(64);
    char *meta = (char *)sp_of(p) + 4096;
    about_to_misuse(meta);
    bitslab_free(meta);
}

static void sc_free_slab(void)
{
    char *p = bitslab_malloc(64);
    char *unused = (char *)sp_of(p) + 31 * SLAB_SIZE; /* slab 31: never configured */
    about_to_misuse(unused);
    bitslab_free(unused);
}

static void sc_free_sized_interior(void)
{
    char *p = bitslab_malloc(256);
    about_to_misuse(p + 128);
    bitslab_free_sized(p + 128, 128);
}

static void sc_realloc_foreign(void)
{
    char local[32];
    about_to_misuse(local);
    void *q = bitslab_realloc(local, 100);
    (void)q;
}

static void sc_realloc_interior(void)
{
    char *p = bitslab_malloc(200);
    about_to_misuse(p + 8);
    void *q = bitslab_realloc(p + 8, 400);
    (void)q;
}

static void sc_usable_size_foreign(void)
{
    void *p = malloc(100);
    about_to_misuse(p);
    size_t n = bitslab_usable_size(p);
    (void)n;
}

/* A 64-byte block this thread (its owner) freed into its word cache, the
 * slab kept by another live block; published as the pointer misused next. */
static void *freed_in_cache(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    bitslab_free(p);
    about_to_misuse(p);
    return p;
}

/* realloc and usable_size validate exactly as free does (one lookup):
 * a freed block given to them aborts instead of being handed back as live,
 * reported as a use after free (free reports a double free). */
static void sc_realloc_freed(void)
{
    void *q = bitslab_realloc(freed_in_cache(), 64); /* would stay put: the block handed back */
    (void)q;
}

static void sc_realloc_freed_partial(void)
{
    void *a0 = bitslab_malloc(SMALL_MAX), *a1 = bitslab_malloc(SMALL_MAX);
    void *a2 = bitslab_malloc(SMALL_MAX);
    (void)a1;
    (void)a2;
    bitslab_free(a0); /* into the local map of a slab that is not cached */
    about_to_misuse(a0);
    void *q = bitslab_realloc(a0, 100);
    (void)q;
}

static void sc_realloc_freed_remote(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    free_in_thread(p); /* a remote bit the owner has not merged */
    about_to_misuse(p);
    void *q = bitslab_realloc(p, 32);
    (void)q;
}

static void sc_realloc_freed_huge(void)
{
    void *p = bitslab_malloc(4 * MiB);
    bitslab_free(p); /* kept in the huge cache */
    about_to_misuse(p);
    void *q = bitslab_realloc(p, 5 * MiB);
    (void)q;
}

static void *realloc_one(void *p) { return bitslab_realloc(p, 48); }

static void sc_realloc_in_thread_freed_remote(void)
{
    /* A thread that does not own the slab sees its remote map: a block
     * another thread freed is caught there. */
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    free_in_thread(p);
    about_to_misuse(p);
    join(spawn(realloc_one, p));
}

/* free_sized and free_aligned_sized free: a freed block is a double free,
 * found by the owner's fast path or by the lookup (another thread, huge). */
static void sc_free_sized_freed(void) { bitslab_free_sized(freed_in_cache(), 64); }

static void *free_aligned_sized_one(void *p)
{
    bitslab_free_aligned_sized(p, 64, 64);
    return NULL;
}

static void sc_free_aligned_sized_freed_remote(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_aligned_alloc(64, 64);
    free_in_thread(p); /* a remote bit the owner has not merged */
    about_to_misuse(p);
    join(spawn(free_aligned_sized_one, p)); /* another non-owner: the lookup */
}

static void sc_free_sized_freed_huge(void)
{
    void *p = bitslab_malloc(4 * MiB);
    bitslab_free(p); /* kept in the huge cache */
    about_to_misuse(p);
    bitslab_free_sized(p, 4 * MiB);
}

static void *usable_size_one(void *p)
{
    size_t n = bitslab_usable_size(p);
    (void)n;
    return NULL;
}

static void sc_usable_size_freed(void)
{
    size_t n = bitslab_usable_size(freed_in_cache());
    (void)n;
}

static void sc_usable_size_freed_remote_other_thread(void)
{
    void *keep = bitslab_malloc(64);
    (void)keep;
    void *p = bitslab_malloc(64);
    free_in_thread(p);
    about_to_misuse(p);
    join(spawn(usable_size_one, p));
}

static void sc_usable_size_interior(void)
{
    char *p = bitslab_malloc(300);
    about_to_misuse(p + 16);
    size_t n = bitslab_usable_size(p + 16);
    (void)n;
}

typedef struct scenario {
    const char *name;
    void (*run)(void);
    const char *what; /* expected in the message */
} scenario_t;

static const scenario_t scenarios[] = {
    {"double_free_small", sc_double_free_small, "double free"},
    {"double_free_partial_slab", sc_double_free_partial_slab, "double free"},
    {"double_free_returned_slab", sc_double_free_returned_slab, ""},
    {"double_free_wide", sc_double_free_wide, ""},
    {"double_free_huge", sc_double_free_huge, ""},
    {"double_free_remote", sc_double_free_remote, "double free"},
    {"double_free_remote_wide", sc_double_free_remote_wide, "double free"},
    {"double_free_remote_then_owner", sc_double_free_remote_then_owner, "double free"},
    {"double_free_owner_then_remote", sc_double_free_owner_then_remote, "double free"},
    {"double_free_hidden_by_slab_return", sc_double_free_hidden_by_slab_return, "double free"},
    {"double_free_after_reuse", sc_double_free_after_reuse, "double free"},
    {"free_unallocated_bin", sc_free_unallocated_bin, ""},
    {"foreign_stack", sc_foreign_stack, "never returned"},
    {"foreign_glibc_small", sc_foreign_glibc_small, "never returned"},
    {"foreign_glibc_large", sc_foreign_glibc_large, "never returned"},
    {"foreign_static", sc_foreign_static, "never returned"},
    {"interior_small", sc_interior_small, "free: not the start of a live block"},
    {"interior_small_odd", sc_interior_small_odd, "not the start of a live block"},
    {"interior_huge", sc_interior_huge, "not the start of a live block"},
    {"interior_huge_far", sc_interior_huge_far, ""},
    {"wide_tail", sc_wide_tail, "not the start of a live block"},
    {"wide_tail_last", sc_wide_tail_last, "not the start of a live block"},
    {"wide_interior", sc_wide_interior, "not the start of a live block"},
    {"metadata_slab", sc_metadata_slab, "not the start of a live block"},
    {"free_slab", sc_free_slab, "not the start of a live block"},
    {"free_sized_interior", sc_free_sized_interior, "not the start of a live block"},
    {"realloc_foreign", sc_realloc_foreign, "realloc: pointer bitslab never returned"},
    {"realloc_interior", sc_realloc_interior, "realloc: not the start of a live block"},
    {"usable_size_foreign", sc_usable_size_foreign, "malloc_usable_size: pointer bitslab never returned"},
    {"realloc_freed", sc_realloc_freed, "realloc: use after free (the block is already free)"},
    {"realloc_freed_partial", sc_realloc_freed_partial, "realloc: use after free (the block is already free)"},
    {"realloc_freed_remote", sc_realloc_freed_remote, "realloc: use after free (the block is already free)"},
    {"realloc_freed_huge", sc_realloc_freed_huge, "realloc: use after free (the block is already free)"},
    {"realloc_in_thread_freed_remote", sc_realloc_in_thread_freed_remote,
     "realloc: use after free (the block is already free)"},
    {"usable_size_freed", sc_usable_size_freed, "malloc_usable_size: use after free (the block is already free)"},
    {"usable_size_freed_remote_other_thread", sc_usable_size_freed_remote_other_thread,
     "malloc_usable_size: use after free (the block is already free)"},
    {"free_sized_freed", sc_free_sized_freed, "free: double free (the block is already free)"},
    {"free_aligned_sized_freed_remote", sc_free_aligned_sized_freed_remote,
     "free: double free (the block is already free)"},
    {"free_sized_freed_huge", sc_free_sized_freed_huge, "free: double free (the block is already free)"},
    {"usable_size_interior", sc_usable_size_interior, "malloc_usable_size: not the start of a live block"},
};
enum { NSCENARIOS = sizeof scenarios / sizeof *scenarios };

/* ---- death tests proper ------------------------------------------------------------- */

START_TEST(test_death)
{
    const scenario_t *sc = &scenarios[_i];
    fprintf(stderr, "death scenario %d: %s\n", _i, sc->name);
    sc->run();
    ck_abort_msg("%s: returned without aborting", sc->name);
}
END_TEST

/* ---- the message ---------------------------------------------------------------------- */

/* Run `run` in a forked child whose stderr is a pipe: its output (at most
 * cap - 1 bytes, NUL-terminated) in msg, its wait status in *status. */
static size_t run_in_child(void (*run)(void), char *msg, size_t cap, int *status)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        run();
        _exit(42); /* no abort */
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fds[0], msg + len, cap - 1 - len)) > 0) len += (size_t)r;
    msg[len] = 0;
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, status, 0), pid);
    return len;
}

START_TEST(test_death_message)
{
    const scenario_t *sc = &scenarios[_i];
    atomic_store(bad_pointer, 0);
    char msg[1024];
    int status;
    size_t len = run_in_child(sc->run, msg, sizeof msg, &status);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s: no SIGABRT (status %#x), stderr: %s",
                  sc->name, status, msg);
    uintptr_t p = atomic_load(bad_pointer);
    ck_assert_msg(p != 0, "%s: scenario did not publish its pointer", sc->name);
    char want[64];
    snprintf(want, sizeof want, ": pointer 0x%lx\n", (unsigned long)p);
    ck_assert_msg(strncmp(msg, "bitslab: ", 9) == 0, "%s: message %s", sc->name, msg);
    ck_assert_msg(strstr(msg, want) != NULL, "%s: message '%s' does not name %#lx", sc->name, msg, (unsigned long)p);
    ck_assert_msg(strchr(msg, '\n') == msg + len - 1, "%s: not one line: '%s'", sc->name, msg);
    ck_assert_msg(strstr(msg, sc->what) != NULL, "%s: message '%s' does not say '%s'", sc->name, msg, sc->what);
}
END_TEST

/* ---- BITSLAB_ASSERT is live (debug builds) --------------------------------------------
 * A precondition broken on purpose, by calling an internal function as no
 * caller in the library does: the process must abort with the one line
 * "bitslab: assertion failed: <cond> (<file>:<line>, <function>)". A release
 * build compiles the assertions out (these calls then do no harm), so the
 * cases exist in debug builds only. */
#if BITSLAB_DEBUG
typedef struct assertion {
    const char *name;
    void (*run)(void);
    const char *cond, *file, *func; /* expected in the message */
} assertion_t;

/* Releases of aged superpages happen only at the top of a slow path
 * (superpage.c: the heap's in_slow count marks it, for the fork child). */
static void as_release_outside_slow_path(void)
{
    void *p = bitslab_malloc(64); /* the thread has a heap */
    (void)p;
    superpage_release_aged(bitslab_tls_heap);
}

/* A heap's count of dirty FREE slabs never goes below zero. */
static void as_dirty_count_below_zero(void)
{
    void *p = bitslab_malloc(64);
    (void)p;
    heap_t *h = bitslab_tls_heap;
    purge_dirty_add(h, -(int)h->dirty_free - 1);
}

static const assertion_t assertions[] = {
    {"release_outside_slow_path", as_release_outside_slow_path, "h->in_slow", "superpage.c:",
     "superpage_release_aged"},
    {"dirty_count_below_zero", as_dirty_count_below_zero, "delta >= 0 || h->dirty_free >= (uint32_t)-delta",
     "purge.h:", "purge_dirty_add"},
};
enum { NASSERTIONS = sizeof assertions / sizeof *assertions };

START_TEST(test_assertion_fires)
{
    const assertion_t *as = &assertions[_i];
    char msg[1024];
    int status;
    size_t len = run_in_child(as->run, msg, sizeof msg, &status);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s: no SIGABRT (status %#x), stderr: %s",
                  as->name, status, msg);
    char want[256], tail[128];
    snprintf(want, sizeof want, "bitslab: assertion failed: %s (", as->cond);
    snprintf(tail, sizeof tail, ", %s)\n", as->func);
    ck_assert_msg(strncmp(msg, want, strlen(want)) == 0, "%s: message '%s' does not start '%s'", as->name, msg, want);
    ck_assert_msg(strstr(msg, as->file) != NULL, "%s: message '%s' does not name %s", as->name, msg, as->file);
    ck_assert_msg(len > strlen(tail) && strcmp(msg + len - strlen(tail), tail) == 0,
                  "%s: message '%s' does not end '%s'", as->name, msg, tail);
    ck_assert_msg(strchr(msg, '\n') == msg + len - 1, "%s: not one line: '%s'", as->name, msg);
}
END_TEST
#endif

int main(void)
{
    /* No core files from the deliberate aborts. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    bad_pointer = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (bad_pointer == MAP_FAILED) return EXIT_FAILURE;

    Suite *s = suite_create("death");
    TCase *tc = tcase("abort");
    tcase_add_loop_test_raise_signal(tc, test_death, SIGABRT, 0, NSCENARIOS);
    suite_add_tcase(s, tc);
    tc = tcase("message");
    tcase_add_loop_test(tc, test_death_message, 0, NSCENARIOS);
    suite_add_tcase(s, tc);
#if BITSLAB_DEBUG
    tc = tcase("assertion");
    tcase_add_loop_test(tc, test_assertion_fires, 0, NASSERTIONS);
    suite_add_tcase(s, tc);
#endif
    return run_suite(s);
}
