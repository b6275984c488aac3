//! Command-line tests: every option, error wording, and QEMU ordering rules.

use super::*;
use crate::size::GIB;

fn parse(args: &[&str]) -> Result<Action, CliError> {
    parse_args(args.iter().map(|s| s.to_string()))
}

pub(crate) fn run(args: &[&str]) -> VmConfig {
    match parse(args) {
        Ok(Action::Run(config)) => config,
        other => panic!("{args:?} gave {other:?}"),
    }
}

pub(crate) fn err(args: &[&str]) -> String {
    match parse(args) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("{args:?} unexpectedly gave {other:?}"),
    }
}

#[test]
fn empty_command_line_gives_qemu_defaults() {
    let mut config = run(&[]);
    // No display named: VNC on localhost, announced (QEMU built without a window system).
    let vnc = config.vnc.take().expect("default VNC server");
    assert!(vnc.announce);
    // QEMU's default NIC (e1000 on pc): rvmm's is virtio-net-pci on user networking, marked as
    // not asked for (left out with a warning when passt is missing).
    let nic = config.virtio_pci.remove(0);
    assert_eq!(
        nic.device,
        VirtioDeviceConfig::Net {
            backend: crate::NetBackendConfig::User(crate::UserNetConfig {
                implicit: true,
                ..Default::default()
            }),
            mac: None
        }
    );
    assert!(config.virtio_pci.is_empty());
    // QEMU's pc machine comes with its standard VGA.
    let want = VmConfig {
        default_vga: true,
        ..VmConfig::default()
    };
    assert_eq!(config, want);
    assert_eq!(run(&["-display", "none"]).vnc, None);
    assert_eq!(run(&["-nographic"]).vnc, None);
    assert_eq!(
        run(&["-vnc", "unix:/run/x,password=on"])
            .vnc
            .unwrap()
            .listen,
        crate::VncListen::Unix("/run/x".into())
    );
    assert!(err(&["-vnc", "localhost"]).starts_with("-vnc: 'localhost' is not a VNC display"));
}

#[test]
fn vga_default_and_its_removal() {
    assert!(run(&["-M", "q35"]).default_vga);
    assert!(run(&["-vga", "std", "-nodefaults"]).default_vga);
    assert!(!run(&["-vga", "none"]).default_vga);
    assert!(!run(&["-nodefaults"]).default_vga);
    assert!(!run(&["-M", "microvm"]).default_vga);
    // An explicit -device VGA replaces the default one.
    let c = run(&["-device", "VGA,addr=5"]);
    assert!(!c.default_vga);
    assert_eq!(
        c.devices,
        [DeviceConfig::Display(DisplayDeviceConfig {
            model: DisplayModel::StdVga,
            bus: None,
            addr: Some((5, 0)),
        })]
    );
    let c = run(&["-device", "bochs-display"]);
    assert!(c.default_vga);
    assert_eq!(c.devices[0].driver(), "bochs-display");
    assert_eq!(
        err(&["-vga", "cirrus"]),
        "-vga cirrus: not supported (supported: std, none)"
    );
    assert!(err(&["-M", "microvm", "-vga", "std"]).contains("PCI"));
    assert!(err(&["-M", "microvm", "-device", "VGA"]).contains("PCI"));
}

#[test]
fn network_options_and_the_default_nic() {
    // On pc/q35 NICs default to virtio-net-pci, on microvm to virtio-mmio.
    let nets = |args: &[&str]| -> Vec<VirtioDeviceConfig> {
        let c = run(args);
        c.virtio
            .into_iter()
            .chain(c.virtio_pci.into_iter().map(|d| d.device))
            .collect()
    };
    let user = |hostfwd: Vec<crate::HostFwd>| {
        crate::NetBackendConfig::User(crate::UserNetConfig {
            hostfwd,
            ..Default::default()
        })
    };
    // -nodefaults, -nic none, -net none and any other network option drop the default NIC;
    // microvm has none.
    for args in [
        &["-nodefaults"][..],
        &["-nic", "none"],
        &["-net", "none"],
        &["-M", "microvm"],
        &["-M", "q35", "-netdev", "user,id=n"],
    ] {
        assert!(nets(args).is_empty(), "{args:?}");
    }
    assert_eq!(run(&["-M", "q35"]).virtio_pci.len(), 1, "virtio-net-pci");
    assert_eq!(
        run(&["-M", "q35", "-nic", "user,model=virtio-net-device"])
            .virtio
            .len(),
        1
    );
    assert_eq!(run(&["-M", "microvm", "-nic", "user"]).virtio.len(), 1);
    assert!(err(&["-M", "microvm", "-nic", "user,model=virtio-net-pci"]).contains("PCI"));
    let fwd = crate::HostFwd {
        udp: false,
        host_addr: None,
        host_port: 2222,
        guest_port: 22,
    };
    let want = vec![VirtioDeviceConfig::Net {
        backend: user(vec![fwd.clone()]),
        mac: Some([0x52, 0x54, 0, 0, 0, 1]),
    }];
    assert_eq!(
        nets(&[
            "-nic",
            "user,model=virtio,mac=52:54:00:00:00:01,hostfwd=tcp::2222-:22"
        ]),
        want
    );
    assert_eq!(
        nets(&[
            "-net",
            "nic,macaddr=52:54:00:00:00:01",
            "-net",
            "user,hostfwd=tcp::2222-:22"
        ]),
        want
    );
    assert_eq!(
        nets(&[
            "-net",
            "user,hostfwd=tcp::2222-:22",
            "-net",
            "nic,macaddr=52:54:00:00:00:01"
        ]),
        want
    );
    assert_eq!(
        nets(&[
            "-netdev",
            "user,id=u,hostfwd=tcp::2222-:22",
            "-device",
            "virtio-net-device,netdev=u,mac=52:54:00:00:00:01"
        ]),
        want
    );
    assert_eq!(
        err(&["-nic", "user,model=e1000"]),
        "-nic: model=e1000 is not supported (supported: virtio, virtio-net-pci, virtio-net-device)"
    );
    assert_eq!(
        err(&["-nic", "user,hostfwd=tcp::22-:x"]),
        "-nic: hostfwd=tcp::22-:x: guest port 'x' is not a port number (1-65535)"
    );
    assert_eq!(
        err(&["-net", "user"]),
        "-net user: no -net nic to connect it to (add -net nic, or use -nic user)"
    );
    assert!(err(&["-net", "nic"]).contains("no -net backend"));
    assert!(err(&["-netdev", "slirp,id=x"]).contains("'slirp' is not supported"));
    assert!(err(&["-netdev", "user"]).contains("needs id="));
}

