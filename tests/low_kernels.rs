//! Multiboot kernels linked below 1 MiB (issue 18): rvmm moves its boot data (multiboot info,
//! command line, module list, GDT, stack) out of the image's way, as QEMU does, and refuses
//! only segments that hit something that cannot move.
//!
//! `RVMM_TEST_BIN=<qemu wrapper> cargo test --test low_kernels` runs the boots against QEMU;
//! the refusal tests are rvmm's messages and are skipped there.

mod common;

use common::{expect_error, is_qemu, skip_on_qemu, TempDir, VmCommand};

/// isa-debug-exit status of the multiboot guest's EXIT_OK (0x10).
const EXIT_OK: i32 = (0x10 << 1) | 1;
const MODULE: &[u8] = b"low module\n";
const MODULE_HEX: &str = "6c 6f 77 20 6d 6f 64 75";

/// Boots `guest` with `-append` and one module and checks what it prints of its multiboot
/// information on `machine`.
fn check_low(guest: &str, kind: &str, machine: &str) {
    let dir = TempDir::new(&format!("low-{}-{machine}", guest.replace('.', "-")));
    let module = dir.file("m", MODULE);
    let out = VmCommand::guest(guest)
        .set_option("-M", machine)
        .append("low=1 x")
        .initrd(&[&module])
        .run();
    out.assert_stdout_contains(&format!("multiboot ok ({kind})\n"));
    // 256 MiB guest: 639 KiB below the EBDA, the rest above 1 MiB (QEMU's BIOS keeps 128 KiB
    // of it, rvmm none).
    let upper: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("mem_lower: 639 KiB, mem_upper: "))
        .and_then(|rest| rest.strip_suffix(" KiB"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no mem_lower: 639 KiB, mem_upper: N KiB line\n{out}"));
    assert!(
        (255 * 1024 - 128..=255 * 1024).contains(&upper),
        "mem_upper {upper}\n{out}"
    );
    let cmdline = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cmdline: "))
        .unwrap_or_else(|| panic!("no cmdline\n{out}"));
    assert!(cmdline.ends_with("low=1 x"), "cmdline {cmdline:?}\n{out}");
    out.assert_stdout_contains("modules: 1\n");
    out.assert_stdout_contains(&format!(
        "module 0: '{}' size {} bytes {MODULE_HEX}\n",
        module.display(),
        MODULE.len()
    ));
    assert!(out.stdout_number("mmap entries: ") > 0, "empty mmap\n{out}");
    out.assert_status(EXIT_OK);
}

fn check_all(addr: &str, machines: &[&str]) {
    for machine in machines {
        check_low(&format!("multiboot_{addr}.elf"), "elf", machine);
        check_low(
            &format!("multiboot_aout_{addr}.bin"),
            "a.out kludge",
            machine,
        );
    }
}

/// Boots the PVH guest `guest` (linked below 1 MiB) with a command line and one module on
/// `machine`: rvmm's start_info, module list, command line and memory map move out of its way.
fn check_pvh_low(guest: &str, class: &str, machine: &str) {
    let dir = TempDir::new(&format!("low-{}-{machine}", guest.replace('.', "-")));
    let module = dir.file("m", MODULE);
    let out = VmCommand::guest(guest)
        .set_option("-M", machine)
        .append("low=1 x")
        .initrd(&[&module])
        .run();
    out.assert_stdout_contains(&format!("pvh ok ({class})\n"));
    out.assert_stdout_contains("cmdline: low=1 x\n");
    assert!(
        out.stdout_number("memmap entries: ") > 0,
        "empty memmap\n{out}"
    );
    out.assert_stdout_contains("modules: 1\n");
    out.assert_stdout_contains(&format!(
        "module 0: size {} bytes {MODULE_HEX}\n",
        MODULE.len()
    ));
    out.assert_status(EXIT_OK);
}

/// PVH (ELF32 and ELF64 entry notes) images linked at 0x8000, 0x10000 and 0x90000.
#[test]
fn pvh_linked_below_1m_boots() {
    for addr in ["8000", "10000", "90000"] {
        // QEMU 7.2 on q35 loads PVH images through SeaBIOS and its pvh.bin option ROM, which
        // overwrite an image at 0x8000 or 0x10000 (nothing is printed); its microvm (qboot)
        // boots them.
        let machines: &[&str] = if is_qemu() && addr != "90000" {
            &["microvm"]
        } else {
            &["q35", "microvm"]
        };
        for &machine in machines {
            check_pvh_low(&format!("pvh32_{addr}.elf"), "elf32", machine);
            check_pvh_low(&format!("pvh64_{addr}.elf"), "elf64", machine);
        }
    }
}

#[test]
fn multiboot_linked_at_0x8000_boots() {
    // QEMU 7.2 on q35 (SeaBIOS and its multiboot option ROM) enters such an image with
    // information lacking the memory, command line and module flags; its microvm (qboot) is
    // fine.
    let machines: &[&str] = if is_qemu() {
        &["microvm"]
    } else {
        &["q35", "microvm"]
    };
    check_all("8000", machines);
}

#[test]
fn multiboot_linked_at_0x10000_boots() {
    check_all("10000", &["q35", "microvm"]);
}

#[test]
fn multiboot_linked_at_0x90000_boots() {
    check_all("90000", &["q35", "microvm"]);
}

/// An a.out-kludge image of 16 bytes loaded at `load` with its bss up to `bss_end`.
fn kludge_image(load: u32, bss_end: u32) -> Vec<u8> {
    const MAGIC: u32 = 0x1bad_b002;
    const FLAGS: u32 = 1 << 16;
    let fields = [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC).wrapping_sub(FLAGS),
        load,
        load,
        0,
        bss_end,
        load + 32,
    ];
    let mut img: Vec<u8> = fields.iter().flat_map(|v| v.to_le_bytes()).collect();
    img.extend_from_slice(&[0xf4; 16]);
    img
}

fn expect_refused(load: u32, bss_end: u32, needle: &str) {
    let dir = TempDir::new(&format!("low-refused-{load:x}"));
    let image = dir.file("k.bin", &kludge_image(load, bss_end));
    let image = image.to_str().unwrap();
    let stderr = expect_error(
        &[
            "-M", "q35", "-m", "256", "-display", "none", "-kernel", image,
        ],
        needle,
    );
    assert!(stderr.contains(image), "the file is not named:\n{stderr}");
}

#[test]
fn segments_over_fixed_ranges_are_refused_by_name() {
    if skip_on_qemu("rvmm's own error messages") {
        return;
    }
    expect_refused(
        0xbfff_0000,
        0xc001_0000,
        "segment at 0xbfff0000 + 0x20000 overlaps the MMIO hole 0xc0000000-0x100000000",
    );
    expect_refused(
        0x0f00_0000,
        0x1100_0000,
        "segment at 0xf000000 + 0x2000000 does not fit in 256 MiB of RAM",
    );
    expect_refused(
        0x9_f000,
        0xa_0000,
        "segment at 0x9f000 + 0x1000 overlaps the BIOS area 0x9fc00-0x100000",
    );
}
