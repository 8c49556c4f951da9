#!/usr/bin/env python3
"""bitslab benchmark driver (issues #5, #9, #10, #11). Normally started by scripts/bench.sh.

One invocation:
  1. builds libbitslab.so (meson, release, BUILD_DIR; found by glob, so a
     versioned libbitslab.so.0 works too) and the three benchmark programs
     (cc, into BUILD_DIR/bench-bin);
  2. times every workload with hyperfine: one hyperfine invocation per
     workload and thread count, one command per allocator (glibc, mimalloc,
     jemalloc, tcmalloc, bitslab), BENCH_REPS runs each, JSON exported;
     the programs append their RESULT line (peak RSS, page faults, ...) to a
     file per allocator, since hyperfine discards their output;
  3. runs every workload once more per allocator under `strace -f -c`
     (untimed) to count mmap / munmap / madvise / mremap / brk calls;
  4. counts instructions per malloc+free with callgrind (fast path LIFO and
     batch pairs, and the ring workload);
  5. runs the memory scenarios (bench/mem_scenarios.c) under each allocator;
  6. prints a Markdown report (medians; peer time / bitslab time, > 1 means
     bitslab is faster) and writes it to OUT/latest.md, everything measured to
     OUT/latest.json and a chart of the ratios to OUT/latest.png (matplotlib).

Settings (command-line flags win over the environment):
  BENCH_REPS        hyperfine runs per workload and allocator (default 5)
  BENCH_WARMUP      hyperfine warm-up runs per workload and allocator (default 1)
  BENCH_SCALE       work multiplier for every workload (default 1)
  BENCH_SEED        random seed (default 42): the same sizes for every allocator
  BENCH_DELAY       seconds the memory workload waits before its second RSS sample (default 2;
                    only in the untimed strace pass: the timed runs use 0)
  BENCH_ALLOCATORS  comma-separated subset of glibc,mimalloc,jemalloc,tcmalloc,bitslab
  BENCH_WORKLOADS   comma-separated subset of workload names (see bitslab-bench --list); "none": no timing
  BENCH_THREADS     thread counts for the threaded workloads (default 1,2,8)
  BENCH_OVERSUB     an extra thread count for larson and larson-sized: more threads than CPUs
                    (default 4 x CPUs, at most 128; 0: none)
  BENCH_PRODUCERS   producers of prodcons-many (default 3; one consumer)
  BENCH_STRACE      1: the strace pass (default); 0: skip it
  BENCH_CG_ITERS    callgrind pairs for the fast path (default 1000000; the ring runs a fifth of
                    that many steps; 0 skips callgrind)
  BENCH_SCENARIOS   comma-separated subset of the memory scenarios (bitslab-mem --list); "none": skip
  BENCH_MEM_REPS    runs of each memory scenario per allocator (default 3; the report gives medians)
  BENCH_MEM_SCALE   size multiplier for the scenarios (default: BENCH_SCALE)
  BENCH_SLEEP       seconds of each idle wait in the scenarios (default 2)
  BENCH_BUSY_LIMIT  a hyperfine invocation during which other processes used more than this share
                    of the machine's CPUs (default 0.25) is run again, up to BENCH_RETRIES times
                    (default 1) while the retries have taken under BENCH_RETRY_BUDGET seconds
                    (default 120); the least disturbed attempt is kept
  BENCH_TIMEOUT     seconds before one run counts as hung (default 60 x scale, at least 60)
  BENCH_BITSLAB_SO  a libbitslab.so to measure instead of building one
  BUILD_DIR         meson build directory for bitslab (default build/release)
  CC                compiler for the benchmark programs (default cc)

Nothing here judges a time: a run fails only if a program crashes, hangs past
its timeout or prints no RESULT line.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import resource
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
STRACE_CALLS = ["madvise", "mmap", "munmap", "mremap", "brk"]
NCPU = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

# scenario -> (headline key, what the headline is, format)
SCENARIOS = {
    "idle-owner": ("after_tick_pct", "% of the growth resident after the owner slept and made 1,000 pairs", "{:.1f} %"),
    "sparse": ("after_sleep_pct", "% of the growth resident with 5 % survivors, after the sleep", "{:.1f} %"),
    "rlimit-as": ("obtained_mib", "MiB obtained in 2..16 MiB blocks under RLIMIT_AS = VmSize + headroom",
                  "{:.0f} MiB"),
    "fork-child": ("child_parent_ratio", "child RSS / parent RSS after the child freed and reallocated",
                   "{:.2f}"),
    "lazyfree": ("after_sleep_pct", "% of the growth resident, allocating thread idle, all freed remotely",
                 "{:.1f} %"),
}
# per-scenario detail rows: (key, label, format)
SCENARIO_ROWS = {
    "idle-owner": [("growth_kb", "growth MiB", "mib"), ("after_free_pct", "after the frees", "pct"),
                   ("after_sleep_pct", "after the sleep", "pct"), ("after_tick_pct", "after 1,000 pairs", "pct"),
                   ("after_exit_pct", "after both threads exit", "pct")],
    "sparse": [("growth_kb", "growth MiB", "mib"), ("ideal_pct", "survivors' bytes (the floor)", "pct"),
               ("after_free_pct", "after the frees", "pct"), ("after_sleep_pct", "after the sleep", "pct"),
               ("after_tick_pct", "after 1,000 pairs", "pct")],
    "rlimit-as": [("growth_kb", "peak growth MiB", "mib"), ("after_free_pct", "resident after the frees", "pct"),
                  ("vm_after_free_kb", "VmSize after the frees, MiB", "mib"),
                  ("headroom_mib", "headroom MiB", "num"), ("obtained_mib", "obtained MiB", "num"),
                  ("big_blocks", "blocks obtained", "num")],
    "fork-child": [("parent_kb", "parent RSS MiB", "mib"), ("child_start_kb", "child RSS at start, MiB", "mib"),
                   ("child_end_kb", "child RSS at the end, MiB", "mib"),
                   ("child_parent_ratio", "child end / parent", "ratio"),
                   ("child_new_pct", "reallocation that needed new memory", "pct")],
    "lazyfree": [("growth_kb", "growth MiB", "mib"), ("after_free_pct", "after the remote frees", "pct"),
                 ("after_sleep_pct", "after the sleep", "pct"), ("after_tick_pct", "after 1,000 pairs", "pct"),
                 ("after_exit_pct", "after the freeing thread exits", "pct")],
}

WORKLOAD_TEXT = {
    "mixed": "1 thread, 8192 live blocks of small sizes; each op frees a random one and mallocs a new one",
    "realloc": "the same slots; an op reallocs a block to a new random size (1 in 8 frees it)",
    "prodcons": "N producer/consumer *pairs* (2N threads): every free is a cross-thread free",
    "parallel": "N threads doing `mixed` at once, each on its own blocks",
    "falseshare": "Hoard's cache-scratch: each thread frees a neighbouring 8-byte block the main thread "
                  "allocated, then mallocs, writes 64 times and frees 8-byte blocks",
    "churn": "2000 short-lived threads, N at a time, each allocating 256 blocks and handing 64 to later threads",
    "sizes-small": "every small bin, log-uniform 16 B..32 KiB, 2048 live blocks",
    "sizes-wide": "32 KiB..1 MiB, 64 live blocks",
    "sizes-huge": "1..8 MiB, 16 live blocks, first and last bytes touched",
    "memory": "N threads build ~200 MB of blocks and free them (the time of that; the RSS table below)",
    "ring": "1 thread, 4096 live blocks of 16..256 B; a step frees a random slot and mallocs into it, "
            "touching one byte (10 M steps)",
    "larson": "larson server: each of N threads replaces random blocks (16 B..1 KiB) of a 2048-block "
              "array; 16 times per run every array moves on to the next thread, so most frees hit blocks "
              "another thread allocated",
    "larson-sized": "`larson` freeing with C23 `free_sized` where the allocator exports it (looked up with "
                    "dlsym at run time; `free` otherwise: see which ran below)",
    "prodcons-many": "P producers malloc and hand every block to one consumer that frees it (a bounded "
                     "ring per producer, 3 M blocks)",
    "huge-loop": "a 5..25 MiB block is malloc'ed, one byte written in each of its pages, and freed, 100 "
                 "times: the page faults of an allocator that returns freed huge blocks to the OS",
    "realloc-grow": "one buffer grown by realloc from 16 B to 64 MiB by x1.25 steps (one byte written in "
                    "each new page), 6 times",
    "realloc-grow-4k": "the same buffer grown by +4 KiB steps from 16 B to 64 MiB (16,384 reallocs), once",
}


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

def find_bitslab_so(bdir):
    """The shared library in a build directory, whatever its soname: libbitslab.so
    or libbitslab.so.0 (-> libbitslab.so.0.1.0). Prefers the shortest name that exists."""
    cands = [p for p in glob.glob(os.path.join(bdir, "libbitslab.so*")) if os.path.isfile(p)]
    cands.sort(key=lambda p: (len(os.path.basename(p)), p))
    return cands[0] if cands else None


def build(args):
    """Returns (path of libbitslab.so, {program name: path})."""
    so = os.environ.get("BENCH_BITSLAB_SO")
    if not so:
        bdir = os.path.join(ROOT, args.build_dir)
        if not os.path.exists(os.path.join(bdir, "build.ninja")):
            log(f"== meson setup {args.build_dir} (release)")
            sh(["meson", "setup", bdir, "-Dbuildtype=release"], cwd=ROOT, stdout=subprocess.DEVNULL)
        # The shared library's ninja target, by introspection (its file name depends on the soname).
        target = None
        try:
            tg = json.loads(out(["meson", "introspect", "--targets", bdir]) or "[]")
            for t in tg:
                if t.get("name") == "bitslab" and t.get("type") == "shared library" and t.get("filename"):
                    target = os.path.relpath(t["filename"][0], bdir)
        except ValueError:
            pass
        log(f"== ninja -C {args.build_dir} {target or '(all)'}")
        sh(["ninja", "-C", bdir] + ([target] if target else []), stdout=subprocess.DEVNULL)
        so = find_bitslab_so(bdir)
        if not so:
            sys.exit(f"no libbitslab.so* in {bdir} after the build")
        try:
            with open(os.path.join(bdir, "meson-info", "intro-buildoptions.json")) as f:
                opts = {o["name"]: o["value"] for o in json.load(f)}
            args.bitslab_build = ", ".join(f"{k}={opts[k]}" for k in ("buildtype", "debug_checks", "b_sanitize")
                                           if k in opts)
            if opts.get("buildtype") != "release" or opts.get("debug_checks"):
                log(f"warning: {args.build_dir} is not a plain release build ({args.bitslab_build})")
        except (OSError, ValueError, KeyError):
            pass
    elif os.path.isdir(so):
        so = find_bitslab_so(so) or so
    so = os.path.abspath(so)
    if not os.path.isfile(so):
        sys.exit(f"no libbitslab.so at {so}")

    bindir = os.path.join(ROOT, args.build_dir, "bench-bin")
    os.makedirs(bindir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-g", "-std=c11", "-Wall", "-Wextra", "-pthread"]
    progs = {"bench": os.path.join(bindir, "bitslab-bench"), "fast": os.path.join(bindir, "bitslab-fastpath"),
             "mem": os.path.join(bindir, "bitslab-mem")}
    log(f"== {cc} bench/bench_alloc.c bench/fastpath.c bench/mem_scenarios.c -> {os.path.relpath(bindir, ROOT)}/")
    sh([cc, *flags, os.path.join(BENCH, "bench_alloc.c"), "-o", progs["bench"], "-ldl"])
    cg = ["-DHAVE_CALLGRIND_H"] if os.path.exists("/usr/include/valgrind/callgrind.h") else []
    sh([cc, *flags, *cg, os.path.join(BENCH, "fastpath.c"), "-o", progs["fast"], "-ldl"])
    sh([cc, *flags, os.path.join(BENCH, "mem_scenarios.c"), "-o", progs["mem"], "-ldl"])
    return so, progs


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

def parse_result(text):
    """The first RESULT line of `text` as a dict (numbers converted)."""
    rs = parse_results(text)
    return rs[0] if rs else None


def parse_results(text):
    res = []
    for line in (text or "").splitlines():
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
            res.append(d)
    return res


def env_argv(lib, argv, extra=None):
    """`env` in front of a program: sets (or removes) LD_PRELOAD for it alone,
    not for hyperfine, strace or valgrind in front of it."""
    e = ["env"] + (["-u", "LD_PRELOAD"] if not lib else [])
    e += [f"{k}={v}" for k, v in (extra or {}).items()]
    if lib:
        e.append(f"LD_PRELOAD={lib}")
    return e + argv


def command_line(lib, argv):
    pre = f"LD_PRELOAD={shlex.quote(lib)} " if lib else ""
    return pre + " ".join(shlex.quote(a) for a in argv)


def clean_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("BENCH_RESULT_FILE", None)
    return env


def backtrace(lib, argv, outdir, tag, hang, timeout):
    """Reproduces a failure under gdb and saves every thread's backtrace: a crash
    is run under gdb; a hang is started again and gdb attaches after `timeout`."""
    if not shutil.which("gdb"):
        return None
    env = clean_env()
    if lib:
        env["LD_PRELOAD"] = lib
    bt = ["-batch", "-ex", "set pagination off", "-ex", "set confirm off"]
    if hang:
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=timeout)
            text = f"the rerun did not hang (exit status {p.returncode})\n"
        except subprocess.TimeoutExpired:
            r = subprocess.run(["gdb", *bt, "-p", str(p.pid), "-ex", "thread apply all bt 30"],
                               capture_output=True, text=True, timeout=300, env=clean_env())
            text = f"attached after {timeout:.0f} s\n" + r.stdout + r.stderr
            p.kill()
            p.wait()
    else:
        cmds = bt + (["-ex", f"set environment LD_PRELOAD={lib}"] if lib else [])
        cmds += ["-ex", "run", "-ex", "info registers rip", "-ex", "thread apply all bt 30"]
        try:
            r = subprocess.run(["gdb", *cmds, "--args", *argv], capture_output=True, text=True,
                               timeout=timeout + 60, env=clean_env())
            text = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            text = f"gdb timed out\n{e.stdout or ''}"
    path = os.path.join(outdir, f"failure-{tag}.gdb.txt")
    with open(path, "w") as f:
        f.write(f"command: {command_line(lib, argv)}\n\n{text}")
    return path


def machine_busy_s():
    """CPU seconds the whole machine has been busy (steal included)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measured(argv, env, timeout, **kw):
    """Runs a command; returns (CompletedProcess or TimeoutExpired, share of the
    machine's CPUs that other processes used meanwhile, wall seconds)."""
    b0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        r = e
    wall = time.monotonic() - t0
    other = (machine_busy_s() - b0) - (children_cpu_s() - c0)
    return r, (max(0.0, other / (wall * NCPU)) if wall > 0 else 0.0), wall


