#!/usr/bin/env python3
"""VNC integration tests with a real client: vncdotool from PyPI (`pip install vncdotool`;
scripts/test.sh installs it) drives rvmm's VNC server; the guest kbdecho.elf echoes every byte
the i8042 delivers on serial, so typed keys and mouse motion are checked as the guest sees them.
Where QEMU defines the answer, the same steps run on qemu-system-x86_64 and the guest's bytes
must match.

Usage: test_vnc.py --vmm BIN --guests DIR [--qemu QEMU] [CASE ...]   (no CASE: all)
Run by tests/vnc.rs (one Rust test per case); exit status 0 only if every case passed.
"""

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings

warnings.filterwarnings("ignore")
try:
    from vncdotool import api
except ImportError:
    sys.exit("test_vnc.py: the vncdotool package is missing: pip install vncdotool")

TIMEOUT = 20.0
# QEMU boots the guest through SeaBIOS (seconds, many more on a loaded host where CPL0 is
# emulated): waits for the guest's first words get this long.
BOOT_TIMEOUT = 120.0
VMM = None
QEMU = None
GUESTS = None


class Vm:
    """A VMM running kbdecho.elf with serial on stdout (collected by a thread) and QMP."""

    def __init__(self, vmm, tmp, vnc=None, extra=(), guest="kbdecho.elf", name="vm"):
        self.vnc = os.path.join(tmp, f"{name}-vnc.sock")
        self.qmp = os.path.join(tmp, f"{name}-qmp.sock")
        qemu = "qemu" in os.path.basename(vmm)
        cpu = "host,-arch-capabilities" if qemu else "host"
        args = [vmm, "-M", "q35", "-accel", "kvm", "-cpu", cpu, "-m", "64", "-serial", "stdio",
                "-qmp", f"unix:{self.qmp},server=on,wait=off"]
        args.append("-nodefaults")
        if guest:
            args += ["-kernel", os.path.join(GUESTS, guest)]
        if qemu and "-vga" not in extra:
            # QEMU sends VNC keys to the PS/2 keyboard only while a graphic console is shown
            # (without one, to its text console); -display none: no GTK window.
            args += ["-vga", "std", "-display", "none"]
        if vnc is not False:
            args += ["-vnc", vnc or f"unix:{self.vnc}"]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out = bytearray()
        self.err = bytearray()
        self.lock = threading.Lock()
        for pipe, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(pipe, buf), daemon=True).start()

    def _collect(self, pipe, buf):
        while True:
            chunk = pipe.read1(4096)
            if not chunk:
                return
            with self.lock:
                buf.extend(chunk)

    def text(self, err=False):
        with self.lock:
            return bytes(self.err if err else self.out).decode(errors="replace")

    def wait_for(self, pattern, err=False, timeout=BOOT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text(err))
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} (exit {self.proc.poll()});\nstdout:\n"
                             f"{self.text()}\nstderr:\n{self.text(True)}")

    def bytes_seen(self):
        """The guest's echo: [("kbd"|"aux", byte), ...] after "ready"."""
        text = self.text().split("ready\n", 1)[-1]
        return [(m[0], int(m[1], 16)) for m in re.findall(r"^(kbd|aux) ([0-9a-f]{2})$", text, re.M)]

    def wait_bytes(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.bytes_seen()) < n:
            time.sleep(0.02)
        return self.bytes_seen()

    def wait_kbd(self, n, timeout=TIMEOUT):
        """The first n keyboard bytes (the mouse's ACK of kbdecho's enable may come later)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [b for b in self.bytes_seen() if b[0] == "kbd"]
            if len(got) >= n:
                break
            time.sleep(0.02)
        return [b for b in self.bytes_seen() if b[0] == "kbd"]

    def qmp_cmd(self, cmd, **args):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                s.connect(self.qmp)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        f = s.makefile("rwb")
        f.readline()
        for msg in ({"execute": "qmp_capabilities"}, {"execute": cmd, "arguments": args}):
            f.write(json.dumps(msg).encode() + b"\r\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "event" not in reply:
                    break
        s.close()
        return reply

    def write_stdin(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def screendump(self, path):
        """QMP screendump as PPM (tests/display.rs checks it against computed pixels):
        (width, height, [0xRRGGBB...])."""
        r = self.qmp_cmd("screendump", filename=path)
        assert r == {"return": {}}, r
        data = open(path, "rb").read()
        fields = data.split(maxsplit=4)
        assert fields[0] == b"P6" and fields[3] == b"255", fields[:4]
        w, h = int(fields[1]), int(fields[2])
        rgb = fields[4][-w * h * 3:]
        return w, h, [int.from_bytes(rgb[i:i + 3], "big") for i in range(0, len(rgb), 3)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def connect(addr, password=None):
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(addr) and ":" not in addr:
        if time.monotonic() > deadline:
            raise AssertionError(f"{addr} never appeared")
        time.sleep(0.02)
    return api.connect(addr, password=password, timeout=TIMEOUT)


def kbd(*codes):
    return [("kbd", c) for c in codes]


# Keys vncdotool sends as plain keysyms, and the set 1 bytes (the guest turns translation on)
# a US PC keyboard gives: the same on QEMU and rvmm.
# ("shift-b" would differ: QEMU then toggles Caps Lock to match a lower-case keysym under Shift.)
TYPED = [
    ("a", [0x1e, 0x9e]), ("z", [0x2c, 0xac]), ("1", [0x02, 0x82]), ("enter", [0x1c, 0x9c]),
    ("up", [0xe0, 0x48, 0xe0, 0xc8]), ("ctrl", [0x1d, 0x9d]), ("f1", [0x3b, 0xbb]),
    ("bsp", [0x0e, 0x8e]), ("shift-B", [0x2a, 0x30, 0xb0, 0xaa]),
    ("del", [0xe0, 0x53, 0xe0, 0xd3]), ("home", [0xe0, 0x47, 0xe0, 0xc7]), ("tab", [0x0f, 0x8f]),
]
TYPED_BYTES = kbd(*[b for _, codes in TYPED for b in codes])


def type_keys(vm, addr):
    """Types TYPED one key at a time, each once the guest has read the previous one (a PS/2
    keyboard holds 16 bytes, on QEMU as on rvmm)."""
    vm.wait_for(r"ready\n")
    base = len(vm.bytes_seen())
    with connect(addr) as c:
        want = base
        for k, codes in TYPED:
            c.keyPress(k)
            want += len(codes)
            vm.wait_bytes(want)
    return vm.bytes_seen()[base:]


def case_keys_reach_the_guest(tmp):
    vm = Vm(VMM, tmp)
    try:
        got = type_keys(vm, vm.vnc)
        assert got == TYPED_BYTES, f"rvmm: {got}"
        # An upper-case letter sent without Shift (vncdotool's "B") still types "B": rvmm
        # wraps it in a Shift press, as a US keyboard needs.
        base = len(vm.bytes_seen())
        with connect(vm.vnc) as c:
            c.keyPress("B")
            c.keyPress("!")
        got = vm.wait_bytes(base + 8)[base:]
        assert got == kbd(0x2a, 0x30, 0xaa, 0xb0, 0x2a, 0x02, 0xaa, 0x82), got
    finally:
        vm.stop()


def case_keys_match_qemu(tmp):
    if not QEMU:
        print("skipped: no QEMU")
        return
    vm = Vm(QEMU, tmp, name="qemu")
    try:
        got = type_keys(vm, vm.vnc)
    finally:
        vm.stop()
    assert got == TYPED_BYTES, f"QEMU gives {got}"


def case_send_key_and_input_send_event(tmp):
    """QMP send-key and input-send-event: the same bytes as QEMU where it is installed."""
    results = {}
    for name, vmm in (("rvmm", VMM), ("qemu", QEMU)):
        if not vmm:
            continue
        vm = Vm(vmm, tmp, vnc=False, extra=["-display", "none"] if vmm == VMM else [],
                name=name)
        try:
            vm.wait_for(r"ready\n")
            base = len(vm.bytes_seen())
            r = vm.qmp_cmd("send-key", keys=[{"type": "qcode", "data": "ctrl"},
                                             {"type": "qcode", "data": "alt"},
                                             {"type": "qcode", "data": "delete"}])
            assert r == {"return": {}}, r
            # QEMU sends a send-key's events on a timer: wait for them before the next command.
            vm.wait_bytes(base + 8)
            r = vm.qmp_cmd("send-key", keys=[{"type": "number", "data": 0x1e}])
            assert r == {"return": {}}, r
            vm.wait_bytes(base + 10)
            r = vm.qmp_cmd("input-send-event", events=[
                {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "kp_enter"}}},
                {"type": "key", "data": {"down": False, "key": {"type": "qcode", "data": "kp_enter"}}}])
            assert r == {"return": {}}, r
            results[name] = vm.wait_bytes(base + 14)[base:]
            r = vm.qmp_cmd("send-key", keys=[{"type": "qcode", "data": "nosuchkey"}])
            assert "error" in r, r
        finally:
            vm.stop()
    want = kbd(0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d, 0x1e, 0x9e, 0xe0, 0x1c, 0xe0, 0x9c)
    for name, got in results.items():
        assert got == want, f"{name}: {got}"


def case_mouse(tmp):
    """Pointer motion reaches the PS/2 mouse (the guest enabled it) as relative packets, the
    same as on QEMU."""
    for vmm in (VMM, QEMU):
        if not vmm:
            continue
        vm = Vm(vmm, tmp, name=os.path.basename(vmm))
        try:
            vm.wait_for(r"ready\n")
            base = len(vm.bytes_seen())
            # Each step waits for the guest (QEMU may merge events that arrive together).
            with connect(vm.vnc) as c:
                c.mouseMove(100, 100)
                c.mouseMove(110, 95)
                vm.wait_bytes(base + 3)
                c.mouseDown(1)
                vm.wait_bytes(base + 6)
                c.mouseUp(1)
                got = vm.wait_bytes(base + 9)[base:]
            # The first event only sets the position; then +10 right, 5 up; then the left
            # button down and up.
            want = [("aux", b) for b in (0x08, 10, 5, 0x09, 0, 0, 0x08, 0, 0)]
            assert got == want, f"{vmm}: {got}"
        finally:
            vm.stop()


def tablet_events(vm):
    """tablet.elf's echo after "ready": [(type, code, value), ...]."""
    text = vm.text().split("ready\n", 1)[-1]
    return [tuple(int(x, 16) for x in m) for m in
            re.findall(r"^ev (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)$", text, re.M)]


