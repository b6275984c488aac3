//! Boot test 2: a small kernel built from Debian's linux-source-6.1 by
//! scripts/build-test-kernel.sh proves virtio-blk, virtio-rng and virtio-net from inside Linux
//! without user space (docs/LINUX-TEST-KERNEL.md). Its built-in self test
//! (guests/linux/rvmm_selftest.c) checks the pattern this test writes into sector 0, writes and
//! flushes sector 1, reads /dev/hwrng, and sends "PING" frames on eth0 until the answer this test
//! writes to the tap arrives; it prints a PASS/FAIL line per device. The boot then goes on and
//! mounts a second virtio disk, an ext4 file system in a qcow2 image, as root (`root=/dev/vdb
//! rw`); with no init on it the kernel panics and restarts. The host then sees the mount in the
//! superblock (dumpe2fs: mount count 1) and `qemu-img check` is clean. Before that the kernel
//! configures eth0 with `ip=dhcp` from dnsmasq on the tap, and netconsole sends its log to a
//! UDP socket of this test.
//!
//! #[ignore]d like linux_boot (it needs the built kernel and root for the tap in a network
//! namespace); scripts/test.sh runs it explicitly. RVMM_TEST_KERNEL names the bzImage; without
//! it the test runs scripts/build-test-kernel.sh (minutes on a fresh tree).

mod common;

use common::linux::{ext4_qcow2_from, sb_field, superblock, test_kernel, tool};
use common::{skip_on_qemu, TempDir, VmCommand};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SECTOR: usize = 512;
/// guests/linux/rvmm_selftest.c: sector 0 is this magic, then byte i = i * 7 + 3.
const DISK_MAGIC: &[u8] = b"RVMM-LINUX-DISK-SECTOR0";
/// guests/linux/rvmm_selftest.c writes sector 1: this magic, then byte i = i * 13 + 1.
const WRITE_MAGIC: &[u8] = b"RVMM-LINUX-WROTE-SECTOR1";
const PING: &[u8] = b"RVMM-SELFTEST-PING";
const PONG: &[u8] = b"RVMM-SELFTEST-PONG";
const ETHERTYPE: u16 = 0x88b5; // IEEE local experimental, as in the self test
const IFNAME: &str = "rvmmktap0";
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Where KVM emulates CPL0 the boot takes about 10 s; far more on a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The kernel parameters docs/EMULATED-KVM.md explains (as in linux_boot.rs); harmless on a
/// normal KVM host. reboot=k: the self test restarts through the i8042, and -no-reboot exits.
/// After the self test the kernel boots on (restart=0) to mount the ext4 disk as root and run
/// guests/linux/init.sh from it. rodata=off only saves boot time (2.3 s of 12 here:
/// write-protecting the kernel is page-table work at emulated CPL0; benches/linux_boot.py).
const CMDLINE: &str = "console=ttyS0 noxsave clearcpuid=141,308,137 reboot=k panic=-1 rodata=off \
                       rvmm_selftest.restart=0 root=/dev/vdb rw rootfstype=ext4 init=/init \
                       ip=dhcp netconsole=6665@10.0.2.15/eth0,6666@10.0.2.1/";
/// guests/linux/init.sh writes 512 bytes of this into sector 4 of /dev/vda.
const USER_BYTE: u8 = b'U';
const USER_SECTOR: usize = 4;
/// The tap's address in the namespace: dnsmasq's and the netconsole target.
const HOST_IP: &str = "10.0.2.1";
/// The one address dnsmasq hands out (also netconsole's source address).
const GUEST_IP: &str = "10.0.2.15";

fn pattern_sector(magic: &[u8], mul: usize, add: usize) -> Vec<u8> {
    let mut s: Vec<u8> = (0..SECTOR).map(|i| (i * mul + add) as u8).collect();
    s[..magic.len()].copy_from_slice(magic);
    s
}

