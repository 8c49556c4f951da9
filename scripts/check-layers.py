#!/usr/bin/env python3
"""The source layering check (docs/architecture.md, "Source layout").

Every file of src/ belongs to a concept (its name without .c/.h), and every
concept to a layer, listed in docs/architecture.md between the markers
<!-- layers:begin --> and <!-- layers:end -->, one line per layer:

    3  slab remote

A concept may include the header of, or call a function (or use a variable)
of, only a concept of a lower layer, or itself. Includes are read from the
sources; calls from the object files of the library (nm: what each object
needs that another one defines), so a call made through an inline function
of a header counts for the file that compiled it. Fails (exit 1), naming
each offending edge, on a dependency that points sideways or upward (a
cycle between files needs one), on a file of src/ that the list does not
name, and on a file of src/ that includes internal.h (the tests' umbrella).

Usage: check-layers.py SOURCE_ROOT [LIBRARY.a]   (without the archive: includes only)
"""
import os
import re
import subprocess
import sys
from collections import defaultdict


def layers(root):
    text = open(os.path.join(root, "docs", "architecture.md")).read()
    m = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    if not m:
        sys.exit("docs/architecture.md: no <!-- layers:begin --> ... <!-- layers:end --> block")
    rank = {}
    for line in m.group(1).splitlines():
        f = re.match(r"\s*(\d+)\s+(.+)$", line)
        if not f:
            continue
        for name in f.group(2).split():
            if name in rank:
                sys.exit(f"docs/architecture.md: {name} is in two layers")
            rank[name] = int(f.group(1))
    return rank


def concept(path):
    return os.path.splitext(os.path.basename(path))[0]


def include_edges(src):
    edges = []
    for f in sorted(os.listdir(src)):
        if not f.endswith((".c", ".h")) or f == "internal.h":
            continue
        for n, line in enumerate(open(os.path.join(src, f)), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m:
                edges.append((f, m.group(1), f"{f}:{n}: #include \"{m.group(1)}\""))
    return edges


def call_edges(archive):
    defined, needed = {}, defaultdict(set)
    out = subprocess.run(["nm", "-A", archive], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"[^:]*:([^:]+):\s*(?:[0-9a-f]+)?\s+([A-Za-z])\s+(\S+)$", line)
        if not m:
            continue
        obj, kind, sym = m.groups()
        name = re.sub(r"^src_|\.c\.o$|\.o$", "", obj)
        if kind == "U":
            needed[name].add(sym)
        elif kind.isupper():
            defined[sym] = name
    edges = []
    for obj, syms in needed.items():
        for sym in sorted(syms):
            if sym in defined and defined[sym] != obj:
                edges.append((obj + ".c", defined[sym] + ".c", f"{obj}.c uses {sym} ({defined[sym]}.c)"))
    return edges


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    src = os.path.join(root, "src")
    rank = layers(root)
    bad = []
    for f in sorted(os.listdir(src)):
        if f.endswith((".c", ".h")) and f != "internal.h" and concept(f) not in rank:
            bad.append(f"src/{f}: its concept {concept(f)} is in no layer of docs/architecture.md")
    edges = include_edges(src)
    if len(sys.argv) > 2:
        edges += call_edges(sys.argv[2])
    for a, b, what in edges:
        if b == "internal.h":
            bad.append(f"{what}: src/ files include the headers they use, not internal.h")
            continue
        ca, cb = concept(a), concept(b)
        if ca == cb or ca not in rank or cb not in rank:
            continue  # the same concept; unknown names are reported above (or are system headers)
        if rank[cb] >= rank[ca]:
            way = "sideways" if rank[cb] == rank[ca] else "upward"
            bad.append(f"{what}: {ca} (layer {rank[ca]}) depends {way} on {cb} (layer {rank[cb]})")
    for b in bad:
        print("check-layers:", b)
    n = len({(concept(a), concept(b)) for a, b, _ in edges if concept(a) != concept(b)})
    print(f"check-layers: {len(rank)} concepts in {len(set(rank.values()))} layers, "
          f"{n} dependencies between concepts, {len(bad)} wrong")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
