//! virtio-balloon-pci (docs/BALLOON.md): guests/src/balloon.S inflates 4096 pages when QMP
//! `balloon` sets a target; the pages read zero in the guest afterwards, the VMM's RSS drops,
//! QMP `query-balloon` and BALLOON_CHANGE follow the driver's `actual`, and `qom-get`/`qom-set`
//! serve libvirt's statistics properties. Runs on QEMU too (`RVMM_TEST_BIN`).

mod common;

use common::qmp::Qmp;
use common::{expect_error, TempDir, VmCommand};
use serde_json::json;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const RAM: u64 = 64 * MIB;

/// The process's resident memory in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Reads QMP messages until a BALLOON_CHANGE with `actual` arrives (or one already came).
fn wait_balloon_change(q: &mut Qmp, actual: u64) {
    let seen = |q: &Qmp| {
        q.events
            .iter()
            .any(|e| e["event"] == "BALLOON_CHANGE" && e["data"]["actual"] == actual)
    };
    while !seen(q) {
        let v = q.read();
        q.events.push(v);
    }
}

/// balloon.elf on q35 with `-m 64`, a balloon `balloon0` and QMP on `sock`.
fn balloon_vm(sock: &std::path::Path) -> VmCommand {
    VmCommand::guest("balloon.elf")
        .set_option("-m", "64")
        .stdin_pipe()
        .arg("-device")
        .arg("virtio-balloon-pci,id=balloon0")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
}

/// Polls `query-migrate` until it says completed (a save's, or an incoming state's load).
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

#[test]
fn inflating_returns_memory_and_qmp_follows() {
    let dir = TempDir::new("balloon");
    let sock = dir.path().join("qmp.sock");
    let mut vm = balloon_vm(&sock).spawn();
    vm.expect_stdout("ready\n");
    let mut q = Qmp::connect(&sock);
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": RAM })
    );
    // libvirt's statistics properties on the device's QOM path: the guest's buffer (free
    // memory 0x1234000, total 64 MiB), and after a polling interval the refreshed one.
    let path = "/machine/peripheral/balloon0";
    // libvirt finds the balloon's path this way (qemuMonitorJSONFindLinkPath).
    let peripherals = q
        .execute("qom-list", json!({"path": "/machine/peripheral"}))
        .unwrap();
    assert!(
        peripherals
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "balloon0" && p["type"] == "child<virtio-balloon-pci>"),
        "{peripherals}"
    );
    assert_eq!(
        q.execute("qom-get", json!({"path": path, "property": "type"}))
            .unwrap(),
        json!("virtio-balloon-pci")
    );
    let free_memory = |q: &mut Qmp| {
        let stats = q
            .execute("qom-get", json!({"path": path, "property": "guest-stats"}))
            .unwrap();
        assert!(stats["last-update"].is_i64(), "{stats}");
        stats["stats"]["stat-free-memory"].as_u64()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while free_memory(&mut q) != Some(0x1234000) {
        assert!(
            std::time::Instant::now() < deadline,
            "no statistics from the guest"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = q
        .execute("qom-get", json!({"path": path, "property": "guest-stats"}))
        .unwrap();
    assert_eq!(stats["stats"]["stat-total-memory"], json!(RAM));
    assert_eq!(stats["stats"]["stat-swap-in"], json!(u64::MAX), "{stats}");
    assert_eq!(stats["stats"].as_object().unwrap().len(), 10);
    q.execute(
        "qom-set",
        json!({"path": path, "property": "guest-stats-polling-interval", "value": 1}),
    )
    .unwrap();
    assert_eq!(
        q.execute(
            "qom-get",
            json!({"path": path, "property": "guest-stats-polling-interval"})
        )
        .unwrap(),
        json!(1)
    );
    vm.expect_stdout("balloon: stats 1\n");
    while free_memory(&mut q) == Some(0x1234000) {
        assert!(
            std::time::Instant::now() < deadline,
            "refreshed statistics never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        free_memory(&mut q).is_some_and(|f| f >= 0x1235000),
        "the refreshed buffer's free memory is N * 4096 above the first"
    );
    q.execute(
        "qom-set",
        json!({"path": path, "property": "guest-stats-polling-interval", "value": 0}),
    )
    .unwrap();
    let err = q
        .execute(
            "qom-set",
            json!({"path": path, "property": "guest-stats-polling-interval", "value": -1}),
        )
        .unwrap_err();
    assert_eq!(err, "timer value must be greater than zero");
    assert_eq!(
        q.execute("balloon", json!({"value": 0})).unwrap_err(),
        "Parameter 'target' expects a size"
    );

    let before = rss(vm.pid());
    q.execute("balloon", json!({"value": RAM - 16 * MIB}))
        .unwrap();
    vm.expect_stdout("balloon: target 4096\n");
    vm.expect_stdout("balloon: inflated 4096 pages, all read zero\n");
    wait_balloon_change(&mut q, RAM - 16 * MIB);
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": RAM - 16 * MIB })
    );
    let after = rss(vm.pid());
    eprintln!(
        "balloon: RSS {} KiB before inflating 16 MiB, {} KiB after",
        before / 1024,
        after / 1024
    );
    assert!(
        after + 12 * MIB <= before,
        "RSS went from {before} to {after} bytes: the 16 MiB were not given back"
    );

    // Target back at the RAM size: the guest deflates, and exits on a byte from us.
    q.execute("balloon", json!({"value": RAM})).unwrap();
    vm.expect_stdout("balloon: deflated\n");
    wait_balloon_change(&mut q, RAM);
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": RAM })
    );
    vm.write_stdin(b"x");
    vm.wait(Duration::from_secs(60)).assert_status(33);
}

#[test]
fn qmp_without_a_balloon_says_so() {
    let dir = TempDir::new("noballoon");
    let sock = dir.path().join("qmp.sock");
    let mut vm = VmCommand::guest("hlt.elf")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn();
    vm.expect_stdout("halting");
    let mut q = Qmp::connect(&sock);
    for (cmd, args) in [
        ("query-balloon", json!({})),
        ("balloon", json!({"value": 1 << 20})),
    ] {
        assert_eq!(
            q.execute(cmd, args).unwrap_err(),
            "No balloon device has been activated"
        );
    }
    let _ = q.execute("quit", json!({}));
    vm.wait(Duration::from_secs(30));
}

#[test]
fn microvm_takes_the_mmio_balloon() {
    let dir = TempDir::new("mmioballoon");
    let sock = dir.path().join("qmp.sock");
    let mut vm = VmCommand::guest("hlt.elf")
        .set_option("-M", "microvm")
        .arg("-device")
        .arg("virtio-balloon-device,id=b0,deflate-on-oom=on,free-page-reporting=on")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn();
    vm.expect_stdout("halting");
    let mut q = Qmp::connect(&sock);
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": 256 * MIB })
    );
    // No driver: the target is set, nothing changes until a driver comes.
    q.execute("balloon", json!({"value": 128 * MIB})).unwrap();
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": 256 * MIB })
    );
    let _ = q.execute("quit", json!({}));
    vm.wait(Duration::from_secs(30));
}