/// The directory with the static busybox of scripts/get-linux.sh (RVMM_LINUX_DIR, as for
/// linux_boot.rs; without it the test runs the script).
fn busybox() -> PathBuf {
    let dir = match std::env::var_os("RVMM_LINUX_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/get-linux.sh");
            PathBuf::from(tool(script, &[]).trim())
        }
    };
    let bb = dir.join("busybox");
    assert!(
        bb.is_file(),
        "{} lacks busybox: run scripts/get-linux.sh",
        dir.display()
    );
    bb
}

/// A 16 MiB ext4 file system in a qcow2 image holding the user-space checks: /init
/// (guests/linux/init.sh) and /bin/busybox.
fn ext4_qcow2(dir: &TempDir) -> PathBuf {
    let tree = dir.file("rootfs", &[]);
    std::fs::remove_file(&tree).unwrap();
    for sub in ["bin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    let init = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/linux/init.sh");
    std::fs::copy(init, tree.join("init")).expect("copy init.sh");
    std::fs::copy(busybox(), tree.join("bin/busybox")).expect("copy busybox");
    let qcow2 = dir.path().join("root.qcow2");
    ext4_qcow2_from(&tree, &qcow2);
    qcow2
}

/// A child process (dnsmasq) stopped by its handle when the test ends, also on a failure.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Waits for rvmm to create `IFNAME`, brings it up and returns a bound AF_PACKET socket.
fn tap_socket(deadline: Instant) -> libc::c_int {
    let name = std::ffi::CString::new(IFNAME).unwrap();
    let ifindex = loop {
        // SAFETY: `name` is a valid NUL-terminated string.
        let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if i != 0 {
            break i as libc::c_int;
        }
        assert!(Instant::now() < deadline, "rvmm never created {IFNAME}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: plain socket/ioctl/bind/setsockopt calls on fds this function owns, with
    // initialized structs of the sizes passed.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        check(s, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in IFNAME.bytes().enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        check(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req), "SIOCGIFFLAGS");
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(s, libc::SIOCSIFFLAGS, &req), "SIOCSIFFLAGS");
        libc::close(s);
        let proto = i32::from(ETHERTYPE.to_be());
        let p = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto);
        check(p, "AF_PACKET socket");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETHERTYPE.to_be();
        addr.sll_ifindex = ifindex;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        check(
            libc::bind(p, (&addr as *const libc::sockaddr_ll).cast(), len),
            "bind",
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let len = std::mem::size_of::<libc::timeval>() as u32;
        check(
            libc::setsockopt(
                p,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                len,
            ),
            "SO_RCVTIMEO",
        );
        p
    }
}

/// What the tap side saw: PING frames from the guest, PONG frames sent back.
struct NetLog {
    pings: usize,
    pongs: usize,
    /// Everything netconsole sent to HOST_IP:6666.
    netconsole: String,
}

/// Appends every datagram waiting on `udp` to `log`.
fn drain_udp(udp: &std::net::UdpSocket, log: &mut String) {
    let mut buf = [0u8; 2048];
    while let Ok(n) = udp.recv(&mut buf) {
        log.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Answers every PING frame from the guest with a PONG to its source MAC until `done` says stop.
fn answer_pings(sock: libc::c_int, udp: &std::net::UdpSocket, done: impl Fn() -> bool) -> NetLog {
    let mut log = NetLog {
        pings: 0,
        pongs: 0,
        netconsole: String::new(),
    };
    let mut buf = [0u8; 2048];
    while !done() {
        drain_udp(udp, &mut log.netconsole);
        // SAFETY: `buf` is writable for its length; the socket has a receive timeout.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 14 + PING.len() as isize {
            continue;
        }
        let f = &buf[..n as usize];
        if f[12..14] != ETHERTYPE.to_be_bytes() || !f[14..].starts_with(PING) {
            continue;
        }
        log.pings += 1;
        let mut pong = f[6..12].to_vec();
        pong.extend_from_slice(&HOST_MAC);
        pong.extend_from_slice(&ETHERTYPE.to_be_bytes());
        pong.extend_from_slice(PONG);
        pong.resize(60, 0);
        // SAFETY: `pong` is readable for its length; the socket is bound to the tap.
        let sent = unsafe { libc::send(sock, pong.as_ptr().cast(), pong.len(), 0) };
        check(sent as libc::c_int, "send PONG");
        log.pongs += 1;
    }
    // SAFETY: the socket is this function's to close.
    unsafe { libc::close(sock) };
    log
}

/// Which VMM boots the test kernel.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Engine {
    Rvmm,
    /// QEMU with `-accel tcg`: runs guest user space on any host, so it checks init.sh itself.
    QemuTcg,
}

