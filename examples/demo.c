/* A short tour: allocate across every path from two threads, free some of it
 * from the other thread, and print the heap statistics at each step. Then a
 * server-like workload: four threads in a ring pass messages of mixed sizes
 * to each other (every free is a remote free) while each keeps a table of
 * long-lived sessions, and the program prints bitslab_stats_print()'s table
 * and, if asked, writes the heap map for tools/bitslab-heapmap.
 *
 *   bitslab-demo [--heap-map FILE] [--stats-json FILE]
 */
#define _POSIX_C_SOURCE 200809L /* barriers, nanosleep */
#include <bitslab.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 20000

static void *blocks[N];

static void print_stats(const char *when)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    printf("%-34s mapped %7.1f MiB  committed %7.1f MiB  in use %7.1f MiB  superpages %zu (orphaned %zu)"
           "  huge %zu  remote pending %zu\n",
           when, st.mapped / 1048576.0, st.committed / 1048576.0, st.in_use / 1048576.0, st.superpages_total,
           st.superpages_orphaned, st.huge_allocations, st.remote_frees_pending);
}

static void *other_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i += 2) bitslab_free(blocks[i]); /* remote frees: wait-free bit flips */
    return NULL;
}

static void tour(void)
{
    print_stats("start");
    for (int i = 0; i < N; i++) {
        size_t size = (size_t)(16 + (i * 37) % 4000);
        blocks[i] = bitslab_malloc(size);
        memset(blocks[i], i & 0xff, size);
    }
    void *wide = bitslab_malloc(300 * 1024);
    void *huge = bitslab_calloc(1, 8u << 20);
    print_stats("after 20000 small + wide + huge");

    bitslab_heap_info_t hi = {.struct_size = sizeof hi};
    bitslab_heap_info(&hi);
    printf("main heap: %zu superpages, %zu small slabs, %zu wide slabs, %zu free slabs, %.1f KiB in use\n",
           hi.superpages, hi.slabs_small, hi.slabs_wide, hi.slabs_free, hi.bytes_in_use / 1024.0);
    printf("  class   bin  slabs  bins in use / total\n");
    for (int c = 0; c < BITSLAB_NUM_CLASSES; c++)
        if (hi.classes[c].slabs)
            printf("  %5d %5zu %6zu %8zu / %zu\n", c, hi.classes[c].bin_size, hi.classes[c].slabs,
                   hi.classes[c].bins_in_use, hi.classes[c].bins_total);

    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    print_stats("after another thread freed half");
    bitslab_collect();
    print_stats("after bitslab_collect()");
    for (int i = 1; i < N; i += 2) bitslab_free(blocks[i]);
    bitslab_free(wide);
    bitslab_free(huge);
    bitslab_collect();
    print_stats("after freeing everything + collect");
}

/* ---- the ring ---------------------------------------------------------------- */

#define RING_THREADS 4
#define RING_SLOTS 1024
#define MESSAGES 150000 /* per thread */
#define SESSIONS 3000   /* long-lived objects per thread */

typedef struct ring {
    _Atomic size_t head; /* written by the consumer */
    char pad[56];
    _Atomic size_t tail; /* written by the producer */
    void *slot[RING_SLOTS];
} ring_t;

static ring_t rings[RING_THREADS]; /* rings[i]: thread i -> thread i + 1 */
static _Atomic size_t total_sent;
static atomic_int pause_ring;     /* main asks the ring to stop for a snapshot */
static pthread_barrier_t paused;  /* RING_THREADS + main: all stopped, then all go on */

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Message sizes of a small server: mostly headers and short bodies, some
 * pages, the odd large buffer. */
static size_t message_size(uint64_t *r)
{
    uint64_t x = next_rand(r);
    switch (x % 100) {
    case 0: return 64 * 1024 + x % (256 * 1024); /* multi-slab */
    case 1: case 2: case 3: return 4096 + x % 28672;
    default: return 16 + (x >> 8) % ((x % 4 == 0) ? 2048 : 256);
    }
}

