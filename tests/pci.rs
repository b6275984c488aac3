//! PCI devices with BARs the guest programs: QEMU's pci-testdev moved while the guest runs
//! (guests/src/pci_bar.S), on q35 and pc, checked against QEMU with `RVMM_TEST_BIN`.

mod common;

use common::{Output, VmCommand};

/// isa-debug-exit status of the guests' EXIT_OK.
const EXIT_OK: i32 = (0x10 << 1) | 1;

fn run_pci_bar(machine: &str) -> Output {
    let out = VmCommand::guest("pci_bar.elf")
        .set_option("-M", machine)
        .arg("-device")
        .arg("pci-testdev,addr=3")
        .arg("-device")
        .arg("pci-testdev,addr=4")
        .run();
    out.assert_status(EXIT_OK);
    out
}

fn check_moves(out: &Output) {
    // "mmio" and "port": the first dword of the selected test's name.
    let mmio_name = "0x6f696d6d";
    let port_name = "0x74726f70";
    // Where nothing answers: rvmm reads all-ones as a PCI master abort does; QEMU 7.2's
    // unassigned memory reads 0 (ports read all-ones on both).
    let nothing = if common::is_qemu() {
        "0x0"
    } else {
        "0xffffffff"
    };
    for line in [
        format!("at-a: {mmio_name}\n"),
        // After the move the device answers at B only.
        "moved: 0xd0000000\n".into(),
        format!("at-b: {mmio_name}\n"),
        format!("old-a: {nothing}\n"),
        "count-b: 0x3\n".into(),
        // The wildcard test's writes at B went to KVM's ioeventfd, which moved with the BAR;
        // had it stayed at A, the device would have counted 3.
        "wildcard-b: 0x0\n".into(),
        "moved-d: 0xd0100000\n".into(),
        "at-d: 0x2\n".into(),
        format!("old-b: {nothing}\n"),
        format!("decode-off: {nothing}\n"),
        "decode-on: 0x2\n".into(),
        format!("io-at-p: {port_name}\n"),
        "io-moved: 0x9000\n".into(),
        format!("io-at-q: {port_name}\n"),
        "io-old-p: 0xffffffff\n".into(),
    ] {
        out.assert_stdout_contains(&line);
    }
}

#[test]
fn pci_testdev_bars_move_on_q35() {
    let out = run_pci_bar("q35");
    check_moves(&out);
    if !common::is_qemu() {
        // rvmm programs the BARs itself under direct boot: first fit in the PCI windows.
        out.assert_stdout_contains("bar0: 0xc0000000\n");
        out.assert_stdout_contains("bar1: 0xc000\n");
        // The overlapping move is refused: dev3 still answers at B (test 2), dev4 at C (test
        // 0). QEMU maps overlapping BARs by priority instead.
        out.assert_stdout_contains("overlap: b 0x2 c 0x0\n");
    }
}

#[test]
fn pci_testdev_bars_move_on_pc() {
    let out = run_pci_bar("pc");
    check_moves(&out);
    if !common::is_qemu() {
        out.assert_stdout_contains("overlap: b 0x2 c 0x0\n");
    }
}

#[test]
fn pci_testdev_is_listed_and_microvm_refuses_it() {
    let out = VmCommand::guest("pci_scan.elf")
        .arg("-device")
        .arg("pci-testdev,addr=5")
        .arg("-device")
        .arg("pci-testdev")
        .run();
    out.assert_status(EXIT_OK);
    out.assert_stdout_contains("pci 00:05.0 1b36:0005 class 00ff00\n");
    if common::skip_on_qemu("QEMU's q35 has more functions (LPC, SATA, SMBus)") {
        return;
    }
    out.assert_stdout_contains("pci 00:01.0 1b36:0005 class 00ff00\n");
    // The host bridge, the ICH9 LPC bridge at 00:1f.0 and the two pci-testdevs.
    out.assert_stdout_contains("pci 00:1f.0 8086:2918 class 060100\n");
    out.assert_stdout_contains("pci: 4 functions\n");
    let out = VmCommand::guest("pci_scan.elf")
        .set_option("-M", "microvm")
        .arg("-device")
        .arg("pci-testdev")
        .run();
    // A bad command line: status 2 and the reason on stderr (QEMU says the same and exits 1).
    out.assert_status(2);
}

/// QEMU's `romfile=`: the expansion ROM BAR serves the file, moves with the BAR, ignores writes.
/// A ROM of whole pages is a read-only KVM memory slot (reads never exit); a 2 KiB one is served
/// by the device on the MMIO bus (KVM maps only whole pages), as in QEMU.
#[test]
fn rom_bar_serves_the_romfile_and_moves() {
    let dir = common::TempDir::new("pci-rom");
    let mut contents = b"\x55\xaaRVMM-ROM".to_vec();
    let small = dir.file("small.rom", &contents);
    contents.resize(5000, 0);
    let big = dir.file("big.rom", &contents);
    for (rom, pages) in [(&small, false), (&big, true)] {
        let stats = dir.file("stats.json", b"");
        let mut cmd = VmCommand::guest("pci_bar.elf")
            .arg("-device")
            .arg(format!("pci-testdev,addr=3,romfile={}", rom.display()))
            .arg("-device")
            .arg("pci-testdev,addr=4");
        if !common::is_qemu() {
            cmd = cmd
                .arg("-exit-stats")
                .arg(format!("json={},table=off", stats.display()));
        }
        let out = cmd.run();
        out.assert_status(EXIT_OK);
        let nothing = if common::is_qemu() {
            "0x0"
        } else {
            "0xffffffff"
        };
        // "\x55\xaaRV" little-endian.
        for line in [
            "rom-at-r: 0x5652aa55\n".to_string(),
            "rom-moved: 0xd0200000\n".into(),
            "rom-at-s: 0x5652aa55\n".into(),
            format!("rom-old-r: {nothing}\n"),
            "rom-written: 0x5652aa55\n".into(),
            format!("rom-off: {nothing}\n"),
        ] {
            out.assert_stdout_contains(&line);
        }
        if common::is_qemu() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        let count = |kind: &str| {
            json["total"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == kind && e["device"] == "pci-testdev Rom")
                .map(|e| e["count"].as_u64().unwrap())
                .sum::<u64>()
        };
        // The one write exits either way (a read-only slot); the 3 reads only without a slot.
        assert_eq!(count("mmio-write"), 1, "{json}");
        assert_eq!(count("mmio-read"), if pages { 0 } else { 3 }, "{json}");
    }
}
