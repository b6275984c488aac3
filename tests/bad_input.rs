//! Bad input through the real binary: every case gets a clear message naming the input, exit
//! status 2, and no panic.

mod common;

use common::{expect_error, skip_on_qemu, TempDir, VmCommand};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

#[test]
fn unsupported_and_unknown_options_are_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    expect_error(&["-vga", "cirrus"], "-vga cirrus: not supported");
    expect_error(
        &["-blockdev", "driver=nbd,node-name=n"],
        "-blockdev node-name=n: driver 'nbd' is not supported",
    );
    expect_error(
        &["-drive", "file=/nonexistent/x.img,format=raw"],
        "could not open disk image '/nonexistent/x.img'",
    );
    expect_error(
        &["-device", "virtio-blk-device,drive=nope"],
        "-device virtio-blk-device: drive 'nope' not found",
    );
    expect_error(
        &[
            "-M",
            "q35",
            "-device",
            "pci-testdev,romfile=/nonexistent/x.rom",
        ],
        "pci-testdev: could not load romfile '/nonexistent/x.rom': No such file",
    );
    expect_error(
        &["-M", "q35", "-device", "pci-testdev,romfile=/dev/null"],
        "pci-testdev: could not load romfile '/dev/null': it is a character device",
    );
    expect_error(
        &["-M", "q35", "-device", "pci-testdev,membar=3"],
        "pci-testdev: BAR 2: size 0x3 is not a power of two",
    );
    expect_error(&["-frobnicate"], "-frobnicate: invalid option");
    expect_error(&["--frobnicate"], "-frobnicate: invalid option");
    expect_error(&["-m"], "-m requires an argument");
    expect_error(&["-m", "12Q"], "12Q");
    expect_error(&["-smp", "0"], "-smp");
    expect_error(&["-smp", "cpus=4,sockets=3,cores=1,threads=1"], "-smp");
    expect_error(&["-machine", "virt"], "virt");
    expect_error(&["-M", "microvm,foo=bar"], "foo");
    expect_error(&["-accel", "tcg"], "tcg");
    expect_error(&["-cpu", "qemu65"], "qemu65");
    expect_error(&["-serial", "pty"], "pty");
    expect_error(&["-device", "virtio-blk-device"], "virtio-blk-device");
    expect_error(&["-device", "isa-debug-exit,iobase=0x10000"], "iobase");
    expect_error(&["-display", "gtk"], "gtk");
    expect_error(&["disk.img"], "disk.img");
}

#[test]
fn missing_kernel_and_initrd_files_are_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    expect_error(
        &["-kernel", "/nonexistent/vmlinuz"],
        "could not load kernel '/nonexistent/vmlinuz'",
    );
    let pvh = common::guest("pvh32.elf");
    let pvh = pvh.to_str().unwrap();
    expect_error(
        &["-kernel", pvh, "-initrd", "/nonexistent/initrd"],
        "could not load initrd '/nonexistent/initrd'",
    );
    expect_error(
        &["-kernel", pvh, "-serial", "file:/nonexistent/dir/log"],
        "/nonexistent/dir/log",
    );
    expect_error(
        &["-fw_cfg", "name=opt/rvmm/x,file=/nonexistent/fw_cfg-item"],
        "-fw_cfg name=opt/rvmm/x: could not load file '/nonexistent/fw_cfg-item'",
    );
}

#[test]
fn a_tap_fd_that_is_not_open_is_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    expect_error(
        &[
            "-M",
            "microvm",
            "-netdev",
            "tap,id=n0,fd=999",
            "-device",
            "virtio-net-device,netdev=n0",
        ],
        "virtio-net: tap fd 999: Bad file descriptor",
    );
}

#[test]
fn random_empty_and_truncated_kernels_are_refused() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = TempDir::new("bad_kernels");
    // Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let rand = dir.file("random.bin", &random);
    let msg = expect_error(&["-kernel", rand.to_str().unwrap()], "random.bin");
    assert!(
        msg.contains("not a multiboot, PVH ELF, bzImage or ELF64"),
        "{msg}"
    );

    let empty = dir.file("empty.bin", b"");
    expect_error(&["-kernel", empty.to_str().unwrap()], "empty.bin");

    for name in ["pvh32.elf", "pvh64.elf", "vmlinux64.elf", "multiboot.elf"] {
        let full = std::fs::read(common::guest(name)).unwrap();
        for len in [3, 20, 60, 100, full.len() / 2] {
            let f = dir.file(
                &format!("trunc-{len}-{name}"),
                &full[..len.min(full.len() - 1)],
            );
            let msg = expect_error(
                &["-kernel", f.to_str().unwrap()],
                &format!("trunc-{len}-{name}"),
            );
            assert!(
                msg.contains("truncated") || msg.contains("not a") || msg.contains("cannot boot"),
                "{name} cut to {len}: {msg}"
            );
        }
    }
    let bz = std::fs::read(common::guest("bzimage.bin")).unwrap();
    let f = dir.file("trunc-bzimage.bin", &bz[..0x300]);
    expect_error(&["-kernel", f.to_str().unwrap()], "trunc-bzimage.bin");
}

