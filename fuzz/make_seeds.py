#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/TARGET/ (docs/FUZZING.md).

Usage: fuzz/make_seeds.py GUESTS_OUT_DIR
GUESTS_OUT_DIR holds the built test guests (rvmm-guests' build output, `rvmm_guests::path`);
qemu-img makes the disk images. The seeds are small and kept in the repository; rerun this only
when a target's input layout changes.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def access(device, offset, width, write=False, data=b""):
    """One rvmm_fuzz::Access: device, flags (bit 0 write, bits 1-3 width - 1), u32 offset."""
    flags = (1 if write else 0) | ((width - 1) << 1)
    out = struct.pack("<BBI", device, flags, offset)
    if write:
        out += data.ljust(width, b"\0")[:width]
    return out


def mem_prefix(mem=b""):
    return struct.pack("<H", len(mem)) + mem


def cli_args():
    lines = [
        ["-M", "microvm", "-m", "64M", "-kernel", "k.elf", "-append", "console=ttyS0",
         "-nographic", "-no-reboot"],
        ["-machine", "q35,accel=kvm", "-smp", "2,sockets=1,cores=2", "-cpu",
         "host,-arch-capabilities", "-m", "size=1G", "-drive",
         "file=disk.qcow2,if=none,id=d0,format=qcow2,cache=none", "-device",
         "virtio-blk-pci,drive=d0,serial=abc", "-qmp", "unix:/tmp/q.sock,server=on,wait=off"],
        ["-M", "pc", "-hda", "a.img", "-cdrom", "c.iso", "-boot", "order=dc,menu=on",
         "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device",
         "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56", "-serial", "stdio", "-S"],
        ["-smbios", "type=1,manufacturer=rvmm,uuid=12345678-1234-1234-1234-123456789abc",
         "-global", "kvm-pit.lost_tick_policy=discard", "-device",
         "isa-debug-exit,iobase=0xf4,iosize=4", "-snapshot", "-rtc", "base=utc"],
        ["-version"],
        ["-cpu", "help"],
    ]
    for i, argv in enumerate(lines):
        put("cli_args", f"argv{i}", b"\0".join(a.encode() for a in argv))


def qemu_opts():
    for i, (implied, text) in enumerate([
        (2, "disk.img,if=virtio,format=raw,cache=none,file.locking=off"),
        (1, "q35,accel=kvm,kernel-irqchip=split,memory-backend=ram0"),
        (0, "size=2G,slots=4,maxmem=8G"),
        (3, "a,,b=c,help"),
        (0, "cpus=4,sockets=2,dies=1,cores=2,threads=1,maxcpus=8"),
    ]):
        put("qemu_opts", f"opts{i}", bytes([implied]) + text.encode())


def kernel_loader(guests):
    def guest(name):
        with open(os.path.join(guests, name), "rb") as f:
            return f.read()

    ram64 = 2 << 3  # bits 3-4: 64 MiB
    for name in ["pvh32.elf", "pvh64.elf", "vmlinux64.elf", "multiboot.elf",
                 "multiboot_aout.bin", "bzimage.bin", "bzimage_gzip.bin"]:
        put("kernel_loader", name, bytes([ram64]) + guest(name))
    initrd = b"initrd!" * 16
    cmdline = b"console=ttyS0 panic=-1"
    with_all = bytes([ram64 | 2 | 4]) + struct.pack("<H", len(initrd)) + initrd
    with_all += bytes([len(cmdline)]) + cmdline
    put("kernel_loader", "bzimage_gzip_initrd_cmdline", with_all + guest("bzimage_gzip.bin"))
    put("kernel_loader", "bzimage_guest_decompress", bytes([ram64 | 1]) + guest("bzimage_gzip.bin"))
    put("kernel_loader", "pvh64_modules", with_all + guest("pvh64.elf"))
    put("kernel_loader", "multiboot_modules", with_all + guest("multiboot.elf"))


def block_image():
    offsets = struct.pack("<QQQQ", 0, 65536 + 512, 1 << 20, 3 << 30)
    with tempfile.TemporaryDirectory() as tmp:
        def io(path, cmd):
            subprocess.run(["qemu-io", "-c", cmd, path], check=True, capture_output=True)

        plain = os.path.join(tmp, "plain.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
                        plain, "1M"], check=True)
        if shutil.which("qemu-io"):
            io(plain, "write -P 0x5a 0 8k")
            io(plain, "write -z 64k 4k")
        small = os.path.join(tmp, "small.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                        "cluster_size=512,refcount_bits=1", small, "64k"], check=True)
        backed = os.path.join(tmp, "backed.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-o", "cluster_size=512", "-F", "raw", "-b",
                        "missing-backing.raw", backed, "1M"], check=True)
        v2 = os.path.join(tmp, "v2.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=512",
                        v2, "1M"], check=True)
        raw = os.path.join(tmp, "data.raw")
        with open(raw, "wb") as f:
            f.write(bytes(range(256)) * 16)
        compressed = os.path.join(tmp, "compressed.qcow2")
        subprocess.run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
                        "cluster_size=4096", raw, compressed], check=True)
        for flags, name in [(0, "plain.qcow2"), (2 | 4, "plain.qcow2"), (2, "small.qcow2"),
                            (0, "backed.qcow2"), (4, "v2.qcow2"), (2, "compressed.qcow2"),
                            (1 | 4, "data.raw"), (0, "data.raw")]:
            with open(os.path.join(tmp, name), "rb") as f:
                put("block_image", f"{flags}-{name.replace('.', '-')}", bytes([flags]) + offsets + f.read())


