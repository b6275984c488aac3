//! The command line libvirt 9.0 writes for a q35 domain with direct kernel boot, and the QMP
//! conversation it has with the emulator at start-up and while the domain runs.
//!
//! tests/fixtures/libvirt/q35-kernel.argv was captured from a real `virsh start` of
//! q35-kernel.xml (QEMU 7.2 as the emulator; docs/LIBVIRT.md says how). Its placeholders are
//! filled here: the monitor is a listening socket passed open (`-chardev socket,fd=N`), the NIC a
//! tap descriptor (`-netdev {"type":"tap","fd":"N"}`), the disk a qcow2 image behind two
//! `-blockdev` nodes, COM1 a pty (`-chardev pty` + `-device isa-serial`). The guest is
//! powerbutton.elf: it prints on COM1, then powers off when the ACPI power button is pressed.
//! The same test runs on QEMU (RVMM_TEST_BIN).

mod common;

use common::qmp::Qmp;
use common::{guest, is_qemu, TempDir, VmCommand};
use serde_json::{json, Value};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// The fixture's arguments with its placeholders filled in.
fn libvirt_argv(subst: &[(&str, String)]) -> Vec<String> {
    let text = include_str!("fixtures/libvirt/q35-kernel.argv");
    let mut args = Vec::new();
    for line in text.lines().skip(1) {
        let (opt, arg) = match line.split_once(' ') {
            Some((o, a)) => (o, Some(a)),
            None => (line, None),
        };
        args.push(opt.to_string());
        if let Some(a) = arg {
            let mut a = a.trim_matches('\'').to_string();
            for (from, to) in subst {
                a = a.replace(from, to);
            }
            args.push(a);
        }
    }
    args
}

/// Let a child inherit `fd` (std opens everything close-on-exec).
fn inheritable(fd: i32) {
    // SAFETY: F_SETFD on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
}

/// A new tap device's descriptor (vnet header on, as libvirt opens it), or None without
/// CAP_NET_ADMIN or /dev/net/tun.
fn open_tap() -> Option<OwnedFd> {
    let tun = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .ok()?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: u16,
        pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16,
        pad: [0; 22],
    };
    req.name[..8].copy_from_slice(b"rvmmlv%d");
    // SAFETY: TUNSETIFF reads and writes an ifreq-sized buffer, which `req` is.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), 0x4004_54ca, &mut req) };
    (r == 0).then(|| tun.into())
}

