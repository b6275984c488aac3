//! Boots each test guest (see guests/README.md) through the VMM binary with a
//! QEMU-style command line and checks its serial output and exit status.
//!
//! `RVMM_TEST_BIN=qemu-system-x86_64 cargo test --test guests_boot` runs the
//! same expectations against QEMU; tests for paths QEMU lacks are skipped.

mod common;

use common::{skip_on_qemu, TempDir, VmCommand};
use std::time::Duration;

/// isa-debug-exit status for a guest write of `value`.
const fn debug_exit_status(value: i32) -> i32 {
    (value << 1) | 1
}

const EXIT_OK: i32 = debug_exit_status(0x10);
const EXIT_UNEXPECTED: i32 = debug_exit_status(0x12);

const MODULE_A: &[u8] = b"hello module\n";
const MODULE_A_HEX: &str = "68 65 6c 6c 6f 20 6d 6f";
const MODULE_B: &[u8] = b"ABCDEFGHIJ";
const MODULE_B_HEX: &str = "41 42 43 44 45 46 47 48";

#[test]
fn default_guest_prints_fw_cfg_banner_and_powers_off() {
    let out = VmCommand::guest("default.elf")
        .arg("-smp")
        .arg("2")
        .append("console=ttyS0 hello")
        .run();
    out.assert_stdout_contains("rvmm default guest: 2 vCPUs, 256 MiB RAM\n");
    out.assert_stdout_contains("cmdline: console=ttyS0 hello\n");
    out.assert_status(0);
}

#[test]
fn default_guest_without_cmdline_prints_only_the_banner() {
    let out = VmCommand::guest("default.elf").run();
    out.assert_stdout_contains("rvmm default guest: 1 vCPU, 256 MiB RAM\n");
    out.assert_stdout_lacks("cmdline:");
    out.assert_status(0);
}

#[test]
fn builtin_default_guest_runs_without_kernel() {
    if skip_on_qemu("QEMU has no built-in guest; without -kernel it runs the BIOS") {
        return;
    }
    // On microvm; pc and q35 without -kernel boot the firmware (tests/firmware.rs).
    let out = VmCommand::without_kernel()
        .set_option("-M", "microvm")
        .arg("-smp")
        .arg("2")
        .run();
    out.assert_stdout_contains("rvmm default guest: 2 vCPUs, 256 MiB RAM\n");
    out.assert_status(0);
}

fn check_pvh(guest: &str, class: &str) {
    let dir = TempDir::new(&format!("pvh-{class}"));
    let module = dir.file("module0", MODULE_A);
    let out = VmCommand::guest(guest)
        .append("pvh test=1")
        .initrd(&[&module])
        .run();
    out.assert_stdout_contains(&format!("pvh ok ({class})\n"));
    out.assert_stdout_contains("cmdline: pvh test=1\n");
    assert!(
        out.stdout_number("memmap entries: ") > 0,
        "empty memmap\n{out}"
    );
    out.assert_stdout_contains("modules: 1\n");
    out.assert_stdout_contains(&format!(
        "module 0: size {} bytes {MODULE_A_HEX}\n",
        MODULE_A.len()
    ));
    out.assert_status(EXIT_OK);
}

#[test]
fn pvh_elf32_reports_start_info() {
    check_pvh("pvh32.elf", "elf32");
}

#[test]
fn pvh_elf64_reports_start_info() {
    check_pvh("pvh64.elf", "elf64");
}

#[test]
fn pvh_without_initrd_has_no_modules() {
    let out = VmCommand::guest("pvh32.elf").run();
    out.assert_stdout_contains("pvh ok (elf32)\n");
    out.assert_stdout_contains("cmdline: \n");
    out.assert_stdout_contains("modules: 0\n");
    out.assert_status(EXIT_OK);
}

fn check_multiboot(guest: &str, kind: &str) {
    let dir = TempDir::new(&format!("multiboot-{}", guest.replace('.', "-")));
    let a = dir.file("a", MODULE_A);
    let b = dir.file("b", MODULE_B);
    let out = VmCommand::guest(guest)
        .append("mb=1 x")
        .initrd(&[&a, &b])
        .run();
    out.assert_stdout_contains(&format!("multiboot ok ({kind})\n"));
    let lower = out.stdout_number("mem_lower: ");
    assert!((1..=640).contains(&lower), "mem_lower {lower}\n{out}");
    let upper_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("mem_lower: "))
        .and_then(|l| l.split("mem_upper: ").nth(1))
        .unwrap_or_else(|| panic!("no mem_upper\n{out}"));
    let upper: u64 = upper_line
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad mem_upper\n{out}"));
    // 256 MiB guest: everything above 1 MiB, minus what the VMM reserves.
    assert!(
        (200 * 1024..=255 * 1024).contains(&upper),
        "mem_upper {upper}\n{out}"
    );
    // QEMU prefixes the kernel file name; both must end with the -append text.
    let cmdline = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cmdline: "))
        .unwrap_or_else(|| panic!("no cmdline\n{out}"));
    assert!(cmdline.ends_with("mb=1 x"), "cmdline {cmdline:?}\n{out}");
    out.assert_stdout_contains("modules: 2\n");
    out.assert_stdout_contains(&format!(
        "module 0: '{}' size {} bytes {MODULE_A_HEX}\n",
        a.display(),
        MODULE_A.len()
    ));
    out.assert_stdout_contains(&format!(
        "module 1: '{}' size {} bytes {MODULE_B_HEX}\n",
        b.display(),
        MODULE_B.len()
    ));
    assert!(out.stdout_number("mmap entries: ") > 0, "empty mmap\n{out}");
    out.assert_status(EXIT_OK);
}

