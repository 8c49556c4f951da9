#!/usr/bin/env python3
"""One pairing comment per atomic operation (docs/contributing rule, src/).

Every C11 atomic operation in src/*.c and src/*.h carries exactly one
comment that says what it pairs with (or that it pairs with nothing: a
statistics counter, a hint) and why its memory order is enough. The comment
is either

  - a comment directly above the statement (comment-only lines, no blank
    line between): one line `/* ... */`, or a `//` block when it takes more
    lines (so that the line just above the call shows a comment), or
  - a trailing comment ending on a line of the call itself (or on an
    earlier line of the same statement, after the previous atomic call).

Each atomic statement has its own comment: consecutive statements do not
share one (the second of two counter updates carries its own short note).
And the comment is next to the call: it opens or ends on the call's line or
on the line just above it, so that a reader (or grep) going line by line
sees it there; a statement whose call is on a later line than the statement
begins carries its comment on the call's line.

Fails (exit 1), naming file:line and the operation, on:
  - an atomic operation with no comment at all;
  - two comments: a block above (of the statement or its group) and a
    trailing one, two or more separate comments in the block directly
    above, or two trailing comments;
  - a seq_cst call without _explicit (atomic_fetch_add(...) and the like):
    src/ states every order.
Whether the comment's reasoning is right is not checkable; it is not tried.

Operations: atomic_load, _store, _exchange, _compare_exchange_weak/_strong,
_fetch_add/_sub/_or/_and/_xor (each _explicit or not), atomic_flag_*,
atomic_thread_fence and atomic_signal_fence.

Usage: check-atomics.py SOURCE_ROOT     (checks SOURCE_ROOT/src/*.[ch])
       check-atomics.py --self-test     (embedded good and bad snippets)
"""
import os
import re
import sys

OPS = (r"load|store|exchange|compare_exchange_weak|compare_exchange_strong"
       r"|fetch_add|fetch_sub|fetch_or|fetch_and|fetch_xor"
       r"|flag_test_and_set|flag_clear")
CALL = re.compile(r"\batomic_(?:(?P<op>" + OPS + r")(?P<explicit>_explicit)?|(?P<fence>thread_fence|signal_fence))\s*\(")