def symptom_of(returncode, stderr):
    if returncode is None:
        return "hung (killed)"
    if returncode < 0:
        sig = -returncode
    elif returncode > 128:
        sig = returncode - 128  # hyperfine reports a signal as 128 + its number
    else:
        return f"exit status {returncode}" if returncode else "no RESULT line"
    if sig == 14:
        return "hung (SIGALRM: still running after --alarm)"
    return f"killed by signal {sig}"


def record_failure(args, failures, alloc, what, threads, lib, argv, returncode, stderr, phase):
    """Adds a failure; the first of each (allocator, what, threads) is reproduced
    outside the harness under gdb for a backtrace."""
    symptom = symptom_of(returncode, stderr)
    cmd = command_line(lib, argv)
    tag = f"{alloc}-{what}-t{threads}"
    log(f"   FAILED {tag} ({phase}): {symptom}\n   command: {cmd}\n   stderr: {(stderr or '').strip()[-500:]}")
    fail = {"allocator": alloc, "workload": what, "threads": threads, "phase": phase, "command": cmd,
            "symptom": symptom, "stderr": (stderr or "").strip()[-2000:]}
    if (symptom.startswith(("killed", "hung")) or "FAILED" in (stderr or "")) and not any(
            f["allocator"] == alloc and f["workload"] == what and f["threads"] == threads for f in failures):
        fail["gdb"] = backtrace(lib, argv, args.out, tag, symptom.startswith("hung"), args.run_timeout)
        if fail["gdb"]:
            log(f"   backtrace: {fail['gdb']}")
    failures.append(fail)