#[test]
fn multiboot_elf_reports_info_and_modules() {
    check_multiboot("multiboot.elf", "elf");
}

#[test]
fn multiboot_aout_kludge_reports_info_and_modules() {
    check_multiboot("multiboot_aout.bin", "a.out kludge");
}

fn check_boot_params(guest: &str, name: &str) {
    let dir = TempDir::new(&format!("bootparams-{name}"));
    let initrd = dir.file("initrd", MODULE_A);
    let out = VmCommand::guest(guest)
        .append("console=ttyS0 bp=1")
        .initrd(&[&initrd])
        .run();
    out.assert_stdout_contains(&format!("{name} ok\n"));
    out.assert_stdout_contains("cmdline: console=ttyS0 bp=1\n");
    assert!(out.stdout_number("e820 entries: ") > 0, "empty e820\n{out}");
    out.assert_stdout_contains("initrd: addr 0x");
    out.assert_stdout_contains(&format!(
        ", size {}, bytes {MODULE_A_HEX}\n",
        MODULE_A.len()
    ));
    out.assert_stdout_lacks("initrd: addr 0x0,");
    out.assert_status(EXIT_OK);
}

#[test]
fn bzimage_64bit_entry_reads_boot_params() {
    if skip_on_qemu("QEMU enters a bzImage through its real-mode setup code, not the 64-bit entry")
    {
        return;
    }
    check_boot_params("bzimage.bin", "bzimage");
}

