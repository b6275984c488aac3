//! PCI bridges: `-device pcie-root-port` as libvirt writes it for a q35 domain, with a
//! virtio-blk-pci disk behind a port (`bus=pci.2`).
//!
//! guests/src/pci_tree.S walks the tree through ECAM after rvmm (direct kernel boot) or SeaBIOS
//! (QEMU) numbered the buses, numbers the ports itself, and prints each port's configuration
//! space and the device behind it. The output is checked here and compared with QEMU 7.2's
//! for the same command line. QEMU's q35 gives cold-plugged root ports to ACPI PCI hot-plug by
//! default; rvmm has native PCIe hot-plug only, which QEMU gives with
//! `-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off`, so QEMU runs with that.
//! SeaBIOS boots a disk behind a port by its `bootindex=`. QMP `device_del` of that disk goes
//! through the port's attention button and the guest powering the slot off
//! (guests/src/pci_unplug.S), on rvmm and on QEMU.

mod common;

use common::qmp::Qmp;
use common::{binary, is_qemu, without_escapes, TempDir, VmCommand};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// QEMU's native-hot-plug setting for root ports, which is what rvmm implements.
const QEMU_NATIVE_HOTPLUG: &str = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off";

/// libvirt's two first root ports of a q35 domain (multifunction at 00:02), a disk on the second.
fn with_ports(cmd: VmCommand, disk: &Path) -> VmCommand {
    cmd.arg("-device")
        .arg("pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x2")
        .arg("-device")
        .arg("pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x2.0x1")
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=libvirt-1-format,format=raw",
            disk.display()
        ))
        .arg("-device")
        .arg("virtio-blk-pci,bus=pci.2,addr=0x0,drive=libvirt-1-format,id=virtio-disk0,bootindex=1")
}

/// A 1 MiB raw disk: bootdisk.bin's boot sector and `marker` at LBA 1.
fn boot_disk(dir: &TempDir, name: &str, marker: &str) -> PathBuf {
    let boot = fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    let mut img = vec![0u8; 1 << 20];
    img[..512].copy_from_slice(&boot[..512]);
    img[512..512 + marker.len()].copy_from_slice(marker.as_bytes());
    dir.file(name, &img)
}

