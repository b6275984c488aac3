//! The table of QEMU x86 command-line options: the ones rvmm implements, with their help
//! lines, and the ones it recognises only to refuse by name.

/// An option rvmm implements.
pub(crate) struct SupportedOption {
    /// Spellings without the leading dash; the first is the canonical one.
    pub names: &'static [&'static str],
    /// Argument syntax for the help text; `None` for flags.
    pub arg: Option<&'static str>,
    pub help: &'static str,
}

/// Options rvmm implements, in help-text order.
pub(crate) const SUPPORTED: &[SupportedOption] = &[
    SupportedOption {
        names: &["help", "h"],
        arg: None,
        help: "display this help and exit",
    },
    SupportedOption {
        names: &["version"],
        arg: None,
        help: "display version information and exit",
    },
    SupportedOption {
        names: &["machine", "M"],
        arg: Some("[type=]pc|q35|microvm|none[,accel=kvm][,kernel-irqchip=on|split][,pit=on|off][,acpi=on|off][,graphics=on|off][,bzimage-decompress=host|guest]"),
        help: "select the machine (default pc; pc-i440fx-X.Y and pc-q35-X.Y also accepted; none: QMP only, no guest)",
    },
    SupportedOption {
        names: &["accel"],
        arg: Some("kvm"),
        help: "select the accelerator (only kvm)",
    },
    SupportedOption {
        names: &["enable-kvm"],
        arg: None,
        help: "use KVM (always on in rvmm)",
    },
    SupportedOption {
        names: &["cpu"],
        arg: Some("host|max[,+feat][,-feat][,feat=on|off][,prop=value...]"),
        help: "CPU model and features (-cpu help lists them; docs/CPU.md)",
    },
    SupportedOption {
        names: &["smp"],
        arg: Some("[cpus=]n[,sockets=,dies=,cores=,threads=,maxcpus=]"),
        help: "number of vCPUs and their topology",
    },
    SupportedOption {
        names: &["m"],
        arg: Some("[size=]n[B|K|M|G|T]"),
        help: "guest RAM (default 128M; a bare number is MiB)",
    },
    SupportedOption {
        names: &["name"],
        arg: Some("[guest=]string"),
        help: "name of the guest",
    },
    SupportedOption {
        names: &["kernel"],
        arg: Some("file"),
        help: "boot this kernel (bzImage, ELF vmlinux, PVH or multiboot)",
    },
    SupportedOption {
        names: &["initrd"],
        arg: Some("file[,file...]"),
        help: "initial ramdisk, or multiboot modules separated by ',' (',,' is a literal comma)",
    },
    SupportedOption {
        names: &["append"],
        arg: Some("cmdline"),
        help: "kernel command line",
    },
    SupportedOption {
        names: &["bios"],
        arg: Some("file"),
        help: "PC firmware image (default bios-256k.bin, SeaBIOS; pc and q35 without -kernel)",
    },
    SupportedOption {
        names: &["L"],
        arg: Some("path"),
        help: "directory searched first for firmware images",
    },
    SupportedOption {
        names: &["boot"],
        arg: Some("[order=]drives][,once=drives][,menu=on|off][,splash-time=ms][,reboot-timeout=ms][,strict=on|off]"),
        help: "firmware boot order: c disk, d CD-ROM, a floppy, n network (default cad)",
    },
    SupportedOption {
        names: &["nographic"],
        arg: None,
        help: "no display (no default VNC server; COM1 on stdio)",
    },
    SupportedOption {
        names: &["display"],
        arg: Some("none|vnc=[host]:N[,...]"),
        help: "display backend; without -display, -nographic or -vnc: VNC on localhost:5900+",
    },
    SupportedOption {
        names: &["vnc"],
        arg: Some("[host]:N|unix:path|none[,password=on][,to=L]"),
        help: "VNC server on port 5900+N (host defaults to 127.0.0.1)",
    },
    SupportedOption {
        names: &["serial"],
        arg: Some("stdio|mon:stdio|none|null|file:path"),
        help: "COM1 backend (default stdio; none with -nodefaults)",
    },
    SupportedOption {
        names: &["vga"],
        arg: Some("std|none"),
        help: "display device (default std on pc and q35: QEMU's standard VGA)",
    },
    SupportedOption {
        names: &["nodefaults"],
        arg: None,
        help: "create no default devices (no COM1 unless -serial)",
    },
    SupportedOption {
        names: &["no-user-config"],
        arg: None,
        help: "accepted for QEMU compatibility: rvmm reads no configuration files",
    },
    SupportedOption {
        names: &["no-reboot"],
        arg: None,
        help: "exit instead of rebooting the guest",
    },
    SupportedOption {
        names: &["global"],
        arg: Some("ICH9-LPC.disable_s3=1|PIIX4_PM.disable_s3=1"),
        help: "withdraw ACPI S3 (suspend to RAM) from the guest (q35|pc)",
    },
    SupportedOption {
        names: &["snapshot"],
        arg: None,
        help: "write to temporary overlays, never to the disk images (snapshot=on on every drive)",
    },
    SupportedOption {
        names: &["smbios"],
        arg: Some("type=0|1|2|3|4|11|17[,field=value...]"),
        help: "SMBIOS fields the firmware publishes (QEMU's fields; pc and q35 firmware boot)",
    },
    SupportedOption {
        names: &["uuid"],
        arg: Some("%08x-%04x-%04x-%04x-%012x"),
        help: "machine UUID (SMBIOS type 1)",
    },
    SupportedOption {
        names: &["fw_cfg"],
        arg: Some("[name=]opt/NAME,file=PATH|string=STR"),
        help: "add a file to the fw_cfg device (names should start with opt/)",
    },
    SupportedOption {
        names: &["device"],
        arg: Some("driver[,prop=value...]"),
        help: "add a device (see the list below; -device help)",
    },
    SupportedOption {
        names: &["drive"],
        arg: Some("file=F[,format=raw|qcow2][,if=none|ide|virtio][,index=N][,media=disk|cdrom][,id=][,readonly=on][,cache=none][,snapshot=on][,file.locking=on|off|auto]"),
        help: "disk or CD image; without if= it is IDE on pc/q35 (AHCI on q35) and virtio-blk on microvm; if=none pairs it with -device ide-hd|ide-cd|virtio-blk-device,drive=ID",
    },
    SupportedOption {
        names: &["hda"],
        arg: Some("file"),
        help: "disk image as IDE index 0 (pc: primary master; q35: AHCI port 0; microvm: virtio-blk)",
    },
    SupportedOption {
        names: &["hdb"],
        arg: Some("file"),
        help: "disk image as IDE index 1",
    },
    SupportedOption {
        names: &["hdc"],
        arg: Some("file"),
        help: "disk image as IDE index 2",
    },
    SupportedOption {
        names: &["hdd"],
        arg: Some("file"),
        help: "disk image as IDE index 3",
    },
    SupportedOption {
        names: &["cdrom"],
        arg: Some("file"),
        help: "CD-ROM image as IDE index 2 (pc: secondary master; q35: AHCI port 2)",
    },
    SupportedOption {
        names: &["netdev"],
        arg: Some("user|stream|tap,id=ID,..."),
        help: "network backend for -device virtio-net-device,netdev=ID (see docs/NETWORKING.md)",
    },
    SupportedOption {
        names: &["nic"],
        arg: Some("none|user|stream|tap[,model=virtio][,mac=][,...]"),
        help: "a virtio-net NIC and its backend (-nic none: no default NIC)",
    },
    SupportedOption {
        names: &["net"],
        arg: Some("nic[,macaddr=]|user|stream|tap[,...]"),
        help: "legacy form: one -net nic connected to one -net backend",
    },
    SupportedOption {
        names: &["object"],
        arg: Some("rng-random,id=ID[,filename=/dev/urandom]"),
        help: "entropy backend for -device virtio-rng-device,rng=ID (rvmm uses getrandom)",
    },
    SupportedOption {
        names: &["qmp"],
        arg: Some("unix:path|tcp:host:port,server=on[,wait=off]"),
        help: "QMP monitor on a listening socket (also 'server,nowait')",
    },
    SupportedOption {
        names: &["chardev"],
        arg: Some("socket,id=id,path=p|host=h,port=n,server=on[,wait=off]"),
        help: "socket for a QMP monitor (with -mon)",
    },
    SupportedOption {
        names: &["mon"],
        arg: Some("[chardev=]id,mode=control"),
        help: "QMP monitor on a -chardev socket",
    },
    SupportedOption {
        names: &["S"],
        arg: None,
        help: "start with the vCPUs stopped (QMP 'cont' starts them)",
    },
    SupportedOption {
        names: &["incoming"],
        arg: Some("file:path|exec:cmd|defer"),
        help: "restore a snapshot QMP 'migrate' wrote (docs/SNAPSHOT.md); defer waits for 'migrate-incoming'",
    },
    SupportedOption {
        names: &["pidfile"],
        arg: Some("file"),
        help: "write the process id to file (removed at exit)",
    },
    SupportedOption {
        names: &["daemonize"],
        arg: None,
        help: "detach from the terminal once the VM is set up",
    },
    SupportedOption {
        names: &["sandbox"],
        arg: Some("on|off[,spawn=allow|deny][,log=on|off][,obsolete=,elevateprivileges=,resourcecontrol=]"),
        help: "per-thread seccomp filters and Landlock (default on; docs/SANDBOX.md)",
    },
    SupportedOption {
        names: &["blockdev"],
        arg: Some("driver=file|host_device,node-name=N,filename=F|driver=raw|qcow2,node-name=N,file=NODE[,read-only=on][,cache.direct=on]"),
        help: "a block node; -device ...,drive=NODE attaches the top one (JSON syntax too)",
    },
    SupportedOption {
        names: &["add-fd"],
        arg: Some("fd=N,set=S[,opaque=text]"),
        help: "put inherited descriptor N into set S; the path /dev/fdset/S opens it",
    },
    SupportedOption {
        names: &["no-shutdown"],
        arg: None,
        help: "a guest power-off stops the VM (QMP SHUTDOWN) instead of exiting; QMP quit ends",
    },
    SupportedOption {
        names: &["no-acpi"],
        arg: None,
        help: "no ACPI tables (-machine acpi=off)",
    },
    SupportedOption {
        names: &["no-hpet"],
        arg: None,
        help: "no HPET (rvmm's machines never have one)",
    },
    SupportedOption {
        names: &["overcommit"],
        arg: Some("mem-lock=on|off"),
        help: "mem-lock=on locks all of rvmm's memory, guest RAM included (mlockall)",
    },
    SupportedOption {
        names: &["rtc"],
        arg: Some("base=utc[,clock=host][,driftfix=none|slew]"),
        help: "the CMOS RTC (always the host's UTC clock)",
    },
    SupportedOption {
        names: &["msg"],
        arg: Some("timestamp=on|off"),
        help: "start error and warning lines with a UTC timestamp",
    },
    SupportedOption {
        names: &["audiodev"],
        arg: Some("[driver=]none,id=ID"),
        help: "a sound back-end (only none: rvmm has no sound devices)",
    },
    SupportedOption {
        names: &["exit-stats"],
        arg: Some("[json=FILE][,table=on|off]"),
        help: "count exits per vCPU, kind and device; table on stderr at exit, or JSON to FILE",
    },
];

