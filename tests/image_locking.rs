//! Image locks and image safety through the real binary: a second writer is refused before it
//! writes anything, rvmm and QEMU keep each other off an image in use (both ways), readers
//! share, backing files are locked for reading, `-snapshot` never changes the image, and a
//! qcow2 image stays consistent when rvmm is killed mid-write (docs/STORAGE.md).

mod common;

use common::{expect_error, run_limited, skip_on_qemu, RunningVm, TempDir, VmCommand};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const QEMU: &str = "qemu-system-x86_64";

/// A QEMU-style message for an image another process writes.
fn busy(perm: &str, path: &Path) -> String {
    format!(
        "Failed to get {perm} lock. Is another process using the image [{}]?",
        path.display()
    )
}

/// Runs a QEMU tool; panics if it cannot start.
fn tool(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install qemu-utils): {e}"))
}

fn tool_ok(program: &str, args: &[&str]) -> String {
    let out = tool(program, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

fn qcow2(dir: &TempDir, name: &str, backing: Option<&str>) -> PathBuf {
    let path = dir.path().join(name);
    let p = path.to_str().unwrap();
    match backing {
        Some(b) => tool_ok(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", p],
        ),
        None => tool_ok("qemu-img", &["create", "-q", "-f", "qcow2", p, "4M"]),
    };
    path
}

/// The file's bytes, modification time and size.
fn fingerprint(path: &Path) -> (Vec<u8>, SystemTime, u64) {
    let meta = fs::metadata(path).unwrap();
    (
        fs::read(path).unwrap(),
        meta.modified().unwrap(),
        meta.len(),
    )
}

/// How many OFD locks on byte 100 (QEMU's "consistent read" byte) the file has: one per user.
fn readers(path: &Path) -> usize {
    let ino = fs::metadata(path).unwrap().ino();
    let locks = fs::read_to_string("/proc/locks").unwrap();
    locks
        .lines()
        .filter(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.len() >= 8 && f[1] == "OFDLCK" && f[5].ends_with(&format!(":{ino}")) && f[6] == "100"
        })
        .count()
}

/// Waits until `path` has `n` users holding locks.
fn wait_for_users(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while readers(path) < n {
        assert!(
            Instant::now() < deadline,
            "{} never had {n} lock holders",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The arguments of an rvmm that opens `drive` (a -drive value) as virtio-blk and halts.
fn rvmm_args(drive: &str) -> Vec<String> {
    let kernel = common::guest("hlt.elf").display().to_string();
    [
        "-M",
        "microvm",
        "-nodefaults",
        "-display",
        "none",
        "-kernel",
        &kernel,
        "-drive",
        drive,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An rvmm paused before its first instruction (-S) with `drive` open, once its locks are in.
fn rvmm_holder(drive: &str, image: &Path) -> RunningVm {
    let users = readers(image);
    let vm = VmCommand::guest("hlt.elf")
        .set_option("-M", "microvm")
        .arg("-drive")
        .arg(drive)
        .arg("-S")
        .spawn();
    wait_for_users(image, users + 1);
    vm
}

/// The arguments of a QEMU that opens `drive` (a -drive value, if=none) and waits (-S).
fn qemu_args(drive: &str) -> Vec<String> {
    let args = [
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-M",
        "microvm",
    ];
    let more = ["-nodefaults", "-display", "none", "-S", "-drive"];
    args.iter()
        .chain(more.iter())
        .map(|s| s.to_string())
        .chain([format!("{drive},if=none,id=d")])
        .collect()
}

/// A QEMU process, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_holder(drive: &str, image: &Path) -> Qemu {
    let users = readers(image);
    let child = Command::new(QEMU)
        .args(qemu_args(drive))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {QEMU}: {e}"));
    let q = Qemu(child);
    wait_for_users(image, users + 1);
    q
}

fn have_qemu() -> bool {
    let ok = Command::new(QEMU)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {QEMU} is not installed");
    }
    ok
}

/// QEMU refuses `drive` with its lock message for `perm`, exit status 1.
fn qemu_refuses(drive: &str, perm: &str) {
    let (code, stderr, _) = run_limited(Path::new(QEMU), &qemu_args(drive), common::TIMEOUT);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("Failed to get {perm} lock"))
            && stderr.contains("Is another process using the image"),
        "{stderr}"
    );
}

#[test]
fn a_second_writer_is_refused_and_writes_nothing() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = TempDir::new("lock-writers");
    let img = qcow2(&dir, "a.qcow2", None);
    let drive = format!("file={},format=qcow2,if=virtio", img.display());
    let holder = rvmm_holder(&drive, &img);
    let before = fingerprint(&img);
    expect_error(&rvmm_args(&drive), &busy("\"write\"", &img));
    // A reader may not see it changing under it either (QEMU without share-rw).
    let ro = format!("{drive},readonly=on");
    expect_error(&rvmm_args(&ro), &busy("shared \"write\"", &img));
    assert!(
        before == fingerprint(&img),
        "the refused rvmm changed the image"
    );
    // file.locking=off (or locking=off) is the user's word that it is safe.
    let out = VmCommand::guest("virtio.elf")
        .set_option("-M", "microvm")
        .arg("-drive")
        .arg(format!("{ro},file.locking=off"))
        .run();
    out.assert_stdout_contains("virtio: done");
    out.assert_status(33);
    expect_error(
        &rvmm_args(&format!("{drive},locking=maybe")),
        "locking=maybe",
    );
    drop(holder);
    // The holder's locks went with it.
    drop(rvmm_holder(&drive, &img));
}

#[test]
fn rvmm_and_qemu_keep_each_other_off_an_image_in_use() {
    if skip_on_qemu("needs rvmm and QEMU side by side") || !have_qemu() {
        return;
    }
    let dir = TempDir::new("lock-qemu");
    let img = qcow2(&dir, "a.qcow2", None);
    let file = format!("file={},format=qcow2", img.display());
    let rvmm_drive = format!("{file},if=virtio");

    // QEMU writes: rvmm may neither write nor read.
    let q = qemu_holder(&file, &img);
    let before = fingerprint(&img);
    expect_error(&rvmm_args(&rvmm_drive), &busy("\"write\"", &img));
    expect_error(
        &rvmm_args(&format!("{rvmm_drive},readonly=on")),
        &busy("shared \"write\"", &img),
    );
    assert!(before == fingerprint(&img));
    drop(q);

    // rvmm writes: QEMU may neither write nor read, qemu-img only with -U.
    let vm = rvmm_holder(&rvmm_drive, &img);
    qemu_refuses(&file, "\"write\"");
    qemu_refuses(&format!("{file},readonly=on"), "shared \"write\"");
    let out = tool("qemu-img", &["info", img.to_str().unwrap()]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Failed to get shared \"write\" lock")
    );
    tool_ok("qemu-img", &["info", "-U", img.to_str().unwrap()]);
    drop(vm);

    // QEMU reads: rvmm may read too, not write; and the other way round.
    let q = qemu_holder(&format!("{file},readonly=on"), &img);
    let vm = rvmm_holder(&format!("{rvmm_drive},readonly=on"), &img);
    expect_error(&rvmm_args(&rvmm_drive), &busy("\"write\"", &img));
    drop(q);
    qemu_refuses(&file, "\"write\"");
    drop(vm);
}

