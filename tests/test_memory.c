/*
 * test_memory.c: memory comes back by itself (docs/architecture.md section 7),
 * asserted on RSS from /proc/self/status. Run with BITSLAB_PURGE_DELAY_MS=50
 * (meson sets it): each scenario waits a few delays, which is the policy
 * under test, not a timing measurement.
 *
 *   test_memory idle-owner   a thread fills 48 MiB with small blocks, frees
 *                            every other one itself while another thread frees
 *                            the rest, sleeps, then makes 1,000 malloc(64)/free
 *                            pairs (fast paths only): at most 5 % of the
 *                            growth may stay resident
 *   test_memory lazyfree     a thread allocates 48 MiB, another thread frees
 *                            all of it (remote frees), the owner sleeps, then
 *                            makes 1,000 pairs: at most 5 % may stay
 *
 * Uses the prefixed API (glibc's malloc is untouched). Exit 0 pass, 1 fail.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitslab.h"
#include "rss.h"

#define TOTAL (48u << 20)
#define SIZE 64
#define NBLOCKS (TOTAL / SIZE)

static void **blocks;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts)) {
    }
}

static void fill(void)
{
    for (size_t i = 0; i < NBLOCKS; i++) {
        blocks[i] = bitslab_malloc(SIZE);
        if (!blocks[i]) {
            fprintf(stderr, "malloc failed\n");
            exit(1);
        }
        memset(blocks[i], 0xab, SIZE);
    }
}

static size_t from, step;
static void *free_some(void *arg)
{
    (void)arg;
    for (size_t i = from; i < NBLOCKS; i += step) bitslab_free(blocks[i]);
    return NULL;
}

static void pairs(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = bitslab_malloc(SIZE);
        if (!p) exit(1);
        *(volatile char *)p = 1;
        bitslab_free(p);
    }
}

int main(int argc, char **argv)
{
    const char *sc = argc > 1 ? argv[1] : "idle-owner";
    long delay = 0;
    if (bitslab_option_get("purge_delay_ms", &delay) || delay < 0 || delay > 1000) {
        fprintf(stderr, "%s: needs BITSLAB_PURGE_DELAY_MS between 0 and 1000 (have %ld)\n", sc, delay);
        return 1;
    }
    blocks = malloc(NBLOCKS * sizeof *blocks); /* glibc's: not counted in bitslab's growth */
    if (!blocks) return 1;
    memset(blocks, 1, NBLOCKS * sizeof *blocks); /* resident before the base is read (not 0: gcc would make it a calloc) */
    size_t base = rss_kib();
    fill();
    size_t peak = rss_kib();
    pthread_t t;
    if (!strcmp(sc, "idle-owner")) {
        from = 1, step = 2; /* the other thread frees the odd blocks */
        pthread_create(&t, NULL, free_some, NULL);
        for (size_t i = 0; i < NBLOCKS; i += 2) bitslab_free(blocks[i]);
        pthread_join(t, NULL);
    } else if (!strcmp(sc, "lazyfree")) {
        from = 0, step = 1; /* the other thread frees everything */
        pthread_create(&t, NULL, free_some, NULL);
        pthread_join(t, NULL);
    } else {
        fprintf(stderr, "unknown scenario %s\n", sc);
        return 1;
    }
    sleep_ms(4 * delay + 100);
    pairs(1000);
    size_t after = rss_kib();
    double kept = peak > base ? 100.0 * (double)(after > base ? after - base : 0) / (double)(peak - base) : 0;
    printf("%s: base %zu KiB, peak %zu KiB, after %zu KiB: %.1f %% of the growth kept (limit 5 %%)\n", sc, base,
           peak, after, kept);
    return kept <= 5.0 ? 0 : 1;
}
