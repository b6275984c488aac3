#!/usr/bin/env python3
"""Exit rates: rvmm, QEMU and a bare KVM_RUN loop (the floor) side by side on the same guest.

The guest (guests/src/exits.S, `exits.elf`) drops every vCPU to ring 3 with sysexit and runs four
loops, one exit per instruction: N `outb` to port 0xe0, N `inb`, N 4-byte MMIO writes and N reads
at 0xff000000 (pc-testdev). It prints `P1`..`P4` before each loop and `end` after the last; this
script timestamps those lines as they arrive on the VMM's stdout, so start-up and teardown are not
in the numbers. exits/s of a phase = N * vCPUs / (time of the next line - time of its line).

Each round runs every VMM once in alternating order (these machines are noisy; compare ratios
from one run). The floor is `kvm-floor` (benches/kvm-floor): same guest, loaded the same way,
a KVM_RUN loop that does nothing but answer the exit.

Usage: benches/exits.py [--runs N] [--count N] [--cpus 1,2] [--rvmm PATH] [--qemu PATH]
                        [--floor PATH] [--machine microvm] [--guest exits.elf] [--rvmm-args ...]
Build first: cargo build --release -p rvmm -p rvmm-kvm-floor
"""

import argparse
import glob
import os
import select
import statistics
import subprocess
import sys
import time

import qemu_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ["pio-out", "pio-in", "mmio-write", "mmio-read"]
MARKERS = [b"P1", b"P2", b"P3", b"P4", b"end"]


def find_guest(name):
    hits = sorted(glob.glob(os.path.join(ROOT, "target", "*", "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"exits.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


def qemu_style(machine, kernel, cpus, cmdline, cpu="host"):
    return ["-M", machine, "-enable-kvm", "-cpu", cpu, "-m", "256", "-smp", str(cpus),
            "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pc-testdev",
            "-kernel", kernel, "-append", cmdline]


def timed_run(argv, timeout=600):
    """Run argv; return {marker: arrival time} and the exit status."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    fd = proc.stdout.fileno()
    seen = {}
    buf = b""
    deadline = time.perf_counter() + timeout
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
        if not r:
            proc.kill()
            raise RuntimeError(f"{argv[0]}: timed out")
        chunk = os.read(fd, 4096)
        now = time.perf_counter()
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip() in MARKERS:
                seen[line.strip()] = now
    status = proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    if status != 33 or len(seen) != len(MARKERS):
        raise RuntimeError(f"{' '.join(argv)}: status {status}, markers {sorted(seen)}\n{err}")
    return seen, err


def rates(seen, count, cpus):
    return {PHASES[i]: count * cpus / (seen[MARKERS[i + 1]] - seen[MARKERS[i]]) for i in range(4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=100000, help="exits per phase per vCPU")
    ap.add_argument("--cpus", default="1,2")
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--floor", default=os.path.join(ROOT, "target", "release", "kvm-floor"))
    ap.add_argument("--machine", default="microvm")
    ap.add_argument("--guest", default="exits.elf")
    ap.add_argument("--rvmm-args", default="", help="extra rvmm arguments, e.g. '-exit-stats json=/tmp/s.json'")
    ap.add_argument("--only", default="rvmm,qemu,floor",
                    help="which VMMs to run: rvmm, qemu, floor, rvmm-stats (rvmm -exit-stats)")
    ap.add_argument("--baseline", default=None,
                    help="another rvmm binary (e.g. built from an earlier commit), run as rvmm-before")
    args = ap.parse_args()
    kernel = find_guest(args.guest)
    vmms = args.only.split(",")
    if args.baseline:
        vmms.append("rvmm-before")
    qemu_cpu = qemu_host.qemu_cpu(args.qemu) if "qemu" in vmms else "host"

    for cpus in [int(c) for c in args.cpus.split(",")]:
        cmdline = f"pout={args.count} pin={args.count} mw={args.count} mr={args.count} cpus={cpus}"
        argv = {
            "rvmm": [args.rvmm] + qemu_style("microvm", kernel, cpus, cmdline) + args.rvmm_args.split(),
            "qemu": [args.qemu] + qemu_style(args.machine, kernel, cpus, cmdline, qemu_cpu),
            "rvmm-before": [args.baseline or ""] + qemu_style("microvm", kernel, cpus, cmdline)
            + args.rvmm_args.split(),
            "floor": [args.floor, kernel, str(cpus), cmdline],
            # rvmm with exit statistics on: the cost of collecting them.
            "rvmm-stats": [args.rvmm] + qemu_style("microvm", kernel, cpus, cmdline)
            + ["-exit-stats", "json=/dev/null"],
        }
        results = {v: {p: [] for p in PHASES} for v in vmms}
        for run in range(args.runs):
            order = vmms if run % 2 == 0 else list(reversed(vmms))
            for v in order:
                seen, _ = timed_run(argv[v])
                for p, r in rates(seen, args.count, cpus).items():
                    results[v][p].append(r)
        print(f"\n{cpus} vCPU(s), {args.count} exits per phase per vCPU, medians of {args.runs} alternating runs"
              f" (exits/s, all vCPUs together)")
        header = "| phase | " + " | ".join(vmms) + " |"
        extra = []
        if "rvmm" in vmms and "floor" in vmms:
            extra.append("rvmm/floor")
        if "rvmm" in vmms and "qemu" in vmms:
            extra.append("rvmm/QEMU")
        if "qemu" in vmms and "floor" in vmms:
            extra.append("QEMU/floor")
        if "rvmm" in vmms and "rvmm-stats" in vmms:
            extra.append("rvmm-stats/rvmm")
        if "rvmm-before" in vmms:
            extra.append("rvmm/rvmm-before")
            if "floor" in vmms:
                extra.append("rvmm-before/floor")
        print(header[:-1] + "".join(f"| {e} " for e in extra) + "|")
        print("|---" * (1 + len(vmms) + len(extra)) + "|")
        for p in PHASES:
            med = {v: statistics.median(results[v][p]) for v in vmms}
            row = f"| {p} | " + " | ".join(f"{med[v]:,.0f}" for v in vmms) + " |"
            for e in extra:
                a, b = e.lower().replace("qemu", "qemu").split("/")
                row += f" {med[a] / med[b]:.3f} |"
            print(row)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
