//! libvirt drives rvmm as its emulator: capability probing (docs/LIBVIRT.md).
//!
//! The test starts a private libvirtd (Debian's libvirt-daemon-system) in its own mount
//! namespace, with a temporary /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /run, so
//! nothing of the system's libvirt is read or touched; its socket is in the test's directory
//! and it is stopped at the end (and exits by itself after a minute idle if the test dies).
//! Then `virsh domcapabilities` probes rvmm and QEMU 7.2, and what libvirt reports for rvmm is
//! checked against what the rvmm binary itself says it has (`-device help`, `-cpu help`).
//! Needs root and libvirt; without them it fails, naming what is missing.

mod common;

use common::{binary, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const LIBVIRTD: &str = "/usr/sbin/libvirtd";
const VIRSH: &str = "/usr/bin/virsh";
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Probing one emulator takes a few seconds; a loaded CI machine gets far more.
const VIRSH_LIMIT: Duration = Duration::from_secs(120);

fn require_libvirt() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "tests/libvirt.rs needs root (a private libvirtd in its own mount namespace)"
    );
    for tool in [LIBVIRTD, VIRSH, QEMU, "/usr/bin/unshare"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install libvirt-daemon-system, libvirt-clients, qemu-system-x86 \
             and util-linux (scripts/test.sh's list)"
        );
    }
}

