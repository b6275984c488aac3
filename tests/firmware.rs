//! Firmware boot: SeaBIOS (Debian's `seabios`) boots disks and CDs on pc and q35 from QEMU's
//! drive options, with its text on the serial console (guests/src/bootdisk.S, resetdisk.S).
//!
//! The guests use only the BIOS (int 10h, int 13h, fw_cfg) and ACPI power-off, so every test
//! here also runs against QEMU (`RVMM_TEST_BIN=qemu-system-x86_64`; QEMU needs
//! `-machine graphics=off` for SeaBIOS's serial console, which rvmm accepts and always has).
//! Boot CDs are built at test time with xorriso (El Torito, no emulation) and grub-mkrescue.

mod common;

use common::{binary, skip_on_qemu, TempDir, VmCommand};
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECTOR: u64 = 512;
/// bootdisk.S reads this sector when the disk reaches it (LBA48 through int 13h extensions).
const HIGH_LBA: u64 = 0x1000_0008;
/// GRUB runs at emulated CPL0 on hosts like the development one: about a minute to its menu.
const GRUB_TIMEOUT: Duration = Duration::from_secs(300);

fn machines() -> [&'static str; 2] {
    ["pc", "q35"]
}

/// The firmware's serial console: SeaBIOS uses it when the machine has no graphics.
fn firmware_vm(machine: &str) -> VmCommand {
    VmCommand::without_kernel()
        .set_option("-M", machine)
        .arg("-machine")
        .arg("graphics=off")
}

/// A sparse raw disk: the boot disk's boot sector, markers at LBA 1 and (if `high`) past 2^28.
fn boot_disk(dir: &TempDir, name: &str, high: bool) -> PathBuf {
    let boot = fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    let path = dir.file(name, &boot[..SECTOR as usize]);
    let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut sector = |lba: u64, text: &[u8]| {
        let mut s = text.to_vec();
        s.resize(SECTOR as usize, 0);
        f.seek(SeekFrom::Start(lba * SECTOR)).unwrap();
        f.write_all(&s).unwrap();
    };
    sector(1, b"LBA1-MARKER\0");
    let size = if high {
        sector(HIGH_LBA, b"HIGH-MARKER\0");
        (HIGH_LBA + 8) * SECTOR
    } else {
        1 << 20
    };
    f.set_len(size).unwrap();
    path
}

/// A bootable CD: bootdisk.bin as an El Torito no-emulation image (xorriso).
fn boot_cd(dir: &TempDir, name: &str) -> PathBuf {
    let root = dir.path().join(format!("{name}.root"));
    fs::create_dir_all(&root).unwrap();
    let mut boot = fs::read(common::guest("bootdisk.bin")).expect("bootdisk.bin");
    boot.resize(2048, 0);
    fs::write(root.join("boot.bin"), boot).unwrap();
    let iso = dir.path().join(name);
    tool(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            path_str(&iso),
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            path_str(&root),
        ],
    );
    iso
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Runs a host tool the test needs, failing loudly (scripts/test.sh installs them all).
fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed (scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn blank_qcow2(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path_str(&path), "64M"],
    );
    path
}

/// Runs `f` once per machine type in parallel (each boot spends seconds in emulated firmware).
fn on_each_machine(f: impl Fn(&'static str) + Sync) {
    std::thread::scope(|s| {
        let handles: Vec<_> = machines()
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
fn seabios_boots_a_disk_and_reads_sectors_below_and_above_lba28() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("fw-disk-{machine}"));
        let disk = boot_disk(&dir, "disk.img", true);
        let out = firmware_vm(machine)
            .arg("-smp")
            .arg("2")
            .arg("-drive")
            .arg(format!("file={},format=raw", disk.display()))
            .run();
        out.assert_stdout_contains("SeaBIOS");
        out.assert_stdout_contains("bootdisk: 2 vCPUs, 256 MiB RAM");
        out.assert_stdout_contains(&format!(
            "bootdisk: drive 80, {:016X} sectors",
            HIGH_LBA + 8
        ));
        out.assert_stdout_contains("lba1: LBA1-MARKER");
        out.assert_stdout_contains("lbahigh: HIGH-MARKER");
        out.assert_stdout_contains("bootdisk: done");
        out.assert_status(0);
    });
}

