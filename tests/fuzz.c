/*
 * fuzz.c: the seeded shadow-model fuzzer (operations and checks: fuzz_core.h).
 *
 * Runs rounds: each round starts BITSLAB_FUZZ_THREADS threads (4) that each
 * make 10000 random operations on the shared slots, then exit; the blocks
 * they leave in the slots are freed by the next round's threads (frees into
 * the heaps of exited threads, heap adoption). Rounds go on until
 * BITSLAB_FUZZ_SECONDS (5) have passed, and at least 2 rounds run whatever
 * the machine's speed. At the end every block is freed and nothing may be
 * left in use.
 *
 * Environment:
 *   BITSLAB_FUZZ_SEED=n     the seed (default: from the clock; printed first)
 *   BITSLAB_FUZZ_SECONDS=s  run this long (default 5)
 *   BITSLAB_FUZZ_OPS=n      exactly n operations per thread, whatever the time
 *   BITSLAB_FUZZ_THREADS=n  threads per round (default 4)
 *
 * A failure prints the seed and the line that replays it. With one thread
 * (BITSLAB_FUZZ_THREADS=1) and BITSLAB_FUZZ_OPS a replay makes the same
 * operations in the same order; with more threads each thread draws the same
 * random numbers, but what it finds in the slots depends on the interleaving.
 */
#include <time.h>
#include <unistd.h>

#include "fuzz_core.h"

#define OPS_PER_ROUND 10000u
#define MIN_ROUNDS 2u

typedef struct worker {
    pthread_t tid;
    fz_thread_t t;
    uint64_t ops; /* operations to make */
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    while (w->t.ops < w->ops) fz_step(&w->t);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    fz_seed = env_u64("BITSLAB_FUZZ_SEED", 0);
    if (!fz_seed) fz_seed = fz_mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(now_s() * 1e9));
    double seconds = (double)env_u64("BITSLAB_FUZZ_SECONDS", 5);
    uint64_t total_ops = env_u64("BITSLAB_FUZZ_OPS", 0); /* per thread; 0: by time */
    unsigned nthreads = (unsigned)env_u64("BITSLAB_FUZZ_THREADS", 4);
    if (nthreads < 1 || nthreads > 64) nthreads = 4;

    static char replay[256];
    snprintf(replay, sizeof replay, "replay: BITSLAB_FUZZ_SEED=%#" PRIx64 " BITSLAB_FUZZ_THREADS=%u %s", fz_seed,
             nthreads, total_ops ? "BITSLAB_FUZZ_OPS=<same>" : "BITSLAB_FUZZ_SECONDS=<same>");
    fz_replay = replay;
    printf("fuzz: seed %#" PRIx64 ", %u threads, %s %g%s\n", fz_seed, nthreads, total_ops ? "ops per thread" : "seconds",
           total_ops ? (double)total_ops : seconds, total_ops ? "" : " (at least 2 rounds)");

    worker_t *w = calloc(nthreads, sizeof *w);
    if (!w) return 1;
    double start = now_s();
    uint64_t done = 0;
    unsigned round = 0;
    for (;; round++) {
        uint64_t ops = OPS_PER_ROUND;
        if (total_ops) {
            if (done >= total_ops) break;
            if (total_ops - done < ops) ops = total_ops - done;
        } else if (round >= MIN_ROUNDS && now_s() - start >= seconds) {
            break;
        }
        for (unsigned i = 0; i < nthreads; i++) {
            w[i].t = (fz_thread_t){.rng = fz_mix(fz_seed ^ fz_mix(((uint64_t)round << 16) | i)), .index = i, .round = round};
            w[i].ops = ops;
            int rc = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
            if (rc) {
                fprintf(stderr, "pthread_create: %s\n", strerror(rc));
                return 1;
            }
        }
        for (unsigned i = 0; i < nthreads; i++) pthread_join(w[i].tid, NULL);
        done += ops;
    }
    fz_thread_t main_t = {.index = nthreads, .round = round};
    fz_drain(&main_t);
    fz_check_empty(&main_t);
    printf("fuzz: %" PRIu64 " operations in %u rounds of %u threads, %.1f s, no failure\n", done * nthreads, round,
           nthreads, now_s() - start);
    free(w);
    return 0;
}
