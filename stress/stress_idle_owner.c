/*
 * stress_idle_owner: the idle owner (issue #3 item 1f; design brief 3.2).
 *
 * Thread A allocates N blocks (small classes and some multi-slab) and hands
 * them all to thread B, which verifies and frees every one: remote frees.
 * A does not allocate again, so nothing merges those frees by itself.
 *
 *   phase "collect": A waits for B, then the process must show exactly N
 *     remote frees pending; A calls bitslab_collect(), after which its heap
 *     holds nothing, process in_use is 0 and committed memory is back to the
 *     superpage headers.
 *   phase "exit-after": as above, but A exits instead of collecting: its
 *     thread-exit collection must leave the same result.
 *   phase "exit-before": A exits first, with its N blocks live; B then frees
 *     them into the abandoned heap (free_into_abandoned_heap). N frees must
 *     be pending; then a new thread C adopts the heap
 *     (adopt_with_pending_remote), and after its bitslab_collect() in_use is
 *     0 again.
 *
 * The phases need a quiescent process for exact figures: only A, B (and C)
 * run, B never allocates (no heap of its own), and the main thread neither
 * allocates nor frees bitslab memory. Each phase repeats ROUNDS times with
 * a different mix.
 *
 * Usage: stress_idle_owner [N [ROUNDS]]
 */
#include <stdlib.h>

#include "stress_util.h"

typedef struct blk {
    void *p;
    size_t size;
} blk_t;

static size_t N = 20000;
static blk_t *blocks;            /* libc memory: not part of the figures */
static atomic_int stage;         /* 1: blocks published to B; 2: B freed them all */
static stress_barrier_t a_exited; /* exit-before: B starts freeing after A is gone */

enum phase { PH_COLLECT, PH_EXIT_AFTER, PH_EXIT_BEFORE, PH_COUNT };
static const char *const phase_name[PH_COUNT] = {"collect", "exit-after", "exit-before"};

typedef struct ctx {
    enum phase ph;
    unsigned round;
} ctx_t;

static void wait_stage(int s)
{
    while (atomic_load(&stage) < s) stress_relax();
}

static size_t expected_small, expected_wide; /* usable bytes of A's small blocks, and its wide blocks */

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Exact process figures once B is done and before anyone merges. */
static void check_pending(const char *when)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    STRESS_CHECK(st.remote_frees_pending == N, "%s: %zu remote frees pending, expected exactly %zu", when,
                 st.remote_frees_pending, N);
    /* Remotely freed but unmerged blocks are not in use, they are pending.
     * Exact: the caller is A itself (its own word caches) or A has exited
     * (its caches were emptied). */
    size_t pending_small = 0;
    for (unsigned c = 0; c < BITSLAB_NUM_CLASSES; c++) pending_small += st.classes[c].bins_pending * st.classes[c].bin_size;
    STRESS_CHECK(st.in_use == 0, "%s: in_use %zu, every block was freed remotely", when, st.in_use);
    STRESS_CHECK(pending_small == expected_small, "%s: %zu small bytes pending, expected %zu", when, pending_small,
                 expected_small);
    STRESS_CHECK(st.wide_allocations == 0, "%s: %zu wide allocations live, all %zu were freed", when,
                 st.wide_allocations, expected_wide);
}

/* Exact process figures after the owner merged everything. */
static void check_clean(const char *when)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    STRESS_CHECK(st.remote_frees_pending == 0, "%s: %zu remote frees still pending", when, st.remote_frees_pending);
    STRESS_CHECK(st.in_use == 0, "%s: in_use %zu after the owner merged every free", when, st.in_use);
    STRESS_CHECK(st.wide_allocations == 0, "%s: %zu wide allocations left", when, st.wide_allocations);
    STRESS_CHECK(st.superpages_owned == 0, "%s: %zu superpages still owned, all are empty", when, st.superpages_owned);
    size_t bound = st.superpages_total * 4096 + ((st.heaps_total + 63) / 64) * (256u << 10) + (256u << 10);
    STRESS_CHECK(st.committed <= bound, "%s: committed %zu bytes, bound %zu (superpage headers + heaps)", when,
                 st.committed, bound);
}

