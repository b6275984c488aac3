//! Snapshots through the real binary (docs/SNAPSHOT.md): QMP `migrate` to `file:` while
//! counter.elf counts timer interrupts, then a new rvmm with `-incoming` that must go on with the
//! next count; restoring twice; refusals (other command line, hostile files, devices without
//! saved state) that name what is wrong.

mod common;

use common::qmp::Qmp;
use common::snapfile::reframed;
use common::{skip_on_qemu, RunningVm, TempDir, VmCommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn counter(machine: &str, smp: u32, qmp: &Path) -> VmCommand {
    VmCommand::guest("counter.elf")
        .set_option("-M", machine)
        .set_option("-m", "128")
        .set_option("-smp", &smp.to_string())
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
}

/// The "count N" numbers in `out`.
fn counts(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("count ")?.parse().ok())
        .collect()
}

/// Runs counter.elf until `count 3`, saves it to `state`, quits; returns the last count printed.
fn save_counter(machine: &str, smp: u32, dir: &TempDir, state: &Path) -> u64 {
    save_counter_with(&|qmp| counter(machine, smp, qmp), dir, state)
}

fn save_counter_with(cmd: &dyn Fn(&Path) -> VmCommand, dir: &TempDir, state: &Path) -> u64 {
    let qmp = dir.path().join("save.qmp");
    let mut vm = cmd(&qmp).spawn();
    vm.expect_stdout("count 3\n");
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "events", "state": true}]}),
    )
    .unwrap();
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", state.display())}),
    )
    .unwrap();
    let events = q.wait_migration("completed");
    assert_eq!(
        events,
        [
            "MIGRATION \"setup\"",
            "MIGRATION \"active\"",
            "STOP",
            "MIGRATION \"completed\""
        ]
    );
    // QEMU 7.2: the source stays paused in postmigrate.
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "postmigrate", "{status}");
    let info = q.execute("query-migrate", json!({})).unwrap();
    assert_eq!(info["status"], "completed", "{info}");
    std::thread::sleep(Duration::from_millis(200));
    let out = vm.stdout();
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);
    let before = counts(&out);
    *before.last().expect("counts before the snapshot")
}

/// Restores `state` and returns the first `n` counts printed.
fn restore_counter(machine: &str, smp: u32, dir: &TempDir, state: &Path, n: usize) -> Vec<u64> {
    restore_counter_with(&|qmp| counter(machine, smp, qmp), dir, state, n)
}

fn restore_counter_with(
    cmd: &dyn Fn(&Path) -> VmCommand,
    dir: &TempDir,
    state: &Path,
    n: usize,
) -> Vec<u64> {
    let qmp = dir.path().join("restore.qmp");
    let mut vm: RunningVm = cmd(&qmp)
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts(&vm.stdout()).len() < n && Instant::now() < deadline && !vm.exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = vm.kill();
    let got = counts(&out.stdout);
    assert!(got.len() >= n, "restored guest printed too little\n{out}");
    assert!(
        !out.stdout.contains("counter: running"),
        "the restored guest booted again\n{out}"
    );
    got[..n].to_vec()
}

fn continues(machine: &str, smp: u32) {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new(&format!("snapshot-{machine}-{smp}"));
    let state = dir.path().join("state");
    let last = save_counter(machine, smp, &dir, &state);
    let after = restore_counter(machine, smp, &dir, &state, 3);
    assert_eq!(
        after,
        [last + 1, last + 2, last + 3],
        "saved at count {last}"
    );
}

#[test]
fn microvm_continues_after_restore() {
    continues("microvm", 1);
}

#[test]
fn microvm_4_vcpus_continue_after_restore() {
    continues("microvm", 4);
}

#[test]
fn pc_continues_after_restore() {
    continues("pc", 1);
}

#[test]
fn pc_4_vcpus_continue_after_restore() {
    continues("pc", 4);
}

#[test]
fn q35_continues_after_restore() {
    continues("q35", 1);
}

#[test]
fn q35_4_vcpus_continue_after_restore() {
    continues("q35", 4);
}

#[test]
fn restoring_twice_continues_identically() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-twice");
    let state = dir.path().join("state");
    let last = save_counter("microvm", 1, &dir, &state);
    let first = restore_counter("microvm", 1, &dir, &state, 4);
    let second = restore_counter("microvm", 1, &dir, &state, 4);
    assert_eq!(first, second);
    assert_eq!(first[0], last + 1);
}

