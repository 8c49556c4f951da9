/*
 * test_options.c: runtime options (src/options.c, docs/options.md).
 *
 * Most tests start tests/options_probe.c (path in OPTIONS_PROBE) with an
 * environment of their own, nothing inherited, and check what it prints: the
 * effective values on stdout (through bitslab_option_get), and on stderr
 * exactly one "bitslab: warning: " line per bad item, the banner of
 * verbose=1, the statistics of show_stats=1, and nothing else.
 */
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

DEFINE_THREAD_FAILURES;

#define DEFAULTS "verbose=0 show_stats=0 purge_delay_ms=250 retain_superpages=-1 background_purge=0"
#define WARNING "bitslab: warning: "

typedef struct run {
    int status;     /* exit code, or 128 + signal */
    char out[4096]; /* stdout */
    char err[4096]; /* stderr */
    int nlines;     /* lines on stderr */
    char *line[32]; /* each of them (in err, newlines replaced by NUL) */
} run_t;

static run_t R; /* the last run (large: not on the stack) */

/* Run the probe in `mode` with exactly the environment `env` (NULL-terminated). */
static run_t *probe(const char *mode, const char *const *env)
{
    const char *path = getenv("OPTIONS_PROBE");
    ck_assert_msg(path != NULL, "OPTIONS_PROBE is not set (run through meson test)");
    int po[2], pe[2];
    ck_assert_int_eq(pipe(po), 0);
    ck_assert_int_eq(pipe(pe), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        char *argv[] = {(char *)path, (char *)mode, NULL};
        execve(path, argv, (char *const *)env);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    memset(&R, 0, sizeof R);
    size_t got[2] = {0, 0};
    char *buf[2] = {R.out, R.err};
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds) {
        ck_assert_int_ge(poll(fds, 2, 20000), 1);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents) continue;
            char tmp[512];
            ssize_t n = read(fds[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = sizeof R.out - 1 - got[i];
            size_t take = (size_t)n < room ? (size_t)n : room;
            memcpy(buf[i] + got[i], tmp, take);
            got[i] += take;
        }
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    R.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    size_t n = strlen(R.out);
    if (n && R.out[n - 1] == '\n') R.out[n - 1] = '\0';
    for (char *p = R.err; *p && R.nlines < 32;) {
        R.line[R.nlines++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = '\0';
        p = nl + 1;
    }
    return &R;
}

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The probe exited 0, printed `values`, and on stderr exactly `warnings`
 * lines, each a warning containing the matching string of `expect`. */
static void check(const run_t *r, const char *values, int warnings, const char *const *expect)
{
    ck_assert_msg(r->status == 0, "probe exited with %d; stderr: %s", r->status, r->err);
    ck_assert_str_eq(r->out, values);
    ck_assert_msg(r->nlines == warnings, "expected %d line(s) on stderr, got %d: \"%s\"%s", warnings, r->nlines,
                  r->nlines ? r->line[0] : "", r->nlines > 1 ? " ..." : "");
    for (int i = 0; i < warnings; i++) {
        ck_assert_msg(starts_with(r->line[i], WARNING), "not a warning line: %s", r->line[i]);
        if (expect && expect[i]) ck_assert_msg(strstr(r->line[i], expect[i]), "\"%s\" not in: %s", expect[i], r->line[i]);
    }
}

#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})
#define EXPECT(...) ((const char *const[]){__VA_ARGS__})
#define NO_ENV ((const char *const[]){NULL})

/* ---- defaults and single variables ------------------------------------------------ */

START_TEST(test_defaults)
{
    check(probe("values", NO_ENV), DEFAULTS, 0, NULL);
    /* An empty variable counts as unset, silently (as before options.c). */
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS=", "BITSLAB_OPTIONS=")), DEFAULTS, 0, NULL);
}
END_TEST

START_TEST(test_variables)
{
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS=1000", "BITSLAB_RETAIN_SUPERPAGES=3", "BITSLAB_SHOW_STATS=0")),
          "verbose=0 show_stats=0 purge_delay_ms=1000 retain_superpages=3 background_purge=0", 0, NULL);
    /* The ends of the ranges, a sign, spaces around the value. */
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS=-1", "BITSLAB_RETAIN_SUPERPAGES=65536")),
          "verbose=0 show_stats=0 purge_delay_ms=-1 retain_superpages=65536 background_purge=0", 0, NULL);
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS=3600000", "BITSLAB_RETAIN_SUPERPAGES=+0")),
          "verbose=0 show_stats=0 purge_delay_ms=3600000 retain_superpages=0 background_purge=0", 0, NULL);
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS= 42 ")), "verbose=0 show_stats=0 purge_delay_ms=42 retain_superpages=-1 background_purge=0",
          0, NULL);
    /* Other BITSLAB_ variables are not options: no warning. */
    check(probe("values", ENV("BITSLAB_STRESS_SCALE=2", "BITSLAB_NOT_AN_OPTION=1")), DEFAULTS, 0, NULL);
}
END_TEST

