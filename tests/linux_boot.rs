//! Boot test 1: Debian's stock cloud kernel (fetched by scripts/get-linux.sh) with -smp 2 and a
//! busybox initrd reaches "Run /init", with both CPUs up and the ACPI tables parsed, and rvmm
//! exits 0 when the guest panics and reboots under -no-reboot.
//!
//! On a host whose KVM emulates guest kernel mode (docs/EMULATED-KVM.md) this takes minutes, so
//! it is #[ignore]d and scripts/test.sh runs it explicitly. RVMM_LINUX_DIR names the directory
//! with `vmlinuz` and `initrd.img` (default: target/linux, where scripts/get-linux.sh puts them).

mod common;

use common::{skip_on_qemu, VmCommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The kernel parameters docs/EMULATED-KVM.md explains. Harmless on a normal KVM host.
pub const EMULATED_KVM_CMDLINE: &str =
    "noxsave clearcpuid=141,308,137 cryptomgr.notests reboot=k panic=-1";

/// Parameters that only cut boot time: they skip tracing, BTF and self-test set-up this test does
/// not use (docs/PERFORMANCE.md has the profile and the measurements, docs/EMULATED-KVM.md what
/// each one turns off). Harmless on a normal KVM host.
pub const FAST_BOOT_CMDLINE: &str = "nowatchdog mitigations=off rodata=off \
     initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,tracer_init_tracefs,\
     blake2s_mod_init,cubictcp_register,bpf_rstat_kfunc_init,bpf_key_sig_kfuncs_init,kfunc_init,\
     bpf_prog_test_run_init,bpf_tcp_ca_kfunc_init";

/// Guest RAM: 128 MiB is plenty for the busybox initrd, and every MiB costs boot time where the
/// kernel's page initialisation is emulated (docs/PERFORMANCE.md).
const GUEST_MEM_MIB: &str = "128";

fn linux_dir() -> PathBuf {
    std::env::var_os("RVMM_LINUX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/linux"))
}

#[test]
#[ignore = "boots a stock kernel: minutes where KVM emulates CPL0; scripts/test.sh runs it"]
fn stock_debian_kernel_reaches_init_with_two_cpus() {
    if skip_on_qemu("the boot test measures rvmm") {
        return;
    }
    let dir = linux_dir();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    assert!(
        kernel.is_file() && initrd.is_file(),
        "{} lacks vmlinuz or initrd.img: run scripts/get-linux.sh first",
        dir.display()
    );
    let start = Instant::now();
    let mut vm = VmCommand::without_kernel()
        .arg("-smp")
        .arg("2")
        .arg("-m")
        .arg(GUEST_MEM_MIB)
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .append(&format!(
            "console=ttyS0 {EMULATED_KVM_CMDLINE} {FAST_BOOT_CMDLINE}"
        ))
        .spawn();
    let reached = vm.wait_for_stdout("Run /init as init process", Duration::from_secs(900));
    let to_init = start.elapsed();
    assert!(
        reached,
        "no \"Run /init\" after {to_init:?}\n{}",
        vm.stdout()
    );
    eprintln!(
        "linux boot: start to \"Run /init\" in {:.1} s",
        to_init.as_secs_f64()
    );
    // The initrd's /init prints the user-space checks and reboots; where user space cannot make
    // system calls, init dies and the kernel panics, and panic=-1 reboots. Either way rvmm exits 0.
    let out = vm.wait(Duration::from_secs(300));
    let log = &out.stdout;
    for needle in [
        "smp: Brought up 1 node, 2 CPUs",
        "ACPI: Using ACPI (MADT) for SMP configuration information",
        "ACPI: PM-Timer IO Port: 0x608",
        "ACPI: Interpreter enabled",
    ] {
        assert!(log.contains(needle), "boot log lacks {needle:?}\n{out}");
    }
    if log.contains("rvmm-guest: user space up") {
        out.assert_stdout_contains("rvmm-guest: cpus=2");
    } else if out.stderr.contains("docs/EMULATED-KVM.md") {
        eprintln!(
            "skipped the user-space checks: this host's KVM does not deliver system calls from \
             guest user space (docs/EMULATED-KVM.md)"
        );
    } else {
        panic!("user space did not run on a host with normal KVM\n{out}");
    }
    assert_eq!(
        out.status,
        Some(0),
        "rvmm did not exit 0 after the guest's reboot\n{out}"
    );
}