/// pci_tree.elf's lines (without the VMM's own notes).
fn tree(program: &Path, disk: &Path) -> Vec<String> {
    let mut cmd = with_ports(VmCommand::guest("pci_tree.elf").program(program), disk);
    if program.to_string_lossy().contains("qemu") {
        cmd = cmd
            .set_option("-cpu", "host,-arch-capabilities")
            .arg("-global")
            .arg(QEMU_NATIVE_HOTPLUG);
    }
    let out = cmd.run();
    out.assert_status(33);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with("rvmm: ") && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn root_ports_read_as_qemus_and_reach_the_disk_behind_them() {
    let dir = TempDir::new("pci-bridge-tree");
    let disk = boot_disk(&dir, "disk.img", "PORT-MARKER");
    let lines = tree(&binary(), &disk);
    let text = lines.join("\n");
    for needle in [
        // Red Hat's root ports, numbered by the guest (not firmware's 1 and 2).
        "bridge 00:02.0 1b36:000c bus 11",
        "bridge 00:02.1 1b36:000c bus 12",
        // Type 1 header, multifunction on 02.0 only; bus numbers as written.
        "cfg 000: 000c1b36 00100000 06040000 00810000",
        "cfg 000: 000c1b36 00100000 06040000 00010000",
        "cfg 010: 00000000 00000000 00121200 000000f0",
        // SSVID, MSI-X (BAR0, PBA at 0x800), PCIe root port v2 with a slot.
        "cfg 040: 0000000d 00001b36 00004011 00000000",
        "cfg 050: 00000800 01424810 00008000 00000000",
        // Empty port: no link, slot powered off; the other: x1 2.5 GT/s link up, present.
        "cfg 060: 10300604 02040000 0002007b 000007c0",
        "cfg 060: 11300604 20110000 0002007b 004001c0",
        // AER and ACS.
        "cfg 100: 14820001 00000000 00000000 00462030",
        "cfg 140: 00000000 00000000 0001000d 0000005f",
        // A Slot Control write completes a command; the status bit is write-1-to-clear.
        "slot ctl 01c0 sta 0040\nslot ctl 01d0 sta 0050\nslot ctl 01d0 sta 0040",
        // The disk behind pci.2: modern-only virtio-blk, a PCIe endpoint (caps 0x10, 0x01).
        "dev 12:00.0 1af4:1042 class 010000 caps 11 09 09 09 09 09 01 10",
        "cfg 040: 00020010 10008000 00000000 00000411",
        "old bus 01: ffffffff",
        "pci_tree: done",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("dev 11:"),
        "nothing behind the empty port:\n{text}"
    );
    if is_qemu() {
        return;
    }
    if !Path::new(QEMU).exists() {
        eprintln!("skipped the comparison with QEMU: no {QEMU}");
        return;
    }
    let qemu = tree(Path::new(QEMU), &disk);
    assert_eq!(lines, qemu, "rvmm's tree differs from QEMU's");
}

#[test]
fn seabios_boots_the_disk_behind_a_root_port_by_its_bootindex() {
    let dir = TempDir::new("pci-bridge-seabios");
    let behind = boot_disk(&dir, "behind.img", "PORT-MARKER");
    let root = boot_disk(&dir, "root.img", "ROOT-MARKER");
    // SeaBIOS finds the root bus disk first; only the boot order makes it pick the other.
    let mut cmd = with_ports(VmCommand::without_kernel(), &behind)
        .arg("-machine")
        .arg("graphics=off")
        .arg("-drive")
        .arg(format!("file={},if=none,id=d1,format=raw", root.display()))
        .arg("-device")
        .arg("virtio-blk-pci,drive=d1,addr=0x5,bootindex=2");
    if is_qemu() {
        cmd = cmd.arg("-global").arg(QEMU_NATIVE_HOTPLUG);
    }
    let out = cmd.run();
    let text = without_escapes(&out.stdout);
    assert!(text.contains("SeaBIOS"), "{text}");
    assert!(text.contains("lba1: PORT-MARKER"), "{text}");
    assert!(text.contains("bootdisk: done"), "{text}");
    out.assert_status(0);
}

#[test]
fn bad_bus_names_are_refused_by_name() {
    if is_qemu() {
        return;
    }
    common::expect_error(
        &[
            "-M",
            "q35",
            "-device",
            "pcie-root-port,id=pci.1,chassis=1",
            "-device",
            "virtio-rng-pci,bus=pci.7",
        ],
        "Bus 'pci.7' not found",
    );
    common::expect_error(
        &[
            "-M",
            "q35",
            "-device",
            "pcie-root-port,id=a,chassis=1",
            "-device",
            "pcie-root-port,id=b,chassis=1",
        ],
        "Can't add chassis slot",
    );
}

/// Runs pci_unplug.elf with a disk behind libvirt's second port: QMP `device_del` of the disk
/// once the guest is ready; returns the guest's output and the QMP events and errors seen.
fn unplug(program: &Path, dir: &TempDir, disk: &Path) -> (String, Vec<serde_json::Value>) {
    let qmp = dir.path().join(format!(
        "{}.qmp",
        program.file_name().unwrap().to_string_lossy()
    ));
    let mut cmd = with_ports(VmCommand::guest("pci_unplug.elf").program(program), disk)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    if program.to_string_lossy().contains("qemu") {
        cmd = cmd
            .set_option("-cpu", "host,-arch-capabilities")
            .arg("-global")
            .arg(QEMU_NATIVE_HOTPLUG);
    }
    let mut vm = cmd.spawn();
    let mut q = Qmp::connect(&qmp);
    vm.expect_stdout("ready\n");
    // Unknown devices and devices on the root bus are refused as QEMU refuses them.
    let e = q.execute("device_del", json!({"id": "nope"})).unwrap_err();
    assert_eq!(e, "Device 'nope' not found");
    q.execute("device_del", json!({"id": "virtio-disk0"}))
        .unwrap();
    // Refused while the guest works on it, or unknown once it is done (the guest polls).
    let again = q.execute("device_del", json!({"id": "virtio-disk0"}));
    assert!(
        again.as_ref().is_err_and(|e| {
            e == "Device virtio-disk0 is already in the process of unplug"
                || e == "Device 'virtio-disk0' not found"
        }),
        "{again:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !q
        .events
        .iter()
        .any(|e| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == "virtio-disk0")
    {
        assert!(
            Instant::now() < deadline,
            "no DEVICE_DELETED: {:?}",
            q.events
        );
        let v = q.read();
        q.events.push(v);
    }
    vm.expect_stdout("pci_unplug: done\n");
    let e = q
        .execute("device_del", json!({"id": "virtio-disk0"}))
        .unwrap_err();
    assert_eq!(e, "Device 'virtio-disk0' not found");
    q.execute("quit", json!({})).unwrap();
    let out = vm.wait(Duration::from_secs(60));
    out.assert_status(0);
    assert!(
        !out.stderr.contains("warning") && !out.stderr.contains("error"),
        "{out}"
    );
    let events = q
        .events
        .iter()
        .filter(|e| e["event"] == "DEVICE_DELETED")
        .map(|e| e["data"].clone())
        .collect();
    (out.stdout, events)
}

#[test]
fn device_del_presses_the_button_and_the_guest_powering_off_removes_the_disk() {
    let dir = TempDir::new("pci-bridge-unplug");
    let disk = boot_disk(&dir, "disk.img", "PORT-MARKER");
    let (out, events) = unplug(&binary(), &dir, &disk);
    let steps =
        "dev 11:00.0 1af4:1042\nready\nbutton\npowered off\ngone\nslot sta 0018\npci_unplug: done\n";
    assert!(out.contains(steps), "no {steps:?} in:\n{out}");
    assert_eq!(
        events,
        [
            json!({"path": "/machine/peripheral/virtio-disk0/virtio-backend"}),
            json!({"device": "virtio-disk0", "path": "/machine/peripheral/virtio-disk0"}),
        ]
    );
    if is_qemu() || !Path::new(QEMU).exists() {
        return;
    }
    let (qout, qevents) = unplug(Path::new(QEMU), &dir, &disk);
    let guest = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("rvmm: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(guest(&out), guest(&qout));
    assert_eq!(events, qevents);
}
