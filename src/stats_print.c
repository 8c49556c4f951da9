/*
 * stats_print.c: bitslab_stats_print (a table or JSON) and bitslab_heap_map
 * (JSON), written without allocating.
 *
 * Both format into a 1 KiB buffer on the stack with the few formatters
 * below (no printf: glibc's may allocate) and hand it to the caller's
 * callback, or write(2) it to standard error, in chunks that end at a line
 * end. The figures come from bitslab_stats and from the walker's slab
 * snapshots (stats.c), so they are race-free in the same way.
 *
 * Output formats: docs/stats.md, docs/stats.schema.json and
 * docs/heapmap.schema.json. Bump SCHEMA_VERSION (and the schema) when a
 * field is renamed, removed or changes meaning; adding one does not.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "stats.h"
#include "orphanage.h"
#include "sizeclass.h"
#include "superpage.h"

#define SCHEMA_VERSION 1

/* ---- the output buffer -------------------------------------------------------- */

#define SINK_SIZE 1024
#define SINK_FLUSH_AT 512 /* a line ending past this flushes: chunks are whole lines under 512 B */

typedef struct sink {
    void (*out)(const char *msg, void *arg);
    void *arg;
    size_t len;
    char buf[SINK_SIZE];
} sink_t;

static void sink_flush(sink_t *k)
{
    if (!k->len) return;
    k->buf[k->len] = '\0';
    if (k->out) {
        k->out(k->buf, k->arg);
    } else {
        int saved = errno;
        const char *p = k->buf;
        size_t left = k->len;
        while (left) {
            ssize_t n = write(STDERR_FILENO, p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break; /* nowhere to report it: drop the rest */
            p += n;
            left -= (size_t)n;
        }
        errno = saved;
    }
    k->len = 0;
}

static void put_char(sink_t *k, char c)
{
    if (k->len == SINK_SIZE - 1) sink_flush(k);
    k->buf[k->len++] = c;
    if (c == '\n' && k->len >= SINK_FLUSH_AT) sink_flush(k);
}

static void put(sink_t *k, const char *s)
{
    while (*s) put_char(k, *s++);
}

/* Decimal digits of v into b (no NUL); returns the length. */
static size_t fmt_u64(char *b, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) b[i] = t[n - 1 - i];
    return n;
}

static void put_u(sink_t *k, uint64_t v)
{
    char b[24];
    b[fmt_u64(b, v)] = '\0';
    put(k, b);
}

/* `s` right-aligned in `width` columns. */
static void put_right(sink_t *k, const char *s, size_t width)
{
    for (size_t n = strlen(s); n < width; n++) put_char(k, ' ');
    put(k, s);
}

static void put_u_right(sink_t *k, uint64_t v, size_t width)
{
    char b[24];
    b[fmt_u64(b, v)] = '\0';
    put_right(k, b, width);
}

/* "123 B", "1.5 KiB", "12.0 MiB", "3.2 GiB", "1.0 TiB" into b. */
static void fmt_bytes(char *b, uint64_t v)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    size_t n;
    if (v < 1024) {
        n = fmt_u64(b, v);
        memcpy(b + n, " B", 3);
        return;
    }
    unsigned u = 0;
    uint64_t unit = 1024;
    while (u < 3 && v >= unit * 1024) {
        unit *= 1024;
        u++;
    }
    uint64_t whole = v / unit, tenth = ((v % unit) * 10 + unit / 2) / unit;
    if (tenth == 10) {
        whole++;
        tenth = 0;
    }
    n = fmt_u64(b, whole);
    b[n++] = '.';
    b[n++] = (char)('0' + tenth);
    b[n++] = ' ';
    memcpy(b + n, units[u], 4);
}

static void put_bytes(sink_t *k, uint64_t v, size_t width)
{
    char b[40];
    fmt_bytes(b, v);
    put_right(k, b, width);
}

/* JSON: `"key": value` with the separator before it. */
static void json_u(sink_t *k, const char *sep, const char *key, uint64_t v)
{
    put(k, sep);
    put_char(k, '"');
    put(k, key);
    put(k, "\": ");
    put_u(k, v);
}

static void json_s(sink_t *k, const char *sep, const char *key, const char *v)
{
    put(k, sep);
    put_char(k, '"');
    put(k, key);
    put(k, "\": \"");
    put(k, v); /* our own strings: nothing to escape */
    put_char(k, '"');
}