#[test]
fn help_and_version() {
    for h in ["-h", "-help", "--help", "--h"] {
        assert_eq!(parse(&[h]), Ok(Action::Help), "{h}");
    }
    assert_eq!(parse(&["-version"]), Ok(Action::Version));
    assert_eq!(parse(&["--version"]), Ok(Action::Version));
    // Processed in order, like QEMU: later errors are not reached...
    assert_eq!(parse(&["-version", "-vga", "std"]), Ok(Action::Version));
    assert_eq!(
        parse(&["-m", "12Q", "-h"]),
        Err(CliError::Size {
            option: "-m",
            source: SizeError::Suffix("12Q".into(), "Q".into()),
        })
    );
    // ...but invalid option names are found in the first pass.
    assert_eq!(err(&["-version", "-foo"]), "-foo: invalid option");
}

#[test]
fn help_queries() {
    for args in [&["-device", "help"][..], &["-device", "?"]] {
        assert_eq!(
            parse(args),
            Ok(Action::DeviceHelp(crate::qdev::devices_help())),
            "{args:?}"
        );
    }
    assert_eq!(
        parse(&["-device", "isa-debug-exit,help"]),
        Ok(Action::DeviceHelp(crate::qdev::device_help(
            &crate::qdev::ISA_DEBUG_EXIT
        )))
    );
    assert_eq!(
        parse(&["-device", "ICH9-LPC,help"]),
        Err(CliError::Device("ICH9-LPC".into()))
    );
    for args in [
        &["-machine", "help"][..],
        &["-M", "?"],
        &["-accel", "help"],
        &["-display", "help"],
        &["-serial", "help"],
    ] {
        assert_eq!(parse(args), Ok(Action::Help), "{args:?}");
    }
}

/// libvirt's capability probe: no guest, QMP only.
#[test]
fn libvirt_probe_command_line() {
    let c = run(&[
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-nographic",
        "-machine",
        "none,accel=kvm:tcg",
        "-qmp",
        "unix:/tmp/x.monitor,server=on,wait=off",
        "-pidfile",
        "/tmp/x.pid",
        "-daemonize",
    ]);
    assert!(c.qmp_only && c.daemonize && c.start_paused);
    assert_eq!(c.serial, SerialConfig::None);
    assert_eq!(
        err(&["-machine", "none,accel=tcg"]),
        "-machine: accelerator 'tcg' is not supported (rvmm only supports kvm)"
    );
}

/// Every registry property is a key the parser takes, and nothing else is.
#[test]
fn device_keys_come_from_the_registry() {
    assert_eq!(
        err(&["-device", "virtio-rng-pci,drive=x"]),
        "-device virtio-rng-pci: unknown parameter 'drive'"
    );
    assert_eq!(
        err(&["-device", "pc-testdev,iobase=1"]),
        "-device pc-testdev: unknown parameter 'iobase'"
    );
    run(&[
        "-device",
        "virtio-rng-pci,addr=5,bootindex=1,disable-legacy=on",
    ]);
}

#[test]
fn double_dash_is_single_dash() {
    let c = run(&[
        "--m",
        "256",
        "--smp",
        "2",
        "--machine",
        "q35",
        "--no-reboot",
    ]);
    assert_eq!(c.memory_bytes, 256 * MIB);
    assert_eq!(c.smp.cpus, 2);
    assert_eq!(c.machine, MachineKind::Q35);
    assert!(c.no_reboot);
}

#[test]
fn invalid_and_unsupported_options() {
    assert_eq!(err(&["-foo"]), "-foo: invalid option");
    assert_eq!(err(&["--foo"]), "-foo: invalid option");
    assert_eq!(err(&["-m=512"]), "-m=512: invalid option");
    assert_eq!(err(&["-"]), "-: invalid option");
    assert_eq!(err(&["-sdl"]), "-sdl is not supported");
    for (opt, arg) in [
        ("-monitor", Some("stdio")),
        ("-s", None),
        ("-gdb", Some("tcp::1234")),
        ("-usb", None),
        ("-soundhw", Some("all")),
        ("-numa", Some("node")),
        ("-icount", Some("1")),
        ("-d", Some("int")),
        ("-D", Some("log")),
        ("-trace", Some("x")),
        ("-k", Some("en-us")),
        ("-spice", Some("port=5900")),
        ("-no-quit", None),
    ] {
        let mut args = vec![opt];
        args.extend(arg);
        assert_eq!(err(&args), format!("{opt} is not supported"), "{args:?}");
    }
}

