//! Snapshots of the default pc and q35 machines (docs/SNAPSHOT.md): the standard VGA, the
//! default NIC (virtio-net-pci on passt's user network) and a virtio-blk-pci disk whose
//! completions are MSI-X interrupts. snapdisk.elf writes sector N with byte N, waits for the
//! MSI-X completion, prints "count N" and draws row N of a VBE picture. It is saved with QMP
//! `migrate file:`; a new rvmm with `-incoming` must go on with "count N+1" (the queue position,
//! vector table, routes and timers came back), the disk must hold what the guest wrote, the
//! screen must be the saved one, and two restores from one snapshot must go on identically.

mod common;

use common::qmp::Qmp;
use common::snapfile::reframed;
use common::{skip_on_qemu, RunningVm, TempDir, VmCommand};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// `machine` may end in "+ports": two of libvirt's root ports (one empty, one with an RNG
/// behind it) come along, so their state goes through the snapshot too.
fn snapdisk(machine: &str, disk: &Path, qmp: &Path) -> VmCommand {
    let (machine, ports) = match machine.strip_suffix("+ports") {
        Some(m) => (m, true),
        None => (machine, false),
    };
    let mut cmd = VmCommand::guest("snapdisk.elf");
    if ports {
        cmd = cmd
            .arg("-device")
            .arg("pcie-root-port,port=0x10,chassis=1,id=pci.1,multifunction=on,addr=0x9")
            .arg("-device")
            .arg("pcie-root-port,port=0x11,chassis=2,id=pci.2,addr=0x9.0x1")
            .arg("-device")
            .arg("virtio-rng-pci,bus=pci.2,addr=0x0");
    }
    cmd.without_flag("-nodefaults")
        .set_option("-M", machine)
        .set_option("-m", "128")
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .arg("-device")
        .arg("virtio-blk-pci,drive=d0,disable-legacy=on")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
}

/// The "count N" numbers in `out`.
fn counts(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("count ")?.parse().ok())
        .collect()
}

/// The sectors 1..=last of `disk` hold the byte of their number, as the guest wrote them.
fn assert_disk(disk: &Path, last: u64) {
    let img = std::fs::read(disk).unwrap();
    for n in 1..=last {
        let sector = &img[n as usize * 512..(n as usize + 1) * 512];
        assert!(
            sector.iter().all(|&b| b == n as u8),
            "sector {n} is not what the guest wrote: {:02x?}",
            &sector[..8]
        );
    }
}

fn screendump(q: &mut Qmp, file: &Path) -> Vec<u8> {
    q.execute("screendump", json!({"filename": file.to_str().unwrap()}))
        .unwrap();
    let ppm = std::fs::read(file).unwrap();
    assert!(
        ppm.starts_with(b"P6\n320 200\n"),
        "not the guest's VBE mode"
    );
    ppm
}