#[test]
fn readers_share_an_image_and_keep_writers_off() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = TempDir::new("lock-readers");
    let img = qcow2(&dir, "a.qcow2", None);
    let ro = format!("file={},format=qcow2,if=virtio,readonly=on", img.display());
    let r1 = rvmm_holder(&ro, &img);
    let r2 = rvmm_holder(&ro, &img);
    assert_eq!(readers(&img), 2);
    // qemu-img info shares with readers.
    tool_ok("qemu-img", &["info", img.to_str().unwrap()]);
    let rw = format!("file={},format=qcow2,if=virtio", img.display());
    expect_error(&rvmm_args(&rw), &busy("\"write\"", &img));
    drop((r1, r2));
}

#[test]
fn backing_files_are_locked_for_reading() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = TempDir::new("lock-backing");
    let base = qcow2(&dir, "base.qcow2", None);
    let top = qcow2(&dir, "top.qcow2", Some("base.qcow2"));
    let vm = rvmm_holder(
        &format!("file={},format=qcow2,if=virtio", top.display()),
        &top,
    );
    assert_eq!(readers(&base), 1, "the backing file is not locked");
    let base_rw = format!("file={},format=qcow2,if=virtio", base.display());
    expect_error(&rvmm_args(&base_rw), &busy("\"write\"", &base));
    // Readers of the base are welcome: another overlay on it, qemu-img info.
    drop(rvmm_holder(&format!("{base_rw},readonly=on"), &base));
    tool_ok("qemu-img", &["info", base.to_str().unwrap()]);
    if have_qemu() {
        qemu_refuses(
            &format!("file={},format=qcow2", base.display()),
            "\"write\"",
        );
    }
    drop(vm);
}