def strip_alarm(argv):
    a = list(argv)
    if "--alarm" in a:
        i = a.index("--alarm")
        del a[i:i + 2]
    return a


def configs(args, workload_list):
    cfg = []
    for name, kind in workload_list:
        if args.workloads and name not in args.workloads:
            continue
        if kind == "threaded":
            ts = list(args.threads)
            if name.startswith("larson") and args.oversub and args.oversub not in ts:
                ts.append(args.oversub)
        elif kind == "producers":
            ts = [args.producers]
        else:
            ts = [1]
        for t in ts:
            cfg.append((name, t, kind))
    return cfg


def workload_argv(args, progs, alloc, w, t, delay, alarm=True):
    a = [progs["bench"], w, "-t", str(t), "-s", f"{args.scale:g}", "--seed", str(args.seed),
         "--delay", f"{delay:g}", "--expect-lib", EXPECT_LIB[alloc]]
    return a + (["--alarm", f"{args.run_timeout:g}"] if alarm else [])


def tlabel(w, t, kind):
    if kind == "producers":
        return f"{t}+1"
    return f"{t}*" if t > NCPU else str(t)


# ---- timing: hyperfine -------------------------------------------------------------------------------

RETRY_SPENT = [0.0]


def time_config(args, progs, alloc_list, libs, w, t, order, failures):
    """One hyperfine invocation: every allocator on workload w with t threads.
    Returns {allocator: {hyperfine figures, "results": [RESULT dicts]}}, busy share."""
    hdir = os.path.join(args.out, "hyperfine")
    os.makedirs(hdir, exist_ok=True)
    stem = os.path.join(hdir, f"{w}-t{t}")
    best = None
    for attempt_no in range(1 + args.retries):
        cmd = ["hyperfine", "-N", "-i", "--style", "basic", "--runs", str(args.reps), "--warmup",
               str(args.warmup), "--export-json", stem + ".json"]
        resfiles = {}
        for a in order:
            resfiles[a] = f"{stem}.{a}.results"
            if os.path.exists(resfiles[a]):
                os.remove(resfiles[a])
            argv = env_argv(libs[a], workload_argv(args, progs, a, w, t, 0), {"BENCH_RESULT_FILE": resfiles[a]})
            cmd += ["-n", a, shlex.join(argv)]
        limit = (args.reps + args.warmup) * len(order) * args.run_timeout + 60
        r, busy, wall = measured(cmd, clean_env(), limit)
        if attempt_no > 0:
            RETRY_SPENT[0] += wall
        with open(stem + ".log", "w") as f:
            if isinstance(r, subprocess.TimeoutExpired):
                f.write(f"hyperfine timed out after {limit:.0f} s\n")
            else:
                f.write(" ".join(shlex.quote(c) for c in cmd) + "\n\n" + r.stdout + r.stderr)
        if isinstance(r, subprocess.TimeoutExpired) or r.returncode != 0 or not os.path.exists(stem + ".json"):
            why = "timed out" if isinstance(r, subprocess.TimeoutExpired) else (r.stderr or "").strip()[-300:]
            log(f"   hyperfine failed on {w} t={t}: {why}")
            for a in order:
                record_failure(args, failures, a, w, t, libs[a], strip_alarm(workload_argv(args, progs, a, w, t, 0)),
                               None if isinstance(r, subprocess.TimeoutExpired) else 1,
                               "hyperfine failed: " + why, "time")
            return {}, busy
        with open(stem + ".json") as f:
            hf = {x["command"]: x for x in json.load(f)["results"]}
        res = {}
        for a in order:
            x = hf.get(a)
            if not x:
                continue
            lines = []
            if os.path.exists(resfiles[a]):
                with open(resfiles[a]) as f:
                    lines = parse_results(f.read())
            lines = lines[-args.reps:]  # the warm-up runs come first
            res[a] = {"times": x["times"], "median": x["median"], "mean": x["mean"], "stddev": x.get("stddev"),
                      "min": x["min"], "max": x["max"], "user": x["user"], "system": x["system"],
                      "exit_codes": x.get("exit_codes"), "results": lines}
        cur = {"res": res, "busy": busy, "attempts": attempt_no + 1}
        if best is None or busy < best["busy"]:
            best = cur
        if busy <= args.busy_limit or RETRY_SPENT[0] >= args.retry_budget or attempt_no == args.retries:
            break
        log(f"   others used {100 * busy:.0f} % of the CPUs: {w} t={t} again")
    res = best["res"]
    for a in order:
        x = res.get(a)
        codes = (x or {}).get("exit_codes") or []
        bad = [c for c in codes if c != 0]
        if x is None or bad or len(x["results"]) < args.reps:
            argv = strip_alarm(workload_argv(args, progs, a, w, t, 0))
            # Reproduce outside hyperfine (which hides the output) for the symptom and stderr.
            env = clean_env()
            if libs[a]:
                env["LD_PRELOAD"] = libs[a]
            rr, _b, _w = measured(argv, env, args.run_timeout)
            rc = None if isinstance(rr, subprocess.TimeoutExpired) else rr.returncode
            stderr = "" if isinstance(rr, subprocess.TimeoutExpired) else rr.stderr
            if rc == 0 and parse_result(rr.stdout):
                rc = bad[0] if bad else 0  # the rerun passed: report what hyperfine saw
                stderr = f"failed under hyperfine (exit codes {codes}), passed when rerun alone"
            record_failure(args, failures, a, w, t, libs[a], argv, rc, stderr, "time")
            if x is not None:
                x["failed"] = True
    for x in res.values():
        x["busy_other"] = round(best["busy"], 3)
        x["attempts"] = best["attempts"]
    return res, best["busy"]