/// `-incoming` with `cmd` changed: the error names what differs.
fn refused(state: &Path, machine: &str, mem: &str, needle: &str) {
    let out = VmCommand::guest("counter.elf")
        .set_option("-M", machine)
        .set_option("-m", mem)
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .timeout(Duration::from_secs(30))
        .run();
    assert_ne!(out.status, Some(0), "{out}");
    assert!(out.stderr.contains(needle), "wanted {needle:?}\n{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn mismatches_and_hostile_files_are_refused_by_name() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-refused");
    let state = dir.path().join("state");
    save_counter("microvm", 1, &dir, &state);
    refused(
        &state,
        "microvm",
        "256",
        "the RAM size (-m) is 128 MiB there, 256 MiB here",
    );
    refused(
        &state,
        "pc",
        "128",
        "the machine type (-M) is Microvm there, Pc here",
    );
    let bytes = std::fs::read(&state).unwrap();
    let hostile = |name: &str, contents: &[u8], needle: &str| {
        let path = dir.file(name, contents);
        std::fs::copy(mem_of(&state), mem_of(&path)).unwrap();
        refused(&path, "microvm", "128", needle);
    };
    hostile("truncated", &bytes[..bytes.len() / 2], "truncated");
    hostile("short", &bytes[..20], "truncated");
    hostile("empty", b"", "not an rvmm snapshot");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x40;
    hostile("flipped", &flipped, "checksum");
    let mut version = bytes.clone();
    version[8] = 9;
    hostile("version", &version, "format version 9");
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    hostile("huge", &huge, "limit");
    // A memory file cut short, or from another snapshot.
    let path = dir.file("shortmem", &bytes);
    let mem = std::fs::read(mem_of(&state)).unwrap();
    std::fs::write(mem_of(&path), &mem[..mem.len() / 2]).unwrap();
    refused(&path, "microvm", "128", "truncated");
    let mut other = mem.clone();
    other[16] ^= 1;
    std::fs::write(mem_of(&path), &other).unwrap();
    refused(&path, "microvm", "128", "belongs to another snapshot");
}

#[test]
fn hostile_values_behind_a_valid_checksum_are_refused() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-hostile-values");
    let state = dir.path().join("state");
    save_counter("microvm", 1, &dir, &state);
    let bytes = std::fs::read(&state).unwrap();
    let hostile = |name: &str, contents: Vec<u8>, needle: &str| {
        let path = dir.file(name, &contents);
        std::fs::copy(mem_of(&state), mem_of(&path)).unwrap();
        refused(&path, "microvm", "128", needle);
    };
    hostile(
        "fifo",
        reframed(&bytes, |v| {
            v["devices"]["COM1"]["in_buffer"] = json!(vec![0; 100])
        }),
        "device 'COM1': invalid state: COM1 receive FIFO of 100 bytes",
    );
    hostile(
        "nodevice",
        reframed(&bytes, |v| {
            v["devices"].as_object_mut().unwrap().remove("CMOS RTC");
        }),
        "no state for device 'CMOS RTC'",
    );
    hostile(
        "msr",
        reframed(&bytes, |v| {
            v["vcpus"][0]["msrs"][0] =
                json!([0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        }),
        "KVM_SET_MSRS refused MSR 0xdeadbeef",
    );
    hostile(
        "vcpus",
        reframed(&bytes, |v| v["vcpus"].as_array_mut().unwrap().clear()),
        "0 vCPU states for 1 vCPUs",
    );
    hostile(
        "junk",
        reframed(&bytes, |v| v["vm"] = json!("junk")),
        "corrupted",
    );
}

fn mem_of(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".mem");
    p.into()
}

#[test]
fn unsupported_devices_and_uris_are_refused_by_name() {
    if skip_on_qemu("rvmm's error texts") {
        return;
    }
    let dir = TempDir::new("snapshot-blocked");
    let qmp = dir.path().join("q.qmp");
    let mut vm = counter("microvm", 1, &qmp)
        .arg("-device")
        .arg("pc-testdev")
        .spawn();
    vm.expect_stdout("count 1\n");
    let mut q = Qmp::connect(&qmp);
    let state = dir.path().join("state");
    let err = q
        .execute(
            "migrate",
            json!({"uri": format!("file:{}", state.display())}),
        )
        .unwrap_err();
    assert_eq!(err, "State blocked by non-migratable device 'pc-testdev'");
    let err = q.execute("migrate", json!({"uri": "fd:3"})).unwrap_err();
    assert!(err.contains("only 'file:PATH'"), "{err}");
    // Nothing was written and the guest runs on.
    assert!(!state.exists());
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "running");
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20));
}

