#!/usr/bin/env python3
"""Snapshot save and restore times: rvmm and QEMU side by side on the same guest (docs/SNAPSHOT.md).

The guest is counter_fast.elf on microvm (or --machine pc / q35 with their default devices: the
standard VGA and the NIC on user networking): it prints "count N" at every ~1 ms LAPIC timer tick. For
each RAM size and run, each VMM in turn (alternating, these machines are noisy: only ratios from
one run mean anything):

* save:     QMP `migrate` sent to MIGRATION "completed" (events capability on); rvmm writes
            `file:PATH` (+ PATH.mem), QEMU 7.2 has no `file:` URI and gets `exec:cat > PATH`;
* restore:  exec of `VMM ... -incoming file:PATH` (QEMU: `-incoming "exec:cat PATH"`) to the first
            "count N" line on the serial port, which must be the count after the saved one: the
            time until the restored guest runs again (at most ~1 ms of it is the guest's tick);
* files:    bytes the snapshot takes on disk (rvmm's PATH.mem is sparse).

rvmm also runs with QEMU's transport (`exec:cat > PATH` / `-incoming "exec:cat PATH"`, RAM copied
from the stream instead of mapped), reported as rvmm-exec.

Each saved snapshot is restored --restores times (default 3) and the median restore kept.

Usage: benches/snapshot.py [--runs N] [--restores N] [--sizes 128M,2G,16G] [--rvmm PATH] [--qemu PATH]
                           [--dir DIR] [--machine microvm|pc|q35]
"""