def qmp_stream():
    cmds = [
        b'{"execute": "qmp_capabilities"}\r\n{"execute": "query-status"}\r\n',
        b'{"execute":"query-version","id":1}{"execute":"stop","id":"a"}\n{"execute":"cont"}',
        b'{"execute": "human-monitor-command", "arguments": {"command-line": "info registers"}}',
        b'{"execute": "screendump", "arguments": {"filename": "/tmp/x.ppm", "format": "png"}}',
        b'{"execute": bad}\n{"execute": "system_reset", "id": [1, {"x": null}]}\n',
        b'[1, 2]\n"text"\n{"execute": "quit", "extra": 1}\n{"arguments": {}}\n',
    ]
    for i, c in enumerate(cmds):
        put("qmp_stream", f"req{i}", bytes([[0, 3, 15, 255, 7, 1][i]]) + c)


def legacy_devices():
    # fw_cfg: select the signature, read it; the DMA interface with a descriptor at 0x100.
    sig = access(7, 0, 2, True, struct.pack("<H", 0)) + b"".join(access(7, 1, 1) for _ in range(4))
    put("legacy_devices", "fwcfg_signature", mem_prefix() + sig)
    desc = struct.pack(">IIQ", (0x19 << 16) | 0x8 | 0x2, 64, 0x200)  # select dir, read
    dma = access(6, 4, 4, True, struct.pack(">I", 0x100))
    put("legacy_devices", "fwcfg_dma", mem_prefix(b"\0" * 0x100 + desc) + dma + access(6, 0, 4))
    # CMOS: read seconds, status A-D, write status B; i8042 commands; COM1 and PM.
    cmos = b"".join(access(0, 0, 1, True, bytes([r])) + access(0, 1, 1) for r in [0, 0xa, 0xb, 0xc, 0xd, 0x10])
    cmos += access(0, 0, 1, True, b"\x0b") + access(0, 1, 1, True, b"\x42")
    put("legacy_devices", "cmos", mem_prefix() + cmos)
    kbd = access(2, 0, 1, True, b"\x20") + access(1, 0, 1) + access(2, 0, 1, True, b"\x60")
    kbd += access(1, 0, 1, True, b"\x47") + access(1, 0, 1, True, b"\xff") + access(1, 0, 1)
    kbd += access(2, 0, 1, True, b"\xd4") + access(1, 0, 1, True, b"\xf4") + access(2, 0, 1)
    put("legacy_devices", "i8042", mem_prefix() + kbd)
    com = access(3, 3, 1, True, b"\x80") + access(3, 0, 1, True, b"\x01") + access(3, 3, 1, True, b"\x03")
    com += access(3, 1, 1, True, b"\x0f") + access(3, 0, 1, True, b"A") + access(3, 5, 1) + access(3, 2, 1)
    put("legacy_devices", "serial", mem_prefix() + com)
    pm = access(4, 2, 2, True, b"\x21\x01") + access(4, 0, 2) + access(4, 8, 4) + access(4, 4, 2, True, b"\x00\x20")
    put("legacy_devices", "acpi_pm", mem_prefix() + pm)
    io = access(5, 0, 4, True, b"\x10") + access(5, 0x10, 4, True, b"\x30\x00\x00\x00") + access(5, 0x10, 4)
    io += access(5, 0, 4, True, b"\x01") + access(5, 0x10, 4) + access(5, 0x40, 4, True, b"\x30")
    put("legacy_devices", "ioapic", mem_prefix() + io)