static void *ring_thread(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    ring_t *out = &rings[id], *in = &rings[(id + RING_THREADS - 1) % RING_THREADS];
    uint64_t r = 0x2545F4914F6CDD1Dull * (id + 1);
    static void *sessions[RING_THREADS][SESSIONS];
    size_t sent = 0, received = 0;
    while (sent < MESSAGES || received < MESSAGES) {
        /* Send while there is room. */
        size_t t = atomic_load_explicit(&out->tail, memory_order_relaxed);
        if (sent < MESSAGES && t - atomic_load_explicit(&out->head, memory_order_acquire) < RING_SLOTS) {
            size_t size = message_size(&r);
            char *m = bitslab_malloc(size);
            if (!m) abort();
            memset(m, (int)id, size < 64 ? size : 64);
            out->slot[t % RING_SLOTS] = m;
            atomic_store_explicit(&out->tail, t + 1, memory_order_release);
            sent++;
            atomic_fetch_add_explicit(&total_sent, 1, memory_order_relaxed);
        }
        /* Receive: read, then free another thread's block (a remote free). */
        size_t h = atomic_load_explicit(&in->head, memory_order_relaxed);
        if (received < MESSAGES && h != atomic_load_explicit(&in->tail, memory_order_acquire)) {
            char *m = in->slot[h % RING_SLOTS];
            atomic_store_explicit(&in->head, h + 1, memory_order_release);
            bitslab_free(m);
            received++;
        }
        /* Mid-run snapshot: stop (with everything in flight) until main has
         * taken it. Nothing here waits for another ring thread. */
        if (atomic_load_explicit(&pause_ring, memory_order_acquire) == 1) {
            pthread_barrier_wait(&paused);
            pthread_barrier_wait(&paused);
        }
        /* Sessions come and go: a table of long-lived objects. */
        if ((sent + received) % 16 == 0) {
            size_t k = next_rand(&r) % SESSIONS;
            bitslab_free(sessions[id][k]);
            sessions[id][k] = bitslab_malloc(96 + next_rand(&r) % 800);
        }
    }
    if (id % 2) { /* half of the threads end their sessions before they exit */
        for (size_t k = 0; k < SESSIONS; k++) bitslab_free(sessions[id][k]);
        bitslab_collect();
    }
    return NULL;
}

static void to_file(const char *msg, void *arg) { fputs(msg, (FILE *)arg); }

static int write_with(const char *path, void (*fn)(void (*)(const char *, void *), void *, int), int flags)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    fn(to_file, f, flags);
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    const char *map_path = NULL, *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--heap-map") && i + 1 < argc) map_path = argv[++i];
        else if (!strcmp(argv[i], "--stats-json") && i + 1 < argc) json_path = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--heap-map FILE] [--stats-json FILE]\n", argv[0]);
            return 2;
        }
    }
    printf("bitslab %s demo\n", BITSLAB_VERSION_STRING);
    tour();

    printf("\nring: %d threads pass %d messages each (16 B to 320 KiB, every free remote), "
           "keeping %d sessions each\n\n", RING_THREADS, MESSAGES, SESSIONS);
    pthread_barrier_init(&paused, NULL, RING_THREADS + 1);
    pthread_t t[RING_THREADS];
    for (unsigned i = 0; i < RING_THREADS; i++) pthread_create(&t[i], NULL, ring_thread, (void *)(uintptr_t)i);
    /* Halfway, stop the ring and look at the heap with every thread alive:
     * messages in flight, remote frees pending, word caches loaded. */
    while (atomic_load_explicit(&total_sent, memory_order_relaxed) < (size_t)RING_THREADS * MESSAGES / 2) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_store_explicit(&pause_ring, 1, memory_order_release);
    pthread_barrier_wait(&paused); /* every ring thread has stopped */
    atomic_store_explicit(&pause_ring, 2, memory_order_relaxed);
    printf("halfway, the ring stopped:\n");
    fflush(stdout);
    bitslab_stats_print(NULL, NULL, 0); /* the table, on stderr */
    int rc = 0;
    if (map_path) rc |= write_with(map_path, bitslab_heap_map, 0);
    if (json_path) rc |= write_with(json_path, bitslab_stats_print, BITSLAB_STATS_JSON);
    pthread_barrier_wait(&paused); /* go on */
    for (unsigned i = 0; i < RING_THREADS; i++) pthread_join(t[i], NULL);
    printf("\nthe ring is done; two of its threads exited holding their sessions:\n");
    fflush(stdout);
    bitslab_stats_print(NULL, NULL, 0);
    return rc;
}
