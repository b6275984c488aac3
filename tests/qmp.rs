//! QMP integration tests: `tests/qmp/test_qmp.py` drives the VMM with the `qemu.qmp` library from
//! PyPI (`pip install qemu.qmp`; scripts/test.sh installs it) and with raw sockets. One Rust test
//! per Python case, so failures are reported by name and cases run in parallel.
//!
//! `RVMM_TEST_BIN=qemu-system-x86_64 cargo test --test qmp` runs the same cases against QEMU to
//! confirm wire compatibility; the few places where QEMU legitimately differs are marked in the
//! script.

mod common;

use std::path::Path;
use std::process::Command;

fn run_case(case: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qmp/test_qmp.py");
    let guests = common::guest("hlt.elf");
    let guests = guests.parent().expect("guest directory");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--vmm")
        .arg(common::binary())
        .arg("--guests")
        .arg(guests)
        .arg(case)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("ok   {case}")),
        "QMP case {case} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
    };
}

cases!(
    greeting_and_queries,
    negotiation_and_errors,
    tcp_and_chardev,
    start_paused_then_cont,
    stop_cont_heartbeat,
    system_reset,
    system_powerdown,
    system_powerdown_sci,
    guest_poweroff_and_signal_events,
    client_disconnects_early,
    several_clients_in_turn,
    quit_pidfile_and_cleanup,
    daemonize,
    exit_stats,
    human_monitor_info_registers,
    block_io_error,
);

/// Every case in the script has a Rust test above (and no test names a missing case).
#[test]
fn every_python_case_is_run() {
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qmp/test_qmp.py"),
    )
    .expect("read test_qmp.py");
    let in_script: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix("async def case_"))
        .filter_map(|l| l.split('(').next())
        .collect();
    let here = include_str!("qmp.rs");
    for case in &in_script {
        assert!(
            here.contains(&format!("    {case},\n")),
            "case {case} has no Rust test"
        );
    }
    assert_eq!(in_script.len(), 16, "update the cases! list: {in_script:?}");
}
