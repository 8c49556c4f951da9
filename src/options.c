/*
 * options.c: every runtime option (docs/options.md), read once from the
 * environment.
 *
 * Sources, in the order they are applied (so the later wins):
 *   1. the defaults in the table below;
 *   2. BITSLAB_OPTIONS="key=value,key=value" (spaces around keys and values
 *      are ignored, empty items too; a repeated key: the last one wins);
 *   3. one variable per option, BITSLAB_<NAME> (name in upper case). An empty
 *      variable counts as unset.
 * An unknown key in BITSLAB_OPTIONS, an item without '=', or a value that is
 * not an integer in the option's range (trailing garbage included) prints one
 * line, "bitslab: warning: ...", and is ignored: the option keeps the value it
 * had (the default, or BITSLAB_OPTIONS' value for a bad BITSLAB_<NAME>).
 * Other BITSLAB_* variables (BITSLAB_STRESS_SCALE, ...) are not ours to judge.
 *
 * When: a constructor, and lazily from heap_acquire() (the first slow path of
 * every thread) for allocations made before constructors run, whichever comes
 * first. Nothing here allocates: getenv reads `environ` in place, the parser
 * is our own (no strtol, no locale), messages go out with write(2). So reading
 * the options cannot re-enter malloc; a state word also makes it run once even
 * if two threads get here together (the loser goes on with the values as they
 * are, all of them valid at any time: it never waits).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"

/* ---- the table -------------------------------------------------------------
 * One line per option: name, type, min, max, default, doc. The value lives in
 * the relaxed-atomic global `bitslab_<name>` (declared in options.h if other
 * files read it). docs/options.md and the comment of bitslab_option_get in
 * bitslab.h hold the same table; tests/check_options_docs.py compares them. */
#define BITSLAB_OPTION_TABLE(X)                                                                      \
    X(verbose, BOOL, 0, 1, 0, "1: a one-line banner with the version and options at start-up")       \
    X(show_stats, BOOL, 0, 1, 0, "1: the statistics table on stderr at exit")                         \
    X(purge_delay_ms, INT, -1, 3600000, 250, "an empty slab's memory goes back this long after; -1 never") \
    X(retain_superpages, INT, -1, 65536, -1, "empty superpages a heap keeps; -1: 1 + 1/8 of its own") \
    X(background_purge, BOOL, 0, 1, 0, "1: a thread returns the free pages of heaps whose threads stopped calling")

enum option_type { OPT_BOOL, OPT_INT };

typedef struct option {
    const char *name;
    enum option_type type;
    int32_t min, max, def;
    _Atomic int32_t *value;
    const char *doc;
} option_t;

#define X(name, type, min, max, def, doc) _Atomic int32_t bitslab_##name = def;
BITSLAB_OPTION_TABLE(X)
#undef X

static const option_t options[] = {
#define X(name, type, min, max, def, doc) {#name, OPT_##type, min, max, def, &bitslab_##name, doc},
    BITSLAB_OPTION_TABLE(X)
#undef X
};
#define NUM_OPTIONS (sizeof options / sizeof options[0])

/* ---- one line of output, built in a fixed buffer ---------------------------- */

typedef struct line {
    char buf[512];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n && l->len < sizeof l->buf - 1; i++) l->buf[l->len++] = s[i];
}

static void puts_(line_t *l, const char *s) { put(l, s, strlen(s)); }

static void put_long(line_t *l, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) put(l, "-", 1);
    while (n) put(l, &tmp[--n], 1);
}

/* Text from the environment, quoted as is but on one line and not too long. */
static void put_user(line_t *l, const char *s, size_t n)
{
    size_t shown = n > 40 ? 40 : n;
    for (size_t i = 0; i < shown; i++) {
        char c = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        put(l, &c, 1);
    }
    if (shown < n) puts_(l, "...");
}

/* One write(2): stdio may allocate, and this may run inside malloc. */
static void emit(line_t *l)
{
    l->buf[l->len++] = '\n';
    ssize_t r = write(2, l->buf, l->len);
    (void)r;
}

static void warning_start(line_t *l)
{
    l->len = 0;
    puts_(l, "bitslab: warning: ");
}

/* ---- parsing ---------------------------------------------------------------- */

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) (*s)++, (*n)--;
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* An optional sign and decimal digits, nothing else; no locale, no errno. */
static bool parse_int(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i == n) return false;
    long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        if (v < 1000000000000ll) v = v * 10 + (s[i] - '0'); /* saturates far beyond any range */
    }
    *out = neg ? -v : v;
    return true;
}

static const option_t *find_option(const char *name, size_t n)
{
    for (size_t i = 0; i < NUM_OPTIONS; i++)
        if (strlen(options[i].name) == n && memcmp(options[i].name, name, n) == 0) return &options[i];
    return NULL;
}

static int32_t get(const option_t *o)
{
    /* Relaxed: pairs with the relaxed stores in set(); a setting, no data behind it. */
    return atomic_load_explicit(o->value, memory_order_relaxed);
}

static void set(const option_t *o, int32_t v)
{
    /* Relaxed: pairs with the relaxed loads of the readers (any value in range is valid). */
    atomic_store_explicit(o->value, v, memory_order_relaxed);
}

