/*
 * stress_urcu_wfcq: a liburcu client (issue #3 item 2.2). A two-stage
 * pipeline on wait-free concurrent queues (urcu/wfcqueue.h) whose messages
 * come from bitslab:
 *
 *   producers --Q1--> relays --Q2--> sinks
 *
 *   producers  allocate a message of random size (mostly small, some
 *              multi-slab), write a pattern, enqueue it on Q1;
 *   relays     dequeue from Q1 (cds_wfcq_dequeue_blocking), verify, copy the
 *              payload's checksum into a new message of another size that
 *              they allocate, free the old one (a remote free into a
 *              producer's heap) and enqueue the new one on Q2;
 *   sinks      splice all of Q2 into a private queue at once
 *              (cds_wfcq_splice_blocking), then dequeue, verify and free each
 *              message (remote frees into the relays' heaps).
 * Every message must arrive exactly once; at the end all memory must be
 * back (end-of-test checks). At most MAX_IN_FLIGHT messages are in the
 * pipeline at once, so the memory bound holds however long a soak runs.
 *
 * ThreadSanitizer: the queue's atomics are inline assembly in an
 * uninstrumented library, so TSan cannot see that an enqueue happens before
 * the matching dequeue. We annotate that edge at the queue boundary:
 * __tsan_release(msg) right before every enqueue, __tsan_acquire(msg) right
 * after every dequeue (stress/README.md, "liburcu under ThreadSanitizer").
 *
 * Usage: stress_urcu_wfcq [MESSAGES_PER_PRODUCER]
 */
#include <stdlib.h>
#include <urcu/compiler.h>
#include <urcu/wfcqueue.h>

#include "stress_util.h"

#define PRODUCERS 2
#define RELAYS 2
#define SINKS 2
#define MSG_MAGIC 0x6d73672d77666371ull

typedef struct msg {
    struct cds_wfcq_node qn;
    uint64_t tag;
    uint64_t origin; /* the producer's tag, carried through the relay */
    size_t size;
    uint64_t magic; /* MSG_MAGIC ^ address ^ stage */
    unsigned stage; /* 1: from a producer, 2: from a relay */
} msg_t;

static struct cds_wfcq_head q1_head, q2_head;
static struct cds_wfcq_tail q1_tail, q2_tail;
static size_t MESSAGES = 25000;
static atomic_size_t relayed, sunk;
static atomic_size_t produced;
/* Flow control: producers wait while this many messages are in the pipeline,
 * so the live set (and the memory bound checked at the end) does not depend
 * on how far the producers run ahead. */
#define MAX_IN_FLIGHT 4096
static _Atomic uint64_t next_tag = 1;
static _Atomic uint64_t origin_sum_in, origin_sum_out; /* every origin tag arrives exactly once */

static msg_t *new_msg(stress_rng_t *r, unsigned stage, uint64_t origin)
{
    size_t size = stress_chance(r, 2) ? stress_size_between(r, 32769, 256 << 10)
                                      : stress_size_between(r, sizeof(msg_t), 4096);
    size_t align;
    enum stress_api api = stress_pick_api(r, size, &align);
    if (align > 4096) align = 4096;
    msg_t *m = stress_alloc(api, size, align);
    cds_wfcq_node_init(&m->qn);
    m->tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed); /* relaxed: unique tags */
    m->origin = origin ? origin : m->tag;
    m->size = size;
    m->stage = stage;
    m->magic = MSG_MAGIC ^ (uintptr_t)m ^ stage;
    stress_fill(m, sizeof(msg_t), size, stress_seed(m, m->tag));
    return m;
}

static void verify_msg(msg_t *m, unsigned stage, const char *who)
{
    STRESS_CHECK(m->stage == stage && m->magic == (MSG_MAGIC ^ (uintptr_t)m ^ stage),
                 "%s: message %p has stage %u magic %#llx", who, (void *)m, m->stage, (unsigned long long)m->magic);
    STRESS_CHECK(m->size >= sizeof(msg_t) && m->size <= bitslab_usable_size(m), "%s: message %p claims %zu bytes",
                 who, (void *)m, m->size);
    stress_verify(m, sizeof(msg_t), m->size, stress_seed(m, m->tag), who);
}

static void enqueue(struct cds_wfcq_head *h, struct cds_wfcq_tail *t, msg_t *m)
{
    STRESS_TSAN_RELEASE(m); /* everything written to m happens before the dequeuer's acquire */
    cds_wfcq_enqueue(h, t, &m->qn);
}

static void *producer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(10 + id);
    uint64_t sum = 0;
    for (size_t i = 0; i < MESSAGES; i++) {
        while (atomic_load(&produced) - atomic_load(&sunk) >= MAX_IN_FLIGHT) stress_relax();
        atomic_fetch_add(&produced, 1);
        msg_t *m = new_msg(&r, 1, 0);
        sum += m->origin;
        enqueue(&q1_head, &q1_tail, m);
    }
    atomic_fetch_add(&origin_sum_in, sum);
    stress_debug_check();
    return NULL;
}

