//! qemu-xhci (docs/USB.md): guests/src/xhci.S brings the controller up as a polling driver
//! does, runs commands on the command ring and reads their completions from the event ring
//! (once through MSI-X), on q35 and pc; the transcript is QEMU 7.2's, and the same test passes
//! on QEMU (`RVMM_TEST_BIN`). SeaBIOS initializes the controller and still boots.

mod common;

use common::qmp::Qmp;
use common::{expect_error, skip_on_qemu, TempDir, VmCommand};
use serde_json::json;
use std::time::Duration;

/// What the guest prints with QEMU's default 4 + 4 ports, after its first line.
const TRANSCRIPT: &str = "\
xhci: caps 0x1000040 hcsparams1 0x8001040 hccparams1 0x87001
xhci: port 1 portsc 0x202a0
xhci: port 2 portsc 0x202a0
xhci: port 3 portsc 0x202a0
xhci: port 4 portsc 0x202a0
xhci: port 5 portsc 0x202a0
xhci: port 6 portsc 0x202a0
xhci: port 7 portsc 0x202a0
xhci: port 8 portsc 0x202a0
xhci: reset, usbsts 0x1
xhci: running, usbsts 0x0
";

const EVENTS: &str = "\
xhci: event type 33 cc 1 slot 0 trb 0
xhci: event type 33 cc 1 slot 1 trb 1
xhci: event type 33 cc 1 slot 2 trb 2
xhci: event type 33 cc 1 slot 1 trb 3
xhci: event type 33 cc 11 slot 0 trb 4
xhci: event type 33 cc 5 slot 2 trb 5
xhci: event type 33 cc 1 slot 0 trb 0
xhci: halted, usbsts 0x9
xhci: done
";

fn run(machine: &str, device: &str, append: Option<&str>) -> common::Output {
    let mut vm = VmCommand::guest("xhci.elf")
        .set_option("-M", machine)
        .arg("-device")
        .arg(device);
    if let Some(a) = append {
        vm = vm.append(a);
    }
    vm.run()
}

#[test]
fn a_driver_sees_empty_ports_and_commands_complete() {
    for machine in ["q35", "pc"] {
        let out = run(machine, "qemu-xhci", None);
        out.assert_status(33);
        out.assert_stdout_contains(&format!("xhci\n{TRANSCRIPT}{EVENTS}"));
    }
}

#[test]
fn the_first_completion_arrives_by_msix() {
    let out = run("q35", "qemu-xhci,id=usb", Some("msix"));
    out.assert_status(33);
    out.assert_stdout_contains(&format!(
        "xhci\n{TRANSCRIPT}xhci: interrupt on vector 0x30, iman 0x3\n{EVENTS}"
    ));
}

#[test]
fn port_counts_follow_p2_and_p3() {
    let out = run("q35", "qemu-xhci,p2=2,p3=1,addr=5", None);
    out.assert_status(33);
    out.assert_stdout_contains("hcsparams1 0x3001040 ");
    out.assert_stdout_contains("xhci: port 3 portsc 0x202a0\nxhci: reset");
    // QEMU caps each count at 15.
    let out = run("q35", "qemu-xhci,p2=99,p3=15", None);
    out.assert_status(33);
    out.assert_stdout_contains("hcsparams1 0x1e001040 ");
}

#[test]
fn seabios_initializes_it_and_boots() {
    let dir = TempDir::new("xhci-seabios");
    let boot = std::fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    let disk = dir.file("disk.img", &boot[..512]);
    // SeaBIOS does not boot a disk of one sector (neither on QEMU).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .expect("grow the disk");
    let stats = dir.path().join("stats.json");
    let mut vm = VmCommand::without_kernel()
        .arg("-machine")
        .arg("graphics=off")
        .arg("-drive")
        .arg(format!("file={},format=raw", disk.display()))
        .arg("-device")
        .arg("qemu-xhci");
    if !common::is_qemu() {
        vm = vm
            .arg("-exit-stats")
            .arg(format!("json={}", stats.display()));
    }
    let out = vm.run();
    out.assert_stdout_contains("bootdisk: done");
    out.assert_status(0);
    if skip_on_qemu("exit statistics are rvmm's") {
        return;
    }
    // SeaBIOS's xhci driver reset, set up and ran the controller, and read every port.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let count = |kind: &str| -> u64 {
        json["total"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["device"] == "qemu-xhci Bar(0)" && e["kind"] == kind)
            .map(|e| e["count"].as_u64().unwrap())
            .sum()
    };
    assert!(
        count("mmio-write") >= 12 && count("mmio-read") >= 20,
        "SeaBIOS barely touched the controller: {} writes, {} reads",
        count("mmio-write"),
        count("mmio-read")
    );
}

#[test]
fn bad_options_are_refused() {
    if skip_on_qemu("rvmm's messages") {
        return;
    }
    expect_error(
        &["-M", "microvm", "-device", "qemu-xhci"],
        "No 'PCI' bus found for device 'qemu-xhci'",
    );
    expect_error(
        &["-M", "q35", "-device", "qemu-xhci,p2=two"],
        "Parameter 'p2' expects uint32_t",
    );
    expect_error(&["-M", "q35", "-device", "qemu-xhci,msi=on"], "msi");
}

/// Polls `query-migrate` until it says completed.
fn wait_migrated(q: &mut Qmp) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = q.execute("query-migrate", json!({})).unwrap();
        match info["status"].as_str() {
            Some("completed") => return,
            Some("failed") => panic!("migration failed: {info}"),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "migration did not complete: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A snapshot of a running controller (rings, event ring segment, interrupter, MSI-X table):
/// the restored VM's guest rings the doorbell and gets the same completions, by MSI-X.
#[test]
fn a_running_controller_survives_a_snapshot() {
    let dir = TempDir::new("xhci-snap");
    let state = dir.path().join("state");
    let vm = |sock: &std::path::Path| {
        VmCommand::guest("xhci.elf")
            .stdin_pipe()
            .append("msix wait")
            .arg("-device")
            .arg("qemu-xhci,id=usb")
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
    };
    let sock = dir.path().join("save.sock");
    let mut saved = vm(&sock).spawn();
    saved.expect_stdout("xhci: waiting\n");
    let mut q = Qmp::connect(&sock);
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", state.display())}),
    )
    .unwrap();
    wait_migrated(&mut q);
    let _ = q.execute("quit", json!({}));
    saved.wait(Duration::from_secs(30));

    let sock = dir.path().join("load.sock");
    let mut restored = vm(&sock)
        .arg("-incoming")
        .arg(format!("exec:cat {}", state.display()))
        .arg("-S")
        .spawn();
    let mut q = Qmp::connect(&sock);
    wait_migrated(&mut q);
    q.execute("cont", json!({})).unwrap();
    restored.write_stdin(b"x");
    let out = restored.wait(Duration::from_secs(60));
    out.assert_status(33);
    // The restored guest printed only what came after the snapshot.
    out.assert_stdout_lacks("xhci: caps");
    out.assert_stdout_contains(&format!(
        "xhci: interrupt on vector 0x30, iman 0x3\n{EVENTS}"
    ));
}
