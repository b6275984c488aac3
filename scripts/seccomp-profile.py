#!/usr/bin/env python3
"""Per-thread-kind syscall use of rvmm, from `strace -f` logs (docs/SANDBOX.md).

Usage: seccomp-profile.py TRACE_FILE... > profile.txt

Each trace is `strace -f -qq -o FILE rvmm ...` output. A thread's kind comes from its name
(prctl PR_SET_NAME, as Rust's std sets it); its syscalls count from its seccomp(2) call on (the
moment its filter goes in; every call when the run had `-sandbox off`). Prints, per kind, each
syscall with how many runs made it, and the ioctl requests seen.
"""
import collections
import re
import sys

LINE = re.compile(r'^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)(.*)')
NAME = re.compile(r'PR_SET_NAME, "([^"]*)"')


def kind(name):
    for prefix, k in [("vcpu", "vcpu"), ("vnc-client", "vnc-client"), ("vnc-accept", "vnc-accept"),
                      ("vnc-display", "vnc-display"), ("passt", "passt"),
                      ("rvmm-spawner", "spawner"), ("main", "main")]:
        if name.startswith(prefix):
            return k
    return "worker:" + name


def main():
    use = collections.defaultdict(collections.Counter)
    ioctls = collections.defaultdict(collections.Counter)
    for path in sys.argv[1:]:
        names, started, seen = {}, set(), collections.defaultdict(set)
        first = None
        filtered = set()
        with open(path, errors="replace") as f:
            lines = f.readlines()
        for line in lines:
            if "seccomp(SECCOMP_SET_MODE_FILTER" in line:
                m = LINE.match(line)
                if m:
                    filtered.add(m.group(1))
        for line in lines:
            m = LINE.match(line)
            if not m:
                continue
            tid, call, rest = m.groups()
            if first is None:
                first = tid
                names[tid] = "main"
            n = NAME.search(line)
            if call == "prctl" and n:
                names[tid] = n.group(1)
            if tid in filtered and tid not in started:
                if call == "seccomp":
                    started.add(tid)
                continue
            if tid not in names:
                continue
            k = kind(names[tid])
            seen[k].add(call)
            if call == "ioctl" and "resumed" not in line[:40]:
                req = rest.split(",")[1].strip() if "," in rest else "?"
                ioctls[k][req] += 1
        for k, calls in seen.items():
            for c in calls:
                use[k][c] += 1
    for k in sorted(use):
        print(f"{k}: {len(use[k])} syscalls")
        print("   ", " ".join(sorted(use[k])))
        if ioctls[k]:
            print("    ioctl:", " ".join(f"{r}({n})" for r, n in ioctls[k].most_common()))


if __name__ == "__main__":
    main()