def wait_tablet(vm, n):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and len(tablet_events(vm)) < n:
        time.sleep(0.02)
    return tablet_events(vm)


EV_SYN, EV_KEY, EV_ABS, BTN_LEFT = 0, 1, 3, 0x110


def scaled(v, size):
    """QEMU's qemu_input_scale_axis from 0..size to 0..0x7fff."""
    return v * 0x7FFF // size


def case_tablet(tmp):
    """-device virtio-tablet-pci: once the guest's driver runs it, the VNC pointer reaches it as
    absolute positions scaled to the screen (not the PS/2 mouse), and QMP abs and btn events
    too; the guest (tablet.elf) reads the same config and gets the same reports on QEMU."""
    for vmm in (VMM, QEMU):
        if not vmm:
            continue
        name = os.path.basename(vmm)
        vm = Vm(vmm, tmp, guest="tablet.elf", extra=["-device", "virtio-tablet-pci"], name=name)
        try:
            vm.wait_for(r"ready\n")
            assert "tablet: name 'QEMU Virtio Tablet' xmax 0x7fff\n" in vm.text(), vm.text()
            with connect(vm.vnc) as c:
                c.refreshScreen()
                w, h = c.screen.size
                x, y = w // 3, h // 2
                c.mouseMove(x, y)
                wait_tablet(vm, 3)
                c.mouseDown(1)
                wait_tablet(vm, 7)
                c.mouseUp(1)
                got = wait_tablet(vm, 11)
            pos = [(EV_ABS, 0, scaled(x, w)), (EV_ABS, 1, scaled(y, h)), (EV_SYN, 0, 0)]
            want = pos + [(EV_KEY, BTN_LEFT, 1)] + pos + [(EV_KEY, BTN_LEFT, 0)] + pos
            assert got == want, f"{name} ({w}x{h}): {got}"
            r = vm.qmp_cmd("input-send-event", events=[
                {"type": "btn", "data": {"down": True, "button": "left"}},
                {"type": "abs", "data": {"axis": "x", "value": 0x1234}},
                {"type": "abs", "data": {"axis": "y", "value": 0x7fff}}])
            assert r == {"return": {}}, r
            got = wait_tablet(vm, 15)[11:]
            assert got == [(EV_KEY, BTN_LEFT, 1), (EV_ABS, 0, 0x1234), (EV_ABS, 1, 0x7FFF),
                           (EV_SYN, 0, 0)], f"{name}: {got}"
        finally:
            vm.stop()
    # Without an absolute device, QMP refuses abs events (QEMU's words).
    vm = Vm(VMM, tmp, vnc=False, extra=["-display", "none"], name="noabs")
    try:
        r = vm.qmp_cmd("input-send-event", events=[
            {"type": "abs", "data": {"axis": "x", "value": 1}}])
        assert r["error"]["desc"] == "Input handler not found for event type abs", r
    finally:
        vm.stop()