/// virtio.elf on microvm with `drive` as virtio-blk: reads sector 0, writes sector 1, flushes.
fn virtio_writer(drive: &str) -> VmCommand {
    VmCommand::guest("virtio.elf")
        .set_option("-M", "microvm")
        .append("blk")
        .arg("-drive")
        .arg(format!("{drive},if=none,id=d0"))
        .arg("-device")
        .arg("virtio-blk-device,drive=d0")
}

#[test]
fn snapshot_writes_never_reach_the_image() {
    let dir = TempDir::new("snapshot");
    let raw = dir.file("disk.raw", &[0u8; 1 << 20]);
    let top = qcow2(&dir, "top.qcow2", None);
    for (path, format) in [(&raw, "raw"), (&top, "qcow2")] {
        let drive = format!("file={},format={format}", path.display());
        for (extra, global) in [("", true), (",snapshot=on", false)] {
            let before = fingerprint(path);
            let mut cmd = virtio_writer(&format!("{drive}{extra}"));
            if global {
                cmd = cmd.arg("-snapshot");
            }
            let out = cmd.run();
            out.assert_stdout_contains("virtio-blk: wrote sector 1, flush status 0");
            out.assert_status(33);
            assert!(
                before == fingerprint(path),
                "{} changed: {out}",
                path.display()
            );
        }
        // snapshot=off wins over -snapshot: the guest's write lands.
        let before = fingerprint(path);
        let out = virtio_writer(&format!("{drive},snapshot=off"))
            .arg("-snapshot")
            .run();
        out.assert_status(33);
        assert!(before != fingerprint(path), "{} unchanged", path.display());
    }
}

/// A 128 MiB qcow2 image whose boot sector writes to it forever (guests/src/writedisk.S),
/// flushing after each write if `flush`.
fn writedisk_image(dir: &TempDir, flush: bool) -> PathBuf {
    let mut boot = fs::read(common::guest("writedisk.bin")).expect("writedisk.bin");
    boot[509] = flush.into();
    let raw = dir.file("writedisk.raw", &boot);
    fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    let img = dir.path().join("writedisk.qcow2");
    tool_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    img
}

fn writedisk_vm(img: &Path) -> RunningVm {
    let mut vm = VmCommand::without_kernel()
        .set_option("-M", "pc")
        .arg("-machine")
        .arg("graphics=off")
        .arg("-drive")
        .arg(format!("file={},format=qcow2", img.display()))
        .spawn();
    vm.expect_stdout("writedisk: 64 writes");
    vm
}

