/*
 * purger_known_bugs: reproducers of two defects of the owner side of the
 * purger protocol (docs/purger.md) that stress_purger found, pinned so that
 * they stay visible until fixed. Each case runs single-threaded in a forked
 * child, with BITSLAB_BACKGROUND_PURGE=1 (owners donate sparse slabs) and
 * BITSLAB_PURGE_DELAY_MS=-1 (the purger thread never passes: deterministic);
 * the meson test sets both.
 *
 * The test passes while every case still reproduces its defect, and FAILS
 * once one does not: then the defect was fixed (or moved). Drop the case,
 * and for the orphaned donations the tolerance in stress_purger.c
 * (orphaned_donations), so that stress_purger checks it strictly.
 *
 *   activated  A slab donated at a sparse level (its free bins moved to the
 *              remote map, slab_donate) then gets local free bins again. The
 *              reclaim loop of alloc_from_slabs merges a PARTIAL slab only if
 *              it has no local free bin (`if (!s->summary)`), so it
 *              activates this one with its donated bins still in the remote
 *              map, and slab_activate clears its sparse mark. No
 *              notification (remote_slabs) names them either. Nothing ever
 *              merges them: not the drain, not the scan of
 *              bitslab_collect(), not heap_purge_sparse, not the purger
 *              (purger_pass looks only at sparse marks and queued
 *              superpages). After the program frees everything, they stay
 *              "pending", `used` stays at their number, the slab never
 *              becomes FREE and its superpage is never released (thread
 *              exit and bitslab_collect() included).
 *   refilled   The same slab, activated, allocated out (FULL with `used` ==
 *              nbins, the donated bins counted) and then freed: its first
 *              free makes it PARTIAL with at most nbins/32 live, so no
 *              sparse level is left below it (trigger 0): never marked
 *              again, the same end. (stress_purger sees this one most.)
 *   collect    bitslab_collect() (heap_collect(h, true), also at thread
 *              exit) tries its superpage releases before its sparse purge
 *              (heap_purge_sparse), whose merges empty the donated slabs:
 *              a superpage that only that purge empties stays with the heap
 *              (committed metadata, and an abandoned heap keeps it) until
 *              the next collect or slow path.
 *
 * Suggested fixes (not made here): take the donated bins back before a slab
 * is activated (merge in the reclaim loop when s->donated != 0, not only when
 * summary == 0; bins a purger holds then come back with its notification),
 * and run heap_purge_sparse before the release loop of heap_collect.
 *
 * Usage: purger_known_bugs [CASE]   (no argument: every case)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitslab.h"

static bitslab_heap_info_t info(void)
{
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    return hi;
}

static void *xmalloc(size_t n)
{
    void *p = bitslab_malloc(n);
    if (!p) {
        fprintf(stderr, "malloc failed\n");
        exit(3);
    }
    return p;
}

/* 1 if the defect shows, 0 if it does not; both print what they saw. */
static int orphaned_case(int refill)
{
    /* 1 KiB bins: 64 per slab, sparse levels 16, 8, 4, 2; 64-byte bins: 1024,
     * levels 256, 128, 64, 32. */
    size_t size = refill ? 1024 : 64, nbins = 65536 / size;
    static void *p[4096];
    size_t n = 0;
    for (size_t i = 0; i < 2 * nbins; i++) p[n++] = xmalloc(size); /* slab A full; B active, used up */
    /* A: down to 1/32 live (refill) or 1/4 (activated), donating at each
     * level; then one or ten more local frees: local free bins again. */
    size_t keep = refill ? 2 : nbins / 4, extra = refill ? 1 : 10;
    for (size_t i = 0; i < nbins - keep + extra; i++) {
        bitslab_free(p[i]);
        p[i] = NULL;
    }
    /* B is used up: the reclaim loop activates A, whose donated bins stay
     * in the remote map. refill: allocate A out (FULL), one more from a new
     * slab. */
    size_t more = refill ? extra + 1 : 5;
    for (size_t i = 0; i < more; i++) p[n++] = xmalloc(size);
    for (size_t i = 0; i < n; i++)
        if (p[i]) bitslab_free(p[i]);
    bitslab_collect();
    bitslab_collect();
    bitslab_heap_info_t hi = info();
    printf("%s: everything freed, two collects: %zu bytes in use, %zu remote frees pending, %zu small slabs, "
           "%zu superpages\n",
           refill ? "refilled" : "activated", hi.bytes_in_use, hi.remote_frees_pending, hi.slabs_small, hi.superpages);
    if (hi.bytes_in_use) {
        fprintf(stderr, "unexpected: bytes still in use\n");
        abort();
    }
    return hi.remote_frees_pending > 0 && hi.slabs_small > 0 && hi.superpages > 0;
}

static int collect_case(void)
{
    /* 64-byte bins: slabs A, B full, C active; A and B freed down to 1/4,
     * donated; then everything freed. A and B keep `used` == their donated
     * bins until a merge: only heap_purge_sparse, inside the collect. */
    static void *p[3 * 1024];
    size_t n = 0;
    for (size_t i = 0; i < 3 * 1024; i++) p[n++] = xmalloc(64);
    for (size_t i = 0; i < n; i++) bitslab_free(p[i]);
    bitslab_collect();
    bitslab_heap_info_t first = info();
    bitslab_collect();
    bitslab_heap_info_t second = info();
    printf("collect: everything freed; after one collect %zu superpages (%zu small slabs, %zu pending), after "
           "two %zu\n",
           first.superpages, first.slabs_small, first.remote_frees_pending, second.superpages);
    if (first.slabs_small || first.remote_frees_pending || second.superpages) {
        fprintf(stderr, "unexpected: the superpage is not empty after the first collect, or stays\n");
        abort();
    }
    return first.superpages > 0;
}

static const char *const cases[] = {"activated", "refilled", "collect"};

static int run_case(const char *name)
{
    if (!strcmp(name, "activated")) return orphaned_case(0);
    if (!strcmp(name, "refilled")) return orphaned_case(1);
    if (!strcmp(name, "collect")) return collect_case();
    fprintf(stderr, "unknown case %s\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    long bg = 0, delay = 0;
    if (bitslab_option_get("background_purge", &bg) || bitslab_option_get("purge_delay_ms", &delay) || bg != 1 ||
        delay != -1) {
        puts("purger_known_bugs: needs BITSLAB_BACKGROUND_PURGE=1 BITSLAB_PURGE_DELAY_MS=-1; skipped");
        return 77;
    }
    if (argc > 1) return run_case(argv[1]) ? 0 : 1;
    int fixed = 0;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) return 2;
        if (pid == 0) {
            int shows = run_case(cases[c]);
            fflush(stdout);
            _exit(shows ? 0 : 1);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) > 1) {
            fprintf(stderr, "purger_known_bugs: case %s crashed or failed (status %#x)\n", cases[c], st);
            return 2;
        }
        if (WEXITSTATUS(st) == 1) {
            printf("case %s: the defect no longer shows: fixed? drop the case (and its tolerance)\n", cases[c]);
            fixed++;
        } else {
            printf("case %s: KNOWN BUG still there\n", cases[c]);
        }
    }
    return fixed ? 1 : 0;
}