#[test]
fn every_reset_path_brings_the_firmware_back() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("fw-reset-{machine}"));
        let mut image = fs::read(common::guest("resetdisk.bin")).expect("resetdisk.bin");
        image.resize(1 << 20, 0);
        let disk = dir.file("reset.img", &image);
        // Three firmware boots at emulated CPL0 (about 12 s alone, over 45 s on a loaded host).
        let out = firmware_vm(machine)
            .without_flag("-no-reboot")
            .arg("-drive")
            .arg(format!("file={},format=raw", disk.display()))
            .timeout(std::time::Duration::from_secs(180))
            .run();
        let stdout = out.stdout.clone();
        for boot in 1..=3 {
            out.assert_stdout_contains(&format!("resetdisk: boot {boot}"));
        }
        // One firmware banner per boot: the BIOS image came back after each reset.
        assert_eq!(stdout.matches("SeaBIOS (version").count(), 3, "{stdout}");
        out.assert_status(0);
    });
}

#[test]
fn no_reboot_turns_a_reset_into_an_exit() {
    let dir = TempDir::new("fw-noreboot");
    let mut image = fs::read(common::guest("resetdisk.bin")).expect("resetdisk.bin");
    image.resize(1 << 20, 0);
    let disk = dir.file("reset.img", &image);
    let out = firmware_vm("q35")
        .arg("-drive")
        .arg(format!("file={},format=raw", disk.display()))
        .run();
    out.assert_stdout_contains("resetdisk: boot 1");
    out.assert_stdout_lacks("resetdisk: boot 2");
    out.assert_status(0);
}

#[test]
fn without_a_disk_the_firmware_boots_the_built_in_disk() {
    if skip_on_qemu("QEMU has no built-in disk") {
        return;
    }
    on_each_machine(|machine| {
        let out = firmware_vm(machine).run();
        out.assert_stdout_contains("Booting from Hard Disk");
        out.assert_stdout_contains("lba1: rvmm's built-in disk, read through int 13h");
        out.assert_status(0);
    });
}

#[test]
fn a_blank_disk_falls_through_to_the_cd_and_a_bootable_disk_wins_unless_boot_d() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("fw-order-{machine}"));
        let cd = boot_cd(&dir, "cd.iso");
        let blank = blank_qcow2(&dir, "blank.qcow2");
        let disk = boot_disk(&dir, "disk.img", false);
        let run = |hda: &Path, extra: &[&str]| {
            let mut vm = firmware_vm(machine)
                .arg("-hda")
                .arg(hda)
                .arg("-cdrom")
                .arg(&cd);
            for a in extra {
                vm = vm.arg(a);
            }
            vm.run()
        };
        // A CD boots with the BIOS's CD drive number, a hard disk with 0x80.
        let out = run(&blank, &[]);
        out.assert_stdout_contains("Boot failed: not a bootable disk");
        out.assert_stdout_contains("Booting from DVD/CD");
        out.assert_stdout_lacks("bootdisk: drive 80");
        out.assert_stdout_contains("bootdisk: done");
        out.assert_status(0);
        let out = run(&disk, &[]);
        out.assert_stdout_contains("bootdisk: drive 80");
        out.assert_stdout_contains("lba1: LBA1-MARKER");
        out.assert_status(0);
        let out = run(&disk, &["-boot", "d"]);
        out.assert_stdout_contains("Booting from DVD/CD");
        out.assert_stdout_lacks("bootdisk: drive 80");
        out.assert_status(0);
    });
}

#[test]
fn bootindex_orders_the_boot_devices() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("fw-bootindex-{machine}"));
        let cd = boot_cd(&dir, "cd.iso");
        let disk = boot_disk(&dir, "disk.img", false);
        let out = firmware_vm(machine)
            .arg("-drive")
            .arg(format!("if=none,id=hd,file={},format=raw", disk.display()))
            .arg("-device")
            .arg("ide-hd,drive=hd,bootindex=2")
            .arg("-drive")
            .arg(format!("if=none,id=cd,file={},media=cdrom", cd.display()))
            .arg("-device")
            // QEMU needs the bus when ide.0 is taken (q35's AHCI ports hold one drive each).
            .arg("ide-cd,drive=cd,bus=ide.1,bootindex=1")
            .run();
        out.assert_stdout_contains("Booting from DVD/CD");
        out.assert_stdout_lacks("bootdisk: drive 80");
        out.assert_status(0);
    });
}