/// Reads the pty until `needle` appears (the guest prints it after `cont`).
fn wait_serial(pty: &mut File, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(seen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "serial never said {needle:?}: {:?}",
            String::from_utf8_lossy(seen)
        );
        match pty.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for event `name` (already seen or coming while `query-status` is polled).
fn wait_event(qmp: &mut Qmp, name: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(e) = qmp.events.iter().find(|e| e["event"] == name) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no {name}: {:?}", qmp.events);
        qmp.execute("query-status", json!({})).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(qmp: &mut Qmp) -> String {
    let s = qmp.execute("query-status", json!({})).unwrap();
    s["status"].as_str().unwrap().to_string()
}

fn qcow2(path: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("16M")
        .output()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn libvirt_q35_start_pause_powerdown_quit() {
    let dir = TempDir::new("libvirt-cmdline");
    std::fs::write(dir.path().join("master-key.aes"), [7u8; 32]).unwrap();
    let disk = dir.path().join("disk.qcow2");
    qcow2(&disk);
    let sock = dir.path().join("monitor.sock");
    let monitor = UnixListener::bind(&sock).unwrap();
    inheritable(monitor.as_raw_fd());
    let tap = open_tap();
    let mut subst = vec![
        ("@DOMAIN_DIR@", dir.path().display().to_string()),
        ("@KERNEL@", guest("powerbutton.elf").display().to_string()),
        ("@DISK@", disk.display().to_string()),
        ("@MONITOR_FD@", monitor.as_raw_fd().to_string()),
    ];
    let mut args = libvirt_argv(&[]);
    match &tap {
        Some(fd) => {
            inheritable(fd.as_raw_fd());
            subst.push(("@TAP_FD@", fd.as_raw_fd().to_string()));
        }
        None => {
            eprintln!("note: no tap device (needs CAP_NET_ADMIN): the NIC is left out");
            let i = args.iter().position(|a| a == "-netdev").unwrap();
            args.drain(i..i + 4);
        }
    }
    let args: Vec<String> = args
        .into_iter()
        .map(|mut a| {
            for (from, to) in &subst {
                a = a.replace(from, to);
            }
            a
        })
        .collect();
    let mut cmd = VmCommand::bare();
    for a in &args {
        cmd = cmd.arg(a);
    }
    let vm = cmd.spawn();
    // Our copies of the passed descriptors: rvmm owns its own now (and if it failed to start,
    // connecting is refused at once instead of waiting on a listener nobody serves).
    drop(tap);
    drop(monitor);

    // libvirt's start-up sequence (qemuProcessLaunch .. qemuProcessStartCPUs).
    let mut qmp = Qmp::connect(&sock);
    let caps = qmp
        .execute("query-migrate-capabilities", json!({}))
        .unwrap();
    assert!(caps
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["capability"] == "events"));
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "events", "state": true}]}),
    )
    .unwrap();
    let chardevs = qmp.execute("query-chardev", json!({})).unwrap();
    let serial = chardevs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "charserial0")
        .unwrap_or_else(|| panic!("{chardevs}"));
    let pty_path = serial["filename"]
        .as_str()
        .unwrap()
        .strip_prefix("pty:")
        .unwrap_or_else(|| panic!("{serial}"))
        .to_string();
    assert!(chardevs.as_array().unwrap().iter().any(
        |c| c["label"] == "charmonitor" && c["filename"].as_str().unwrap().starts_with("unix:")
    ));
    let mut pty = File::open(&pty_path).unwrap();
    // SAFETY: O_NONBLOCK on the pty slave this test opened.
    unsafe { libc::fcntl(pty.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };

    let cpus = qmp.execute("query-hotpluggable-cpus", json!({})).unwrap();
    let path = cpus[0]["qom-path"].as_str().unwrap().to_string();
    assert_eq!(cpus[0]["vcpus-count"], 1);
    let fast = qmp.execute("query-cpus-fast", json!({})).unwrap();
    assert_eq!(fast[0]["qom-path"], path.as_str());
    let props = qmp.execute("qom-list", json!({"path": path})).unwrap();
    let bools: Vec<String> = props
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "bool")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(bools.iter().any(|b| b == "lm"), "{props}");
    // libvirt reads every bool; a few here, and the features a 64-bit guest must have.
    let wanted = ["lm".to_string(), "pae".to_string()];
    for name in bools.iter().take(4).chain(&wanted) {
        let v = qmp
            .execute("qom-get", json!({"path": path, "property": name}))
            .unwrap();
        assert!(v.is_boolean(), "{name}: {v}");
    }
    let lm = qmp
        .execute("qom-get", json!({"path": path, "property": "lm"}))
        .unwrap();
    assert_eq!(lm, json!(true));
    let unavailable = qmp
        .execute(
            "qom-get",
            json!({"path": path, "property": "unavailable-features"}),
        )
        .unwrap();
    assert!(unavailable.is_array(), "{unavailable}");
    assert_eq!(
        qmp.execute("query-iothreads", json!({})).unwrap(),
        json!([])
    );
    let nodes = qmp
        .execute("query-named-block-nodes", json!({"flat": true}))
        .unwrap();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node-name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"libvirt-1-format") && names.contains(&"libvirt-1-storage"));
    let format = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "libvirt-1-format")
        .unwrap();
    assert_eq!(format["drv"], "qcow2");
    assert_eq!(format["image"]["virtual-size"], 16 << 20);
    let peripheral = qmp
        .execute("qom-list", json!({"path": "/machine/peripheral"}))
        .unwrap();
    for (id, ty) in [
        ("virtio-disk0", "child<virtio-blk-pci>"),
        ("serial0", "child<isa-serial>"),
    ] {
        assert!(
            peripheral
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == id && p["type"] == ty),
            "{id}: {peripheral}"
        );
    }
    let block = qmp.execute("query-block", json!({})).unwrap();
    assert_eq!(
        block[0]["qdev"],
        "/machine/peripheral/virtio-disk0/virtio-backend"
    );
    assert_eq!(block[0]["inserted"]["node-name"], "libvirt-1-format");
    assert_eq!(status(&mut qmp), "prelaunch");

    // Threads are named as QEMU names them under debug-threads=on.
    let task = format!("/proc/{}/task", vm.pid());
    let names: Vec<String> = std::fs::read_dir(&task)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "CPU 0/KVM"), "{names:?}");

    qmp.execute("cont", json!({})).unwrap();
    wait_event(&mut qmp, "RESUME");
    let mut seen = Vec::new();
    wait_serial(&mut pty, &mut seen, "powerbutton: armed");
    let stats = qmp.execute("query-blockstats", json!({})).unwrap();
    assert_eq!(stats[0]["node-name"], "libvirt-1-format");
    // virsh domstats: KVM's own statistics, as QEMU reads them.
    let schemas = qmp.execute("query-stats-schemas", json!({})).unwrap();
    let vcpu_schema = schemas
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target"] == "vcpu")
        .unwrap_or_else(|| panic!("{schemas}"));
    assert!(vcpu_schema["stats"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "exits" && s["type"] == "cumulative"));
    let vcpu = qmp
        .execute(
            "query-stats",
            json!({"target": "vcpu", "providers": [{"provider": "kvm", "names": ["exits", "halt_exits"]}]}),
        )
        .unwrap();
    assert_eq!(vcpu[0]["qom-path"], path.as_str());
    let values = vcpu[0]["stats"].as_array().unwrap();
    assert_eq!(values.len(), 2, "{vcpu}");
    let exits = values.iter().find(|v| v["name"] == "exits").unwrap();
    assert!(exits["value"].as_u64().unwrap() > 0, "{vcpu}");
    let vm_stats = qmp.execute("query-stats", json!({"target": "vm"})).unwrap();
    assert_eq!(vm_stats[0]["provider"], "kvm");

    // virsh suspend / resume.
    qmp.execute("stop", json!({})).unwrap();
    wait_event(&mut qmp, "STOP");
    assert_eq!(status(&mut qmp), "paused");
    qmp.events.clear();
    qmp.execute("cont", json!({})).unwrap();
    wait_event(&mut qmp, "RESUME");
    assert_eq!(status(&mut qmp), "running");

    // virsh shutdown --mode acpi: the guest powers off; -no-shutdown keeps the process.
    qmp.events.clear();
    qmp.execute("system_powerdown", json!({})).unwrap();
    wait_serial(&mut pty, &mut seen, "powerbutton: pressed");
    let shutdown = wait_event(&mut qmp, "SHUTDOWN");
    assert_eq!(
        shutdown["data"],
        json!({"guest": true, "reason": "guest-shutdown"})
    );
    wait_event(&mut qmp, "STOP");
    assert_eq!(status(&mut qmp), "shutdown");
    let err = qmp.execute("cont", json!({})).unwrap_err();
    assert!(
        err.contains("Resetting the Virtual Machine is required"),
        "{err}"
    );

    // libvirt's fake reboot (on_poweroff=restart): system_reset, then cont boots again.
    qmp.events.clear();
    qmp.execute("system_reset", json!({})).unwrap();
    wait_event(&mut qmp, "RESET");
    assert_eq!(status(&mut qmp), "prelaunch");
    seen.clear();
    qmp.execute("cont", json!({})).unwrap();
    wait_event(&mut qmp, "RESUME");
    wait_serial(&mut pty, &mut seen, "powerbutton: armed");
    assert_eq!(status(&mut qmp), "running");

    // virsh destroy (libvirt sends quit, then signals).
    qmp.execute("quit", json!({})).ok();
    let out = vm.wait(DEADLINE);
    out.assert_status(0);
    if !is_qemu() {
        assert!(
            out.stderr.contains("char device redirected to /dev/pts/"),
            "{}",
            out.stderr
        );
    }
}

