#!/usr/bin/env python3
"""check-wait-free.py: the remote-free path is wait-free *as compiled*.

    check-wait-free.py [--objdump PATH] [--optimization LEVEL] LIBRARY [ENTRY ...]
    check-wait-free.py [--objdump PATH] --self-test MODULE

Disassembles LIBRARY (objdump -d) and walks every instruction reachable from
the ENTRY functions (default: bitslab_free and free_slow, the path a
free by another thread takes: lookup, validation, remote_free and the queue
push), following direct calls and jumps into other symbols (.cold parts,
callees). It does not follow what is not part of a remote free, by exact
name: the fatal-error reporters (they abort; bitslab_assert_failed is a
debug build's BITSLAB_ASSERT), huge_free (a huge block), the
owner's own paths out of bitslab_free (heap_slab_freed_slow, free_to_cache
and heap_tick: the owner freeing its own block) and the debug build's test
hooks (debug_park, debug_count).

It fails (exit 1) on:
  - any `cmpxchg` (a compare-and-swap is how compilers build a retry loop
    for an atomic they have no single instruction for);
  - any cycle in the control-flow graph of everything walked, across
    symbols, with call edges: a loop, or recursion;
  - an indirect call or jump (it cannot be followed);
  - a call to a function outside LIBRARY (through the PLT, or unknown),
    except abort and __stack_chk_fail;
  - an ENTRY that is not in LIBRARY.
Backward branches that close no cycle (a cold block jumping back to where
it joins) are listed but are not loops.

--optimization LEVEL (meson's `optimization` option): the claim is for
optimized builds (-O1 and up); at 0, g or plain the check is skipped (77):
clang -O0 builds a fetch_or whose result is unused as a CAS loop.

--self-test MODULE: MODULE (tests/waitfree_selftest.c) has one entry per
way of not being wait-free; each must be reported, with its reason.

Exit status: 0 wait-free, 1 not (or a self-test case missed), 77 skipped.
"""
import argparse
import re
import shutil
import subprocess
import sys

NOT_FOLLOWED = {"bitslab_fatal", "bitslab_fatal_in", "bitslab_assert_failed", "huge_free", "heap_slab_freed_slow",
                "free_to_cache", "heap_tick", "debug_park", "debug_count"}
NORETURN = {"bitslab_fatal", "bitslab_fatal_in", "bitslab_assert_failed", "abort", "__stack_chk_fail"}
EXTERNAL_OK = {"abort", "__stack_chk_fail"}
FUNC_RE = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
INSN_RE = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
TARGET_RE = re.compile(r"\b([0-9a-f]+) <([^>+]+)(\+0x([0-9a-f]+))?>")
PREFIXES = ("lock", "rep", "repz", "repnz", "notrack", "bnd", "data16", "cs", "ds")


def base_name(sym):
    """remote_free.cold, block_lookup.constprop.0, remote_free@plt -> the C function's name."""
    return sym.split("@")[0].split(".")[0]


def disassemble(objdump, lib):
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", lib], capture_output=True, text=True,
                         check=True).stdout
    insns, symbols, cur = {}, {}, None
    for line in out.splitlines():
        m = FUNC_RE.match(line)
        if m:
            cur = m.group(2)
            symbols.setdefault(cur, int(m.group(1), 16))
            continue
        m = INSN_RE.match(line)
        if m and cur is not None:
            insns[int(m.group(1), 16)] = (m.group(2).strip(), cur)
        elif not line.strip():
            cur = None
    return insns, symbols


def opcode(text):
    words = text.split()
    while words and words[0] in PREFIXES:
        words = words[1:]
    return words[0] if words else ""


