//! `-cpu` models, features and properties through the binary (rvmm issue 14). This host's KVM
//! may hand the guest the host's CPUID whatever KVM_SET_CPUID2 says (docs/EMULATED-KVM.md), so
//! the table rvmm builds is checked in unit tests (crates/arch/src/cpu/tests.rs) and here
//! through its debug log line; these tests check the messages and exit statuses.

mod common;

use common::{binary, expect_error, guest, run_limited, skip_on_qemu, VmCommand, TIMEOUT};

/// isa-debug-exit status of a guest that passed (`(0x10 << 1) | 1`).
const EXIT_OK: i32 = (0x10 << 1) | 1;
use std::process::Command;

/// Runs the default guest (direct boot, so no firmware is needed) with `-cpu cpu`; returns
/// the status and stderr.
fn run_cpu(cpu: &str, log: Option<&str>) -> (Option<i32>, String) {
    let kernel = guest("default.elf");
    let args = ["-kernel".as_ref(), kernel.as_os_str()]
        .into_iter()
        .chain(
            [
                "--enable-kvm",
                "-machine",
                "q35",
                "-cpu",
                cpu,
                "-smp",
                "1",
                "-m",
                "2048",
                "-nodefaults",
            ]
            .map(std::ffi::OsStr::new),
        )
        .collect::<Vec<_>>();
    match log {
        None => {
            let (code, stderr, _) = run_limited(&binary(), &args, TIMEOUT);
            (code, stderr)
        }
        Some(level) => {
            let out = Command::new(binary())
                .args(&args)
                .env("RVMM_LOG", level)
                .output()
                .expect("run rvmm");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into(),
            )
        }
    }
}

/// Whether KVM offers VMX to guests: an Intel host with nested virtualization on.
fn host_offers_vmx() -> bool {
    std::fs::read_to_string("/sys/module/kvm_intel/parameters/nested")
        .is_ok_and(|v| matches!(v.trim(), "Y" | "1"))
}

const VMX_WARNING: &str =
    "rvmm: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]";

/// The guest's CPUID.1:ECX as rvmm hands it to KVM_SET_CPUID2 (its debug log line).
fn leaf1_ecx(cpu: &str) -> u32 {
    let (code, stderr) = run_cpu(cpu, Some("debug"));
    assert_eq!(code, Some(0), "-cpu {cpu}:\n{stderr}");
    let hex = stderr
        .split("guest CPUID leaf 1: ecx=0x")
        .nth(1)
        .unwrap_or_else(|| panic!("no CPUID line:\n{stderr}"));
    u32::from_str_radix(&hex[..8], 16).unwrap()
}

#[test]
fn host_plus_vmx_runs_and_warns_only_when_the_host_lacks_vmx() {
    if skip_on_qemu("checks rvmm's messages") {
        return;
    }
    let (code, stderr) = run_cpu("host,+vmx", None);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.contains(VMX_WARNING), !host_offers_vmx(), "{stderr}");
    assert!(!stderr.contains("not supported"), "{stderr}");
    let vmx = leaf1_ecx("host,+vmx") & (1 << 5) != 0;
    assert_eq!(vmx, host_offers_vmx());
}

#[test]
fn minus_and_off_clear_features() {
    if skip_on_qemu("checks rvmm's log") {
        return;
    }
    let (code, stderr) = run_cpu("host,-sse4.2,sse4.1=off", None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (sse41, sse42) = (1 << 19, 1 << 20);
    assert_eq!(leaf1_ecx("host,-sse4.2,sse4.1=off") & (sse41 | sse42), 0);
    assert_eq!(
        leaf1_ecx("host,-sse4_2,sse4_1=off,+sse4.1") & (sse41 | sse42),
        sse41 & leaf1_ecx("host")
    );
    // The hypervisor bit is on unless turned off.
    assert_ne!(leaf1_ecx("host") & (1 << 31), 0);
    assert_eq!(leaf1_ecx("max,-hypervisor") & (1 << 31), 0);
}

#[test]
fn unknown_features_and_properties_are_named() {
    expect_error(&["-cpu", "host,foo"], "host-x86_64-cpu.foo");
    expect_error(
        &["-cpu", "host,foo"],
        "rvmm: -cpu: can't apply global host-x86_64-cpu.foo=on: Property 'host-x86_64-cpu.foo' not found",
    );
    expect_error(
        &["-cpu", "max,+frobnicate"],
        "Property 'max-x86_64-cpu.frobnicate' not found",
    );
    expect_error(
        &["-cpu", "host,vmx=maybe"],
        "Parameter 'vmx' expects 'on' or 'off'",
    );
    expect_error(&["-cpu", "host,hv-synic"], "hv-synic");
    expect_error(&["-cpu", "qemu65"], "unable to find CPU model 'qemu65'");
}

#[test]
fn enforce_refuses_a_feature_the_host_lacks() {
    if skip_on_qemu("checks rvmm's messages") {
        return;
    }
    // Intel's VMX and AMD's SVM: no host offers both to its guests.
    let (code, stderr) = run_cpu("host,enforce,+vmx,+svm", None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("host doesn't support requested feature: CPUID."),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("rvmm: -cpu: Host doesn't support requested features\n"),
        "{stderr}"
    );
    // check=off silences the warnings, unless enforce (QEMU: verbose = check || enforce).
    let (code, stderr) = run_cpu("host,check=off,+vmx,+svm", None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = run_cpu("host,check=off,enforce,+vmx,+svm", None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CPUID.80000001H:ECX.svm [bit 2]")
            || stderr.contains("CPUID.01H:ECX.vmx [bit 5]"),
        "{stderr}"
    );
}

#[test]
fn cpu_help_lists_models_and_flags() {
    let out = Command::new(binary())
        .args(["-cpu", "help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Available CPUs:\n"), "{text}");
    assert!(text.contains("x86 host "), "{text}");
    assert!(text.contains("\nRecognized CPUID flags:\n"), "{text}");
    assert!(
        text.contains(" vmx ") && text.contains(" sse4.2 "),
        "{text}"
    );
}

/// The LAPIC timer's TSC-deadline mode follows the `tsc-deadline` flag, as on QEMU: with it the
/// LVT takes mode 2 and IA32_TSC_DEADLINE fires the timer; without it the mode field is one bit
/// wide (mode 2 reads back as 0) and KVM ignores the MSR (reads 0) rather than raising #GP.
#[test]
fn tsc_deadline_mode_follows_the_flag() {
    for cpu in ["host", "qemu64,+tsc-deadline"] {
        let out = VmCommand::guest("tsc_deadline.elf")
            .set_option("-cpu", cpu)
            .run();
        out.assert_stdout_contains("tsc deadline: lvt mode 2\n");
        out.assert_stdout_contains("tsc deadline: msr reads armed\n");
        out.assert_stdout_contains("tsc deadline: interrupt on vector 0x33\n");
        out.assert_status(EXIT_OK);
    }
    for cpu in ["qemu64", "qemu64,-tsc-deadline"] {
        let out = VmCommand::guest("tsc_deadline.elf")
            .set_option("-cpu", cpu)
            .run();
        out.assert_stdout_contains("tsc deadline: lvt mode 0\n");
        out.assert_stdout_contains("tsc deadline: msr reads 0\n");
        out.assert_stdout_lacks("#GP");
        out.assert_status(EXIT_OK);
    }
}