/// `virsh console`: bytes written to the pty reach COM1's receive FIFO (serial_irq.elf takes
/// the first through COM1's interrupt and exits 33), after a time with nobody on the pty.
#[test]
fn pty_serial_input_reaches_the_guest() {
    let dir = TempDir::new("libvirt-pty");
    let sock = dir.path().join("qmp.sock");
    let cpu = if is_qemu() {
        "host,-arch-capabilities"
    } else {
        "host"
    };
    let qmp_arg = format!("unix:{},server=on,wait=off", sock.display());
    let kernel = guest("serial_irq.elf");
    let mut cmd = VmCommand::bare();
    for a in [
        "-M",
        "q35",
        "-accel",
        "kvm",
        "-cpu",
        cpu,
        "-m",
        "128",
        "-nodefaults",
        "-display",
        "none",
        "-S",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-chardev",
        "pty,id=charserial0",
        "-serial",
        "chardev:charserial0",
        "-qmp",
        &qmp_arg,
        "-kernel",
    ] {
        cmd = cmd.arg(a);
    }
    let vm = cmd.arg(&kernel).spawn();
    let mut qmp = Qmp::connect(&sock);
    let chardevs = qmp.execute("query-chardev", json!({})).unwrap();
    let path = chardevs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "charserial0")
        .and_then(|c| c["filename"].as_str()?.strip_prefix("pty:"))
        .unwrap_or_else(|| panic!("{chardevs}"))
        .to_string();
    // Nobody on the pty for a while: rvmm must keep looking for a reader, not give up.
    std::thread::sleep(Duration::from_millis(500));
    let mut pty = File::options().read(true).write(true).open(&path).unwrap();
    // SAFETY: O_NONBLOCK on the pty slave this test opened.
    unsafe { libc::fcntl(pty.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    qmp.execute("cont", json!({})).unwrap();
    let mut seen = Vec::new();
    wait_serial(&mut pty, &mut seen, "serial irq: waiting for input");
    std::io::Write::write_all(&mut pty, b"c").unwrap();
    // The guest exits 33 from its interrupt handler, once the byte arrived (its "got 'c'" line
    // may be lost: the pty is hung up, its buffer flushed, when the VMM exits).
    vm.wait(DEADLINE).assert_status(33);
}

/// A `virsh` session on libvirt's embedded QEMU driver (`qemu:///embed?root=DIR`: all state
/// under DIR, no daemon): one command at a time, each answered once the next prompt comes.
struct Virsh {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::sync::mpsc::Receiver<u8>,
}

impl Virsh {
    fn start(root: &Path) -> Self {
        let mut child = std::process::Command::new("virsh")
            .arg("-c")
            .arg(format!("qemu:///embed?root={}", root.display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("virsh (libvirt-clients) is needed");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while stdout.read(&mut b).is_ok_and(|n| n == 1) {
                if tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        let mut v = Virsh { child, stdin, out };
        v.until_prompt("");
        v
    }

    fn until_prompt(&mut self, cmd: &str) -> String {
        let mut text = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while !text.ends_with(b"virsh # ") {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(b) => text.push(b),
                Err(_) => panic!(
                    "virsh {cmd:?}: no prompt; so far: {}",
                    String::from_utf8_lossy(&text)
                ),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn run(&mut self, cmd: &str) -> String {
        std::io::Write::write_all(&mut self.stdin, format!("{cmd}\n").as_bytes()).unwrap();
        self.until_prompt(cmd)
    }

    /// Polls `domstate --reason` until it starts with `state`.
    fn wait_state(&mut self, dom: &str, state: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.run(&format!("domstate {dom} --reason"));
            // virsh echoes the command line before its answer.
            if s.lines().any(|l| l.trim_start().starts_with(state)) {
                return s;
            }
            assert!(Instant::now() < deadline, "{dom} never became {state}: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Virsh {
    /// A domain left running (a failed test) would outlive the embedded driver: destroy it,
    /// then end virsh.
    fn drop(&mut self) {
        let _ = std::io::Write::write_all(&mut self.stdin, b"destroy rvmmtest\nquit\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole path a libvirt user takes: libvirt probes the emulator, writes its command line,
/// starts it, and virsh suspends, resumes, reads statistics and shuts the domain down through
/// ACPI (the guest, powerbutton.elf, powers off; libvirt ends the process: on_poweroff=destroy).
#[test]
fn virsh_runs_a_domain_on_the_emulator() {
    let dir = TempDir::new("libvirt-virsh");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // The embedded driver has no virtlogd; no security labels on the test's files.
    std::fs::write(
        root.join("etc/qemu.conf"),
        "stdio_handler = \"file\"\nsecurity_driver = \"none\"\n",
    )
    .unwrap();
    let disk = dir.path().join("disk.qcow2");
    qcow2(&disk);
    let emulator = std::fs::canonicalize(common::binary()).unwrap();
    let mut xml = include_str!("fixtures/libvirt/q35-kernel.xml")
        .replace("@KERNEL@", &guest("powerbutton.elf").display().to_string())
        .replace("@DISK@", &disk.display().to_string())
        .replace(
            "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
            &format!("<emulator>{}</emulator>", emulator.display()),
        );
    // No tap device here: the NIC is left out.
    let (a, b) = (
        xml.find("<interface").unwrap(),
        xml.find("</interface>").unwrap() + "</interface>".len(),
    );
    xml.replace_range(a..b, "");
    let xml_path = dir.path().join("dom.xml");
    std::fs::write(&xml_path, xml).unwrap();

    let mut virsh = Virsh::start(&root);
    let out = virsh.run(&format!("define {}", xml_path.display()));
    assert!(out.contains("defined"), "{out}");
    let out = virsh.run("start rvmmtest");
    assert!(out.contains("started"), "{out}");
    virsh.wait_state("rvmmtest", "running");
    let stats = virsh.run("domstats rvmmtest");
    assert!(stats.contains("block.0.name=vda"), "{stats}");
    assert!(stats.contains("vcpu.current=1"), "{stats}");
    // libvirt knows the vCPU's thread (query-cpus-fast at start-up) and reads its KVM
    // statistics through query-stats.
    assert!(stats.contains("vcpu.0.state=1"), "{stats}");
    assert!(stats.contains("vcpu.0.exits.sum="), "{stats}");
    // KVM's statistics of the VM, through query-stats.
    assert!(stats.contains("vm.remote_tlb_flush.sum="), "{stats}");
    virsh.run("suspend rvmmtest");
    virsh.wait_state("rvmmtest", "paused");
    virsh.run("resume rvmmtest");
    virsh.wait_state("rvmmtest", "running");
    // The button counts once the guest armed it (under QEMU, SeaBIOS runs first): press it
    // again until the guest is off, as a user would.
    let deadline = Instant::now() + DEADLINE;
    let state = loop {
        virsh.run("shutdown rvmmtest --mode acpi");
        let s = virsh.run("domstate rvmmtest --reason");
        if s.contains("shut off") {
            break s;
        }
        assert!(Instant::now() < deadline, "rvmmtest never shut down: {s}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(state.contains("(shutdown)"), "{state}");
    let log = std::fs::read_to_string(root.join("log/qemu/rvmmtest.log")).unwrap();
    assert!(log.contains("-no-shutdown"), "{log}");
    virsh.run("undefine rvmmtest");
}