/* Apply `value` (n bytes) to o, or warn once; `source` and `key` (klen bytes)
 * name where it came from: "BITSLAB_OPTIONS" + "key", or the variable's name. */
static void apply(const option_t *o, const char *value, size_t n, const char *source, const char *key, size_t klen)
{
    trim(&value, &n);
    long long v;
    if (parse_int(value, n, &v) && v >= o->min && v <= o->max) {
        set(o, (int32_t)v);
        return;
    }
    line_t l;
    warning_start(&l);
    puts_(&l, source);
    puts_(&l, key ? ": " : "=");
    if (key) {
        put(&l, key, klen);
        put(&l, "=", 1);
    }
    put_user(&l, value, n);
    if (o->type == OPT_BOOL) {
        puts_(&l, ": expected 0 or 1");
    } else {
        puts_(&l, ": expected an integer in [");
        put_long(&l, o->min);
        puts_(&l, ", ");
        put_long(&l, o->max);
        puts_(&l, "]");
    }
    puts_(&l, "; ");
    puts_(&l, o->name);
    puts_(&l, " stays ");
    put_long(&l, get(o));
    emit(&l);
}

static void parse_options_string(const char *s)
{
    while (*s) {
        const char *end = s;
        while (*end && *end != ',') end++;
        const char *item = s;
        size_t n = (size_t)(end - s);
        s = *end ? end + 1 : end;
        trim(&item, &n);
        if (n == 0) continue;
        const char *eq = memchr(item, '=', n);
        line_t l;
        if (!eq) {
            warning_start(&l);
            puts_(&l, "BITSLAB_OPTIONS: \"");
            put_user(&l, item, n);
            puts_(&l, "\" is not key=value; ignored");
            emit(&l);
            continue;
        }
        const char *key = item;
        size_t klen = (size_t)(eq - item);
        trim(&key, &klen);
        const option_t *o = find_option(key, klen);
        if (!o) {
            warning_start(&l);
            puts_(&l, "BITSLAB_OPTIONS: unknown option \"");
            put_user(&l, key, klen);
            puts_(&l, "\" (known:");
            for (size_t i = 0; i < NUM_OPTIONS; i++) {
                puts_(&l, i ? ", " : " ");
                puts_(&l, options[i].name);
            }
            puts_(&l, "); ignored");
            emit(&l);
            continue;
        }
        apply(o, eq + 1, (size_t)(item + n - (eq + 1)), "BITSLAB_OPTIONS", key, klen);
    }
}

static void read_environment(void)
{
    const char *s = getenv("BITSLAB_OPTIONS");
    if (s) parse_options_string(s);
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        char var[64] = "BITSLAB_";
        size_t at = strlen(var);
        for (const char *c = options[i].name; *c && at < sizeof var - 1; c++)
            var[at++] = *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        var[at] = '\0';
        const char *v = getenv(var);
        if (v && *v) apply(&options[i], v, strlen(v), var, NULL, 0);
    }
}

static void print_banner(void)
{
    line_t l = {.len = 0};
    puts_(&l, "bitslab: version ");
    puts_(&l, bitslab_version());
    puts_(&l, "; options:");
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        puts_(&l, " ");
        puts_(&l, options[i].name);
        puts_(&l, "=");
        put_long(&l, get(&options[i]));
    }
    emit(&l);
}

/* ---- reading them once ------------------------------------------------------ */

enum { OPTIONS_UNREAD, OPTIONS_READING, OPTIONS_READ };
static _Atomic int options_state;

void options_init_once(void)
{
    // Acquire: pairs with the release store of OPTIONS_READ below, so a thread
    // that sees it also sees every value stored before it.
    int st = atomic_load_explicit(&options_state, memory_order_acquire);
    if (likely(st == OPTIONS_READ)) return;
    /* Too early (a preloaded library's malloc called by the dynamic loader
     * before libc set `environ` up): keep the defaults for now; the
     * constructor, or a later slow path, reads the environment. */
    if (environ == NULL) return;
    if (st != OPTIONS_UNREAD) return; /* another thread is reading: go on with the values as they are */
    int expected = OPTIONS_UNREAD;
    // Acquire on failure: pairs with the release store below (as the load above).
    // Relaxed would do on success: only this thread writes until the release store.
    if (!atomic_compare_exchange_strong_explicit(&options_state, &expected, OPTIONS_READING, memory_order_acquire,
                                                 memory_order_acquire))
        return;
    read_environment();
    /* Release: pairs with the acquire loads above and in bitslab_option_get. */
    atomic_store_explicit(&options_state, OPTIONS_READ, memory_order_release);
    /* Relaxed: pairs with the relaxed store in set() (this thread's own). */
    if (atomic_load_explicit(&bitslab_verbose, memory_order_relaxed)) print_banner();
}

/* ---- public ------------------------------------------------------------------ */

int bitslab_option_get(const char *name, long *value)
{
    options_init_once();
    const option_t *o = name && value ? find_option(name, strlen(name)) : NULL;
    if (!o) {
        errno = EINVAL;
        return -1;
    }
    *value = get(o);
    return 0;
}
