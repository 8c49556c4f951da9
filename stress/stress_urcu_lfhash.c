/*
 * stress_urcu_lfhash: a liburcu client (issue #3 item 2.1). A concurrent
 * hash table (rculfhash, flavour urcu-memb) whose nodes come from bitslab.
 *
 *   inserters  bitslab_malloc/calloc a node of random size, write its key and
 *              a pattern, cds_lfht_add_unique it (a duplicate is freed again
 *              at once);
 *   removers   look up a random key, cds_lfht_del the node, and hand it to
 *              call_rcu: the callback verifies it and bitslab_free's it on
 *              liburcu's call_rcu worker thread, a thread that never
 *              allocates from bitslab, after a grace period;
 *   readers    look up random keys and sometimes walk the whole table,
 *              verifying every node they meet.
 *   resizer    grows and shrinks the table (cds_lfht_resize), so nodes move
 *              between buckets while the others look them up.
 * At the end the main thread removes what is left, waits for every callback
 * (by counting them: see the comment there), destroys the table, and the usual end-of-test memory
 * checks run: every node must have come back.
 *
 * ThreadSanitizer: liburcu 0.13 implements its atomics and barriers in
 * inline assembly, and the library itself is not instrumented, so TSan sees
 * neither the publication of a node in the table nor the grace period. We
 * tell it about both (stress/README.md, "liburcu under ThreadSanitizer"):
 *   publication   __tsan_release(node) before cds_lfht_add_unique;
 *                 __tsan_acquire(node) in the match function and after every
 *                 lookup, before the node's fields are read;
 *   grace period  every thread calls __tsan_release(&grace_period) just
 *                 before urcu_memb_read_unlock; the call_rcu callback calls
 *                 __tsan_acquire(&grace_period) (and acquires the node) before
 *                 it reads and frees the node. The callback runs after every
 *                 read-side section that could see the node has ended, so
 *                 it acquires all of their releases.
 * With these edges, which are exactly the guarantees liburcu documents, TSan
 * checks everything else: bitslab's remote free from the call_rcu thread and
 * the reuse of the block by the inserter that owns it.
 *
 * Usage: stress_urcu_lfhash [OPS_PER_THREAD]
 */
#include <stdlib.h>
#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

#include "stress_util.h"

#define KEYS 2048
#define NODE_MAGIC 0x6e6f64652d6c6674ull

typedef struct node {
    struct cds_lfht_node lfht;
    struct rcu_head rcu;
    uint64_t key;
    uint64_t tag;
    size_t size;
    uint64_t magic; /* NODE_MAGIC ^ address */
} node_t;

static struct cds_lfht *ht;
static char grace_period; /* the TSan sync address standing for "a grace period has elapsed" */
static atomic_size_t inserted, duplicates, removed, freed_by_callback, lookups_hit, walked;
static _Atomic uint64_t next_tag = 1;
static stress_barrier_t start_line;

static unsigned long hash_key(uint64_t key) { return (unsigned long)stress_mix64(key ^ 0x1234567u); }

static void read_lock(void) { urcu_memb_read_lock(); }

static void read_unlock(void)
{
    STRESS_TSAN_RELEASE(&grace_period); /* every read in this section happens before the callbacks after it */
    urcu_memb_read_unlock();
}

static void verify_node(node_t *n, const char *who)
{
    STRESS_CHECK(n->magic == (NODE_MAGIC ^ (uintptr_t)n), "%s: node %p has a bad magic %#llx", who, (void *)n,
                 (unsigned long long)n->magic);
    STRESS_CHECK(n->key < KEYS, "%s: node %p has key %llu out of range", who, (void *)n, (unsigned long long)n->key);
    STRESS_CHECK(n->size >= sizeof(node_t) && n->size <= bitslab_usable_size(n),
                 "%s: node %p claims %zu bytes, usable %zu", who, (void *)n, n->size, bitslab_usable_size(n));
    stress_verify(n, sizeof(node_t), n->size, stress_seed(n, n->tag), who);
}

static int match(struct cds_lfht_node *ln, const void *key)
{
    node_t *n = caa_container_of(ln, node_t, lfht);
    STRESS_TSAN_ACQUIRE(n); /* published by the inserter's release */
    return n->key == *(const uint64_t *)key;
}

static void free_node_cb(struct rcu_head *head)
{
    node_t *n = caa_container_of(head, node_t, rcu);
    STRESS_TSAN_ACQUIRE(&grace_period); /* all readers of n are done */
    STRESS_TSAN_ACQUIRE(n);
    verify_node(n, "call_rcu callback");
    stress_free(n, n->size, NULL); /* a remote free from the call_rcu worker thread */
    atomic_fetch_add(&freed_by_callback, 1);
}

