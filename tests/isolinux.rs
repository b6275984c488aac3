//! Debian's ISOLINUX boots from `-cdrom` through SeaBIOS on pc and q35, prints its `SAY` line on
//! the serial console and powers the machine off (poweroff.c32: APM "off", which SeaBIOS turns
//! into an ACPI S5 write). The ISO is built at test time from the Debian packages isolinux,
//! syslinux-common and xorriso (scripts/test.sh installs them).
//!
//! ISOLINUX's core runs in 32-bit protected mode and returns from every timer interrupt with
//! `iretd`; on hosts whose KVM emulates guest kernel mode the host cannot emulate that `iret`
//! and rvmm completes it (docs/EMULATED-KVM.md). QEMU stops there on such a host.

mod common;

use common::{is_qemu, TempDir, VmCommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const MODULES: &str = "/usr/lib/syslinux/modules/bios";
const SAY: &str = "rvmm-isolinux-ok";

/// SERIAL before anything is printed, so that every line reaches the console; no menu, no
/// prompt, no timeout: straight to the poweroff module. The second SAY is there because the end
/// of the first line could be missing from the serial output at poweroff (once, under load: it
/// ended "rvmm-isolinux-o", with SeaBIOS's serial console interleaving cursor moves).
const CONFIG: &str = "SERIAL 0 115200\n\
                      SAY rvmm-isolinux-ok\n\
                      SAY rvmm-isolinux-end\n\
                      PROMPT 0\n\
                      TIMEOUT 0\n\
                      DEFAULT off\n\
                      LABEL off\n\
                      \x20 COM32 poweroff.c32\n";

/// The host's KVM is kvm_pvm, which emulates guest kernel mode (crates/vmm/src/host.rs).
fn host_emulates_cpl0() -> bool {
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    module("kvm_pvm") && !module("kvm_intel") && !module("kvm_amd")
}

/// Why the ISO cannot be built here, naming the missing package.
fn missing_package() -> Option<&'static str> {
    if !Path::new(ISOLINUX_BIN).exists() {
        return Some("isolinux");
    }
    if !Path::new(MODULES).join("ldlinux.c32").exists()
        || !Path::new(MODULES).join("poweroff.c32").exists()
    {
        return Some("syslinux-common");
    }
    if Command::new("xorriso").arg("-version").output().is_err() {
        return Some("xorriso");
    }
    None
}

/// An El Torito, no-emulation ISO with isolinux.bin as its boot image (the isolinux package's
/// README: `-no-emul-boot -boot-load-size 4 -boot-info-table`), written to `out`.
fn build_iso(tree: &TempDir, out: &TempDir) -> PathBuf {
    let read =
        |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tree.file("isolinux.bin", &read(Path::new(ISOLINUX_BIN)));
    for module in ["ldlinux.c32", "poweroff.c32"] {
        tree.file(module, &read(&Path::new(MODULES).join(module)));
    }
    let cfg = tree.file("isolinux.cfg", CONFIG.as_bytes());
    let iso = out.file("isolinux.iso", b"");
    let run = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .args([
            "-b",
            "isolinux.bin",
            "-c",
            "boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ])
        .arg(cfg.parent().unwrap())
        .output()
        .expect("run xorriso");
    assert!(
        run.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    iso
}

#[test]
fn isolinux_says_its_line_and_powers_off_on_pc_and_q35() {
    if let Some(package) = missing_package() {
        eprintln!("skipped: {package} not installed");
        return;
    }
    let emulating = host_emulates_cpl0();
    if is_qemu() && emulating {
        eprintln!("skipped on QEMU: this host cannot emulate ISOLINUX's protected-mode iretd");
        return;
    }
    let (tree, out) = (TempDir::new("isolinux-tree"), TempDir::new("isolinux-iso"));
    let iso = build_iso(&tree, &out);
    let boots: Vec<_> = ["pc", "q35"]
        .into_iter()
        .map(|machine| {
            let iso = iso.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let out = VmCommand::without_kernel()
                    .set_option("-M", machine)
                    .arg("-cdrom")
                    .arg(&iso)
                    .env("RVMM_LOG", "debug")
                    .timeout(Duration::from_secs(150))
                    .run();
                (machine, start.elapsed(), out)
            })
        })
        .collect();
    for boot in boots {
        let (machine, took, out) = boot.join().unwrap();
        eprintln!("{machine}: ISOLINUX to poweroff in {took:.1?}");
        out.assert_stdout_contains("ISOLINUX 6.04");
        out.assert_stdout_contains(SAY);
        out.assert_status(0);
        if emulating && !is_qemu() {
            assert!(
                out.stderr
                    .lines()
                    .any(|l| l.contains("completed in user space") && l.contains("insn=iretd")),
                "{machine}: no debug line for an iretd completed by rvmm\n{out}"
            );
        }
    }
}