#[test]
fn bzimage_without_initrd_reports_none() {
    if skip_on_qemu("QEMU enters a bzImage through its real-mode setup code, not the 64-bit entry")
    {
        return;
    }
    let out = VmCommand::guest("bzimage.bin").run();
    out.assert_stdout_contains("bzimage ok\n");
    out.assert_stdout_contains("initrd: addr 0x0, size 0\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn vmlinux_elf64_without_pvh_note_reads_boot_params() {
    if skip_on_qemu("QEMU loads ELF kernels only through a PVH note") {
        return;
    }
    check_boot_params("vmlinux64.elf", "vmlinux64");
}

#[test]
fn pio_and_mmio_access_sizes_on_pc_testdev() {
    let out = VmCommand::guest("pio_mmio.elf")
        .arg("-device")
        .arg("pc-testdev")
        .run();
    out.assert_stdout_lacks("FAIL");
    out.assert_stdout_contains("mmio 8-byte write/read: ok\n");
    out.assert_stdout_contains("unclaimed port 4-byte read: ok\n");
    out.assert_stdout_contains("pio_mmio: all ok\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn exitcode_from_cmdline() {
    for code in [0, 5, 42] {
        let out = VmCommand::guest("exitcode.elf")
            .append(&format!("quiet code={code} x=y"))
            .run();
        out.assert_stdout_contains(&format!("exitcode: {code}\n"));
        out.assert_status(debug_exit_status(code));
    }
}

#[test]
fn reset_reboots_until_third_boot() {
    let out = VmCommand::guest("reset.elf")
        .without_flag("-no-reboot")
        .run();
    out.assert_stdout_contains("boot 1\nboot 2\nboot 3\nreset: done\n");
    out.assert_stdout_lacks("boot 4");
    out.assert_status(EXIT_OK);
}

#[test]
fn reset_with_no_reboot_exits_zero() {
    let out = VmCommand::guest("reset.elf").run();
    out.assert_stdout_contains("boot 1\n");
    out.assert_stdout_lacks("boot 2");
    out.assert_status(0);
}

#[test]
fn triple_fault_with_no_reboot_exits_zero() {
    let out = VmCommand::guest("triplefault.elf").run();
    out.assert_stdout_contains("triple fault next\n");
    out.assert_stdout_lacks("still running");
    out.assert_status(0);
}

#[test]
fn halted_guest_stops_on_sigterm() {
    let mut vm = VmCommand::guest("hlt.elf").spawn();
    vm.expect_stdout("halting\n");
    vm.signal("TERM");
    let out = vm.wait(Duration::from_secs(10));
    out.assert_status(0);
}

#[test]
fn int3_handler_runs_and_returns() {
    if skip_on_qemu(
        "KVM on this host cannot emulate int3 at CPL0 and QEMU pauses the VM; \
         rvmm injects #BP instead",
    ) {
        return;
    }
    let out = VmCommand::guest("int3.elf").run();
    out.assert_stdout_contains("int3 handled\nafter int3\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn unemulatable_instruction_is_reported() {
    if skip_on_qemu("QEMU pauses the VM on a KVM emulation failure instead of exiting") {
        return;
    }
    let out = VmCommand::guest("badinsn.elf").run();
    let rip = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("badinsn: xsave at 0x"))
        .unwrap_or_else(|| panic!("guest did not print the xsave address\n{out}"))
        .to_string();
    if out.status == Some(EXIT_UNEXPECTED) {
        eprintln!("this host runs xsave at CPL0 natively: nothing to report");
        return;
    }
    assert_ne!(out.status, Some(0), "emulation failure exited 0\n{out}");
    assert_ne!(out.status, None, "VMM died from a signal\n{out}");
    let report = format!("{}\n{}", out.stderr, out.stdout).to_ascii_lowercase();
    assert!(report.contains("rip"), "report does not name RIP\n{out}");
    assert!(report.contains(&rip), "report lacks RIP {rip}\n{out}");
    // xsave (%edi) is 0f ae 27.
    assert!(
        report.contains("0f ae") || report.contains("0fae"),
        "report lacks the instruction bytes\n{out}"
    );
}

/// Names of the threads of a running process (/proc/PID/task/*/comm).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn smp4_runs_one_thread_per_vcpu_and_all_end_with_the_vm() {
    if skip_on_qemu("checks rvmm's vCPU thread names") {
        return;
    }
    let mut vm = VmCommand::guest("smp.elf").arg("-smp").arg("4").spawn();
    vm.expect_stdout("smp bsp\n");
    let names = thread_names(vm.pid());
    let vcpus: Vec<&String> = names.iter().filter(|n| n.starts_with("vcpu")).collect();
    assert_eq!(
        vcpus,
        ["vcpu0", "vcpu1", "vcpu2", "vcpu3"],
        "threads: {names:?}"
    );
    // The secondary vCPUs wait for INIT/SIPI and the BSP is halted: nobody spins. Measured as
    // the CPU time used over 300 ms (one spinning vCPU alone would use about 30 ticks).
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", vm.pid())).unwrap();
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_millis(300));
    let ticks = cpu_ticks() - before;
    assert!(
        ticks < 10,
        "a halted 4-vCPU VM used {ticks} clock ticks of CPU in 300 ms"
    );
    vm.signal("TERM");
    let out = vm.wait(Duration::from_secs(5));
    out.assert_status(0);

    // A guest that exits on its own ends every vCPU thread too: rvmm returns promptly.
    let start = std::time::Instant::now();
    let out = VmCommand::guest("pvh32.elf").arg("-smp").arg("4").run();
    out.assert_status(33);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn microvm_machine_boots_pvh_and_multiboot() {
    for guest in ["pvh32.elf", "multiboot.elf"] {
        let out = VmCommand::guest(guest).arg("-M").arg("microvm").run();
        out.assert_status(33);
        out.assert_stdout_contains(" ok");
    }
}

#[test]
fn smp_guest_gets_one_thread_per_vcpu() {
    let mut vm = VmCommand::guest("smp.elf").arg("-smp").arg("2").spawn();
    vm.expect_stdout("smp bsp\n");
    let threads = vm.thread_count();
    // The main thread plus one per vCPU, at least.
    assert!(threads >= 3, "only {threads} threads for -smp 2");
    vm.kill();
}

/// KVM's paravirtual CPUID leaf as the guest kernel reads it: kvm-clock is always offered; the
/// features whose guest side makes hypercalls (PV_UNHALT, PV_SEND_IPI, PV_SCHED_YIELD,
/// HC_MAP_GPA_RANGE) only where KVM runs guest kernel code natively, because an emulated
/// `vmcall` never completes on hosts whose KVM emulates CPL0 (docs/EMULATED-KVM.md).
#[test]
fn kvm_features_hide_hypercalls_only_where_kvm_emulates_kernel_mode() {
    if skip_on_qemu("checks rvmm's CPUID policy") {
        return;
    }
    let out = VmCommand::guest("kvmcpuid.elf").run();
    out.assert_status(33);
    out.assert_stdout_contains("kvm signature: KVMKVMKVM");
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("kvm features: 0x"))
        .unwrap_or_else(|| panic!("no features line\n{out}"));
    let features = u32::from_str_radix(line.trim(), 16).unwrap();
    assert_ne!(
        features & (1 << 3),
        0,
        "kvm-clock (CLOCKSOURCE2) offered: {features:#x}"
    );
    let m = std::path::Path::new("/sys/module");
    let emulated =
        m.join("kvm_pvm").exists() && !m.join("kvm_intel").exists() && !m.join("kvm_amd").exists();
    let hypercalls = (1 << 7) | (1 << 11) | (1 << 13) | (1 << 16);
    if emulated {
        assert_eq!(
            features & hypercalls,
            0,
            "hypercall features offered: {features:#x}"
        );
    } else {
        assert_ne!(
            features & (1 << 11),
            0,
            "PV_SEND_IPI hidden on a normal KVM host: {features:#x}"
        );
    }
}