static size_t OPS = 20000;
static atomic_uint inserters_done;

/* Removers and readers run at least OPS operations and until the inserters
 * are done, so the three kinds always overlap. */
static bool keep_going(size_t i) { return i < OPS || atomic_load(&inserters_done) < 2; }

static node_t *new_node(stress_rng_t *r, uint64_t key)
{
    size_t size = stress_chance(r, 2) ? stress_size_between(r, 32769, 200 << 10)
                                      : stress_size_between(r, sizeof(node_t), 2048);
    node_t *n = stress_alloc(stress_chance(r, 25) ? API_CALLOC : API_MALLOC, size, 0);
    cds_lfht_node_init(&n->lfht);
    n->key = key;
    /* Relaxed: unique tags only. */
    n->tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed);
    n->size = size;
    n->magic = NODE_MAGIC ^ (uintptr_t)n;
    stress_fill(n, sizeof(node_t), size, stress_seed(n, n->tag));
    return n;
}

static void *inserter(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(100 + id);
    urcu_memb_register_thread();
    stress_barrier_wait(&start_line);
    for (size_t i = 0; i < OPS; i++) {
        uint64_t key = stress_below(&r, KEYS);
        node_t *n = new_node(&r, key);
        STRESS_TSAN_RELEASE(n); /* publication: pairs with the acquire in match() and after lookups */
        read_lock();
        struct cds_lfht_node *ret = cds_lfht_add_unique(ht, hash_key(key), match, &key, &n->lfht);
        read_unlock();
        if (ret != &n->lfht) { /* the key was present: n was never published */
            verify_node(n, "duplicate node");
            stress_free(n, n->size, &r);
            atomic_fetch_add(&duplicates, 1);
        } else
            atomic_fetch_add(&inserted, 1);
    }
    stress_debug_check();
    atomic_fetch_add(&inserters_done, 1);
    urcu_memb_unregister_thread();
    return NULL;
}

static void *remover(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(200 + id);
    urcu_memb_register_thread();
    stress_barrier_wait(&start_line);
    for (size_t i = 0; keep_going(i); i++) {
        uint64_t key = stress_below(&r, KEYS);
        struct cds_lfht_iter iter;
        read_lock();
        cds_lfht_lookup(ht, hash_key(key), match, &key, &iter);
        struct cds_lfht_node *ln = cds_lfht_iter_get_node(&iter);
        if (ln) {
            node_t *n = caa_container_of(ln, node_t, lfht);
            STRESS_TSAN_ACQUIRE(n);
            verify_node(n, "remover lookup");
            if (cds_lfht_del(ht, ln) == 0) {
                atomic_fetch_add(&removed, 1);
                urcu_memb_call_rcu(&n->rcu, free_node_cb); /* freed after a grace period, on another thread */
            }
        }
        read_unlock();
    }
    urcu_memb_unregister_thread();
    return NULL;
}

/* Grows and shrinks the table while the others work: nodes move between
 * buckets under the readers' feet. cds_lfht_resize runs in this thread, so
 * the bucket tables it allocates and frees stay within one thread. */
static void *resizer(void *arg)
{
    (void)arg;
    urcu_memb_register_thread();
    stress_barrier_wait(&start_line);
    unsigned long size = 64;
    for (size_t i = 0; keep_going(i * 1000); i++) {
        size = size >= 8192 ? 64 : size * 4;
        cds_lfht_resize(ht, size);
        stress_relax();
    }
    urcu_memb_unregister_thread();
    return NULL;
}