/* Each bad value: the default stays, and exactly one warning naming the variable. */
START_TEST(test_bad_values)
{
    static const char *const bad[] = {"abc", "100ms", "3600001", "-2", "99999999999999999999999", "1.5",
                                      "0x10", "-", "+", "1 2", "12\n34"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char var[64];
        snprintf(var, sizeof var, "BITSLAB_PURGE_DELAY_MS=%s", bad[i]);
        check(probe("values", ENV(var)), DEFAULTS, 1, EXPECT("BITSLAB_PURGE_DELAY_MS="));
        ck_assert_msg(strstr(R.line[0], "[-1, 3600000]") && strstr(R.line[0], "purge_delay_ms stays 250"),
                      "%s", R.line[0]);
    }
    check(probe("values", ENV("BITSLAB_VERBOSE=2")), DEFAULTS, 1, EXPECT("BITSLAB_VERBOSE=2: expected 0 or 1"));
    check(probe("values", ENV("BITSLAB_SHOW_STATS=yes")), DEFAULTS, 1, EXPECT("BITSLAB_SHOW_STATS=yes"));
    check(probe("values", ENV("BITSLAB_RETAIN_SUPERPAGES=-3")), DEFAULTS, 1, EXPECT("BITSLAB_RETAIN_SUPERPAGES=-3"));
    /* Two bad variables: two lines, one each. */
    check(probe("values", ENV("BITSLAB_RETAIN_SUPERPAGES=x", "BITSLAB_PURGE_DELAY_MS=y")), DEFAULTS, 2, NULL);
}
END_TEST

/* ---- BITSLAB_OPTIONS -------------------------------------------------------------- */

START_TEST(test_options_string)
{
    check(probe("values", ENV("BITSLAB_OPTIONS=show_stats=0,purge_delay_ms=10,retain_superpages=2")),
          "verbose=0 show_stats=0 purge_delay_ms=10 retain_superpages=2 background_purge=0", 0, NULL);
    /* Spaces around keys and values, empty items, a repeated key (the last wins). */
    check(probe("values", ENV("BITSLAB_OPTIONS= purge_delay_ms = 10 ,,retain_superpages=2, purge_delay_ms=11,")),
          "verbose=0 show_stats=0 purge_delay_ms=11 retain_superpages=2 background_purge=0", 0, NULL);
}
END_TEST

START_TEST(test_options_string_bad_items)
{
    /* Five bad items among good ones: the good ones apply, one line per bad one. */
    check(probe("values",
                ENV("BITSLAB_OPTIONS=purge_delay_ms=abc,bogus=1,retain_superpages=4,verbose,=5,show_stats=7")),
          "verbose=0 show_stats=0 purge_delay_ms=250 retain_superpages=4 background_purge=0", 5,
          EXPECT("BITSLAB_OPTIONS: purge_delay_ms=abc: expected an integer", "unknown option \"bogus\"",
                 "\"verbose\" is not key=value", "unknown option \"\"", "show_stats=7: expected 0 or 1"));
    check(probe("values", ENV("BITSLAB_OPTIONS=purge_delay_ms")), DEFAULTS, 1, EXPECT("is not key=value"));
    check(probe("values", ENV("BITSLAB_OPTIONS=PURGE_DELAY_MS=5")), DEFAULTS, 1, EXPECT("unknown option"));
}
END_TEST

/* The individual variable wins over BITSLAB_OPTIONS; a bad one leaves the list's value. */
START_TEST(test_precedence)
{
    check(probe("values", ENV("BITSLAB_OPTIONS=purge_delay_ms=10,retain_superpages=2", "BITSLAB_PURGE_DELAY_MS=20")),
          "verbose=0 show_stats=0 purge_delay_ms=20 retain_superpages=2 background_purge=0", 0, NULL);
    /* The same, with the variables in the other order in the environment. */
    check(probe("values", ENV("BITSLAB_PURGE_DELAY_MS=20", "BITSLAB_OPTIONS=purge_delay_ms=10")),
          "verbose=0 show_stats=0 purge_delay_ms=20 retain_superpages=-1 background_purge=0", 0, NULL);
    check(probe("values", ENV("BITSLAB_OPTIONS=purge_delay_ms=10", "BITSLAB_PURGE_DELAY_MS=abc")),
          "verbose=0 show_stats=0 purge_delay_ms=10 retain_superpages=-1 background_purge=0", 1, EXPECT("purge_delay_ms stays 10"));
}
END_TEST

/* ---- verbose, show_stats ------------------------------------------------------------ */

static void expect_banner(const char *line, const char *values)
{
    char want[256];
    snprintf(want, sizeof want, "bitslab: version %s; options: %s", bitslab_version(), values);
    ck_assert_str_eq(line, want);
}

START_TEST(test_verbose_banner)
{
    probe("values", ENV("BITSLAB_VERBOSE=1", "BITSLAB_PURGE_DELAY_MS=5"));
    ck_assert_int_eq(R.status, 0);
    ck_assert_int_eq(R.nlines, 1);
    expect_banner(R.line[0], "verbose=1 show_stats=0 purge_delay_ms=5 retain_superpages=-1 background_purge=0");
    /* The banner shows the values the warnings left. */
    probe("values", ENV("BITSLAB_OPTIONS=verbose=1,purge_delay_ms=x"));
    ck_assert_int_eq(R.nlines, 2);
    ck_assert(starts_with(R.line[0], WARNING));
    expect_banner(R.line[1], "verbose=1 show_stats=0 purge_delay_ms=250 retain_superpages=-1 background_purge=0");
}
END_TEST

