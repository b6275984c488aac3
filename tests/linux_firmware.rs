//! Boot test 3: PC firmware boots Linux from a CD, and Linux finds the onboard drives
//! (docs/LINUX-TEST-KERNEL.md). For `-M pc` and `-M q35`, without `-kernel`: SeaBIOS finds
//! the blank `-hda` unbootable and boots the `-cdrom`, an ISO made here by grub-mkrescue; GRUB
//! loads boot test 2's kernel (scripts/build-test-kernel.sh) from it through int 13h and boots it
//! with `rvmm_selftest.storage=1`. The kernel's self test (guests/linux/rvmm_selftest.c) then
//! finds the CD through the onboard controller's driver (q35: `ahci`, pc: `ata_piix`) and `sr`
//! (ATAPI), mounts it as iso9660 and checks two files on it, and finds the disk through `sd`,
//! checks the pattern this test put in sector 0, writes sector 1 and flushes; then it restarts
//! the machine and rvmm exits 0. The host sees the write in the qcow2 image and `qemu-img check`
//! finds it clean.
//!
//! #[ignore]d like the other Linux boot tests (minutes where KVM emulates CPL0); scripts/test.sh
//! runs it explicitly. RVMM_TEST_KERNEL names the bzImage; without it the test runs
//! scripts/build-test-kernel.sh. Needs grub-mkrescue (grub-pc-bin, grub-common, xorriso) and
//! qemu-img.

mod common;

use common::{Output, TempDir, VmCommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SECTOR: usize = 512;
/// guests/linux/rvmm_selftest.c: sector 0 is this magic, then byte i = i * 7 + 3 (not a boot
/// sector: SeaBIOS goes on to the CD).
const DISK_MAGIC: &[u8] = b"RVMM-LINUX-DISK-SECTOR0";
/// guests/linux/rvmm_selftest.c writes sector 1: this magic, then byte i = i * 13 + 1.
const WRITE_MAGIC: &[u8] = b"RVMM-LINUX-WROTE-SECTOR1";
/// /rvmm/marker.txt on the ISO, as the self test expects it.
const ISO_MARKER: &[u8] = b"RVMM-ISO-MARKER: read through sr and iso9660\n";
/// /rvmm/pattern.bin: little-endian u32 words, word k = k * 2654435761, as the self test checks.
const ISO_PATTERN_WORDS: u32 = 1 << 16;
/// The kernel parameters docs/EMULATED-KVM.md explains; reboot=k: the self test restarts
/// through the i8042 and -no-reboot exits. rodata=off only saves boot time.
const CMDLINE: &str = "console=ttyS0 noxsave clearcpuid=141,308,137 reboot=k panic=-1 rodata=off \
                       rvmm_selftest.storage=1";
/// Firmware, GRUB and the kernel's own decompressor all run at CPL0, emulated on hosts like
/// this project's (about 3 minutes there, more on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// grub.cfg echoes "rvmm: GRUB booting" just before `boot`; SeaBIOS's serial console sends
/// int 10h text lazily, and the last character or two before the kernel takes over are lost.
const GRUB_BOOTING: &str = "rvmm: GRUB boot";

/// Milestones on the serial console, in order, with the name each one's time is reported under.
const STAGES: &[(&str, &str)] = &[
    ("SeaBIOS (version", "SeaBIOS"),
    ("Booting from DVD/CD", "SeaBIOS boots the CD"),
    ("Welcome to GRUB", "GRUB"),
    ("rvmm: GRUB loading", "grub.cfg"),
    (GRUB_BOOTING, "bzImage loaded"),
    ("Linux version", "Linux console"),
    ("rvmm-selftest: cd: sr0 is", "sr0 found"),
    ("rvmm-selftest: cd ", "cd checked"),
    ("rvmm-selftest: disk ", "disk checked"),
];

/// The onboard controller each machine puts -hda and -cdrom on: driver and PCI address.
fn controller(machine: &str) -> (&'static str, &'static str) {
    match machine {
        "q35" => ("ahci", "0000:00:1f.2"),
        _ => ("ata_piix", "0000:00:01.1"),
    }
}

fn test_kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("RVMM_TEST_KERNEL") {
        return PathBuf::from(k);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-kernel.sh");
    PathBuf::from(tool(script, &[]).trim())
}

/// Runs a host tool and returns its stdout, failing the test if it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pattern_sector(magic: &[u8], mul: usize, add: usize) -> Vec<u8> {
    let mut s: Vec<u8> = (0..SECTOR).map(|i| (i * mul + add) as u8).collect();
    s[..magic.len()].copy_from_slice(magic);
    s
}

