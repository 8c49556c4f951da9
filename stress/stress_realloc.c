/*
 * stress_realloc: realloc ping-pong between threads (issue #3 item 1e).
 *
 * THREADS threads sit on a ring; TOKENS blocks ("tokens") travel around it
 * through single-producer single-consumer queues. A thread that receives a
 * token verifies its whole content, reallocs it to a new size (small, wide
 * or huge: the block usually moves, and is freed by a thread that did not
 * allocate it), verifies that the prefix both sizes share survived, writes
 * the pattern over the rest, and passes it on. The pattern depends only on
 * the token's seed and the offset, not on the address, so a move must carry
 * it over exactly. After HOPS hops a token is freed and a new one is created
 * in its place, until TOTAL tokens have been made.
 *
 * Usage: stress_realloc [THREADS [TOTAL_TOKENS [HOPS]]]
 */
#include <stdlib.h>

#include "stress_util.h"

#define TOKENS 32
#define QCAP 64 /* >= TOKENS: a push never finds the queue full */

typedef struct token {
    void *p;
    size_t size;
    uint64_t seed;
    unsigned hops;
} token_t;

typedef struct queue {
    alignas(64) _Atomic size_t head;
    alignas(64) _Atomic size_t tail;
    token_t slot[QCAP];
} queue_t;

static queue_t *queues;
static unsigned THREADS = 4;
static size_t TOTAL = 2000;
static unsigned HOPS = 24;
static atomic_size_t created, retired;

static void q_push(queue_t *q, const token_t *t)
{
    size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed); /* relaxed: single producer */
    /* Acquire: the consumer is done with the slot. Never full: QCAP >= TOKENS. */
    if (tail - atomic_load_explicit(&q->head, memory_order_acquire) >= QCAP) stress_fail("token queue overflow");
    q->slot[tail % QCAP] = *t;
    /* Release: publishes the token and its block's contents. */
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

static bool q_pop(queue_t *q, token_t *t)
{
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed); /* relaxed: single consumer */
    /* Acquire: pairs with the producer's release. */
    if (head == atomic_load_explicit(&q->tail, memory_order_acquire)) return false;
    *t = q->slot[head % QCAP];
    /* Release: pairs with the producer's acquire. */
    atomic_store_explicit(&q->head, head + 1, memory_order_release);
    return true;
}

static size_t pick_size(stress_rng_t *r)
{
    unsigned x = (unsigned)stress_below(r, 100);
    if (x < 75) return stress_size_between(r, 1, 32768);
    if (x < 96) return stress_size_between(r, 32769, 1 << 20);
    return stress_size_between(r, (1 << 20) + 1, 3 << 20);
}

static bool new_token(stress_rng_t *r, token_t *t)
{
    /* Relaxed: a ticket counter; the queues carry the data. */
    if (atomic_fetch_add_explicit(&created, 1, memory_order_relaxed) >= TOTAL) return false;
    t->size = pick_size(r);
    t->seed = stress_rand(r);
    t->hops = 0;
    size_t align;
    enum stress_api api = stress_pick_api(r, t->size, &align);
    t->p = stress_alloc(api, t->size, align);
    stress_fill(t->p, 0, t->size, t->seed);
    return true;
}

static void *worker_main(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(id);
    queue_t *in = &queues[id], *out = &queues[(id + 1) % THREADS];
    /* Each thread starts its share of the tokens. */
    for (unsigned i = id; i < TOKENS; i += THREADS) {
        token_t t;
        if (new_token(&r, &t)) q_push(out, &t);
    }
    size_t idle = 0;
    while (atomic_load(&retired) < TOTAL) {
        token_t t;
        if (!q_pop(in, &t)) {
            if (++idle % 4 == 0) stress_relax();
            continue;
        }
        stress_verify(t.p, 0, t.size, t.seed, "token on arrival");
        if (++t.hops >= HOPS) {
            stress_free(t.p, t.size, &r);
            atomic_fetch_add(&retired, 1);
            if (!new_token(&r, &t)) continue;
        } else {
            size_t size = pick_size(&r);
            if (stress_chance(&r, 5)) size = t.size; /* same size: must stay put or move intact */
            stress_live_del(t.p);
            void *q;
            if (stress_chance(&r, 10)) {
                size = (size + 7) / 8 * 8;
                q = bitslab_reallocarray(t.p, size / 8, 8);
            } else
                q = bitslab_realloc(t.p, size);
            STRESS_CHECK(q, "realloc(%p, %zu) failed", t.p, size);
            stress_live_add(q);
            size_t usable = bitslab_usable_size(q);
            STRESS_CHECK(usable >= size, "realloc'd block %p: usable %zu < %zu", q, usable, size);
            size_t keep = t.size < size ? t.size : size;
            stress_verify(q, 0, keep, t.seed, "realloc preserved prefix");
            if (size > t.size) stress_fill(q, t.size, size, t.seed);
            t.p = q;
            t.size = size;
        }
        q_push(out, &t);
    }
    stress_debug_check();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("realloc");
    if (argc > 1) THREADS = (unsigned)atoi(argv[1]);
    if (argc > 2) TOTAL = (size_t)atol(argv[2]);
    if (argc > 3) HOPS = (unsigned)atoi(argv[3]);
    if (THREADS < 2) THREADS = 2;
    TOTAL = stress_scaled(TOTAL);
    stress_log("%u threads, %u tokens in flight, %zu tokens of %u hops", THREADS, TOKENS, TOTAL, HOPS);
    queues = aligned_alloc(64, THREADS * sizeof(queue_t));
    pthread_t *t = calloc(THREADS, sizeof *t);
    STRESS_CHECK(queues && t, "out of memory");
    for (size_t round = 0; stress_more_rounds(round, 1); round++) {
        for (unsigned i = 0; i < THREADS; i++) {
            atomic_init(&queues[i].head, 0);
            atomic_init(&queues[i].tail, 0);
        }
        atomic_store(&created, 0);
        atomic_store(&retired, 0);
        for (unsigned i = 0; i < THREADS; i++) t[i] = stress_spawn(worker_main, (void *)(uintptr_t)i);
        for (unsigned i = 0; i < THREADS; i++) stress_join(t[i]);
        for (unsigned i = 0; i < THREADS; i++)
            STRESS_CHECK(atomic_load(&queues[i].head) == atomic_load(&queues[i].tail), "token left in queue %u", i);
        stress_log("round %zu: %zu tokens, %zu reallocs", round, TOTAL, TOTAL * (HOPS - 1));
    }
    free(queues);
    free(t);
    static const char *const targets[] = {"remote_free_during_drain", "release_deferred_inflight",
                                          "release_deferred_queued", NULL};
    stress_bounds_t b = {.max_superpages = 32 + 8 * (size_t)THREADS, .targets = targets};
    stress_finish(&b);
    return 0;
}