def config_addr(devfn, reg):
    return struct.pack("<I", 0x80000000 | (devfn << 8) | (reg * 4))


def pci_config():
    ops = b""
    for devfn in [0, 8, 11, 16, 24, 32]:
        ops += access(0, 0, 4, True, config_addr(devfn, 0)) + access(0, 4, 4)
        # Size BAR0 and BAR2/3 (64-bit): write all-ones, read back, enable decoding.
        for reg in [4, 6, 7, 12]:
            ops += access(0, 0, 4, True, config_addr(devfn, reg))
            ops += access(0, 4, 4, True, b"\xff" * 4) + access(0, 4, 4)
            ops += access(0, 4, 4, True, b"\x00\x10\x00\xc0")
        ops += access(0, 0, 4, True, config_addr(devfn, 1)) + access(0, 4, 2, True, b"\x07\x00")
        ops += access(0, 0, 4, True, config_addr(devfn, 13)) + access(0, 4, 1)
    put("pci_config", "pc_scan", b"\x00" + ops)
    ecam = b"".join(access(1, (dev << 15) | reg, 4) for dev in [0, 2, 3, 4, 0x1f] for reg in [0, 0x34, 0x100])
    ecam += access(1, (3 << 15) | 0x10, 4, True, b"\xff" * 4) + access(1, (3 << 15) | 0x10, 4)
    ecam += access(0, 7 - 6, 1, True, b"\x06")  # 0xcf9 reset control
    put("pci_config", "q35_ecam", b"\x01" + ecam + access(4, 0, 1))
    bars = access(2, 0, 4, True, b"\x01\x00\x00\x00") + access(2, 4, 4) + access(3, 0, 1, True, b"\x55") + access(3, 8, 4)
    put("pci_config", "testdev_bars", b"\x00" + bars)