def case_virtio_keyboard_and_mouse(tmp):
    """-device virtio-keyboard-pci / virtio-mouse-pci: once their driver runs them, typed keys
    and pointer motion reach them (not the PS/2 devices) as the same events as on QEMU."""
    EV_REL = 2
    for vmm in (VMM, QEMU):
        if not vmm:
            continue
        name = os.path.basename(vmm)
        vm = Vm(vmm, tmp, guest="tablet.elf", extra=["-device", "virtio-keyboard-pci"],
                name=f"{name}-kbd")
        try:
            vm.wait_for(r"ready\n")
            assert "tablet: name 'QEMU Virtio Keyboard'" in vm.text(), vm.text()
            with connect(vm.vnc) as c:
                c.keyPress("a")
                got = wait_tablet(vm, 4)
            assert got == [(EV_KEY, 0x1e, 1), (EV_SYN, 0, 0), (EV_KEY, 0x1e, 0), (EV_SYN, 0, 0)], \
                f"{name}: {got}"
        finally:
            vm.stop()
        vm = Vm(vmm, tmp, guest="tablet.elf", extra=["-device", "virtio-mouse-pci"],
                name=f"{name}-mouse")
        try:
            vm.wait_for(r"ready\n")
            assert "tablet: name 'QEMU Virtio Mouse'" in vm.text(), vm.text()
            with connect(vm.vnc) as c:
                # The first position only sets the origin (no report, as on QEMU); then +10
                # right, 5 up.
                c.mouseMove(100, 100)
                c.mouseMove(110, 95)
                got = wait_tablet(vm, 3)
            assert got == [(EV_REL, 0, 10), (EV_REL, 1, 0xFFFFFFFB), (EV_SYN, 0, 0)], \
                f"{name}: {got}"
        finally:
            vm.stop()