/// The command line this project exists for, exactly, from a directory holding the two images:
/// a blank qcow2 disk and a bootable CD; the firmware falls through to the CD.
#[test]
fn the_seed_command_line_boots_the_installer_cd() {
    if skip_on_qemu("QEMU needs -machine graphics=off for a serial console") {
        return;
    }
    let dir = TempDir::new("fw-seed");
    let iso = boot_cd(&dir, "ubuntu.iso");
    assert!(iso.exists());
    blank_qcow2(&dir, "ubuntu.qcow2");
    let args = [
        "--enable-kvm",
        "-machine",
        "q35",
        "-cpu",
        "host,+vmx",
        "-smp",
        "1",
        "-m",
        "2048",
        "-name",
        "ubuntu",
        "-hda",
        "ubuntu.qcow2",
        "-cdrom",
        "ubuntu.iso",
    ];
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rvmm");
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the seed command line did not finish in {:?}",
                common::TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("Booting from DVD/CD"), "{stdout}");
    assert!(stdout.contains("bootdisk: done"), "{stdout}");
    // -cpu host,+vmx: rvmm warns only if the host cannot nest VMX, and runs on either way.
    assert!(!stderr.contains("not supported"), "{stderr}");
    File::open(dir.path().join("ubuntu.qcow2")).expect("the disk is still there");
}

/// A GRUB ISO whose menu reaches the serial console through SeaBIOS; keys typed on stdin move
/// in it: the down arrow then Enter runs the second entry, which prints and powers off.
#[test]
fn grub_menu_on_the_serial_console_follows_keys_from_stdin() {
    let dir = TempDir::new("fw-grub");
    let root = dir.path().join("iso");
    fs::create_dir_all(root.join("boot/grub")).unwrap();
    // The second echo pushes out the first line: SeaBIOS's serial console holds back the last
    // character until the cursor moves on.
    fs::write(
        root.join("boot/grub/grub.cfg"),
        "insmod iorw\nset timeout=-1\n\
         menuentry 'rvmm first entry' { echo rvmm-grub-first; echo ' '; outw 0x604 0x2000 }\n\
         menuentry 'rvmm second entry' { echo rvmm-grub-second; echo ' '; outw 0x604 0x2000 }\n",
    )
    .unwrap();
    let iso = dir.path().join("grub.iso");
    tool("grub-mkrescue", &["-o", path_str(&iso), path_str(&root)]);
    let mut vm = firmware_vm("q35")
        .arg("-cdrom")
        .arg(&iso)
        .stdin_pipe()
        .timeout(GRUB_TIMEOUT)
        .spawn();
    assert!(
        vm.wait_for_stdout("rvmm second entry", GRUB_TIMEOUT),
        "no GRUB menu:\n{}",
        vm.stdout()
    );
    // Let the menu finish drawing, then: down arrow (as a terminal sends it), Enter.
    std::thread::sleep(Duration::from_secs(2));
    vm.write_stdin(b"\x1b[B");
    std::thread::sleep(Duration::from_secs(1));
    vm.write_stdin(b"\r");
    let out = vm.wait(GRUB_TIMEOUT);
    out.assert_stdout_contains("rvmm-grub-second");
    out.assert_stdout_lacks("rvmm-grub-first");
    out.assert_status(0);
}

#[test]
fn an_iso_as_a_writable_disk_and_a_missing_cd_are_refused_by_name() {
    if skip_on_qemu("QEMU attaches an ISO as a writable disk") {
        return;
    }
    let dir = TempDir::new("fw-refuse");
    let iso = boot_cd(&dir, "x.iso");
    for machine in machines() {
        let hda = format!("file={},format=raw", iso.display());
        common::expect_error(
            &["-M", machine, "-drive", &hda],
            "is an ISO 9660 CD image: attach it with -cdrom",
        );
        let missing = dir.path().join("missing.iso");
        common::expect_error(
            &["-M", machine, "-cdrom", path_str(&missing)],
            path_str(&missing),
        );
    }
    // Read-only, the same image is a disk like any other (one without a boot sector).
    let mut vm = firmware_vm("pc")
        .arg("-drive")
        .arg(format!("file={},format=raw,readonly=on", iso.display()))
        .spawn();
    assert!(
        vm.wait_for_stdout("Boot failed: not a bootable disk", common::TIMEOUT),
        "{}",
        vm.stdout()
    );
    vm.kill();
}