static void json_b(sink_t *k, const char *sep, const char *key, bool v)
{
    put(k, sep);
    put_char(k, '"');
    put(k, key);
    put(k, v ? "\": true" : "\": false");
}

/* ---- bitslab_stats_print ------------------------------------------------------ */

/* A counter of a struct of size_t counters, for JSON: its key and offset. */
typedef struct json_field {
    const char *key;
    size_t offset;
} json_field_t;

#define STATS_FIELD(f) {#f, offsetof(bitslab_stats_t, f)}
#define CLASS_FIELD(f) {#f, offsetof(bitslab_class_stats_t, f)}
#define LINE_END {NULL, 0}

/* The process's counters, in the order and lines of the JSON output
 * (docs/stats.md); LINE_END starts a new line. */
static const json_field_t stats_fields[] = {
    STATS_FIELD(mapped), STATS_FIELD(committed), STATS_FIELD(resident), STATS_FIELD(in_use), STATS_FIELD(cached),
    LINE_END,
    STATS_FIELD(purged_bytes), STATS_FIELD(madvise_calls),
    LINE_END,
    STATS_FIELD(superpages_total), STATS_FIELD(superpages_owned), STATS_FIELD(superpages_orphaned),
    STATS_FIELD(superpages_shrunk),
    LINE_END,
    STATS_FIELD(huge_allocations), STATS_FIELD(huge_bytes), STATS_FIELD(wide_allocations), STATS_FIELD(wide_bytes),
    LINE_END,
    STATS_FIELD(heaps_total), STATS_FIELD(heaps_abandoned),
    LINE_END,
    STATS_FIELD(remote_frees_sent), STATS_FIELD(remote_frees_merged), STATS_FIELD(remote_frees_pending),
};

/* A size class's counters, after its "class" key. */
static const json_field_t class_fields[] = {
    CLASS_FIELD(bin_size), CLASS_FIELD(slabs), CLASS_FIELD(bins_total), CLASS_FIELD(bins_in_use),
    CLASS_FIELD(bins_cached), CLASS_FIELD(bins_pending), CLASS_FIELD(bins_free), CLASS_FIELD(bytes_in_use),
    CLASS_FIELD(waste),
};

/* The n fields of `base` that `fields` names: the first of each line after
 * `first`, the others after ", "; a LINE_END puts ",\n". */
static void json_fields(sink_t *k, const char *first, const json_field_t *fields, size_t n, const void *base)
{
    const char *sep = first;
    for (size_t i = 0; i < n; i++) {
        if (!fields[i].key) {
            put(k, ",\n");
            sep = first;
            continue;
        }
        json_u(k, sep, fields[i].key, *(const size_t *)(const void *)((const char *)base + fields[i].offset));
        sep = ", ";
    }
}

static void print_json(sink_t *k, const bitslab_stats_t *st)
{
    json_u(k, "{", "schema_version", SCHEMA_VERSION);
    json_s(k, ", ", "bitslab_version", BITSLAB_VERSION_STRING);
    put(k, ",\n");
    json_fields(k, " ", stats_fields, sizeof stats_fields / sizeof *stats_fields, st);
    put(k, ",\n \"classes\": [\n");
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        json_u(k, "  {", "class", c);
        json_fields(k, ", ", class_fields, sizeof class_fields / sizeof *class_fields, &st->classes[c]);
        put(k, c + 1 < NUM_CLASSES ? "},\n" : "}\n");
    }
    put(k, " ]}\n");
}

/* A figure of the table's summary: the text before it, and how it is shown. */
typedef struct table_item {
    const char *before;
    uint64_t v;
    int width; /* bytes, right-aligned in `width` columns; COUNT: a plain number */
} table_item_t;

#define COUNT (-1)

