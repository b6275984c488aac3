//! The command line libvirt 9.0 writes for a q35 domain with direct kernel boot
//! (tests/fixtures/libvirt/q35-kernel.argv, captured from a real start), parsed as rvmm reads it.

use super::*;

/// The fixture's arguments with its placeholders filled in.
pub(crate) fn libvirt_argv(subst: &[(&str, &str)]) -> Vec<String> {
    let text = include_str!("../../../tests/fixtures/libvirt/q35-kernel.argv");
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

#[test]
fn libvirt_q35_command_line() {
    let dir = std::env::temp_dir().join(format!("rvmm-libvirt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("master-key.aes"), [0u8; 32]).unwrap();
    let d = dir.to_str().unwrap();
    let args = libvirt_argv(&[
        ("@DOMAIN_DIR@", d),
        ("@KERNEL@", "/k"),
        ("@DISK@", "/d.qcow2"),
        ("@MONITOR_FD@", "7"),
        ("@TAP_FD@", "8"),
    ]);
    let Action::Run(c) = parse_args(&args).unwrap() else {
        panic!("not a run");
    };
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.machine, MachineKind::Q35);
    assert_eq!(c.name.as_deref(), Some("rvmmtest"));
    assert!(c.process.debug_threads && c.process.no_shutdown);
    assert!(!c.process.dump_guest_core && !c.process.mem_lock);
    assert!(c.process.msg_timestamp && c.start_paused);
    let backend = c.process.memory_backend.as_ref().unwrap();
    assert_eq!((backend.id.as_str(), backend.size), ("pc.ram", 128 << 20));
    assert_eq!(c.qmp[0].address, QmpAddress::Fd(7));
    assert_eq!(c.qmp[0].label.as_deref(), Some("charmonitor"));
    assert_eq!(c.serial, SerialConfig::Pty);
    assert_eq!(c.serial_label.as_deref(), Some("charserial0"));
    assert!(c.firmware.boot.strict);
    assert!(c.globals.ich9_disable_s3);
    let [disk, net] = &c.virtio_pci[..] else {
        panic!("{:?}", c.virtio_pci);
    };
    let VirtioDeviceConfig::Block(drive) = &disk.device else {
        panic!("{disk:?}");
    };
    assert_eq!(drive.file, PathBuf::from("/d.qcow2"));
    assert_eq!(drive.format.as_deref(), Some("qcow2"));
    assert_eq!(drive.node_name.as_deref(), Some("libvirt-1-format"));
    assert_eq!(drive.file_node_name.as_deref(), Some("libvirt-1-storage"));
    assert_eq!(disk.pci.addr, Some((3, 0)));
    assert_eq!(disk.pci.bootindex, Some(1));
    assert_eq!(disk.pci.id.as_deref(), Some("virtio-disk0"));
    assert!(matches!(
        &net.device,
        VirtioDeviceConfig::Net {
            backend: NetBackendConfig::Tap(TapConfig::Fd(8)),
            mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        }
    ));
    assert_eq!(
        c.peripherals,
        [
            ("virtio-disk0", "virtio-blk-pci"),
            ("net0", "virtio-net-pci"),
            ("serial0", "isa-serial")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn libvirt_spellings_refused_by_name() {
    let e = |args: &[&str]| parse_args(args).unwrap_err().to_string();
    assert_eq!(
        e(&["-device", r#"{"driver":"virtio-blk-pci","bus":"pci.3","drive":"x"}"#]),
        "-device virtio-blk-pci: Bus 'pci.3' not found (rvmm's buses: pcie.0 on q35, pci.0 on pc, isa.0, and the ids of the pcie-root-ports before it)"
    );
    assert!(e(&["-device", "{\"driver\""]).starts_with("-device: JSON argument is not valid"));
    assert_eq!(
        e(&["-object", r#"{"qom-type":"memory-backend-file","id":"m","size":1}"#]),
        "-object memory-backend-file: object type is not supported (supported: rng-random, rng-builtin, secret, memory-backend-ram, memory-backend-memfd)"
    );
    assert_eq!(
        e(&["-machine", "q35,memory-backend=m"]),
        "-machine memory-backend=m: no -object memory-backend-* has that id"
    );
    assert_eq!(
        e(&["-audiodev", r#"{"id":"a","driver":"pa"}"#]),
        "-audiodev: driver 'pa' is not supported (rvmm has no sound devices; supported: none)"
    );
    assert_eq!(
        e(&["-serial", "chardev:nope"]),
        "-mon: chardev 'nope' not found"
    );
    assert_eq!(
        e(&["-chardev", "socket,id=m,fd=x,server=on"]),
        "-chardev: fd=x: expected a descriptor number"
    );
    assert!(e(&["-rtc", "base=localtime"]).contains("base=localtime is not supported"));
    assert!(e(&["-machine", "q35,usb=on"]).contains("usb"));
    assert_eq!(
        e(&["-device", "isa-serial,chardev=c,index=1"]),
        "-device isa-serial: only COM1 (index=0, iobase=0x3f8, irq=4) is supported"
    );
}

#[test]
fn libvirt_tap_spellings() {
    let net = |arg: &str| {
        parse_args(["-M", "q35", "-netdev", arg]).map(|a| match a {
            Action::Run(c) => c.virtio_pci.len(),
            _ => 0,
        })
    };
    assert!(net(r#"{"type":"tap","fds":"5","id":"n","vhost":true,"vhostfds":"6"}"#).is_ok());
    assert_eq!(
        net("tap,id=n,fds=5:6").unwrap_err().to_string(),
        "-netdev tap,id=n: one tap descriptor only (rvmm's virtio-net has one queue pair)"
    );
    assert!(net("tap,id=n,fd=5,vhost=on,vhostforce=on").is_err());
}

#[test]
fn blockdev_nodes_on_ide_and_fdsets() {
    use std::os::fd::AsRawFd;
    let iso = std::fs::File::open("/proc/self/stat").unwrap();
    let fd = iso.as_raw_fd();
    let add_fd = format!("fd={fd},set=2");
    let Action::Run(c) = parse_args([
        "-M",
        "q35",
        "-add-fd",
        &add_fd,
        "-blockdev",
        r#"{"driver":"file","filename":"/dev/fdset/2","node-name":"libvirt-2-storage","read-only":true}"#,
        "-blockdev",
        r#"{"node-name":"libvirt-2-format","read-only":true,"driver":"raw","file":"libvirt-2-storage"}"#,
        "-device",
        r#"{"driver":"ide-cd","bus":"ide.0","drive":"libvirt-2-format","id":"sata0-0-0"}"#,
        "-blockdev",
        r#"{"driver":"host_device","filename":"/dev/null","node-name":"hd","cache":{"direct":true}}"#,
        "-device",
        "ide-hd,bus=ide.1,drive=hd,id=sata0-0-1",
    ])
    .unwrap() else {
        panic!("not a run");
    };
    let cd = c.ide.iter().find(|d| d.cdrom).unwrap();
    let drive = cd.drive.as_ref().unwrap();
    assert_eq!(drive.file, PathBuf::from(format!("/proc/self/fd/{fd}")));
    assert!(drive.readonly);
    assert_eq!(drive.node_name.as_deref(), Some("libvirt-2-format"));
    let hd = c.ide.iter().find(|d| !d.cdrom).unwrap();
    let drive = hd.drive.as_ref().unwrap();
    assert!(drive.direct && !drive.readonly);
    assert_eq!(drive.file, PathBuf::from("/dev/null"));
    // A read-write node on a descriptor opened read-only is refused.
    let e = parse_args([
        "-add-fd",
        &add_fd,
        "-blockdev",
        "driver=file,filename=/dev/fdset/2,node-name=w",
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/dev/fdset/2: no -add-fd descriptor of set 2 is open for reading and writing"
    );
}
