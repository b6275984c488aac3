//! virtio-pci on pc and q35. A ring-3 polling driver (guests/src/virtio_bench.S built with
//! VIRTIO_PCI) finds the virtio-blk-pci function on bus 0, sets it up through the common
//! configuration in BAR4 and reads random sectors, notifying through the ioeventfd; under
//! firmware, SeaBIOS boots a virtio-blk-pci disk (`-drive if=virtio` and `-device
//! virtio-blk-pci`), and `bootindex=` picks which of two such disks boots (fw_cfg `bootorder`,
//! the `/pci@i0cf8/scsi@SLOT/disk@0,0` paths of QEMU's get_fw_dev_path).
//!
//! The guests use only the PCI configuration ports, BAR4 and BIOS services, so every test here
//! also runs against QEMU (`RVMM_TEST_BIN=qemu-system-x86_64`; `disable-legacy=on` gives QEMU's
//! device the modern-only identity rvmm's has).

mod common;

use common::{expect_error, skip_on_qemu, TempDir, VmCommand};
use std::fs;
use std::path::PathBuf;

const SECTOR: usize = 512;

/// A 1 MiB raw disk: bootdisk.bin's boot sector, then `marker` in LBA 1 (bootdisk prints it).
fn boot_disk(dir: &TempDir, name: &str, marker: &str) -> PathBuf {
    let boot = fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    let mut image = boot[..SECTOR].to_vec();
    image.extend_from_slice(marker.as_bytes());
    image.resize(1 << 20, 0);
    dir.file(name, &image)
}

fn firmware_vm(machine: &str) -> VmCommand {
    VmCommand::without_kernel()
        .set_option("-M", machine)
        .arg("-machine")
        .arg("graphics=off")
}

fn on_each_machine(f: impl Fn(&'static str) + Sync) {
    std::thread::scope(|s| {
        let handles: Vec<_> = ["pc", "q35"]
            .into_iter()
            .map(|m| {
                let f = &f;
                s.spawn(move || f(m))
            })
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

#[test]
fn a_polling_driver_reads_through_virtio_blk_pci() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-driver-{machine}"));
        let mut image = vec![0u8; 4 << 20];
        for (i, b) in image.iter_mut().enumerate() {
            *b = (i * 7 / 3) as u8;
        }
        let disk = dir.file("disk.raw", &image);
        for args in [
            "n=300 bs=4096 qd=1",
            "n=300 bs=4096 qd=8",
            "n=40 bs=65536 qd=2 seq",
        ] {
            let out = VmCommand::guest("virtio_bench_pci.elf")
                .set_option("-M", machine)
                .arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
                .arg("-device")
                .arg("virtio-blk-pci,drive=d0,disable-legacy=on")
                .append(args)
                .run();
            out.assert_stdout_contains("virtio_bench: errors 0");
            out.assert_status(33);
        }
    });
}

#[test]
fn seabios_boots_a_virtio_blk_pci_disk() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-boot-{machine}"));
        let disk = boot_disk(&dir, "disk.img", "VIRTIO-DISK");
        let out = firmware_vm(machine)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .run();
        out.assert_stdout_contains("SeaBIOS");
        out.assert_stdout_contains("bootdisk: drive 80, 0000000000000800 sectors");
        out.assert_stdout_contains("lba1: VIRTIO-DISK");
        out.assert_stdout_contains("bootdisk: done");
        out.assert_status(0);
    });
}

#[test]
fn bootindex_picks_the_virtio_disk() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-bootindex-{machine}"));
        let a = boot_disk(&dir, "a.img", "DISK-A");
        let b = boot_disk(&dir, "b.img", "DISK-B");
        // Without bootindex the first disk boots; with it, the lowest index wins.
        for (index_a, index_b, expect) in [(None, None, "DISK-A"), (Some(2), Some(1), "DISK-B")] {
            let dev = |id: &str, index: Option<u32>, addr: u32| {
                let mut s = format!("virtio-blk-pci,drive={id},addr={addr:#x}");
                if let Some(i) = index {
                    s.push_str(&format!(",bootindex={i}"));
                }
                s
            };
            let out = firmware_vm(machine)
                .arg("-drive")
                .arg(format!("if=none,id=a,file={},format=raw", a.display()))
                .arg("-device")
                .arg(dev("a", index_a, 4))
                .arg("-drive")
                .arg(format!("if=none,id=b,file={},format=raw", b.display()))
                .arg("-device")
                .arg(dev("b", index_b, 5))
                .run();
            out.assert_stdout_contains(&format!("lba1: {expect}"));
            out.assert_stdout_contains("bootdisk: done");
            out.assert_status(0);
        }
    });
}

#[test]
fn microvm_has_no_pci_bus_for_virtio_pci() {
    // QEMU says the same words but exits 1; the exit status 2 is rvmm's contract.
    if skip_on_qemu("rvmm's exit status") {
        return;
    }
    expect_error(
        &["-M", "microvm", "-device", "virtio-rng-pci"],
        "No 'PCI' bus found for device 'virtio-rng-pci'",
    );
}

