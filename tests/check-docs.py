#!/usr/bin/env python3
"""check-docs.py LAYOUT_PROGRAM DOC: the numbers docs/architecture.md quotes
match the compiled layout (tests/layout.c prints them). Each number the page
states is rebuilt here from the program's output as the exact phrase the page
uses; a phrase missing from the page is a drift, and the test fails."""
import subprocess
import sys


def kib(n):
    return f"{n // 1024} KiB"


def main():
    prog, doc = sys.argv[1], sys.argv[2]
    v = {}
    for line in subprocess.run([prog], capture_output=True, text=True, check=True).stdout.splitlines():
        k, val = line.split()
        v[k] = int(val)
    text = open(doc, encoding="utf-8").read()
    retain_16 = v["retain_empty_of_16"]
    phrases = [
        f"{v['slabs_per_superpage']} slabs of {kib(v['slab_bytes'])}",
        f"slab 0 ({kib(v['slab_bytes'])}, of which {v['metadata_bytes']:,} bytes are used)",
        f"| metadata per superpage | {v['metadata_bytes']:,} B ({100 * v['metadata_bytes'] / v['superpage_bytes']:.1f} % of 2 MiB)",
        f"{v['data_slabs']} data slabs per superpage",
        f"slab_t[{v['slabs_per_superpage']}], {v['slab_t_bytes']} bytes each",
        f"one {v['bitmap_row_bytes']}-byte row per slab",
        f"64 words x 64 bits = {v['bitmap_bins']:,} bins",
        f"region + {v['offset_slabs']} + ",
        f"region + {v['offset_local']} + ",
        f"the remote row is {kib(v['remote_row_distance'])} further",
        f"{v['classes']} classes",
        f"a run of 1..{v['wide_max_slabs']} consecutive slabs",
        f"one load from a {v['class_table_bytes']}-byte",
        f"`slab_t` is exactly\n{v['slab_t_bytes']} bytes and a bitmap row {v['bitmap_row_bytes']}",
        # SUPERPAGE_RETENTION: 1 + superpages / 8 (3 of 16)
        "1 + 1/8 of the heap's superpages" if retain_16 == 3 else f"SUPERPAGE_RETENTION(16) = {retain_16}",
    ]
    bad = [p for p in phrases if p not in text]
    for p in phrases:
        print(("ok     " if p not in bad else "DRIFT  ") + p.replace("\n", " "))
    if bad:
        print(f"{doc}: {len(bad)} number(s) do not match the compiled layout")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