#[test]
fn missing_arguments() {
    assert_eq!(err(&["-m"]), "-m requires an argument");
    assert_eq!(err(&["-M"]), "-machine requires an argument");
    assert_eq!(
        err(&["-smp", "2", "-kernel"]),
        "-kernel requires an argument"
    );
    // Refused options still need their argument, as in QEMU's first pass.
    assert_eq!(err(&["-vga"]), "-vga requires an argument");
    // The next word is the argument even if it looks like an option.
    assert_eq!(run(&["-append", "-v"]).append.as_deref(), Some(&b"-v"[..]));
}

#[test]
fn positional_disk_image_is_refused() {
    assert_eq!(
        err(&["disk.img"]),
        "'disk.img': disk image arguments are not supported (boot a kernel with -kernel)"
    );
    assert!(matches!(parse(&["-m", "64", "x"]), Err(CliError::Positional(p)) if p == "x"));
}

#[test]
fn accelerator() {
    run(&["-enable-kvm"]);
    run(&["-accel", "kvm"]);
    run(&["-accel", "accel=kvm"]);
    run(&["-machine", "pc,accel=kvm"]);
    run(&["-machine", "accel=kvm:tcg"]);
    assert_eq!(
        err(&["-accel", "tcg"]),
        "-accel: accelerator 'tcg' is not supported (rvmm only supports kvm)"
    );
    assert_eq!(
        err(&["-machine", "q35,accel=tcg"]),
        "-machine: accelerator 'tcg' is not supported (rvmm only supports kvm)"
    );
    assert_eq!(
        err(&["-accel", "kvm,thread=multi"]),
        "-accel: parameter 'thread' is not supported"
    );
    assert_eq!(
        err(&["-accel", "kvm,foo=1"]),
        "-accel: unknown parameter 'foo'"
    );
}

#[test]
fn machine_types() {
    assert_eq!(run(&["-machine", "microvm"]).machine, MachineKind::Microvm);
    assert_eq!(run(&["-M", "q35"]).machine, MachineKind::Q35);
    assert_eq!(run(&["-M", "pc"]).machine, MachineKind::Pc);
    assert_eq!(run(&["-M", "type=q35"]).machine, MachineKind::Q35);
    assert_eq!(run(&["-M", "pc-q35-7.2"]).machine, MachineKind::Q35);
    assert_eq!(run(&["-M", "pc-i440fx-8.0"]).machine, MachineKind::Pc);
    assert_eq!(
        run(&["-M", "q35", "-M", "microvm"]).machine,
        MachineKind::Microvm
    );
    assert_eq!(
        err(&["-M", "isapc"]),
        "-machine: machine type 'isapc' is not supported (supported: pc, q35, microvm)"
    );
    assert_eq!(
        err(&["-M", "q35,smm=off"]),
        "-machine: parameter 'smm' is not supported"
    );
    let c = run(&[
        "-M",
        "microvm,kernel=vmlinux,append=console=ttyS0,,quiet,initrd=a,,b",
    ]);
    assert_eq!(c.kernel, Some(PathBuf::from("vmlinux")));
    assert_eq!(c.append.as_deref(), Some(&b"console=ttyS0,quiet"[..]));
    assert_eq!(c.initrd, [PathBuf::from("a"), PathBuf::from("b")]);
    assert!(err(&["-M", "microvm,kernel=k,c"]).contains("parameter 'c' is not supported"));
}

#[test]
fn cpu_models() {
    run(&["-cpu", "host"]);
    run(&["-cpu", "max"]);
    run(&["-cpu", "qemu64"]);
    assert_eq!(
        err(&["-cpu", "qemu65"]),
        "-cpu: unable to find CPU model 'qemu65'"
    );
    assert_eq!(parse(&["-cpu", "help"]), Ok(Action::CpuHelp));
    assert_eq!(parse(&["-cpu", "?"]), Ok(Action::CpuHelp));
    // rvmm issue 14: the model with features and properties reaches the config.
    let c = run(&["-cpu", "host,+vmx,-sse4.2,sse4.1=off,enforce"]);
    let names: Vec<(&str, bool)> = c
        .cpu
        .features
        .iter()
        .map(|s| (s.feature.name(), s.on))
        .collect();
    assert_eq!(names, [("sse4.1", false), ("vmx", true), ("sse4.2", false)]);
    assert!(c.cpu.enforce);
    assert_eq!(run(&[]).cpu, rvmm_arch::cpu::CpuConfig::default());
    assert_eq!(
        err(&["-cpu", "host,foo"]),
        "-cpu: can't apply global host-x86_64-cpu.foo=on: Property 'host-x86_64-cpu.foo' not found"
    );
}

#[test]
fn smp() {
    let c = run(&["-smp", "4"]);
    assert_eq!((c.smp.cpus, c.smp.cores, c.smp.maxcpus), (4, 4, 4));
    let c = run(&["-smp", "cpus=4,sockets=2"]);
    assert_eq!((c.smp.sockets, c.smp.cores), (2, 2));
    let c = run(&["-smp", "2,maxcpus=4"]);
    assert_eq!((c.smp.cpus, c.smp.maxcpus), (2, 4));
    assert_eq!(err(&["-smp", "4,foo=1"]), "-smp: unknown parameter 'foo'");
    assert_eq!(
        err(&["-smp", "x"]),
        "-smp: parameter 'cpus' expects a number, got 'x'"
    );
    assert!(err(&["-smp", "5,sockets=2"])
        .starts_with("-smp: Invalid CPU topology: product of the hierarchy must match"));
    assert!(err(&["-smp", "0"]).starts_with("-smp: Invalid CPU topology"));
    // The machine limit applies whatever the option order.
    assert_eq!(
        err(&["-smp", "256", "-M", "pc"]),
        "-smp: Invalid SMP CPUs 256. The max CPUs supported by machine 'pc' is 255"
    );
    assert_eq!(run(&["-smp", "256", "-M", "q35"]).smp.cpus, 256);
    assert_eq!(
        err(&["-M", "microvm", "-smp", "4,dies=2"]),
        "-smp: dies > 1 not supported by this machine's CPU topology"
    );
}

