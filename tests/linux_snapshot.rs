//! A Linux kernel restored after boot keeps running (docs/SNAPSHOT.md): the test kernel of
//! tests/linux_devices.rs (docs/LINUX-TEST-KERNEL.md) boots on microvm with no disk and
//! `rootdelay=30`, is saved while it waits ("Waiting 30 sec before mounting root device..."),
//! and rvmm exits. The restored kernel must go on from there: its delay runs out on its restored
//! timers and it panics for lack of a root device, with kernel timestamps that go on from the
//! saved ones instead of starting again, and without printing its boot banner again.
//!
//! A second test saves the kernel on q35 with its default devices once it has its DHCP lease
//! over virtio-net-pci on passt, and checks the restored kernel echoes UDP through that NIC.
//!
//! #[ignore]d like the other Linux tests; scripts/test.sh runs them with RVMM_TEST_KERNEL.

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

/// The test kernel on q35 with its default devices (the standard VGA, the NIC on passt's user
/// network: virtio-net-pci with MSI-X), its self test replaced by a UDP echo on port 7 forwarded
/// from a host port (as tests/usernet.rs). Once it has its DHCP lease (seen over netconsole) it
/// is saved and rvmm exits; the restored kernel, with a fresh passt as QEMU's restored process
/// has a fresh slirp, must echo datagrams through the restored virtio-net-pci again.
#[test]
#[ignore = "needs the test kernel (scripts/build-test-kernel.sh); scripts/test.sh runs it"]
fn linux_on_q35_echoes_through_the_restored_default_nic() {
    if skip_on_qemu("rvmm's snapshot files") {
        return;
    }
    let kernel = test_kernel();
    let dir = TempDir::new("linux-snapshot-nic");
    let state = dir.path().join("state");
    let netconsole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    netconsole
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nc_port = netconsole.local_addr().unwrap().port();
    let fwd_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cmdline = format!(
        "console=ttyS0 noxsave clearcpuid=141,308,137 panic=-1 rodata=off \
         rvmm_selftest.udp_echo=7 root=/dev/vdz rootwait ip=dhcp \
         netconsole=6665@10.0.2.15/eth0,{nc_port}@10.0.2.2/52:55:0a:00:02:02"
    );
    let vm = |qmp: &std::path::Path| {
        VmCommand::without_kernel()
            .without_flag("-nodefaults")
            .set_option("-M", "q35")
            .set_option("-m", "128")
            .arg("-kernel")
            .arg(&kernel)
            .append(&cmdline)
            .arg("-nic")
            .arg(format!("user,hostfwd=udp:127.0.0.1:{fwd_port}-:7"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .timeout(Duration::from_secs(600))
    };
    let sock = dir.path().join("save.qmp");
    let source = vm(&sock).spawn();
    let deadline = Instant::now() + Duration::from_secs(500);
    let mut log = String::new();
    let mut buf = [0u8; 4096];
    while !(log.contains(" gw=") && log.contains("rvmm-selftest: udp echo on port 7")) {
        assert!(
            Instant::now() < deadline,
            "no DHCP lease / echo over netconsole\nnetconsole:\n{log}\nserial:\n{}",
            source.stdout()
        );
        if let Ok((n, _)) = netconsole.recv_from(&mut buf) {
            log.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let migrate = format!(
        r#"{{"execute":"migrate","arguments":{{"uri":"file:{}"}}}}"#,
        state.display()
    );
    let replies = qmp(&sock, &[r#"{"execute":"qmp_capabilities"}"#, &migrate]);
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
    source.kill();
    // The old passt lets go of the forwarded port when it sees rvmm gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::UdpSocket::bind(("127.0.0.1", fwd_port)).is_err() {
        assert!(Instant::now() < deadline, "port {fwd_port} stays taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let restored = vm(&dir.path().join("restore.qmp"))
        .arg("-incoming")
        .arg(format!("file:{}", state.display()))
        .spawn();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut echoed = None;
    for i in 0..60 {
        let msg = format!("rvmm-restored-{i}");
        client
            .send_to(msg.as_bytes(), ("127.0.0.1", fwd_port))
            .unwrap();
        if let Ok(n) = client.recv(&mut buf) {
            assert_eq!(&buf[..n], msg.as_bytes(), "echo of what was sent");
            echoed = Some(i);
            break;
        }
    }
    let out = restored.kill();
    assert!(echoed.is_some(), "the restored kernel did not echo\n{out}");
    assert!(
        !out.stdout.contains("Linux version"),
        "the kernel booted again\n{out}"
    );
    eprintln!("restored default NIC: echo after {echoed:?} tries");
}
