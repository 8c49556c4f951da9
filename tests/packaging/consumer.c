/*
 * consumer.c: a program built against an installed or subproject bitslab
 * (tests/packaging). It never calls malloc or free itself: the C library's
 * strdup allocates, so the check below passes only if the process's malloc
 * is bitslab's (with the static archive, only if -Wl,-u,malloc pulled it in).
 *
 *   consumer            the prefixed API works, the versions agree
 *   consumer malloc     also: libc's own allocations come from bitslab
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <stdio.h>
#include <string.h>

#include <bitslab.h>

static char text[100000];

int main(int argc, char **argv)
{
    if (strcmp(bitslab_version(), BITSLAB_VERSION_STRING) != 0 || bitslab_version_number() != BITSLAB_VERSION_NUMBER) {
        fprintf(stderr, "consumer: header %s, library %s\n", BITSLAB_VERSION_STRING, bitslab_version());
        return 1;
    }
    void *p = bitslab_malloc(100);
    if (!p || bitslab_usable_size(p) < 100) return 1;
    bitslab_free(p);
    if (argc > 1 && strcmp(argv[1], "malloc") == 0) {
        memset(text, 'x', sizeof text - 1);
        bitslab_stats_t before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
        bitslab_stats(&before);
        char *s = strdup(text); /* libc's malloc */
        bitslab_stats(&after);
        if (!s || after.in_use < before.in_use + sizeof text) {
            fprintf(stderr, "consumer: malloc is not bitslab's (in use %zu -> %zu)\n", before.in_use, after.in_use);
            return 1;
        }
        bitslab_free(s); /* aborts if bitslab did not allocate it */
    }
    printf("consumer: bitslab %s ok\n", bitslab_version());
    return 0;
}