/// The machine and the transport its virtio devices sit on.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Bus {
    /// microvm with virtio-mmio (announced on the command line: no ACPI in the test kernel).
    Mmio,
    /// pc or q35 with virtio-pci devices only.
    Pci(&'static str),
}

impl Bus {
    fn machine(self) -> &'static str {
        match self {
            Bus::Mmio => "microvm,acpi=off",
            Bus::Pci(m) => m,
        }
    }

    /// The `-device` driver of virtio device `kind` (blk, net, rng) on this bus.
    fn driver(self, kind: &str) -> String {
        match self {
            Bus::Mmio => format!("virtio-{kind}-device"),
            Bus::Pci(_) => format!("virtio-{kind}-pci"),
        }
    }
}

/// What one boot left behind.
struct Boot {
    out: common::Output,
    net: NetLog,
    elapsed: Duration,
    /// rvmm's `-exit-stats` JSON report.
    stats: Option<serde_json::Value>,
    disk: PathBuf,
    root: PathBuf,
    _dir: TempDir,
}

/// The kernel panicked (init died where user space cannot run) or restarted (init.sh's reboot).
fn boot_ended(log: &str) -> bool {
    log.contains("Kernel panic - not syncing") || log.contains("reboot: Restarting system")
}

/// Boots the test kernel with its two disks, rng and net in a network namespace of its own, with
/// dnsmasq, the netconsole receiver and the PONG answerer on the tap.
fn boot(engine: Engine, bus: Bus) -> Boot {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root for the tap in a network namespace (scripts/test.sh runs as root)"
    );
    let kernel = test_kernel();
    assert!(kernel.is_file(), "no test kernel at {}", kernel.display());
    // No commas in the name: the disks' paths go into -drive file=, where a comma ends the value.
    let machine_name = bus.machine().replace([',', '='], "_");
    let dir = TempDir::new(&format!("linux_devices_{engine:?}_{machine_name}"));
    let mut img = vec![0u8; 1 << 20];
    img[..SECTOR].copy_from_slice(&pattern_sector(DISK_MAGIC, 7, 3));
    let disk = dir.file("disk.raw", &img);
    let root = ext4_qcow2(&dir);
    let before = superblock(&root);
    assert_eq!(
        sb_field(&before, "Mount count:"),
        "0",
        "fresh ext4\n{before}"
    );
    let leases = dir.file("dnsmasq.leases", &[]);
    let stats_file = dir.file("stats.json", &[]);
    let (disk_arg, root_arg, stats_arg) = (disk.clone(), root.clone(), stats_file.clone());

    // The network namespace belongs to this thread and so to the VMM it starts.
    let (out, net, elapsed) = std::thread::spawn(move || {
        // SAFETY: unshare affects only the calling thread's network namespace.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            "unshare(CLONE_NEWNET)",
        );
        let start = Instant::now();
        // QEMU microvm has no i8042: the restarts go through a triple fault there.
        let cmdline = match engine {
            Engine::Rvmm => CMDLINE.to_string(),
            Engine::QemuTcg => CMDLINE.replace("reboot=k", "reboot=t"),
        };
        let mut cmd = VmCommand::without_kernel()
            // No ACPI in the test kernel (docs/LINUX-TEST-KERNEL.md); the MP table has the CPUs.
            .arg("-M")
            .arg(bus.machine())
            .arg("-smp")
            .arg("2")
            .arg("-m")
            .arg("128")
            .arg("-kernel")
            .arg(&kernel)
            .append(&cmdline)
            .arg("-object")
            .arg("rng-random,id=r0,filename=/dev/urandom")
            .arg("-device")
            .arg(format!("{},rng=r0", bus.driver("rng")));
        // QEMU microvm puts the first -device on the last transport but lists the transports on
        // the kernel command line from the last one down, so in both VMMs Linux numbers the disks
        // in -device order: vda is the raw disk, vdb the ext4 root. virtio-pci functions take
        // the free slots in -device order, which Linux probes in the same order.
        cmd = cmd
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=d0",
                disk_arg.display()
            ))
            .arg("-device")
            .arg(format!("{},drive=d0", bus.driver("blk")))
            .arg("-drive")
            .arg(format!(
                "file={},format=qcow2,if=none,id=d1",
                root_arg.display()
            ))
            .arg("-device")
            .arg(format!("{},drive=d1", bus.driver("blk")));
        cmd = cmd
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={IFNAME},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("{},netdev=n0", bus.driver("net")));
        cmd = match engine {
            Engine::Rvmm => cmd
                .arg("-exit-stats")
                .arg(format!("json={}", stats_arg.display())),
            Engine::QemuTcg => cmd
                .program("qemu-system-x86_64")
                .set_option("-accel", "tcg")
                .set_option("-cpu", "max"),
        };
        let vm = cmd.spawn();
        let sock = tap_socket(start + Duration::from_secs(30));
        tool(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", IFNAME],
        );
        let udp = std::net::UdpSocket::bind((HOST_IP, 6666)).expect("bind the netconsole port");
        udp.set_nonblocking(true).unwrap();
        let _dnsmasq = KillOnDrop(
            Command::new("dnsmasq")
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--bind-interfaces",
                    &format!("--interface={IFNAME}"),
                    "--except-interface=lo",
                    &format!("--dhcp-range={GUEST_IP},{GUEST_IP},255.255.255.0,1h"),
                    &format!("--dhcp-leasefile={}", leases.display()),
                    "--pid-file=",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("cannot start dnsmasq"),
        );
        let deadline = start + BOOT_TIMEOUT;
        let mut net = answer_pings(sock, &udp, || {
            Instant::now() >= deadline || boot_ended(&vm.stdout())
        });
        let elapsed = start.elapsed();
        let out = vm.wait(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(200));
        drain_udp(&udp, &mut net.netconsole);
        (out, net, elapsed)
    })
    .join()
    .unwrap();
    // The whole boot log, for reading after the fact (CI prints only the failures).
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/linux-devices-{engine:?}-{}.log",
        bus.machine()
    ));
    let _ = std::fs::write(&log, &out.stdout);
    let stats = (engine == Engine::Rvmm).then(|| {
        let text = std::fs::read_to_string(&stats_file).expect("read the -exit-stats report");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
    });
    eprintln!(
        "linux devices ({engine:?}, {bus:?}): start to the end of the boot in {:.1} s; {} PING frames \
         seen, {} PONG sent, {} bytes of netconsole; log in {}",
        elapsed.as_secs_f64(),
        net.pings,
        net.pongs,
        net.netconsole.len(),
        log.display()
    );
    Boot {
        out,
        net,
        elapsed,
        stats,
        disk,
        root,
        _dir: dir,
    }
}

