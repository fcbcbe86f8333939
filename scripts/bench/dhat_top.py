#!/usr/bin/env python3
"""The allocation sites with the most heap blocks in a valgrind DHAT output.

  dhat_top.py dhat.json [N] [MESSAGES]

Each site is named by its first frames outside the standard library and
valgrind's allocator, so the line points at postman's code or the crate
that allocates. With MESSAGES, counts are also given per message.
"""
import json
import re
import sys

FRAME = re.compile(r"^0x[0-9A-Fa-f]+: (?P<func>.*?) \((?P<loc>[^()]*)\)$")
STD = re.compile(r"^(library/|/rustc/|in /usr/libexec/valgrind|in /usr/lib|in /lib)")
# Inlined standard-library frames come with a bare file name.
STD_FILE = re.compile(
    r"^(alloc\.rs|raw_vec|vec/|boxed\.rs|string\.rs|spec_|slice\.rs|str\.rs|borrow\.rs|"
    r"rt\.rs|bytes\.rs|os_str\.rs|path\.rs|ffi/|num\.rs|fmt/|mod\.rs:\d+$|clone\.rs|iterator\.rs|option\.rs|result\.rs|macros\.rs)"
)
STD_FUNC = {"malloc", "realloc", "calloc", "UnknownInlinedFun", "alloc", "alloc_impl",
            "alloc_impl_runtime", "allocate", "exchange_malloc"}


def frames(ftbl, indices):
    out = []
    for i in indices:
        m = FRAME.match(ftbl[i])
        if not m:
            continue
        func, loc = m.group("func"), m.group("loc")
        if STD.match(loc) or STD_FILE.match(loc) or func in STD_FUNC:
            continue
        loc = re.sub(r"^.*/\.cargo/registry/src/[^/]+/", "", loc)
        func = re.sub(r"<[^<>]*>", "", func)
        out.append(f"{func} ({loc})")
    return out


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    data = json.load(open(path))
    ftbl = data["ftbl"]
    total_blocks = sum(pp["tbk"] for pp in data["pps"]) or 1
    total_bytes = sum(pp["tb"] for pp in data["pps"])
    print(f"Total: {total_blocks:,} blocks, {total_bytes:,} bytes", end="")
    if messages:
        print(f"; per message: {total_blocks / messages:,.0f} blocks, {total_bytes / messages:,.0f} bytes", end="")
    print("\n")
    # Merge program points that share their first own frames.
    sites = {}
    for pp in data["pps"]:
        own = frames(ftbl, pp["fs"])[:2] or ["(standard library only)"]
        key = " <- ".join(own)
        blocks, size = sites.get(key, (0, 0))
        sites[key] = (blocks + pp["tbk"], size + pp["tb"])
    print("| blocks | per message | bytes | site |")
    print("|---:|---:|---:|---|")
    for key, (blocks, size) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        per = f"{blocks / messages:.1f}" if messages else "–"
        print(f"| {blocks:,} | {per} | {size:,} | `{key}` |")


if __name__ == "__main__":
    main()
