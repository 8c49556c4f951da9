#!/usr/bin/env python3
"""The runtime options are listed three times: the table in src/options.c
(what the code uses), docs/options.md and the comment of bitslab_option_get
in include/bitslab.h. Fail unless all three have the same options, in the
same order, with the same defaults and ranges (and docs/options.md the right
variable names).

Usage: check_options_docs.py [SOURCE_ROOT]   (default: this script's ../)
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read(rel):
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return f.read()


# src/options.c: X(name, TYPE, min, max, default, "doc") inside BITSLAB_OPTION_TABLE.
src = read("src/options.c")
m = re.search(r"#define BITSLAB_OPTION_TABLE\(X\)(.*?)\n\n", src, re.S)
if not m:
    sys.exit("src/options.c: no BITSLAB_OPTION_TABLE")
code = [(n, d, f"{lo}..{hi}") for n, _t, lo, hi, d in
        re.findall(r"X\((\w+),\s*(\w+),\s*(-?\d+),\s*(-?\d+),\s*(-?\d+),", m.group(1))]

# docs/options.md: | `name` | `BITSLAB_NAME` | default | min..max | effect |
docs, bad_vars = [], []
for n, var, d, r in re.findall(r"^\| `(\w+)` \| `(\w+)` \| (-?\d+) \| (-?\d+\.\.-?\d+) \|", read("docs/options.md"), re.M):
    docs.append((n, d, r))
    if var != "BITSLAB_" + n.upper():
        bad_vars.append(f"docs/options.md: {n}: variable {var}, expected BITSLAB_{n.upper()}")

# include/bitslab.h: " *   name   default   min..max   effect" in the comment block.
hdr = read("include/bitslab.h")
m = re.search(r"\*\s+option\s+default\s+range\s+effect\n(.*?)\n \*\n", hdr, re.S)
if not m:
    sys.exit("include/bitslab.h: no 'option default range effect' table")
header = re.findall(r"^ \*\s+(\w+)\s+(-?\d+)\s+(-?\d+\.\.-?\d+)\s", m.group(1), re.M)

ok = not bad_vars
for line in bad_vars:
    print(line)
if not code:
    print("src/options.c: the table is empty?")
    ok = False
for where, rows in (("docs/options.md", docs), ("include/bitslab.h", header)):
    if rows != code:
        ok = False
        print(f"{where} differs from src/options.c:")
        print(f"  src/options.c: {code}")
        print(f"  {where}: {rows}")
print(("ok: " if ok else "FAIL: ") + ", ".join(n for n, _, _ in code))
sys.exit(0 if ok else 1)