/// What the kernel itself proved: the self test's verdicts, SMP, DHCP, netconsole, the ext4
/// root, the guest's writes in both images, and a clean exit.
fn check_kernel_side(b: &Boot) {
    let out = &b.out;
    for dev in ["blk", "rng", "net"] {
        out.assert_stdout_contains(&format!("rvmm-selftest: {dev} PASS"));
    }
    out.assert_stdout_contains("rvmm-selftest: all PASS, booting on");
    out.assert_stdout_contains("smp: Brought up 1 node, 2 CPUs");
    out.assert_stdout_contains("EXT4-fs (vdb): mounted filesystem");
    out.assert_stdout_contains("Run /init as init process");
    out.assert_stdout_contains(&format!("IP-Config: Got DHCP answer from {HOST_IP}"));
    out.assert_stdout_contains(&format!("my address is {GUEST_IP}"));
    // netconsole replays the log from the start: the self test's verdict came over UDP.
    assert!(
        b.net.netconsole.contains("rvmm-selftest: net PASS"),
        "netconsole sent no self-test verdict ({} bytes):\n{}",
        b.net.netconsole.len(),
        b.net.netconsole
    );
    assert!(
        b.net.pings >= 1,
        "no PING frame from the guest on the tap\n{out}"
    );
    assert_eq!(
        out.status,
        Some(0),
        "the VMM did not exit 0 after the guest's restart\n{out}"
    );
    let after = std::fs::read(&b.disk).expect("read the disk image back");
    assert_eq!(
        &after[SECTOR..2 * SECTOR],
        &pattern_sector(WRITE_MAGIC, 13, 1)[..],
        "sector 1 of the image is not what the guest wrote"
    );
    // The read-write mount is recorded in the superblock: the guest's write reached the qcow2.
    let sb = superblock(&b.root);
    assert_eq!(sb_field(&sb, "Mount count:"), "1", "after the boot\n{sb}");
    assert_ne!(sb_field(&sb, "Last mount time:"), "n/a", "{sb}");
    tool("qemu-img", &["check", b.root.to_str().unwrap()]);
}