/// A GRUB rescue CD (grub-mkrescue, BIOS only) whose grub.cfg boots `kernel` at once, with the
/// files the self test reads. Only the GRUB modules the boot needs are on it: each one GRUB
/// loads is read through int 13h at emulated CPL0. The partition maps are there because
/// GRUB's normal mode loads every map it lists and prints an error for each missing one.
fn build_iso(dir: &TempDir, kernel: &Path) -> PathBuf {
    let tree = dir.file("iso", &[]);
    std::fs::remove_file(&tree).unwrap();
    for sub in ["boot/grub", "rvmm"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy(kernel, tree.join("boot/bzImage")).expect("copy bzImage");
    let cfg = format!(
        "set timeout=0\nset gfxpayload=text\necho rvmm: GRUB loading /boot/bzImage\n\
         linux /boot/bzImage {CMDLINE}\necho {GRUB_BOOTING}\nboot\n"
    );
    std::fs::write(tree.join("boot/grub/grub.cfg"), cfg).unwrap();
    std::fs::write(tree.join("rvmm/marker.txt"), ISO_MARKER).unwrap();
    let pattern: Vec<u8> = (0..ISO_PATTERN_WORDS)
        .flat_map(|k| k.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(tree.join("rvmm/pattern.bin"), pattern).unwrap();
    let iso = dir.file("test.iso", &[]);
    let modules = "linux normal iso9660 biosdisk echo part_acorn part_amiga part_apple part_bsd \
                   part_dfly part_dvh part_gpt part_msdos part_plan part_sun part_sunpc";
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(format!("--install-modules={modules}"))
        .args(["--locales=", "--fonts=", "--themes="])
        .arg(&tree)
        .output()
        .expect("cannot run grub-mkrescue (grub-common, grub-pc-bin, xorriso)");
    assert!(
        out.status.success(),
        "grub-mkrescue failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// An 8 MiB qcow2 disk whose sector 0 holds the pattern the self test checks.
fn disk(dir: &TempDir, machine: &str) -> PathBuf {
    let mut raw = vec![0u8; 8 << 20];
    raw[..SECTOR].copy_from_slice(&pattern_sector(DISK_MAGIC, 7, 3));
    let raw = dir.file(&format!("disk-{machine}.raw"), &raw);
    let qcow2 = raw.with_extension("qcow2");
    let (r, q) = (raw.to_str().unwrap(), qcow2.to_str().unwrap());
    tool("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", r, q]);
    std::fs::remove_file(raw).unwrap();
    qcow2
}

/// Boots `machine` from the CD and returns what rvmm printed, with the time of each stage
/// reached (from the start of rvmm).
fn boot(machine: &str, iso: &Path, disk: &Path) -> (Output, Vec<(&'static str, Duration)>) {
    let start = Instant::now();
    let deadline = start + BOOT_TIMEOUT;
    let mut vm = VmCommand::without_kernel()
        .set_option("-M", machine)
        .arg("-hda")
        .arg(disk)
        .arg("-cdrom")
        .arg(iso)
        .timeout(BOOT_TIMEOUT)
        .spawn();
    // Polled rather than awaited one by one: a needle the console garbled must not hold up the
    // later ones.
    let mut times = vec![None; STAGES.len()];
    while !vm.exited() && Instant::now() < deadline {
        let text = common::without_escapes(&vm.stdout());
        for ((needle, _), time) in STAGES.iter().zip(&mut times) {
            if time.is_none() && text.contains(needle) {
                *time = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut times: Vec<_> = STAGES
        .iter()
        .zip(times)
        .filter_map(|((_, name), t)| Some((*name, t?)))
        .collect();
    let out = vm.wait(deadline.saturating_duration_since(Instant::now()));
    times.push(("rvmm exited", start.elapsed()));
    (out, times)
}

fn check_guest(machine: &str, out: &Output) {
    let (driver, pci) = controller(machine);
    for line in [
        "rvmm-selftest: cd: sr0 is SCSI ".to_string(),
        format!(" on {driver} ({driver} {pci})"),
        "rvmm-selftest: cd: mounted sr0 (iso9660), /rvmm/marker.txt matches".into(),
        "rvmm-selftest: cd: /rvmm/pattern.bin (262144 bytes) matches".into(),
        "rvmm-selftest: disk: sda is SCSI ".into(),
        "rvmm-selftest: blk: sector 1 written, flushed and read back".into(),
        "rvmm-selftest: cd PASS".into(),
        "rvmm-selftest: disk PASS".into(),
        "rvmm-selftest: all PASS, restarting".into(),
    ] {
        out.assert_stdout_contains(&line);
    }
    // Both drives on the onboard controller: "... on ahci (ahci 0000:00:1f.2)" twice.
    let on = format!(" on {driver} ({driver} {pci})");
    assert_eq!(
        out.stdout.matches(&on).count(),
        2,
        "{machine}: sr0 and sda are not both on {driver} at {pci}\n{out}"
    );
    out.assert_status(0);
}

/// The guest's write is in the image, sector 0 is as the host wrote it, and the qcow2 is clean.
fn check_image(qcow2: &Path) {
    let q = qcow2.to_str().unwrap();
    tool("qemu-img", &["check", q]);
    let raw = qcow2.with_extension("check.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            q,
            raw.to_str().unwrap(),
        ],
    );
    let data = std::fs::read(&raw).unwrap();
    assert_eq!(
        &data[..SECTOR],
        &pattern_sector(DISK_MAGIC, 7, 3)[..],
        "{q}: sector 0 changed"
    );
    assert_eq!(
        &data[SECTOR..2 * SECTOR],
        &pattern_sector(WRITE_MAGIC, 13, 1)[..],
        "{q}: sector 1 does not hold what the guest wrote"
    );
}

#[test]
#[ignore = "boots firmware, GRUB and Linux at emulated CPL0 (minutes); scripts/test.sh runs it"]
fn grub_boots_linux_from_cd_and_linux_finds_the_onboard_cd_and_disk() {
    let kernel = test_kernel();
    let dir = TempDir::new("linux_firmware");
    let iso = build_iso(&dir, &kernel);
    let machines = ["pc", "q35"];
    let disks: Vec<PathBuf> = machines.iter().map(|m| disk(&dir, m)).collect();
    // One VM per machine in parallel: each spends minutes in emulated CPL0 code.
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter()
            .zip(&disks)
            .map(|(m, d)| {
                let iso = &iso;
                s.spawn(move || boot(m, iso, d))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (machine, (_, times)) in machines.iter().zip(&runs) {
        let list: Vec<String> = times
            .iter()
            .map(|(name, t)| format!("{name} {:.1} s", t.as_secs_f64()))
            .collect();
        eprintln!("linux firmware: {machine}: {}", list.join(", "));
    }
    for (machine, (out, _)) in machines.iter().zip(&runs) {
        for line in out.stdout.lines().filter(|l| l.contains("rvmm-selftest:")) {
            eprintln!("linux firmware: {machine}: {}", line.trim());
        }
    }
    for ((machine, (out, _)), qcow2) in machines.iter().zip(&runs).zip(&disks) {
        check_guest(machine, out);
        check_image(qcow2);
    }
}
