//! User networking (`-netdev user`, `-nic user`, the default NIC) through the passt helper:
//! its lifetime (it dies with rvmm, however rvmm ends; its own death is reported and rvmm runs
//! on), the error when passt is missing, and (with the Linux test kernel, #[ignore]d like
//! tests/linux_devices.rs) a guest that gets a DHCP lease from passt, sends netconsole through
//! the host address 10.0.2.2, and answers UDP through a `hostfwd=udp` port.

mod common;

use common::{linux, skip_on_qemu, VmCommand};
use std::process::Command;
use std::time::{Duration, Instant};

/// passt children of process `pid` (passt may exec its passt.avx2 build).
fn passt_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|s| s.parse::<u32>().ok());
        if comm.contains("(passt") && ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether `pid` still exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A paused VM with one NIC on user networking, and its passt.
fn vm_with_passt(machine: &str, nic: &[&str]) -> (common::RunningVm, u32) {
    let mut cmd = VmCommand::guest("hlt.elf")
        .set_option("-M", machine)
        .arg("-S");
    for a in nic {
        cmd = cmd.arg(*a);
    }
    let vm = cmd.spawn();
    let pid = vm.pid();
    wait_until("passt to start", Duration::from_secs(20), || {
        passt_children(pid).len() == 1
    });
    let passt = passt_children(pid)[0];
    // rvmm waits for passt to be ready (about 20 ms): let it get there.
    std::thread::sleep(Duration::from_secs(1));
    (vm, passt)
}

#[test]
fn passt_dies_with_rvmm_however_rvmm_ends() {
    if skip_on_qemu("rvmm's passt helper") {
        return;
    }
    // SIGKILL: nothing in rvmm runs, PR_SET_PDEATHSIG takes passt down.
    let (vm, passt) = vm_with_passt("microvm", &["-nic", "user"]);
    vm.kill();
    wait_until(
        "passt to die after SIGKILL of rvmm",
        Duration::from_secs(5),
        || !alive(passt),
    );
    // SIGTERM: a clean exit.
    let (vm, passt) = vm_with_passt(
        "microvm",
        &[
            "-netdev",
            "user,id=n",
            "-device",
            "virtio-net-device,netdev=n",
        ],
    );
    vm.signal("TERM");
    let out = vm.wait(Duration::from_secs(20));
    // passt ends on its own once its socket closes, and PDEATHSIG kills it when rvmm is gone:
    // either takes a moment after rvmm's exit on a loaded host.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(passt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(passt), "passt outlived rvmm's exit by 10 s\n{out}");
    assert!(
        !out.stderr.contains("passt: "),
        "passt noise on stderr:\n{}",
        out.stderr
    );
    // The default NIC of pc/q35 is on user networking too; -nodefaults (VmCommand's) drops it.
    let (vm, passt) = {
        let vm = VmCommand::guest("hlt.elf")
            .without_flag("-nodefaults")
            .arg("-S")
            .spawn();
        let pid = vm.pid();
        wait_until("the default NIC's passt", Duration::from_secs(20), || {
            passt_children(pid).len() == 1
        });
        let p = passt_children(pid)[0];
        (vm, p)
    };
    vm.kill();
    wait_until("passt to die", Duration::from_secs(5), || !alive(passt));
    let vm = VmCommand::guest("hlt.elf").arg("-S").spawn();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        passt_children(vm.pid()).is_empty(),
        "-nodefaults has no NIC"
    );
    vm.kill();
}

