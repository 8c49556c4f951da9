/* rss.h: the process's resident set (VmRSS) and address space (VmSize), from /proc/self/status, in KiB. */
#ifndef BITSLAB_TEST_RSS_H
#define BITSLAB_TEST_RSS_H

#include <stdio.h>

/* A "Key:   N kB" line of /proc/self/status, in KiB (0 if absent). */
static inline size_t proc_status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0, n = 0;
    while (f && fgets(line, sizeof line, f)) {
        while (key[n] && line[n] == key[n]) n++;
        if (!key[n] && line[n] == ':' && sscanf(line + n + 1, "%zu kB", &kib) == 1) break;
        n = 0;
    }
    if (f) fclose(f);
    return kib;
}

static inline size_t rss_kib(void) { return proc_status_kib("VmRSS"); }

/* The process's address space (VmSize), in KiB. */
static inline size_t vm_kib(void) { return proc_status_kib("VmSize"); }

#endif
