//! SMBIOS through PC firmware: rvmm hands SeaBIOS QEMU's `etc/smbios/*` files, SeaBIOS adds its
//! type 0 and publishes the entry point, and guests/src/smbiosdisk.S prints every structure.
//!
//! The expectations are what QEMU 7.2 shows (the processor ID aside, which is the host's), so
//! these tests also run against QEMU (`RVMM_TEST_BIN=qemu-system-x86_64`).

mod common;

use common::{TempDir, VmCommand};
use std::fs;
use std::path::PathBuf;

/// The firmware's serial console: SeaBIOS uses it when the machine has no graphics.
fn firmware_vm(machine: &str) -> VmCommand {
    VmCommand::without_kernel()
        .set_option("-M", machine)
        .arg("-machine")
        .arg("graphics=off")
}

/// smbiosdisk.bin on a 1 MiB raw disk (SeaBIOS wants whole cylinders).
fn smbios_disk(dir: &TempDir) -> PathBuf {
    let mut disk = fs::read(common::guest("smbiosdisk.bin")).expect("smbiosdisk.bin");
    disk.resize(1 << 20, 0);
    dir.file("smbios.img", &disk)
}

/// The guest's "smbios: " records, with the lines SeaBIOS's 80-column console broke rejoined.
fn records(stdout: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in stdout.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("smbios: ") {
            out.push(rest.to_string());
            open = true;
        } else if open && !line.is_empty() && !line.contains("rvmm") && !line.contains("qemu") {
            out.last_mut().expect("an open record").push_str(line);
        } else {
            open = false;
        }
    }
    out
}

/// Boots the SMBIOS disk and returns its records after checking the entry point line; `test`
/// names the test's own disk (a disk in use is locked).
fn boot(test: &str, machine: &str, args: &[&str]) -> Vec<String> {
    let dir = TempDir::new(&format!("smbios-{test}"));
    let disk = smbios_disk(&dir);
    let mut cmd = firmware_vm(machine)
        .arg("-drive")
        .arg(format!("file={},format=raw", disk.display()));
    for a in args {
        cmd = cmd.arg(*a);
    }
    let out = cmd.run();
    out.assert_status(0);
    let r = records(&common::without_escapes(&out.stdout));
    // SeaBIOS's serial console may leave a blank after the last word it mirrors.
    assert_eq!(r.last().map(|s| s.trim_end()), Some("done"), "{out}");
    let anchor = &r[0];
    assert!(anchor.starts_with("anchor 000F"), "{out}");
    assert!(anchor.contains(" v2.8 "), "{out}");
    assert!(anchor.ends_with(" ok"), "checksums: {out}");
    r
}

/// The record of the first structure of type `ty` (two hex digits).
fn structure<'a>(r: &'a [String], ty: &str) -> &'a str {
    r.iter()
        .find(|s| s.starts_with(ty))
        .unwrap_or_else(|| panic!("no type {ty} in {r:#?}"))
}

#[test]
fn q35_tables_match_qemu() {
    let r = boot("q35-defaults", "q35", &["-smp", "2"]);
    // SeaBIOS's type 0 (QEMU leaves it to the firmware), then QEMU's structures.
    let types: Vec<&str> = r[1..r.len() - 1].iter().map(|s| &s[..2]).collect();
    assert_eq!(
        types,
        ["00", "01", "03", "04", "10", "11", "13", "20", "7f"]
    );
    assert!(structure(&r, "00").contains("|SeaBIOS|"), "{r:#?}");
    assert_eq!(
        structure(&r, "01"),
        "011b00010102030000000000000000000000000000000000060000\
         |QEMU|Standard PC (Q35 + ICH9, 2009)|pc-q35-7.2"
    );
    assert_eq!(
        structure(&r, "03"),
        "03160003010102000003030302000000000000000000|QEMU|pc-q35-7.2"
    );
    // Type 4: the processor ID (CPUID leaf 1) is the host's; -smp 2 is 2 cores, 2 threads.
    let t4 = structure(&r, "042a0004010301");
    assert!(
        t4.ends_with("03000000d007d0074101ffffffffffff00000002020202000100|CPU 0|QEMU|pc-q35-7.2"),
        "{t4}"
    );
    assert_eq!(
        structure(&r, "10"),
        "1017001001030600000400feff01000000000000000000"
    );
    assert_eq!(
        structure(&r, "11"),
        "112800110010feffffffffff000109000100070200000002000000000000000000000000\
         00000000|DIMM 0|QEMU"
    );
    assert_eq!(
        structure(&r, "13"),
        "131f001300000000ffff030000100100000000000000000000000000000000"
    );
    assert_eq!(structure(&r, "20"), "200b002000000000000000");
    assert_eq!(structure(&r, "7f"), "7f04007f");
}

#[test]
fn pc_tables_have_a_processor_per_socket() {
    let r = boot("pc-sockets", "pc", &["-smp", "2,sockets=2"]);
    assert!(structure(&r, "01").ends_with("|QEMU|Standard PC (i440FX + PIIX, 1996)|pc-i440fx-7.2"));
    let t4: Vec<&String> = r.iter().filter(|s| s.starts_with("042a")).collect();
    assert_eq!(t4.len(), 2, "{r:#?}");
    assert!(t4[1].starts_with("042a0104"), "{}", t4[1]);
    assert!(
        t4[1].ends_with("00000001010102000100|CPU 1|QEMU|pc-i440fx-7.2"),
        "{}",
        t4[1]
    );
}

#[test]
fn smbios_and_uuid_options_set_the_fields() {
    let r = boot(
        "q35-options",
        "q35",
        &[
            "-uuid",
            "12345678-9abc-def0-0123-456789abcdef",
            "-smbios",
            "type=1,manufacturer=ACME,product=Widget,serial=S-1,family=Tools",
            "-smbios",
            "type=0,vendor=rvmm-test,version=1.0,date=01/02/2024,release=1.2",
            "-smbios",
            "type=11,value=first,value=second",
            "-smbios",
            "type=17,loc_pfx=Slot,speed=3200",
        ],
    );
    // Given type 0 fields, the VMM builds type 0 and the firmware adds none.
    assert_eq!(
        structure(&r, "00"),
        "00180000010200e80300080000000000000000140102ffff|rvmm-test|1.0|01/02/2024"
    );
    assert_eq!(
        r.iter().filter(|s| s.starts_with("00")).count(),
        1,
        "{r:#?}"
    );
    // The UUID's first three fields little-endian (SMBIOS 2.6+), wake-up type 6, family.
    assert_eq!(
        structure(&r, "01"),
        "011b00010102030478563412bc9af0de0123456789abcdef060005\
         |ACME|Widget|pc-q35-7.2|S-1|Tools"
    );
    assert_eq!(structure(&r, "0b"), "0b05000e02|first|second");
    // Speed and configured speed 3200 MT/s (0x0c80).
    assert_eq!(
        structure(&r, "11"),
        "112800110010feffffffffff000109000100070200800c02000000000000\
         0000800c000000000000|Slot 0|QEMU"
    );
}