static void *reader(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    stress_rng_t r = stress_rng(300 + id);
    urcu_memb_register_thread();
    stress_barrier_wait(&start_line);
    for (size_t i = 0; keep_going(i); i++) {
        read_lock();
        if (i % 2000 == 1999) { /* now and then, walk the whole table */
            struct cds_lfht_iter iter;
            node_t *n;
            size_t seen = 0;
            cds_lfht_for_each_entry(ht, &iter, n, lfht) {
                STRESS_TSAN_ACQUIRE(n);
                verify_node(n, "reader walk");
                seen++;
            }
            atomic_fetch_add(&walked, seen);
        } else {
            uint64_t key = stress_below(&r, KEYS);
            struct cds_lfht_iter iter;
            cds_lfht_lookup(ht, hash_key(key), match, &key, &iter);
            struct cds_lfht_node *ln = cds_lfht_iter_get_node(&iter);
            if (ln) {
                node_t *n = caa_container_of(ln, node_t, lfht);
                STRESS_TSAN_ACQUIRE(n);
                STRESS_CHECK(n->key == key, "lookup of key %llu found node %p with key %llu", (unsigned long long)key,
                             (void *)n, (unsigned long long)n->key);
                verify_node(n, "reader lookup");
                atomic_fetch_add(&lookups_hit, 1);
            }
        }
        read_unlock();
    }
    urcu_memb_unregister_thread();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init("urcu-lfhash");
    if (argc > 1) OPS = (size_t)atol(argv[1]);
    OPS = stress_scaled(OPS);
    stress_log("rculfhash (urcu-memb): 2 inserters, 2 removers, 2 readers, 1 resizer, %zu operations each, %u keys", OPS, KEYS);
    for (size_t round = 0; stress_more_rounds(round, 1); round++) {
        /* No CDS_LFHT_AUTO_RESIZE: liburcu would then hand resize work items
         * (malloc'd by the inserting thread, freed by its resize worker)
         * through its own workqueue, an edge inside the library that we
         * cannot annotate. The resizer thread resizes explicitly instead. */
        ht = cds_lfht_new_flavor(64, 64, 1 << 16, CDS_LFHT_ACCOUNTING, &urcu_memb_flavor, NULL);
        STRESS_CHECK(ht, "cds_lfht_new failed");
        atomic_store(&inserters_done, 0);
        /* Half the keys present from the start (the main thread's nodes). */
        {
            stress_rng_t r = stress_rng(round);
            urcu_memb_register_thread();
            for (uint64_t key = 0; key < KEYS; key += 2) {
                node_t *n = new_node(&r, key);
                STRESS_TSAN_RELEASE(n);
                read_lock();
                STRESS_CHECK(cds_lfht_add_unique(ht, hash_key(key), match, &key, &n->lfht) == &n->lfht,
                             "prefill: key %llu present twice", (unsigned long long)key);
                read_unlock();
                atomic_fetch_add(&inserted, 1);
            }
            urcu_memb_unregister_thread();
        }
        stress_barrier_init(&start_line, 7);
        pthread_t t[7];
        for (unsigned i = 0; i < 2; i++) {
            t[i] = stress_spawn(inserter, (void *)(uintptr_t)(round * 2 + i));
            t[2 + i] = stress_spawn(remover, (void *)(uintptr_t)(round * 2 + i));
            t[4 + i] = stress_spawn(reader, (void *)(uintptr_t)(round * 2 + i));
        }
        t[6] = stress_spawn(resizer, NULL);
        for (unsigned i = 0; i < 7; i++) stress_join(t[i]);
        stress_barrier_destroy(&start_line);

        /* Empty the table, wait for every callback, destroy it. */
        urcu_memb_register_thread();
        struct cds_lfht_iter iter;
        node_t *n;
        size_t left = 0;
        read_lock();
        cds_lfht_for_each_entry(ht, &iter, n, lfht) {
            STRESS_TSAN_ACQUIRE(n);
            verify_node(n, "final walk");
            if (cds_lfht_del(ht, &n->lfht) == 0) {
                left++;
                urcu_memb_call_rcu(&n->rcu, free_node_cb);
            }
        }
        read_unlock();
        urcu_memb_unregister_thread();
        /* Wait until every callback has run. Not urcu_memb_barrier(): it hands
         * a calloc'd completion from this thread to the call_rcu worker, which
         * frees it, an edge inside liburcu that TSan cannot see and we cannot
         * annotate. Our own counter, incremented last by each callback, says
         * the same (seq_cst: the callbacks' frees happen before our checks). */
        size_t expect = atomic_load(&inserted);
        while (atomic_load(&freed_by_callback) < expect) stress_relax();
        STRESS_CHECK(cds_lfht_destroy(ht, NULL) == 0, "cds_lfht_destroy failed");
        size_t ins = atomic_load(&inserted), rem = atomic_load(&removed) + left, cb = atomic_load(&freed_by_callback);
        STRESS_CHECK(ins == rem && rem == cb, "nodes: %zu inserted, %zu removed, %zu freed by callbacks", ins, rem, cb);
        stress_log("round %zu: %zu inserted (%zu duplicates freed at once), %zu removed by removers, %zu at the end; "
                   "%zu lookup hits, %zu nodes walked; all %zu freed on the call_rcu thread",
                   round, ins, atomic_load(&duplicates), atomic_load(&removed), left, atomic_load(&lookups_hit),
                   atomic_load(&walked), cb);
        atomic_store(&inserted, 0);
        atomic_store(&removed, 0);
        atomic_store(&freed_by_callback, 0);
        atomic_store(&duplicates, 0);
        atomic_store(&lookups_hit, 0);
        atomic_store(&walked, 0);
    }
    static const char *const targets[] = {"free_into_abandoned_heap", "remote_free_during_drain", NULL};
    stress_bounds_t b = {.max_superpages = 64, .targets = targets};
    stress_finish(&b);
    return 0;
}
