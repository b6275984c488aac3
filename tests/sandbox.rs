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

/// A minimal QMP client: the greeting, capabilities, then one command at a time.
struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    fn connect(path: &std::path::Path) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => assert!(Instant::now() < deadline, "QMP {}: {e}", path.display()),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut q = Qmp {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        q.read();
        q.execute("qmp_capabilities", serde_json::json!({}));
        q
    }

    fn read(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP {line:?}: {e}"))
    }

    /// The command's `return` (events are skipped); panics on an error.
    fn execute(&mut self, cmd: &str, args: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let msg = serde_json::json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").unwrap();
        loop {
            let v = self.read();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            assert!(v.get("error").is_none(), "{cmd}: {v}");
        }
    }

    /// `migrate` to `uri`, then the final query-migrate answer.
    fn migrate(&mut self, uri: &str) -> serde_json::Value {
        self.execute("migrate", serde_json::json!({ "uri": uri }));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = self.execute("query-migrate", serde_json::json!({}));
            if info["status"] == "completed" || info["status"] == "failed" {
                return info;
            }
            assert!(Instant::now() < deadline, "migrate {uri}: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn landlock_abi() -> i64 {
    // SAFETY: the version query of landlock_create_ruleset takes no pointer.
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) }
}

/// Landlock: once the guest runs, the main thread opens only beneath the directories the command
/// line names (here the QMP socket's); `landlock=off` lifts that.
#[test]
fn landlock_keeps_qmp_paths_to_the_named_directories() {
    if skip_on_qemu("rvmm's Landlock rules") {
        return;
    }
    if landlock_abi() < 1 {
        eprintln!("skipped: this kernel has no Landlock");
        return;
    }
    let named = TempDir::new("sandbox-landlock-named");
    let other = TempDir::new("sandbox-landlock-other");
    let outside = format!("file:{}", other.path().join("state").display());
    for (option, outside_ok) in [("on", false), ("on,landlock=off", true)] {
        let sock = named.path().join(format!("qmp-{outside_ok}.sock"));
        let vm = VmCommand::guest("hlt.elf")
            .arg("-sandbox")
            .arg(option)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .spawn();
        let mut q = Qmp::connect(&sock);
        let info = q.migrate(&outside);
        if outside_ok {
            assert_eq!(info["status"], "completed", "-sandbox {option}: {info}");
        } else {
            assert_eq!(info["status"], "failed", "-sandbox {option}: {info}");
            let why = info["error-desc"].as_str().unwrap_or_default();
            assert!(why.contains("Permission denied"), "{info}");
            assert!(!other.path().join("state").exists());
            let inside = format!("file:{}", named.path().join("state").display());
            let info = q.migrate(&inside);
            assert_eq!(info["status"], "completed", "{info}");
        }
        let out = vm.kill();
        assert!(!out.stderr.contains("sandbox:"), "{out}");
    }
}