/* A malloc in a constructor that runs before bitslab's reads the options
 * then (the banner comes before the probe's line), and only once. */
START_TEST(test_read_on_first_malloc)
{
    probe("values", ENV("PROBE_EARLY=1", "BITSLAB_VERBOSE=1", "BITSLAB_PURGE_DELAY_MS=77"));
    ck_assert_msg(R.status == 0, "status %d, stderr: %s", R.status, R.err);
    ck_assert_msg(R.nlines == 2, "%d lines on stderr: %s", R.nlines, R.err);
    expect_banner(R.line[0], "verbose=1 show_stats=0 purge_delay_ms=77 retain_superpages=-1 background_purge=0");
    ck_assert_str_eq(R.line[1], "probe: early malloc done");
    ck_assert_str_eq(R.out, "verbose=1 show_stats=0 purge_delay_ms=77 retain_superpages=-1 background_purge=0");
}
END_TEST

static bool any_line_has(const char *needle)
{
    for (int i = 0; i < R.nlines; i++)
        if (strstr(R.line[i], needle)) return true;
    return false;
}

START_TEST(test_show_stats)
{
    probe("live", ENV("BITSLAB_SHOW_STATS=1"));
    ck_assert_int_eq(R.status, 0);
    /* bitslab_stats_print's table (docs/stats.md) on stderr at exit. */
    ck_assert_msg(R.nlines >= 8, "%d lines on stderr: %s", R.nlines, R.err);
    ck_assert_msg(starts_with(R.line[0], "bitslab ") && strstr(R.line[0], " statistics"), "%s", R.line[0]);
    /* The one live block: a 1 MiB wide allocation. */
    ck_assert_msg(any_line_has("in use        1.0 MiB"), "%s", R.line[2]);
    ck_assert_msg(any_line_has("wide      1 live, 1.0 MiB"), "%s", R.line[6]);
    probe("live", NO_ENV);
    ck_assert_int_eq(R.status, 0);
    ck_assert_int_eq(R.nlines, 0);
}
END_TEST

/* ---- retain_superpages takes effect ---------------------------------------------- */

START_TEST(test_retain_superpages)
{
    /* 8 superpages, one wide block each, all freed: the heap keeps the number
     * asked for, or by default (-1) 1 + 1/8 of what it has as it shrinks. */
    /* (purge_delay_ms=0: empty superpages beyond the retention go at once,
     * instead of waiting out the delay.) */
    probe("retain", ENV("BITSLAB_RETAIN_SUPERPAGES=0", "BITSLAB_PURGE_DELAY_MS=0"));
    ck_assert_str_eq(R.out, "superpages 8 kept 0");
    probe("retain", ENV("BITSLAB_RETAIN_SUPERPAGES=3", "BITSLAB_PURGE_DELAY_MS=0"));
    ck_assert_str_eq(R.out, "superpages 8 kept 3");
    probe("retain", ENV("BITSLAB_PURGE_DELAY_MS=0"));
    ck_assert_str_eq(R.out, "superpages 8 kept 1"); /* 1 + 1/8 of the 1..7 left, re-evaluated by the purge */
    /* With the delay too: the dirty caps have decommitted the freed slabs
     * (nothing is in use any more), so the superpages have nothing committed
     * worth waiting for and go at once (docs/architecture.md section 7). */
    probe("retain", ENV("BITSLAB_RETAIN_SUPERPAGES=3"));
    ck_assert_str_eq(R.out, "superpages 8 kept 3");
}
END_TEST

/* ---- in process ------------------------------------------------------------------- */

START_TEST(test_option_get_errors)
{
    long v = 12345;
    errno = 0;
    ck_assert_int_eq(bitslab_option_get("no_such_option", &v), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(v, 12345);
    errno = 0;
    ck_assert_int_eq(bitslab_option_get("purge_delay", &v), -1); /* a prefix is not a name */
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(bitslab_option_get(NULL, &v), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(bitslab_option_get("verbose", NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(bitslab_option_get("purge_delay_ms", &v), 0);
    ck_assert_int_ge(v, -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase("environment");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_variables);
    tcase_add_test(tc, test_bad_values);
    tcase_add_test(tc, test_options_string);
    tcase_add_test(tc, test_options_string_bad_items);
    tcase_add_test(tc, test_precedence);
    suite_add_tcase(s, tc);
    tc = tcase("effects");
    tcase_add_test(tc, test_verbose_banner);
    tcase_add_test(tc, test_read_on_first_malloc);
    tcase_add_test(tc, test_show_stats);
    tcase_add_test(tc, test_retain_superpages);
    suite_add_tcase(s, tc);
    tc = tcase("api");
    tcase_add_test(tc, test_option_get_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