/// pc's PIIX IDE and q35's AHCI with a disk and a CD-ROM attached are saved with their drives'
/// state, and the restored guest counts on (the drives' own state: storage/ata_state.rs tests).
#[test]
fn ide_and_ahci_with_drives_continue_after_restore() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    for machine in ["pc", "q35"] {
        let dir = TempDir::new(&format!("snapshot-ide-{machine}"));
        let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
        let cd = dir.file("cd.iso", &vec![0u8; 1 << 20]);
        let cmd = |qmp: &Path| {
            counter(machine, 1, qmp)
                .arg("-drive")
                .arg(format!("file={},format=raw,if=ide", disk.display()))
                .arg("-drive")
                .arg(format!("file={},format=raw,media=cdrom", cd.display()))
        };
        let state = dir.path().join("state");
        let last = save_counter_with(&cmd, &dir, &state);
        let bytes = std::fs::read(&state).unwrap();
        let v: Value = serde_json::from_slice(&bytes[32..]).unwrap();
        let controller = if machine == "pc" {
            "piix3-ide"
        } else {
            "ich9-ahci"
        };
        let saved = v["devices"][controller].to_string();
        assert!(saved.contains("\"cdrom\":true"), "{saved}");
        assert!(saved.contains("\"cdrom\":false"), "{saved}");
        let after = restore_counter_with(&cmd, &dir, &state, 3);
        assert_eq!(after, [last + 1, last + 2, last + 3], "{machine}");
    }
}

/// `-incoming defer` waits in `inmigrate` for `migrate-incoming`; `-S` holds the restored guest
/// `paused` until `cont`. Both go on with the next count.
#[test]
fn incoming_defer_and_start_paused() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-defer");
    let state = dir.path().join("state");
    let last = save_counter("microvm", 1, &dir, &state);
    let uri = format!("file:{}", state.display());

    let qmp = dir.path().join("defer.qmp");
    let mut vm = counter("microvm", 1, &qmp)
        .arg("-incoming")
        .arg("defer")
        .spawn();
    let mut q = Qmp::connect(&qmp);
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "inmigrate", "{status}");
    q.execute("migrate-incoming", json!({"uri": uri})).unwrap();
    vm.expect_stdout(&format!("count {}\n", last + 1));
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    // A second migrate-incoming is refused.
    assert!(q.execute("migrate-incoming", json!({"uri": uri})).is_err());
    q.execute("quit", json!({})).unwrap();
    let out = vm.wait(Duration::from_secs(20));
    assert_eq!(counts(&out.stdout)[0], last + 1, "{out}");
    assert!(!out.stdout.contains("counter: running"), "{out}");

    let qmp = dir.path().join("paused.qmp");
    let mut vm = counter("microvm", 1, &qmp)
        .arg("-incoming")
        .arg(&uri)
        .arg("-S")
        .spawn();
    let mut q = Qmp::connect(&qmp);
    let status = q.execute("query-status", json!({})).unwrap();
    assert_eq!(status["status"], "paused", "{status}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        counts(&vm.stdout()).is_empty(),
        "ran before cont: {}",
        vm.stdout()
    );
    q.execute("cont", json!({})).unwrap();
    vm.expect_stdout(&format!("count {}\n", last + 2));
    q.execute("quit", json!({})).unwrap();
    let out = vm.wait(Duration::from_secs(20));
    assert_eq!(counts(&out.stdout)[..2], [last + 1, last + 2], "{out}");
}

/// virtio-blk and virtio-rng on microvm: the guest writes sector 1 and flushes, waits on COM1 and
/// is saved there; the restored guest gets a byte and sends one more write (sector 2) and a flush
/// on the same queue, set up before the snapshot. The disk holds both writes.
#[test]
fn virtio_blk_goes_on_after_restore() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-virtio");
    let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
    let state = dir.path().join("state");
    let vm_cmd = |qmp: &Path| {
        VmCommand::guest("virtio.elf")
            .set_option("-M", "microvm")
            .set_option("-m", "128")
            .arg("-device")
            .arg("virtio-rng-device")
            .arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
            .arg("-device")
            .arg("virtio-blk-device,drive=d0")
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .append("rng=16 blk wait blkagain")
    };
    let qmp = dir.path().join("save.qmp");
    let mut vm = vm_cmd(&qmp).spawn();
    vm.expect_stdout("virtio: done\n");
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", state.display())}),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.execute("query-migrate", json!({})).unwrap()["status"] != "completed" {
        assert!(Instant::now() < deadline, "migrate did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);
    let img = std::fs::read(&disk).unwrap();
    assert!(
        img[512..1024].iter().all(|&b| b == 0x5a),
        "sector 1 not on disk after migrate"
    );
    assert!(
        img[1024..1536].iter().all(|&b| b == 0),
        "sector 2 written too early"
    );

    let qmp = dir.path().join("restore.qmp");
    let mut vm = vm_cmd(&qmp)
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .stdin_pipe()
        .spawn();
    let _q = Qmp::connect(&qmp);
    vm.write_stdin(b"x");
    let out = vm.wait(Duration::from_secs(30));
    out.assert_status(33);
    out.assert_stdout_contains("virtio-blk: wrote sector 2\n");
    assert!(
        !out.stdout.contains("virtio-blk: capacity"),
        "booted again\n{out}"
    );
    let img = std::fs::read(&disk).unwrap();
    assert!(
        img[512..1536].iter().all(|&b| b == 0x5a),
        "sectors 1-2 are not what the guest wrote"
    );
}

