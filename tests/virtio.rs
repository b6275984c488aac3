//! virtio-mmio devices end to end through the VMM binary: `guests/src/virtio.S` finds the
//! devices, negotiates features, sets up a split queue, reads virtio-rng, reads and writes a
//! virtio-blk disk (raw and qcow2, with and without a backing file) and takes one completion by
//! interrupt, in both irqchip modes and with ACPI (level-triggered GSI 16+, DSDT) or without
//! (edge-triggered IRQ 5+, kernel command line). The images are checked afterwards from the
//! host (bytes for raw, `qemu-io` and `qemu-img check` for qcow2). After SIGTERM, a reset under
//! `-no-reboot`, a power-off and QMP `quit`, a write the guest never flushed must be in the image
//! and the VMM must have synced it on the way out (seen with `strace -p`). QMP stop/cont during
//! the guest's I/O keeps the data right (the device workers pause with the VM).
//!
//! `RVMM_TEST_BIN=qemu-system-x86_64 cargo test --test virtio` runs the same guest on QEMU
//! microvm (with `ioapic2=off` for rvmm's one-IOAPIC layout and modern virtio-mmio). QEMU puts
//! the first device on the last transport; the guest scans all eight.

mod common;

use common::{is_qemu, skip_on_qemu, TempDir, VmCommand};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const EXIT_OK: i32 = (0x10 << 1) | 1;
const SECTOR: usize = 512;
/// What the test puts at the start of sector 0 of raw images (the guest prints it).
const PATTERN: &[u8] = b"rvmm virtio-blk test pattern 0123456789";
/// The byte the guest fills sector 1 with.
const WRITTEN: u8 = 0x5a;
/// The byte `qemu-io` writes into sector 0 of qcow2 images (40 x 'A').
const QCOW2_BYTE: u8 = b'A';
const QCOW2_PATTERN_LEN: usize = 40;

/// `-M` for one configuration: with ACPI (default) or without, and the irqchip mode.
fn machine(acpi: bool, irqchip: &str) -> String {
    let mut m = String::from("microvm");
    if !acpi {
        m.push_str(",acpi=off");
    } else if is_qemu() {
        // QEMU's default with ACPI is a second IOAPIC with the virtio lines at GSI 24+.
        m.push_str(",ioapic2=off");
    }
    m.push_str(",kernel-irqchip=");
    m.push_str(irqchip);
    m
}

/// The guest command-line option for the interrupt: first GSI, and its trigger mode.
fn irq_option(acpi: bool) -> &'static str {
    if acpi {
        "irqbase=16 level"
    } else {
        "irqbase=5"
    }
}

/// The guest with `-M`, an rng and `drive` (a `-drive` value) as virtio-blk.
fn virtio_vm(machine: &str, drive: &str) -> VmCommand {
    let mut cmd = VmCommand::guest("virtio.elf").arg("-M").arg(machine);
    if is_qemu() {
        cmd = cmd.arg("-global").arg("virtio-mmio.force-legacy=false");
    }
    cmd.arg("-object")
        .arg("rng-random,id=r0,filename=/dev/urandom")
        .arg("-device")
        .arg("virtio-rng-device,rng=r0")
        .arg("-drive")
        .arg(format!("{drive},if=none,id=d0"))
        .arg("-device")
        .arg("virtio-blk-device,drive=d0")
}

fn raw_image(dir: &TempDir) -> std::path::PathBuf {
    let mut img = vec![0u8; 1 << 20];
    img[..PATTERN.len()].copy_from_slice(PATTERN);
    dir.file("disk.raw", &img)
}

fn check_raw(path: &Path) {
    let img = std::fs::read(path).unwrap();
    assert_eq!(&img[..PATTERN.len()], PATTERN, "sector 0 changed");
    assert!(
        img[SECTOR..2 * SECTOR].iter().all(|&b| b == WRITTEN),
        "sector 1 is not the guest's 0x5a: {:x?}",
        &img[SECTOR..SECTOR + 16]
    );
    assert!(
        img[2 * SECTOR..].iter().all(|&b| b == 0),
        "sector 2+ changed"
    );
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install qemu-utils): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {}: {}\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// `qemu-io -c 'read -P byte offset len'` must verify the pattern.
fn qemu_io_read(path: &Path, byte: u8, offset: usize, len: usize) {
    let cmd = format!("read -P {byte:#x} {offset} {len}");
    let text = tool(
        "qemu-io",
        &["-f", "qcow2", "-c", &cmd, path.to_str().unwrap()],
    );
    assert!(
        !text.contains("verification failed") && text.contains(&format!("read {len}/{len}")),
        "qemu-io {cmd} on {}:\n{text}",
        path.display()
    );
}