/// `qemu-img check`: 0 is clean, 3 is leaked clusters only (harmless, as QEMU says); 2 or 1
/// is corruption or a failed check.
fn qemu_img_check(img: &Path) -> (i32, String) {
    let out = tool("qemu-img", &["check", "-f", "qcow2", img.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The allocated clusters `qemu-img check` counts ("N/M = x% allocated").
fn allocated(check: &str) -> u64 {
    check
        .lines()
        .find(|l| l.contains("allocated"))
        .and_then(|l| l.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no allocation count in:\n{check}"))
}

#[test]
fn a_qcow2_image_survives_sigkill_mid_write() {
    let dir = TempDir::new("sigkill");
    let img = writedisk_image(&dir, true);
    for pause_ms in [0, 300, 900] {
        let size = fs::metadata(&img).unwrap().len();
        let vm = writedisk_vm(&img);
        thread::sleep(Duration::from_millis(pause_ms));
        let out = vm.kill();
        assert_eq!(out.status, None, "{out}");
        let (code, text) = qemu_img_check(&img);
        eprintln!("qemu-img check after SIGKILL {pause_ms} ms in: status {code}\n{text}");
        assert!(code == 0 || code == 3, "after SIGKILL: {text}");
        assert!(!text.contains("ERROR"), "after SIGKILL: {text}");
        assert!(fs::metadata(&img).unwrap().len() >= size);
        // The guest flushes after each write: what it wrote is in the image's tables.
        assert!(
            allocated(&text) > 64,
            "the guest's writes are missing: {text}"
        );
    }
}

#[test]
fn sighup_sigterm_and_sigint_flush_the_disk() {
    if skip_on_qemu("rvmm's exit message") {
        return;
    }
    let dir = TempDir::new("sighup");
    // The guest never flushes: its writes reach the image's tables only through rvmm's exit.
    let img = writedisk_image(&dir, false);
    for signal in ["HUP", "TERM", "INT"] {
        let vm = writedisk_vm(&img);
        vm.signal(signal);
        let out = vm.wait(common::TIMEOUT);
        out.assert_status(0);
        assert!(out.stderr.contains("terminating on signal"), "{out}");
        let (code, text) = qemu_img_check(&img);
        assert_eq!(code, 0, "after SIG{signal}: {text}");
        assert!(
            allocated(&text) > 64,
            "the guest's writes are missing: {text}"
        );
    }
}

/// `-M machine -drive file=IMAGE,if=none,id=d0 -device DEVICE,drive=d0[,share-rw=on] -S`.
fn device_args(machine: &str, file: &str, device: &str, share_rw: bool) -> Vec<String> {
    let share = if share_rw { ",share-rw=on" } else { "" };
    [
        "-M",
        machine,
        "-nodefaults",
        "-display",
        "none",
        "-S",
        "-drive",
        &format!("{file},if=none,id=d0"),
        "-device",
        &format!("{device},drive=d0{share}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A VMM (`program`: rvmm or QEMU) paused with the device open, once its locks are in.
fn device_holder(program: &Path, args: &[String], image: &Path) -> Qemu {
    let users = readers(image);
    let mut cmd = Command::new(program);
    if program == Path::new(QEMU) {
        cmd.args(["-enable-kvm", "-cpu", "host,-arch-capabilities"]);
    } else {
        cmd.arg("-kernel").arg(common::guest("hlt.elf"));
    }
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let held = Qemu(child);
    wait_for_users(image, users + 1);
    held
}

/// `share-rw=on` on virtio-blk-device, virtio-blk-pci and ide-hd, as QEMU: writers of a raw
/// image that all share write coexist (rvmm with rvmm and with QEMU); one without share-rw is
/// refused in QEMU's words; a qcow2 image never has two writers, share-rw or not.
#[test]
fn share_rw_lets_raw_writers_share_an_image() {
    if skip_on_qemu("runs rvmm and QEMU side by side") {
        return;
    }
    let dir = TempDir::new("lock-share-rw");
    let raw = dir.file("a.raw", &[0u8; 1 << 20]);
    let rvmm = common::binary();
    let raw_file = format!("file={},format=raw", raw.display());
    for (machine, device) in [
        ("microvm", "virtio-blk-device"),
        ("q35", "virtio-blk-pci"),
        ("pc", "ide-hd"),
    ] {
        let shared = device_args(machine, &raw_file, device, true);
        let a = device_holder(&rvmm, &shared, &raw);
        let b = device_holder(&rvmm, &shared, &raw);
        // Without share-rw, the newcomer will not let the others write.
        let unshared = device_args(machine, &raw_file, device, false);
        expect_error(&unshared, &busy("shared \"write\"", &raw));
        drop((a, b));
        // A writer without share-rw keeps share-rw writers off too.
        let a = device_holder(&rvmm, &unshared, &raw);
        expect_error(&shared, &busy("\"write\"", &raw));
        drop(a);
    }
    // A qcow2 image's metadata has one writer: share-rw changes nothing there.
    let img = qcow2(&dir, "a.qcow2", None);
    let qcow2_file = format!("file={},format=qcow2", img.display());
    let shared = device_args("microvm", &qcow2_file, "virtio-blk-device", true);
    let a = device_holder(&rvmm, &shared, &img);
    expect_error(&shared, &busy("\"write\"", &img));
    drop(a);
    if !have_qemu() {
        return;
    }
    // With QEMU: share-rw writers coexist whichever starts first; QEMU without it is refused.
    let shared = device_args("q35", &raw_file, "virtio-blk-pci", true);
    let q = device_holder(Path::new(QEMU), &shared, &raw);
    let vm = device_holder(&rvmm, &shared, &raw);
    drop(q);
    let q = device_holder(Path::new(QEMU), &shared, &raw);
    let mut unshared = vec![
        "-enable-kvm".to_string(),
        "-cpu".into(),
        "host,-arch-capabilities".into(),
    ];
    unshared.extend(device_args("q35", &raw_file, "virtio-blk-pci", false));
    let (code, stderr, _) = run_limited(Path::new(QEMU), &unshared, common::TIMEOUT);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Failed to get shared \"write\" lock"),
        "{stderr}"
    );
    drop((q, vm));
}