#[test]
fn memory() {
    assert_eq!(run(&["-m", "512"]).memory_bytes, 512 * MIB);
    assert_eq!(run(&["-m", "2G"]).memory_bytes, 2 * GIB);
    assert_eq!(run(&["-m", "size=1G"]).memory_bytes, GIB);
    assert_eq!(run(&["-m", "1048576B"]).memory_bytes, MIB);
    assert_eq!(run(&["-m", "2048k"]).memory_bytes, 2 * MIB);
    assert_eq!(run(&["-m", "1T"]).memory_bytes, 1 << 40);
    // Rounded up to QEMU's 8 KiB granularity.
    assert_eq!(run(&["-m", "1048577B"]).memory_bytes, MIB + 8192);
    assert_eq!(run(&["-m", "64", "-m", "256"]).memory_bytes, 256 * MIB);
    assert!(err(&["-m", "12Q"]).starts_with("-m: invalid size '12Q'"));
    assert!(err(&["-m", ""]).starts_with("-m: invalid size ''"));
    assert!(err(&["-m", "99999999999999999999"]).starts_with("-m: invalid size"));
    assert!(err(&["-m", "16E"]).contains("does not fit in 64 bits"));
    assert_eq!(
        err(&["-m", "0"]),
        "-m: memory size 0 bytes is below the minimum of 1 MiB"
    );
    assert_eq!(
        err(&["-m", "512K"]),
        "-m: memory size 512 KiB is below the minimum of 1 MiB"
    );
    assert_eq!(
        err(&["-m", "2T"]),
        "-m: memory size 2 TiB exceeds the maximum of 1 TiB"
    );
    assert_eq!(
        err(&["-m", "1G,slots=2"]),
        "-m: parameter 'slots' is not supported"
    );
    assert_eq!(
        err(&["-m", "1G,maxmem=4G"]),
        "-m: parameter 'maxmem' is not supported"
    );
    assert_eq!(err(&["-m", "1G,foo=1"]), "-m: unknown parameter 'foo'");
}

#[test]
fn name_kernel_initrd_append() {
    let c = run(&[
        "-name",
        "guest=vm,,1",
        "-kernel",
        "/boot/vmlinuz",
        "-initrd",
        "/boot/initrd.img",
        "-append",
        "console=ttyS0 root=/dev/vda",
    ]);
    assert_eq!(c.name.as_deref(), Some("vm,1"));
    assert_eq!(c.kernel, Some(PathBuf::from("/boot/vmlinuz")));
    assert_eq!(c.initrd, [PathBuf::from("/boot/initrd.img")]);
    assert_eq!(
        c.append.as_deref(),
        Some(&b"console=ttyS0 root=/dev/vda"[..])
    );
    assert_eq!(run(&["-name", "foo"]).name.as_deref(), Some("foo"));
    assert_eq!(
        err(&["-name", "foo,process=x"]),
        "-name: parameter 'process' is not supported"
    );
    assert_eq!(
        err(&["-name", "foo,bar=x"]),
        "-name: unknown parameter 'bar'"
    );
    // Last one wins, as in QEMU.
    assert_eq!(
        run(&["-append", "a", "-append", "b"]).append.as_deref(),
        Some(&b"b"[..])
    );
}

#[test]
fn initrd_lists() {
    assert_eq!(
        run(&["-initrd", "mod1 arg,mod2,,x,mod3"]).initrd,
        [
            PathBuf::from("mod1 arg"),
            PathBuf::from("mod2,x"),
            PathBuf::from("mod3")
        ]
    );
    assert_eq!(run(&["-initrd", "a,,"]).initrd, [PathBuf::from("a,")]);
    assert_eq!(err(&["-initrd", "a,"]), "-initrd: empty file name in 'a,'");
    assert_eq!(err(&["-initrd", ""]), "-initrd: empty file name in ''");
    assert_eq!(
        err(&["-initrd", "a,,,,,"]),
        "-initrd: empty file name in 'a,,,,,'"
    );
}

#[test]
fn display() {
    run(&["-nographic"]);
    run(&["-display", "none"]);
    run(&["-display", "type=none"]);
    assert_eq!(
        err(&["-display", "gtk"]),
        "-display: display type 'gtk' is not supported (supported: none, vnc=...)"
    );
    assert_eq!(
        err(&["-display", "none,gl=on"]),
        "-display: unknown parameter 'gl'"
    );
}

#[test]
fn serial() {
    assert_eq!(run(&[]).serial, SerialConfig::Stdio);
    assert_eq!(run(&["-nographic"]).serial, SerialConfig::Stdio);
    assert_eq!(run(&["-nodefaults"]).serial, SerialConfig::None);
    let c = run(&["-nodefaults", "-serial", "stdio"]);
    assert!(c.nodefaults);
    assert_eq!(c.serial, SerialConfig::Stdio);
    assert_eq!(run(&["-serial", "mon:stdio"]).serial, SerialConfig::Stdio);
    assert_eq!(run(&["-serial", "none"]).serial, SerialConfig::None);
    assert_eq!(
        run(&["-serial", "null"]).serial,
        SerialConfig::File(PathBuf::from("/dev/null"))
    );
    assert_eq!(
        run(&["-serial", "file:/tmp/a:b.log"]).serial,
        SerialConfig::File(PathBuf::from("/tmp/a:b.log"))
    );
    assert_eq!(err(&["-serial", "file:"]), "-serial: file: needs a path");
    assert_eq!(
        err(&["-serial", "tcp:localhost:4444,server"]),
        "-serial: backend 'tcp' is not supported (supported: stdio, mon:stdio, none, null, file:PATH)"
    );
    assert!(err(&["-serial", "pty"]).contains("backend 'pty'"));
    assert!(err(&["-serial", "mon:vc"]).contains("backend 'mon'"));
    assert_eq!(
        err(&["-serial", "stdio", "-serial", "null"]),
        "-serial: only one serial port (COM1) is supported"
    );
}

