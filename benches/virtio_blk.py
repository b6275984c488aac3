#!/usr/bin/env python3
"""virtio-blk read throughput: rvmm and QEMU side by side on the same image and guest, over
virtio-mmio on microvm (the default) or, with --transport pci, over modern virtio-pci on q35
(guest virtio_bench_pci.elf, `-device virtio-blk-pci,disable-legacy=on` on both VMMs; QEMU runs
SeaBIOS before the guest, which the n=0 runs subtract).

The guest (guests/src/virtio_bench.S) sets up the first virtio-blk device, then runs a polling
driver in ring 3 (sysexit): it keeps `qd` read requests of `bs` bytes in flight (random 4 KiB-
aligned sectors, or sequential), polls the used ring, and exits through isa-debug-exit after n
requests. Boot and teardown cost is removed by also timing n=0 runs:
rate = n / (t(n) - t(0)), medians of alternating runs. The image is a raw file of random data
(page-cached after the first run, default cache mode on both VMMs), or with --format qcow2 the
same data converted to a fully allocated qcow2 (64 KiB clusters). QEMU runs with its defaults:
aio=threads, cache=writeback, no iothread, one queue (num-queues is the vCPU count, 1 here).
Each workload's per-pass ratio is printed; --passes P repeats the whole table.

Usage: benches/virtio_blk.py [--runs R] [--image PATH] [--size-mib M] [--rvmm PATH] [--qemu PATH]
       [--baseline OTHER_RVMM] [--transport mmio|pci] [--machine q35|pc] [--scale F]
       [--format raw|qcow2] [--passes P] [--only SUBSTRING]
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

# (label, guest arguments without n=, requests per run, bytes per request)
WORKLOADS = [
    ("4 KiB random read, QD 1", "bs=4096 qd=1", 40000, 4096),
    ("4 KiB random read, QD 8", "bs=4096 qd=8", 40000, 4096),
    ("128 KiB sequential read, QD 1", "bs=131072 qd=1 seq", 8000, 131072),
    ("128 KiB sequential read, QD 4", "bs=131072 qd=4 seq", 8000, 131072),
]


def find_guest(name):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    hits = sorted(glob.glob(os.path.join(target, "*", "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"virtio_blk.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


def run(name, binary, kernel, image, guest_args, cpu="host", machine="microvm", fmt="raw"):
    device = "virtio-blk-device,drive=d0"
    if machine != "microvm":
        # Modern only on both: QEMU's virtio-blk-pci is transitional by default.
        device = "virtio-blk-pci,drive=d0,disable-legacy=on"
    args = [binary, "-M", machine, "-accel", "kvm", "-cpu", cpu, "-m", "256", "-nodefaults",
            "-no-reboot", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", kernel,
            "-drive", f"file={image},format={fmt},if=none,id=d0", "-device", device,
            "-append", guest_args]
    if "qemu" in os.path.basename(binary) and machine == "microvm":
        # QEMU's virtio-mmio is legacy (version 1) unless told otherwise; the guest is modern-only.
        args += ["-global", "virtio-mmio.force-legacy=false"]
    start = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 33 or b"virtio_bench: errors 0" not in proc.stdout:
        raise RuntimeError(f"{binary} {guest_args}: status {proc.returncode}\n"
                           f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", default="/tmp/rvmm-virtio-bench.raw")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--baseline", help="another rvmm binary to compare (e.g. before a change)")
    ap.add_argument("--transport", choices=["mmio", "pci"], default="mmio")
    ap.add_argument("--machine", choices=["q35", "pc"], default="q35", help="for --transport pci")
    ap.add_argument("--scale", type=float,
                    help="multiply each workload's request count (default 1; 3 with --transport pci, "
                         "where QEMU's firmware start makes t(0) noisier)")
    ap.add_argument("--format", choices=["raw", "qcow2"], default="raw")
    ap.add_argument("--passes", type=int, default=1, help="repeat the whole table")
    ap.add_argument("--only", help="run only the workloads whose label contains this")
    a = ap.parse_args()
    scale = a.scale if a.scale else (3 if a.transport == "pci" else 1)
    machine = "microvm" if a.transport == "mmio" else a.machine
    kernel = find_guest("virtio_bench.elf" if a.transport == "mmio" else "virtio_bench_pci.elf")
    if not os.path.exists(a.image) or os.path.getsize(a.image) != a.size_mib << 20:
        with open(a.image, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
    image = a.image
    if a.format == "qcow2":
        image = a.image + ".qcow2"
        if not os.path.exists(image) or os.path.getmtime(image) < os.path.getmtime(a.image):
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", a.image, image],
                           check=True)
    vmms = [("rvmm", a.rvmm), ("QEMU", a.qemu)]
    qemu_cpu = qemu_host.qemu_cpu(a.qemu)
    if a.baseline:
        vmms.append(("baseline", a.baseline))
    extra = " | baseline | rvmm/baseline" if a.baseline else ""
    print(f"virtio-{a.transport} on {machine}: {a.size_mib} MiB {a.format} image, {a.runs} alternating "
          f"runs, medians of t(n) - t(0), load average {os.getloadavg()[0]:.1f}")
    for p in range(a.passes):
        print(f"\npass {p + 1} (load average {os.getloadavg()[0]:.1f})")
        table(a, vmms, kernel, image, machine, scale, qemu_cpu, extra)


def table(a, vmms, kernel, image, machine, scale, qemu_cpu, extra):
    print(f"| workload | rvmm | QEMU | rvmm/QEMU{extra} |")
    print("|---|---|---|---" + ("|---|---" if a.baseline else "") + "|")
    for label, guest_args, n, bs in WORKLOADS:
        if a.only and a.only not in label:
            continue
        n = int(n * scale)
        times = {name: {0: [], n: []} for name, _ in vmms}
        for _ in range(a.runs):
            for name, binary in vmms:
                for count in (0, n):
                    times[name][count].append(run(name, binary, kernel, image, f"n={count} {guest_args}",
                                                  qemu_cpu if name == "QEMU" else "host", machine,
                                                  a.format))
        rate = {}
        for name, _ in vmms:
            dt = statistics.median(times[name][n]) - statistics.median(times[name][0])
            rate[name] = n / dt
        if bs >= 65536:
            fmt = lambda r: f"{r * bs / (1 << 20):,.0f} MiB/s"
        else:
            fmt = lambda r: f"{r:,.0f} IOPS"
        cols = f"| {label} | {fmt(rate['rvmm'])} | {fmt(rate['QEMU'])} | {rate['rvmm'] / rate['QEMU']:.2f} |"
        if a.baseline:
            cols += f" {fmt(rate['baseline'])} | {rate['rvmm'] / rate['baseline']:.2f} |"
        print(cols, flush=True)


if __name__ == "__main__":
    main()
