//! Instructions KVM cannot emulate on hosts that emulate guest kernel mode, completed by rvmm in
//! user space (docs/EMULATED-KVM.md). Each group runs in its own tiny guest (guests/src/emulate.S)
//! that checks results, flags and faults itself; on a normal KVM host they run natively and the
//! guest's checks still hold. On an emulating host the debug log must also show rvmm did the work.

mod common;

use common::{skip_on_qemu, VmCommand};

/// isa-debug-exit statuses of the guest (guests/src/include/machine.inc): (value << 1) | 1.
const EXIT_OK: i32 = (0x10 << 1) | 1;
const EXIT_UNEXPECTED: i32 = (0x12 << 1) | 1;

/// rvmm's one-line notice on an emulating host names this page.
const NOTICE_PAGE: &str = "docs/EMULATED-KVM.md";

/// Runs `guest` with debug logging; checks the guest's verdict and, on an emulating host, that
/// every mnemonic in `insns` was completed in user space (and, for `faults`, injected a fault).
fn run_emulation_guest(guest: &str, insns: &[&str], faults: &[&str]) {
    if skip_on_qemu("QEMU pauses the VM on a KVM emulation failure on this host") {
        return;
    }
    let out = VmCommand::guest(guest).env("RVMM_LOG", "debug").run();
    if out.status == Some(EXIT_UNEXPECTED) {
        eprintln!("skipped: {guest}: this CPU lacks the instruction\n{out}");
        return;
    }
    out.assert_stdout_contains("emulate: all ok");
    out.assert_status(EXIT_OK);
    let notices = out
        .stderr
        .lines()
        .filter(|l| l.contains(NOTICE_PAGE))
        .count();
    if notices == 0 {
        eprintln!("{guest}: this host's KVM runs CPL0 natively: the guest's checks are the test");
        return;
    }
    assert_eq!(notices, 1, "the notice is one line\n{out}");
    for insn in insns {
        let done = "completed in user space";
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(done) && l.contains(&format!("insn={insn}"))),
            "{guest}: no debug line for {insn} completed by rvmm\n{out}"
        );
    }
    for insn in faults {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("exception injected") && l.contains(&format!("insn={insn}"))),
            "{guest}: no debug line for a fault of {insn}\n{out}"
        );
    }
    assert!(
        out.stderr.contains("emulated="),
        "the final counters are logged\n{out}"
    );
}

#[test]
fn popcnt_registers_memory_flags_and_page_fault() {
    run_emulation_guest("emulate_popcnt.elf", &["popcnt"], &["popcnt"]);
}

#[test]
fn fwait_no_op_and_device_not_available() {
    run_emulation_guest("emulate_fwait.elf", &["fwait"], &["fwait"]);
}

#[test]
fn ldmxcsr_stmxcsr_through_page_tables_and_faults() {
    run_emulation_guest(
        "emulate_mxcsr.elf",
        &["ldmxcsr", "stmxcsr"],
        &["ldmxcsr", "stmxcsr"],
    );
}

#[test]
fn clac_stac_toggle_alignment_check() {
    run_emulation_guest("emulate_smap.elf", &["clac", "stac"], &[]);
}
