/* A short tour: allocate across every path from two threads, free some of it
 * from the other thread, and print the heap statistics at each step. */
#include <bitslab.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

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

int main(void)
{
    printf("bitslab %s demo\n", BITSLAB_VERSION_STRING);
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
    return 0;
}