def case_screen_and_resize(tmp):
    """The screen arrives whole in Raw and ZRLE (vncdotool decodes both); without a display
    device it is QEMU's 640x480, black."""
    vm = Vm(VMM, tmp)
    try:
        vm.wait_for(r"ready\n")
        for encoding in (0, 16):
            class Factory(api.VNCDoToolFactory):
                pass
            Factory.protocol = type("P", (Factory.protocol,), {"encoding": encoding})
            c = api.connect(vm.vnc, timeout=TIMEOUT, factory_class=Factory)
            try:
                c.refreshScreen()
                img = c.screen
                assert img.size == (640, 480), img.size
                assert img.convert("RGB").getextrema() == ((0, 0), (0, 0), (0, 0))
            finally:
                c.disconnect()
    finally:
        vm.stop()


def capture(client):
    """A full update's pixels: (width, height, [0xRRGGBB...])."""
    client.refreshScreen()
    img = client.screen.convert("RGB")
    w, h = img.size
    return w, h, [(r << 16) | (g << 8) | b for r, g, b in img.getdata()]


def first_difference(a, b):
    if a[:2] != b[:2]:
        return f"size {a[:2]} != {b[:2]}"
    for i, (p, q) in enumerate(zip(a[2], b[2])):
        if p != q:
            return f"pixel ({i % a[0]}, {i // a[0]}): {p:06x} != {q:06x}"
    return None


