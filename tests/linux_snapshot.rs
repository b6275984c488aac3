//! A Linux kernel restored after boot keeps running (docs/SNAPSHOT.md): the test kernel of
//! tests/linux_devices.rs (docs/LINUX-TEST-KERNEL.md) boots on microvm with no disk and
//! `rootdelay=30`, is saved while it waits ("Waiting 30 sec before mounting root device..."),
//! and rvmm exits. The restored kernel must go on from there: its delay runs out on its restored
//! timers and it panics for lack of a root device, with kernel timestamps that go on from the
//! saved ones instead of starting again, and without printing its boot banner again.
//!
//! #[ignore]d like the other Linux tests; scripts/test.sh runs it with RVMM_TEST_KERNEL.

mod common;

use common::{skip_on_qemu, TempDir, VmCommand};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CMDLINE: &str =
    "console=ttyS0 noxsave clearcpuid=141,308,137 panic=-1 rodata=off rootdelay=30 \
     rvmm_selftest.restart=0";
const WAITING: &str = "Waiting 30 sec before mounting root device";
const PANIC: &str = "VFS: Unable to mount root fs";

fn test_kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("RVMM_TEST_KERNEL") {
        return PathBuf::from(k);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-kernel.sh");
    let out = std::process::Command::new(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn vm(kernel: &PathBuf, qmp: &std::path::Path) -> VmCommand {
    VmCommand::without_kernel()
        .set_option("-M", "microvm")
        .arg("-kernel")
        .arg(kernel)
        .append(CMDLINE)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .timeout(Duration::from_secs(600))
}

fn qmp(path: &std::path::Path, commands: &[&str]) -> Vec<String> {
    let s = UnixStream::connect(path).expect("QMP connect");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut out = Vec::new();
    for c in commands {
        w.write_all(format!("{c}\n").as_bytes()).unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") || line.contains("\"error\"") {
                out.push(line.clone());
                break;
            }
        }
    }
    out
}

/// The kernel timestamp of the first line containing `needle`.
fn stamp(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    line.trim_start_matches('[')
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[test]
#[ignore = "needs the test kernel (scripts/build-test-kernel.sh); scripts/test.sh runs it"]
fn linux_restored_after_boot_keeps_running() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let kernel = test_kernel();
    let dir = TempDir::new("linux-snapshot");
    let state = dir.path().join("state");
    let sock = dir.path().join("save.qmp");
    let mut source = vm(&kernel, &sock).spawn();
    source.expect_stdout(WAITING);
    let replies = qmp(
        &sock,
        &[
            r#"{"execute":"qmp_capabilities"}"#,
            &format!(
                r#"{{"execute":"migrate","arguments":{{"uri":"file:{}"}}}}"#,
                state.display()
            ),
        ],
    );
    assert!(replies.iter().all(|r| r.contains("return")), "{replies:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = qmp(
            &sock,
            &[
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"execute":"query-migrate"}"#,
            ],
        );
        if r[1].contains("completed") {
            break;
        }
        assert!(
            !r[1].contains("failed") && Instant::now() < deadline,
            "{r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = source.kill();
    let saved_at = stamp(&before.stdout, WAITING).expect("the waiting line's timestamp");
    assert!(
        !before.stdout.contains(PANIC),
        "the source got past the delay\n{before}"
    );

    let out = vm(&kernel, &dir.path().join("restore.qmp"))
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .run();
    // panic=-1 restarts, -no-reboot makes that an exit.
    out.assert_status(0);
    out.assert_stdout_contains(PANIC);
    assert!(
        !out.stdout.contains("Linux version"),
        "the kernel booted again\n{out}"
    );
    let panicked_at = stamp(&out.stdout, PANIC).expect("the panic line's timestamp");
    assert!(
        panicked_at > saved_at + 25.0,
        "kernel time went from {saved_at} (saved) to {panicked_at} (panic)\n{out}"
    );
}
