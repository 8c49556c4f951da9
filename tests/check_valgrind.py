#!/usr/bin/env python3
"""meson test valgrind (-Dvalgrind=true): run tests/vg_client under memcheck.

  check_valgrind.py VALGRIND VG_CLIENT

- `vg_client bugs` leaks one block in leak_one() and reads a freed block in
  read_freed(): memcheck must report exactly these two errors, each at the
  program's own function (not inside bitslab), the leak as 1 block
  definitely lost, allocated from leak_one, and exit with --error-exitcode.
- `vg_client shrink` leaks a huge block that realloc shrank in place
  (RESIZEINPLACE): memcheck must report it at its new size, 3 MiB.
- `vg_client clean` runs every allocation path: memcheck must report no
  error and no leak.
"""
import re
import subprocess
import sys

ERROR_EXIT = 99
failures = []

# Headlines of memcheck error reports.
HEADLINES = re.compile(r"^==\d+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                       r"Mismatched free|Source and destination overlap|Argument .* of function|"
                       r"\d[\d,]* bytes in \d[\d,]* blocks are (definitely|indirectly|possibly) lost)")


def check(cond, what):
    if not cond:
        failures.append(what)


def memcheck(valgrind, exe, mode):
    cmd = [valgrind, "--leak-check=full", f"--error-exitcode={ERROR_EXIT}", "--num-callers=20", exe, mode]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=500)
    return proc.returncode, proc.stdout.decode(errors="replace")


def reports(log):
    """Each error report: its headline and its stack lines ('at'/'by' frames)."""
    out, cur = [], None
    for line in log.splitlines():
        if HEADLINES.match(line):
            cur = {"headline": line.split("== ", 1)[1], "frames": []}
            out.append(cur)
        elif cur is not None:
            m = re.match(r"^==\d+==\s+(at|by) 0x[0-9A-Fa-f]+: (.*)$", line)
            if m:
                cur["frames"].append(m.group(2))
            elif re.match(r"^==\d+== ?$", line):
                cur = None
    return out


def first_user_frame(frames):
    """The first frame outside bitslab's hooks and entry points."""
    for f in frames:
        if not re.match(r"(vg_\w+|bitslab_\w+) ", f):
            return f
    return ""


def main():
    valgrind, exe = sys.argv[1:3]

    rc, log = memcheck(valgrind, exe, "bugs")
    check(rc == ERROR_EXIT, f"bugs: exit {rc}, expected --error-exitcode {ERROR_EXIT}")
    found = reports(log)
    heads = [r["headline"] for r in found]
    check(len(found) == 2, f"bugs: {len(found)} reports, expected 2 (the use after free, the leak): {heads}")
    uaf = [r for r in found if r["headline"].startswith("Invalid read")]
    check(len(uaf) == 1 and uaf[0]["frames"] and uaf[0]["frames"][0].startswith("read_freed (vg_client.c:"),
          f"bugs: the invalid read is not reported at read_freed: {uaf}")
    check(re.search(r"Address 0x[0-9a-f]+ is 10 bytes inside a block of size 64 free'd", log),
          "bugs: memcheck does not say the read was inside a freed 64-byte block")
    leak = [r for r in found if "definitely lost" in r["headline"]]
    check(len(leak) == 1 and re.search(r"\b1 blocks are definitely lost", leak[0]["headline"]),
          f"bugs: not 1 block definitely lost: {heads}")
    check(leak and first_user_frame(leak[0]["frames"]).startswith("leak_one (vg_client.c:"),
          f"bugs: the leak is not traced to leak_one: {leak[0]['frames'] if leak else None}")
    check(re.search(r"definitely lost: 224 bytes in 1 blocks", log), "bugs: LEAK SUMMARY is not 224 bytes in 1 block")
    check(re.search(r"indirectly lost: 0 bytes.*\n.*possibly lost: 0 bytes", log), "bugs: other leak kinds")
    for r in found:  # errors are reported in the program's code, never inside bitslab
        if "lost" not in r["headline"]:
            check(r["frames"] and "(vg_client.c:" in r["frames"][0], f"bugs: a report inside bitslab: {r}")
    check(re.search(r"ERROR SUMMARY: 2 errors from 2 contexts", log), "bugs: ERROR SUMMARY is not 2 errors")

    rc, log3 = memcheck(valgrind, exe, "shrink")
    found3 = reports(log3)
    check(len(found3) == 1 and found3[0]["headline"].startswith("3,145,728 bytes in 1 blocks are definitely lost")
          and first_user_frame(found3[0]["frames"]).startswith("leak_shrunk (vg_client.c:"),
          f"shrink: not 3 MiB definitely lost from leak_shrunk: {found3}")
    if failures:
        log += "\n---- memcheck, shrink ----\n" + log3

    rc, log2 = memcheck(valgrind, exe, "clean")
    check(rc == 0, f"clean: exit {rc}")
    found2 = reports(log2)
    check(not found2, f"clean: memcheck reported {[(r['headline'], r['frames'][:3]) for r in found2]}")
    check(re.search(r"ERROR SUMMARY: 0 errors from 0 contexts", log2), "clean: ERROR SUMMARY is not 0")
    check(re.search(r"All heap blocks were freed -- no leaks are possible", log2), "clean: blocks left at exit")
    check("vg_client:" not in log2, "clean: the program's own checks failed")

    for f in failures:
        print("FAIL:", f)
    if failures:
        print("---- memcheck, bugs ----\n" + log + "\n---- memcheck, clean ----\n" + log2)
        sys.exit(1)
    print("valgrind: the leak and the use after free are reported at the program's functions; "
          "a clean program gets no report")


if __name__ == "__main__":
    main()