/// Options whose argument may be left out (rvmm extensions): the next word is taken as the
/// argument only if it does not start with '-'.
pub(crate) const OPTIONAL_ARG: &[&str] = &["exit-stats"];

/// QEMU x86 options rvmm does not implement: `(name, takes an argument)`.
#[rustfmt::skip]
pub(crate) const UNSUPPORTED: &[(&str, bool)] = &[
    ("acpitable", true), ("action", true), ("alt-grab", false),
    ("async-teardown", false), ("audio", true),
    ("chroot", true),
    ("compat", true), ("ctrl-grab", false), ("curses", false), ("D", true), ("d", true),
    ("debugcon", true), ("dtb", true),
    ("dump-vmstate", true), ("echr", true), ("enable-fips", false),
    ("enable-sync-profile", false), ("fda", true), ("fdb", true), ("fsdev", true),
    ("full-screen", false), ("g", true), ("gdb", true),
     ("icount", true),
    ("iscsi", true), ("k", true),  ("loadvm", true),
    ("mem-path", true), ("mem-prealloc", false), ("monitor", true),
    ("mtdblock", true),
    ("no-fd-bootchk", false), ("no-quit", false),
    ("numa", true),
    ("only-migratable", false), ("option-rom", true),
    ("parallel", true), ("pflash", true), ("plugin", true),
    ("portrait", false), ("preconfig", false), ("qmp-pretty", true),
    ("qtest", true), ("qtest-log", true), ("readconfig", true), ("rotate", true),
    ("run-with", true), ("runas", true), ("s", false),
    ("sd", true), ("sdl", false), ("seed", true), ("set", true),
    ("show-cursor", false), ("singlestep", false),
    ("soundhw", true), ("spice", true), ("tpmdev", true), ("trace", true), ("usb", false),
    ("usbdevice", true), ("virtfs", true),
    ("watchdog", true), ("watchdog-action", true), ("win2k-hack", false),
    ("xen-attach", false), ("xen-domid", true),
];

