/* rss.h: the process's resident set (VmRSS of /proc/self/status), in KiB. */
#ifndef BITSLAB_TEST_RSS_H
#define BITSLAB_TEST_RSS_H

#include <stdio.h>

static inline size_t rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib;
}

/* The process's address space (VmSize), in KiB. */
static inline size_t vm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib;
}

#endif
