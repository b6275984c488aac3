#!/usr/bin/env python3
"""Summarise the kernel's seccomp log lines (audit type=1326) of rvmm's log mode.

Usage: dmesg | scripts/seccomp-log-report.py [EXE_SUBSTRING]

Prints each (thread name, system call) that a filter logged, with a count: the calls to add to a
kind's list in crates/sandbox/src/lists.rs (thread names map to kinds as in docs/SANDBOX.md).
"""
import collections
import re
import sys

names = {}
try:
    with open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h") as f:
        for line in f:
            m = re.match(r"#define __NR_(\w+) (\d+)", line)
            if m:
                names[int(m.group(2))] = m.group(1)
except OSError:
    pass

exe = sys.argv[1] if len(sys.argv) > 1 else "rvmm"
seen = collections.Counter()
for line in sys.stdin:
    if "type=1326" not in line or exe not in line:
        continue
    comm = re.search(r'comm="([^"]*)"', line)
    nr = re.search(r"syscall=(\d+)", line)
    if comm and nr:
        name = re.sub(r"\d+$", "N", comm.group(1))
        seen[(name, names.get(int(nr.group(1)), nr.group(1)))] += 1
for (thread, call), n in sorted(seen.items()):
    print(f"{thread:20} {call:24} {n}")