def storage():
    # IDE primary: IDENTIFY, read 256 words, READ SECTORS(1) of LBA 1.
    ide = access(0, 6, 1, True, b"\xe0") + access(0, 7, 1, True, b"\xec") + access(0, 7, 1)
    ide += b"".join(access(0, 0, 2) for _ in range(8))
    ide += access(0, 2, 1, True, b"\x01") + access(0, 3, 1, True, b"\x01") + access(0, 7, 1, True, b"\x20")
    ide += access(0, 0, 4) + access(1, 0, 1) + access(1, 0, 1, True, b"\x04") + access(1, 0, 1, True, b"\x00")
    # Secondary (CD-ROM): IDENTIFY PACKET DEVICE, then PACKET with READ CAPACITY.
    ide += access(2, 7, 1, True, b"\xa1") + access(2, 7, 1) + access(2, 4, 1, True, b"\x08")
    ide += access(2, 7, 1, True, b"\xa0") + access(2, 0, 2, True, b"\x25\x00")
    ide += b"".join(access(2, 0, 2, True, b"\x00\x00") for _ in range(5)) + access(2, 0, 4)
    # Bus-master DMA: PRD table at 0x100 -> 512 bytes at 0x1000, READ DMA.
    prd = struct.pack("<IHH", 0x1000, 512, 0x8000)
    dma = access(5, 4, 2, True, b"\x05\x00") + access(5, 0x20, 4, True, b"\xc1\xc0\x00\x00")
    dma += access(4, 4, 4, True, struct.pack("<I", 0x100)) + access(0, 2, 1, True, b"\x01")
    dma += access(0, 7, 1, True, b"\xc8") + access(4, 0, 1, True, b"\x09") + access(4, 2, 1) + access(4, 0, 1, True, b"\x00")
    put("storage", "ide", mem_prefix(b"\0" * 0x100 + prd) + ide + dma)
    # AHCI: enable AHCI, port 0 command list at 0x1000, FIS at 0x2000, IDENTIFY via a command
    # table at 0x3000 with one PRD to 0x4000.
    cfis = bytes([0x27, 0x80, 0xec, 0]) + b"\0" * 60
    prdt = struct.pack("<QII", 0x4000, 0, 511)
    mem = bytearray(0x3000 + 0x80 + 16)
    mem[0x1000:0x1000 + 32] = struct.pack("<HHIQ", 5, 1, 0, 0x3000) + b"\0" * 16
    mem[0x3000:0x3000 + 64] = cfis
    mem[0x3080:0x3080 + 16] = prdt
    p0 = 0x100
    ahci = access(8, 4, 2, True, b"\x06\x00")
    ahci += access(6, 4, 4, True, struct.pack("<I", 1 << 31)) + access(6, 0, 4) + access(6, 0xc, 4)
    ahci += access(6, p0 + 0x00, 4, True, struct.pack("<I", 0x1000)) + access(6, p0 + 0x08, 4, True, struct.pack("<I", 0x2000))
    ahci += access(6, p0 + 0x18, 4, True, struct.pack("<I", 0x11)) + access(6, p0 + 0x38, 4, True, b"\x01")
    ahci += access(6, p0 + 0x38, 4) + access(6, p0 + 0x10, 4) + access(6, p0 + 0x20, 4)
    ahci += access(7, 0, 4, True, struct.pack("<I", 0x128)) + access(7, 4, 4)
    put("storage", "ahci", mem_prefix(bytes(mem)) + ahci)


def virtio_queue():
    # Queue of 16: descriptors at 0x100, avail ring at 0x200, used ring at 0x240; request
    # headers at 0x300, data at 0x400, status at 0x800, an indirect table at 0x900.
    def ring(chains, descs, extra, flags):
        mem = bytearray(0x1000)
        for i, (addr, length, fl, nxt) in enumerate(descs):
            mem[0x100 + 16 * i:0x110 + 16 * i] = struct.pack("<QIHH", addr, length, fl, nxt)
        mem[0x200:0x204] = struct.pack("<HH", 0, len(chains))
        for i, head in enumerate(chains):
            mem[0x204 + 2 * i:0x206 + 2 * i] = struct.pack("<H", head)
        for addr, data in extra:
            mem[addr:addr + len(data)] = data
        hdr = struct.pack("<BHIIIH", flags, 16, 0x100, 0x200, 0x240, 0)
        return hdr + bytes(mem).rstrip(b"\0")

    nxt, wr = 1, 2
    blk_read = [(0x300, 16, nxt, 1), (0x400, 1024, nxt | wr, 2), (0x800, 1, wr, 0)]
    hdr = struct.pack("<IIQ", 0, 0, 2)  # VIRTIO_BLK_T_IN, sector 2
    put("virtio_queue", "blk_read", ring([0], blk_read, [(0x300, hdr)], 0))
    blk_write = [(0x300, 16, nxt, 1), (0x400, 512, nxt, 2), (0x800, 1, wr, 0)]
    put("virtio_queue", "blk_write", ring([0], blk_write, [(0x300, struct.pack("<IIQ", 1, 0, 0)), (0x400, b"W" * 512)], 4))
    get_id = [(0x300, 16, nxt, 1), (0x400, 20, nxt | wr, 2), (0x800, 1, wr, 0)]
    put("virtio_queue", "blk_get_id", ring([0], get_id, [(0x300, struct.pack("<IIQ", 8, 0, 0))], 0))
    discard = [(0x300, 16, nxt, 1), (0x400, 16, nxt, 2), (0x800, 1, wr, 0)]
    put("virtio_queue", "blk_discard", ring([0], discard, [(0x300, struct.pack("<IIQ", 11, 0, 0)), (0x400, struct.pack("<QII", 0, 8, 0))], 0))
    put("virtio_queue", "blk_flush", ring([0], [(0x300, 16, nxt, 1), (0x800, 1, wr, 0)], [(0x300, struct.pack("<IIQ", 4, 0, 0))], 0))
    indirect = [(0x900, 48, 4, 0)]
    table = b"".join(struct.pack("<QIHH", *d) for d in blk_read)
    put("virtio_queue", "blk_indirect", ring([0], indirect, [(0x300, hdr), (0x900, table)], 4))
    put("virtio_queue", "rng", ring([0, 1], [(0x400, 64, wr, 0), (0x500, 32, wr, 0)], [], 1))
    tx = [(0x300, 12, nxt, 1), (0x400, 60, 0, 0)]
    put("virtio_queue", "net_tx", ring([0], tx, [(0x400, b"\xff" * 6 + b"\x52\x54\0\x12\x34\x56\x88\xb5")], 2))
    loop = [(0x300, 16, nxt, 1), (0x400, 16, nxt, 0)]
    put("virtio_queue", "loop", ring([0], loop, [], 0))