/// The checks of guests/linux/init.sh, seen from both sides: 2 CPUs, the disk write (read back
/// with qemu-io), 32 bytes from /dev/hwrng, and an answered ping.
fn check_user_space(b: &Boot) {
    let out = &b.out;
    for line in [
        "rvmm-guest: cpus=2",
        "rvmm-guest: disk write done",
        "rvmm-guest: ping ok",
        "rvmm-guest: checks done",
    ] {
        out.assert_stdout_contains(line);
    }
    let hex = out
        .stdout
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("rvmm-guest: hwrng="))
        .unwrap_or_else(|| panic!("no hwrng line\n{out}"));
    assert_eq!(hex.len(), 64, "32 bytes from /dev/hwrng: {hex:?}");
    assert!(hex.bytes().any(|c| c != b'0'), "all-zero hwrng bytes");
    let offset = (USER_SECTOR * SECTOR).to_string();
    let read = format!("read -P {USER_BYTE:#x} {offset} {SECTOR}");
    tool(
        "qemu-io",
        &["-f", "raw", "-c", &read, b.disk.to_str().unwrap()],
    );
}

/// Whether init.sh ran; if it could not (guest user space cannot make system calls on this
/// host), says so and checks that init died as expected there.
fn user_space_ran(b: &Boot) -> bool {
    let out = &b.out;
    if out.stdout.contains("rvmm-guest: user space up") {
        return true;
    }
    assert!(
        out.stderr.contains("docs/EMULATED-KVM.md"),
        "user space did not run on a host with normal KVM\n{out}"
    );
    // The way init dies there (docs/EMULATED-KVM.md): its first system call runs the kernel's
    // entry code in ring 3 and faults on the supervisor page (error 15), then the kernel panics.
    // Any other death of init (a missing /init panics as "Requested init /init failed") fails.
    let segv = out
        .stdout
        .lines()
        .find(|l| l.contains("init[1]: segfault at"))
        .unwrap_or_else(|| panic!("init did not die at its first system call\n{out}"));
    assert!(
        segv.contains("error 15"),
        "init died another way: {segv}\n{out}"
    );
    out.assert_stdout_contains("Attempted to kill init");
    eprintln!(
        "skipped the user-space checks (guests/linux/init.sh): this host's KVM does not deliver \
         system calls from guest user space (docs/EMULATED-KVM.md); \
         qemu_tcg_runs_the_user_space_checks covers the script"
    );
    false
}