#[test]
fn flags() {
    let c = run(&["-no-reboot", "-nodefaults", "-enable-kvm"]);
    assert!(c.no_reboot && c.nodefaults);
    assert!(!run(&[]).no_reboot);
}

#[test]
fn devices() {
    let c = run(&["-device", "isa-debug-exit"]);
    assert_eq!(
        c.devices,
        [DeviceConfig::IsaDebugExit {
            iobase: 0x501,
            iosize: 2
        }]
    );
    let c = run(&[
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-device",
        "pc-testdev",
        "-device",
        "driver=isa-debug-exit,id=exit2,iobase=1280,iosize=1",
    ]);
    assert_eq!(
        c.devices,
        [
            DeviceConfig::IsaDebugExit {
                iobase: 0xf4,
                iosize: 4
            },
            DeviceConfig::PcTestdev,
            DeviceConfig::IsaDebugExit {
                iobase: 0x500,
                iosize: 1
            },
        ]
    );
    assert_eq!(
        err(&["-device", "virtio-blk-device"]),
        "-device virtio-blk-device: parameter 'drive' is missing"
    );
    assert_eq!(
        err(&["-device", "virtio-gpu-device"]),
        "-device virtio-gpu-device: device is not supported (-device help lists rvmm's devices)"
    );
    assert_eq!(
        err(&["-device", "isa-debug-exit,foo=1"]),
        "-device isa-debug-exit: unknown parameter 'foo'"
    );
    assert_eq!(
        err(&["-device", "isa-debug-exit,iobase=0x10000"]),
        "-device isa-debug-exit: parameter 'iobase' value '0x10000' is out of range (maximum 65535)"
    );
    assert_eq!(
        err(&["-device", "isa-debug-exit,iosize=two"]),
        "-device isa-debug-exit: parameter 'iosize' expects a number, got 'two'"
    );
    assert_eq!(
        err(&["-device", "isa-debug-exit,iobase=0xffff,iosize=4"]),
        "-device: isa-debug-exit: ports 0xffff+4 extend past the I/O port space (0xffff)"
    );
    assert_eq!(
        err(&["-device", "isa-debug-exit,iosize=0"]),
        "-device: isa-debug-exit: iosize must be at least 1"
    );
    assert_eq!(
        err(&["-device", "pc-testdev", "-device", "pc-testdev"]),
        "-device: pc-testdev: only one instance is supported"
    );
    assert_eq!(
        err(&["-device", "pc-testdev,iobase=1"]),
        "-device pc-testdev: unknown parameter 'iobase'"
    );
    let c = run(&[
        "-device",
        "pci-testdev",
        "-device",
        "pci-testdev,addr=05.0",
        "-device",
        "pci-testdev,addr=0x1f.7",
        "-device",
        "pci-testdev,addr=a,romfile=opt.rom,membar=1M",
        "-device",
        "pci-testdev,romfile=",
    ]);
    let testdev = |addr, romfile: Option<&str>, membar| {
        DeviceConfig::PciTestdev(PciTestdevConfig {
            bus: None,
            addr,
            romfile: romfile.map(PathBuf::from),
            membar,
        })
    };
    assert_eq!(
        c.devices,
        [
            testdev(None, None, 0),
            testdev(Some((5, 0)), None, 0),
            testdev(Some((0x1f, 7)), None, 0),
            testdev(Some((0xa, 0)), Some("opt.rom"), 1 << 20),
            testdev(None, None, 0),
        ]
    );
    for bad in ["20.0", "1.8", "", "x", "1.", "123"] {
        assert!(
            err(&["-device", &format!("pci-testdev,addr={bad}")])
                .contains("Property 'addr' doesn't take value"),
            "{bad}"
        );
    }
    assert_eq!(
        err(&["-M", "microvm", "-device", "pci-testdev"]),
        "-device pci-testdev: No 'PCI' bus found for device 'pci-testdev' (-machine microvm has no PCI; use pc or q35)"
    );
    assert_eq!(
        err(&["-device", ""]),
        "-device: parameter 'driver' is missing"
    );
    assert_eq!(
        err(&["-device", "id=x"]),
        "-device: parameter 'driver' is missing"
    );
}

#[test]
fn typical_qemu_command_line() {
    let c = run(&[
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        "host",
        "-smp",
        "2",
        "-m",
        "1G",
        "-nographic",
        "-nodefaults",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        "bzImage",
        "-append",
        "console=ttyS0 panic=-1",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-name",
        "test",
    ]);
    assert_eq!(
        c,
        VmConfig {
            machine: MachineKind::Q35,
            irqchip: IrqchipMode::Kernel,
            pit: true,
            smp: SmpConfig {
                cpus: 2,
                sockets: 1,
                dies: 1,
                cores: 2,
                threads: 1,
                maxcpus: 2
            },
            memory_bytes: GIB,
            name: Some("test".into()),
            kernel: Some(PathBuf::from("bzImage")),
            initrd: Vec::new(),
            append: Some("console=ttyS0 panic=-1".into()),
            serial: SerialConfig::Stdio,
            no_reboot: true,
            devices: vec![DeviceConfig::IsaDebugExit {
                iobase: 0xf4,
                iosize: 4
            }],
            virtio: Vec::new(),
            nodefaults: true,
            ..VmConfig::default()
        }
    );
}