/// QEMU 7.2's spelling of a snapshot to a file: `migrate exec:cat > PATH` and
/// `-incoming "exec:cat PATH"` (one stream; RAM copied in instead of mapped).
#[test]
fn exec_uris_as_qemu_spells_them() {
    if skip_on_qemu("rvmm's own stream; QEMU's is checked by benches/snapshot.py") {
        return;
    }
    let dir = TempDir::new("snapshot-exec");
    let stream = dir.path().join("stream");
    let qmp = dir.path().join("save.qmp");
    let mut vm = counter("q35", 2, &qmp).spawn();
    vm.expect_stdout("count 3\n");
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", stream.display())}),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = q.execute("query-migrate", json!({})).unwrap();
        if info["status"] == "completed" {
            break;
        }
        assert_ne!(info["status"], "failed", "{info}");
        assert!(Instant::now() < deadline, "migrate did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let last = *counts(&vm.stdout()).last().unwrap();
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);

    let qmp = dir.path().join("restore.qmp");
    let mut vm = counter("q35", 2, &qmp)
        .arg("-incoming")
        .arg(format!("exec:cat {}", stream.display()))
        .spawn();
    vm.expect_stdout(&format!("count {}\n", last + 2));
    let out = vm.kill();
    assert_eq!(counts(&out.stdout)[..2], [last + 1, last + 2], "{out}");

    // A command that fails fails the restore, naming it.
    let out = counter("q35", 2, &dir.path().join("bad.qmp"))
        .arg("-incoming")
        .arg("exec:exit 3")
        .timeout(Duration::from_secs(30))
        .run();
    assert_ne!(out.status, Some(0), "{out}");
    assert!(out.stderr.contains("exec:exit 3"), "{out}");
}

/// A restored VM runs on a private mapping of PATH.mem: saving it again to the same PATH must
/// not change that file under it (the new files are renamed into place), and the new snapshot
/// goes on from the later count.
#[test]
fn saving_over_the_snapshot_a_vm_runs_from() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let dir = TempDir::new("snapshot-resave");
    let state = dir.path().join("state");
    let first = save_counter("microvm", 1, &dir, &state);
    let qmp = dir.path().join("again.qmp");
    let mut vm = counter("microvm", 1, &qmp)
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .spawn();
    vm.expect_stdout(&format!("count {}\n", first + 5));
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", state.display())}),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.execute("query-migrate", json!({})).unwrap()["status"] != "completed" {
        assert!(Instant::now() < deadline, "migrate did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The source runs on from its (replaced) file after `cont`.
    q.execute("cont", json!({})).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    q.execute("stop", json!({})).unwrap();
    let out = vm.stdout();
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);
    let seen = counts(&out);
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    let after = restore_counter("microvm", 1, &dir, &state, 2);
    assert!(
        after[0] > first + 5,
        "restored at {after:?}, first snapshot at {first}"
    );
    assert_eq!(after[1], after[0] + 1);
}

/// Minor page faults of process `pid` so far (/proc/PID/stat field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Under the default sandbox a save still skips the RAM pages the guest never touched (found in
/// /proc/self/pagemap, opened before Landlock restricts which files rvmm may open). Reading an
/// untouched page would fault the zero page in: a 2 GiB guest that touched a few pages must
/// cost far fewer than its 524,288 pages' worth of faults. Before the fix, Landlock refused the
/// page map and the save read all of RAM (100x slower).
#[test]
fn save_under_the_sandbox_skips_untouched_ram() {
    if skip_on_qemu("rvmm's page-map skip") {
        return;
    }
    let dir = TempDir::new("snap-pagemap");
    let qmp = dir.path().join("q.sock");
    let mut vm = counter("microvm", 1, &qmp).set_option("-m", "2048").spawn();
    vm.expect_stdout("count 3\n");
    let mut q = Qmp::connect(&qmp);
    q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "events", "state": true}]}),
    )
    .unwrap();
    let before = minor_faults(vm.pid());
    let state = dir.path().join("state");
    q.execute(
        "migrate",
        json!({"uri": format!("file:{}", state.display())}),
    )
    .unwrap();
    q.wait_migration("completed");
    let faults = minor_faults(vm.pid()) - before;
    assert!(
        faults < 50_000,
        "the save faulted {faults} pages in: it read RAM the guest never touched"
    );
    q.execute("quit", json!({})).unwrap();
    vm.wait(Duration::from_secs(20)).assert_status(0);
}