/// A libvirtd of the test's own, stopped when dropped.
struct Libvirtd {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Libvirtd {
    /// Starts the daemon with `bin` first in its PATH (where libvirt looks for
    /// `qemu-system-x86_64` to list in `virsh capabilities`).
    fn start(dir: TempDir, bin: &Path) -> Self {
        let d = dir.path().to_path_buf();
        for sub in ["etc", "cache", "lib", "sock"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let log = d.join("libvirtd.log");
        dir.file(
            "etc/libvirtd.conf",
            format!(
                "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\n\
                 auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                 log_filters = \"1:qemu.qemu_monitor 1:qemu.qemu_capabilities 4:*\"\n\
                 log_outputs = \"1:file:{}\"\n",
                d.join("sock").display(),
                log.display()
            )
            .as_bytes(),
        );
        dir.file(
            "etc/qemu.conf",
            b"user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\nnamespaces = [ ]\n",
        );
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount --bind {d}/cache /var/cache/libvirt && \
             mount --bind {d}/lib /var/lib/libvirt && mount --bind {d}/etc /etc/libvirt && \
             exec {LIBVIRTD} -f {d}/etc/libvirtd.conf -t 60",
            d = d.display()
        );
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // unshare execs sh, which execs libvirtd: the child's pid is the daemon's.
        let child = Command::new("/usr/bin/unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr")).unwrap())
            .spawn()
            .expect("run unshare");
        let mut daemon = Libvirtd {
            child,
            socket: d.join("sock/libvirt-sock"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.socket.exists() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "libvirtd exited ({status}) before listening:\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd did not listen within a minute:\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log(&self) -> String {
        let read = |n| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "stderr:\n{}\nlog (tail):\n{}",
            read("stderr"),
            read("libvirtd.log")
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// `virsh ARGS` against this daemon; its stdout, or a failure with stderr and the log.
    fn virsh(&self, args: &[&str]) -> String {
        let uri = format!("qemu:///system?socket={}", self.socket.display());
        let mut child = Command::new(VIRSH)
            .args(["-q", "-c", &uri])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run virsh");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > VIRSH_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "virsh {args:?} still runs after {VIRSH_LIMIT:?}\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = reader.join().unwrap();
        let mut stderr = String::new();
        let _ = err.read_to_string(&mut stderr);
        assert!(
            status.success(),
            "virsh {args:?}: {status}\n{stderr}\n{}",
            self.log()
        );
        stdout
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of `<tag ...>...</tag>` (the first one), or "" when absent.
fn section<'a>(xml: &'a str, tag: &str) -> &'a str {
    let Some(start) = xml
        .find(&format!("<{tag} "))
        .or_else(|| xml.find(&format!("<{tag}>")))
    else {
        return "";
    };
    let end = xml[start..]
        .find(&format!("</{tag}>"))
        .map_or(xml.len(), |e| start + e);
    &xml[start..end]
}

/// The values of `<enum name='NAME'>` inside `xml`.
fn enum_values(xml: &str, name: &str) -> Vec<String> {
    let Some(start) = xml.find(&format!("<enum name='{name}'>")) else {
        return Vec::new();
    };
    let body = &xml[start..];
    let body = &body[..body.find("</enum>").unwrap_or(body.len())];
    body.split("<value>")
        .skip(1)
        .filter_map(|v| v.split("</value>").next())
        .map(str::to_string)
        .collect()
}

/// The text of each `<model ...>NAME</model>` in `xml`.
fn models(xml: &str) -> Vec<String> {
    xml.split("<model ")
        .skip(1)
        .filter_map(|m| m.split_once('>').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split("</model>").next())
        .map(str::to_string)
        .collect()
}

/// `rvmm ARG help` as the binary prints it.
fn rvmm_help(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run rvmm");
    assert!(out.status.success(), "rvmm {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn domcapabilities(daemon: &Libvirtd, emulator: &str) -> String {
    daemon.virsh(&[
        "domcapabilities",
        "--emulatorbin",
        emulator,
        "--arch",
        "x86_64",
        "--machine",
        "q35",
        "--virttype",
        "kvm",
    ])
}

#[test]
fn libvirt_probes_rvmm_and_reports_what_it_has() {
    require_libvirt();
    let dir = TempDir::new("libvirt");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A copy, not a link: libvirt caches capabilities by the binary's ctime.
    let rvmm = bin.join("qemu-system-x86_64");
    std::fs::copy(binary(), &rvmm).unwrap();
    let daemon = Libvirtd::start(dir, &bin);

    let caps = domcapabilities(&daemon, rvmm.to_str().unwrap());
    assert!(caps.contains("<domain>kvm</domain>"), "{caps}");
    assert!(caps.contains("<machine>pc-q35-7.2</machine>"), "{caps}");
    assert!(caps.contains("<vcpu max='288'/>"), "{caps}");

    // CPU models: only rvmm's (by `-cpu help`), and host-passthrough.
    let cpu_help = rvmm_help(&["-cpu", "help"]);
    let rvmm_models: Vec<&str> = cpu_help
        .lines()
        .filter_map(|l| l.strip_prefix("x86 "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let cpu = section(&caps, "cpu");
    let custom = models(section(cpu, "mode name='custom'"));
    assert!(!custom.is_empty(), "no custom CPU models:\n{cpu}");
    for m in &custom {
        assert!(
            rvmm_models.contains(&m.as_str()),
            "libvirt lists CPU model {m} rvmm lacks"
        );
    }
    for m in ["qemu64", "Skylake-Server", "EPYC"] {
        assert!(custom.iter().any(|c| c == m), "{m} missing from {custom:?}");
    }
    assert!(
        cpu.contains("<mode name='host-passthrough' supported='yes'>"),
        "{cpu}"
    );

    // Devices: what `-device help` lists, and nothing rvmm lacks.
    let device_help = rvmm_help(&["-device", "help"]);
    let has = |d: &str| device_help.contains(&format!("name \"{d}\""));
    let devices = section(&caps, "devices");
    let video = enum_values(section(devices, "video"), "modelType");
    let mut want_video = vec!["none"];
    if has("VGA") {
        want_video.push("vga");
    }
    if has("bochs-display") {
        want_video.push("bochs");
    }
    let mut got_video: Vec<&str> = video.iter().map(String::as_str).collect();
    got_video.sort_unstable();
    want_video.sort_unstable();
    assert_eq!(got_video, want_video, "video models");
    let disk = section(devices, "disk");
    let buses = enum_values(disk, "bus");
    assert!(buses.iter().any(|b| b == "virtio"), "{disk}");
    // q35's AHCI controller takes ide-hd/ide-cd.
    assert_eq!(buses.iter().any(|b| b == "sata"), has("ide-hd"), "{disk}");
    assert!(
        !buses.iter().any(|b| b == "usb"),
        "no usb-storage in rvmm: {disk}"
    );
    assert_eq!(enum_values(disk, "model"), ["virtio"], "{disk}");
    let rng = section(devices, "rng");
    assert_eq!(enum_values(rng, "model"), ["virtio"], "{rng}");
    assert_eq!(enum_values(rng, "backendModel"), ["random"], "{rng}");
    assert_eq!(
        enum_values(section(devices, "graphics"), "type"),
        ["vnc"],
        "{devices}"
    );
    assert!(devices.contains("<tpm supported='no'/>"), "{devices}");
    assert!(devices.contains("<redirdev supported='no'/>"), "{devices}");
    assert!(caps.contains("<sev supported='no'/>"), "{caps}");
    assert!(caps.contains("<sgx supported='no'/>"), "{caps}");
    assert_eq!(
        enum_values(section(&caps, "memoryBacking"), "sourceType"),
        ["file", "anonymous"]
    );

    // `virsh capabilities`: rvmm, first in libvirtd's PATH, is the x86_64 emulator, KVM only
    // (no TCG, so no domain type 'qemu').
    let host = daemon.virsh(&["capabilities"]);
    let x86 = section(&host, "arch name='x86_64'");
    assert!(
        x86.contains(&format!("<emulator>{}</emulator>", rvmm.display())),
        "{x86}"
    );
    assert!(x86.contains(">pc-q35-7.2</machine>"), "{x86}");
    assert!(x86.contains("<domain type='kvm'/>"), "{x86}");
    assert!(!x86.contains("<domain type='qemu'"), "{x86}");

    // The same libvirt probing QEMU 7.2 finds what rvmm lacks: the checks above see a real
    // difference, not libvirt's defaults.
    let qemu = domcapabilities(&daemon, QEMU);
    let qemu_devices = section(&qemu, "devices");
    assert!(qemu.contains("<machine>pc-q35-7.2</machine>"), "{qemu}");
    assert!(
        enum_values(section(qemu_devices, "video"), "modelType")
            .iter()
            .any(|v| v == "cirrus"),
        "{qemu_devices}"
    );
    assert!(
        enum_values(section(qemu_devices, "disk"), "bus")
            .iter()
            .any(|v| v == "usb"),
        "{qemu_devices}"
    );
    assert!(
        qemu_devices.contains("<tpm supported='yes'>"),
        "{qemu_devices}"
    );
    assert!(
        models(section(section(&qemu, "cpu"), "mode name='custom'")).len() > custom.len(),
        "QEMU has more CPU models"
    );
}

/// libvirt's probe command line, as libvirt runs it, and the answers it needs: the exact
/// `DeviceNotFound` for a device type rvmm lacks, the target, and a clean `quit`.
#[test]
fn probe_command_line_serves_qmp_without_a_guest() {
    let dir = TempDir::new("libvirt-probe");
    let sock = dir.path().join("qmp.monitor");
    let pidfile = dir.path().join("qmp.pid");
    let status = Command::new(binary())
        .args(["-S", "-no-user-config", "-nodefaults", "-nographic"])
        .args(["-machine", "none,accel=kvm:tcg", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-daemonize")
        .status()
        .expect("run rvmm");
    // -daemonize: the parent exits 0 once the daemon listens.
    assert!(status.success(), "{status}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stream = UnixStream::connect(&sock).expect("connect to the probe's QMP socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    let mut ask = |req: &str| -> serde_json::Value {
        if !req.is_empty() {
            writer.write_all(req.as_bytes()).unwrap();
        }
        line.clear();
        reader.read_line(&mut line).expect("QMP reply");
        serde_json::from_str(&line).unwrap()
    };
    assert!(ask("")["QMP"]["version"]["qemu"]["major"].is_number());
    assert_eq!(
        ask(r#"{"execute":"qmp_capabilities"}"#)["return"],
        serde_json::json!({})
    );
    assert_eq!(
        ask(r#"{"execute":"query-target"}"#)["return"]["arch"],
        "x86_64"
    );
    assert_eq!(
        ask(r#"{"execute":"device-list-properties","arguments":{"typename":"virtio-scsi-pci"}}"#),
        serde_json::json!({"error": {"class": "DeviceNotFound",
            "desc": "Device 'virtio-scsi-pci' not found"}})
    );
    let props =
        ask(r#"{"execute":"device-list-properties","arguments":{"typename":"virtio-blk-pci"}}"#);
    let names: Vec<&str> = props["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"drive") && names.contains(&"addr"),
        "{props}"
    );
    assert_eq!(
        ask(r#"{"execute":"quit"}"#)["return"],
        serde_json::json!({})
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    // Gone, or a zombie its new parent has not reaped yet.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    while running() {
        assert!(Instant::now() < deadline, "rvmm still runs after quit");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pidfile.exists() && !sock.exists(),
        "pidfile or socket left behind"
    );
}
