/*
 * stats_dump: a multi-threaded workload, then the statistics of the quiet
 * process in every form, for tests/check_stats.py (meson tests stats-json,
 * heapmap-counts, heapmap-tool).
 *
 *   stats_dump DIR
 *
 * Workload: four threads in a ring each allocate mixed sizes (16 B to 32 KiB,
 * some multi-slab blocks), pass every other block to the next thread, which
 * frees it (remote frees), keep some, free the rest; two of them collect
 * and exit with nothing, two exit holding blocks (abandoned heaps). The main
 * thread keeps blocks of its own, two huge blocks, and has a thread free
 * some of its blocks that it then does not merge (pending remote frees).
 *
 * Then, with only the main thread left and nothing running:
 *   stdout            bitslab_stats_print(JSON)
 *   DIR/expected.json bitslab_stats() read just before, field by field
 *   DIR/stats.txt     bitslab_stats_print(table)
 *   DIR/heapmap.json  bitslab_heap_map()
 * Exit status 3 if printing or the heap map called malloc (this program
 * interposes the libc allocator and counts the calls while they run).
 */
#include <bitslab.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the libc allocator, counted ---------------------------------------------- */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_int counting;
static atomic_long libc_calls;

static void count(void)
{
    if (atomic_load(&counting)) atomic_fetch_add(&libc_calls, 1);
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    count();
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}
void free(void *p)
{
    if (p) count();
    __libc_free(p);
}
void *memalign(size_t a, size_t n)
{
    count();
    return __libc_memalign(a, n);
}
void *aligned_alloc(size_t a, size_t n)
{
    count();
    return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n)
{
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* ---- output without stdio (stdio may allocate) ------------------------------------ */

static char text[4 << 20];
static size_t text_len;

static void to_text(const char *msg, void *arg)
{
    (void)arg;
    size_t n = strlen(msg);
    if (text_len + n >= sizeof text) {
        write(2, "stats_dump: output too long\n", 28);
        _exit(2);
    }
    memcpy(text + text_len, msg, n);
    text_len += n;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror("write");
            exit(2);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void save(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    write_all(fd, text, text_len);
    close(fd);
}

/* ---- the workload ------------------------------------------------------------- */

#define WORKERS 4
#define PER_WORKER 6000

typedef struct mailbox {
    pthread_mutex_t lock;
    void *slots[PER_WORKER];
    size_t n;
} mailbox_t;

static mailbox_t boxes[WORKERS];
static pthread_barrier_t passed;
static void *main_blocks[3000];
static void *exited_blocks[500]; /* blocks of worker 3, freed by main after it exited */
static size_t exited_n;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *r)
{
    uint64_t x = rng_next(r);
    if (x % 100 == 0) return 40000 + x % 400000;   /* wide */
    if (x % 10 == 0) return 2048 + x % 30000;      /* large small classes */
    return 1 + x % 1024;                           /* small */
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t r = 0x9E3779B97F4A7C15ull * (id + 1);
    static void *mine[WORKERS][PER_WORKER];
    size_t kept = 0;
    for (size_t i = 0; i < PER_WORKER; i++) {
        size_t size = pick_size(&r);
        char *p = bitslab_malloc(size);
        if (!p) abort();
        memset(p, (int)id, size < 256 ? size : 256);
        if (i % 2) {
            mailbox_t *b = &boxes[(id + 1) % WORKERS];
            pthread_mutex_lock(&b->lock);
            b->slots[b->n++] = p;
            pthread_mutex_unlock(&b->lock);
        } else if (i % 3 == 0) {
            mine[id][kept++] = p;
        } else {
            bitslab_free(p);
        }
    }
    pthread_barrier_wait(&passed);
    mailbox_t *b = &boxes[id];
    for (size_t i = 0; i < b->n; i++) bitslab_free(b->slots[i]); /* remote frees */
    if (id == 3) {
        for (size_t i = 0; i < kept && exited_n < 500; i++) exited_blocks[exited_n++] = mine[id][i];
        return NULL; /* exits holding blocks: main frees some of them later */
    }
    if (id == 2) return NULL; /* exits holding blocks */
    for (size_t i = 0; i < kept; i++) bitslab_free(mine[id][i]);
    bitslab_collect();
    return NULL;
}

static void *free_main_blocks(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < 3000; i += 3) bitslab_free(main_blocks[i]); /* into main's heap: pending */
    return NULL;
}