static void print_table(sink_t *k, const bitslab_stats_t *st, bool all_classes)
{
    size_t waste = 0, slabs = 0;
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        waste += st->classes[c].waste;
        slabs += st->classes[c].slabs;
    }
    put(k, "bitslab " BITSLAB_VERSION_STRING " statistics\n");
    /* The summary: each figure after its text, a count or bytes right-aligned. */
    const table_item_t items[] = {
        {"  mapped    ", st->mapped, 11}, {"   committed", st->committed, 11}, {"   resident ", st->resident, 11},
        {"\n  in use    ", st->in_use, 11}, {"   cached   ", st->cached, 11}, {"   slab waste", waste, 10},
        {"\n  purged    ", st->purged_bytes, 11}, {"   in ", st->madvise_calls, COUNT},
        {" madvise calls\n  superpages ", st->superpages_total, COUNT},
        {" mapped: ", st->superpages_owned, COUNT}, {" owned, ", st->superpages_orphaned, COUNT},
        {" orphaned (", st->superpages_shrunk, COUNT}, {" unmapped); ", slabs, COUNT},
        {" small slabs\n  heaps     ", st->heaps_total, COUNT},
        {" created: ", st->heaps_total - st->heaps_abandoned, COUNT}, {" with a thread, ", st->heaps_abandoned, COUNT},
        {" abandoned\n  wide      ", st->wide_allocations, COUNT}, {" live, ", st->wide_bytes, 0},
        {"    huge ", st->huge_allocations, COUNT}, {" live, ", st->huge_bytes, 0},
        {"\n  remote    ", st->remote_frees_sent, COUNT}, {" frees sent: ", st->remote_frees_merged, COUNT},
        {" merged, ", st->remote_frees_pending, COUNT},
    };
    for (size_t i = 0; i < sizeof items / sizeof *items; i++) {
        put(k, items[i].before);
        if (items[i].width == COUNT) put_u(k, items[i].v);
        else put_bytes(k, items[i].v, (size_t)items[i].width);
    }
    put(k, " pending\n");
    put(k, "  class     bin  slabs     live   cached  pending     free      in use       waste\n");
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        const bitslab_class_stats_t *cs = &st->classes[c];
        if (!cs->slabs && !all_classes) continue;
        put_u_right(k, c, 7);
        put_u_right(k, cs->bin_size, 8);
        put_u_right(k, cs->slabs, 7);
        put_u_right(k, cs->bins_in_use, 9);
        put_u_right(k, cs->bins_cached, 9);
        put_u_right(k, cs->bins_pending, 9);
        put_u_right(k, cs->bins_free, 9);
        put_bytes(k, cs->bytes_in_use, 12);
        put_bytes(k, cs->waste, 12);
        put_char(k, '\n');
    }
}

void bitslab_stats_print(void (*out)(const char *msg, void *arg), void *arg, int flags)
{
    bitslab_stats_t st = {.struct_size = sizeof st};
    bitslab_stats(&st);
    sink_t k = {.out = out, .arg = arg};
    if (flags & BITSLAB_STATS_JSON) print_json(&k, &st);
    else print_table(&k, &st, (flags & BITSLAB_STATS_ALL_CLASSES) != 0);
    sink_flush(&k);
}

/* ---- bitslab_heap_map ------------------------------------------------------- */

static const char *kind_name(uint8_t kind)
{
    switch (kind) {
    case SLAB_SMALL: return "small";
    case SLAB_WIDE: return "wide";
    case SLAB_WIDE_TAIL: return "wide_tail";
    case SLAB_META: return "meta";
    default: return "free";
    }
}

static void put_hex(sink_t *k, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char b[2 + 2 * sizeof v + 1];
    size_t n = sizeof b - 1;
    b[n] = '\0';
    do {
        b[--n] = digits[v & 15];
        v >>= 4;
    } while (v);
    b[--n] = 'x';
    b[--n] = '0';
    put(k, b + n);
}

typedef struct map_totals {
    size_t superpages, owned, slabs_small, slabs_wide, slabs_free, resident;
    size_t bins_in_use, bytes_in_use;
} map_totals_t;

