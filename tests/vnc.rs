//! VNC integration tests: `tests/vnc/test_vnc.py` drives rvmm's VNC server with a real client,
//! `vncdotool` from PyPI (`pip install vncdotool`; scripts/test.sh installs it), on the guest
//! kbdecho.elf, which echoes what the i8042 delivers on serial. The keyboard, QMP input and
//! mouse cases run on QEMU too and the guest must see the same bytes there.
//! One Rust test per Python case, so failures are reported by name and cases run in parallel.

mod common;

use std::path::Path;
use std::process::Command;

fn run_case(case: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vnc/test_vnc.py");
    let guests = common::guest("kbdecho.elf");
    let guests = guests.parent().expect("guest directory");
    // QEMU is the reference (scripts/test.sh installs it); a missing one fails the QEMU cases.
    let out = Command::new("python3")
        .arg(&script)
        .arg("--vmm")
        .arg(common::binary())
        .arg("--guests")
        .arg(guests)
        .arg("--qemu")
        .arg("qemu-system-x86_64")
        .arg(case)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("ok   {case}")),
        "VNC case {case} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
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
    keys_reach_the_guest,
    keys_match_qemu,
    send_key_and_input_send_event,
    mouse,
    tablet,
    virtio_keyboard_and_mouse,
    screen_and_resize,
    vga_screen_and_mode_switch,
    seabios_boot_menu,
    password,
    default_display_and_several_clients,
    hostile_clients,
);

/// Every case in the script has a Rust test above (and no test names a missing case).
#[test]
fn every_python_case_is_run() {
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vnc/test_vnc.py"),
    )
    .expect("read test_vnc.py");
    let in_script: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix("def case_"))
        .filter_map(|l| l.split('(').next())
        .collect();
    let here = include_str!("vnc.rs");
    for case in &in_script {
        assert!(
            here.contains(&format!("    {case},\n")),
            "test_vnc.py case {case} has no Rust test"
        );
    }
    assert_eq!(in_script.len(), 12, "cases in test_vnc.py: {in_script:?}");
}