/// The IDs and class codes on bus 0 are QEMU 7.2's: transitional virtio-blk-pci,
/// virtio-rng-pci and virtio-net-pci by default, modern ones with `disable-legacy=on`
/// (guests/src/pci_scan.S).
#[test]
fn pci_identities_are_qemus() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-ids-{machine}"));
        let drive = |id: &str| {
            let disk = dir.file(&format!("{id}.raw"), &[0u8; 4096]);
            format!("file={},format=raw,if=none,id={id}", disk.display())
        };
        let out = VmCommand::guest("pci_scan.elf")
            .set_option("-M", machine)
            .arg("-drive")
            .arg(drive("d0"))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d0,addr=5")
            .arg("-device")
            .arg("virtio-rng-pci,addr=6")
            .arg("-drive")
            .arg(drive("d1"))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d1,addr=7,disable-legacy=on")
            .arg("-device")
            .arg("virtio-rng-pci,addr=0x8,disable-legacy=on")
            .arg("-netdev")
            .arg("user,id=n0")
            .arg("-device")
            .arg("virtio-net-pci,netdev=n0,addr=9")
            .arg("-netdev")
            .arg("user,id=n1")
            .arg("-device")
            .arg("virtio-net-pci,netdev=n1,addr=0xa,disable-legacy=on")
            .run();
        for line in [
            "pci 00:05.0 1af4:1001 class 010000",
            "pci 00:06.0 1af4:1005 class 00ff00",
            "pci 00:07.0 1af4:1042 class 010000",
            "pci 00:08.0 1af4:1044 class 00ff00",
            "pci 00:09.0 1af4:1000 class 020000",
            "pci 00:0a.0 1af4:1041 class 020000",
        ] {
            out.assert_stdout_contains(line);
        }
        out.assert_status(33);
    });
}

/// Queue notifications are ioeventfds at BAR4 + 0x3000, registered where the BAR was
/// programmed: 300 requests cost no exit on BAR4 beyond the driver's setup accesses.
#[test]
fn notifications_reach_the_device_without_exits() {
    if skip_on_qemu("rvmm's -exit-stats") {
        return;
    }
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-ioeventfd-{machine}"));
        let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
        let stats = dir.file("stats.json", &[]);
        let out = VmCommand::guest("virtio_bench_pci.elf")
            .set_option("-M", machine)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d0,disable-legacy=on")
            .arg("-exit-stats")
            .arg(format!("json={}", stats.display()))
            .append("n=300 bs=4096 qd=1")
            .run();
        out.assert_stdout_contains("virtio_bench: errors 0");
        out.assert_status(33);
        let text = fs::read_to_string(&stats).unwrap();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bar4_writes: u64 = report["vcpus"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["exits"].as_array().unwrap())
            .filter(|e| e["kind"] == "mmio-write" && e["device"] == "virtio-blk-pci Bar(4)")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        assert!(
            (1..50).contains(&bar4_writes),
            "{machine}: {bar4_writes} BAR4 write exits for 300 requests\n{text}"
        );
        let dev = &report["devices"][0];
        assert_eq!(dev["requests"], 300, "{dev}");
    });
}

/// Where the moved BAR4 goes: the middle of the 32-bit PCI window, free of what rvmm (bottom-up
/// from 0xc0000000) and SeaBIOS (top-down below 0xfec00000) place there. 0xd0000000.
const MOVED_BAR4: u32 = 0xd000_0000;

/// The guest moves BAR4 of a live virtio-blk-pci (DRIVER_OK, a request done through the old
/// address) and goes on through the new one: the common config, device config and the notify
/// ioeventfds moved with it, so 300 more requests complete and cost no BAR4 write exit
/// beyond the setup's. The transitional (default) function, found by its subsystem ID.
#[test]
fn notifications_follow_a_moved_bar4() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("vpci-move-{machine}"));
        let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
        let stats = dir.file("stats.json", &[]);
        let mut cmd = VmCommand::guest("virtio_bench_pci.elf")
            .set_option("-M", machine)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d0")
            .append(&format!("n=300 bs=4096 qd=1 move={MOVED_BAR4}"));
        if !common::is_qemu() {
            cmd = cmd
                .arg("-exit-stats")
                .arg(format!("json={}", stats.display()));
        }
        let out = cmd.run();
        out.assert_stdout_contains(&format!("virtio_bench: BAR4 moved to {MOVED_BAR4:#010x}"));
        out.assert_stdout_contains("virtio_bench: errors 0");
        out.assert_status(33);
        if common::is_qemu() {
            return;
        }
        let text = fs::read_to_string(&stats).unwrap();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bar4: Vec<&serde_json::Value> = report["vcpus"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["exits"].as_array().unwrap())
            .filter(|e| e["device"] == "virtio-blk-pci Bar(4)")
            .collect();
        let writes: u64 = bar4
            .iter()
            .filter(|e| e["kind"] == "mmio-write")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        // Without the move of the ioeventfds each of the 300 notifications would exit.
        assert!(
            (1..50).contains(&writes),
            "{machine}: {writes} BAR4 write exits for 300 requests after the move\n{text}"
        );
        for e in &bar4 {
            assert_eq!(e["range"], "0xd0000000-0xd0003fff", "{machine}: {e}");
        }
        let dev = &report["devices"][0];
        assert_eq!(dev["requests"], 301, "{dev}");
        assert_eq!(dev["errors"], 0, "{dev}");
    });
}
