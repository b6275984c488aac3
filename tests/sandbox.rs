//! The sandbox (docs/SANDBOX.md): every thread runs under its seccomp filter by default, a call
//! outside a thread's list stops rvmm with a message naming the thread and the call, `-sandbox
//! off` turns the filters off, log mode lets calls through, and bad `-sandbox` options are
//! refused by name.

mod common;

use common::{skip_on_qemu, TempDir, VmCommand};
use std::time::{Duration, Instant};

/// `(thread name, Seccomp mode)` of every thread of `pid` (/proc; mode 2 = filter).
fn thread_modes(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in dir.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:").parse().unwrap_or(99)));
    }
    out.sort();
    out
}

/// Wait until `pid` has threads named like each of `names`, and return them all.
fn wait_for_threads(pid: u32, names: &[&str]) -> Vec<(String, u32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let modes = thread_modes(pid);
        // The VMM thread installs its filter last, just before the guest runs.
        let main_filtered = modes.iter().any(|(n, m)| n == "rvmm" && *m == 2);
        if main_filtered
            && names
                .iter()
                .all(|want| modes.iter().any(|(n, _)| n.starts_with(want)))
        {
            return modes;
        }
        assert!(
            Instant::now() < deadline,
            "threads {names:?} never all appeared: {modes:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A guest that stays up with two vCPUs and a VNC server, and a VNC client connected: the client
/// thread comes from the spawner (as virtio workers do), the rest from the main thread.
#[test]
fn every_thread_runs_filtered_by_default() {
    if skip_on_qemu("rvmm's sandbox threads") {
        return;
    }
    let dir = TempDir::new("sandbox-threads");
    let sock = dir.path().join("vnc.sock");
    let mut vm = VmCommand::guest("hlt.elf")
        .arg("-smp")
        .arg("2")
        .arg("-vnc")
        .arg(format!("unix:{}", sock.display()))
        .spawn();
    vm.expect_stdout("halting\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let _client = loop {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "cannot connect to VNC: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let modes = wait_for_threads(
        vm.pid(),
        &[
            "vcpu0",
            "vcpu1",
            "vnc-accept",
            "vnc-display",
            "vnc-client",
            "rvmm-spawner",
        ],
    );
    let unfiltered: Vec<_> = modes.iter().filter(|(_, m)| *m != 2).collect();
    assert!(
        unfiltered.is_empty(),
        "threads without a filter: {unfiltered:?}"
    );
    let out = vm.kill();
    assert!(!out.stderr.contains("sandbox:"), "{out}");
}

#[test]
fn a_vcpu_making_a_forbidden_call_stops_rvmm_naming_it() {
    if skip_on_qemu("rvmm's debug hook") {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the hook that makes the call exists in debug builds only");
        return;
    }
    let out = VmCommand::guest("hlt.elf")
        .env("RVMM_TEST_SECCOMP_VIOLATION", "vcpu")
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(out.status, Some(2), "{out}");
    assert!(
        out.stderr
            .contains("rvmm: sandbox: thread 'vcpu0' (vcpu thread) made system call socket (41)"),
        "{out}"
    );
    assert!(!out.stdout.contains("halting"), "the guest ran: {out}");
}

#[test]
fn sandbox_off_and_log_mode_let_the_call_through() {
    if skip_on_qemu("rvmm's debug hook") || !cfg!(debug_assertions) {
        return;
    }
    for (option, filtered) in [("off", false), ("on,log=on", true)] {
        let mut vm = VmCommand::guest("hlt.elf")
            .arg("-sandbox")
            .arg(option)
            .env("RVMM_TEST_SECCOMP_VIOLATION", "vcpu")
            .spawn();
        vm.expect_stdout("halting\n");
        let modes = thread_modes(vm.pid());
        assert!(
            modes.iter().all(|(_, m)| (*m == 2) == filtered),
            "-sandbox {option}: {modes:?}"
        );
        vm.signal("TERM");
        let out = vm.wait(Duration::from_secs(20));
        out.assert_status(0);
        assert!(!out.stderr.contains("made system call"), "{out}");
    }
}

#[test]
fn bad_sandbox_options_are_refused_by_name() {
    for (arg, want) in [
        (
            "maybe",
            "-sandbox maybe: parameter 'enable' expects 'on' or 'off'",
        ),
        (
            "on,spawn=x",
            "-sandbox on,spawn=x: invalid argument for spawn",
        ),
        ("on,foo=bar", "-sandbox on,foo=bar: unknown parameter 'foo'"),
        (
            "on,obsolete=never",
            "-sandbox on,obsolete=never: invalid argument for obsolete",
        ),
    ] {
        if skip_on_qemu("rvmm's messages") {
            return;
        }
        let out = VmCommand::guest("hlt.elf").arg("-sandbox").arg(arg).run();
        assert_eq!(out.status, Some(2), "{out}");
        assert!(out.stderr.contains(want), "{arg}: {out}");
    }
}

/// QEMU's spellings run the guest: `spawn=deny` refuses only `exec:` migration.
#[test]
fn qemu_spellings_run_and_spawn_deny_refuses_exec() {
    if skip_on_qemu("rvmm's message") {
        return;
    }
    let out = VmCommand::guest("exitcode.elf")
        .arg("-sandbox")
        .arg("on,obsolete=deny,elevateprivileges=deny,spawn=allow,resourcecontrol=deny")
        .append("code=3")
        .run();
    out.assert_stdout_contains("exitcode: 3\n");
    let out = VmCommand::guest("hlt.elf")
        .arg("-sandbox")
        .arg("on,spawn=deny")
        .arg("-incoming")
        .arg("exec:cat /dev/null")
        .timeout(Duration::from_secs(30))
        .run();
    assert_ne!(out.status, Some(0), "{out}");
    assert!(out.stderr.contains("spawn=deny"), "{out}");
}
