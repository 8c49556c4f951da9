#!/usr/bin/env python3
"""bitslab benchmark driver (issue #5). Normally started by scripts/bench.sh.

One invocation:
  1. builds libbitslab.so (meson, release, BUILD_DIR) and the two benchmark
     programs (cc, into BUILD_DIR/bench-bin);
  2. runs every workload under glibc, mimalloc, jemalloc, tcmalloc and
     bitslab, interleaved: for rep in 1..N: for workload: for allocator
     (the allocator order rotates each repetition);
  3. runs the fast-path program under callgrind for each allocator;
  4. prints a Markdown report (medians; peer time / bitslab time, > 1 means
     bitslab is faster) and writes it to OUT/latest.md, the raw runs to
     OUT/latest.json and a chart of the ratios to OUT/latest.png (gnuplot).

Settings (command-line flags win over the environment):
  BENCH_REPS        repetitions (default 5)
  BENCH_SCALE       work multiplier for every workload (default 1)
  BENCH_SEED        random seed (default 42): the same sizes for every allocator
  BENCH_DELAY       seconds the memory workload waits before its second RSS sample (default 2)
  BENCH_ALLOCATORS  comma-separated subset of glibc,mimalloc,jemalloc,tcmalloc,bitslab
  BENCH_WORKLOADS   comma-separated subset of workload names (see bitslab-bench --list)
  BENCH_THREADS     thread counts for the threaded workloads (default 1,2,8)
  BENCH_CG_ITERS    callgrind loop iterations (default 1000000; 0 skips callgrind)
  BENCH_BUSY_LIMIT  a run during which other processes used more than this share of the
                    machine's CPUs (default 0.25) is run again, up to BENCH_RETRIES times
                    (default 2) while the retries have taken under BENCH_RETRY_BUDGET
                    seconds (default 120); the least disturbed attempt is kept
  BENCH_TIMEOUT     seconds before a run counts as hung (default 60 x scale, at least 60)
  BENCH_BITSLAB_SO  a libbitslab.so to measure instead of building one
  BUILD_DIR         meson build directory for bitslab (default build/release)
  CC                compiler for the benchmark programs (default cc)

Only the Python standard library is used. Nothing here judges a time: a run
fails only if a program crashes, hangs past its timeout or prints no RESULT.
"""

import argparse
import datetime
import resource
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

