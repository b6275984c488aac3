#!/usr/bin/env python3
"""Port-I/O exit rate with 1, 2 and 4 vCPUs: rvmm and QEMU side by side on the same guest.

The guest (guests/src/pio_bench.S) starts every vCPU, drops each to ring 3 with sysexit and runs
`out %al, $0x80` N times there (one KVM_EXIT_IO each, handled by the VMM's port-0x80 sink), then
the last vCPU to finish exits through isa-debug-exit. Boot and teardown cost is removed by also
timing n=0 runs: exit rate = cpus * N / (t(N) - t(0)), medians of alternating runs.

Usage: benches/pio_exits.py [--runs R] [--n N] [--cpus 1,2,4] [--rvmm PATH] [--qemu PATH]
       [--machine q35[,props]]
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time

import qemu_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_guest(name):
    hits = sorted(glob.glob(os.path.join(ROOT, "target", "*", "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"pio_exits.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


def run(binary, machine, kernel, cpus, n, cpu="host"):
    args = [binary, "-M", machine, "-accel", "kvm", "-cpu", cpu, "-m", "256", "-smp", str(cpus),
            "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", kernel, "-append", f"n={n}"]
    start = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 33 or f"{cpus} cpus x {n}".encode() not in proc.stdout:
        raise RuntimeError(f"{binary} -smp {cpus} n={n}: status {proc.returncode}\n"
                           f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=200000, help="out instructions per vCPU")
    ap.add_argument("--cpus", default="1,2,4")
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--machine", default="q35")
    ap.add_argument("--baseline", default=None,
                    help="another rvmm binary (e.g. built from an earlier commit), run as rvmm-before")
    a = ap.parse_args()
    kernel = find_guest("pio_bench.elf")
    vmms = [("rvmm", a.rvmm), ("QEMU", a.qemu)] + ([("rvmm-before", a.baseline)] if a.baseline else [])
    cpu = {"QEMU": qemu_host.qemu_cpu(a.qemu)}
    print(f"machine {a.machine}, {a.n} port writes per vCPU, {a.runs} alternating runs, medians")
    before = "| rvmm-before exits/s | rvmm/rvmm-before " if a.baseline else ""
    print("| vCPUs | rvmm exits/s | QEMU exits/s | rvmm/QEMU | rvmm µs/exit/vCPU | QEMU µs/exit/vCPU "
          + before + "|")
    print("|---" * (8 if a.baseline else 6) + "|")
    for cpus in [int(c) for c in a.cpus.split(",")]:
        times = {name: {0: [], a.n: []} for name, _ in vmms}
        for i in range(a.runs):
            order = vmms if i % 2 == 0 else list(reversed(vmms))
            for name, binary in order:
                for n in (0, a.n):
                    times[name][n].append(run(binary, a.machine, kernel, cpus, n, cpu.get(name, "host")))
        rate = {}
        per = {}
        for name, _ in vmms:
            dt = statistics.median(times[name][a.n]) - statistics.median(times[name][0])
            rate[name] = cpus * a.n / dt
            per[name] = dt / a.n * 1e6
        extra = (f" {rate['rvmm-before']:,.0f} | {rate['rvmm'] / rate['rvmm-before']:.3f} |"
                 if a.baseline else "")
        print(f"| {cpus} | {rate['rvmm']:,.0f} | {rate['QEMU']:,.0f} | {rate['rvmm'] / rate['QEMU']:.2f} "
              f"| {per['rvmm']:.2f} | {per['QEMU']:.2f} |{extra}", flush=True)


if __name__ == "__main__":
    main()
