//! Bad input through the real binary: every case gets a clear message naming the input, exit
//! status 2, and no panic.

mod common;

use common::{binary, skip_on_qemu, TempDir, VmCommand};
use std::process::Command;

/// Runs rvmm with `args` and checks the error contract; returns stderr.
fn expect_error(args: &[&str], needle: &str) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run rvmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "args {args:?}: status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.starts_with("rvmm: "),
        "args {args:?}: message lacks the 'rvmm: ' prefix:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "args {args:?}: message lacks {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "args {args:?}: rvmm panicked:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "args {args:?}: expected a one-line message:\n{stderr}"
    );
    stderr
}

#[test]
fn unsupported_and_unknown_options_are_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    expect_error(&["-vga", "std"], "-vga is not supported");
    expect_error(&["-blockdev", "driver=file"], "-blockdev is not supported");
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
        "pci-testdev: romfile /nonexistent/x.rom: No such file",
    );
    expect_error(
        &["-M", "q35", "-device", "pci-testdev,romfile=/dev/null"],
        "pci-testdev: romfile /dev/null: the file is empty",
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
    expect_error(&["-cpu", "qemu64"], "qemu64");
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
        "-fw_cfg name=opt/rvmm/x: can't load /nonexistent/fw_cfg-item",
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