# name -> (shared object name searched with ldconfig, Debian package for the version line)
PEERS = {
    "mimalloc": ("libmimalloc.so.2", "libmimalloc2.0"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
ALL_ALLOCATORS = ["glibc", "mimalloc", "jemalloc", "tcmalloc", "bitslab"]
PEER_ORDER = ["glibc", "mimalloc", "jemalloc", "tcmalloc"]
# Substring of the library that malloc must resolve to (checked by the programs).
EXPECT_LIB = {"glibc": "libc.so", "mimalloc": "libmimalloc", "jemalloc": "libjemalloc",
              "tcmalloc": "libtcmalloc", "bitslab": "libbitslab"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


# ---- build ------------------------------------------------------------------------------------

def build(args):
    """Returns (path of libbitslab.so, bench program, fastpath program)."""
    so = os.environ.get("BENCH_BITSLAB_SO")
    if not so:
        bdir = os.path.join(ROOT, args.build_dir)
        if not os.path.exists(os.path.join(bdir, "build.ninja")):
            log(f"== meson setup {args.build_dir} (release)")
            sh(["meson", "setup", bdir, "-Dbuildtype=release"], cwd=ROOT, stdout=subprocess.DEVNULL)
        log(f"== meson compile -C {args.build_dir} bitslab:shared_library")
        # The target is libbitslab.so.<version>; libbitslab.so is its symlink.
        sh(["meson", "compile", "-C", bdir, "bitslab:shared_library"], stdout=subprocess.DEVNULL)
        so = os.path.join(bdir, "libbitslab.so")
        try:
            with open(os.path.join(bdir, "meson-info", "intro-buildoptions.json")) as f:
                opts = {o["name"]: o["value"] for o in json.load(f)}
            args.bitslab_build = ", ".join(f"{k}={opts[k]}" for k in ("buildtype", "debug_checks", "b_sanitize")
                                           if k in opts)
            if opts.get("buildtype") != "release" or opts.get("debug_checks"):
                log(f"warning: {args.build_dir} is not a plain release build ({args.bitslab_build})")
        except (OSError, ValueError, KeyError):
            pass
    so = os.path.abspath(so)
    if not os.path.exists(so):
        sys.exit(f"no libbitslab.so at {so}")

    bindir = os.path.join(ROOT, args.build_dir, "bench-bin")
    os.makedirs(bindir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-g", "-std=c11", "-Wall", "-Wextra", "-pthread"]
    bench = os.path.join(bindir, "bitslab-bench")
    fast = os.path.join(bindir, "bitslab-fastpath")
    log(f"== {cc} bench/bench_alloc.c bench/fastpath.c -> {os.path.relpath(bindir, ROOT)}/")
    sh([cc, *flags, os.path.join(BENCH, "bench_alloc.c"), "-o", bench, "-ldl"])
    cg = ["-DHAVE_CALLGRIND_H"] if os.path.exists("/usr/include/valgrind/callgrind.h") else []
    sh([cc, *flags, *cg, os.path.join(BENCH, "fastpath.c"), "-o", fast, "-ldl"])
    return so, bench, fast


def find_lib(soname):
    for line in out(["ldconfig", "-p"]).splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split()[0] == soname and "x86-64" in parts[0]:
            return parts[1]
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    return None


def allocators(args, bitslab_so):
    libs = {"glibc": None, "bitslab": bitslab_so}
    for name, (soname, _pkg) in PEERS.items():
        libs[name] = find_lib(soname)
    chosen = []
    for a in args.allocators:
        if a not in ALL_ALLOCATORS:
            sys.exit(f"unknown allocator {a}")
        if a in PEERS and not libs[a]:
            log(f"warning: {PEERS[a][0]} not found, {a} skipped (apt-get install the -dev package)")
            continue
        chosen.append(a)
    return chosen, libs


# ---- running ------------------------------------------------------------------------------------

def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            d = {}
            for tok in line.split()[1:]:
                k, _, v = tok.partition("=")
                try:
                    d[k] = int(v)
                except ValueError:
                    try:
                        d[k] = float(v)
                    except ValueError:
                        d[k] = v
            return d
    return None


def command_line(lib, argv):
    pre = f"LD_PRELOAD={shlex.quote(lib)} " if lib else ""
    return pre + " ".join(shlex.quote(a) for a in argv)


def backtrace(lib, argv, env, outdir, tag, hang, timeout):
    """Reproduces a failure under gdb and saves every thread's backtrace: a crash
    is run under gdb; a hang is started again and gdb attaches after `timeout`."""
    if not shutil.which("gdb"):
        return None
    bt = ["-batch", "-ex", "set pagination off", "-ex", "set confirm off"]
    if hang:
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=timeout)
            text = f"the rerun did not hang (exit status {p.returncode})\n"
        except subprocess.TimeoutExpired:
            r = subprocess.run(["gdb", *bt, "-p", str(p.pid), "-ex", "thread apply all bt 30"],
                               capture_output=True, text=True, timeout=300)
            text = f"attached after {timeout:.0f} s\n" + r.stdout + r.stderr
            p.kill()
            p.wait()
    else:
        cmds = bt + (["-ex", f"set environment LD_PRELOAD={lib}"] if lib else [])
        cmds += ["-ex", "run", "-ex", "info registers rip", "-ex", "thread apply all bt 30"]
        try:
            r = subprocess.run(["gdb", *cmds, "--args", *argv], capture_output=True, text=True, timeout=timeout + 60)
            text = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            text = f"gdb timed out\n{e.stdout or ''}"
    path = os.path.join(outdir, f"failure-{tag}.gdb.txt")
    with open(path, "w") as f:
        f.write(f"command: {command_line(lib, argv)}\n\n{text}")
    return path


CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def machine_busy_s():
    """CPU seconds the whole machine has been busy (steal included)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def attempt(argv, env, timeout):
    """Runs one program; returns (CompletedProcess or TimeoutExpired, share of the
    machine's CPUs that other processes used meanwhile)."""
    b0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        r = e
    wall = time.monotonic() - t0
    other = (machine_busy_s() - b0) - (children_cpu_s() - c0)
    return r, max(0.0, other / (wall * NCPU)) if wall > 0 else 0.0


RETRY_SPENT = [0.0]


def run_one(args, bench, alloc, lib, workload, threads, outdir, failures):
    argv = [bench, workload, "-t", str(threads), "-s", str(args.scale), "--seed", str(args.seed),
            "--delay", str(args.delay), "--expect-lib", EXPECT_LIB[alloc]]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = lib
    cmd = command_line(lib, argv)
    timeout = args.timeout or max(60.0, 60.0 * args.scale) + args.delay
    best = None
    for n in range(1 + args.retries):
        t0 = time.monotonic()
        r, busy = attempt(argv, env, timeout)
        if n > 0:
            RETRY_SPENT[0] += time.monotonic() - t0
        if isinstance(r, subprocess.TimeoutExpired) or r.returncode != 0:
            break  # a failure is not retried away
        res = parse_result(r.stdout)
        if res is None:
            break
        res["busy_other"] = round(busy, 3)
        res["attempts"] = n + 1
        if best is None or busy < best["busy_other"]:
            best = res
        if busy <= args.busy_limit or RETRY_SPENT[0] >= args.retry_budget:
            return best
    if best is not None:
        return best

    t0 = time.monotonic()
    if isinstance(r, subprocess.TimeoutExpired):
        symptom = f"hung: no exit after {timeout:.0f} s (killed)"
        stderr = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else (r.stderr or "")
    else:
        stderr = r.stderr
        if r.returncode < 0:
            symptom = f"killed by signal {-r.returncode}"
        elif r.returncode != 0:
            symptom = f"exit status {r.returncode}"
        else:
            symptom = "no RESULT line"
    tag = f"{alloc}-{workload}-t{threads}"
    log(f"   FAILED {tag}: {symptom}\n   command: {cmd}\n   stderr: {stderr.strip()[-500:]}")
    fail = {"allocator": alloc, "workload": workload, "threads": threads, "command": cmd,
            "symptom": symptom, "stderr": stderr.strip()[-2000:]}
    if (symptom.startswith(("killed", "hung")) or "FAILED" in stderr) and not any(
            f["allocator"] == alloc and f["workload"] == workload and f["threads"] == threads for f in failures):
        fail["gdb"] = backtrace(lib, argv, env, outdir, tag, symptom.startswith("hung"), timeout)
        if fail["gdb"]:
            log(f"   backtrace: {fail['gdb']}")
    failures.append(fail)
    return None


def configs(args, workload_list):
    cfg = []
    for name, kind in workload_list:
        if args.workloads and name not in args.workloads:
            continue
        for t in (args.threads if kind == "threaded" else [1]):
            cfg.append((name, t))
    return cfg


# ---- callgrind --------------------------------------------------------------------------------------

def callgrind(args, fast, alloc, lib, outdir):
    """Instructions per malloc+free pair in the steady-state loop, two patterns."""
    res = {}
    for mode in ("pair", "batch"):
        cgout = os.path.join(outdir, f"callgrind.{alloc}.{mode}.out")
        argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={cgout}",
                fast, mode, str(args.cg_iters), EXPECT_LIB[alloc]]
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if lib:
            env["LD_PRELOAD"] = lib  # valgrind adds its own preloads and keeps this one
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        d = parse_result(r.stdout)
        if r.returncode != 0 or not d or not os.path.exists(cgout):
            log(f"   callgrind {alloc} {mode} failed: {r.stderr.strip()[-400:]}")
            continue
        total = None
        with open(cgout) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
        # the loop function's own instructions (loop overhead, not the allocator's)
        ann = out(["callgrind_annotate", "--threshold=100", "--auto=no", cgout])
        loop = 0
        for line in ann.splitlines():
            m = re.match(r"\s*([\d,]+)\s.*:loop_" + mode + r"\b", line)
            if m:
                loop = int(m.group(1).replace(",", ""))
        top = []
        for line in ann.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)\s+\[(.*)\]", line)
            if m and "PROGRAM TOTALS" not in line:
                fn = m.group(2).split(":")[-1]
                top.append((fn, round(int(m.group(1).replace(",", "")) / d["iterations"], 1)))
        n = d["iterations"]
        res[mode] = {"iterations": n, "total_ir": total, "loop_ir": loop,
                     "ir_per_pair": total / n if total else None,
                     "alloc_ir_per_pair": (total - loop) / n if total else None,
                     "functions": top[:6], "malloc_lib": d.get("malloc_lib")}
    return res


# ---- report -------------------------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else None


def fmt_ms(s):
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def machine_info(args):
    lines = []
    lscpu = out(["lscpu"])
    model = re.search(r"Model name:\s*(.*)", lscpu)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.M)
    hyp = re.search(r"Hypervisor vendor:\s*(.*)", lscpu)
    l2 = re.search(r"L2 cache:\s*(.*)", lscpu)
    l3 = re.search(r"L3 cache:\s*(.*)", lscpu)
    mem = out(["sh", "-c", "awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo"])
    cpu = f"{model.group(1).strip() if model else platform.processor()}, {cpus.group(1) if cpus else os.cpu_count()} CPUs"
    if hyp:
        cpu += f" (virtual machine, {hyp.group(1).strip()})"
    if l2 or l3:
        cpu += f"; L2 {l2.group(1).strip() if l2 else '?'}, L3 {l3.group(1).strip() if l3 else '?'}"
    lines.append(f"- CPU: {cpu}; memory {mem}")
    deb = out(["cat", "/etc/debian_version"])
    lines.append(f"- Kernel: Linux {platform.release()}; Debian {deb}; "
                 f"{out(['cc', '--version']).splitlines()[0] if out(['cc', '--version']) else 'cc ?'}")
    vers = []
    for pkg in ["libc6"] + [p[1] for p in PEERS.values()]:
        v = out(["dpkg-query", "-W", "-f=${Version}", pkg])
        vers.append(f"{pkg} {v or '?'}")
    lines.append("- Allocators (Debian packages): " + ", ".join(vers))
    head = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include", "meson.build"])
    lines.append(f"- bitslab: commit {head or '?'}{' + uncommitted changes in src/' if dirty else ''}; "
                 f"{getattr(args, 'bitslab_build', None) or 'libbitslab.so from ' + str(os.environ.get('BENCH_BITSLAB_SO'))}; "
                 "preloaded as libbitslab.so")
    return lines


def paired_ratio(runs, w, t, peer, key):
    """Median over repetitions of peer / bitslab within the same repetition: the
    two ran seconds apart, so a slow phase of the machine hits both."""
    by_rep = {}
    for r in runs:
        if r["workload"] == w and r["threads"] == t and r["allocator"] in (peer, "bitslab") and r.get(key):
            by_rep.setdefault(r["rep"], {})[r["allocator"]] = r[key]
    rs = [d[peer] / d["bitslab"] for d in by_rep.values() if peer in d and "bitslab" in d]
    return median(rs)


def report(args, alloc_list, cfgs, runs, cg, failures, wall, start):
    peers = [a for a in PEER_ORDER if a in alloc_list]
    have_b = "bitslab" in alloc_list
    med = {}   # median wall seconds
    ratio = {}  # (w, t, peer) -> (wall ratio, cpu ratio)
    spread = []
    for (w, t) in cfgs:
        for a in alloc_list:
            xs = [r["seconds"] for r in runs if r["workload"] == w and r["threads"] == t and r["allocator"] == a]
            med[(w, t, a)] = median(xs)
            if len(xs) > 1 and med[(w, t, a)]:
                spread.append((max(xs) - min(xs)) / med[(w, t, a)])
            if have_b and a != "bitslab":
                ratio[(w, t, a)] = (paired_ratio(runs, w, t, a, "seconds"), paired_ratio(runs, w, t, a, "cpu_seconds"))

    L = []
    L.append("# bitslab benchmarks")
    L.append("")
    L.append(f"Generated by `scripts/bench.sh` on {start:%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} min: "
             f"{args.reps} repetitions, interleaved (for each repetition, each workload, each allocator), "
             f"seed {args.seed}, scale {args.scale:g}.")
    L.append("")
    L.extend(machine_info(args))
    busy = [r.get("busy_other", 0) for r in runs]
    if busy:
        retried = sum(1 for r in runs if r.get("attempts", 1) > 1)
        disturbed = sum(1 for b in busy if b > args.busy_limit)
        L.append(f"- Other load on the machine during the runs: median {100 * statistics.median(busy):.0f} %, "
                 f"maximum {100 * max(busy):.0f} % of its CPUs; {retried} of {len(runs)} runs were repeated "
                 f"because others used more than {100 * args.busy_limit:.0f} %, and {disturbed} kept a "
                 "disturbed result" + (" (**the machine was busy: times are noisy**)"
                                       if statistics.median(busy) > 0.1 or disturbed > len(runs) / 10 else "") + ".")
    L.append("")
    L.append("## Time")
    L.append("")
    L.append("Median wall time of the workload in milliseconds (fixed work, split between the threads); "
             "in parentheses the ratio peer time / bitslab time: **> 1 means bitslab is faster**. A ratio is the "
             "median over the repetitions of the two times measured in the same repetition (seconds apart). "
             "glibc runs without preload, the others with `LD_PRELOAD`.")
    L.append("")
    head = "| workload | threads |" + (" bitslab ms |" if have_b else "") + "".join(f" {p} ms (ratio) |" for p in peers)
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))
    gm = {p: [] for p in peers}
    for (w, t) in cfgs:
        b = med.get((w, t, "bitslab"))
        row = f"| {w} | {t} |" + (f" {fmt_ms(b)} |" if have_b else "")
        for p in peers:
            m = med.get((w, t, p))
            r = ratio.get((w, t, p), (None, None))[0]
            if r:
                gm[p].append(r)
            row += f" {fmt_ms(m)} ({fmt_ratio(r)}) |" if have_b else f" {fmt_ms(m)} |"
        L.append(row)
    if have_b and any(gm.values()):
        row = "| **geometric mean** | | |"
        for p in peers:
            row += f" ({statistics.geometric_mean(gm[p]):.2f}) |" if gm[p] else " - |"
        L.append(row)
    L.append("")
    if spread:
        L.append(f"Noise: the spread (max - min) / median of a cell's {args.reps} times has median "
                 f"{100 * statistics.median(spread):.0f} % over all cells (maximum {100 * max(spread):.0f} %).")
        L.append("")
    if have_b:
        L.append("CPU time (all threads of the process, same workloads), ratio peer / bitslab: less sensitive "
                 "than wall time to other processes on the machine, but blind to time spent waiting "
                 "(futex sleeps, yields).")
        L.append("")
        L.append("| workload | threads |" + "".join(f" {p} |" for p in peers))
        L.append("|---|---|" + "---|" * len(peers))
        gmc = {p: [] for p in peers}
        for (w, t) in cfgs:
            row = f"| {w} | {t} |"
            for p in peers:
                r = ratio.get((w, t, p), (None, None))[1]
                if r:
                    gmc[p].append(r)
                row += f" {fmt_ratio(r)} |"
            L.append(row)
        L.append("| **geometric mean** | |" + "".join(
            f" {statistics.geometric_mean(gmc[p]):.2f} |" if gmc[p] else " - |" for p in peers))
        L.append("")
    L.append("Workloads (bench/bench_alloc.c; small sizes are 16..1024 B, half of them <= 128 B): "
             "`mixed` 1 thread, 8192 live blocks, random free + malloc; `realloc` the same with realloc to "
             "random sizes (1/8 frees); `prodcons` N producer/consumer *pairs* (2N threads), every free is a "
             "cross-thread free; `parallel` N threads doing `mixed` on their own blocks; `falseshare` Hoard's "
             "cache-scratch (each thread frees a neighbouring block the main thread allocated, then mallocs, "
             "writes 64 times and frees 8-byte blocks); `churn` 2000 short-lived threads, N at a time, each "
             "allocating 256 blocks and handing 64 to later threads; `sizes-small` every small bin (log-uniform "
             "16 B..32 KiB); `sizes-wide` 32 KiB..1 MiB; `sizes-huge` 1..8 MiB (first and last bytes touched); "
             "`memory` (time of building and freeing ~200 MB).")
    L.append("")

    # falseshare: threads that got a block on another thread's cache line (allocator property)
    fs = [(t, a) for (w, t) in cfgs if w == "falseshare" for a in alloc_list]
    if fs:
        L.append("### False sharing: the allocator's part")
        L.append("")
        L.append("`falseshare`: number of threads whose first own 8-byte block lies on a cache line that another "
                 "thread's block also uses (glibc's tcache hands each thread back the block it freed, which the "
                 "main thread had allocated next to the others). Independent of the machine; the time above "
                 "also depends on how much a shared line costs here.")
        L.append("")
        ts = sorted({t for (w, t) in cfgs if w == "falseshare"})
        L.append("| allocator |" + "".join(f" {t} threads |" for t in ts))
        L.append("|---|" + "---|" * len(ts))
        for a in alloc_list:
            row = f"| {a} |"
            for t in ts:
                xs = [r.get("threads_sharing_a_line") for r in runs
                      if r["workload"] == "falseshare" and r["threads"] == t and r["allocator"] == a]
                xs = [x for x in xs if x is not None]
                row += f" {median(xs):g} of {t} |" if xs else " - |"
            L.append(row)
        L.append("")

    mem = [t for (w, t) in cfgs if w == "memory"]
    if mem:
        L.append("## Memory")
        L.append("")
        L.append(f"`memory`: N threads build ~200 MB of blocks (mostly 16..1024 B, every 4000th 32 KiB..4 MiB), "
                 f"then each frees all of its blocks, scattered. Growth = peak RSS - RSS at start. "
                 f"Columns: peak RSS in MiB; RSS left, as % of the growth, right after the frees, "
                 f"after {args.delay:g} s idle (threads alive, no allocator calls), and after the threads have "
                 f"exited. Medians.")
        L.append("")
        L.append("| threads | allocator | peak MiB | at once | after " + f"{args.delay:g} s | after thread exit |")
        L.append("|---|---|---|---|---|---|")
        for t in mem:
            for a in alloc_list:
                rs = [r for r in runs if r["workload"] == "memory" and r["threads"] == t and r["allocator"] == a]
                if not rs:
                    continue

                def m(k):
                    xs = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
                    return median(xs)
                peak = m("peak_rss_kb")
                L.append(f"| {t} | {a} | {peak / 1024:.0f} | {m('rss_end_pct'):.1f} % | {m('rss_after_pct'):.1f} % "
                         f"| {m('rss_exit_pct'):.1f} % |")
        L.append("")

    if cg:
        L.append("## Fast path: instructions per malloc + free")
        L.append("")
        L.append(f"callgrind (`--collect-atstart=no`, collection toggled around the loop only), "
                 f"{args.cg_iters:,} malloc(32)+free pairs after a warm-up; bench/fastpath.c. "
                 "`pair`: malloc then free at once (LIFO, the same block each time); "
                 "`batch`: 64 mallocs then the 64 frees in allocation order. Instructions per pair, the "
                 "allocator's only (the loop's own instructions, the same for every allocator, subtracted; "
                 "total in parentheses). Deterministic: one run each.")
        L.append("")
        L.append("| allocator | pair | batch | where (pair, Ir per pair) |")
        L.append("|---|---|---|---|")
        for a in alloc_list:
            c = cg.get(a, {})

            def cell(mode):
                x = c.get(mode)
                return f"{x['alloc_ir_per_pair']:.1f} ({x['ir_per_pair']:.1f})" if x and x["ir_per_pair"] else "-"
            where = ", ".join(f"{fn} {v:g}" for fn, v in c.get("pair", {}).get("functions", [])
                              if v >= 0.5 and not fn.startswith(("loop_", "0x")))
            L.append(f"| {a} | {cell('pair')} | {cell('batch')} | {where} |")
        L.append("")

    if failures:
        L.append("## Failures")
        L.append("")
        groups = {}
        for f in failures:
            groups.setdefault((f["allocator"], f["workload"], f["threads"]), []).append(f)
        for (a, w, t), fs in groups.items():
            f = next((x for x in fs if x.get("gdb")), fs[0])
            symptoms = sorted({x["symptom"] for x in fs})
            L.append(f"- **{a}**, `{w}` threads={t}: {'; '.join(symptoms)}, in {len(fs)} of {args.reps} "
                     f"repetitions. Command: `{f['command']}`" +
                     (f"; backtrace: `{os.path.relpath(f['gdb'], ROOT)}`" if f.get("gdb") else ""))
            if f["stderr"]:
                L.append(f"  - stderr: `{f['stderr'].splitlines()[-1][:300]}`")
        L.append("")
    return "\n".join(L) + "\n", ratio


