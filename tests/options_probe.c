/*
 * options_probe.c: a child process for test_options.c. It is started with a
 * chosen environment and reports what bitslab made of it.
 *
 *   options-probe values    prints "name=value ..." (bitslab_option_get) on stdout
 *   options-probe retain    allocates 8 wide blocks (one superpage each), frees
 *                           them, prints the superpages the heap kept
 *   options-probe live      keeps one 1 MiB block alive at exit (for show_stats)
 *
 * With PROBE_EARLY=1, a constructor that runs before bitslab's allocates and
 * then writes "probe: early malloc done" on stderr: the options must already
 * have been read by then (the banner of verbose=1 comes first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitslab.h"

static const char *const names[] = {"verbose", "show_stats", "purge_delay_ms", "retain_superpages", "background_purge"};

/* Priority 101: before every constructor of default priority, bitslab's included. */
__attribute__((constructor(101))) static void early(void)
{
    const char *e = getenv("PROBE_EARLY");
    if (!e || strcmp(e, "1") != 0) return;
    void *p = bitslab_malloc(64);
    bitslab_free(p);
    static const char msg[] = "probe: early malloc done\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "values";
    if (strcmp(mode, "values") == 0) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            long v = 0;
            if (bitslab_option_get(names[i], &v) != 0) {
                printf("%s%s=?", i ? " " : "", names[i]);
                continue;
            }
            printf("%s%s=%ld", i ? " " : "", names[i], v);
        }
        printf("\n");
    } else if (strcmp(mode, "retain") == 0) {
        void *blocks[8];
        for (int i = 0; i < 8; i++) blocks[i] = bitslab_malloc(1024 * 1024); /* 16 of 31 data slabs */
        bitslab_heap_info_t hi = {.struct_size = sizeof hi};
        bitslab_heap_info(&hi);
        size_t before = hi.superpages;
        for (int i = 0; i < 8; i++) bitslab_free(blocks[i]);
        bitslab_heap_info(&hi);
        printf("superpages %zu kept %zu\n", before, hi.superpages);
    } else if (strcmp(mode, "live") == 0) {
        void *volatile p = bitslab_malloc(1024 * 1024);
        (void)p; /* still allocated at exit, on purpose */
    } else {
        fprintf(stderr, "options-probe: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