def check(objdump, lib, entries):
    insns, symbols = disassemble(objdump, lib)
    addrs = sorted(insns)
    nxt = {a: b for a, b in zip(addrs, addrs[1:])}
    by_base = {}
    for sym, addr in symbols.items():
        if "@" not in sym:
            by_base.setdefault(base_name(sym), []).append(addr)
    problems, backward, walked = [], [], set()
    missing = [e for e in entries if e not in by_base]
    for e in missing:
        problems.append(f"entry {e}: no such function in {lib}")
    succ = {}
    todo = [a for e in entries if e in by_base for a in by_base[e]]
    seen = set(todo)

    def where(a):
        sym = insns[a][1]
        return f"{sym}+{a - symbols[sym]:#x}"

    def follow(a, out):
        if a in insns and a not in seen:
            seen.add(a)
            todo.append(a)
        if a in insns:
            out.append(a)

    while todo:
        a = todo.pop()
        if a not in insns:
            continue
        text, sym = insns[a]
        walked.add(sym)
        op = opcode(text)
        out = []
        succ[a] = out
        if "cmpxchg" in text:
            problems.append(f"{where(a)}: {text}  (compare-and-swap: a retry loop)")
        if op.startswith("ret") or op in ("ud2", "hlt"):
            continue
        m = TARGET_RE.search(text)
        if op.startswith("call") or op.startswith("j"):
            if not m:
                problems.append(f"{where(a)}: {text}  (indirect {'call' if op.startswith('call') else 'jump'})")
                continue
            target, tsym = int(m.group(1), 16), m.group(2)
            tbase = base_name(tsym)
            if tbase in NOT_FOLLOWED or tbase in NORETURN:
                if op.startswith("call") and tbase not in NORETURN and a in nxt:
                    follow(nxt[a], out)
                continue
            if "@" in tsym or target not in insns:
                if tbase not in EXTERNAL_OK:
                    problems.append(f"{where(a)}: {text}  (a call outside the library: not known to be wait-free)")
                elif op.startswith("call") and a in nxt and tbase not in NORETURN:
                    follow(nxt[a], out)
                continue
            if target <= a and insns[target][1] == sym:
                backward.append(f"{where(a)}: {text}")
            follow(target, out)
            if (op.startswith("call") or op != "jmp") and a in nxt:
                follow(nxt[a], out)
            continue
        if a in nxt:
            follow(nxt[a], out)
    # Cycles over the whole walked graph (iterative DFS, three colours).
    colour = {}
    for start in succ:
        if start in colour:
            continue
        colour[start] = 1
        stack = [(start, iter(succ.get(start, ())))]
        while stack:
            node, it = stack[-1]
            n = next(it, None)
            if n is None:
                colour[node] = 2
                stack.pop()
            elif colour.get(n) == 1:
                problems.append(f"{where(n)}: a cycle (a loop or recursion) closed from {where(node)}: "
                                f"{insns[node][0]}")
            elif n not in colour:
                colour[n] = 1
                stack.append((n, iter(succ.get(n, ()))))
    return problems, backward, walked


def self_test(objdump, module):
    cases = {"st_cas": "compare-and-swap", "st_loop": "cycle", "st_indirect": "indirect",
             "st_external": "outside the library", "st_recursion": "cycle", "st_clean": None}
    failed = 0
    for entry, reason in cases.items():
        problems, _, _ = check(objdump, module, [entry])
        text = "\n".join(problems)
        ok = (not problems) if reason is None else (reason in text)
        print(f"  self-test {entry}: {'ok' if ok else 'MISSED'}"
              f"{'' if reason is None else ' (' + reason + ')'}")
        if not ok:
            failed += 1
            print("    " + (text or "no problem reported").replace("\n", "\n    "))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objdump", default=shutil.which("objdump") or "objdump")
    ap.add_argument("--optimization", default="2")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("library")
    ap.add_argument("entries", nargs="*", default=["bitslab_free", "free_slow"])
    args = ap.parse_args()
    if not shutil.which(args.objdump):
        print("objdump not found: skipped")
        return 77
    if args.self_test:
        return self_test(args.objdump, args.library)
    if args.optimization in ("0", "g", "plain"):
        print(f"optimization={args.optimization}: the wait-free claim is for optimized builds (-O1 and up); skipped")
        return 77
    problems, backward, walked = check(args.objdump, args.library, args.entries)
    print(f"{args.library}: walked {len(walked)} symbol(s): {', '.join(sorted(walked))}")
    for b in backward:
        print(f"  backward branch: {b}")
    if problems:
        for p in problems:
            print(f"  NOT WAIT-FREE: {p}")
        return 1
    print("  no compare-and-swap, no loop, no recursion, no indirect or outside call: wait-free as compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