def chart(args, alloc_list, cfgs, ratio, outdir):
    peers = [a for a in PEER_ORDER if a in alloc_list]
    if "bitslab" not in alloc_list or not peers:
        return None
    dat = os.path.join(outdir, "latest.dat")
    rows = 0
    with open(dat, "w") as f:
        f.write("label " + " ".join(peers) + "\n")
        for (w, t) in cfgs:
            vals = []
            for p in peers:
                r = ratio.get((w, t, p), (None, None))[0]
                vals.append(f"{r:.4f}" if r else "NaN")
            f.write(f"{w}/{t} " + " ".join(vals) + "\n")
            rows += 1
    png = os.path.join(outdir, "latest.png")
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no chart (apt-get install gnuplot-nox)")
        return None
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"]
    plot = ", ".join(f"'{dat}' using {i + 2}:xtic(1) title columnheader({i + 2}) lc rgb '{colors[i % 4]}'"
                     for i in range(len(peers)))
    script = f"""
set terminal pngcairo size {max(900, 45 * rows + 200)},560 font 'sans,10'
set output '{png}'
set title "Peer time / bitslab time per workload/threads (median of {args.reps}; > 1: bitslab faster)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set ylabel "ratio (log scale)"
set grid ytics
set key top left horizontal reverse Left
set xtics rotate by -40 left
set bmargin 6
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb 'black' front
plot {plot}
"""
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()[-400:]}")
        return None
    return png