/// What the command line names: an implemented option (by canonical name) or a refused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptionKind {
    /// Canonical name without the dash.
    pub name: &'static str,
    pub takes_arg: bool,
    pub supported: bool,
}

/// Looks an option name (without dashes) up in both tables.
pub(crate) fn lookup(name: &str) -> Option<OptionKind> {
    if let Some(opt) = SUPPORTED.iter().find(|o| o.names.contains(&name)) {
        return Some(OptionKind {
            name: opt.names[0],
            takes_arg: opt.arg.is_some(),
            supported: true,
        });
    }
    UNSUPPORTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(name, takes_arg)| OptionKind {
            name,
            takes_arg,
            supported: false,
        })
}

/// Usage text listing every implemented option with a one-line explanation.
pub fn help_text() -> String {
    let mut out = String::from(
        "usage: rvmm [options]\n\n\
         rvmm is a virtual machine monitor with a QEMU-compatible command line; it always uses KVM.\n\
         An option's argument is the next word; '--opt' is the same as '-opt'.\n\
         Arguments of the form key=value,... follow QEMU's syntax (',,' is a literal comma).\n\n\
         Options:\n",
    );
    for opt in SUPPORTED {
        let names: Vec<String> = opt.names.iter().map(|n| format!("-{n}")).collect();
        let mut left = names.join(", ");
        if let Some(arg) = opt.arg {
            left.push(' ');
            left.push_str(arg);
        }
        if left.len() > 30 {
            out.push_str(&format!("  {left}\n  {:30}  {}\n", "", opt.help));
        } else {
            out.push_str(&format!("  {left:30}  {}\n", opt.help));
        }
    }
    out.push_str(
        "\nMachines (-machine): pc (default), q35, microvm\n\
         CPU models (-cpu): host, max (both start from every feature KVM offers)\n\
         Devices (-device; `-device help` lists them all, `-device TYPE,help` their properties):\n  \
         isa-debug-exit[,iobase=0x501][,iosize=2]  writing v to iobase exits with status (v << 1) | 1\n  \
         pc-testdev                                test device used by kvm-unit-tests\n  \
         pci-testdev[,addr=SLOT[.FN]][,romfile=F][,membar=SIZE]\n  \
         \x20                                         QEMU's PCI test device (pc, q35)\n  \
         virtio-blk-device,drive=ID[,share-rw=on]  virtio-blk over virtio-mmio (raw or qcow2)\n  \
         virtio-net-device,netdev=ID[,mac=]        virtio-net on a -netdev backend\n  \
         virtio-rng-device[,rng=ID]                virtio-rng fed by the host's getrandom\n\
         virtio-mmio devices sit at 0xfeb00000 + 512 * n on microvm (QEMU's layout), 0xfef00000 + 512 * n\n\
         on pc and q35 (outside the PCI window); without ACPI they are added to the\n\
         kernel command line as virtio_mmio.device=512@ADDR:IRQ. -hda and -drive without if=none\n\
         are virtio-blk devices (rvmm has no IDE/SCSI).\n\
         \nOther QEMU options are recognised and refused as not supported.\n",
    );
    out
}

