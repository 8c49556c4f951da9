#!/usr/bin/env python3
"""check-wait-free.py: the remote-free path is wait-free *as compiled*.

    check-wait-free.py [--objdump PATH] LIBRARY [ENTRY ...]

Disassembles LIBRARY (objdump -d) and walks every function reachable by
direct calls from the ENTRY functions (default: heap_free_slow, the path a
free by another thread takes: lookup, validation, remote_free and the queue
push). Functions that are not part of a remote free are not followed: the
fatal-error reporters (they abort), huge_free (a huge block is not a remote
free) and the debug build's test hooks (debug_*). In each function walked it
fails on:

  - any `cmpxchg` (a compare-and-swap is how compilers build a retry loop
    for an atomic they have no single instruction for);
  - any cycle in the control-flow graph (a loop, whatever its instructions).

Every backward branch is listed. A backward branch that closes no cycle
(compilers place an out-of-line block after the function body and jump back
to where it joins) is reported but is not a loop, so it does not fail.

Exit status: 0 wait-free, 1 a CAS or a loop found, 77 (skipped) if objdump
or the entry symbol is missing.
"""
import argparse
import re
import shutil
import subprocess
import sys

NOT_FOLLOWED = re.compile(r"^(bitslab_fatal|bitslab_fatal_in|huge_free|debug_|bitslab_debug_|"
                          r"bitslab_heap_is_abandoned|abort|__stack_chk_fail)")
NORETURN = re.compile(r"^(bitslab_fatal|bitslab_fatal_in|abort|__stack_chk_fail)\b")
FUNC_RE = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
INSN_RE = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
TARGET_RE = re.compile(r"\b([0-9a-f]+) <([^>+]+)(\+0x([0-9a-f]+))?>")


def disassemble(objdump, lib):
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", lib], capture_output=True, text=True,
                         check=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = FUNC_RE.match(line)
        if m:
            cur = funcs.setdefault(m.group(2), [])
            continue
        m = INSN_RE.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2).strip()))
        elif not line.strip():
            cur = None
    return funcs


def base_name(sym):
    """remote_free.cold, block_lookup.constprop.0, remote_free@plt -> the C function's name."""
    return sym.split("@")[0].split(".")[0]


def analyse(name, insns):
    """Returns (problems, backward, callees) for one function."""
    problems, backward, callees = [], [], set()
    if not insns:
        return problems, backward, callees
    addrs = [a for a, _ in insns]
    index = {a: i for i, a in enumerate(addrs)}
    lo, hi = addrs[0], addrs[-1]
    succ = []
    for i, (addr, text) in enumerate(insns):
        words = text.split()
        op = words[1] if len(words) > 1 and words[0] in ("lock", "rep", "repz", "repnz", "notrack", "bnd") else (words[0] if words else "")
        nxt = [i + 1] if i + 1 < len(insns) else []
        if "cmpxchg" in text:
            problems.append(f"{name}+{addr - lo:#x}: {text}  (compare-and-swap: a retry loop)")
        if op.startswith("ret") or op in ("ud2", "hlt"):
            succ.append([])
            continue
        m = TARGET_RE.search(text)
        if op.startswith("call"):
            if m:
                callee = m.group(2)
                if NORETURN.match(callee):
                    succ.append([])
                    continue
                callees.add(callee)
            succ.append(nxt)
            continue
        if op.startswith("j") and m:
            target = int(m.group(1), 16)
            inside = lo <= target <= hi and target in index
            targets = [index[target]] if inside else []  # outside: a tail call or a .cold part
            if inside and target <= addr:
                backward.append(f"{name}+{addr - lo:#x}: {text}")
            if not inside and m:
                callees.add(m.group(2))
            succ.append(targets if op == "jmp" else targets + nxt)
            continue
        if op.startswith("j"):  # indirect jump: cannot be followed
            problems.append(f"{name}+{addr - lo:#x}: {text}  (indirect jump)")
            succ.append([])
            continue
        succ.append(nxt)
    # Cycle detection: iterative DFS with colours.
    colour = [0] * len(insns)
    for start in range(len(insns)):
        if colour[start]:
            continue
        stack = [(start, iter(succ[start]))]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
            elif colour[nxt] == 1:
                problems.append(f"{name}+{insns[nxt][0] - lo:#x}: a loop (cycle back to here from "
                                f"{name}+{insns[node][0] - lo:#x}: {insns[node][1]})")
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return problems, backward, callees


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objdump", default=shutil.which("objdump") or "objdump")
    ap.add_argument("library")
    ap.add_argument("entries", nargs="*", default=["heap_free_slow"])
    args = ap.parse_args()
    if not shutil.which(args.objdump):
        print("objdump not found: skipped")
        return 77
    funcs = disassemble(args.objdump, args.library)
    by_base = {}
    for sym in funcs:
        if "@" not in sym:  # PLT stubs: a call through one is followed to the function itself
            by_base.setdefault(base_name(sym), []).append(sym)
    missing = [e for e in args.entries if e not in by_base]
    if missing:
        print(f"{args.library}: no symbol {', '.join(missing)}: skipped")
        return 77
    todo = [s for e in args.entries for s in by_base[e]]
    seen, problems, backward = set(), [], []
    while todo:
        sym = todo.pop()
        if sym in seen:
            continue
        seen.add(sym)
        p, b, callees = analyse(sym, funcs[sym])
        problems += p
        backward += b
        for c in callees:
            if NOT_FOLLOWED.match(c):
                continue
            for s in by_base.get(base_name(c), []):  # the function and its .cold/.part pieces
                todo.append(s)
    print(f"{args.library}: walked {len(seen)} function(s): {', '.join(sorted(seen))}")
    for b in backward:
        print(f"  backward branch: {b}")
    if problems:
        for p in problems:
            print(f"  NOT WAIT-FREE: {p}")
        return 1
    print("  no compare-and-swap, no loop: wait-free as compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