# ---- main ---------------------------------------------------------------------------------------------

def main():
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=int(env.get("BENCH_REPS", 5)))
    ap.add_argument("--scale", type=float, default=float(env.get("BENCH_SCALE", 1)))
    ap.add_argument("--seed", type=int, default=int(env.get("BENCH_SEED", 42)))
    ap.add_argument("--delay", type=float, default=float(env.get("BENCH_DELAY", 2)))
    ap.add_argument("--allocators", default=env.get("BENCH_ALLOCATORS", ",".join(ALL_ALLOCATORS)))
    ap.add_argument("--workloads", default=env.get("BENCH_WORKLOADS", ""))
    ap.add_argument("--threads", default=env.get("BENCH_THREADS", "1,2,8"))
    ap.add_argument("--cg-iters", type=int, default=int(env.get("BENCH_CG_ITERS", 1000000)))
    ap.add_argument("--busy-limit", type=float, default=float(env.get("BENCH_BUSY_LIMIT", 0.25)))
    ap.add_argument("--retries", type=int, default=int(env.get("BENCH_RETRIES", 2)))
    ap.add_argument("--retry-budget", type=float, default=float(env.get("BENCH_RETRY_BUDGET", 120)))
    ap.add_argument("--timeout", type=float, default=float(env.get("BENCH_TIMEOUT", 0)),
                    help="seconds before a run counts as hung (default: 60 x scale, at least 60)")
    ap.add_argument("--build-dir", default=env.get("BUILD_DIR", "build/release"))
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    args = ap.parse_args()
    args.allocators = [a for a in args.allocators.split(",") if a]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    if args.reps < 1:
        sys.exit("BENCH_REPS must be >= 1")

    start = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):  # stale failure logs and callgrind files of an earlier run
        if f.startswith(("failure-", "callgrind.")):
            os.remove(os.path.join(args.out, f))

    so, bench, fast = build(args)
    alloc_list, libs = allocators(args, so)
    workload_list = [tuple(l.split()) for l in out([bench, "--list"]).splitlines()]
    unknown = set(args.workloads) - {w for w, _ in workload_list}
    if unknown:
        sys.exit(f"unknown workloads: {', '.join(sorted(unknown))}")
    cfgs = configs(args, workload_list)
    log(f"== {len(cfgs)} workload configurations x {len(alloc_list)} allocators x {args.reps} repetitions")
    for a in alloc_list:
        log(f"   {a:9s} {libs[a] or '(no preload)'}")

    runs, failures = [], []
    for rep in range(args.reps):
        k = rep % len(alloc_list)
        order = alloc_list[k:] + alloc_list[:k]
        t_rep = time.monotonic()
        for (w, t) in cfgs:
            for a in order:
                res = run_one(args, bench, a, libs[a], w, t, args.out, failures)
                if res:
                    res.update({"allocator": a, "rep": rep + 1, "workload": w, "threads": t})
                    runs.append(res)
        log(f"== repetition {rep + 1}/{args.reps} done in {time.monotonic() - t_rep:.0f} s")

    cg = {}
    if args.cg_iters > 0 and shutil.which("valgrind"):
        log(f"== callgrind fast path ({args.cg_iters:,} iterations)")
        for a in alloc_list:
            cg[a] = callgrind(args, fast, a, libs[a], args.out)
    elif args.cg_iters > 0:
        log("valgrind not found: no instruction counts")

    wall = time.monotonic() - t_start
    md, ratio = report(args, alloc_list, cfgs, runs, cg, failures, wall, start)
    png = chart(args, alloc_list, cfgs, ratio, args.out)
    if png:
        md += f"\nChart: `{os.path.relpath(png, ROOT)}` (ratios per workload, log scale).\n"
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"date": start.isoformat(), "settings": {k: v for k, v in vars(args).items()},
                   "libraries": libs, "runs": runs, "callgrind": cg, "failures": failures}, f, indent=1)
    print(md)
    log(f"== wrote {os.path.relpath(args.out, ROOT)}/latest.md, latest.json" + (", latest.png" if png else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
