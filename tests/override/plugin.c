/* A library that allocates and is then unloaded (test_libc.c). */
#include <stdlib.h>
#include <string.h>

void *plugin_make(size_t n)
{
    unsigned char *p = malloc(n);
    if (p) memset(p, (int)(n / 100), n);
    return p;
}
