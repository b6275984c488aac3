#!/usr/bin/env python3
"""VNC cost per update: rvmm and QEMU side by side on the same guest and the same client.

The guest (guests/src/vgabench.S, a boot sector under SeaBIOS and the VGA BIOS, `-vga std`) sets
the Bochs VBE mode 1024x768x32 and fills it: the top half with a many-coloured pattern, the bottom
half flat, like a window over a desktop. Each byte sent to its serial port repaints one 32x32
block. A minimal RFB 3.8 client (this script, over the VNC server's Unix socket) measures, for
the encodings both servers offer (ZRLE, Raw):

* full:  a non-incremental update of the whole screen: bytes received, and milliseconds from
         the request to the update's last byte (the server's render and encode, and the copy);
* small: one 32x32 block repainted by the guest: bytes of the incremental update that carries
         it, and milliseconds from the serial byte to the update's last byte (includes the guest
         drawing and each server's refresh period, 30 ms in both).

Both VMMs run the same command line in alternating order (these machines are noisy: only ratios
from one run mean anything); each figure is the median of --runs rounds.

Usage: benches/display.py [--runs N] [--rvmm PATH] [--qemu PATH]
The guest comes from the rvmm-guests build (target/*/build/rvmm-guests-*/out).
"""

import argparse
import glob
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import qemu_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT_TIMEOUT = 180.0
ENCODINGS = {"zrle": 16, "raw": 0}
DESKTOP_SIZE = -223


def find_guest(name):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    hits = sorted(glob.glob(os.path.join(target, "*", "build", "rvmm-guests-*", "out", name)),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"display.py: guest {name} not built; run `cargo build --release` first")
    return hits[-1]


class Vm:
    def __init__(self, vmm, cpu, disk, tmp, tag):
        self.sock = os.path.join(tmp, f"{tag}.vnc")
        self.proc = subprocess.Popen(
            [vmm, "-M", "q35", "-accel", "kvm", "-cpu", cpu, "-m", "256", "-nodefaults",
             "-vga", "std", "-display", "none", "-serial", "stdio",
             "-drive", f"file={disk},format=raw,if=ide", "-vnc", f"unix:{self.sock}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.out = b""

    def wait_line(self, text, timeout=BOOT_TIMEOUT):
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                self.out += chunk
            if text.encode() in self.out:
                self.out = self.out.split(text.encode(), 1)[1]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.002)
        sys.exit(f"display.py: no {text!r} from {self.proc.args[0]}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Client:
    """Just enough RFB 3.8 to request updates and count their bytes (nothing is decoded)."""

    def __init__(self, path, encoding):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""
        assert self.read(12).startswith(b"RFB 003.")
        self.s.sendall(b"RFB 003.008\n")
        n = self.read(1)[0]
        assert 1 in self.read(n), "security None offered"
        self.s.sendall(b"\x01")
        assert self.read(4) == b"\0\0\0\0"
        self.s.sendall(b"\x01")
        init = self.read(24)
        self.width, self.height = struct.unpack(">HH", init[:4])
        self.read(struct.unpack(">I", init[20:24])[0])
        # 32 bpp, depth 24, little endian, true colour, 0x00RRGGBB: both servers' native one.
        pf = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        self.s.sendall(b"\x00\x00\x00\x00" + pf)
        self.s.sendall(struct.pack(">BxH", 2, 2) + struct.pack(">ii", encoding, DESKTOP_SIZE))

    def read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(self, incremental):
        self.s.sendall(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def update(self):
        """Reads one FramebufferUpdate; returns (bytes, pixels covered)."""
        while True:
            t = self.read(1)[0]
            if t == 0:
                break
            if t == 2:  # Bell
                continue
            if t == 3:  # ServerCutText
                self.read(3)
                self.read(struct.unpack(">I", self.read(4))[0])
                continue
            raise ValueError(f"unexpected server message {t}")
        size = 4
        n = struct.unpack(">xH", self.read(3))[0]
        covered = 0
        for _ in range(n):
            x, y, w, h, enc = struct.unpack(">HHHHi", self.read(12))
            size += 12
            if enc == 0:
                self.read(w * h * 4)
                size += w * h * 4
            elif enc == 16:
                length = struct.unpack(">I", self.read(4))[0]
                self.read(length)
                size += 4 + length
            elif enc == DESKTOP_SIZE:
                self.width, self.height = w, h
                continue
            else:
                raise ValueError(f"unexpected encoding {enc}")
            covered += w * h
        return size, covered

    def full_update(self):
        start = time.monotonic()
        self.request(False)
        size, covered = 0, 0
        # The whole screen, possibly over several updates (QEMU splits large ones).
        while covered < self.width * self.height:
            s, c = self.update()
            size += s
            covered += c
            if covered < self.width * self.height:
                self.request(True)
        return size, (time.monotonic() - start) * 1000

    def close(self):
        self.s.close()


def measure(vm, encoding, runs):
    c = Client(vm.sock, encoding)
    try:
        # A first full update brings the client to the 1024x768 mode.
        c.full_update()
        assert (c.width, c.height) == (1024, 768), (c.width, c.height)
        full = [c.full_update() for _ in range(runs)]
        small = []
        for _ in range(runs):
            c.request(True)
            start = time.monotonic()
            vm.proc.stdin.write(b"x")
            vm.proc.stdin.flush()
            size = 0
            while True:
                s, covered = c.update()
                size += s
                if covered:
                    break
                c.request(True)
            small.append((size, (time.monotonic() - start) * 1000))
            vm.wait_line("vgabench: changed")
        return full, small
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rvmm", default=os.path.join(ROOT, "target", "release", "rvmm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    if not os.path.exists(a.rvmm):
        sys.exit(f"display.py: {a.rvmm} missing; run `cargo build --release` first")
    guest = find_guest("vgabench.bin")
    vmms = [("rvmm", a.rvmm, "host"), ("qemu", a.qemu, qemu_host.qemu_cpu(a.qemu))]
    results = {}
    with tempfile.TemporaryDirectory(prefix="rvmm-display-") as tmp:
        disk = os.path.join(tmp, "vgabench.img")
        with open(guest, "rb") as f, open(disk, "wb") as out:
            out.write(f.read().ljust(1 << 20, b"\0"))
        for name, vmm, cpu in vmms:
            vm = Vm(vmm, cpu, disk, tmp, name)
            try:
                vm.wait_line("vgabench: ready")
                for enc_name, enc in ENCODINGS.items():
                    results[(name, enc_name)] = measure(vm, enc, a.runs)
            finally:
                vm.stop()
    print(f"VNC update cost, 1024x768x32 VBE screen, median of {a.runs}; rvmm / QEMU ratios")
    print(f"{'':6} {'':6} {'rvmm bytes':>11} {'QEMU bytes':>11} {'ratio':>6}"
          f" {'rvmm ms':>8} {'QEMU ms':>8} {'ratio':>6}")
    for enc_name in ENCODINGS:
        for i, what in enumerate(("full", "small")):
            r = results[("rvmm", enc_name)][i]
            q = results[("qemu", enc_name)][i]
            rb = statistics.median(x[0] for x in r)
            qb = statistics.median(x[0] for x in q)
            rm = statistics.median(x[1] for x in r)
            qm = statistics.median(x[1] for x in q)
            print(f"{enc_name:6} {what:6} {rb:11.0f} {qb:11.0f} {rb / qb:6.2f}"
                  f" {rm:8.1f} {qm:8.1f} {rm / qm:6.2f}")


if __name__ == "__main__":
    main()