static void *thread_a(void *arg)
{
    ctx_t *c = arg;
    stress_rng_t r = stress_rng(1000 + c->round * 10 + c->ph);
    expected_small = 0;
    expected_wide = 0;
    for (size_t i = 0; i < N; i++) {
        size_t size = stress_chance(&r, 1) ? stress_size_between(&r, 32769, 512 << 10)
                                           : stress_size_between(&r, 1, stress_chance(&r, 10) ? 32768 : 512);
        size_t align;
        enum stress_api api = stress_pick_api(&r, size, &align);
        if (align > 32768) align = 32768; /* no huge blocks: they are not remote frees */
        blocks[i].p = stress_alloc(api, size, align);
        blocks[i].size = size;
        size_t usable = bitslab_usable_size(blocks[i].p);
        if (usable > 32768) expected_wide++;
        else expected_small += usable;
        stress_fill(blocks[i].p, 0, size, stress_seed(blocks[i].p, i));
    }
    stress_debug_check();
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    STRESS_CHECK(hi.remote_frees_pending == 0, "A: %zu remote frees pending before B started",
                 hi.remote_frees_pending);
    atomic_store(&stage, 1); /* seq_cst: publishes the blocks and their contents to B */
    if (c->ph == PH_EXIT_BEFORE) return NULL;
    wait_stage(2); /* idle: B frees everything, A allocates nothing */
    bitslab_heap_info(&hi);
    STRESS_CHECK(hi.remote_frees_pending == N, "A (%s): own heap shows %zu remote frees pending, expected %zu",
                 phase_name[c->ph], hi.remote_frees_pending, N);
    if (c->ph == PH_COLLECT) {
        check_pending("idle owner before collect");
        bitslab_collect();
        bitslab_heap_info(&hi);
        STRESS_CHECK(hi.bytes_in_use == 0 && hi.remote_frees_pending == 0 && hi.wide_allocations == 0,
                     "after collect: own heap still holds %zu bytes, %zu pending, %zu wide", hi.bytes_in_use,
                     hi.remote_frees_pending, hi.wide_allocations);
        STRESS_CHECK(hi.superpages == 0, "after collect: own heap still owns %zu superpages", hi.superpages);
        stress_debug_check();
        check_clean("idle owner after collect");
    }
    return NULL; /* PH_EXIT_AFTER: the exit collection merges the frees */
}

static void *thread_b(void *arg)
{
    ctx_t *c = arg;
    stress_rng_t r = stress_rng(2000 + c->round * 10 + c->ph);
    wait_stage(1);
    if (c->ph == PH_EXIT_BEFORE) stress_barrier_wait(&a_exited);
    /* Free in a random order (a random permutation walk). */
    size_t step = 1 + 2 * stress_below(&r, N), start = stress_below(&r, N);
    while (gcd(step, N) != 1) step++;
    for (size_t k = 0; k < N; k++) {
        blk_t *b = &blocks[(start + k * step) % N];
        stress_verify(b->p, 0, b->size, stress_seed(b->p, (size_t)(b - blocks)), "B before remote free");
        stress_free(b->p, b->size, &r);
        b->p = NULL;
    }
    /* B never allocated: it has no heap, so every free above was remote. */
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    STRESS_CHECK(hi.superpages == 0, "B got a heap (%zu superpages) without allocating", hi.superpages);
    atomic_store(&stage, 2);
    return NULL;
}

static void *thread_c(void *arg)
{
    (void)arg;
    /* The first allocation adopts the abandoned heap (the pool's top). */
    void *p = bitslab_malloc(64);
    STRESS_CHECK(p, "C: malloc failed");
    stress_live_add(p);
    stress_live_del(p);
    bitslab_free(p);
    bitslab_collect();
    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    STRESS_CHECK(hi.bytes_in_use == 0 && hi.remote_frees_pending == 0,
                 "C: adopted heap still holds %zu bytes and %zu pending frees after collect", hi.bytes_in_use,
                 hi.remote_frees_pending);
    stress_debug_check();
    check_clean("adopter after collect");
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("idle-owner");
    if (argc > 1) N = (size_t)atol(argv[1]);
    size_t rounds = stress_scaled(argc > 2 ? (size_t)atol(argv[2]) : 3);
    if (N < 1) N = 1;
    blocks = calloc(N, sizeof *blocks);
    STRESS_CHECK(blocks, "out of memory");
    stress_log("%zu blocks per phase, %zu rounds", N, rounds);
    for (size_t round = 0; stress_more_rounds(round, rounds); round++) {
        for (int ph = 0; ph < PH_COUNT; ph++) {
            ctx_t c = {(enum phase)ph, (unsigned)round};
            atomic_store(&stage, 0);
            stress_barrier_init(&a_exited, 2);
            pthread_t b = stress_spawn(thread_b, &c);
            pthread_t a = stress_spawn(thread_a, &c);
            stress_join(a);
            if (ph == PH_EXIT_BEFORE) {
                stress_barrier_wait(&a_exited); /* A is gone: B frees into its abandoned heap */
            }
            stress_join(b);
            stress_barrier_destroy(&a_exited);
            switch (ph) {
            case PH_COLLECT: break; /* checked by A */
            case PH_EXIT_AFTER: check_clean("owner exited after the remote frees"); break;
            case PH_EXIT_BEFORE: {
                check_pending("frees into an exited owner's heap");
                pthread_t t = stress_spawn(thread_c, NULL);
                stress_join(t);
                break;
            }
            }
            if (stress_cfg.verbose || round == 0) {
                char label[64];
                snprintf(label, sizeof label, "round %zu phase %s", round, phase_name[ph]);
                stress_print_stats(label);
            }
        }
    }
    free(blocks);
    static const char *const targets[] = {"free_into_abandoned_heap", "adopt_with_pending_remote",
                                          "release_deferred_inflight", "release_deferred_queued", NULL};
    /* One heap for the whole run: every A and C adopt the one heap there is. */
    stress_bounds_t b = {.max_superpages = 64, .max_heaps = 1, .targets = targets};
    stress_finish(&b);
    return 0;
}