def vga_run(vmm, tmp, encoding):
    """Boots vgadisk (SeaBIOS, text mode, then a VBE mode) with -vga std and captures both
    screens over VNC with one client that stays connected across the mode switch."""
    disk = os.path.join(tmp, "vgadisk.img")
    with open(os.path.join(GUESTS, "vgadisk.bin"), "rb") as f:
        data = f.read()
    with open(disk, "wb") as f:
        f.write(data.ljust(1 << 20, b"\0"))
    name = os.path.basename(vmm)
    extra = ["-vga", "std", "-display", "none", "-drive", f"file={disk},format=raw,if=ide"]
    vm = Vm(vmm, tmp, guest=None, extra=extra, name=name)
    try:
        vm.wait_for(r"vgadisk: text ready")

        class Factory(api.VNCDoToolFactory):
            pass
        Factory.protocol = type("P", (Factory.protocol,), {"encoding": encoding})
        c = api.connect(vm.vnc, timeout=TIMEOUT, factory_class=Factory)
        try:
            text = capture(c)
            text_dump = vm.screendump(os.path.join(tmp, f"{name}-text.ppm"))
            vm.write_stdin(b"\n")
            vm.wait_for(r"vgadisk: vbe ready")
            vbe = capture(c)
            vbe_dump = vm.screendump(os.path.join(tmp, f"{name}-vbe.ppm"))
        finally:
            c.disconnect()
    finally:
        vm.stop()
    return text, text_dump, vbe, vbe_dump


BARS = [0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff, 0x804020]