fn qemu_img_check(path: &Path) {
    let text = tool("qemu-img", &["check", path.to_str().unwrap()]);
    assert!(text.contains("No errors were found"), "{text}");
}

/// A qcow2 image with 40 x 'A' at offset 0, optionally over a backing file that holds them.
fn qcow2_image(dir: &TempDir, backing: bool) -> (std::path::PathBuf, Option<std::path::PathBuf>) {
    let top = dir.file("disk.qcow2", b"");
    let write = format!("write -P {QCOW2_BYTE:#x} 0 {QCOW2_PATTERN_LEN}");
    if backing {
        let base = dir.file("base.qcow2", b"");
        tool(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"],
        );
        tool(
            "qemu-io",
            &["-f", "qcow2", "-c", &write, base.to_str().unwrap()],
        );
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                base.to_str().unwrap(),
                top.to_str().unwrap(),
            ],
        );
        (top, Some(base))
    } else {
        tool(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", top.to_str().unwrap(), "1M"],
        );
        tool(
            "qemu-io",
            &["-f", "qcow2", "-c", &write, top.to_str().unwrap()],
        );
        (top, None)
    }
}

fn check_qcow2(top: &Path, base: Option<&Path>) {
    qemu_io_read(top, QCOW2_BYTE, 0, QCOW2_PATTERN_LEN);
    qemu_io_read(top, WRITTEN, SECTOR, SECTOR);
    qemu_img_check(top);
    if let Some(base) = base {
        // The write went to the overlay only.
        qemu_io_read(base, 0, SECTOR, SECTOR);
        qemu_img_check(base);
    }
}

fn assert_guest_ran(out: &common::Output, sector0: &str) {
    out.assert_stdout_contains("virtio: interrupt on vector 0x30, status 0x1\n");
    out.assert_stdout_contains("virtio-rng: 16 bytes: ");
    out.assert_stdout_contains("virtio-blk: capacity 2048 sectors\n");
    out.assert_stdout_contains(&format!("virtio-blk: sector 0: {sector0}\n"));
    out.assert_stdout_contains("virtio-blk: wrote sector 1, flush status 0\n");
    out.assert_stdout_contains("virtio: done\n");
    // 16 random bytes are not all zero (probability 2^-128).
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("virtio-rng: 16 bytes: "))
        .unwrap();
    assert_ne!(line.trim(), "00 ".repeat(16).trim(), "{out}");
}

#[test]
fn rng_and_raw_blk_with_one_interrupt_in_every_irqchip_and_acpi_mode() {
    for acpi in [true, false] {
        for irqchip in ["split", "on"] {
            let dir = TempDir::new(&format!("virtio-raw-{acpi}-{irqchip}"));
            let img = raw_image(&dir);
            let out = virtio_vm(
                &machine(acpi, irqchip),
                &format!("file={},format=raw", img.display()),
            )
            .append(&format!("rng=16 blk {}", irq_option(acpi)))
            .run();
            out.assert_status(EXIT_OK);
            assert_guest_ran(&out, std::str::from_utf8(PATTERN).unwrap());
            check_raw(&img);
        }
    }
}