# ---- strace: system calls ---------------------------------------------------------------------------

def strace_base():
    if not shutil.which("strace"):
        return None
    for extra in (["--seccomp-bpf"], []):
        argv = ["strace", "-f", *extra, "-c", "-o", os.devnull, "-e", "trace=" + ",".join(STRACE_CALLS), "true"]
        if subprocess.run(argv, capture_output=True).returncode == 0:
            return ["strace", "-f", *extra, "-c", "-e", "trace=" + ",".join(STRACE_CALLS)]
    return None


def parse_strace(text):
    calls = {c: 0 for c in STRACE_CALLS}
    for line in text.splitlines():
        f = line.split()
        # % time  seconds  usecs/call  calls  [errors]  syscall
        if len(f) >= 5 and f[-1] in calls and f[0][0].isdigit():
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    return calls


def profile_config(args, progs, alloc, lib, w, t, base, failures):
    """One untimed run, under strace -c when available; returns its RESULT dict
    (with the system-call counts) or None."""
    argv = workload_argv(args, progs, alloc, w, t, args.delay)
    sfile = os.path.join(args.out, "strace", f"{w}-t{t}.{alloc}.txt")
    os.makedirs(os.path.dirname(sfile), exist_ok=True)
    full = (base + ["-o", sfile] if base else []) + env_argv(lib, argv)
    r, _busy, _wall = measured(full, clean_env(), args.run_timeout + args.delay + 30)
    res = None if isinstance(r, subprocess.TimeoutExpired) else parse_result(r.stdout)
    if res is None or r.returncode != 0:
        rc = None if isinstance(r, subprocess.TimeoutExpired) else r.returncode
        record_failure(args, failures, alloc, w, t, lib, strip_alarm(argv), rc,
                       "" if rc is None else r.stderr, "strace" if base else "profile")
        return None
    if base and os.path.exists(sfile):
        with open(sfile) as f:
            res["syscalls"] = parse_strace(f.read())
    return res


# ---- callgrind --------------------------------------------------------------------------------------

def annotate(cgout):
    """(total Ir, [(function, Ir)]) of a callgrind output file."""
    total = None
    with open(cgout) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    fns = []
    for line in out(["callgrind_annotate", "--threshold=100", "--auto=no", cgout]).splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)", line)
        if m and "PROGRAM TOTALS" not in line:
            fns.append((m.group(2).split(":")[-1], int(m.group(1).replace(",", ""))))
    return total, fns