#[test]
fn passt_dying_is_reported_and_rvmm_runs_on() {
    if skip_on_qemu("rvmm's passt helper") {
        return;
    }
    let (mut vm, passt) = vm_with_passt("microvm", &["-nic", "user"]);
    // SAFETY: kill(2) on the helper this test's VM started.
    assert_eq!(unsafe { libc::kill(passt as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_secs(1));
    if vm.exited() {
        panic!(
            "rvmm exited with its passt\n{}",
            vm.wait(Duration::from_secs(1))
        );
    }
    vm.signal("TERM");
    let out = vm.wait(Duration::from_secs(20));
    assert!(
        out.stderr
            .contains(&format!("passt (pid {passt}) exited (signal: 9"))
            && out.stderr.contains("link is down"),
        "passt's death not reported:\n{}",
        out.stderr
    );
}

#[test]
fn missing_passt_names_the_package() {
    if skip_on_qemu("rvmm's passt helper") {
        return;
    }
    let out = Command::new(common::binary())
        .args([
            "-M",
            "microvm",
            "-nodefaults",
            "-display",
            "none",
            "-nic",
            "user,hostfwd=tcp::2222-:22",
            "-kernel",
        ])
        .arg(common::guest("hlt.elf"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("rvmm: "), "{stderr}");
    assert!(stderr.contains("Debian package 'passt'"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Without passt, the NIC QEMU adds by default is left out with a warning (the VM runs); the
/// same NIC asked for with -nic user still fails (above).
#[test]
fn missing_passt_leaves_the_default_nic_out() {
    if skip_on_qemu("rvmm's passt helper") {
        return;
    }
    let out = Command::new(common::binary())
        .args(["-M", "q35", "-display", "none", "-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
        .arg(common::guest("exitcode.elf"))
        .args(["-append", "code=16"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no passt on PATH: the default NIC"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // exitcode.elf wrote 16 to isa-debug-exit (status 33): it ran.
    assert_eq!(out.status.code(), Some(33), "{stderr}");
}

/// rvmm does not wait for passt before the guest runs; a passt that then fails to start (here
/// its `hostfwd=` port is taken) still ends rvmm with passt's reason and a failure status.
#[test]
fn passt_failing_to_start_ends_rvmm_with_its_reason() {
    if skip_on_qemu("rvmm's passt helper") {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = VmCommand::guest("counter.elf")
        .set_option("-M", "microvm")
        .arg("-netdev")
        .arg(format!("user,id=n,hostfwd=tcp:127.0.0.1:{port}-:22"))
        .arg("-device")
        .arg("virtio-net-device,netdev=n")
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_status(2);
    assert!(
        out.stderr
            .contains("rvmm: -netdev user: passt failed to start (exit status: 1)"),
        "{out}"
    );
    assert!(out.stderr.contains(&port.to_string()), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn bad_hostfwd_names_the_option_and_the_part() {
    common::expect_error(
        &["-M", "microvm", "-nic", "user,hostfwd=tcp::2222-10.0.2.9:22"],
        "-nic: hostfwd=tcp::2222-10.0.2.9:22: guest address 10.0.2.9 is not the guest's DHCP address 10.0.2.15",
    );
    common::expect_error(
        &["-M", "microvm", "-netdev", "user,id=n,hostfwd=icmp::1-:1"],
        "-netdev: hostfwd=icmp::1-:1: protocol 'icmp' is not tcp or udp",
    );
}

/// Where KVM emulates CPL0 the test kernel reaches DHCP (and the hold after it) in 60-115 s with
/// the two boots of this file in parallel at load average 5-10; a linux_devices boot at load
/// average 20 took over 300 s, so the limit is generous.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The user network as a Linux guest sees it, on `machine` with virtio-pci devices only.
struct LinuxNet {
    machine: &'static str,
    /// `restrict=on`: the guest may not contact the host, so no netconsole arrives.
    restrict: bool,
}

/// Sends datagrams to the forwarded host port until one comes back from the guest's echo;
/// returns how many tries it took.
fn hostfwd_echo(fwd_port: u16, vm: &common::RunningVm) -> usize {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 256];
    for i in 0..60 {
        let msg = format!("rvmm-hostfwd-{i}");
        client
            .send_to(msg.as_bytes(), ("127.0.0.1", fwd_port))
            .unwrap();
        // A late echo of an earlier try is fine: it proves the path as well.
        if let Ok(n) = client.recv(&mut buf) {
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(
                got.starts_with("rvmm-hostfwd-"),
                "echo of what was sent: {got:?}"
            );
            return i + 1;
        }
    }
    panic!(
        "no echo through hostfwd udp:{fwd_port}-:7 in 60 tries\nserial:\n{}",
        vm.stdout()
    );
}

/// Appends what netconsole sent (through 10.0.2.2, so from the host's loopback) to `log` until
/// `done(log)` or `limit`; false on timeout.
fn read_netconsole(
    sock: &std::net::UdpSocket,
    log: &mut String,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !done(log) {
        if Instant::now() >= deadline {
            return false;
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(
                from.ip().to_string(),
                "127.0.0.1",
                "netconsole through the host address"
            );
            log.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    true
}

/// One boot of the Linux test kernel (docs/LINUX-TEST-KERNEL.md) with only virtio-pci devices:
/// its root, an ext4 qcow2 image, on virtio-blk-pci (`root=/dev/vda rw`), and virtio-net-pci on
/// the user network with `hostfwd=udp:127.0.0.1:P-:7`. The self test only serves a UDP echo on
/// port 7 (`rvmm_selftest.udp_echo=7`), logs carrier changes and holds the boot before the root
/// mount until the link goes down (`rvmm_selftest.hold=1`). So, in order: passt's DHCP lease
/// (10.0.2.15, gateway 10.0.2.2), netconsole to a host socket through 10.0.2.2 (none under
/// `restrict=on`), a host datagram to the forwarded port echoed back, then passt killed: rvmm
/// says so, the guest logs "eth0 carrier off" and boots on with rvmm still running, mounts the
/// root read-write, finds no init there and restarts (reboot=k, -no-reboot: rvmm exits 0). The
/// superblock then shows the mount.
fn linux_on_user_network(net: LinuxNet) {
    let LinuxNet { machine, restrict } = net;
    let kernel = linux::test_kernel();
    let dir = common::TempDir::new(&format!("usernet-linux-{machine}"));
    let tree = dir.path().join("rootfs");
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    std::fs::write(tree.join("rvmm-root"), b"rvmm usernet root\n").unwrap();
    let root = dir.path().join("root.qcow2");
    linux::ext4_qcow2_from(&tree, &root);
    let stats = dir.path().join("stats.json");
    let netconsole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    netconsole
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nc_port = netconsole.local_addr().unwrap().port();
    let fwd_port = {
        // A free port for the forward (bound and released; passt binds it next).
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let cmdline = format!(
        "console=ttyS0 noxsave clearcpuid=141,308,137 reboot=k panic=-1 rodata=off \
         rvmm_selftest.udp_echo=7 rvmm_selftest.hold=1 root=/dev/vda rw rootfstype=ext4 \
         ip=dhcp netconsole=6665@10.0.2.15/eth0,{nc_port}@10.0.2.2/52:55:0a:00:02:02"
    );
    let hostfwd = format!("hostfwd=udp:127.0.0.1:{fwd_port}-:7");
    // Both spellings of a virtio-net-pci NIC on the user network.
    let nic: Vec<String> = if restrict {
        vec![
            "-netdev".into(),
            format!("user,id=n0,restrict=on,{hostfwd}"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ]
    } else {
        vec![
            "-nic".into(),
            format!("user,model=virtio-net-pci,{hostfwd}"),
        ]
    };
    let start = Instant::now();
    let mut cmd = VmCommand::without_kernel()
        .set_option("-M", machine)
        .set_option("-m", "128")
        .arg("-kernel")
        .arg(&kernel)
        .append(&cmdline)
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,if=none,id=d0",
            root.display()
        ))
        .arg("-device")
        .arg("virtio-blk-pci,drive=d0")
        .arg("-exit-stats")
        .arg(format!("json={}", stats.display()))
        .timeout(BOOT_TIMEOUT);
    for a in nic {
        cmd = cmd.arg(a);
    }
    let mut vm = cmd.spawn();
    let serial_ok = vm.wait_for_stdout("rvmm-selftest: holding the boot", BOOT_TIMEOUT);
    assert!(
        serial_ok,
        "{machine}: the kernel never got to the hold (after DHCP and netconsole)\n{}",
        vm.stdout()
    );
    let at_hold = start.elapsed();
    let serial = vm.stdout();
    assert!(
        serial.contains("IP-Config: Complete:")
            && serial.contains("ipaddr=10.0.2.15, mask=255.255.255.0, gw=10.0.2.2"),
        "{machine}: no DHCP lease with QEMU's 10.0.2.0/24 layout\n{serial}"
    );
    assert!(
        serial.contains("rvmm-selftest: udp echo on port 7"),
        "{machine}: {serial}"
    );
    let mut log = String::new();
    if !restrict {
        // netconsole replays the log from the start once eth0 is up, then streams it.
        let got = read_netconsole(&netconsole, &mut log, Duration::from_secs(60), |l| {
            l.contains(" gw=10.0.2.2") && l.contains("rvmm-selftest: holding the boot")
        });
        assert!(
            got,
            "{machine}: netconsole did not bring the log through 10.0.2.2\nnetconsole:\n{log}\nserial:\n{}",
            vm.stdout()
        );
    }
    let tries = hostfwd_echo(fwd_port, &vm);
    if restrict {
        // The echo came back, so the guest sends to forwarded connections; netconsole, to the
        // host address, has been filtered all along.
        read_netconsole(&netconsole, &mut log, Duration::from_secs(1), |_| false);
        assert!(
            log.is_empty(),
            "{machine}: restrict=on let netconsole reach the host:\n{log}"
        );
    }
    // passt dies: rvmm runs on, the guest sees its link go down and boots on.
    let passts = passt_children(vm.pid());
    assert_eq!(passts.len(), 1, "{machine}: one passt helper: {passts:?}");
    // SAFETY: kill(2) on the helper this test's VM started.
    assert_eq!(unsafe { libc::kill(passts[0] as i32, libc::SIGKILL) }, 0);
    let down = vm.wait_for_stdout("rvmm-selftest: eth0 carrier off", Duration::from_secs(120));
    let down_at = start.elapsed();
    assert!(
        down,
        "{machine}: the guest did not see the link go down\n{}",
        vm.stdout()
    );
    let out = vm.wait(BOOT_TIMEOUT);
    eprintln!(
        "user network on {machine} (restrict={restrict}): hold after {:.1} s, echo after {tries} \
         tries, link down at {:.1} s, exit at {:.1} s; {} bytes of netconsole",
        at_hold.as_secs_f64(),
        down_at.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        log.len()
    );
    let passt = passts[0];
    assert!(
        out.stderr
            .contains(&format!("passt (pid {passt}) exited (signal: 9"))
            && out.stderr.contains("link is down"),
        "{machine}: passt's death not reported:\n{}",
        out.stderr
    );
    out.assert_stdout_contains("rvmm-selftest: carrier lost, booting on");
    out.assert_stdout_contains("EXT4-fs (vda): mounted filesystem");
    out.assert_stdout_contains("Kernel panic - not syncing");
    out.assert_status(0);
    let sb = linux::superblock(&root);
    assert_eq!(linux::sb_field(&sb, "Mount count:"), "1", "{machine}\n{sb}");
    linux::tool("qemu-img", &["check", root.to_str().unwrap()]);
    // Only virtio-pci devices: the disk and the NIC, both used.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let devices = report["devices"].as_array().expect("devices in the report");
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["device"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["virtio-blk", "virtio-net"], "{machine}: {report:#}");
    for d in devices {
        assert!(
            d["at"].as_str().unwrap_or("").starts_with("virtio-pci@"),
            "{machine}: {d} is not on virtio-pci"
        );
        assert!(d["bytes_to_guest"].as_u64() > Some(0), "{machine}: {d}");
        assert!(d["bytes_from_guest"].as_u64() > Some(0), "{machine}: {d}");
    }
}

/// q35, `-nic user,model=virtio-net-pci`: DHCP, netconsole through 10.0.2.2, a hostfwd echo, the
/// link going down when passt dies, and the ext4 root mounted read-write.
#[test]
#[ignore = "needs the Linux test kernel (scripts/test.sh runs it)"]
fn linux_on_q35_with_virtio_pci_and_user_networking() {
    if skip_on_qemu("rvmm's user networking") {
        return;
    }
    linux_on_user_network(LinuxNet {
        machine: "q35",
        restrict: false,
    });
}

/// pc, `-netdev user,restrict=on` + `-device virtio-net-pci`: the same, except that nothing the
/// guest sends to the host address (netconsole) gets out; the forwarded port still answers.
#[test]
#[ignore = "needs the Linux test kernel (scripts/test.sh runs it)"]
fn linux_on_pc_with_virtio_pci_and_restricted_user_networking() {
    if skip_on_qemu("rvmm's user networking") {
        return;
    }
    linux_on_user_network(LinuxNet {
        machine: "pc",
        restrict: true,
    });
}

/// A host UDP socket echoing everything it gets, on a thread; returns its port.
fn udp_echo() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// "virtio_net_bench: received R lost L" from the guest's output.
fn received_lost(out: &common::Output) -> (u32, u32) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("virtio_net_bench: received"))
        .unwrap_or_else(|| panic!("no result line\n{out}"));
    let w: Vec<u32> = line.split(' ').filter_map(|t| t.parse().ok()).collect();
    (w[0], w[1])
}

/// The tiny polling guest (benches/virtio_net.py's) sends UDP to 10.0.2.2 through `-nic user`;
/// a host socket echoes it back through passt. On microvm over virtio-mmio, and on q35 over
/// virtio-net-pci (the transitional function, through its modern interface).
#[test]
fn tiny_guest_echoes_udp_through_user_networking() {
    if skip_on_qemu("rvmm's user networking (QEMU needs force-legacy=false)") {
        return;
    }
    let port = udp_echo();
    for (machine, guest, model) in [
        ("microvm", "virtio_net_bench.elf", "virtio-net-device"),
        ("q35", "virtio_net_bench_pci.elf", "virtio-net-pci"),
    ] {
        let out = VmCommand::guest(guest)
            .set_option("-M", machine)
            .arg("-nic")
            .arg(format!("user,model={model}"))
            .append(&format!("n=300 size=1000 w=8 port={port}"))
            .run();
        out.assert_status(33);
        let (received, lost) = received_lost(&out);
        assert_eq!(received + lost, 300, "{machine}: {out}");
        // A stalled window at the start (the flow being set up) at most.
        assert!(
            received >= 300 - 2 * 8,
            "{machine}: {received} echoes, {lost} lost\n{out}"
        );
    }
}

/// The same guest on `-netdev stream` to this test, which plays the network: it reads the
/// length-prefixed frames and sends each UDP datagram back with addresses and ports swapped.
#[test]
fn tiny_guest_over_a_stream_netdev() {
    if skip_on_qemu("rvmm's stream netdev") {
        return;
    }
    use std::io::{Read, Write};
    let dir = common::TempDir::new("usernet-stream");
    let path = dir.path().join("net.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut echoed = 0u32;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return echoed;
            }
            let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
            if s.read_exact(&mut f).is_err() {
                return echoed;
            }
            // IPv4 UDP: swap MACs, addresses and ports; the checksums stay valid.
            if f.len() < 42 || f[12..14] != [8, 0] || f[23] != 17 {
                continue;
            }
            let (dst, src) = (f[0..6].to_vec(), f[6..12].to_vec());
            f[0..6].copy_from_slice(&src);
            f[6..12].copy_from_slice(&dst);
            let (a, b) = (f[26..30].to_vec(), f[30..34].to_vec());
            f[26..30].copy_from_slice(&b);
            f[30..34].copy_from_slice(&a);
            let (p, q) = (f[34..36].to_vec(), f[36..38].to_vec());
            f[34..36].copy_from_slice(&q);
            f[36..38].copy_from_slice(&p);
            let mut msg = (f.len() as u32).to_be_bytes().to_vec();
            msg.extend_from_slice(&f);
            if s.write_all(&msg).is_err() {
                return echoed;
            }
            echoed += 1;
        }
    });
    let out = VmCommand::guest("virtio_net_bench.elf")
        .set_option("-M", "microvm")
        .arg("-netdev")
        .arg(format!(
            "stream,id=n,addr.type=unix,addr.path={}",
            path.display()
        ))
        .arg("-device")
        .arg("virtio-net-device,netdev=n")
        .append("n=500 size=64 w=16 port=9")
        .run();
    out.assert_status(33);
    assert_eq!(received_lost(&out), (500, 0), "{out}");
    assert_eq!(peer.join().unwrap(), 500);
}