def case_vga_screen_and_mode_switch(tmp):
    """The VGA's text screen and, after the guest's switch to a Bochs VBE mode, the resized
    screen arrive pixel for pixel (ZRLE and Raw): the same as QMP screendump (which
    tests/display.rs checks against pixels computed from the VGA BIOS font), the VBE bars as
    the guest draws them, and the same as QEMU's VNC server shows."""
    results = {}
    for vmm, encoding in ((VMM, 16), (VMM, 0), (QEMU, 16)):
        if not vmm:
            continue
        text, text_dump, vbe, vbe_dump = vga_run(vmm, tmp, encoding)
        assert text[:2] == (720, 400), text[:2]
        assert vbe[:2] == (320, 200), f"the client was not resized: {vbe[:2]}"
        for what, got, dump in (("text", text, text_dump), ("vbe", vbe, vbe_dump)):
            diff = first_difference(got, dump)
            assert diff is None, f"{vmm} encoding {encoding}: {what} capture vs screendump: {diff}"
        bars = (320, 200, [BARS[(x // 40 + y // 25) & 7] for y in range(200) for x in range(320)])
        assert first_difference(vbe, bars) is None, first_difference(vbe, bars)
        results[(vmm, encoding)] = (text, vbe)
    if QEMU:
        for what, i in (("text", 0), ("vbe", 1)):
            diff = first_difference(results[(VMM, 16)][i], results[(QEMU, 16)][i])
            assert diff is None, f"{what}: rvmm vs QEMU: {diff}"


def case_seabios_boot_menu(tmp):
    """SeaBIOS sets up the PS/2 keyboard (the DSDT announces it, as QEMU's does) and takes ESC
    typed in the VNC client: its boot menu appears on the serial console."""
    disk = os.path.join(tmp, "vgadisk.img")
    with open(os.path.join(GUESTS, "vgadisk.bin"), "rb") as f:
        data = f.read()
    with open(disk, "wb") as f:
        f.write(data.ljust(1 << 20, b"\0"))
    vm = Vm(VMM, tmp, guest=None, extra=["-vga", "std", "-boot", "menu=on,splash-time=20000",
                                          "-drive", f"file={disk},format=raw,if=ide"])
    try:
        vm.wait_for(r"Press ESC for boot menu")
        with connect(vm.vnc) as c:
            # SeaBIOS may still be setting the keyboard up (it drops keys until then).
            deadline = time.monotonic() + BOOT_TIMEOUT
            while "Select boot device" not in vm.text():
                assert time.monotonic() < deadline, vm.text()
                assert "vgadisk: text ready" not in vm.text(), f"booted past the menu: {vm.text()}"
                c.keyPress("esc")
                time.sleep(0.5)
    finally:
        vm.stop()


def case_password(tmp):
    vm = Vm(VMM, tmp, vnc=f"unix:{os.path.join(tmp, 'vm-vnc.sock')},password=on")
    try:
        vm.wait_for(r"ready\n")
        info = vm.qmp_cmd("query-vnc")["return"]
        assert info["enabled"] and info["auth"] == "vnc" and info["family"] == "unix", info
        # No password set yet: every attempt fails.
        for pw in (None, "", "secret"):
            try:
                connect(vm.vnc, password=pw).refreshScreen()
                raise AssertionError(f"password {pw!r} accepted before one was set")
            except AssertionError:
                raise
            except Exception:
                pass
        assert vm.qmp_cmd("change-vnc-password", password="secret") == {"return": {}}
        try:
            connect(vm.vnc, password="wrong").refreshScreen()
            raise AssertionError("wrong password accepted")
        except AssertionError:
            raise
        except Exception:
            pass
        with connect(vm.vnc, password="secret") as c:
            c.keyPress("a")
            info = vm.qmp_cmd("query-vnc")["return"]
            assert len(info["clients"]) == 1, info
        got = vm.wait_kbd(2)
        assert got == kbd(0x1e, 0x9e), (got, vm.text())
    finally:
        vm.stop()
    # Without password=on there is nothing to change (QEMU refuses too).
    vm = Vm(VMM, tmp, name="nopw")
    try:
        r = vm.qmp_cmd("change-vnc-password", password="x")
        assert r["error"]["class"] == "GenericError", r
    finally:
        vm.stop()


def case_default_display_and_several_clients(tmp):
    """No -display: VNC on localhost, announced on stderr; several clients at once."""
    vm = Vm(VMM, tmp, vnc=False)
    try:
        m = vm.wait_for(r"VNC server running on 127\.0\.0\.1:(\d+)\n", err=True)
        port = int(m[1])
        assert 5900 <= port <= 5999, port
        info = vm.qmp_cmd("query-vnc")["return"]
        assert (info["host"], info["service"], info["family"]) == ("127.0.0.1", str(port), "ipv4")
        vm.wait_for(r"ready\n")
        addr = f"127.0.0.1::{port}"
        with connect(addr) as a, connect(addr) as b:
            a.keyPress("a")
            b.keyPress("z")
            a.refreshScreen()
            b.refreshScreen()
            assert a.screen.size == b.screen.size == (640, 480)
            clients = vm.qmp_cmd("query-vnc")["return"]["clients"]
            assert len(clients) == 2, clients
        got = [b for b in vm.wait_bytes(5) if b[0] == "kbd"]
        assert sorted(got) == sorted(kbd(0x1e, 0x9e, 0x2c, 0xac)), got
    finally:
        vm.stop()
    # -display none and -nographic: no server.
    for opt in (["-display", "none"], ["-nographic"]):
        vm = Vm(VMM, tmp, vnc=False, extra=opt, name="none")
        try:
            vm.wait_for(r"ready\n")
            assert "VNC" not in vm.text(True), vm.text(True)
            assert vm.qmp_cmd("query-vnc")["return"] == {"enabled": False}
        finally:
            vm.stop()


def rfb_handshake(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(TIMEOUT)
    s.connect(path)
    assert s.recv(12) == b"RFB 003.008\n"
    s.sendall(b"RFB 003.008\n")
    assert s.recv(2) == b"\x01\x01"
    s.sendall(b"\x01")
    assert s.recv(4) == b"\0\0\0\0"
    s.sendall(b"\x01")
    init = b""
    while len(init) < 24:
        init += s.recv(24 - len(init))
    name_len = struct.unpack(">I", init[20:24])[0]
    while name_len:
        name_len -= len(s.recv(name_len))
    return s


def closed(s):
    """Reads until the server closes the connection; False on a timeout."""
    try:
        while s.recv(65536):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


def case_hostile_clients(tmp):
    """Malformed messages, huge cut text, garbage versions and update floods: disconnects or
    coalesced updates, never a crash or a hang; a proper client still works afterwards."""
    vm = Vm(VMM, tmp)
    try:
        vm.wait_for(r"ready\n")
        s = rfb_handshake(vm.vnc)
        s.sendall(b"\x2a" * 100)
        assert closed(s), "unknown message type: disconnected"
        s = rfb_handshake(vm.vnc)
        s.sendall(struct.pack(">BxxxI", 6, 0x7fffffff) + b"x" * 1000)
        assert closed(s), "huge ClientCutText: disconnected"
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        s.connect(vm.vnc)
        s.recv(12)
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert closed(s), "not RFB: disconnected"
        # A flood of update requests: answered by coalesced updates, not one each.
        s = rfb_handshake(vm.vnc)
        s.sendall(struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480) * 20000)
        s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, 640, 480))
        s.settimeout(2)
        total = 0
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
        except socket.timeout:
            pass
        assert 0 < total < 10 * 640 * 480 * 4, total
        s.close()
        # Many connections at once: beyond the limit they are closed, the server goes on.
        socks = []
        for _ in range(40):
            c = socket.socket(socket.AF_UNIX)
            c.connect(vm.vnc)
            socks.append(c)
        for c in socks:
            c.close()
        # The refused and the closed connections' threads end; then a client gets in again.
        time.sleep(1)
        with connect(vm.vnc) as c:
            c.keyPress("a")
        got = vm.wait_bytes(2)
        assert got[-2:] == kbd(0x1e, 0x9e), got
        assert vm.proc.poll() is None
    finally:
        vm.stop()


CASES = {name[len("case_"):]: f for name, f in globals().items() if name.startswith("case_")}


def main():
    global VMM, QEMU, GUESTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guests", required=True)
    ap.add_argument("--qemu")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    VMM, QEMU, GUESTS = a.vmm, a.qemu, a.guests
    names = a.cases or list(CASES)
    failed = []
    for name in names:
        if name not in CASES:
            sys.exit(f"unknown case {name}; cases: {', '.join(CASES)}")
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="rvmm-vnc-") as tmp:
            try:
                CASES[name](tmp)
                print(f"ok   {name} ({time.monotonic() - start:.1f} s)")
            except Exception:  # report every failure, keep going
                failed.append(name)
                print(f"FAIL {name}\n{traceback.format_exc()}")
    api.shutdown()
    if failed:
        print(f"{len(failed)} of {len(names)} failed: {' '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