def emulation():
    # mode, 16 GPRs (rax rbx rcx rdx rsi rdi rsp rbp r8-r15), rip, rflags, CR0/CR4 flips, the
    # failure's length and 15 bytes, then memory from 0x4000: code at 0x4a00, operands at
    # 0x4c00/0x4d00, the stack at 0x4e00, the GDT at 0x5000.
    gdt = struct.pack("<QQQ", 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
    gdt32 = struct.pack("<QQQ", 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF)

    def seed(name, mode, insn, regs=None, mem=b"", reported=True):
        r = {"rax": 0x4c00, "rbx": 0x4d00, "rsp": 0x4e00, "rip": 0x4a00, "rflags": 2}
        r.update(regs or {})
        order = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"] + [f"r{i}" for i in range(8, 16)]
        out = bytes([mode]) + b"".join(struct.pack("<Q", r.get(k, 0)) for k in order)
        out += struct.pack("<QQII", r["rip"], r["rflags"], 0, 0)
        out += bytes([len(insn) if reported else 0]) + insn.ljust(15, b"\0")
        put("emulation", name, out + mem)

    def memory(gdt_bytes, stack=b"", code=b""):
        m = bytearray(0x1100)
        m[0xa00:0xa00 + len(code)] = code
        m[0xc00:0xc04] = struct.pack("<I", 0x1f80)
        m[0xd00:0xd08] = struct.pack("<Q", 0x0000_0000_5555_aaaa)
        m[0xe00:0xe00 + len(stack)] = stack
        m[0x1000:0x1000 + len(gdt_bytes)] = gdt_bytes
        return bytes(m).rstrip(b"\0")

    long = 2
    iretq = struct.pack("<QQQQQ", 0x6900, 0x8, 0x202, 0x9000, 0x10)
    seed("iretq", long, b"\x48\xcf", mem=memory(gdt, iretq))
    seed("iretq_cpl3", long | 4, b"\x48\xcf", mem=memory(gdt, struct.pack("<QQQQQ", 0x6900, 0x1b, 0x202, 0x9000, 0x23)))
    seed("iretd", 1, b"\xcf", mem=memory(gdt32, struct.pack("<III", 0x6900, 0x8, 0x202)))
    seed("iret_real", 0, b"\xcf", {"rip": 0x100}, memory(b"", struct.pack("<HHH", 0x200, 0, 0x202)))
    seed("int3", long, b"\xcc")
    seed("popcnt_mem", long, b"\xf3\x48\x0f\xb8\x03", mem=memory(gdt))
    seed("popcnt_reg32", 1, b"\xf3\x0f\xb8\xc3", {"rbx": 0xf0f0}, memory(gdt32))
    seed("fwait", long, b"\x9b")
    seed("ldmxcsr", long, b"\x0f\xae\x10", mem=memory(gdt))
    seed("stmxcsr", long, b"\x0f\xae\x18", mem=memory(gdt))
    seed("clac", long, b"\x0f\x01\xca")
    seed("stac_cpl3", long | 4, b"\x0f\x01\xcb")
    seed("unreported_popcnt", long, b"", mem=memory(gdt, code=b"\xf3\x48\x0f\xb8\x03"), reported=False)
    seed("not_handled", long, b"\x0f\xc7\x0e")


def vga():
    def dispi(index, value):
        return access(1, 0, 2, True, struct.pack("<H", index)) + access(1, 1, 2, True, struct.pack("<H", value))

    mode = dispi(4, 0) + dispi(1, 640) + dispi(2, 480) + dispi(3, 32) + dispi(4, 0x41)
    pixels = b"".join(access(4, off, 4, True, b"\x11\x22\x33\x00") for off in range(0, 4096, 512))
    put("vga", "vbe_640x480x32", b"\x00" + mode + pixels + access(6, 0, 1))
    mmio = b"".join(access(3, 0x500 + 2 * i, 2, True, struct.pack("<H", v)) for i, v in
                    [(4, 0), (1, 320), (2, 200), (3, 8), (4, 0x41)])
    put("vga", "bochs_display_320x200x8", b"\x01" + mmio + access(4, 0, 4, True, b"\x01\x02\x03\x04") + access(6, 0, 1))
    text = access(0, 0x3c2 - 0x3b0, 1, True, b"\x67") + b"".join(
        access(2, 0x18000 + 2 * i, 2, True, bytes([ord(c), 0x1f])) for i, c in enumerate("rvmm fuzz"))
    text += access(0, 0x3d4 - 0x3b0, 1, True, b"\x0e") + access(0, 0x3d5 - 0x3b0, 1, True, b"\x00")
    put("vga", "text_mode", b"\x00" + text + access(6, 0, 1))


def virtio_transports():
    # Guest memory: an rng-style queue of 8 at 0x100 (descriptors), 0x200 (avail), 0x240 (used)
    # with one 64-byte writable buffer at 0x400 made available.
    mem = bytearray(0x280)
    mem[0x100:0x110] = struct.pack("<QIHH", 0x400, 64, 2, 0)
    mem[0x200:0x206] = struct.pack("<HHH", 0, 1, 0)
    mem = bytes(mem)

    def w(dev, off, width, value):
        return access(dev, off, width, True, value.to_bytes(8, "little"))

    # virtio-mmio (device 0): §4.2.3.1 driver initialisation, queue 0, notify, then a kick (5).
    mmio = b"".join([
        access(0, 0x000, 4), access(0, 0x004, 4), access(0, 0x008, 4), access(0, 0x010, 4),
        w(0, 0x070, 4, 1), w(0, 0x070, 4, 3),
        w(0, 0x024, 4, 1), w(0, 0x020, 4, 1), w(0, 0x070, 4, 0xb), access(0, 0x070, 4),
        w(0, 0x030, 4, 0), access(0, 0x034, 4), w(0, 0x038, 4, 8),
        w(0, 0x080, 4, 0x100), w(0, 0x084, 4, 0), w(0, 0x090, 4, 0x200), w(0, 0x094, 4, 0),
        w(0, 0x0a0, 4, 0x240), w(0, 0x0a4, 4, 0), w(0, 0x044, 4, 1), w(0, 0x070, 4, 0xf),
        w(0, 0x050, 4, 0), access(5, 0, 1), access(0, 0x060, 4), w(0, 0x064, 4, 1),
        access(0, 0x100, 4), w(0, 0x100, 2, 0x1234), w(0, 0x070, 4, 0),
    ])
    put("virtio_transports", "mmio_rng", struct.pack("<B", 2 << 3) + mem_prefix(mem) + mmio)
    # virtio-pci with two MSI-X vectors: the capability list read (device 1), the MSI-X table
    # (device 3) and enable, then the common configuration in BAR4 (device 2) the same way.
    caps = b"".join(access(1, off, 4) for off in range(0, 0x100, 4))
    msix = b"".join([
        w(3, 0x00, 4, 0xfee00000), w(3, 0x04, 4, 0), w(3, 0x08, 4, 0x30), w(3, 0x0c, 4, 0),
        w(3, 0x10, 4, 0xfee00000), w(3, 0x18, 4, 0x31), w(3, 0x1c, 4, 1), access(3, 0x800, 8),
        w(1, 0x04, 2, 0x6), w(1, 0x40, 4, 0x80000000), w(1, 0x44, 4, 0x80000000),
        w(1, 0x48, 4, 0x80000000), w(1, 0x4c, 4, 0x80000000), w(1, 0x50, 4, 0x80000000),
    ])
    common = b"".join([
        w(2, 0x14, 1, 1), w(2, 0x14, 1, 3), w(2, 0x00, 4, 1), access(2, 0x04, 4),
        w(2, 0x08, 4, 1), w(2, 0x0c, 4, 1), w(2, 0x14, 1, 0xb), access(2, 0x14, 1),
        w(2, 0x10, 2, 0), access(2, 0x12, 2), w(2, 0x16, 2, 0), w(2, 0x18, 2, 8),
        w(2, 0x1a, 2, 1), access(2, 0x1a, 2), w(2, 0x20, 8, 0x100), w(2, 0x28, 8, 0x200),
        w(2, 0x30, 8, 0x240), w(2, 0x1c, 2, 1), w(2, 0x14, 1, 0xf), w(2, 0x3000, 2, 0),
        access(5, 0, 1), access(2, 0x1000, 1), access(2, 0x2000, 4), w(2, 0x14, 1, 0),
        access(6, 0, 1),
    ])
    put("virtio_transports", "pci_modern", struct.pack("<B", (2 << 3) | (2 << 1)) + mem_prefix(mem) + caps + msix + common)
    # A transitional function (bit 0): the legacy registers in BAR0 (device 4), queue PFN 0.
    legacy = b"".join([
        access(4, 0x00, 4), w(4, 0x12, 1, 1), w(4, 0x12, 1, 3), w(4, 0x04, 4, 0),
        w(4, 0x0e, 2, 0), access(4, 0x0c, 2), w(4, 0x08, 4, 0), w(4, 0x12, 1, 7),
        w(4, 0x10, 2, 0), access(4, 0x13, 1), access(4, 0x14, 4), w(4, 0x12, 1, 0),
    ])
    put("virtio_transports", "pci_legacy", struct.pack("<B", (1 << 3) | 1) + mem_prefix(mem) + caps + legacy)


def virtio_net_rx():
    # Queue of 16: descriptors at 0x100, avail ring at 0x200, used ring at 0x240; buffers from
    # 0x400. Each seed: header, frames, guest memory.
    def ring(chains, descs, frames, flags):
        mem = bytearray(0x1000)
        for i, (addr, length, fl, nxt) in enumerate(descs):
            mem[0x100 + 16 * i:0x110 + 16 * i] = struct.pack("<QIHH", addr, length, fl, nxt)
        mem[0x200:0x204] = struct.pack("<HH", 0, len(chains))
        for i, head in enumerate(chains):
            mem[0x204 + 2 * i:0x206 + 2 * i] = struct.pack("<H", head)
        out = struct.pack("<BHIIIHB", flags, 16, 0x100, 0x200, 0x240, 0, len(frames))
        for f in frames:
            out += struct.pack("<H", len(f)) + f
        return out + bytes(mem).rstrip(b"\0")

    nxt, wr = 1, 2
    frame = bytes(12) + b"\xff" * 6 + b"\x52\x54\0\x12\x34\x56\x08\x06" + bytes(28)
    put("virtio_net_rx", "single", ring([0], [(0x400, 1526, wr, 0)], [frame], 0))
    put("virtio_net_rx", "single_chained", ring([0], [(0x400, 12, nxt | wr, 1), (0x500, 1514, wr, 0)], [frame, frame], 2))
    put("virtio_net_rx", "too_small", ring([0, 1], [(0x400, 16, wr, 0), (0x500, 1526, wr, 0)], [frame, frame], 0))
    merged = [(0x400 + 0x40 * i, 32, wr, 0) for i in range(4)]
    put("virtio_net_rx", "mergeable", ring([0, 1, 2, 3], merged, [frame, frame[:20]], 1))
    put("virtio_net_rx", "mergeable_short", ring([0], merged[:1], [frame], 3))
    put("virtio_net_rx", "no_buffers", ring([], [], [frame], 0))


def qmp_dispatch():
    # One request per seed, for each command a paused VM serves (the target leaves out quit,
    # cont, migrate, migrate-incoming and screendump).
    reqs = [
        '{"execute": "query-status"}',
        '{"execute": "query-version", "id": 7}',
        '{"execute": "query-commands"}',
        '{"execute": "query-name"}',
        '{"execute": "query-kvm"}',
        '{"execute": "query-cpus-fast"}',
        '{"execute": "stop"}',
        '{"execute": "system_reset"}',
        '{"execute": "system_powerdown"}',
        '{"execute": "system_wakeup"}',
        '{"execute": "x-query-exit-stats"}',
        '{"execute": "query-vnc"}',
        '{"execute": "change-vnc-password", "arguments": {"password": "secret"}}',
        '{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "ctrl"},'
        ' {"type": "number", "data": 30}], "hold-time": 10}}',
        '{"execute": "input-send-event", "arguments": {"events": [{"type": "abs", "data":'
        ' {"axis": "x", "value": 100}}, {"type": "btn", "data": {"down": true, "button": "left"}},'
        ' {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}}]}}',
        '{"execute": "human-monitor-command", "arguments": {"command-line": "info registers -a"}}',
        '{"execute": "query-migrate"}',
        '{"execute": "query-migrate-capabilities"}',
        '{"execute": "migrate-set-capabilities", "arguments": {"capabilities":'
        ' [{"capability": "events", "state": true}]}}',
        '{"execute": "query-target"}',
        '{"execute": "query-machines"}',
        '{"execute": "qom-list-types", "arguments": {"implements": "device", "abstract": true}}',
        '{"execute": "device-list-properties", "arguments": {"typename": "virtio-blk-pci"}}',
        '{"execute": "qom-list-properties", "arguments": {"typename": "memory-backend-file"}}',
        '{"execute": "query-cpu-definitions"}',
        '{"execute": "query-cpu-model-expansion", "arguments": {"type": "full", "model":'
        ' {"name": "host", "props": {"vmx": false}}}}',
        '{"execute": "query-command-line-options", "arguments": {"option": "machine"}}',
        '{"execute": "query-qmp-schema"}',
        '{"execute": "query-sev-capabilities"}',
    ]
    for i, r in enumerate(reqs):
        put("qmp_dispatch", f"cmd{i:02}", r.encode() + b"\n")


def snapshot_state():
    # The target decodes the input as a state file, then frames it behind a valid header.
    put("snapshot_state", "json", b'{"vcpus": [], "devices": {}}')
    put("snapshot_state", "header", b"RVMMSNAP" + struct.pack("<IIQ", 1, 0, 2) + b"{}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    cli_args()
    qemu_opts()
    kernel_loader(sys.argv[1])
    block_image()
    qmp_stream()
    qmp_dispatch()
    legacy_devices()
    pci_config()
    storage()
    virtio_queue()
    virtio_transports()
    virtio_net_rx()
    snapshot_state()
    emulation()
    vga()


if __name__ == "__main__":
    main()