static void *relay(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(20 + id);
    const size_t total = PRODUCERS * MESSAGES;
    size_t idle = 0;
    while (atomic_load(&relayed) < total) {
        struct cds_wfcq_node *n = cds_wfcq_dequeue_blocking(&q1_head, &q1_tail);
        if (!n) {
            if (++idle % 4 == 0) stress_relax();
            continue;
        }
        msg_t *m = caa_container_of(n, msg_t, qn);
        STRESS_TSAN_ACQUIRE(m);
        verify_msg(m, 1, "relay");
        msg_t *m2 = new_msg(&r, 2, m->origin);
        stress_free(m, m->size, &r); /* remote: a producer allocated it */
        enqueue(&q2_head, &q2_tail, m2);
        atomic_fetch_add(&relayed, 1);
    }
    stress_debug_check();
    return NULL;
}

static void *sink(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(30 + id);
    const size_t total = PRODUCERS * MESSAGES;
    struct cds_wfcq_head mine_head;
    struct cds_wfcq_tail mine_tail;
    cds_wfcq_init(&mine_head, &mine_tail);
    uint64_t sum = 0;
    size_t idle = 0;
    while (atomic_load(&sunk) < total) {
        /* Take everything Q2 holds at once, then drain the private queue. */
        cds_wfcq_splice_blocking(&mine_head, &mine_tail, &q2_head, &q2_tail);
        size_t got = 0;
        struct cds_wfcq_node *n;
        while ((n = __cds_wfcq_dequeue_blocking(&mine_head, &mine_tail))) {
            msg_t *m = caa_container_of(n, msg_t, qn);
            STRESS_TSAN_ACQUIRE(m);
            verify_msg(m, 2, "sink");
            sum += m->origin;
            stress_free(m, m->size, &r); /* remote: a relay allocated it */
            got++;
        }
        if (got) atomic_fetch_add(&sunk, got);
        else if (++idle % 4 == 0) stress_relax();
    }
    cds_wfcq_destroy(&mine_head, &mine_tail);
    atomic_fetch_add(&origin_sum_out, sum);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("urcu-wfcq");
    if (argc > 1) MESSAGES = (size_t)atol(argv[1]);
    MESSAGES = stress_scaled(MESSAGES);
    stress_log("wfcqueue pipeline: %d producers -> %d relays -> %d sinks, %zu messages per producer", PRODUCERS,
               RELAYS, SINKS, MESSAGES);
    for (size_t round = 0; stress_more_rounds(round, 1); round++) {
        cds_wfcq_init(&q1_head, &q1_tail);
        cds_wfcq_init(&q2_head, &q2_tail);
        atomic_store(&relayed, 0);
        atomic_store(&sunk, 0);
        atomic_store(&produced, 0);
        atomic_store(&origin_sum_in, 0);
        atomic_store(&origin_sum_out, 0);
        pthread_t t[PRODUCERS + RELAYS + SINKS];
        unsigned k = 0;
        for (unsigned i = 0; i < SINKS; i++) t[k++] = stress_spawn(sink, (void *)(uintptr_t)(round * 8 + i));
        for (unsigned i = 0; i < RELAYS; i++) t[k++] = stress_spawn(relay, (void *)(uintptr_t)(round * 8 + i));
        for (unsigned i = 0; i < PRODUCERS; i++) t[k++] = stress_spawn(producer, (void *)(uintptr_t)(round * 8 + i));
        for (unsigned i = 0; i < k; i++) stress_join(t[i]);
        STRESS_CHECK(cds_wfcq_empty(&q1_head, &q1_tail) && cds_wfcq_empty(&q2_head, &q2_tail),
                     "messages left in the queues");
        STRESS_CHECK(atomic_load(&relayed) == PRODUCERS * MESSAGES && atomic_load(&sunk) == PRODUCERS * MESSAGES,
                     "relayed %zu, sunk %zu of %zu", atomic_load(&relayed), atomic_load(&sunk),
                     (size_t)PRODUCERS * MESSAGES);
        STRESS_CHECK(atomic_load(&origin_sum_in) == atomic_load(&origin_sum_out),
                     "a message was lost or duplicated (origin checksums differ)");
        cds_wfcq_destroy(&q1_head, &q1_tail);
        cds_wfcq_destroy(&q2_head, &q2_tail);
        stress_log("round %zu: %zu messages through both stages", round, (size_t)PRODUCERS * MESSAGES);
        if (stress_cfg.verbose) stress_print_stats("after the round");
    }
    static const char *const targets[] = {"remote_free_during_drain", "queue_producer_stalled",
                                          "free_into_abandoned_heap", NULL};
    stress_bounds_t b = {.max_superpages = 64, .targets = targets};
    stress_finish(&b);
    return 0;
}