/// `-exit-stats json=` reports what each device served: the guest's one 16-byte rng request, and
/// its sector read, sector write and flush.
#[test]
fn exit_stats_report_the_bytes_each_device_served() {
    if skip_on_qemu("-exit-stats is an rvmm option") {
        return;
    }
    let dir = TempDir::new("virtio-stats");
    let img = raw_image(&dir);
    let json = dir.file("stats.json", b"");
    let out = virtio_vm(
        &machine(true, "split"),
        &format!("file={},format=raw", img.display()),
    )
    .append("rng=16 blk irqbase=16 level")
    .arg("-exit-stats")
    .arg(format!("json={}", json.display()))
    .run();
    out.assert_status(EXIT_OK);
    assert_guest_ran(&out, std::str::from_utf8(PATTERN).unwrap());
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let devices = v["devices"].as_array().expect("a devices array");
    let find = |name: &str| {
        devices
            .iter()
            .find(|d| d["device"] == name)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let fields = |d: &serde_json::Value| {
        ["requests", "errors", "bytes_to_guest", "bytes_from_guest"].map(|k| d[k].as_u64().unwrap())
    };
    let rng = find("virtio-rng");
    assert_eq!(rng["at"], "virtio-mmio@0xfeb00000");
    assert_eq!(fields(rng), [1, 0, 16, 0], "rng: {text}");
    assert_eq!(fields(find("virtio-blk")), [3, 0, 512, 512], "blk: {text}");
}

#[test]
fn qcow2_written_by_the_guest_reads_back_with_qemu_io() {
    for backing in [false, true] {
        let dir = TempDir::new(&format!("virtio-qcow2-{backing}"));
        let (top, base) = qcow2_image(&dir, backing);
        let out = virtio_vm(
            &machine(true, "split"),
            &format!("file={},format=qcow2", top.display()),
        )
        .append("rng=16 blk irqbase=16 level")
        .run();
        out.assert_status(EXIT_OK);
        let pattern = String::from_utf8(vec![QCOW2_BYTE; QCOW2_PATTERN_LEN]).unwrap();
        assert_guest_ran(&out, &pattern);
        check_qcow2(&top, base.as_deref());
    }
}

/// Trace the VMM's sync calls from now on (`strace -p`), once strace says it is attached.
struct SyncTrace {
    strace: std::process::Child,
    log: std::path::PathBuf,
}

impl SyncTrace {
    fn attach(pid: u32, log: std::path::PathBuf) -> Self {
        use std::io::{BufRead, BufReader};
        let mut strace = Command::new("strace")
            .args([
                "-f",
                "-e",
                "trace=fsync,fdatasync,syncfs,sync_file_range",
                "-o",
            ])
            .arg(&log)
            .arg("-p")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run strace (apt-get install strace): {e}"));
        let stderr = strace.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let attached = lines.any(|l| l.is_ok_and(|l| l.contains("attached")));
        assert!(attached, "strace -p {pid} did not attach");
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // -f attaches every thread; give it a moment to reach them all.
        std::thread::sleep(Duration::from_millis(300));
        SyncTrace { strace, log }
    }

    /// The sync calls seen until the traced process exited.
    fn finish(mut self) -> String {
        let _ = self.strace.wait();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.contains("---") && !l.contains("+++"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// The guest writes without a flush request, waits for the test to attach strace, then stops
/// as `end` says (`stop` does the test's part). What it wrote must be in the qcow2 image after the
/// VMM exits, and the VMM must have synced the image on the way out: the guest never asked for
/// it, so each sync call seen comes from the VMM's own shutdown flush.
fn unflushed_write_is_synced_at_exit(end: &str, stop: impl FnOnce(&mut common::RunningVm)) {
    synced_at_exit(end, false, |vm, _| stop(vm)).assert_status(0);
}

/// As [`unflushed_write_is_synced_at_exit`]; with `qmp`, the VMM serves QMP on a Unix socket
/// whose path `stop` gets. The VMM's output, for the caller to check the exit status.
fn synced_at_exit(
    end: &str,
    qmp: bool,
    stop: impl FnOnce(&mut common::RunningVm, &Path),
) -> common::Output {
    let dir = TempDir::new(&format!("virtio-noflush-{end}-{qmp}"));
    let (top, _) = qcow2_image(&dir, false);
    let sock = dir.file("placeholder", b"").with_file_name("qmp.sock");
    let mut cmd = virtio_vm(
        &machine(true, "split"),
        &format!("file={},format=qcow2", top.display()),
    );
    if qmp {
        cmd = cmd
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()));
    }
    let mut vm = cmd
        .append(&format!("blk noflush wait end={end}"))
        .stdin_pipe()
        .spawn();
    vm.expect_stdout("virtio: done\n");
    let trace = SyncTrace::attach(vm.pid(), dir.file("strace.log", b""));
    stop(&mut vm, &sock);
    let out = vm.wait(Duration::from_secs(30));
    let syncs = trace.finish();
    out.assert_stdout_contains("virtio-blk: wrote sector 1\n");
    let synced = syncs.contains("fdatasync(") || syncs.contains("fsync(");
    if is_qemu() && !synced {
        // QEMU 7.2 does not sync a qcow2 image when it ends on SIGTERM; rvmm's contract does.
        eprintln!(
            "note: {} made no sync call at exit",
            common::binary().display()
        );
    } else {
        assert!(
            synced,
            "no sync call after the guest stopped:\n{syncs}\n{out}"
        );
    }
    check_qcow2(&top, None);
    out
}

#[test]
fn sigterm_flushes_the_disk() {
    unflushed_write_is_synced_at_exit("hang", |vm| vm.signal("TERM"));
}

#[test]
fn reset_under_no_reboot_flushes_the_disk() {
    if skip_on_qemu("QEMU microvm has no i8042 to reset through") {
        return;
    }
    unflushed_write_is_synced_at_exit("reset", |vm| vm.write_stdin(b"g"));
}

#[test]
fn poweroff_flushes_the_disk() {
    if skip_on_qemu("QEMU microvm has no ACPI PM block at 0x604") {
        return;
    }
    unflushed_write_is_synced_at_exit("poweroff", |vm| vm.write_stdin(b"g"));
}

/// A minimal QMP client over a Unix socket (raw JSON lines), capabilities negotiated.
struct Qmp {
    writer: std::os::unix::net::UnixStream,
    lines: std::io::Lines<std::io::BufReader<std::os::unix::net::UnixStream>>,
}

impl Qmp {
    /// Connect to `sock` (retrying until the VMM listens) and leave negotiation mode.
    fn connect(sock: &Path) -> Self {
        use std::io::BufRead;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("connect to QMP at {}: {e}", sock.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut qmp = Qmp {
            writer,
            lines: std::io::BufReader::new(stream).lines(),
        };
        let greeting = qmp.line().expect("QMP greeting");
        assert!(greeting.contains("\"QMP\""), "greeting: {greeting}");
        qmp.execute("qmp_capabilities").unwrap();
        qmp
    }

    fn line(&mut self) -> Option<String> {
        self.lines.next().and_then(Result::ok)
    }

    /// Run `cmd` and return its reply; events before it are skipped. None if the VM ended
    /// first: the connection closed, or rvmm refused the command because the guest has just
    /// shut down (a race with the guest's own exit, not an error).
    fn execute(&mut self, cmd: &str) -> Option<String> {
        use std::io::Write;
        writeln!(self.writer, "{{\"execute\": \"{cmd}\"}}").ok()?;
        loop {
            let line = self.line()?;
            if line.contains("The VM is shutting down") {
                return None;
            }
            assert!(!line.contains("\"error\""), "{cmd}: {line}");
            if line.contains("\"return\"") {
                return Some(line);
            }
        }
    }
}

#[test]
fn qmp_quit_flushes_the_disk() {
    // The guest hangs after its unflushed write; QMP quit must flush and sync before exit 0.
    synced_at_exit("hang", true, |_, sock| {
        Qmp::connect(sock).execute("quit").expect("reply to quit");
    })
    .assert_status(0);
}

/// A fatal guest error (an instruction this host's KVM cannot emulate, as badinsn.elf) ends
/// the VMM with an error, and still through the clean exit path: the disk is flushed and synced.
#[test]
fn fatal_guest_error_flushes_the_disk() {
    if skip_on_qemu("QEMU pauses the VM on a KVM emulation failure instead of exiting") {
        return;
    }
    let out = synced_at_exit("xsave", false, |vm, _| vm.write_stdin(b"g"));
    if out.stdout.contains("virtio: xsave completed") {
        eprintln!("skipped: this host runs xsave at CPL0 natively (no fatal guest error)");
        return;
    }
    assert_ne!(out.status, Some(0), "a fatal guest error exited 0\n{out}");
    assert_ne!(out.status, None, "the VMM died from a signal\n{out}");
    assert!(
        out.stderr.contains("xsave") || out.stderr.contains("emulat"),
        "{out}"
    );
}

/// A guest's FLUSH completes only after the data reached the disk: the sync call of the
/// request returns after the guest printed that its write completed and before it prints that
/// its flush completed (the serial port's bytes are `write(1, ...)` calls in the same trace,
/// so the trace orders the two). Without a sync per FLUSH, the only sync is the exit's.
#[test]
fn a_guest_flush_completes_after_the_sync() {
    if skip_on_qemu("traces rvmm's own system calls") {
        return;
    }
    let dir = TempDir::new("virtio-flush-order");
    let (top, _) = qcow2_image(&dir, false);
    let log = dir.file("strace.log", b"");
    let vm = virtio_vm(
        &machine(true, "split"),
        &format!("file={},format=qcow2", top.display()),
    )
    .append("blk")
    .program("strace");
    // strace -f -o LOG -e ... RVMM ARGS: the common arguments go after the binary.
    let out = vm
        .prepend_args([
            "-f".into(),
            "-qq".into(),
            "-e".into(),
            "trace=write,fsync,fdatasync".into(),
            "-o".into(),
            log.clone().into_os_string(),
            common::binary().into_os_string(),
        ])
        .run();
    out.assert_status(33);
    out.assert_stdout_contains("virtio-blk: wrote sector 1, flush status 0\n");
    let trace = std::fs::read_to_string(&log).unwrap();
    // Replay the trace: the console bytes written so far when each sync call returned.
    let mut console = String::new();
    let mut synced_at = Vec::new();
    for line in trace.lines() {
        // "PID  call": strace pads the pid column, so short pids leave more than one blank.
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest.trim_start());
        if let Some(rest) = call.strip_prefix("write(1, \"") {
            if let Some((text, _)) = rest.rsplit_once("\", ") {
                console.push_str(&text.replace("\\n", "\n"));
            }
        } else if (call.contains("fdatasync") || call.contains("fsync")) && call.ends_with("= 0") {
            synced_at.push(console.len());
        }
    }
    // The guest prints "wrote sector 1" after its write completed, then sends the FLUSH and
    // prints ", flush status" once it completed.
    let find = |needle: &str| {
        console
            .find(needle)
            .map(|at| at + needle.len())
            .unwrap_or_else(|| {
                panic!("no '{needle}' in the trace's console bytes:\n{console}\n{trace}")
            })
    };
    let written = find("virtio-blk: wrote sector 1");
    let flushed = find("virtio-blk: wrote sector 1, flush status") - ", flush status".len();
    assert!(
        synced_at.iter().any(|&at| at >= written && at <= flushed),
        "no sync returned between the guest's write and its flush completing \
         (console offsets {written}..{flushed}, syncs at {synced_at:?}):\n{trace}"
    );
}

/// QMP stop/cont in a tight loop while the guest drives virtio-rng and virtio-blk (one request
/// completed by interrupt): the device workers pause and resume with the vCPUs, and every
/// request completes once with the right data.
#[test]
fn stop_and_cont_during_virtio_io_keep_the_data_correct() {
    let dir = TempDir::new("virtio-stop-cont");
    let img = raw_image(&dir);
    let sock = dir.file("placeholder", b"").with_file_name("qmp.sock");
    let mut cmd = virtio_vm(
        &machine(true, "split"),
        &format!("file={},format=raw", img.display()),
    )
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", sock.display()))
    .arg("-S");
    cmd = cmd.append("rng=16 blk irqbase=16 level");
    let vm = cmd.spawn();
    let mut qmp = Qmp::connect(&sock);
    let mut cycles = 0u32;
    qmp.execute("cont").expect("cont after -S");
    while !vm.stdout().contains("virtio: done") && cycles < 5000 {
        if qmp.execute("stop").is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        if qmp.execute("cont").is_none() {
            break;
        }
        cycles += 1;
    }
    let out = vm.wait(common::TIMEOUT);
    out.assert_status(EXIT_OK);
    assert_guest_ran(&out, std::str::from_utf8(PATTERN).unwrap());
    check_raw(&img);
    assert!(
        cycles > 0,
        "no stop/cont cycle ran before the guest finished\n{out}"
    );
    eprintln!("{cycles} stop/cont cycles during the guest's virtio I/O");
}

#[test]
fn a_device_without_its_driver_is_not_announced_twice() {
    if skip_on_qemu("checks rvmm's command line") {
        return;
    }
    // With ACPI the DSDT announces the transports and the command line stays as given
    // (QEMU microvm); without ACPI they are on the command line.
    for (acpi, expect) in [
        (true, "cmdline: code=16\n"),
        (
            false,
            "cmdline: code=16 virtio_mmio.device=512@0xfeb00000:5\n",
        ),
    ] {
        let m = if acpi { "microvm" } else { "microvm,acpi=off" };
        let out = VmCommand::guest("pvh32.elf")
            .arg("-M")
            .arg(m)
            .arg("-device")
            .arg("virtio-rng-device")
            .append("code=16")
            .run();
        out.assert_stdout_contains(expect);
    }
}