fn wait_migrated(q: &mut Qmp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = q.execute("query-migrate", json!({})).unwrap();
        match info["status"].as_str() {
            Some("completed") => return info,
            Some("failed") => panic!("migration failed: {info}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "migrate did not complete: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs snapdisk.elf to "count 3", saves it to `state`, quits; returns the last count printed
/// and the saved screen.
fn save(machine: &str, dir: &TempDir, disk: &Path, state: &Path) -> (u64, Vec<u8>) {
    let qmp = dir.path().join("save.qmp");
    let mut vm = snapdisk(machine, disk, &qmp).spawn();
    vm.expect_stdout("count 3\n");
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", state.display())}),
    )
    .unwrap();
    let info = wait_migrated(&mut q);
    eprintln!("{machine}: saved in {} ms", info["total-time"]);
    // Paused in postmigrate: the picture is the saved one.
    let screen = screendump(&mut q, &dir.path().join("saved.ppm"));
    let out = vm.stdout();
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);
    let last = *counts(&out).last().expect("counts before the snapshot");
    (last, screen)
}

/// Restores `state` paused, checks its screen against `screen`, lets it run to `n` counts.
fn restore(
    machine: &str,
    dir: &TempDir,
    disk: &Path,
    state: &Path,
    screen: &[u8],
    n: usize,
) -> Vec<u64> {
    let qmp = dir.path().join("restore.qmp");
    let mut vm: RunningVm = snapdisk(machine, disk, &qmp)
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .arg("-S")
        .spawn();
    let mut q = Qmp::connect(&qmp);
    let info = q.execute("query-migrate", json!({})).unwrap();
    assert_eq!(info["status"], "completed", "{info}");
    eprintln!("{machine}: restored in {} ms", info["total-time"]);
    let restored = screendump(&mut q, &dir.path().join("restored.ppm"));
    assert!(
        restored == screen,
        "the restored screen differs from the saved one"
    );
    q.execute("cont", json!({})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(&vm.stdout()).len() < n && Instant::now() < deadline && !vm.exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = vm.kill();
    let got = counts(&out.stdout);
    assert!(got.len() >= n, "restored guest printed too little\n{out}");
    assert!(
        !out.stdout.contains("snapdisk: running"),
        "the restored guest booted again\n{out}"
    );
    got[..n].to_vec()
}

/// The snapshot holds the default devices (the VGA and the NIC) besides the disk.
fn assert_default_devices(state: &Path) {
    let bytes = std::fs::read(state).unwrap();
    let v: Value = serde_json::from_slice(&bytes[32..]).unwrap();
    let devices = &v["header"]["machine"]["devices"];
    for name in ["VGA", "virtio-net-pci Bar(4)", "virtio-blk-pci Bar(4)"] {
        assert!(
            devices.as_array().unwrap().iter().any(|d| d == name),
            "{name} not in {devices}"
        );
    }
}

fn continues(machine: &str, twice: bool) {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new(&format!("snapshot-pci-{}", machine.replace('+', "-")));
    let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
    let state = dir.path().join("state");
    let (last, screen) = save(machine, &dir, &disk, &state);
    assert_default_devices(&state);
    if machine.ends_with("+ports") {
        let bytes = std::fs::read(&state).unwrap();
        let v: Value = serde_json::from_slice(&bytes[32..]).unwrap();
        let text = v.to_string();
        for needle in [
            "pcie-root-port Bar(0)",
            "virtio-rng-pci Bar(4)",
            "PCIe root ports",
        ] {
            assert!(text.contains(needle), "{needle} not in the snapshot");
        }
    }
    assert_disk(&disk, last);
    let saved_disk = std::fs::read(&disk).unwrap();
    if twice {
        hostile_values_are_refused(machine, &dir, &disk, &state);
    }
    let first = restore(machine, &dir, &disk, &state, &screen, 3);
    assert_eq!(
        first,
        [last + 1, last + 2, last + 3],
        "saved at count {last}"
    );
    assert_disk(&disk, last + 3);
    if !twice {
        return;
    }
    let written = (last as usize + 4) * 512;
    let first_disk = std::fs::read(&disk).unwrap()[..written].to_vec();
    std::fs::write(&disk, &saved_disk).unwrap();
    let second = restore(machine, &dir, &disk, &state, &screen, 3);
    assert_eq!(first, second, "two restores went on differently");
    assert_eq!(
        std::fs::read(&disk).unwrap()[..written],
        first_disk[..],
        "two restores wrote different disks"
    );
}

/// An edit of the state, the error it must give, and whether the restoring VM has a CD-ROM on
/// the AHCI's port 0 that the saved VM did not have.
type Hostile = (fn(&mut Value), &'static str, bool);

/// Hostile VGA, virtio-pci and drive values behind a valid checksum: refused by name.
fn hostile_values_are_refused(machine: &str, dir: &TempDir, disk: &Path, state: &Path) {
    let bytes = std::fs::read(state).unwrap();
    let cases: [Hostile; 5] = [
        (
            |v| v["devices"]["VGA"][0]["regs"]["sr_index"] = json!(9),
            "device 'VGA': invalid state: VGA: register index out of range",
            false,
        ),
        (
            |v| v["devices"]["VGA"][0]["vram"] = json!([{"offset": 16 << 20, "data": "00"}]),
            "past its 16777216 bytes",
            false,
        ),
        (
            |v| {
                let fs = v["devices"]["virtio-pci"].as_array_mut().unwrap();
                let blk = fs.iter_mut().find(|f| f["transport"]["device_type"] == 2);
                let f = &mut blk.unwrap()["msix"]["entries"];
                f.as_array_mut().unwrap().pop();
            },
            "device 'virtio-pci': invalid state: virtio-blk-pci: MSI-X table of",
            false,
        ),
        (
            |v| v["devices"]["virtio-pci"][0]["devfn"] = json!(0xf8),
            "virtio-pci functions at",
            false,
        ),
        (
            |v| assert!(v["devices"]["ich9-ahci"]["ports"][0]["drive"].is_null()),
            "ich9-ahci: drives on ports",
            true,
        ),
    ];
    let bad = dir.path().join("bad");
    let mut mem = state.as_os_str().to_owned();
    mem.push(".mem");
    std::os::unix::fs::symlink(&mem, dir.path().join("bad.mem")).unwrap();
    let cd = dir.file("cd.iso", &vec![0u8; 1 << 20]);
    for (edit, needle, with_cd) in cases {
        std::fs::write(&bad, reframed(&bytes, edit)).unwrap();
        let mut cmd = snapdisk(machine, disk, &dir.path().join("bad.qmp"));
        if with_cd {
            cmd = cmd
                .arg("-drive")
                .arg(format!("file={},format=raw,media=cdrom", cd.display()));
        }
        let out = cmd
            .arg("-incoming")
            .arg(format!("file:{}", bad.display()))
            .timeout(Duration::from_secs(30))
            .run();
        assert_ne!(out.status, Some(0), "{out}");
        assert!(out.stderr.contains(needle), "wanted {needle:?}\n{out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}

#[test]
fn q35_default_devices_continue_after_restore_twice() {
    continues("q35", true);
}

#[test]
fn root_ports_and_a_device_behind_one_continue_after_restore() {
    continues("q35+ports", false);
}

#[test]
fn pc_default_devices_continue_after_restore() {
    continues("pc", false);
}

fn default_counter(qmp: &Path) -> VmCommand {
    VmCommand::guest("counter.elf")
        .without_flag("-nodefaults")
        .set_option("-m", "128")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
}

/// QMP `migrate` over `uri` to a q35 with its default devices started with `-incoming uri`
/// (QEMU's live-migration spelling), or with `-incoming defer` and `migrate-incoming uri`: the
/// destination answers QMP in `inmigrate` while it listens, then counts on from the source's
/// last count.
fn migrates_over(uri: &str, dir: &TempDir, tag: &str, defer: bool) {
    let src_qmp = dir.path().join(format!("{tag}-src.qmp"));
    let mut src = default_counter(&src_qmp).spawn();
    src.expect_stdout("count 3\n");
    let dst_qmp = dir.path().join(format!("{tag}-dst.qmp"));
    let mut dst = default_counter(&dst_qmp)
        .arg("-incoming")
        .arg(if defer { "defer" } else { uri })
        .spawn();
    let mut dq = Qmp::connect(&dst_qmp);
    if defer {
        dq.execute("migrate-incoming", json!({"uri": uri})).unwrap();
    }
    let status = dq.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "inmigrate", "{status}");
    let mut q = Qmp::connect(&src_qmp);
    // The destination listens once it is built: until then the connection is refused and the
    // source runs on, so try again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        q.execute("migrate", json!({"uri": uri})).unwrap();
        let info = loop {
            let info = q.execute("query-migrate", json!({})).unwrap();
            if matches!(info["status"].as_str(), Some("completed" | "failed")) {
                break info;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if info["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{uri}: migrate kept failing: {info}\n{}",
            dst.stdout()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "postmigrate", "{status}");
    let out = src.stdout();
    q.execute("quit", json!({})).unwrap();
    src.wait(Duration::from_secs(20)).assert_status(0);
    let last = *counts(&out).last().expect("counts before the migration");
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(&dst.stdout()).len() < 3 && Instant::now() < deadline && !dst.exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = dst.kill();
    let got = counts(&out.stdout);
    assert!(
        got.len() >= 3,
        "{uri}: the destination printed too little\n{out}"
    );
    assert!(
        !out.stdout.contains("counter: running"),
        "booted again\n{out}"
    );
    assert_eq!(got[..3], [last + 1, last + 2, last + 3], "{uri}\n{out}");
}

#[test]
fn unix_and_tcp_uris_migrate_to_a_listening_rvmm() {
    if skip_on_qemu("rvmm's snapshot stream") {
        return;
    }
    let dir = TempDir::new("snapshot-sockets");
    let sock = dir.path().join("migrate.sock");
    migrates_over(&format!("unix:{}", sock.display()), &dir, "unix", false);
    assert!(!sock.exists(), "the socket file stays after the migration");
    migrates_over(&format!("unix:{}", sock.display()), &dir, "defer", true);
    // A port the kernel just handed out (and took back) is free but for a rare race.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    migrates_over(&format!("tcp:127.0.0.1:{port}"), &dir, "tcp", false);
}

/// A 1 MiB raw disk: bootdisk.bin's boot sector, then a marker in LBA 1 that it prints.
fn boot_disk(dir: &TempDir) -> std::path::PathBuf {
    let boot = std::fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    let mut disk = vec![0u8; 1 << 20];
    disk[..512].copy_from_slice(&boot[..512]);
    disk[512..524].copy_from_slice(b"LBA1-MARKER\0");
    dir.file("boot.raw", &disk)
}

/// SeaBIOS saved in the middle of its boot (at its boot menu prompt: PCI set up, the drives
/// found and initialized, the boot sector not read yet) on pc and q35 with their default
/// devices and the boot disk on IDE, AHCI or virtio-blk-pci: the
/// restored firmware goes on with the same screen, boots the disk through its controller and
/// bootdisk.bin powers off. Nothing is printed twice: the firmware did not start again. The
/// restoring VM's BARs are unmapped until the config-space replay maps them where SeaBIOS put
/// them (with the virtio queue's ioeventfd at the new notify address).
#[test]
fn seabios_saved_mid_boot_boots_on_after_restore() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    for (machine, virtio) in [("q35", false), ("pc", false), ("q35", true)] {
        let dir = TempDir::new(&format!("snapshot-seabios-{machine}-{virtio}"));
        let disk = boot_disk(&dir);
        let drive = if virtio {
            vec![
                format!("file={},format=raw,if=none,id=d0", disk.display()),
                "virtio-blk-pci,drive=d0,bootindex=0".to_string(),
            ]
        } else {
            vec![format!("file={},format=raw", disk.display())]
        };
        let state = dir.path().join("state");
        let vm = |qmp: &Path| {
            let cmd = VmCommand::without_kernel()
                .without_flag("-nodefaults")
                .set_option("-M", machine)
                .set_option("-m", "128")
                .arg("-boot")
                .arg("menu=on,splash-time=3000")
                .arg("-drive")
                .arg(&drive[0]);
            let cmd = match drive.get(1) {
                Some(dev) => cmd.arg("-device").arg(dev),
                None => cmd,
            };
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        };
        let qmp = dir.path().join("save.qmp");
        let mut src = vm(&qmp).spawn();
        src.expect_stdout("Press ESC for boot menu.");
        let mut q = Qmp::connect(&qmp);
        q.execute(
            "migrate",
            json!({"uri": format!("file:{}", state.display())}),
        )
        .unwrap();
        wait_migrated(&mut q);
        let screen = std::fs::read({
            let f = dir.path().join("saved.ppm");
            q.execute("screendump", json!({"filename": f.to_str().unwrap()}))
                .unwrap();
            f
        })
        .unwrap();
        let before = src.stdout();
        q.execute("quit", json!({})).unwrap();
        src.wait(Duration::from_secs(20)).assert_status(0);
        assert!(
            !before.contains("bootdisk: done"),
            "{machine}: the snapshot came too late\n{before}"
        );

        let qmp = dir.path().join("restore.qmp");
        let dst = vm(&qmp)
            .arg("-incoming")
            .arg(format!("file:{}", state.display()))
            .arg("-S")
            .timeout(Duration::from_secs(90))
            .spawn();
        let mut q = Qmp::connect(&qmp);
        let f = dir.path().join("restored.ppm");
        q.execute("screendump", json!({"filename": f.to_str().unwrap()}))
            .unwrap();
        assert!(
            std::fs::read(&f).unwrap() == screen,
            "{machine}: the restored screen differs from the saved one"
        );
        q.execute("cont", json!({})).unwrap();
        let out = dst.wait(Duration::from_secs(90));
        out.assert_status(0);
        out.assert_stdout_contains("lba1: LBA1-MARKER");
        out.assert_stdout_contains("bootdisk: done");
        let whole = before + &out.stdout;
        assert_eq!(
            whole.matches("SeaBIOS (").count(),
            1,
            "{machine}: the firmware started again\n{out}"
        );
    }
}