def callgrind(args, progs, alloc, lib):
    """Instructions per malloc+free: the fast-path loops (pair, batch) and the ring.
    The loop function's own instructions (the program's part, the same for every
    allocator) are subtracted: what is left is the allocator's, PLT stubs included."""
    res = {}
    runs = [("pair", "loop_pair", [progs["fast"], "pair", str(args.cg_iters), EXPECT_LIB[alloc]], []),
            ("batch", "loop_batch", [progs["fast"], "batch", str(args.cg_iters), EXPECT_LIB[alloc]], []),
            ("ring", "ring_steps", [progs["bench"], "ring", "-s", f"{args.cg_iters / 5 / 1e7:g}", "--seed",
                                    str(args.seed), "--expect-lib", EXPECT_LIB[alloc]],
             ["--toggle-collect=ring_steps*"])]
    for mode, loopfn, argv, extra in runs:
        cgout = os.path.join(args.out, f"callgrind.{alloc}.{mode}.out")
        vg = ["valgrind", "--tool=callgrind", "--collect-atstart=no", *extra, f"--callgrind-out-file={cgout}"]
        env = clean_env()
        if lib:
            env["LD_PRELOAD"] = lib  # not `env LD_PRELOAD=...`: valgrind would not follow that exec
        try:
            r = subprocess.run(vg + argv, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            log(f"   callgrind {alloc} {mode} timed out")
            continue
        d = parse_result(r.stdout)
        if r.returncode != 0 or not d or not os.path.exists(cgout):
            log(f"   callgrind {alloc} {mode} failed: {r.stderr.strip()[-400:]}")
            continue
        total, fns = annotate(cgout)
        if not total:
            log(f"   callgrind {alloc} {mode}: no instructions collected ({cgout})")
            continue
        n = d.get("iterations") or d.get("ops")
        # the loop function may show up on several lines (code inlined from bench_util.h)
        loop = sum(v for fn, v in fns if fn == loopfn or fn.startswith(loopfn + "."))
        merged = {}
        for fn, v in fns:
            if fn == loopfn or fn.startswith((loopfn + ".", "0x")):
                continue
            merged[fn] = merged.get(fn, 0) + v
        top = sorted(((fn, round(v / n, 1)) for fn, v in merged.items()), key=lambda x: -x[1])[:6]
        res[mode] = {"ops": n, "total_ir": total, "loop_ir": loop,
                     "ir_per_pair": total / n if total else None,
                     "alloc_ir_per_pair": (total - loop) / n if total else None,
                     "functions": top, "malloc_lib": d.get("malloc_lib")}
    return res


# ---- memory scenarios -----------------------------------------------------------------------------

# The memory scenarios also run bitslab with its purger thread on (docs/purger.md), as a column of its own.
PURGER_VARIANT = "bitslab+purger"


def run_scenario(args, progs, alloc, lib, s, failures):
    base = "bitslab" if alloc == PURGER_VARIANT else alloc
    argv = [progs["mem"], s, "-s", f"{args.mem_scale:g}", "--sleep", f"{args.sleep:g}", "--seed", str(args.seed),
            "--expect-lib", EXPECT_LIB[base], "--alarm", f"{args.run_timeout + 3 * args.sleep:g}"]
    env = clean_env()
    if lib:
        env["LD_PRELOAD"] = lib
    if alloc == PURGER_VARIANT:
        env["BITSLAB_BACKGROUND_PURGE"] = "1"
    r, busy, _wall = measured(argv, env, args.run_timeout + 3 * args.sleep + 30)
    res = None if isinstance(r, subprocess.TimeoutExpired) else parse_result(r.stdout)
    if res is None or r.returncode != 0:
        rc = None if isinstance(r, subprocess.TimeoutExpired) else r.returncode
        record_failure(args, failures, alloc, s, 1, lib, strip_alarm(argv), rc,
                       "" if rc is None else r.stderr, "scenario")
        return None
    res["busy_other"] = round(busy, 3)
    return res


# ---- report -------------------------------------------------------------------------------------------

def scenario_allocators(alloc_list):
    """The memory scenarios' columns: the allocators, and bitslab with its purger thread next to bitslab."""
    return alloc_list + [PURGER_VARIANT] if "bitslab" in alloc_list else list(alloc_list)


def median(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fmt_ms(s):
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def fmt_count(n):
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e4:
        return f"{n / 1e3:.0f} k"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return f"{n:.0f}"


def fmt_mib(kb):
    if kb is None:
        return "-"
    m = kb / 1024
    return f"{m:.0f}" if m >= 100 else f"{m:.1f}"


def machine_info(args):
    lines = []
    lscpu = out(["lscpu"])
    model = re.search(r"Model name:\s*(.*)", lscpu)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.M)
    hyp = re.search(r"Hypervisor vendor:\s*(.*)", lscpu)
    l2 = re.search(r"L2 cache:\s*(.*)", lscpu)
    l3 = re.search(r"L3 cache:\s*(.*)", lscpu)
    mem = out(["sh", "-c", "awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo"])
    cpu = f"{model.group(1).strip() if model else platform.processor()}, {cpus.group(1) if cpus else NCPU} CPUs"
    if hyp:
        cpu += f" (virtual machine, {hyp.group(1).strip()})"
    if l2 or l3:
        cpu += f"; L2 {l2.group(1).strip() if l2 else '?'}, L3 {l3.group(1).strip() if l3 else '?'}"
    lines.append(f"- CPU: {cpu}; memory {mem}")
    deb = out(["cat", "/etc/debian_version"])
    ccv = out([os.environ.get("CC", "cc"), "--version"])
    lines.append(f"- Kernel: Linux {platform.release()}; Debian {deb}; {ccv.splitlines()[0] if ccv else 'cc ?'}; "
                 f"{out(['hyperfine', '--version']) or 'hyperfine ?'}")
    vers = []
    for pkg in ["libc6"] + [p[1] for p in PEERS.values()]:
        v = out(["dpkg-query", "-W", "-f=${Version}", pkg])
        vers.append(f"{pkg} {v or '?'}")
    lines.append("- Allocators (Debian packages): " + ", ".join(vers))
    head = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include", "meson.build"])
    lines.append(f"- bitslab: commit {head or '?'}{' + uncommitted changes in src/' if dirty else ''}; "
                 f"{getattr(args, 'bitslab_build', None) or 'libbitslab.so from ' + str(os.environ.get('BENCH_BITSLAB_SO'))}; "
                 f"preloaded as {os.path.basename(args.bitslab_so)}")
    return lines


def report(args, alloc_list, cfgs, timing, profile, cg, scen, failures, wall, start):
    peers = [a for a in PEER_ORDER if a in alloc_list]
    have_b = "bitslab" in alloc_list
    ratio = {}  # (w, t, peer) -> (wall ratio, cpu ratio)

    def tm(w, t, a):
        return timing.get((w, t), {}).get(a)

    def cpu(x):
        return (x["user"] + x["system"]) if x else None

    for (w, t, _k) in cfgs:
        b = tm(w, t, "bitslab")
        for p in peers:
            x = tm(w, t, p)
            if b and x and b["median"] and not b.get("failed") and not x.get("failed"):
                ratio[(w, t, p)] = (x["median"] / b["median"], cpu(x) / cpu(b) if cpu(b) else None)

    L = []
    L.append("# bitslab benchmarks")
    L.append("")
    L.append(f"Generated by `scripts/bench.sh` on {start:%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} min: "
             f"hyperfine, {args.reps} runs (+{args.warmup} warm-up) per workload and allocator, seed {args.seed}, "
             f"scale {args.scale:g}; memory scenarios: scale {args.mem_scale:g}, sleeps {args.sleep:g} s, "
             f"{args.mem_reps} run(s) each. Time per phase: " +
             ", ".join(f"{k} {v / 60:.1f} min" for k, v in getattr(args, "phases", {}).items()) + ".")
    L.append("")
    L.extend(machine_info(args))
    busy = [v for (_w, _t), v in BUSY.items()]
    if busy:
        disturbed = sum(1 for b in busy if b > args.busy_limit)
        L.append(f"- Other load on the machine during the hyperfine invocations: median {100 * statistics.median(busy):.0f} %, "
                 f"maximum {100 * max(busy):.0f} % of its CPUs; {disturbed} of {len(busy)} invocations kept a result "
                 f"disturbed by more than {100 * args.busy_limit:.0f} %" +
                 (" (**the machine was busy: times are noisy**)"
                  if statistics.median(busy) > 0.1 or disturbed > len(busy) / 10 else "") + ".")
    L.append("")

    if timing:
        L.append("## Time")
        L.append("")
        L.append("hyperfine (`-N`, no shell) runs each workload as a whole process, one command per allocator in the "
                 "same invocation; the time is the median wall time of the process in milliseconds (fixed work, "
                 "split between the threads). In parentheses the ratio peer median / bitslab median: "
                 "**> 1 means bitslab is faster**. glibc runs without preload, the others with `LD_PRELOAD`. "
                 f"Threads marked * are more than the machine's {NCPU} CPUs; `3+1`: 3 producers, 1 consumer.")
        L.append("")
        head = ("| workload | threads |" + (" bitslab ms |" if have_b else "") +
                "".join(f" {p} ms (ratio) |" for p in peers))
        L.append(head)
        L.append("|" + "---|" * (head.count("|") - 1))
        gm = {p: [] for p in peers}
        for (w, t, k) in cfgs:
            def ms(x):
                return "failed" if x and x.get("failed") else fmt_ms(x["median"] if x else None)
            row = f"| {w} | {tlabel(w, t, k)} |" + (f" {ms(tm(w, t, 'bitslab'))} |" if have_b else "")
            for p in peers:
                r = ratio.get((w, t, p), (None, None))[0]
                if r:
                    gm[p].append(r)
                row += f" {ms(tm(w, t, p))}" + (f" ({fmt_ratio(r)}) |" if have_b else " |")
            L.append(row)
        if have_b and any(gm.values()):
            L.append("| **geometric mean** | | |" + "".join(
                f" ({statistics.geometric_mean(gm[p]):.2f}) |" if gm[p] else " - |" for p in peers))
        L.append("")
        spread = [x["stddev"] / x["mean"] for v in timing.values() for x in v.values()
                  if x.get("stddev") and x.get("mean")]
        if spread:
            L.append(f"Noise: hyperfine's standard deviation / mean of a cell has median {100 * statistics.median(spread):.0f} % "
                     f"over all cells (maximum {100 * max(spread):.0f} %). Raw runs: "
                     f"`{os.path.relpath(os.path.join(args.out, 'hyperfine'), ROOT)}/*.json`.")
            L.append("")
        if have_b and peers:
            L.append("CPU time (user + system of all the process's threads, hyperfine's means), ratio peer / bitslab: "
                     "less sensitive than wall time to other processes on the machine, but blind to time spent "
                     "waiting (futex sleeps, yields).")
            L.append("")
            L.append("| workload | threads |" + "".join(f" {p} |" for p in peers))
            L.append("|---|---|" + "---|" * len(peers))
            gmc = {p: [] for p in peers}
            for (w, t, k) in cfgs:
                row = f"| {w} | {tlabel(w, t, k)} |"
                for p in peers:
                    r = ratio.get((w, t, p), (None, None))[1]
                    if r:
                        gmc[p].append(r)
                    row += f" {fmt_ratio(r)} |"
                L.append(row)
            L.append("| **geometric mean** | |" + "".join(
                f" {statistics.geometric_mean(gmc[p]):.2f} |" if gmc[p] else " - |" for p in peers))
            L.append("")

        # which free larson-sized used
        fs = {}
        for (w, t, _k) in cfgs:
            if w == "larson-sized":
                for a in alloc_list:
                    x = tm(w, t, a)
                    for r in (x or {}).get("results", []):
                        fs.setdefault(a, set()).add(r.get("free_fn"))
        if fs:
            L.append("`larson-sized` freed with: " + ", ".join(
                f"{a} `{'/'.join(sorted(str(v) for v in fs[a]))}`" for a in alloc_list if a in fs) + ".")
            L.append("")

        L.append("## Peak RSS and page faults")
        L.append("")
        L.append("From `getrusage(RUSAGE_SELF)` at the end of each timed run (the whole process, start-up and every "
                 "thread included), medians over the runs: peak RSS (`ru_maxrss`) in MiB / minor page faults "
                 "(`ru_minflt`).")
        L.append("")
        L.append("| workload | threads |" + "".join(f" {a} |" for a in alloc_list))
        L.append("|---|---|" + "---|" * len(alloc_list))
        for (w, t, k) in cfgs:
            row = f"| {w} | {tlabel(w, t, k)} |"
            for a in alloc_list:
                rs = (tm(w, t, a) or {}).get("results", [])
                mx, mf = median([r.get("maxrss_kb") for r in rs]), median([r.get("minflt") for r in rs])
                row += f" {fmt_mib(mx)} / {fmt_count(mf)} |" if rs else " - |"
            L.append(row)
        L.append("")

    if profile:
        have_sc = any("syscalls" in r for r in profile.values())
        if have_sc:
            L.append("## System calls")
            L.append("")
            L.append("One more run per workload and allocator, untimed, under `strace -f -c -e trace="
                     f"{','.join(STRACE_CALLS)}` (the dynamic loader's own few dozen mmaps included): "
                     "madvise / mmap / munmap calls; `+N r` adds N mremap calls where there were any.")
            L.append("")
            L.append("| workload | threads |" + "".join(f" {a} |" for a in alloc_list))
            L.append("|---|---|" + "---|" * len(alloc_list))
            for (w, t, k) in cfgs:
                row = f"| {w} | {tlabel(w, t, k)} |"
                for a in alloc_list:
                    sc = (profile.get((w, t, a)) or {}).get("syscalls")
                    if not sc:
                        row += " - |"
                        continue
                    row += (f" {fmt_count(sc['madvise'])} / {fmt_count(sc['mmap'])} / {fmt_count(sc['munmap'])}" +
                            (f" +{fmt_count(sc['mremap'])} r" if sc.get("mremap") else "") + " |")
                L.append(row)
            L.append("")

    if timing:
        L.append("## Workloads")
        L.append("")
        L.append("bench/bench_alloc.c; small sizes are 16..1024 B, half of them <= 128 B; every block carries an id "
                 "checked before it is freed.")
        L.append("")
        for w in dict.fromkeys(w for (w, _t, _k) in cfgs):
            L.append(f"- `{w}`: {WORKLOAD_TEXT.get(w, '')}")
        L.append("")

    fsl = [t for (w, t, _k) in cfgs if w == "falseshare"]
    if fsl:
        L.append("### False sharing: the allocator's part")
        L.append("")
        L.append("`falseshare`: number of threads whose first own 8-byte block lies on a cache line that another "
                 "thread's block also uses (glibc's tcache hands each thread back the block it freed, which the "
                 "main thread had allocated next to the others). Independent of the machine.")
        L.append("")
        L.append("| allocator |" + "".join(f" {t} threads |" for t in fsl))
        L.append("|---|" + "---|" * len(fsl))
        for a in alloc_list:
            row = f"| {a} |"
            for t in fsl:
                xs = [r.get("threads_sharing_a_line") for r in (tm("falseshare", t, a) or {}).get("results", [])]
                m = median(xs)
                row += f" {m:g} of {t} |" if m is not None else " - |"
            L.append(row)
        L.append("")

    mem = [t for (w, t, _k) in cfgs if w == "memory"]
    if mem:
        src = "profile" if any(profile.get(("memory", t, a)) for t in mem for a in alloc_list) else "timing"
        L.append("## Memory workload")
        L.append("")
        L.append(f"`memory`: N threads build ~200 MB of blocks (mostly 16..1024 B, every 4000th 32 KiB..4 MiB), "
                 f"then each frees all of its blocks, scattered. Growth = peak RSS - RSS at start. "
                 f"Columns: peak RSS in MiB; RSS left, as % of the growth, right after the frees, "
                 f"after {args.delay:g} s idle (threads alive, no allocator calls), and after the threads have "
                 "exited. " + ("From the untimed strace run (the timed runs do not wait)." if src == "profile"
                               else "From the timed runs, which do not wait: the delay column is 0 s."))
        L.append("")
        L.append("| threads | allocator | peak MiB | at once | after " + f"{args.delay:g} s | after thread exit |")
        L.append("|---|---|---|---|---|---|")
        for t in mem:
            for a in alloc_list:
                rs = ([profile[("memory", t, a)]] if profile.get(("memory", t, a)) else []) if src == "profile" \
                    else (tm("memory", t, a) or {}).get("results", [])
                if not rs:
                    continue

                def m(k):
                    v = median([r.get(k) for r in rs])
                    return "-" if v is None else f"{v:.1f} %"
                peak = median([r.get("peak_rss_kb") for r in rs])
                L.append(f"| {t} | {a} | {fmt_mib(peak)} | {m('rss_end_pct')} | {m('rss_after_pct')} "
                         f"| {m('rss_exit_pct')} |")
        L.append("")

    if scen:
        cols = scenario_allocators(alloc_list)
        L.append("## Memory scenarios")
        L.append("")
        L.append(f"bench/mem_scenarios.c (`bitslab-mem`), one process per scenario and allocator, scale "
                 f"{args.mem_scale:g}, idle waits {args.sleep:g} s; RSS is VmRSS from /proc/self/status; "
                 "growth = peak - base; a % is (RSS - base) / growth: 0 % = all given back, 100 % = none. "
                 + ("Medians of the runs. " if args.mem_reps > 1 else "") + "Headlines:")
        L.append("")
        L.append("| scenario | headline |" + "".join(f" {a} |" for a in cols))
        L.append("|---|---|" + "---|" * len(cols))
        for s in args.scenarios:
            key, what, fmt = SCENARIOS[s]
            row = f"| `{s}` | {what} |"
            for a in cols:
                v = median([r.get(key) for r in scen.get((s, a), [])])
                row += f" {fmt.format(v)} |" if v is not None else " - |"
            L.append(row)
        L.append("")
        for s in args.scenarios:
            L.append(f"`{s}`:")
            L.append("")
            L.append("| |" + "".join(f" {a} |" for a in cols))
            L.append("|---|" + "---|" * len(cols))
            for key, label, kind in SCENARIO_ROWS[s]:
                row = f"| {label} |"
                for a in cols:
                    v = median([r.get(key) for r in scen.get((s, a), [])])
                    if v is None:
                        row += " - |"
                    elif kind == "mib":
                        row += f" {fmt_mib(v)} |"
                    elif kind == "pct":
                        row += f" {v:.1f} % |"
                    elif kind == "ratio":
                        row += f" {v:.2f} |"
                    else:
                        row += f" {v:g} |"
                L.append(row)
            L.append("")
        L.append("What each does: `idle-owner` a thread fills the memory with small blocks, frees half while a second "
                 "thread frees the other half, sleeps, then makes 1,000 malloc(64)/free pairs; `sparse` 1 M x scale "
                 "blocks of 16..2,000 B, 95 % freed at random; `rlimit-as` small blocks up to 256 MiB x scale freed, "
                 "then RLIMIT_AS = VmSize + headroom and 2..16 MiB blocks until malloc fails; `fork-child` two "
                 "threads hold 2 x 64 MiB x scale, the main thread forks, the child frees their blocks and "
                 "allocates as much again; `lazyfree` 165 MiB x scale allocated by the main thread, freed by a "
                 "background thread, the main thread idles. "
                 f"`{PURGER_VARIANT}`: bitslab with `BITSLAB_BACKGROUND_PURGE=1` (its purger thread, docs/purger.md).")
        L.append("")

    if cg:
        L.append("## Instructions per malloc + free")
        L.append("")
        L.append("callgrind, the allocator in `LD_PRELOAD`, collection only inside the measured loop: "
                 f"`pair` and `batch` ({args.cg_iters:,} pairs, bench/fastpath.c, client-request toggles): "
                 "malloc(32) then free at once (LIFO, the same block each time), and 64 mallocs then the 64 frees; "
                 f"`ring` ({args.cg_iters // 5:,} steps of the `ring` workload, `--toggle-collect=ring_steps*`): "
                 "free a random one of 4096 live blocks and malloc 16..256 B. Instructions per malloc+free, the "
                 "allocator's only (the loop function's own instructions, the same for every allocator, "
                 "subtracted; total in parentheses). Deterministic: one run each.")
        L.append("")
        L.append("| allocator | pair | batch | ring | where (ring, Ir per step) |")
        L.append("|---|---|---|---|---|")
        for a in alloc_list:
            c = cg.get(a, {})

            def cell(mode):
                x = c.get(mode)
                return f"{x['alloc_ir_per_pair']:.1f} ({x['ir_per_pair']:.1f})" if x and x["ir_per_pair"] else "-"
            where = ", ".join(f"{fn} {v:g}" for fn, v in c.get("ring", {}).get("functions", []) if v >= 0.5)
            L.append(f"| {a} | {cell('pair')} | {cell('batch')} | {cell('ring')} | {where} |")
        L.append("")

    if failures:
        L.append("## Failures")
        L.append("")
        groups = {}
        for f in failures:
            groups.setdefault((f["allocator"], f["workload"], f["threads"], f["phase"]), []).append(f)
        for (a, w, t, ph), fs in groups.items():
            f = next((x for x in fs if x.get("gdb")), fs[0])
            symptoms = sorted({x["symptom"] for x in fs})
            L.append(f"- **{a}**, `{w}` threads={t} ({ph}): {'; '.join(symptoms)}. Command: `{f['command']}`" +
                     (f"; backtrace: `{os.path.relpath(f['gdb'], ROOT)}`" if f.get("gdb") else ""))
            if f["stderr"]:
                L.append(f"  - stderr: `{f['stderr'].splitlines()[-1][:300]}`")
        L.append("")
    return "\n".join(L) + "\n", ratio


def chart(args, alloc_list, cfgs, ratio, outdir):
    peers = [a for a in PEER_ORDER if a in alloc_list]
    if "bitslab" not in alloc_list or not peers or not ratio:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib not importable by {sys.executable}: no chart (apt-get install python3-matplotlib "
            "and run with /usr/bin/python3, as scripts/bench.sh does)")
        return None
    labels = [f"{w}/{tlabel(w, t, k)}" for (w, t, k) in cfgs]
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"]
    n = len(peers)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(9, 0.45 * len(labels) + 2), 5.6))
    for i, p in enumerate(peers):
        xs, ys = [], []
        for j, (w, t, _k) in enumerate(cfgs):
            r = ratio.get((w, t, p), (None, None))[0]
            if r:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(r)
        # bars start at 1: up when bitslab is faster, down when it is slower
        ax.bar(xs, [y - 1 for y in ys], width=width, bottom=1, label=p, color=colors[i % len(colors)],
               edgecolor="black", linewidth=0.4)
    ax.set_yscale("log", base=2)
    ax.axhline(1, color="black", linewidth=1.5)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("peer time / bitslab time (log scale)")
    ax.set_title(f"Peer time / bitslab time per workload/threads (hyperfine medians of {args.reps}; "
                 "> 1: bitslab faster)", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(ncol=n, loc="upper left", fontsize=8)
    fig.tight_layout()
    png = os.path.join(outdir, "latest.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# ---- main ---------------------------------------------------------------------------------------------

BUSY = {}


def main():
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=int(env.get("BENCH_REPS", 5)))
    ap.add_argument("--warmup", type=int, default=int(env.get("BENCH_WARMUP", 1)))
    ap.add_argument("--scale", type=float, default=float(env.get("BENCH_SCALE", 1)))
    ap.add_argument("--seed", type=int, default=int(env.get("BENCH_SEED", 42)))
    ap.add_argument("--delay", type=float, default=float(env.get("BENCH_DELAY", 2)))
    ap.add_argument("--allocators", default=env.get("BENCH_ALLOCATORS", ",".join(ALL_ALLOCATORS)))
    ap.add_argument("--workloads", default=env.get("BENCH_WORKLOADS", ""))
    ap.add_argument("--threads", default=env.get("BENCH_THREADS", "1,2,8"))
    ap.add_argument("--oversub", type=int, default=int(env.get("BENCH_OVERSUB", min(128, 4 * NCPU))))
    ap.add_argument("--producers", type=int, default=int(env.get("BENCH_PRODUCERS", 3)))
    ap.add_argument("--strace", type=int, default=int(env.get("BENCH_STRACE", 1)))
    ap.add_argument("--cg-iters", type=int, default=int(env.get("BENCH_CG_ITERS", 1000000)))
    ap.add_argument("--scenarios", default=env.get("BENCH_SCENARIOS", ""))
    ap.add_argument("--mem-reps", type=int, default=int(env.get("BENCH_MEM_REPS", 3)))
    ap.add_argument("--mem-scale", type=float, default=float(env.get("BENCH_MEM_SCALE", 0) or 0))
    ap.add_argument("--sleep", type=float, default=float(env.get("BENCH_SLEEP", 2)))
    ap.add_argument("--busy-limit", type=float, default=float(env.get("BENCH_BUSY_LIMIT", 0.25)))
    ap.add_argument("--retries", type=int, default=int(env.get("BENCH_RETRIES", 1)))
    ap.add_argument("--retry-budget", type=float, default=float(env.get("BENCH_RETRY_BUDGET", 120)))
    ap.add_argument("--timeout", type=float, default=float(env.get("BENCH_TIMEOUT", 0)),
                    help="seconds before a run counts as hung (default: 60 x scale, at least 60)")
    ap.add_argument("--build-dir", default=env.get("BUILD_DIR", "build/release"))
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    args = ap.parse_args()
    args.allocators = [a for a in args.allocators.split(",") if a]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.mem_scale = args.mem_scale or args.scale
    args.run_timeout = args.timeout or max(60.0, 60.0 * args.scale)
    args.out = os.path.abspath(args.out)
    if args.reps < 1 or args.mem_reps < 1 or args.warmup < 0:
        sys.exit("BENCH_REPS and BENCH_MEM_REPS must be >= 1, BENCH_WARMUP >= 0")
    if args.workloads != ["none"] and not shutil.which("hyperfine"):
        sys.exit("hyperfine not found (apt-get install hyperfine; scripts/bench.sh does)")

    start = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):  # what an earlier run left
        p = os.path.join(args.out, f)
        if f.startswith(("failure-", "callgrind.")):
            os.remove(p)
        elif f in ("hyperfine", "strace") and os.path.isdir(p):
            shutil.rmtree(p)

    so, progs = build(args)
    args.bitslab_so = so
    alloc_list, libs = allocators(args, so)
    workload_list = [tuple(l.split()) for l in out([progs["bench"], "--list"]).splitlines()]
    scenario_list = out([progs["mem"], "--list"]).split()
    if args.workloads == ["none"]:
        cfgs = []
    else:
        unknown = set(args.workloads) - {w for w, _ in workload_list}
        if unknown:
            sys.exit(f"unknown workloads: {', '.join(sorted(unknown))}")
        cfgs = configs(args, workload_list)
    sc = [s for s in args.scenarios.split(",") if s]
    if sc == ["none"]:
        args.scenarios = []
    else:
        unknown = set(sc) - set(scenario_list)
        if unknown:
            sys.exit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        args.scenarios = [s for s in scenario_list if not sc or s in sc]
        unlisted = [s for s in args.scenarios if s not in SCENARIOS]
        if unlisted:
            sys.exit(f"bench/run.py does not know the scenarios {unlisted}: add them to SCENARIOS")
    log(f"== {len(cfgs)} workload configurations x {len(alloc_list)} allocators x {args.reps} runs "
        f"(+{args.warmup} warm-up); {len(args.scenarios)} memory scenarios x {args.mem_reps}")
    for a in alloc_list:
        log(f"   {a:9s} {libs[a] or '(no preload)'}")

    failures = []
    phases = {}
    timing = {}
    t_phase = time.monotonic()
    for i, (w, t, _k) in enumerate(cfgs):
        k = i % len(alloc_list)
        order = alloc_list[k:] + alloc_list[:k]  # who goes first rotates
        t0 = time.monotonic()
        res, busy = time_config(args, progs, alloc_list, libs, w, t, order, failures)
        timing[(w, t)] = res
        BUSY[(w, t)] = busy
        log(f"== {w} t={t}: " + ", ".join(f"{a} {fmt_ms(res[a]['median'])}" for a in alloc_list if a in res) +
            f" ms ({time.monotonic() - t0:.0f} s, others used {100 * busy:.0f} %)")

    phases["hyperfine"] = time.monotonic() - t_phase
    t_phase = time.monotonic()
    profile = {}
    base = strace_base() if args.strace else None
    if cfgs and args.strace and not base:
        log("strace not usable (not installed, or ptrace not permitted): no system-call counts")
    pcfgs = cfgs if base else [c for c in cfgs if c[0] == "memory"]
    if pcfgs:
        log(f"== {'strace pass' if base else 'memory workload with its delay'}: {len(pcfgs)} configurations, untimed")
        for (w, t, _k) in pcfgs:
            for a in alloc_list:
                r = profile_config(args, progs, a, libs[a], w, t, base, failures)
                if r:
                    profile[(w, t, a)] = r

    phases["strace" if base else "profile"] = time.monotonic() - t_phase
    t_phase = time.monotonic()
    cg = {}
    if args.cg_iters > 0 and shutil.which("valgrind"):
        log(f"== callgrind ({args.cg_iters:,} fast-path pairs, {args.cg_iters // 5:,} ring steps)")
        for a in alloc_list:
            cg[a] = callgrind(args, progs, a, libs[a])
    elif args.cg_iters > 0:
        log("valgrind not found: no instruction counts")

    phases["callgrind"] = time.monotonic() - t_phase
    t_phase = time.monotonic()
    scen = {}
    if args.scenarios:
        log(f"== memory scenarios (scale {args.mem_scale:g}, sleeps {args.sleep:g} s)")
        scen_allocs = scenario_allocators(alloc_list)
        for rep in range(args.mem_reps):
            for i, s in enumerate(args.scenarios):
                k = (i + rep) % len(scen_allocs)
                for a in scen_allocs[k:] + scen_allocs[:k]:
                    r = run_scenario(args, progs, a, libs["bitslab" if a == PURGER_VARIANT else a], s, failures)
                    if r:
                        r["rep"] = rep + 1
                        scen.setdefault((s, a), []).append(r)
                log(f"   {s}: " + ", ".join(
                    f"{a} " + SCENARIOS[s][2].format(scen[(s, a)][-1][SCENARIOS[s][0]])
                    for a in scen_allocs if scen.get((s, a)) and SCENARIOS[s][0] in scen[(s, a)][-1]))

    phases["scenarios"] = time.monotonic() - t_phase
    args.phases = {k: round(v, 1) for k, v in phases.items()}
    log("== phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    wall = time.monotonic() - t_start
    md, ratio = report(args, alloc_list, cfgs, timing, profile, cg, scen, failures, wall, start)
    png = chart(args, alloc_list, cfgs, ratio, args.out)
    if png:
        md += f"\nChart: `{os.path.relpath(png, ROOT)}` (ratios per workload, log scale).\n"
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    settings = {k: v for k, v in vars(args).items()}
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"date": start.isoformat(), "settings": settings, "libraries": libs, "cpus": NCPU,
                   "timing": [{"workload": w, "threads": t, "kind": k, "busy_other": BUSY.get((w, t)),
                               "allocators": timing.get((w, t), {})} for (w, t, k) in cfgs],
                   "profile": [dict(r, allocator=a, workload=w, threads=t) for (w, t, a), r in profile.items()],
                   "callgrind": cg,
                   "scenarios": [dict(r, allocator=a) for (s, a), rs in scen.items() for r in rs],
                   "ratios": [{"workload": w, "threads": t, "peer": p, "wall": v[0], "cpu": v[1]}
                              for (w, t, p), v in ratio.items()],
                   "failures": failures}, f, indent=1)
    print(md)
    log(f"== wrote {os.path.relpath(args.out, ROOT)}/latest.md, latest.json" + (", latest.png" if png else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