static void map_slab(sink_t *k, superpage_t *sp, unsigned i, heap_t *self, bool owned, const uint16_t *pages,
                     map_totals_t *t)
{
    uint16_t resident = pages[i];
    slab_snapshot_t o;
    stats_slab_snapshot(sp, i, self, pages[0], &o);
    json_u(k, "   {", "index", i);
    json_s(k, ", ", "kind", kind_name(o.kind));
    switch (o.kind) {
    case SLAB_SMALL:
        json_u(k, ", ", "class", o.cls);
        json_u(k, ", ", "bin_size", o.bin_size);
        json_u(k, ", ", "bins_total", o.bins);
        json_u(k, ", ", "bins_in_use", o.live);
        json_u(k, ", ", "bins_cached", o.cached);
        json_u(k, ", ", "bins_pending", o.pending);
        json_u(k, ", ", "bins_free", o.free);
        t->slabs_small++;
        t->bins_in_use += o.live;
        t->bytes_in_use += (size_t)o.live * o.bin_size;
        break;
    case SLAB_WIDE:
        json_u(k, ", ", "bytes", o.bin_size);
        json_u(k, ", ", "run_slabs", o.bin_size / SLAB_SIZE);
        json_u(k, ", ", "bins_in_use", o.live);
        json_u(k, ", ", "bins_pending", o.pending);
        t->slabs_wide++;
        t->bytes_in_use += o.live ? o.bin_size : 0;
        break;
    case SLAB_WIDE_TAIL:
        t->slabs_wide++;
        break;
    case SLAB_FREE:
        t->slabs_free++;
        break;
    default:
        break;
    }
    /* An orphan's data slabs are all decommitted (superpage_try_release),
     * and so is its metadata but for the first page, which is where slab_t
     * 31 lies: its flag reads zero there. The metadata slab has no flag. */
    json_b(k, ", ", "committed", owned && (o.kind == SLAB_META || !o.decommitted));
    json_u(k, ", ", "resident_pages", resident);
    put(k, i + 1 < SLABS_PER_SUPERPAGE ? "},\n" : "}\n");
}

void bitslab_heap_map(void (*out)(const char *msg, void *arg), void *arg, int flags)
{
    (void)flags;
    sink_t k = {.out = out, .arg = arg};
    heap_t *self = stats_self_heap();
    map_totals_t t = {0};
    json_u(&k, "{", "schema_version", SCHEMA_VERSION);
    json_s(&k, ", ", "bitslab_version", BITSLAB_VERSION_STRING);
    json_u(&k, ", ", "superpage_size", SUPERPAGE_SIZE);
    json_u(&k, ", ", "slab_size", SLAB_SIZE);
    json_u(&k, ", ", "page_size", OS_PAGE);
    put(&k, ",\n \"class_sizes\": [");
    for (unsigned c = 0; c < NUM_CLASSES; c++) {
        if (c) put(&k, ", ");
        put_u(&k, bitslab_class_size[c]);
    }
    put(&k, "],\n \"superpages\": [");
    const heap_t *last_heap = NULL;
    uint32_t last_id = 0;
    orphanage_walk_begin(); /* no orphan is unmapped under us (orphan_shrink) */
    /* Acquire: pairs with the release CAS that published each superpage. */
    for (superpage_t *sp = atomic_load_explicit(&bitslab_all_superpages, memory_order_acquire); sp;
         sp = sp->all_next) {
        if (!orphanage_walkable(sp)) continue; /* a shrunk orphan: nothing mapped to show */
        uint16_t resident[SLABS_PER_SUPERPAGE];
        size_t res = stats_superpage_resident(sp, resident);
        /* Relaxed: a snapshot of who owns it; pairs with superpage_acquire's store. */
        heap_t *owner = atomic_load_explicit(&sp->heap, memory_order_relaxed);
        if (owner != last_heap) {
            last_heap = owner;
            last_id = owner ? stats_heap_id(owner) : 0;
        }
        put(&k, t.superpages ? ",\n  {\"address\": \"" : "\n  {\"address\": \"");
        put_hex(&k, (uintptr_t)sp);
        put(&k, "\"");
        if (owner) json_u(&k, ", ", "heap", last_id);
        else put(&k, ", \"heap\": null");
        json_u(&k, ", ", "resident_bytes", res);
        put(&k, ", \"slabs\": [\n");
        t.superpages++;
        t.owned += owner != NULL;
        t.resident += res;
        for (unsigned i = 0; i < SLABS_PER_SUPERPAGE; i++) map_slab(&k, sp, i, self, owner != NULL, resident, &t);
        put(&k, "  ]}");
    }
    orphanage_walk_end();
    put(&k, "\n ],\n");
    json_u(&k, " \"totals\": {", "superpages", t.superpages);
    json_u(&k, ", ", "superpages_owned", t.owned);
    json_u(&k, ", ", "slabs_small", t.slabs_small);
    json_u(&k, ", ", "slabs_wide", t.slabs_wide);
    json_u(&k, ", ", "slabs_free", t.slabs_free);
    json_u(&k, ", ", "bins_in_use", t.bins_in_use);
    json_u(&k, ", ", "bytes_in_use", t.bytes_in_use);
    json_u(&k, ", ", "resident_bytes", t.resident);
    put(&k, "}}\n");
    sink_flush(&k);
}