#[test]
fn kernel_larger_than_ram_is_refused() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let pvh = common::guest("pvh32.elf");
    let msg = expect_error(&["-m", "1", "-kernel", pvh.to_str().unwrap()], "pvh32.elf");
    assert!(msg.contains("does not fit"), "{msg}");
}

#[test]
fn oversized_command_line_is_refused() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let out = VmCommand::guest("pvh32.elf")
        .append(&"x".repeat(5000))
        .run();
    out.assert_status(2);
    assert!(out.stderr.contains("5000"), "{}", out.stderr);
}

/// Make a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Kernels, initrds, -fw_cfg files and option ROMs must be regular files that fit: a FIFO would
/// block in open, /dev/zero never ends, a directory is no image. Each is refused at once, named.
#[test]
fn inputs_that_are_not_regular_files_or_too_large() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = TempDir::new("bad_files");
    let fifo = dir.file("placeholder", b"");
    let fifo = fifo.with_file_name("a.fifo");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let d = dir.file("x", b"");
    let d = d.parent().unwrap().to_str().unwrap();
    let pvh = common::guest("pvh32.elf");
    let pvh = pvh.to_str().unwrap();
    for (what, bad, kind) in [
        ("kernel", fifo, "a FIFO"),
        ("kernel", "/dev/zero", "a character device"),
        ("kernel", d, "a directory"),
        ("initrd", fifo, "a FIFO"),
        ("initrd", "/dev/zero", "a character device"),
        ("initrd", "/dev/null", "a character device"),
    ] {
        let args: Vec<&str> = match what {
            "kernel" => vec!["-kernel", bad],
            _ => vec!["-kernel", pvh, "-initrd", bad],
        };
        expect_error(
            &args,
            &format!("could not load {what} '{bad}': it is {kind}, not a regular file"),
        );
    }
    let fw = format!("name=opt/rvmm/x,file={fifo}");
    expect_error(
        &["-fw_cfg", &fw],
        &format!("-fw_cfg name=opt/rvmm/x: could not load file '{fifo}': it is a FIFO"),
    );
    let fw = "name=opt/rvmm/x,file=/dev/zero";
    expect_error(&["-fw_cfg", fw], "'/dev/zero': it is a character device");
    let rom = format!("pci-testdev,romfile={fifo}");
    expect_error(&["-M", "q35", "-device", &rom], "it is a FIFO");

    // Larger than guest RAM: a sparse file, refused before a byte is read.
    let big = dir.file("big.img", b"");
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let big = big.to_str().unwrap();
    expect_error(
        &["-m", "256", "-kernel", big],
        "it is 314572800 bytes, more than the 268435456 bytes of guest RAM",
    );
    expect_error(
        &["-m", "256", "-kernel", pvh, "-initrd", big],
        "could not load initrd",
    );
}

/// Linux arguments are bytes: a path that is not UTF-8 is used as it is (and named when it does
/// not exist); option syntax that must be text says so.
#[test]
fn arguments_that_are_not_utf8() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
    let msg = expect_error(
        &[bytes(b"-kernel"), bytes(b"/nonexistent/k\xff.elf")],
        "could not load kernel '/nonexistent/k\u{fffd}.elf'",
    );
    assert!(msg.contains("No such file"), "{msg}");
    // A real kernel at a non-UTF-8 path boots, with -append bytes passed through.
    let dir = TempDir::new("non_utf8");
    let odd = dir
        .file("placeholder", b"")
        .with_file_name(OsStr::from_bytes(b"k\xff.elf"));
    std::fs::copy(common::guest("pvh32.elf"), &odd).unwrap();
    let out = VmCommand::without_kernel()
        .arg("-kernel")
        .arg(odd.as_os_str())
        .arg("-append")
        .arg(bytes(b"x=\xe9"))
        .run();
    out.assert_status(33);
    // A path inside option syntax may be any bytes too (named when missing); other values not.
    expect_error(
        &[
            bytes(b"-drive"),
            bytes(b"file=/nonexistent/\xff.img,format=raw"),
        ],
        "could not open disk image '/nonexistent/\u{fffd}.img'",
    );
    expect_error(
        &[
            bytes(b"-fw_cfg"),
            bytes(b"name=opt/x,file=/nonexistent/\xfe"),
        ],
        "could not load file '/nonexistent/\u{fffd}'",
    );
    expect_error(
        &[bytes(b"-drive"), bytes(b"file=a.img,serial=\xff")],
        "-drive: parameter 'serial': value '\u{fffd}' is not valid UTF-8",
    );
    expect_error(&[bytes(b"-\xffoo")], "invalid option");
}

/// A path in -exit-stats json= that cannot be written is found at start-up.
#[test]
fn exit_stats_path_is_checked_at_start_up() {
    if skip_on_qemu("rvmm's own option") {
        return;
    }
    let pvh = common::guest("pvh32.elf");
    expect_error(
        &[
            OsStr::new("-kernel"),
            pvh.as_os_str(),
            OsStr::new("-exit-stats"),
            OsStr::new("json=/nonexistent/dir/s.json"),
        ],
        "-exit-stats: cannot write '/nonexistent/dir/s.json'",
    );
}