static void workload(void)
{
    uint64_t r = 12345;
    for (size_t i = 0; i < 3000; i++) {
        main_blocks[i] = bitslab_malloc(pick_size(&r));
        if (!main_blocks[i]) abort();
    }
    pthread_barrier_init(&passed, NULL, WORKERS);
    pthread_t t[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++) {
        pthread_mutex_init(&boxes[i].lock, NULL);
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
    }
    for (unsigned i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    /* Frees into the exited worker 3's abandoned heap: pending there. */
    for (size_t i = 0; i < exited_n; i += 2) bitslab_free(exited_blocks[i]);
    /* Main frees some of its own (fast path, partly back into its caches)... */
    for (size_t i = 1; i < 3000; i += 3) bitslab_free(main_blocks[i]);
    /* ...and a thread frees others, which main never merges. */
    pthread_t f;
    pthread_create(&f, NULL, free_main_blocks, NULL);
    pthread_join(f, NULL);
    static void *huge[2];
    huge[0] = bitslab_malloc(3 << 20);
    huge[1] = bitslab_calloc(1, 5 << 20);
    if (!huge[0] || !huge[1]) abort();
}

/* ---- main ----------------------------------------------------------------------- */

#define FIELD(name) {#name, offsetof(bitslab_stats_t, name)}
static const struct {
    const char *name;
    size_t offset;
} fields[] = {
    FIELD(mapped),           FIELD(committed),        FIELD(resident),
    FIELD(in_use),           FIELD(cached),           FIELD(purged_bytes),
    FIELD(madvise_calls),    FIELD(superpages_total), FIELD(superpages_owned),
    FIELD(superpages_orphaned), FIELD(superpages_shrunk), FIELD(huge_allocations), FIELD(huge_bytes),
    FIELD(wide_allocations), FIELD(wide_bytes),       FIELD(heaps_total),
    FIELD(heaps_abandoned),  FIELD(remote_frees_pending), FIELD(remote_frees_merged),
    FIELD(remote_frees_sent),
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    workload();

    /* The quiet point: only this thread is left, and it allocates nothing
     * from here on. */
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    char line[256];
    text_len = 0;
    to_text("{", NULL);
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        snprintf(line, sizeof line, "%s\"%s\": %zu", i ? ", " : "", fields[i].name,
                 *(const size_t *)((const char *)&st + fields[i].offset));
        to_text(line, NULL);
    }
    to_text(", \"classes\": [", NULL);
    for (unsigned c = 0; c < BITSLAB_NUM_CLASSES; c++) {
        const bitslab_class_stats_t *cs = &st.classes[c];
        snprintf(line, sizeof line,
                 "%s{\"bin_size\": %zu, \"slabs\": %zu, \"bins_total\": %zu, \"bins_in_use\": %zu, "
                 "\"bins_cached\": %zu, \"bins_pending\": %zu, \"bins_free\": %zu, \"bytes_in_use\": %zu, "
                 "\"waste\": %zu}",
                 c ? ", " : "", cs->bin_size, cs->slabs, cs->bins_total, cs->bins_in_use, cs->bins_cached,
                 cs->bins_pending, cs->bins_free, cs->bytes_in_use, cs->waste);
        to_text(line, NULL);
    }
    to_text("]}\n", NULL);
    save(dir, "expected.json");

    atomic_store(&counting, 1);
    text_len = 0;
    bitslab_stats_print(to_text, NULL, BITSLAB_STATS_JSON);
    size_t json_len = text_len;
    static char json[sizeof text];
    memcpy(json, text, json_len);
    text_len = 0;
    bitslab_stats_print(to_text, NULL, 0);
    atomic_store(&counting, 0);
    save(dir, "stats.txt");
    atomic_store(&counting, 1);
    text_len = 0;
    bitslab_heap_map(to_text, NULL, 0);
    atomic_store(&counting, 0);
    save(dir, "heapmap.json");
    write_all(1, json, json_len);
    long calls = atomic_load(&libc_calls);
    if (calls) {
        fprintf(stderr, "stats_dump: printing and the heap map called the libc allocator %ld times\n", calls);
        return 3;
    }
    return 0;
}