#[test]
fn qmp_options() {
    let c = run(&[
        "-qmp",
        "unix:/tmp/q.sock,server=on,wait=off",
        "-chardev",
        "socket,id=mon0,host=127.0.0.1,port=4444,server=on,wait=off",
        "-mon",
        "chardev=mon0,mode=control",
        "-qmp",
        "tcp:127.0.0.1:5555,server,nowait",
        "-S",
        "-pidfile",
        "/tmp/rvmm.pid",
    ]);
    let tcp = |port, label: Option<&str>| QmpConfig {
        address: QmpAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        wait: false,
        label: label.map(str::to_string),
    };
    assert_eq!(
        c.qmp,
        vec![
            QmpConfig {
                address: QmpAddress::Unix("/tmp/q.sock".into()),
                wait: false,
                label: None,
            },
            tcp(5555, None),
            tcp(4444, Some("mon0")),
        ]
    );
    assert!(c.start_paused);
    assert_eq!(c.pidfile, Some(PathBuf::from("/tmp/rvmm.pid")));
    assert!(!c.daemonize);
    assert_eq!(
        err(&["-qmp", "unix:/tmp/q"]),
        "-qmp: client mode (server=off) is not supported; rvmm only listens"
    );
    assert_eq!(
        err(&["-mon", "chardev=x,mode=control"]),
        "-mon: chardev 'x' not found"
    );
    assert_eq!(
        err(&["-daemonize"]),
        "-daemonize: -serial stdio cannot be used when rvmm detaches from the terminal"
    );
    let c = run(&["-daemonize", "-nodefaults"]);
    assert!(c.daemonize);
}

#[test]
fn bzimage_decompress_option() {
    let c = run(&["-machine", "q35,bzimage-decompress=guest"]);
    assert_eq!(c.bzimage_decompress, crate::BzImageDecompress::Guest);
    let c = run(&["-M", "bzimage-decompress=host"]);
    assert_eq!(c.bzimage_decompress, crate::BzImageDecompress::Host);
}

#[test]
fn errors_have_sources() {
    use std::error::Error as _;
    let e = parse(&["-smp", "4,foo=1"]).unwrap_err();
    assert!(e.source().is_some());
    let e = parse(&["-foo"]).unwrap_err();
    assert!(e.source().is_none());
}