#[test]
fn a_second_balloon_is_refused() {
    if common::skip_on_qemu("QEMU's message has its own device path prefix") {
        return;
    }
    expect_error(
        &[
            "-M",
            "q35",
            "-device",
            "virtio-balloon-pci",
            "-device",
            "virtio-balloon-pci",
        ],
        "Only one balloon device is supported",
    );
}

/// A snapshot taken with the balloon inflated: the restored VM knows the target, `actual` and
/// (rvmm only) the polling interval, and its guest deflates when the target goes back.
#[test]
fn the_balloon_survives_a_snapshot() {
    let dir = TempDir::new("balloonsnap");
    let sock = dir.path().join("save.sock");
    let state = dir.path().join("state");
    let mut vm = balloon_vm(&sock).spawn();
    vm.expect_stdout("ready\n");
    let mut q = Qmp::connect(&sock);
    let path = "/machine/peripheral/balloon0";
    q.execute(
        "qom-set",
        json!({"path": path, "property": "guest-stats-polling-interval", "value": 7}),
    )
    .unwrap();
    q.execute("balloon", json!({"value": RAM - 16 * MIB}))
        .unwrap();
    vm.expect_stdout("all read zero\n");
    wait_balloon_change(&mut q, RAM - 16 * MIB);
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", state.display())}),
    )
    .unwrap();
    wait_migrated(&mut q);
    let _ = q.execute("quit", json!({}));
    vm.wait(Duration::from_secs(30));

    let sock = dir.path().join("load.sock");
    let mut vm = balloon_vm(&sock)
        .arg("-incoming")
        .arg(format!("exec:cat {}", state.display()))
        .spawn();
    let mut q = Qmp::connect(&sock);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while q.execute("query-status", json!({})).unwrap()["status"] == "inmigrate" {
        assert!(
            std::time::Instant::now() < deadline,
            "the incoming state never loaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        q.execute("query-balloon", json!({})).unwrap(),
        json!({ "actual": RAM - 16 * MIB })
    );
    assert_eq!(
        q.execute(
            "qom-get",
            json!({"path": path, "property": "guest-stats-polling-interval"})
        )
        .unwrap(),
        // QEMU does not migrate the interval (libvirt sets it again); rvmm keeps it.
        json!(if common::is_qemu() { 0 } else { 7 })
    );
    q.execute("cont", json!({})).unwrap();
    q.execute("balloon", json!({"value": RAM})).unwrap();
    vm.expect_stdout("balloon: deflated\n");
    wait_balloon_change(&mut q, RAM);
    vm.write_stdin(b"x");
    vm.wait(Duration::from_secs(60)).assert_status(33);
}

/// Free page reporting (`free-page-reporting=on`): the guest reports 2 MiB it touched as free;
/// the pages read zero afterwards and the VMM's RSS drops.
#[test]
fn free_page_reporting_returns_memory() {
    let dir = TempDir::new("balloon-report");
    let sock = dir.path().join("qmp.sock");
    let mut vm = VmCommand::guest("balloon.elf")
        .set_option("-m", "64")
        .stdin_pipe()
        .append("report")
        .arg("-device")
        .arg("virtio-balloon-pci,id=balloon0,free-page-reporting=on")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn();
    vm.expect_stdout("balloon: touched report area\n");
    let before = rss(vm.pid());
    vm.write_stdin(b"x");
    vm.expect_stdout("balloon: reported 2 MiB, all read zero\n");
    let after = rss(vm.pid());
    eprintln!(
        "free page reporting: RSS {} KiB before reporting 2 MiB, {} KiB after",
        before / 1024,
        after / 1024
    );
    assert!(
        after + 3 * MIB / 2 <= before,
        "RSS went from {before} to {after} bytes: the reported 2 MiB were not given back"
    );
    vm.write_stdin(b"x");
    vm.wait(Duration::from_secs(60)).assert_status(33);
}