import argparse
import glob
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import qemu_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_guest(name):
    hits = sorted(glob.glob(os.path.join(ROOT, "target", "*", "build", "rvmm-guests-*", "out", name))
                  + glob.glob(os.path.join(os.environ.get("CARGO_TARGET_DIR", "/nonexistent"), "*",
                                           "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"snapshot.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


class Qmp:
    def __init__(self, path):
        deadline = time.time() + 20
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.01)
        self.file = self.sock.makefile("rw")
        self.events = []
        self.read()
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.file.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            r = self.read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']['desc']}")
            self.events.append(r)

    def wait_migration(self, status):
        while True:
            for e in self.events:
                if e.get("event") == "MIGRATION" and e["data"]["status"] in (status, "failed"):
                    if e["data"]["status"] == "failed":
                        raise RuntimeError(f"migration failed: {self.cmd('query-migrate')}")
                    return
            self.events.append(self.read())


def wait_line(proc, prefix, timeout=60, after=None):
    """Read the VMM's stdout until a line starting with `prefix`; returns (line, buffer)."""
    buf = b""
    fd = proc.stdout.fileno()
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        r, _, _ = select.select([fd], [], [], max(left, 0))
        if not r:
            raise RuntimeError(f"no '{prefix.decode()}' line within {timeout} s; got {buf[-200:]!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"VMM exited (status {proc.wait()}) before '{prefix.decode()}'; got {buf[-300:]!r}")
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            if line.startswith(prefix) and (after is None or after(line)):
                return line, buf


def count_of(line):
    return int(line.split()[1])


MACHINE = "microvm"


def vm_args(kernel, mem, cpu):
    # microvm without devices; pc and q35 with their default ones (the standard VGA, the NIC on
    # user networking: rvmm's virtio-net-pci on passt, QEMU's e1000(e) on slirp).
    defaults = ["-nodefaults"] if MACHINE == "microvm" else []
    return ["-M", MACHINE, "-accel", "kvm", "-cpu", cpu, "-m", mem] + defaults + ["-no-reboot",
            "-display", "none", "-serial", "stdio", "-kernel", kernel]


def one(binary, is_qemu, kernel, mem, cpu, workdir, restores, exec_uri=False):
    """(save seconds, restore seconds, snapshot bytes on disk, boot seconds)."""
    exec_uri = exec_uri or is_qemu
    state = os.path.join(workdir, "qemu.state" if is_qemu else "rvmm.state")
    qmp_path = os.path.join(workdir, "bench.qmp")
    args = vm_args(kernel, mem, cpu)
    start = time.perf_counter()
    proc = subprocess.Popen([binary] + args + ["-qmp", f"unix:{qmp_path},server=on,wait=off"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_line(proc, b"count 1")
        boot = time.perf_counter() - start
        wait_line(proc, b"count 20")
        q = Qmp(qmp_path)
        q.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        uri = f"exec:cat > {state}" if exec_uri else f"file:{state}"
        start = time.perf_counter()
        q.cmd("migrate", {"uri": uri})
        q.wait_migration("completed")
        save = time.perf_counter() - start
        # The last count the source printed before it stopped.
        time.sleep(0.05)
        out = b""
        while select.select([proc.stdout], [], [], 0)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        q.cmd("quit")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    files = [state] + ([] if exec_uri else [state + ".mem"])
    disk = sum(os.stat(f).st_blocks * 512 for f in files)
    incoming = f"exec:cat {state}" if exec_uri else f"file:{state}"
    times = []
    for _ in range(restores):
        start = time.perf_counter()
        proc = subprocess.Popen([binary] + args + ["-incoming", incoming], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            line, buf = wait_line(proc, b"count ")
            times.append(time.perf_counter() - start)
            if b"counter: running" in buf:
                raise RuntimeError(f"{binary}: the guest booted again instead of being restored")
            if count_of(line) <= 20:
                raise RuntimeError(f"{binary}: restored guest printed {line!r}, the source was past count 20")
        finally:
            proc.kill()
            proc.wait()
    restore = statistics.median(times)
    for f in files:
        os.unlink(f)
    return save, restore, disk, boot


def fmt_t(s):
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--restores", type=int, default=3)
    ap.add_argument("--sizes", default="128M,2G,16G")
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--dir", default=None, help="where the snapshots go (default: a temporary directory in /tmp)")
    ap.add_argument("--machine", default="microvm",
                    help="microvm (no devices), or pc / q35 with their default devices")
    a = ap.parse_args()
    global MACHINE
    MACHINE = a.machine
    kernel = find_guest("counter_fast.elf")
    qemu_cpu = qemu_host.qemu_cpu(a.qemu)
    workdir = a.dir or tempfile.mkdtemp(prefix="rvmm-snapshot-bench-")
    os.makedirs(workdir, exist_ok=True)
    print(f"guest {kernel}\nrvmm {a.rvmm}\nqemu {a.qemu} (-cpu {qemu_cpu})\nsnapshots in {workdir}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    rows = []
    try:
        for size in a.sizes.split(","):
            res = {"rvmm": [], "qemu": [], "rvmm-exec": []}
            for run in range(a.runs):
                order = [("rvmm", a.rvmm, False, "host", False), ("qemu", a.qemu, True, qemu_cpu, True),
                         ("rvmm-exec", a.rvmm, False, "host", True)]
                if run % 2:
                    order.reverse()
                for name, binary, is_qemu, cpu, exec_uri in order:
                    r = one(binary, is_qemu, kernel, size, cpu, workdir, a.restores, exec_uri)
                    res[name].append(r)
                    print(f"{size:>5} run {run + 1} {name:4}: save {fmt_t(r[0])}, restore {fmt_t(r[1])}, "
                          f"on disk {r[2] / 2**20:.1f} MiB, boot {fmt_t(r[3])}", flush=True)
            med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in res.items()}
            rows.append((size, med))
    finally:
        if a.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedians of {a.runs} runs; ratio = QEMU / rvmm")
    print("| RAM | rvmm save | QEMU save | ratio | rvmm restore | QEMU restore | ratio | rvmm on disk | QEMU on disk "
          "| rvmm boot | QEMU boot |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, m in rows:
        r, q = m["rvmm"], m["qemu"]
        print(f"| {size} | {fmt_t(r[0])} | {fmt_t(q[0])} | {q[0] / r[0]:.1f} | {fmt_t(r[1])} | {fmt_t(q[1])} | "
              f"{q[1] / r[1]:.1f} | {r[2] / 2**20:.2f} MiB | {q[2] / 2**20:.1f} MiB | {fmt_t(r[3])} | {fmt_t(q[3])} |")
    print("\nrvmm with QEMU's transport (exec:cat)")
    print("| RAM | rvmm-exec save | QEMU save | ratio | rvmm-exec restore | QEMU restore | ratio |")
    print("|---|---|---|---|---|---|---|")
    for size, m in rows:
        r, q = m["rvmm-exec"], m["qemu"]
        print(f"| {size} | {fmt_t(r[0])} | {fmt_t(q[0])} | {q[0] / r[0]:.1f} | {fmt_t(r[1])} | {fmt_t(q[1])} | "
              f"{q[1] / r[1]:.1f} |")


if __name__ == "__main__":
    main()
