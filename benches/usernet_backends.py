#!/usr/bin/env python3
"""User-network back-ends side by side, without a guest: passt (what rvmm's -netdev user runs)
and QEMU 7.2's libslirp (QEMU's -netdev user), both fed Ethernet frames over QEMU's stream
protocol (4-byte big-endian length, then the frame).

passt runs as rvmm starts it (--fd on a socketpair, QEMU's 10.0.2.0/24 layout). libslirp runs
inside `qemu-system-x86_64 -machine none`, its -netdev user joined on a hub to a
-netdev stream server this script connects to. In both, this script plays the guest 10.0.2.15:
it sends UDP datagrams to 10.0.2.2 (the host: both map it to 127.0.0.1), a host socket echoes
them back, and the frames return over the stream. A window of WINDOW datagrams is kept in
flight. Reports datagrams/s and MB/s (UDP payload, both directions counted once) and the
ratio passt / slirp, per payload size.

Usage: benches/usernet_backends.py [--count N] [--sizes 64,1400] [--window W]
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

GUEST_MAC = bytes.fromhex("525400123456")
GUEST_IP = bytes([10, 0, 2, 15])
HOST_IP = bytes([10, 0, 2, 2])
GUEST_PORT = 40000


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def udp_frame(dst_mac, dport, payload):
    udp = struct.pack("!HHHH", GUEST_PORT, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     GUEST_IP, HOST_IP)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + GUEST_MAC + b"\x08\x00" + ip + udp


def arp(op, sha, spa, tha, tpa):
    return (tha if op == 2 else b"\xff" * 6) + sha + b"\x08\x06" + struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)


class Stream:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def send(self, frame):
        self.s.settimeout(None)
        self.s.sendall(struct.pack("!I", len(frame)) + frame)

    def recv(self, timeout):
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack("!I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    f, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return f
            try:
                d = self.s.recv(1 << 20)
            except socket.timeout:
                return None
            if not d:
                raise RuntimeError("backend closed the stream")
            self.buf += d


def echo_sink():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def run():
        while True:
            d, a = s.recvfrom(65536)
            s.sendto(d, a)
    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1]


def handle_arp(st, f):
    """Answer who-has 10.0.2.15; return the backend's MAC from any ARP it sent."""
    if f[12:14] != b"\x08\x06":
        return None
    op = struct.unpack("!H", f[20:22])[0]
    sha, spa, tpa = f[22:28], f[28:32], f[38:42]
    if op == 1 and tpa == GUEST_IP:
        st.send(arp(2, GUEST_MAC, GUEST_IP, sha, spa))
    return sha


def resolve_gateway(st):
    """ARP for 10.0.2.2 (slirp also learns the guest's MAC from it)."""
    for _ in range(50):
        st.send(arp(1, GUEST_MAC, GUEST_IP, b"\0" * 6, HOST_IP))
        end = time.time() + 0.2
        while time.time() < end:
            f = st.recv(0.1)
            if f and f[12:14] == b"\x08\x06" and struct.unpack("!H", f[20:22])[0] == 2 \
                    and f[28:32] == HOST_IP:
                return f[22:28]
            if f:
                handle_arp(st, f)
    raise RuntimeError("no ARP reply for 10.0.2.2")


def run_load(st, gw_mac, port, size, count, window):
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    frame = udp_frame(gw_mac, port, payload)
    sent = got = 0
    start = time.time()
    last = start
    while got < count:
        while sent < count and sent - got < window:
            st.send(frame)
            sent += 1
        f = st.recv(2.0)
        if f is None:
            # Lost datagrams (UDP): refill the window, count the loss.
            if time.time() - last > 2.0:
                break
            sent = got
            continue
        if f[12:14] == b"\x08\x00" and f[23] == 17:
            got += 1
            last = time.time()
        else:
            handle_arp(st, f)
    dt = time.time() - start
    return got, dt


def passt_stream():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    os.fchmod(w, 0o666)
    args = ["passt", "--foreground", "--quiet", "--ipv4-only", "--mtu", "65520",
            "--fd", str(b.fileno()), "--pid", "/proc/self/fd/%d" % w,
            "--address", "10.0.2.15", "--netmask", "24", "--gateway", "10.0.2.2",
            "--dns", "10.0.2.3", "--dns-forward", "10.0.2.3",
            "--mac-addr", "52:55:0a:00:02:02"]
    p = subprocess.Popen(args, pass_fds=[b.fileno(), w], stderr=subprocess.DEVNULL)
    b.close()
    os.close(w)
    if not os.read(r, 64):
        raise RuntimeError("passt did not start")
    return Stream(a), p


def slirp_stream(tmp):
    path = os.path.join(tmp, "slirp.sock")
    args = ["qemu-system-x86_64", "-machine", "none", "-msg", "timestamp=off", "-nodefaults", "-display", "none",
            "-netdev", "user,id=u",
            "-netdev", "stream,id=s,server=on,addr.type=unix,addr.path=" + path,
            "-netdev", "hubport,id=h1,hubid=0,netdev=u",
            "-netdev", "hubport,id=h2,hubid=0,netdev=s"]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return Stream(s), p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20000)
    # QEMU's slirp has a 1500-byte MTU: larger datagrams would be fragmented by the guest.
    ap.add_argument("--sizes", default="64,1400")
    ap.add_argument("--window", type=int, default=32)
    a = ap.parse_args()
    port = echo_sink()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("passt", passt_stream), ("slirp", lambda: slirp_stream(tmp))):
            st, proc = start()
            try:
                gw = resolve_gateway(st)
                # Warm up (slirp and passt set up their UDP flow on the first datagram).
                run_load(st, gw, port, 64, 200, 1)
                for size in map(int, a.sizes.split(",")):
                    got, dt = run_load(st, gw, port, size, a.count, a.window)
                    results[(name, size)] = (got / dt, got * size / dt / 1e6, got)
                    print(f"{name:5} {size:5}-byte UDP: {got / dt:9.0f} datagrams/s "
                          f"{got * size / dt / 1e6:8.2f} MB/s ({got}/{a.count} echoed)",
                          flush=True)
            finally:
                proc.kill()
                proc.wait()
    print("\nratio passt / slirp (datagrams/s, MB/s):")
    for size in map(int, a.sizes.split(",")):
        p, s = results[("passt", size)], results[("slirp", size)]
        print(f"  {size:5} bytes: {p[0] / s[0]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