def scan(text):
    """Split text into per-line code (comments and literals blanked) and the
    comments: a list of (first line, last line, starts on a comment-only
    line) with 0-based line numbers."""
    code, comments = [], []
    line, cur, i, n = 0, [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            code.append("".join(cur))
            cur, line, i = [], line + 1, i + 1
        elif text.startswith("/*", i) or text.startswith("//", i):
            first = line
            lead = "".join(cur).strip() == ""
            if text[i + 1] == "*":
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
            else:
                j = text.find("\n", i)
                j = n if j < 0 else j
            body = text[i:j]
            for k, ch in enumerate(body):
                if ch == "\n":
                    code.append("".join(cur))
                    cur, line = [], line + 1
                else:
                    cur.append(" ")
            comments.append((first, line, lead, text[i + 1] == "/"))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            cur.append(c + " " * (min(j, n) - i - 1) + (c if j < n and text[j] == c else ""))
            i = j + 1 if j < n and text[j] == c else j
        else:
            cur.append(c)
            i += 1
    code.append("".join(cur))
    # A run of `//` comments, each alone on its line, on consecutive lines, is
    # one comment (a pairing comment longer than a line is written so).
    merged = []
    for c in comments:
        if (merged and c[3] and c[2] and merged[-1][3] and merged[-1][2] and c[0] == merged[-1][1] + 1):
            merged[-1] = (merged[-1][0], c[1], True, True)
        else:
            merged.append(c)
    return code, [(a, b, lead) for a, b, lead, _ in merged]


def check_text(text):
    """Problems of one source text: a list of (1-based line, message)."""
    code, comments = scan(text)
    nlines = len(code)
    comment_only = [False] * nlines  # a line with comment text and no code
    ends_on = [[] for _ in range(nlines)]  # comments ending on each line
    for idx, (a, b, lead) in enumerate(comments):
        ends_on[b].append(idx)
        for ln in range(a, b + 1):
            if code[ln].strip() == "" and lead:
                comment_only[ln] = True

    def blank(ln):
        return code[ln].strip() == "" and not comment_only[ln]

    def ends_statement(ln):
        s = code[ln].rstrip()
        return (s.endswith((";", "{", "}", ":")) or s.lstrip().startswith("#") or s.strip() in ("else",))

    def statement_start(ln):
        while ln > 0 and code[ln - 1].strip() and not comment_only[ln - 1] and not ends_statement(ln - 1):
            ln -= 1
        return ln

    def statement_end(ln):
        while ln < nlines - 1 and not ends_statement(ln) and not code[ln].lstrip().startswith("#"):
            ln += 1
        return ln

    # Every atomic call: its line, the line of its closing parenthesis.
    calls = []
    for ln, s in enumerate(code):
        for m in CALL.finditer(s):
            depth, end, j, row = 0, ln, m.end() - 1, ln
            while row < nlines:
                t = code[row]
                while j < len(t):
                    if t[j] == "(":
                        depth += 1
                    elif t[j] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                if depth == 0 and j < len(t):
                    end = row
                    break
                row, j = row + 1, 0
            name = m.group(0).rstrip("(").strip()
            calls.append({"line": ln, "end": end, "name": name,
                          "implicit": m.group("op") is not None and m.group("explicit") is None})

    problems = []
    for c in calls:
        if c["implicit"]:
            problems.append((c["line"] + 1, f"{c['name']}: seq_cst without _explicit (state the order)"))

    # Statements holding atomic calls: first line -> last line.
    stmt_of = {}
    for c in calls:
        s = statement_start(c["line"])
        e = max(statement_end(c["end"]), c["end"])
        c["stmt"] = s
        stmt_of[s] = max(stmt_of.get(s, e), e)
    stmt_ending_on = {e: s for s, e in stmt_of.items() if code[e].rstrip().endswith(";")}

    def group_start(s):
        while s > 0 and (s - 1) in stmt_ending_on and not comment_only[s - 1]:
            s = stmt_ending_on[s - 1]
        return s

    # Trailing comments belong to the call on whose lines they end, or (on a
    # line of the statement before its first call, or between two calls) to
    # the statement's next call. Calls on one line share its comment.
    by_stmt = {}
    for c in sorted(calls, key=lambda c: (c["line"], c["end"])):
        by_stmt.setdefault(c["stmt"], []).append(c)
    for s, cs in by_stmt.items():
        prev_end = s - 1
        for c in cs:
            first = prev_end + 1 if prev_end < c["line"] else c["line"]
            c["own"] = [idx for ln in range(first, c["end"] + 1) for idx in ends_on[ln] if not comments[idx][2]]
            prev_end = max(prev_end, c["end"])

    raw = text.split("\n")
    for c in calls:
        g = c["stmt"]  # each statement its own comment: no sharing among consecutive statements
        above = []
        ln = g - 1
        while ln >= 0 and comment_only[ln]:
            above.extend(ends_on[ln])
            ln -= 1
        where = c["line"] + 1
        if len(above) > 1:
            problems.append((where, f"{c['name']}: {len(above)} separate comments in the block ending on "
                                    f"line {g}: keep one"))
        if above and c["own"]:
            problems.append((where, f"{c['name']}: two comments, the block ending on line {g} and a "
                                    f"trailing one (line {comments[c['own'][0]][1] + 1}): keep one"))
        elif len(c["own"]) > 1:
            problems.append((where, f"{c['name']}: {len(c['own'])} trailing comments: keep one"))
        elif not above and not c["own"]:
            problems.append((where, f"{c['name']}: no comment (what does it pair with, why is its order enough?)"))
        # Next to the call, for a reader going line by line (and grep): the
        # call's line or the line just above it opens or holds a comment.
        near = [raw[ln] for ln in (c["line"] - 1, c["line"]) if 0 <= ln < len(raw)]
        if (above or c["own"]) and not any(("/*" in x or "//" in x) for x in near):
            problems.append((where, f"{c['name']}: its comment is not on its line or the line above (a comment "
                                    f"of several lines above it is a // block)"))
    return sorted(set(problems))


# The self-test: each snippet with the lines (1-based) that must be reported.
SELF_TEST = [
    ("block above", [], """
void f(void)
{
    /* Relaxed: a statistics counter. */
    atomic_fetch_add_explicit(&n, 1, memory_order_relaxed);
}
"""),
    ("trailing", [], """
    atomic_fetch_add_explicit(&n, 1, memory_order_relaxed); /* a statistics counter */
"""),
    ("no comment", [3], """
    x = 1;
    atomic_fetch_add_explicit(&n, 1, memory_order_relaxed);
"""),
    ("blank line between", [4], """
    /* Relaxed: a hint. */

    atomic_store_explicit(&h, 1, memory_order_relaxed);
"""),
    ("block and trailing", [3], """
    /* Relaxed: a hint. */
    atomic_store_explicit(&h, 1, memory_order_relaxed); /* see above */
"""),
    ("two blocks above", [4], """
    /* Acquire: pairs with the release CAS. */
    /* (the load: see above) */
    p = atomic_load_explicit(&head, memory_order_acquire);
"""),
    ("group members need their own comment", [4, 6], """
    /* Relaxed (three stores): the walker's snapshot. */
    atomic_store_explicit(&s->heap, NULL, memory_order_relaxed);
    atomic_store_explicit(&s->size, 0,
                          memory_order_relaxed);
    atomic_store_explicit(&s->kind, 0, memory_order_relaxed);
"""),
    ("group member with an as-above note of its own", [], """
    /* Relaxed (two stores): statistics. */
    atomic_fetch_add_explicit(&a, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b, 1, memory_order_relaxed); /* as above */
"""),
    ("other statement breaks the group", [5], """
    /* Relaxed: statistics. */
    atomic_fetch_add_explicit(&a, 1, memory_order_relaxed);
    x++;
    atomic_fetch_add_explicit(&b, 1, memory_order_relaxed);
"""),
    ("multi-line call, trailing on its first line", [], """
    if (atomic_compare_exchange_strong_explicit(&st, &e, 1, memory_order_relaxed, /* elects one */
                                                memory_order_relaxed))
        go();
"""),
    ("multi-line call, its comment only on its last line", [2], """
    } while (!atomic_compare_exchange_weak_explicit(&head, &old, sp, memory_order_release,
                                                    memory_order_relaxed)); /* pairs with the walker */
"""),
    ("multi-line call, block above and trailing on its second line", [3], """
    /* Release: pairs with the walker's acquire load. */
    } while (!atomic_compare_exchange_weak_explicit(&head, &old, sp, memory_order_release,
                                                    memory_order_relaxed)); /* see above */
"""),
    ("statement spanning lines: the block two lines above the call", [4], """
    /* Relaxed: single-threaded here. */
    if (!h || h->id != id ||
        atomic_load_explicit(&h->abandoned, memory_order_relaxed))
        continue;
"""),
    ("statement spanning lines, note on its first line", [4], """
    /* Relaxed: on success nobody parks. */
    return armed >= 0 && /* relaxed CAS: see above */
           atomic_compare_exchange_strong_explicit(&a, &armed, -1, memory_order_relaxed, memory_order_relaxed);
"""),
    ("if with a load in the condition", [], """
    /* Acquire: pairs with the producers' exchange. */
    if (atomic_load_explicit(&h->q_head, memory_order_acquire) != tail) {
        x = 1;
    }
"""),
    ("if and a trailing comment on the same line", [3], """
    /* Relaxed: a setting. */
    if (atomic_load_explicit(&on, memory_order_relaxed)) donate(s); /* a setting */
"""),
    ("two loads on two lines of one statement, one note each", [], """
    uint32_t m = atomic_load_explicit(&a, memory_order_relaxed) | /* a hint */
                 atomic_load_explicit(&b, memory_order_relaxed);  /* a hint */
"""),
    ("two loads of one statement, block above and a note on the first", [3], """
    /* Relaxed (two loads): hints. */
    uint32_t m = atomic_load_explicit(&a, memory_order_relaxed) | /* a hint */
                 atomic_load_explicit(&b, memory_order_relaxed);
"""),
    ("if body on the next line: the block is not next to it", [4], """
    /* Relaxed (load and store): hints, ours only. */
    if (!atomic_load_explicit(&m, memory_order_relaxed))
        atomic_store_explicit(&at, now, memory_order_relaxed);
"""),
    ("a // block of several lines above", [], """
    // Release: pairs with the popper's acquire load, so the link and the
    // entry's contents are visible to it.
    atomic_store_explicit(&head, e, memory_order_release);
"""),
    ("a /* */ block of several lines above", [4], """
    /* Release: pairs with the popper's acquire load, so the link and the
     * entry's contents are visible to it. */
    atomic_store_explicit(&head, e, memory_order_release);
"""),
    ("two // blocks above", [5], """
    // Release: pairs with the popper's acquire load.
    /* and again */
    // and a third
    atomic_store_explicit(&head, e, memory_order_release);
"""),
    ("implicit seq_cst", [2], """
    atomic_fetch_add(&n, 1); /* a statistics counter */
"""),
    ("fences, each its own comment", [], """
    /* Compiler-only fence: pairs with the fork child handler's read. */
    atomic_signal_fence(memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst); /* pairs with P0 (see above) */
"""),
    ("names in comments and strings are not calls", [], """
    /* atomic_load_explicit(&x, memory_order_relaxed) is not called here */
    puts("atomic_store_explicit(&x)");
    my_atomic_load(&x);
"""),
    ("a trailing comment of the line above is no block", [3], """
    x = 1; /* a comment about x */
    atomic_fetch_add_explicit(&n, 1, memory_order_relaxed);
"""),
    ("preprocessor line between", [4], """
    /* Relaxed: debug counting only. */
#if DEBUG
    atomic_fetch_add_explicit(&n, 1, memory_order_relaxed);
#endif
"""),
]


def self_test():
    failed = 0
    for name, want, text in SELF_TEST:
        got = sorted({ln for ln, _ in check_text(text)})  # line 1 is the snippet's leading newline
        ok = got == want
        failed += not ok
        print(f"  self-test {name}: {'ok' if ok else f'WRONG (reported lines {got}, expected {want})'}")
    print(f"check-atomics: self-test, {len(SELF_TEST) - failed}/{len(SELF_TEST)} verdicts right")
    return 1 if failed else 0


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--self-test":
        sys.exit(self_test())
    src = os.path.join(sys.argv[1], "src")
    bad, total = [], 0
    for f in sorted(os.listdir(src)):
        if not f.endswith((".c", ".h")):
            continue
        text = open(os.path.join(src, f)).read()
        total += sum(1 for s in scan(text)[0] for _ in CALL.finditer(s))
        bad += [f"src/{f}:{ln}: {msg}" for ln, msg in check_text(text)]
    for b in bad:
        print("check-atomics:", b)
    print(f"check-atomics: {total} atomic operations in src/, {len(bad)} wrong")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
