#!/usr/bin/env python3
"""Checks bitslab's statistics output (meson tests stats-json, heapmap-counts,
heapmap-tool). Runs tests/stats_dump, which prints the statistics JSON on
stdout after a multi-threaded workload, and writes what bitslab_stats()
returned at the same quiet point, the table and the heap map into a
directory.

  check_stats.py stats   STATS_DUMP DOCS_DIR
  check_stats.py heapmap STATS_DUMP DOCS_DIR
  check_stats.py tool    STATS_DUMP DOCS_DIR HEAPMAP_TOOL

Exit 0: pass, 1: fail, 77: skipped (python3-jsonschema or matplotlib missing).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def run_dump(exe, out_dir):
    env = dict(os.environ, BITSLAB_PURGE_DELAY_MS="0")  # some slabs get decommitted
    proc = subprocess.run([exe, out_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        sys.exit(f"stats_dump exited with {proc.returncode}")
    return proc.stdout.decode()


def load_schema(docs, name):
    try:
        import jsonschema
    except ImportError:
        print(f"SKIP: python3-jsonschema is not installed for {sys.executable}")
        sys.exit(SKIP)
    with open(os.path.join(docs, name)) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate(validator, doc, what):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors[:10]:
        failures.append(f"{what}: {'/'.join(map(str, e.path))}: {e.message}")
    return not errors


def check_stats(exe, docs):
    validator = load_schema(docs, "stats.schema.json")
    with tempfile.TemporaryDirectory() as d:
        text = run_dump(exe, d)
        with open(os.path.join(d, "expected.json")) as f:
            expected = json.load(f)
        with open(os.path.join(d, "stats.txt")) as f:
            table = f.read()
    doc = json.loads(text)  # the whole of stdout is one JSON document
    if not validate(validator, doc, "stats JSON"):
        return
    check(doc.get("schema_version") == 1, "schema_version is not 1")
    schema_keys = set(validator.schema["properties"])
    check(set(doc) == schema_keys, f"keys differ from the schema: {sorted(set(doc) ^ schema_keys)}")

    # The same quiet point: every figure equals what bitslab_stats() returned.
    for key, want in expected.items():
        if key == "classes":
            continue
        check(doc.get(key) == want, f"{key}: JSON {doc.get(key)} != bitslab_stats {want}")
    for c, (got, want) in enumerate(zip(doc["classes"], expected["classes"])):
        check(got["class"] == c, f"classes[{c}] says class {got['class']}")
        for key, value in want.items():
            check(got[key] == value, f"class {c} {key}: JSON {got[key]} != bitslab_stats {value}")

    # Internal consistency.
    small = 0
    for c in doc["classes"]:
        n = c["class"]
        check(c["bins_total"] == c["bins_in_use"] + c["bins_cached"] + c["bins_pending"] + c["bins_free"],
              f"class {n}: bins do not add up: {c}")
        check(c["bins_total"] == c["slabs"] * (65536 // c["bin_size"]), f"class {n}: bins_total vs slabs")
        check(c["bytes_in_use"] == c["bins_in_use"] * c["bin_size"], f"class {n}: bytes_in_use")
        check(c["waste"] == c["slabs"] * 65536 - c["bytes_in_use"], f"class {n}: waste")
        small += c["bytes_in_use"]
    check(doc["in_use"] == small + doc["wide_bytes"] + doc["huge_bytes"], "in_use != small + wide + huge")
    check(doc["remote_frees_sent"] == doc["remote_frees_merged"] + doc["remote_frees_pending"], "sent")
    check(doc["superpages_total"] == doc["superpages_owned"] + doc["superpages_orphaned"], "superpages")
    check(doc["committed"] <= doc["mapped"], "committed > mapped")

    # The workload reaches every figure.
    check(doc["superpages_shrunk"] <= doc["superpages_orphaned"], "shrunk superpages are orphans")
    for key in ("in_use", "cached", "purged_bytes", "madvise_calls", "superpages_orphaned", "huge_allocations",
                "wide_allocations", "heaps_abandoned", "remote_frees_pending", "remote_frees_merged", "resident"):
        check(doc[key] > 0, f"the workload left {key} at 0")
    check(doc["heaps_total"] == 5, f"heaps_total {doc['heaps_total']}, expected 5 (main and 4 workers; the freer has none)")
    check(doc["heaps_abandoned"] == 4, f"heaps_abandoned {doc['heaps_abandoned']}, expected 4")

    # The table shows the same numbers: one row per class with slabs.
    rows = {}
    for line in table.splitlines():
        m = re.match(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+", line)
        if m:
            rows[int(m.group(1))] = [int(x) for x in m.groups()[1:]]
    for c in doc["classes"]:
        if c["slabs"]:
            want = [c["bin_size"], c["slabs"], c["bins_in_use"], c["bins_cached"], c["bins_pending"], c["bins_free"]]
            check(rows.get(c["class"]) == want, f"table row {c['class']}: {rows.get(c['class'])} != {want}")
    check(len(rows) == sum(1 for c in doc["classes"] if c["slabs"]), "table rows != classes with slabs")
    m = re.search(r"remote\s+(\d+) frees sent: (\d+) merged, (\d+) pending", table)
    check(m and [int(x) for x in m.groups()] ==
          [doc["remote_frees_sent"], doc["remote_frees_merged"], doc["remote_frees_pending"]], "table: remote line")


def check_heapmap(exe, docs):
    validator = load_schema(docs, "heapmap.schema.json")
    with tempfile.TemporaryDirectory() as d:
        stats = json.loads(run_dump(exe, d))
        with open(os.path.join(d, "heapmap.json")) as f:
            hm = json.load(f)
    if not validate(validator, hm, "heap map"):
        return
    sps = hm["superpages"]
    check(len(sps) == stats["superpages_total"] - stats["superpages_shrunk"],
          f"{len(sps)} superpages in the map, stats {stats['superpages_total']} of which {stats['superpages_shrunk']} shrunk")
    owned = [sp for sp in sps if sp["heap"] is not None]
    check(len(owned) == stats["superpages_owned"], f"{len(owned)} owned, stats {stats['superpages_owned']}")
    check(len({sp["address"] for sp in sps}) == len(sps), "a superpage appears twice")
    per = {c: {"slabs": 0, "bins_in_use": 0, "bins_cached": 0, "bins_pending": 0, "bins_free": 0,
               "bins_total": 0} for c in range(40)}
    wide_live = wide_bytes = pending = 0
    for sp in sps:
        check([s["index"] for s in sp["slabs"]] == list(range(32)), f"{sp['address']}: slab indexes")
        check(sp["slabs"][0]["kind"] == "meta", f"{sp['address']}: slab 0 is not meta")
        tail = 0
        for s in sp["slabs"]:
            if s["kind"] == "small":
                p = per[s["class"]]
                p["slabs"] += 1
                for k in ("bins_in_use", "bins_cached", "bins_pending", "bins_free", "bins_total"):
                    p[k] += s[k]
                check(s["bin_size"] == hm["class_sizes"][s["class"]], f"slab {s}: bin size")
                pending += s["bins_pending"]
            elif s["kind"] == "wide":
                wide_live += s["bins_in_use"]
                wide_bytes += s["bytes"] if s["bins_in_use"] else 0
                pending += s["bins_pending"]
                tail = s["run_slabs"] - 1
                continue
            elif s["kind"] == "wide_tail":
                check(tail > 0, f"{sp['address']} slab {s['index']}: a wide tail outside a run")
                tail -= 1
                continue
            check(tail == 0, f"{sp['address']} slab {s['index']}: run cut short")
            tail = 0
        if sp["heap"] is None:
            check(all(s["kind"] in ("meta", "free") for s in sp["slabs"]), f"orphan {sp['address']} has slabs in use")
    for c in range(40):
        for k, v in per[c].items():
            check(v == stats["classes"][c][k], f"class {c} {k}: map {v}, stats {stats['classes'][c][k]}")
    check(wide_live == stats["wide_allocations"], f"wide: map {wide_live}, stats {stats['wide_allocations']}")
    check(wide_bytes == stats["wide_bytes"], f"wide bytes: map {wide_bytes}, stats {stats['wide_bytes']}")
    check(pending == stats["remote_frees_pending"], f"pending: map {pending}, stats {stats['remote_frees_pending']}")
    t = hm["totals"]
    check(t["superpages"] == len(sps) and t["superpages_owned"] == len(owned), "totals: superpages")
    check(t["bins_in_use"] == sum(p["bins_in_use"] for p in per.values()), "totals: bins_in_use")
    check(t["bytes_in_use"] == stats["in_use"] - stats["huge_bytes"], "totals: bytes_in_use")
    check(any(not s["committed"] for sp in sps for s in sp["slabs"]), "no decommitted slab in the map")
    check(any(s["resident_pages"] for sp in sps for s in sp["slabs"]), "no resident page in the map")


def check_tool(exe, docs, tool):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"SKIP: matplotlib is not installed for {sys.executable} (Debian: python3-matplotlib)")
        sys.exit(SKIP)
    import xml.etree.ElementTree as ET
    with tempfile.TemporaryDirectory() as d:
        run_dump(exe, d)
        hm = os.path.join(d, "heapmap.json")
        for ext in ("svg", "png"):
            out = os.path.join(d, "map." + ext)
            proc = subprocess.run([sys.executable, tool, hm, "-o", out], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=300)
            check(proc.returncode == 0, f"bitslab-heapmap -o map.{ext}: exit {proc.returncode}: "
                                        f"{proc.stdout.decode(errors='replace')[-2000:]}")
            check(os.path.exists(out) and os.path.getsize(out) > 1000, f"map.{ext} missing or tiny")
            if ext == "png" and os.path.exists(out):
                with open(out, "rb") as f:
                    check(f.read(8) == b"\x89PNG\r\n\x1a\n", "map.png is not a PNG")
            if ext == "svg" and os.path.exists(out):
                root = ET.parse(out).getroot()
                check(root.tag.endswith("svg"), "map.svg is not SVG")
                with open(out) as f:
                    svg = f.read()
                check("superpage" in svg and "in use" in svg, "map.svg lacks its title or legend text")
        # Reading from standard input works too.
        with open(hm, "rb") as f:
            proc = subprocess.run([sys.executable, tool, "-", "-o", os.path.join(d, "stdin.svg")], stdin=f,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        check(proc.returncode == 0 and os.path.getsize(os.path.join(d, "stdin.svg")) > 1000, "reading stdin")


def main():
    mode, exe, docs = sys.argv[1:4]
    if mode == "stats":
        check_stats(exe, docs)
    elif mode == "heapmap":
        check_heapmap(exe, docs)
    elif mode == "tool":
        check_tool(exe, docs, sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print(f"{mode}: all checks passed")


if __name__ == "__main__":
    main()
