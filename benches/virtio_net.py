#!/usr/bin/env python3
"""UDP through user networking: rvmm (`-nic user`, passt) and QEMU (`-netdev user`, libslirp)
side by side, the same guest: virtio-net over virtio-mmio on microvm (the default) or, with
--transport pci, virtio-net-pci on q35 (or pc; each VMM's default, transitional, function, driven
through its modern interface by virtio_net_bench_pci.elf).

The guest (guests/src/virtio_net_bench.S) sets up the first virtio-net device and runs a polling
driver in ring 3: it keeps `w` UDP datagrams of `size` payload bytes in flight to 10.0.2.2:port,
which both user networks map to the host's 127.0.0.1, where this script echoes them; the guest
counts the echoes until n came back (a stalled window counts as lost). Boot and teardown cost is
removed by also timing n=0 runs: rate = n / (t(n) - t(0)), medians of alternating runs. MB/s is
UDP payload echoed (each datagram counted once).

Usage: benches/virtio_net.py [--runs R] [--rvmm PATH] [--qemu PATH] [--transport mmio|pci]
       [--machine q35|pc]
"""

import argparse
import glob
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import qemu_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, payload bytes, window, datagrams per run)
WORKLOADS = [
    ("64 B datagrams, 16 in flight", 64, 16, 20000),
    ("1400 B datagrams, 16 in flight", 1400, 16, 20000),
]


def find_guest(name):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    hits = sorted(glob.glob(os.path.join(target, "*", "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"virtio_net.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


def echo_sink():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))

    def run():
        while True:
            d, a = s.recvfrom(65536)
            s.sendto(d, a)
    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1]


def run(binary, kernel, guest_args, cpu, machine):
    nic = "virtio-net-device" if machine == "microvm" else "virtio-net-pci"
    args = [binary, "-M", machine, "-accel", "kvm", "-cpu", cpu, "-m", "128", "-nodefaults",
            "-no-reboot", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", kernel,
            "-netdev", "user,id=n", "-device", f"{nic},netdev=n", "-append", guest_args]
    if "qemu" in os.path.basename(binary) and machine == "microvm":
        # QEMU's virtio-mmio is legacy (version 1) unless told otherwise; the guest is modern-only.
        args += ["-global", "virtio-mmio.force-legacy=false"]
    start = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=600)
    elapsed = time.perf_counter() - start
    m = re.search(rb"virtio_net_bench: received (\d+) lost (\d+)", proc.stdout)
    if proc.returncode != 33 or not m:
        raise RuntimeError(f"{binary} {guest_args}: status {proc.returncode}\n"
                           f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}")
    return elapsed, int(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--transport", choices=["mmio", "pci"], default="mmio")
    ap.add_argument("--machine", choices=["q35", "pc"], default="q35", help="for --transport pci")
    a = ap.parse_args()
    machine = "microvm" if a.transport == "mmio" else a.machine
    kernel = find_guest("virtio_net_bench.elf" if a.transport == "mmio" else "virtio_net_bench_pci.elf")
    port = echo_sink()
    vmms = [("rvmm", a.rvmm, "host"), ("QEMU", a.qemu, qemu_host.qemu_cpu(a.qemu))]
    print(f"virtio-{a.transport} on {machine}: {a.runs} alternating runs, medians of t(n) - t(0)")
    print("| workload | rvmm | QEMU | rvmm/QEMU | lost (rvmm, QEMU) |")
    print("|---|---|---|---|---|")
    for label, size, w, n in WORKLOADS:
        times = {name: {0: [], n: []} for name, _, _ in vmms}
        lost = {name: 0 for name, _, _ in vmms}
        for _ in range(a.runs):
            for name, binary, cpu in vmms:
                for count in (0, n):
                    t, l = run(binary, kernel, f"n={count} size={size} w={w} port={port}", cpu,
                                   machine)
                    times[name][count].append(t)
                    if count:
                        lost[name] += l
        rate = {}
        for name, _, _ in vmms:
            dt = statistics.median(times[name][n]) - statistics.median(times[name][0])
            rate[name] = n / dt
        fmt = lambda r: f"{r:,.0f} datagrams/s, {r * size / 1e6:.2f} MB/s"
        print(f"| {label} | {fmt(rate['rvmm'])} | {fmt(rate['QEMU'])} | "
              f"{rate['rvmm'] / rate['QEMU']:.2f} | {lost['rvmm']}, {lost['QEMU']} |", flush=True)


if __name__ == "__main__":
    main()
