#!/usr/bin/env python3
"""Turn bench/scaling.sh's RESULT lines into a markdown table.

    scripts/scaling_report.py RESULTS_FILE

One row per workload and thread count: bitslab's median wall time of the
workload (ms), and each other allocator's median as a ratio to it (> 1:
bitslab is faster), with bitslab's speed-up over its own 1-thread time.
Runs that failed are counted and shown.
"""
import statistics
import sys
from collections import defaultdict

ORDER = ["bitslab", "glibc", "mimalloc", "jemalloc", "tcmalloc"]


def parse(path):
    runs = defaultdict(list)  # (workload, threads, alloc) -> [seconds]
    failed = defaultdict(int)
    for line in open(path):
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        key = (fields.get("workload"), int(fields.get("threads", 0)), fields.get("alloc"))
        if line.startswith("RESULT"):
            runs[key].append(float(fields["seconds"]))
        elif line.startswith("FAILED"):
            failed[key] += 1
    return runs, failed


def main():
    runs, failed = parse(sys.argv[1])
    keys = sorted({(w, t) for w, t, _ in list(runs) + list(failed)}, key=lambda k: (k[0], k[1]))
    seen = {k[2] for k in list(runs) + list(failed)}
    allocs = [a for a in ORDER if a in seen] + sorted(seen - set(ORDER))  # others (e.g. an older bitslab) last
    med = {k: statistics.median(v) for k, v in runs.items()}
    print("| workload | threads | bitslab ms | bitslab speed-up over 1 thread | "
          + " | ".join(f"{a} (ratio)" for a in allocs if a != "bitslab") + " |")
    print("|---|---|---|---|" + "---|" * (len(allocs) - 1))
    geo = defaultdict(list)
    for w, t in keys:
        b = med.get((w, t, "bitslab"))
        one = med.get((w, 1, "bitslab"))
        cells = [w, str(t), f"{b * 1e3:.1f}" if b else "failed",
                 f"{one / b:.2f}x" if b and one else ""]
        for a in allocs:
            if a == "bitslab":
                continue
            m = med.get((w, t, a))
            if m is None:
                cells.append("failed")
                continue
            cells.append(f"{m * 1e3:.1f} ({m / b:.2f})" if b else f"{m * 1e3:.1f}")
            if b:
                geo[a].append(m / b)
        print("| " + " | ".join(cells) + " |")
    row = ["**geometric mean**", "", "", ""]
    for a in allocs:
        if a != "bitslab":
            row.append(f"({statistics.geometric_mean(geo[a]):.2f})" if geo[a] else "")
    print("| " + " | ".join(row) + " |")
    nfail = sum(failed.values())
    if nfail:
        print(f"\n{nfail} run(s) failed: " + ", ".join(f"{w} -t {t} {a} x{n}" for (w, t, a), n in sorted(failed.items())))


if __name__ == "__main__":
    main()