/// The canonical names of the implemented options that take an argument, as QEMU's
/// `query-command-line-options` lists its option groups.
pub fn option_names() -> Vec<&'static str> {
    SUPPORTED
        .iter()
        .filter(|o| o.arg.is_some())
        .map(|o| o.names[0])
        .collect()
}

/// One-line version banner.
pub fn version_text() -> String {
    format!(
        "rvmm version {} (QEMU-compatible command line, KVM only)",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_no_duplicates_or_overlap() {
        let mut all: Vec<&str> = SUPPORTED
            .iter()
            .flat_map(|o| o.names.iter().copied())
            .collect();
        all.extend(UNSUPPORTED.iter().map(|(n, _)| *n));
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "an option name is listed twice");
        assert!(all.iter().all(|n| !n.starts_with('-') && !n.is_empty()));
    }

    #[test]
    fn lookup_finds_aliases_and_refused_options() {
        assert_eq!(
            lookup("M"),
            Some(OptionKind {
                name: "machine",
                takes_arg: true,
                supported: true
            })
        );
        assert_eq!(
            lookup("h"),
            Some(OptionKind {
                name: "help",
                takes_arg: false,
                supported: true
            })
        );
        assert_eq!(
            lookup("spice"),
            Some(OptionKind {
                name: "spice",
                takes_arg: true,
                supported: false
            })
        );
        assert_eq!(
            lookup("s"),
            Some(OptionKind {
                name: "s",
                takes_arg: false,
                supported: false
            })
        );
        assert_eq!(lookup("foo"), None);
        assert_eq!(lookup("m=512"), None);
        assert_eq!(lookup(""), None);
    }

    #[test]
    fn help_lists_every_supported_option() {
        let help = help_text();
        assert!(help.starts_with("usage: rvmm"));
        for opt in SUPPORTED {
            for name in opt.names {
                assert!(
                    help.contains(&format!("-{name}")),
                    "-{name} missing from help"
                );
            }
            assert!(help.contains(opt.help));
        }
        assert!(help.contains("isa-debug-exit"));
        assert!(help.contains("pc-testdev"));
    }

    #[test]
    fn version_banner() {
        let v = version_text();
        assert!(v.starts_with("rvmm version "));
        assert!(v.contains(env!("CARGO_PKG_VERSION")));
        assert!(v.contains("KVM only"));
    }
}