#[test]
fn kernel_irqchip_modes() {
    let cfg = |args: &[&str]| match parse_args(args.iter().map(|s| s.to_string())).unwrap() {
        Action::Run(c) => c,
        other => panic!("unexpected {other:?}"),
    };
    // QEMU's defaults: in-kernel on pc and q35, split on microvm.
    assert_eq!(cfg(&[]).irqchip, IrqchipMode::Kernel);
    assert_eq!(cfg(&["-M", "q35"]).irqchip, IrqchipMode::Kernel);
    assert_eq!(cfg(&["-M", "microvm"]).irqchip, IrqchipMode::Split);
    // A machine type given after kernel-irqchip= does not override it.
    assert_eq!(
        cfg(&["-accel", "kvm,kernel-irqchip=split", "-M", "pc"]).irqchip,
        IrqchipMode::Split
    );
    assert_eq!(
        cfg(&["-M", "microvm,kernel-irqchip=on"]).irqchip,
        IrqchipMode::Kernel
    );
    assert_eq!(
        cfg(&["-machine", "q35,kernel_irqchip=split"]).irqchip,
        IrqchipMode::Split
    );
    assert_eq!(
        cfg(&["-accel", "kvm,kernel-irqchip=on"]).irqchip,
        IrqchipMode::Kernel
    );
    let err = parse_args(["-accel".to_string(), "kvm,kernel-irqchip=off".to_string()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "-accel: parameter 'kernel-irqchip': value 'off' is not supported"
    );
}

#[test]
fn fw_cfg_user_files() {
    let c = run(&[
        "-fw_cfg",
        "name=opt/a,string=hello",
        "-fw_cfg",
        "opt/b,file=/tmp/x",
    ]);
    assert_eq!(
        c.fw_cfg,
        vec![
            FwCfgFile {
                name: "opt/a".into(),
                data: FwCfgData::String("hello".into()),
            },
            FwCfgFile {
                name: "opt/b".into(),
                data: FwCfgData::File("/tmp/x".into()),
            },
        ]
    );
    assert!(!c.fw_cfg[0].outside_opt());
    let c = run(&["-fw_cfg", "name=etc/x,string=1"]);
    assert!(
        c.fw_cfg[0].outside_opt(),
        "accepted, with a warning at start-up"
    );
    let both = "-fw_cfg: invalid argument(s): give name= and one of file= or string=";
    assert_eq!(err(&["-fw_cfg", "name=opt/a,string=x,file=y"]), both);
    assert_eq!(err(&["-fw_cfg", "name=opt/a"]), both);
    assert_eq!(err(&["-fw_cfg", "string=x"]), both);
    assert_eq!(err(&["-fw_cfg", "name=opt/a,string="]), both);
    let long = format!("name=opt/{},string=x", "y".repeat(52));
    assert!(err(&["-fw_cfg", &long]).contains("too long"));
    let ok = format!("name=opt/{},string=x", "y".repeat(51));
    assert_eq!(run(&["-fw_cfg", &ok]).fw_cfg[0].name.len(), 55);
    assert!(err(&["-fw_cfg", "name=opt/a,gen_id=x"]).contains("gen_id"));
    assert!(err(&["-fw_cfg", "name=opt/a,bogus=x"]).contains("bogus"));
}

#[test]
fn machine_acpi_property() {
    assert!(run(&[]).acpi);
    assert!(!run(&["-M", "q35,acpi=off"]).acpi);
    assert!(run(&["-machine", "pc,acpi=on"]).acpi);
    assert!(run(&["-machine", "acpi=auto"]).acpi);
    assert!(err(&["-machine", "acpi=maybe"]).contains("maybe"));
}

#[test]
fn machine_pit_switch() {
    let cfg = |args: &[&str]| match parse_args(args.iter().map(|s| s.to_string())).unwrap() {
        Action::Run(c) => c,
        other => panic!("unexpected {other:?}"),
    };
    assert!(cfg(&["-M", "q35"]).pit);
    assert!(!cfg(&["-M", "q35,pit=off"]).pit);
    assert!(cfg(&["-machine", "pc,pit=on,kernel-irqchip=on"]).pit);
    let err = parse_args(["-M".to_string(), "q35,pit=maybe".to_string()]).unwrap_err();
    assert!(err.to_string().contains("pit"), "{err}");
}

#[test]
fn exit_stats() {
    assert_eq!(run(&[]).exit_stats, None);
    let table = Some(ExitStatsConfig {
        table: true,
        json: None,
    });
    assert_eq!(run(&["-exit-stats"]).exit_stats, table);
    // The optional argument is not taken from the next option.
    let c = run(&["-exit-stats", "-m", "64"]);
    assert_eq!(c.exit_stats, table);
    assert_eq!(c.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(
        run(&["-exit-stats", "json=/tmp/x.json"]).exit_stats,
        Some(ExitStatsConfig {
            table: false,
            json: Some("/tmp/x.json".into())
        })
    );
    assert_eq!(
        run(&["--exit-stats", "json=a,,b.json,table=on"]).exit_stats,
        Some(ExitStatsConfig {
            table: true,
            json: Some("a,b.json".into())
        })
    );
    assert_eq!(
        err(&["-exit-stats", "csv=x"]),
        "-exit-stats: unknown parameter 'csv'"
    );
    assert!(err(&["-exit-stats", "json="]).starts_with("-exit-stats: "));
    assert!(err(&["-exit-stats", "table=maybe"]).starts_with("-exit-stats: "));
}

/// Linux arguments are bytes: paths and -append may be any bytes; QEMU option syntax must be
/// text, and saying so names the option.
#[test]
fn arguments_that_are_not_utf8() {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
    let args = vec![
        bytes(b"-kernel"),
        bytes(b"/tmp/k\xff.elf"),
        bytes(b"-initrd"),
        bytes(b"a\xfe,b,,c"),
        bytes(b"-append"),
        bytes(b"root=/dev/vda x=\xe9"),
        bytes(b"-hda"),
        bytes(b"d\xff.img"),
        bytes(b"-pidfile"),
        bytes(b"p\xff"),
    ];
    let Action::Run(c) = parse_args(args).unwrap() else {
        panic!("not a run")
    };
    assert_eq!(c.kernel.unwrap().as_os_str().as_bytes(), b"/tmp/k\xff.elf");
    let initrds: Vec<&[u8]> = c.initrd.iter().map(|p| p.as_os_str().as_bytes()).collect();
    assert_eq!(initrds, [&b"a\xfe"[..], b"b,c"]);
    assert_eq!(c.append.unwrap(), b"root=/dev/vda x=\xe9");
    assert_eq!(c.pidfile.unwrap().as_os_str().as_bytes(), b"p\xff");
    assert!(matches!(&c.ide[0].drive, Some(d) if d.file.as_os_str().as_bytes() == b"d\xff.img"));

    // Paths inside option syntax may be any bytes too; other values must be text.
    let Action::Run(c) = parse_args(vec![
        bytes(b"-drive"),
        bytes(b"file=\xff,,x.img,if=virtio"),
        bytes(b"-fw_cfg"),
        bytes(b"name=opt/x,file=f\xfe"),
        bytes(b"-serial"),
        bytes(b"file:log\xfd"),
        bytes(b"-exit-stats"),
        bytes(b"json=s\xfc.json"),
        bytes(b"-M"),
        bytes(b"q35"),
        bytes(b"-device"),
        bytes(b"pci-testdev,romfile=r\xfb.rom"),
        bytes(b"-qmp"),
        bytes(b"unix:q\xfa.sock,server=on,wait=off"),
    ])
    .unwrap() else {
        panic!("not a run")
    };
    let bytes_of = |p: &std::path::Path| p.as_os_str().as_bytes().to_vec();
    // if=virtio on q35 is virtio-blk-pci.
    let VirtioDeviceConfig::Block(d) = &c.virtio_pci[0].device else {
        panic!("not a disk")
    };
    assert_eq!(bytes_of(&d.file), b"\xff,x.img");
    let FwCfgData::File(f) = &c.fw_cfg[0].data else {
        panic!("not a file")
    };
    assert_eq!(bytes_of(f), b"f\xfe");
    let SerialConfig::File(log) = &c.serial else {
        panic!("not a file")
    };
    assert_eq!(bytes_of(log), b"log\xfd");
    assert_eq!(
        bytes_of(&c.exit_stats.unwrap().json.unwrap()),
        b"s\xfc.json"
    );
    let DeviceConfig::PciTestdev(t) = &c.devices[0] else {
        panic!("not pci-testdev")
    };
    assert_eq!(bytes_of(t.romfile.as_deref().unwrap()), b"r\xfb.rom");
    let crate::QmpAddress::Unix(sock) = &c.qmp[0].address else {
        panic!("not a unix socket")
    };
    assert_eq!(bytes_of(sock), b"q\xfa.sock");

    let err = |args: Vec<OsString>| parse_args(args).unwrap_err().to_string();
    let e = err(vec![bytes(b"-drive"), bytes(b"file=a.img,serial=\xff")]);
    assert_eq!(
        e,
        "-drive: parameter 'serial': value '\u{fffd}' is not valid UTF-8 (only paths may be any bytes)"
    );
    let e = err(vec![bytes(b"-name"), bytes(b"\xff")]);
    assert!(
        e.starts_with("-name: argument '\u{fffd}' is not valid UTF-8"),
        "{e}"
    );
    let e = err(vec![bytes(b"-na\xffme"), bytes(b"x")]);
    assert!(
        e.contains("invalid option") && e.contains('\u{fffd}'),
        "{e}"
    );
    let e = err(vec![bytes(b"stray\xff")]);
    assert!(e.contains("stray\u{fffd}"), "{e}");
}

#[test]
fn firmware_options() {
    let c = run(&[
        "-bios",
        "my-bios.bin",
        "-L",
        "/a",
        "-L",
        "/b",
        "-boot",
        "order=dc,menu=on",
    ]);
    assert_eq!(c.firmware.bios, Some(PathBuf::from("my-bios.bin")));
    assert_eq!(
        c.firmware.data_dirs,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(c.firmware.boot.order, "dc");
    assert!(c.firmware.boot.menu);
    assert_eq!(err(&["-boot", "z"]), "-boot: Invalid boot device 'z'");
}

#[test]
fn ide_drives_follow_the_machine() {
    let c = run(&[
        "-M",
        "q35",
        "-nodefaults",
        "-hda",
        "a.qcow2",
        "-cdrom",
        "b.iso",
    ]);
    assert!(c.virtio.is_empty());
    let placed: Vec<_> = c.ide.iter().map(|d| (d.bus, d.unit, d.cdrom)).collect();
    assert_eq!(placed, [(0, 0, false), (2, 0, true)]);
    assert!(c.ide[1].drive.as_ref().unwrap().readonly);
    let c = run(&["-hda", "a.qcow2", "-cdrom", "b.iso"]);
    let placed: Vec<_> = c.ide.iter().map(|d| (d.bus, d.unit, d.cdrom)).collect();
    assert_eq!(placed, [(0, 0, false), (1, 0, true)]);
    // microvm has no IDE: -hda is virtio-blk there, -cdrom an error.
    let c = run(&["-M", "microvm", "-hda", "a.img"]);
    assert_eq!(c.virtio.len(), 1);
    assert!(err(&["-M", "microvm", "-cdrom", "b.iso"]).contains("has no IDE controller"));
    let c = run(&[
        "-drive",
        "if=none,id=c,file=b.iso,media=cdrom",
        "-device",
        "ide-cd,drive=c,bus=ide.1,bootindex=0",
        "-drive",
        "if=ide,media=cdrom",
    ]);
    let placed: Vec<_> = c
        .ide
        .iter()
        .map(|d| (d.bus, d.unit, d.drive.is_some(), d.bootindex))
        .collect();
    assert_eq!(placed, [(0, 0, false, None), (1, 0, true, Some(0))]);
}

#[test]
fn global_disable_s3_and_refusals() {
    let c = run(&["-M", "q35"]);
    assert!(c.s3_offered(), "QEMU 7.2 offers S3 on q35");
    assert!(run(&["-M", "pc"]).s3_offered());
    assert!(!run(&["-M", "microvm"]).s3_offered());
    let c = run(&["-M", "q35", "-global", "ICH9-LPC.disable_s3=1"]);
    assert!(c.globals.ich9_disable_s3 && !c.s3_offered());
    // The other chipset's property is accepted and has no effect, as in QEMU.
    assert!(run(&["-M", "q35", "-global", "PIIX4_PM.disable_s3=1"]).s3_offered());
    assert!(!run(&["-M", "pc", "-global", "PIIX4_PM.disable_s3=1"]).s3_offered());
    assert!(run(&["-M", "pc", "-global", "PIIX4_PM.disable_s3=0"]).s3_offered());
    // rvmm never offers S4: only the value that says so is accepted.
    run(&["-M", "q35", "-global", "ICH9-LPC.disable_s4=1"]);
    assert_eq!(
        err(&["-global", "ICH9-LPC.disable_s4=0"]),
        "-global ICH9-LPC.disable_s4=0: rvmm never offers ACPI S4 (suspend to disk): only disable_s4=1"
    );
    assert_eq!(
        err(&["-global", "driver=ICH9-LPC,property=disable_s3,value=1"]),
        "-global driver=ICH9-LPC,property=disable_s3,value=1: rvmm supports only ICH9-LPC.disable_s3, ICH9-LPC.disable_s4=1, PIIX4_PM.disable_s3, PIIX4_PM.disable_s4=1 and kvm-pit.lost_tick_policy=delay"
    );
    assert_eq!(
        err(&["-global", "ICH9-LPC.disable_s3=yes"]),
        "-global: parameter 'disable_s3' expects a number, got 'yes'"
    );
}

#[test]
fn incoming_takes_qemus_socket_uris() {
    use crate::IncomingConfig;
    assert_eq!(
        run(&["-incoming", "unix:/run/m.sock"]).incoming,
        Some(IncomingConfig::Unix("/run/m.sock".into()))
    );
    assert_eq!(
        run(&["-incoming", "tcp::4444"]).incoming,
        Some(IncomingConfig::Tcp(":4444".into()))
    );
    assert_eq!(
        run(&["-incoming", "tcp:[::1]:4444"]).incoming,
        Some(IncomingConfig::Tcp("[::1]:4444".into()))
    );
    for bad in ["tcp:host", "tcp:host:0", "tcp:host:x", "unix:", "fd:3"] {
        let e = err(&["-incoming", bad]);
        assert!(e.contains(&format!("'{bad}'")), "{e}");
    }
}
