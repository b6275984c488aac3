#!/usr/bin/env python3
"""Start-up time and idle footprint: rvmm and QEMU side by side on the same PVH guest.

For each run, both VMMs boot the same guest with the same QEMU command line, in alternating order
(these machines are noisy, so only ratios from one run mean anything):

* exit time:        wall time from exec to process exit, for a guest that prints one line and exits
                    through isa-debug-exit;
* first line time:  wall time from exec to the guest's first serial line on stdout;
* idle VmRSS:       resident memory of the VMM process while the guest sits in `cli; hlt`.

Usage: benches/startup.py [--runs N] [--rvmm PATH] [--qemu PATH] [--machine microvm[,props]]
The guests come from the rvmm-guests build (target/*/build/rvmm-guests-*/out).
"""

import argparse
import glob
import os
import select
import signal
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
        sys.exit(f"startup.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


MACHINE = "microvm"


QEMU_CPU = "host"


def qemu_args(kernel, cpu="host"):
    return ["-M", MACHINE, "-enable-kvm", "-cpu", cpu, "-m", "256", "-nodefaults", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", kernel]


def time_boot(binary, kernel, cpu="host"):
    """Return (seconds to first line, seconds to exit, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen([binary] + qemu_args(kernel, cpu), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    first = None
    buf = b""
    fd = proc.stdout.fileno()
    while True:
        r, _, _ = select.select([fd], [], [], 10)
        if not r:
            proc.kill()
            raise RuntimeError(f"{binary}: no output for 10 s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        if first is None and b"\n" in buf:
            first = time.perf_counter() - start
    status = proc.wait()
    end = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"{binary}: guest printed no line (status {status})")
    return first, end, status


def idle_rss_kib(binary, kernel, cpu="host"):
    proc = subprocess.Popen([binary] + qemu_args(kernel, cpu), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        fd = proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + 10
        while b"halting" not in buf:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                raise RuntimeError(f"{binary}: guest did not reach hlt")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"{binary}: exited before hlt")
            buf += chunk
        time.sleep(0.3)
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_of(name):
    return QEMU_CPU if name == "qemu" else "host"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--machine", default="microvm",
                    help="-M value for both VMMs, e.g. microvm,kernel-irqchip=on")
    ap.add_argument("--exit-guest", default=None)
    ap.add_argument("--idle-guest", default=None)
    ap.add_argument("--baseline", default=None,
                    help="another rvmm binary (e.g. built from an earlier commit), run as rvmm-before")
    args = ap.parse_args()
    global MACHINE
    MACHINE = args.machine
    exit_guest = args.exit_guest or find_guest("pvh32.elf")
    idle_guest = args.idle_guest or find_guest("hlt.elf")
    vmms = {"rvmm": args.rvmm, "qemu": args.qemu}
    if args.baseline:
        vmms["rvmm-before"] = args.baseline
    global QEMU_CPU
    QEMU_CPU = qemu_host.qemu_cpu(args.qemu)
    res = {k: {"first": [], "exit": [], "rss": []} for k in vmms}
    statuses = {k: set() for k in vmms}
    for i in range(args.runs):
        order = list(vmms) if i % 2 == 0 else list(reversed(list(vmms)))
        for name in order:
            first, end, status = time_boot(vmms[name], exit_guest, cpu_of(name))
            res[name]["first"].append(first)
            res[name]["exit"].append(end)
            statuses[name].add(status)
    for i in range(max(3, args.runs // 4)):
        order = list(vmms) if i % 2 == 0 else list(reversed(list(vmms)))
        for name in order:
            res[name]["rss"].append(idle_rss_kib(vmms[name], idle_guest, cpu_of(name)))

    def med(name, key):
        return statistics.median(res[name][key])

    print(f"command: VMM {' '.join(qemu_args('GUEST'))}")
    print(f"guest (exit/first line): {os.path.basename(exit_guest)}; guest (idle): {os.path.basename(idle_guest)}")
    print(f"runs: {args.runs} alternating; exit statuses: "
          + ", ".join(f"{k} {sorted(v)}" for k, v in statuses.items()))
    print()
    b = "rvmm-before" in vmms
    print("| metric (median) | rvmm | QEMU microvm | rvmm/QEMU |"
          + (" rvmm-before | rvmm-before/QEMU |" if b else ""))
    print("|---" * (6 if b else 4) + "|")
    for key, label, unit, scale in (("first", "time to first serial line", "ms", 1000),
                                    ("exit", "time from exec to exit", "ms", 1000),
                                    ("rss", "VmRSS, guest halted", "MiB", 1 / 1024)):
        r, q = med("rvmm", key), med("qemu", key)
        row = f"| {label} | {r * scale:.2f} {unit} | {q * scale:.2f} {unit} | {r / q:.3f} |"
        if b:
            o = med("rvmm-before", key)
            row += f" {o * scale:.2f} {unit} | {o / q:.3f} |"
        print(row)
    if len({frozenset(v) for v in statuses.values()}) != 1:
        print("\nWARNING: exit statuses differ between rvmm and QEMU", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
