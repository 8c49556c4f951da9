#!/usr/bin/env python3
"""CI smoke check for a benchmark program (meson test --suite bench).

    smoke_check.py PRELOAD PROGRAM EXPECTED_LIB [ARGS...]

Runs `PROGRAM --list`, then `PROGRAM --smoke --expect-lib EXPECTED_LIB ARGS...`
with PRELOAD (a shared library) in LD_PRELOAD for that program only, and fails
unless the program exits 0 and printed a RESULT line for every workload or
scenario it lists, each with malloc_lib naming EXPECTED_LIB. No time is judged.
"""
import os
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    preload, prog, lib, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    env = dict(os.environ, LD_PRELOAD=preload)
    names = [l.split()[0] for l in subprocess.run([prog, "--list"], capture_output=True, text=True,
                                                  check=True).stdout.splitlines() if l.strip()]
    r = subprocess.run([prog, "--smoke", "--expect-lib", lib, *extra], capture_output=True, text=True, env=env)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        sys.exit(f"smoke_check: {prog} --smoke exited with status {r.returncode}")
    seen = {}
    for line in r.stdout.splitlines():
        if not line.startswith("RESULT "):
            continue
        d = dict(tok.partition("=")[::2] for tok in line.split()[1:])
        name = d.get("workload") or d.get("scenario")
        if lib not in d.get("malloc_lib", ""):
            sys.exit(f"smoke_check: RESULT line with malloc_lib={d.get('malloc_lib')}, expected {lib}: {line}")
        seen[name] = seen.get(name, 0) + 1
    missing = [n for n in names if n not in seen]
    if missing:
        sys.exit(f"smoke_check: no RESULT line for {', '.join(missing)}")
    print(f"smoke_check: {len(names)} listed, every one printed RESULT ({sum(seen.values())} lines)")


if __name__ == "__main__":
    main()