#[test]
#[ignore = "needs the kernel from scripts/build-test-kernel.sh and root; scripts/test.sh runs it"]
fn test_kernel_proves_blk_rng_and_net_from_inside_linux() {
    if skip_on_qemu("the boot test measures rvmm") {
        return;
    }
    let b = boot(Engine::Rvmm, Bus::Mmio);
    check_kernel_side(&b);
    let user = user_space_ran(&b);
    if user {
        check_user_space(&b);
    }
    check_stats(&b, user);
}

/// The same self test and root mount with virtio-pci devices only, on pc and q35: Linux's
/// virtio_pci driver (modern interface, MSI-X vectors) drives rvmm's virtio-pci transport.
#[test]
#[ignore = "needs the kernel from scripts/build-test-kernel.sh and root; scripts/test.sh runs it"]
fn test_kernel_proves_virtio_pci_devices_on_pc_and_q35() {
    if skip_on_qemu("the boot test measures rvmm") {
        return;
    }
    for machine in ["q35", "pc"] {
        let b = boot(Engine::Rvmm, Bus::Pci(machine));
        check_kernel_side(&b);
        let user = user_space_ran(&b);
        if user {
            check_user_space(&b);
        }
        let stats = b.stats.as_ref().unwrap();
        let devices = stats["devices"].as_array().expect("devices in the report");
        for d in devices {
            assert!(
                d["at"].as_str().unwrap_or("").starts_with("virtio-pci@"),
                "{machine}: {d} is not on virtio-pci"
            );
        }
        check_stats(&b, user);
    }
}

/// rvmm's statistics show what virtio-rng served the guest's hwrng, with no error.
fn check_stats(b: &Boot, user: bool) {
    // Only a lower bound can be checked: the self test reads 2 x 32 bytes and init.sh 32 more, but the
    // kernel's hw_random core also reads the device on its own to feed the entropy pool.
    let stats = b.stats.as_ref().unwrap();
    let devices = stats["devices"].as_array().expect("devices in the report");
    let rng = devices
        .iter()
        .find(|d| d["device"] == "virtio-rng")
        .unwrap_or_else(|| panic!("no virtio-rng in {stats:#}"));
    let served = rng["bytes_to_guest"].as_u64().unwrap();
    let want = if user { 96 } else { 64 };
    assert!(
        served >= want && rng["errors"] == 0,
        "virtio-rng served {served} bytes (at least {want} expected): {rng}"
    );
    for d in devices {
        eprintln!(
            "linux devices: {} at {}: {} requests, {} errors, {} bytes to the guest, {} from it",
            d["device"],
            d["at"],
            d["requests"],
            d["errors"],
            d["bytes_to_guest"],
            d["bytes_from_guest"]
        );
    }
    eprintln!("linux devices: boot took {:.1} s", b.elapsed.as_secs_f64());
}

/// The user-space checks cannot run under rvmm on a host like this project's (see
/// user_space_ran); QEMU's TCG runs guest user space anywhere, so the same kernel, disks and
/// network under QEMU prove that init.sh and the host side of its checks work.
#[test]
#[ignore = "needs the kernel from scripts/build-test-kernel.sh, root and QEMU; scripts/test.sh runs it"]
fn qemu_tcg_runs_the_user_space_checks() {
    if skip_on_qemu("this test picks its own VMM") {
        return;
    }
    let b = boot(Engine::QemuTcg, Bus::Mmio);
    check_kernel_side(&b);
    assert!(
        b.out.stdout.contains("rvmm-guest: user space up"),
        "init.sh did not run under QEMU TCG\n{}",
        b.out
    );
    check_user_space(&b);
    eprintln!(
        "linux devices: QEMU TCG boot took {:.1} s",
        b.elapsed.as_secs_f64()
    );
}