/// `-boot menu=on`: SeaBIOS offers its menu on the serial console; ESC opens it and a digit
/// picks the CD although the disk comes first in the boot order.
#[test]
fn the_boot_menu_works_from_the_serial_console() {
    let dir = TempDir::new("fw-menu");
    let cd = boot_cd(&dir, "cd.iso");
    let disk = boot_disk(&dir, "disk.img", false);
    let mut vm = firmware_vm("q35")
        .arg("-hda")
        .arg(&disk)
        .arg("-cdrom")
        .arg(&cd)
        .arg("-boot")
        .arg("menu=on,splash-time=30000")
        .stdin_pipe()
        .spawn();
    let wait = Duration::from_secs(60);
    assert!(
        vm.wait_for_stdout("Press ESC for boot menu", wait),
        "no prompt:\n{}",
        vm.stdout()
    );
    vm.write_stdin(b"\x1b");
    assert!(
        vm.wait_for_stdout("Select boot device", wait),
        "no menu:\n{}",
        vm.stdout()
    );
    std::thread::sleep(Duration::from_secs(1));
    let menu = vm.stdout();
    let key = menu
        .lines()
        .find(|l| l.contains("DVD/CD"))
        .and_then(|l| {
            l.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
                .chars()
                .next()
        })
        .unwrap_or_else(|| panic!("no CD entry in the menu:\n{menu}"));
    vm.write_stdin(&[key as u8]);
    let out = vm.wait(wait);
    out.assert_stdout_contains("Booting from DVD/CD");
    out.assert_stdout_contains("bootdisk: done");
    out.assert_stdout_lacks("bootdisk: drive 80");
    out.assert_status(0);
}

/// A CD whose El Torito boot catalog is garbage: the firmware reports that it cannot boot it,
/// and rvmm stays up (the catalog is the guest's business, rvmm only serves sectors).
#[test]
fn a_cd_with_a_garbage_boot_catalog_fails_in_the_firmware_not_in_rvmm() {
    let dir = TempDir::new("fw-badcd");
    let iso = boot_cd(&dir, "bad.iso");
    let mut bytes = fs::read(&iso).unwrap();
    // The boot record volume descriptor (sector 17) holds the catalog's sector at offset 0x47.
    let at = 17 * 2048 + 0x47;
    let catalog = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize * 2048;
    let mut x: u32 = 0x2545_f491;
    for b in &mut bytes[catalog..catalog + 2048] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(&iso, &bytes).unwrap();
    on_each_machine(|machine| {
        let mut vm = firmware_vm(machine).arg("-cdrom").arg(&iso).spawn();
        assert!(
            vm.wait_for_stdout("No bootable device", common::TIMEOUT),
            "{}",
            vm.stdout()
        );
        let stdout = vm.stdout();
        assert!(stdout.contains("Booting from DVD/CD"), "{stdout}");
        assert!(!stdout.contains("bootdisk:"), "{stdout}");
        let out = vm.kill();
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    });
}

/// Past 2.75 GiB of RAM q35 moves RAM above 4 GiB to keep its PCIe ECAM window (0xb0000000)
/// free, as QEMU does; the firmware must still find the PCI devices and the disk.
#[test]
fn large_memory_keeps_the_pci_windows_free() {
    on_each_machine(|machine| {
        let dir = TempDir::new(&format!("fw-bigmem-{machine}"));
        let disk = boot_disk(&dir, "disk.img", false);
        let out = firmware_vm(machine)
            .set_option("-m", "4G")
            .arg("-drive")
            .arg(format!("file={},format=raw", disk.display()))
            .run();
        out.assert_stdout_contains("bootdisk: 1 vCPUs, 4096 MiB RAM");
        out.assert_stdout_contains("lba1: LBA1-MARKER");
        out.assert_status(0);
    });
}
