//! rvmm-cli: QEMU-compatible command line -> [`VmConfig`].
//!
//! Like QEMU's `qemu_init`, parsing runs in two passes: the first checks every option name
//! and argument presence (so `-foo` is reported before any semantic error), the second
//! interprets the options in order. Options QEMU has but rvmm lacks are refused by name.

mod blockdev;
mod boot;
mod config;
mod cpu;
mod display;
mod ide;
mod json;
pub mod monitor;
mod netdev;
mod options;
pub mod opts;
mod process;
pub mod qdev;
pub mod sandbox;
pub mod size;
mod smbios;
mod smp;
mod virtio;
mod virtio_pci;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use thiserror::Error;

pub use blockdev::BlockdevError;
pub use boot::{boot_nibble, BootConfig, BootError, FirmwareConfig, DEFAULT_BOOT_ORDER};
pub use config::{
    check_memory_size, BzImageDecompress, ConfigError, DeviceConfig, DisplayDeviceConfig,
    DisplayModel, ExitStatsConfig, FwCfgData, FwCfgFile, GlobalProps, IncomingConfig, IrqchipMode,
    MachineKind, PciTestdevConfig, PcieRootPortConfig, SerialConfig, SmpConfig, VmConfig,
    XhciConfig, DEFAULT_MEMORY_BYTES, MAX_MEMORY_BYTES, MEMORY_ALIGNMENT, MIN_MEMORY_BYTES,
};
pub use cpu::{cpu_help_text, cpu_properties, CpuArgError, PropError};
pub use display::{DisplayArgError, VncConfig, VncListen, VNC_BASE_PORT};
pub use ide::{ide_layout, IdeDriveConfig, IdeError};
pub use json::JsonArgError;
pub use monitor::{MonitorError, QmpAddress, QmpConfig};
pub use netdev::{
    HostFwd, NetBackendConfig, NetdevError, StreamAddr, StreamConfig, TapConfig, UserNetConfig,
};
pub use options::{help_text, option_names, version_text};
pub use opts::{OptsError, QemuOpts};
pub use process::{MemoryBackend, ProcessArgError, ProcessConfig};
pub use sandbox::{SandboxArgError, SandboxConfig};
pub use size::SizeError;
pub use smbios::{parse_uuid, SmbiosArgError};
pub use smp::{SmpArgs, SmpError};
pub use virtio::{
    BalloonConfig, DriveConfig, InputKind, VirtioArgError, VirtioDeviceConfig,
    VirtioPciDeviceConfig, VirtioPciOptions,
};

use options::OptionKind;
use size::{parse_size, MIB};

/// What the command line asks rvmm to do.
// Built once per process; boxing the config would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run(VmConfig),
    Version,
    Help,
    /// `-cpu help`: list the CPU models and feature names.
    CpuHelp,
    /// `-device help` or `-device TYPE,help`: this text.
    DeviceHelp(String),
}

/// A command-line error; `main` prints it after `rvmm: `.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CliError {
    #[error("{0}: invalid option")]
    InvalidOption(String),
    #[error("{0} requires an argument")]
    MissingArgument(String),
    #[error("{0} is not supported")]
    UnsupportedOption(String),
    #[error("-global {0}: rvmm supports only ICH9-LPC.disable_s3, ICH9-LPC.disable_s4=1, PIIX4_PM.disable_s3, PIIX4_PM.disable_s4=1 and kvm-pit.lost_tick_policy=delay")]
    UnsupportedGlobal(String),
    #[error("'{0}': disk image arguments are not supported (boot a kernel with -kernel)")]
    Positional(String),
    #[error("{option}: {source}")]
    Opts {
        option: String,
        #[source]
        source: OptsError,
    },
    #[error("{option}: {source}")]
    Size {
        option: &'static str,
        #[source]
        source: SizeError,
    },
    #[error("{option}: {source}")]
    Config {
        option: &'static str,
        #[source]
        source: ConfigError,
    },
    #[error("-incoming {0}")]
    Incoming(String),
    #[error("-smp: {0}")]
    Smp(#[source] SmpError),
    #[error("-machine: machine type '{0}' is not supported (supported: pc, q35, microvm)")]
    Machine(String),
    #[error("{option}: accelerator '{name}' is not supported (rvmm only supports kvm)")]
    Accelerator { option: &'static str, name: String },
    #[error("-cpu: {0}")]
    Cpu(#[from] CpuArgError),
    #[error("-display: {0}")]
    Display(#[source] DisplayArgError),
    #[error("-vnc: {0}")]
    Vnc(#[source] DisplayArgError),
    #[error("-serial: backend '{0}' is not supported (supported: stdio, mon:stdio, none, null, file:PATH)")]
    SerialBackend(String),
    #[error("-serial: only one serial port (COM1) is supported")]
    SerialCount,
    #[error("-serial: file: needs a path")]
    SerialPath,
    #[error("-device {0}: device is not supported (-device help lists rvmm's devices)")]
    Device(String),
    #[error("-device: Property 'addr' doesn't take value '{0}' (expected SLOT[.FUNCTION], hex, slot < 0x20, function < 8)")]
    PciAddr(String),
    #[error("-device qemu-xhci: Parameter '{key}' expects uint32_t, not '{value}'")]
    XhciPorts { key: String, value: String },
    #[error("-vga {0}: not supported (supported: std, none)")]
    Vga(String),
    #[error("-device: parameter 'driver' is missing")]
    DeviceDriverMissing,
    #[error("-initrd: empty file name in '{0}'")]
    InitrdEmpty(String),
    #[error("-fw_cfg: invalid argument(s): give name= and one of file= or string=")]
    FwCfgArguments,
    #[error("-fw_cfg: name '{0}' too long (max. 55 char)")]
    FwCfgNameTooLong(String),
    #[error("{0}")]
    Invalid(#[source] ConfigError),
    #[error("-boot: {0}")]
    Boot(#[source] BootError),
    #[error("-smbios: {0}")]
    Smbios(#[source] SmbiosArgError),
    #[error("-uuid: {0}")]
    Uuid(#[source] SmbiosArgError),
    #[error(transparent)]
    Virtio(#[from] VirtioArgError),
    #[error("{option}: {source}")]
    Monitor {
        option: &'static str,
        #[source]
        source: MonitorError,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxArgError),
    #[error("-daemonize: -serial stdio cannot be used when rvmm detaches from the terminal")]
    DaemonizeStdio,
    #[error(transparent)]
    Json(#[from] JsonArgError),
    #[error(transparent)]
    Blockdev(#[from] BlockdevError),
    #[error(transparent)]
    Process(#[from] ProcessArgError),
    #[error("-global {0}: rvmm never offers ACPI S4 (suspend to disk): only disable_s4=1")]
    GlobalS4(String),
    #[error("-device: Duplicate device ID '{0}'")]
    DuplicateDeviceId(String),
    #[error("-device isa-serial: {0}")]
    IsaSerial(&'static str),
    #[error(
        "-device {driver}: Bus '{bus}' not found (rvmm's buses: pcie.0 on q35, pci.0 on pc, isa.0, and the ids of the pcie-root-ports before it)"
    )]
    PciBus { driver: String, bus: String },
    #[error("{option}: argument '{lossy}' is not valid UTF-8; this option's syntax is text (only paths may be any bytes, and -append passes bytes)")]
    NotText { option: String, lossy: String },
}

/// One command-line item after the first pass. Arguments stay `OsString`: on Linux they are
/// bytes, and paths and `-append` may be any bytes.
enum Item {
    Opt {
        kind: OptionKind,
        arg: Option<OsString>,
    },
    Positional(OsString),
}

/// Options whose argument is used as bytes (a path, or the kernel command line): everything else
/// is QEMU option syntax and must be text.
const BYTE_ARGS: &[&str] = &[
    "kernel",
    "initrd",
    "append",
    "pidfile",
    "hda",
    "hdb",
    "hdc",
    "hdd",
    "cdrom",
    "drive",
    "fw_cfg",
    "device",
    "serial",
    "exit-stats",
    "qmp",
    "chardev",
    "bios",
    "L",
];

/// First pass: split argv into options with their arguments, rejecting unknown names and
/// missing arguments.
fn tokenize(args: impl IntoIterator<Item = OsString>) -> Result<Vec<Item>, CliError> {
    let mut items = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(stripped) = arg.as_bytes().strip_prefix(b"-") else {
            items.push(Item::Positional(arg));
            continue;
        };
        // QEMU accepts "--opt" as "-opt".
        let name = stripped.strip_prefix(b"-").unwrap_or(stripped);
        let name = std::str::from_utf8(name)
            .map_err(|_| CliError::InvalidOption(arg.to_string_lossy().into_owned()))?;
        let kind =
            options::lookup(name).ok_or_else(|| CliError::InvalidOption(format!("-{name}")))?;
        let arg = if options::OPTIONAL_ARG.contains(&kind.name) {
            // The next word is the argument unless it is the next option.
            args.next_if(|next| !next.as_bytes().starts_with(b"-"))
        } else if kind.takes_arg {
            let value = args
                .next()
                .ok_or_else(|| CliError::MissingArgument(format!("-{}", kind.name)))?;
            Some(value)
        } else {
            None
        };
        items.push(Item::Opt { kind, arg });
    }
    Ok(items)
}

/// Options whose meaning depends on the whole command line, resolved after the second pass.
#[derive(Default)]
struct Pending {
    config: VmConfig,
    smp: SmpArgs,
    serial: Option<SerialConfig>,
    /// `-vga std` (true) or `-vga none` (false), if given.
    vga: Option<bool>,
    virtio: virtio::VirtioArgs,
    monitors: monitor::Monitors,
    display: display::DisplayArgs,
    /// `kernel-irqchip=` as given (-machine or -accel); else the machine type's default.
    irqchip: Option<IrqchipMode>,
    /// COM1 is a chardev's (`-serial chardev:ID` or `-device isa-serial,chardev=ID`).
    serial_chardev: bool,
    /// `-object secret|memory-backend-*`.
    objects: process::Objects,
    /// `-blockdev` nodes and `-add-fd` descriptor sets.
    blocks: blockdev::BlockNodes,
    fdsets: blockdev::FdSets,
}

fn monitor_err(option: &'static str) -> impl FnOnce(MonitorError) -> CliError {
    move |source| CliError::Monitor { option, source }
}

/// Parses QEMU-style arguments (without argv[0]), as the bytes Linux gives a process.
pub fn parse_args<I, S>(args: I) -> Result<Action, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut state = Pending::default();
    let items = tokenize(args.into_iter().map(Into::into))?;
    // -snapshot changes the default of every drive, those before it included.
    state.virtio.snapshot = items
        .iter()
        .any(|i| matches!(i, Item::Opt { kind, .. } if kind.name == "snapshot"));
    for item in items {
        let (kind, arg) = match item {
            Item::Positional(p) => return Err(CliError::Positional(p.to_string_lossy().into())),
            Item::Opt { kind, arg } => (kind, arg.unwrap_or_default()),
        };
        if !kind.supported {
            return Err(CliError::UnsupportedOption(format!("-{}", kind.name)));
        }
        let arg = match json::JSON_OPTIONS.iter().find(|n| **n == kind.name) {
            Some(option) if json::is_json(arg.as_bytes()) => {
                let text = arg.to_str().ok_or_else(|| CliError::NotText {
                    option: format!("-{}", kind.name),
                    lossy: arg.to_string_lossy().into_owned(),
                })?;
                OsString::from(json::to_opts(option, text)?)
            }
            _ => arg,
        };
        let action = if BYTE_ARGS.contains(&kind.name) {
            state.apply_bytes(kind.name, &arg)?
        } else {
            let text = arg.to_str().ok_or_else(|| CliError::NotText {
                option: format!("-{}", kind.name),
                lossy: arg.to_string_lossy().into_owned(),
            })?;
            state.apply(kind.name, text)?
        };
        if let Some(action) = action {
            return Ok(action);
        }
    }
    state.finish().map(Action::Run)
}

/// `-global DRIVER.PROP=VALUE` for the properties in [`GlobalProps`]; QEMU's uint8 value.
fn global(globals: &mut GlobalProps, arg: &str) -> Result<(), CliError> {
    let unsupported = || CliError::UnsupportedGlobal(arg.to_string());
    let (target, value) = arg.split_once('=').ok_or_else(unsupported)?;
    let field = match target {
        "ICH9-LPC.disable_s3" => &mut globals.ich9_disable_s3,
        "PIIX4_PM.disable_s3" => &mut globals.piix4_disable_s3,
        // rvmm's DSDT has no \_S4: only the value that keeps it so.
        "ICH9-LPC.disable_s4" | "PIIX4_PM.disable_s4" => {
            return match value {
                "1" => Ok(()),
                _ => Err(CliError::GlobalS4(arg.to_string())),
            }
        }
        // KVM's in-kernel PIT re-injects lost ticks (QEMU's delay, its default with KVM).
        "kvm-pit.lost_tick_policy" if value == "delay" => return Ok(()),
        _ => return Err(unsupported()),
    };
    let n: u8 = value.parse().map_err(|_| CliError::Opts {
        option: "-global".into(),
        source: OptsError::InvalidNumber {
            key: "disable_s3".into(),
            value: value.into(),
        },
    })?;
    *field = n != 0;
    Ok(())
}

/// Wraps a QemuOpts error with the option it came from.
fn opts_err(option: &str) -> impl FnOnce(OptsError) -> CliError + '_ {
    move |source| CliError::Opts {
        option: option.to_string(),
        source,
    }
}

impl Pending {
    /// Second pass for an option whose argument is bytes (see [`BYTE_ARGS`]).
    fn apply_bytes(&mut self, name: &str, arg: &OsStr) -> Result<Option<Action>, CliError> {
        let c = &mut self.config;
        match name {
            "kernel" => c.kernel = Some(PathBuf::from(arg)),
            "initrd" => c.initrd = split_initrd(arg)?,
            "append" => c.append = Some(arg.as_bytes().to_vec()),
            "pidfile" => c.pidfile = Some(PathBuf::from(arg)),
            "hda" => self.virtio.hdx(0, PathBuf::from(arg), false),
            "hdb" => self.virtio.hdx(1, PathBuf::from(arg), false),
            "hdc" => self.virtio.hdx(2, PathBuf::from(arg), false),
            "hdd" => self.virtio.hdx(3, PathBuf::from(arg), false),
            "cdrom" => self.virtio.hdx(2, PathBuf::from(arg), true),
            // Option syntax with one path in it: the path may be any bytes, the rest is text.
            "drive" => self.virtio.drive(arg)?,
            "fw_cfg" => c.fw_cfg.push(fw_cfg(arg)?),
            "device" => return self.device(arg),
            "serial" => return self.serial(arg),
            "exit-stats" => c.exit_stats = Some(exit_stats(arg)?),
            "qmp" => c
                .qmp
                .push(monitor::parse_qmp(arg).map_err(monitor_err("-qmp"))?),
            "bios" => c.firmware.bios = Some(PathBuf::from(arg)),
            "L" => c.firmware.data_dirs.push(PathBuf::from(arg)),
            "chardev" => self
                .monitors
                .add_chardev(arg)
                .map_err(monitor_err("-chardev"))?,
            _ => return Err(CliError::UnsupportedOption(format!("-{name}"))),
        }
        Ok(None)
    }

    /// Second pass for one option; returns an action that ends parsing (help, version).
    fn apply(&mut self, name: &str, arg: &str) -> Result<Option<Action>, CliError> {
        let c = &mut self.config;
        match name {
            "help" => return Ok(Some(Action::Help)),
            "version" => return Ok(Some(Action::Version)),
            "machine" => return self.machine(arg),
            "accel" => return accel(&mut self.irqchip, arg),
            "cpu" => match cpu::parse_cpu(arg)? {
                cpu::CpuArg::Help => return Ok(Some(Action::CpuHelp)),
                cpu::CpuArg::Config(cpu) => c.cpu = *cpu,
            },
            "display" => {
                if self.display.display(arg).map_err(CliError::Display)? {
                    return Ok(Some(Action::Help));
                }
            }
            "vnc" => self.display.vnc(arg).map_err(CliError::Vnc)?,
            "nographic" => self.display.nographic(),
            "vga" => {
                self.vga = match Some(arg) {
                    Some("std") => Some(true),
                    Some("none") => Some(false),
                    Some("help") => return Ok(Some(Action::Help)),
                    _ => {
                        return Err(CliError::Vga(arg.to_string()));
                    }
                }
            }
            "object" => self.object(arg)?,
            "netdev" | "nic" | "net" => self.virtio.option(name, arg)?,
            "blockdev" => self.blocks.add(arg, &self.fdsets)?,
            "add-fd" => self.fdsets.add(arg)?,
            "no-shutdown" => c.process.no_shutdown = true,
            "no-acpi" => c.acpi = false,
            // rvmm's machines have no HPET.
            "no-hpet" => {}
            "overcommit" => c.process.mem_lock = process::overcommit(arg)?,
            "rtc" => process::rtc(arg)?,
            "msg" => c.process.msg_timestamp = process::msg(arg)?,
            "audiodev" => process::audiodev(arg)?,
            // rvmm always runs on KVM.
            "enable-kvm" => {}
            "smp" => {
                let opts = QemuOpts::parse(arg, Some("cpus")).map_err(opts_err("-smp"))?;
                self.smp.merge(&opts).map_err(opts_err("-smp"))?;
            }
            "m" => c.memory_bytes = memory(arg)?,
            "name" => {
                let opts = QemuOpts::parse(arg, Some("guest")).map_err(opts_err("-name"))?;
                opts.check_unsupported(&["process"])
                    .and_then(|()| opts.check_known(&["guest", "debug-threads"]))
                    .map_err(opts_err("-name"))?;
                c.name = opts.get("guest").map(str::to_string);
                if let Some(on) = opts.get_bool("debug-threads").map_err(opts_err("-name"))? {
                    c.process.debug_threads = on;
                }
            }
            "nodefaults" => c.nodefaults = true,
            // rvmm reads no configuration files, so there are none to skip.
            "no-user-config" => {}
            "boot" => boot::parse_boot(&mut c.firmware.boot, arg).map_err(CliError::Boot)?,
            "no-reboot" => c.no_reboot = true,
            "global" => global(&mut c.globals, arg)?,
            // Applied to the drives before the rest (parse_args).
            "snapshot" => {}
            "smbios" => smbios::parse_smbios(&mut c.smbios, arg).map_err(CliError::Smbios)?,
            "uuid" => smbios::parse_uuid_option(&mut c.smbios, arg).map_err(CliError::Uuid)?,
            "mon" => self.monitors.add_mon(arg).map_err(monitor_err("-mon"))?,
            "S" => c.start_paused = true,
            "incoming" => c.incoming = Some(incoming(arg)?),
            "daemonize" => c.daemonize = true,
            "sandbox" => c.sandbox = sandbox::parse_sandbox(arg)?,
            _ => return Err(CliError::UnsupportedOption(format!("-{name}"))),
        }
        Ok(None)
    }

    /// `-machine [type=]name[,accel=kvm][,kernel=,initrd=,append=]`.
    fn machine(&mut self, arg: &str) -> Result<Option<Action>, CliError> {
        let opts = QemuOpts::parse(arg, Some("type")).map_err(opts_err("-machine"))?;
        if opts.wants_help() {
            return Ok(Some(Action::Help));
        }
        for (key, value) in opts.params() {
            match key.as_str() {
                // QEMU's empty machine: no RAM, no vCPUs, only QMP (libvirt probes with it).
                "type" if value == "none" => self.config.qmp_only = true,
                "type" => {
                    self.config.machine = MachineKind::from_qemu_name(value)
                        .ok_or_else(|| CliError::Machine(value.clone()))?;
                }
                "accel" => check_accel_list("-machine", value)?,
                "kernel-irqchip" | "kernel_irqchip" => {
                    self.irqchip = Some(irqchip_mode("-machine", value)?)
                }
                "acpi" => {
                    self.config.acpi = match value.as_str() {
                        "auto" => true,
                        v => opts::parse_bool("acpi", v).map_err(opts_err("-machine"))?,
                    }
                }
                // rvmm never has a graphical console: its firmware always uses the serial one.
                "graphics" => {
                    opts::parse_bool(key, value).map_err(opts_err("-machine"))?;
                }
                "pit" => {
                    self.config.pit =
                        crate::opts::parse_bool(key, value).map_err(opts_err("-machine"))?
                }
                "bzimage-decompress" => {
                    self.config.bzimage_decompress = match value.as_str() {
                        "host" => BzImageDecompress::Host,
                        "guest" => BzImageDecompress::Guest,
                        _ => {
                            return Err(CliError::Opts {
                                option: "-machine".into(),
                                source: OptsError::UnsupportedValue {
                                    key: key.clone(),
                                    value: value.clone(),
                                },
                            })
                        }
                    }
                }
                // rvmm's machines have no USB controller unless a -device adds one.
                "usb" => {
                    if opts::parse_bool(key, value).map_err(opts_err("-machine"))? {
                        return Err(CliError::Opts {
                            option: "-machine".into(),
                            source: OptsError::UnsupportedValue {
                                key: key.clone(),
                                value: value.clone(),
                            },
                        });
                    }
                }
                "dump-guest-core" => {
                    self.config.process.dump_guest_core =
                        opts::parse_bool(key, value).map_err(opts_err("-machine"))?
                }
                "memory-backend" => self.objects.machine_backend = Some(value.clone()),
                "kernel" => self.config.kernel = Some(PathBuf::from(value)),
                "initrd" => self.config.initrd = split_initrd(OsStr::new(value))?,
                "append" => self.config.append = Some(value.as_bytes().to_vec()),
                _ => {
                    return Err(CliError::Opts {
                        option: "-machine".into(),
                        source: OptsError::UnsupportedParameter { key: key.clone() },
                    })
                }
            }
        }
        Ok(None)
    }

    /// `-object TYPE,id=ID,...`: process objects (secret, memory backends) here, entropy
    /// back-ends with the virtio devices.
    fn object(&mut self, arg: &str) -> Result<(), CliError> {
        let opts = QemuOpts::parse(arg, Some("qom-type")).map_err(opts_err("-object"))?;
        if process::is_process_object(opts.get("qom-type").unwrap_or_default()) {
            return Ok(self.objects.object(&opts)?);
        }
        Ok(self.virtio.option("object", arg)?)
    }

    /// `-device driver[,prop=value...]`.
    /// `-device`: a `romfile=` path may be any bytes, the rest is text.
    fn device(&mut self, arg: &OsStr) -> Result<Option<Action>, CliError> {
        let opts = QemuOpts::parse_os(arg, Some("driver"))
            .and_then(|o| o.check_text(&["romfile"]).map(|()| o))
            .map_err(opts_err("-device"))?;
        let driver = opts.get("driver").unwrap_or_default();
        if matches!(driver, "help" | "?") {
            return Ok(Some(Action::DeviceHelp(qdev::devices_help())));
        }
        let device_type = qdev::find(driver).filter(|d| d.user_creatable);
        if opts.wants_help() {
            return match device_type {
                Some(d) => Ok(Some(Action::DeviceHelp(qdev::device_help(d)))),
                None => Err(CliError::Device(driver.to_string())),
            };
        }
        let option = format!("-device {driver}");
        // The registry's properties are the keys each device takes (qdev.rs).
        if let Some(d) = device_type {
            // bus= is qdev's, every device takes it (checked below where rvmm has buses).
            let mut keys = d.option_keys();
            keys.push("bus");
            opts.check_known(&keys).map_err(opts_err(&option))?;
            let ports: Vec<&str> = self
                .config
                .devices
                .iter()
                .filter_map(|d| match d {
                    DeviceConfig::PcieRootPort(p) => p.id.as_deref(),
                    _ => None,
                })
                .collect();
            check_bus(d, opts.get("bus"), &ports)?;
        }
        if let Some(id) = opts.get("id") {
            if self.config.peripherals.iter().any(|(i, _)| i == id) {
                return Err(CliError::DuplicateDeviceId(id.to_string()));
            }
            self.config
                .peripherals
                .push((id.to_string(), driver.to_string()));
        }
        let device = match driver {
            "" => return Err(CliError::DeviceDriverMissing),
            "isa-debug-exit" => {
                let iobase = opts.get_u16("iobase").map_err(opts_err(&option))?;
                let iosize = opts.get_u16("iosize").map_err(opts_err(&option))?;
                DeviceConfig::IsaDebugExit {
                    iobase: iobase.unwrap_or(DeviceConfig::ISA_DEBUG_EXIT_IOBASE),
                    iosize: iosize.unwrap_or(DeviceConfig::ISA_DEBUG_EXIT_IOSIZE),
                }
            }
            "pc-testdev" => DeviceConfig::PcTestdev,
            "pci-testdev" => {
                let addr = opts
                    .get("addr")
                    .map(|a| parse_pci_addr(a).ok_or_else(|| CliError::PciAddr(a.to_string())))
                    .transpose()?;
                let membar = opts.get_size("membar", 1).map_err(opts_err(&option))?;
                // QEMU: an empty romfile= means no ROM.
                let romfile = opts
                    .get_path("romfile")
                    .filter(|f| !f.as_os_str().is_empty());
                DeviceConfig::PciTestdev(PciTestdevConfig {
                    bus: opts.get("bus").map(str::to_string),
                    addr,
                    romfile,
                    membar: membar.unwrap_or(0),
                })
            }
            "qemu-xhci" => {
                let addr = opts
                    .get("addr")
                    .map(|a| parse_pci_addr(a).ok_or_else(|| CliError::PciAddr(a.to_string())))
                    .transpose()?;
                // QEMU's uint32 properties, capped at 15 ports each at realize.
                let ports = |key: &str| -> Result<u8, CliError> {
                    match opts.get(key) {
                        None => Ok(4),
                        Some(v) => v.parse::<u32>().map(|n| n.min(15) as u8).map_err(|_| {
                            CliError::XhciPorts {
                                key: key.to_string(),
                                value: v.to_string(),
                            }
                        }),
                    }
                };
                DeviceConfig::Xhci(XhciConfig {
                    bus: opts.get("bus").map(str::to_string),
                    addr,
                    p2: ports("p2")?,
                    p3: ports("p3")?,
                })
            }
            "VGA" | "bochs-display" => {
                let addr = opts
                    .get("addr")
                    .map(|a| parse_pci_addr(a).ok_or_else(|| CliError::PciAddr(a.to_string())))
                    .transpose()?;
                DeviceConfig::Display(DisplayDeviceConfig {
                    model: if driver == "VGA" {
                        DisplayModel::StdVga
                    } else {
                        DisplayModel::BochsDisplay
                    },
                    bus: opts.get("bus").map(str::to_string),
                    addr,
                })
            }
            "isa-serial" => {
                // COM1 only: index 0 at QEMU's 0x3f8/IRQ 4.
                if !matches!(opts.get("index"), None | Some("0"))
                    || !matches!(opts.get("iobase"), None | Some("0x3f8" | "1016"))
                    || !matches!(opts.get("irq"), None | Some("4"))
                {
                    return Err(CliError::IsaSerial(
                        "only COM1 (index=0, iobase=0x3f8, irq=4) is supported",
                    ));
                }
                let chardev = opts
                    .get("chardev")
                    .ok_or(CliError::IsaSerial("parameter 'chardev' is missing"))?;
                if self.serial.is_some() || self.serial_chardev {
                    return Err(CliError::SerialCount);
                }
                self.serial_chardev = true;
                self.monitors.set_serial(chardev);
                return Ok(None);
            }
            "pcie-root-port" => root_port(&opts, &option)?,
            d if virtio::is_virtio_driver(d) => {
                self.virtio.device(&opts)?;
                return Ok(None);
            }
            other => return Err(CliError::Device(other.to_string())),
        };
        self.config.devices.push(device);
        Ok(None)
    }

    /// `-serial stdio|mon:stdio|none|null|file:PATH` for COM1.
    /// `-serial`: the path of `file:PATH` may be any bytes.
    fn serial(&mut self, arg: &OsStr) -> Result<Option<Action>, CliError> {
        if let Some(path) = arg.as_bytes().strip_prefix(b"file:") {
            if path.is_empty() {
                return Err(CliError::SerialPath);
            }
            return self.set_serial(SerialConfig::File(PathBuf::from(OsStr::from_bytes(path))));
        }
        let arg = arg.to_str().ok_or_else(|| CliError::NotText {
            option: "-serial".into(),
            lossy: arg.to_string_lossy().into_owned(),
        })?;
        if let Some(id) = arg.strip_prefix("chardev:") {
            if self.serial.is_some() || self.serial_chardev {
                return Err(CliError::SerialCount);
            }
            self.serial_chardev = true;
            self.monitors.set_serial(id);
            return Ok(None);
        }
        let serial = match arg {
            "help" => return Ok(Some(Action::Help)),
            "stdio" | "mon:stdio" => SerialConfig::Stdio,
            "none" => SerialConfig::None,
            "null" => SerialConfig::File(PathBuf::from("/dev/null")),
            _ => match arg.strip_prefix("file:") {
                Some("") => return Err(CliError::SerialPath),
                Some(path) => SerialConfig::File(PathBuf::from(path)),
                None => {
                    // Name the backend, not its parameters (e.g. "tcp" for "tcp:host:port").
                    let backend = arg.split(':').next().unwrap_or(arg);
                    return Err(CliError::SerialBackend(backend.to_string()));
                }
            },
        };
        self.set_serial(serial)
    }

    fn set_serial(&mut self, serial: SerialConfig) -> Result<Option<Action>, CliError> {
        if self.serial.is_some() || self.serial_chardev {
            return Err(CliError::SerialCount);
        }
        self.serial = Some(serial);
        Ok(None)
    }

    /// Resolves defaults that depend on several options and validates the result.
    fn finish(mut self) -> Result<VmConfig, CliError> {
        let mut config = self.config;
        config.irqchip = self
            .irqchip
            .unwrap_or_else(|| IrqchipMode::default_for(config.machine));
        config.smp = self.smp.resolve(config.machine).map_err(CliError::Smp)?;
        for (name, drive) in self.blocks.into_drives() {
            self.virtio.add_node_drive(name, drive)?;
        }
        config.process.memory_backend = self.objects.resolve(config.memory_bytes)?;
        let devices = self.virtio.resolve(config.machine, config.nodefaults)?;
        config.virtio = devices.virtio;
        config.virtio_pci = devices.virtio_pci;
        config.ide = devices.ide;
        let (mons, chardev_serial) = self.monitors.resolve().map_err(monitor_err("-mon"))?;
        let mut serial = self.serial;
        if let Some((label, backend)) = chardev_serial {
            config.serial_label = Some(label);
            serial = Some(backend);
        }
        config.vnc = self.display.resolve();
        config.qmp.extend(mons);
        // QEMU's default VGA: on machines with PCI, unless removed or given as -device VGA.
        let explicit_vga = config.devices.iter().any(|d| {
            matches!(
                d,
                DeviceConfig::Display(DisplayDeviceConfig {
                    model: DisplayModel::StdVga,
                    ..
                })
            )
        });
        config.default_vga = match self.vga {
            Some(std) => std,
            None => !config.nodefaults && config.machine != MachineKind::Microvm && !explicit_vga,
        };
        if config.default_vga && config.machine == MachineKind::Microvm {
            return Err(CliError::Invalid(ConfigError::NoPciBus("VGA")));
        }
        // rvmm has no graphical console: the terminal is the default console, like -nographic.
        config.serial = match serial {
            Some(serial) => serial,
            None if config.nodefaults => SerialConfig::None,
            None => SerialConfig::Stdio,
        };
        // QEMU refuses stdio chardevs in daemon mode too: the terminal goes away.
        if config.daemonize && config.serial == SerialConfig::Stdio {
            return Err(CliError::DaemonizeStdio);
        }
        config.validate().map_err(|source| match source {
            ConfigError::DebugExitEmpty
            | ConfigError::DebugExitRange { .. }
            | ConfigError::DuplicateTestdev => CliError::Config {
                option: "-device",
                source,
            },
            other => CliError::Invalid(other),
        })?;
        Ok(config)
    }
}

/// `-device ...,bus=NAME`: rvmm's PCI buses are the root bus (`pcie.0` on q35, `pci.0` on pc;
/// `VmConfig::validate` checks it matches the machine) and the secondary bus of each
/// `pcie-root-port` given before (`ports`, their ids), and it has one ISA bus; IDE buses are
/// checked with the drive (virtio.rs).
fn check_bus(d: &qdev::DeviceType, bus: Option<&str>, ports: &[&str]) -> Result<(), CliError> {
    let ok = match (d.bus, bus) {
        (_, None) | (Some("IDE"), _) => true,
        (Some("PCI"), Some(b)) => b == "pcie.0" || b == "pci.0" || ports.contains(&b),
        (Some("ISA"), Some(b)) => b == "isa.0",
        _ => false,
    };
    match (ok, bus) {
        (false, Some(b)) => Err(CliError::PciBus {
            driver: d.name.to_string(),
            bus: b.to_string(),
        }),
        _ => Ok(()),
    }
}

/// `-device pcie-root-port,...` with QEMU's defaults (port 0, chassis 0, slot 0).
fn root_port(opts: &QemuOpts, option: &str) -> Result<DeviceConfig, CliError> {
    let addr = opts
        .get("addr")
        .map(|a| parse_pci_addr(a).ok_or_else(|| CliError::PciAddr(a.to_string())))
        .transpose()?;
    let u8_prop = |key: &str| {
        opts.get_number_max(key, u64::from(u8::MAX))
            .map(|v| v.unwrap_or(0) as u8)
            .map_err(opts_err(option))
    };
    Ok(DeviceConfig::PcieRootPort(PcieRootPortConfig {
        id: opts.get("id").map(str::to_string),
        bus: opts.get("bus").map(str::to_string),
        addr,
        multifunction: opts
            .get_bool("multifunction")
            .map_err(opts_err(option))?
            .unwrap_or(false),
        port: u8_prop("port")?,
        chassis: u8_prop("chassis")?,
        slot: opts.get_u16("slot").map_err(opts_err(option))?.unwrap_or(0),
    }))
}

/// Accepts an accelerator list (`kvm`, or QEMU's `kvm:tcg` fallback form) that includes KVM.
/// QEMU's PCI `addr=` property: `SLOT[.FUNCTION]` in hex (`4`, `04.0`, `0x1f.7`).
pub(crate) fn parse_pci_addr(s: &str) -> Option<(u8, u8)> {
    let (slot, function) = match s.split_once('.') {
        Some((slot, function)) => (slot, function),
        None => (s, "0"),
    };
    let hex = |v: &str| {
        let v = v.strip_prefix("0x").unwrap_or(v);
        (!v.is_empty() && v.len() <= 2)
            .then(|| u8::from_str_radix(v, 16).ok())
            .flatten()
    };
    let (slot, function) = (hex(slot)?, hex(function)?);
    (slot < 32 && function < 8).then_some((slot, function))
}

/// Accepts an accelerator list (`kvm`, or QEMU's `kvm:tcg` fallback form) that includes KVM.
fn check_accel_list(option: &'static str, value: &str) -> Result<(), CliError> {
    if value.split(':').any(|a| a == "kvm") {
        Ok(())
    } else {
        Err(CliError::Accelerator {
            option,
            name: value.to_string(),
        })
    }
}

/// `kernel-irqchip=on|split` (`off` would leave vCPUs without the in-kernel LAPIC rvmm relies on).
fn irqchip_mode(option: &'static str, value: &str) -> Result<IrqchipMode, CliError> {
    match value {
        "on" | "yes" | "true" => Ok(IrqchipMode::Kernel),
        "split" => Ok(IrqchipMode::Split),
        _ => Err(CliError::Opts {
            option: option.into(),
            source: OptsError::UnsupportedValue {
                key: "kernel-irqchip".into(),
                value: value.into(),
            },
        }),
    }
}

/// `-incoming file:PATH|exec:CMD|unix:PATH|tcp:HOST:PORT|defer`; `fd:` and `rdma:` are refused
/// by name.
fn incoming(arg: &str) -> Result<IncomingConfig, CliError> {
    let bad = |reason: &str| CliError::Incoming(format!("'{arg}': {reason}"));
    match arg.split_once(':') {
        _ if arg == "defer" => Ok(IncomingConfig::Defer),
        Some(("file", path)) if !path.is_empty() => Ok(IncomingConfig::File(path.into())),
        Some(("exec", cmd)) if !cmd.trim().is_empty() => Ok(IncomingConfig::Exec(cmd.into())),
        Some(("unix", path)) if !path.is_empty() => Ok(IncomingConfig::Unix(path.into())),
        Some(("tcp", addr)) => match addr.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(IncomingConfig::Tcp(addr.into()))
            }
            _ => Err(bad("expected tcp:HOST:PORT with a port number (1-65535)")),
        },
        Some(("fd" | "rdma", _)) => Err(bad(
            "rvmm restores only 'file:PATH', 'exec:CMD', 'unix:PATH' and 'tcp:HOST:PORT' snapshots (or 'defer' and QMP migrate-incoming)",
        )),
        _ => Err(bad("expected file:PATH, exec:CMD, unix:PATH, tcp:HOST:PORT or defer")),
    }
}

/// `-accel kvm[,kernel-irqchip=on|split]`.
fn accel(irqchip: &mut Option<IrqchipMode>, arg: &str) -> Result<Option<Action>, CliError> {
    let opts = QemuOpts::parse(arg, Some("accel")).map_err(opts_err("-accel"))?;
    if opts.wants_help() {
        return Ok(Some(Action::Help));
    }
    let name = opts.get("accel").unwrap_or_default();
    if name != "kvm" {
        return Err(CliError::Accelerator {
            option: "-accel",
            name: name.to_string(),
        });
    }
    opts.check_unsupported(&["kvm-shadow-mem", "dirty-ring-size", "thread"])
        .and_then(|()| opts.check_known(&["accel", "kernel-irqchip"]))
        .map_err(opts_err("-accel"))?;
    if let Some(v) = opts.get("kernel-irqchip") {
        *irqchip = Some(irqchip_mode("-accel", v)?);
    }
    Ok(None)
}

/// `-fw_cfg [name=]NAME,file=PATH|string=STR` (QEMU vl.c `parse_fw_cfg`).
/// `-fw_cfg`: the `file=` path may be any bytes, the rest is text.
fn fw_cfg(arg: &OsStr) -> Result<FwCfgFile, CliError> {
    let opts = QemuOpts::parse_os(arg, Some("name")).map_err(opts_err("-fw_cfg"))?;
    opts.check_unsupported(&["gen_id"])
        .and_then(|()| opts.check_known(&["name", "file", "string"]))
        .and_then(|()| opts.check_text(&["file"]))
        .map_err(opts_err("-fw_cfg"))?;
    let nonempty = |k| opts.get(k).filter(|v| !v.is_empty());
    let name = nonempty("name").ok_or(CliError::FwCfgArguments)?;
    let file = opts.get_path("file").filter(|f| !f.as_os_str().is_empty());
    let data = match (file, nonempty("string")) {
        (Some(file), None) => FwCfgData::File(file),
        (None, Some(s)) => FwCfgData::String(s.to_string()),
        _ => return Err(CliError::FwCfgArguments),
    };
    // FW_CFG_MAX_FILE_PATH is 56 bytes with the NUL.
    if name.len() > 55 {
        return Err(CliError::FwCfgNameTooLong(name.to_string()));
    }
    Ok(FwCfgFile {
        name: name.to_string(),
        data,
    })
}

/// `-m [size=]SIZE`: bare numbers are MiB; rounded up to QEMU's 8 KiB granularity.
fn memory(arg: &str) -> Result<u64, CliError> {
    let opts = QemuOpts::parse(arg, Some("size")).map_err(opts_err("-m"))?;
    opts.check_unsupported(&["slots", "maxmem"])
        .and_then(|()| opts.check_known(&["size"]))
        .map_err(opts_err("-m"))?;
    let text = opts.get("size").unwrap_or_default();
    let bytes = parse_size(text, MIB).map_err(|source| CliError::Size {
        option: "-m",
        source,
    })?;
    check_memory_size(bytes).map_err(|source| CliError::Config {
        option: "-m",
        source,
    })?;
    // Cannot overflow: bytes is at most MAX_MEMORY_BYTES.
    Ok(bytes.div_ceil(MEMORY_ALIGNMENT) * MEMORY_ALIGNMENT)
}

/// `-exit-stats [json=FILE][,table=on|off]`: the table alone by default, the JSON file alone
/// when `json=` is given, both with `json=FILE,table=on`.
/// `-exit-stats`: the `json=` path may be any bytes.
fn exit_stats(arg: &OsStr) -> Result<ExitStatsConfig, CliError> {
    if arg.is_empty() {
        return Ok(ExitStatsConfig {
            table: true,
            json: None,
        });
    }
    let opts = QemuOpts::parse_os(arg, None).map_err(opts_err("-exit-stats"))?;
    opts.check_known(&["json", "table"])
        .and_then(|()| opts.check_text(&["json"]))
        .map_err(opts_err("-exit-stats"))?;
    let json = match opts.get_path("json") {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(CliError::Opts {
                option: "-exit-stats".into(),
                source: OptsError::UnsupportedValue {
                    key: "json".into(),
                    value: String::new(),
                },
            })
        }
        other => other,
    };
    let table = opts
        .get_bool("table")
        .map_err(opts_err("-exit-stats"))?
        .unwrap_or(json.is_none());
    Ok(ExitStatsConfig { table, json })
}

/// Splits `-initrd a,b` into files; `,,` is a literal comma (QEMU's multiboot module list).
fn split_initrd(arg: &OsStr) -> Result<Vec<PathBuf>, CliError> {
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = arg.as_bytes().iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b',' {
            current.push(b);
        } else if bytes.peek() == Some(&b',') {
            // ",," is a literal comma, as in QEMU option values.
            bytes.next();
            current.push(b',');
        } else {
            files.push(std::mem::take(&mut current));
        }
    }
    files.push(current);
    if files.iter().any(Vec::is_empty) {
        return Err(CliError::InitrdEmpty(arg.to_string_lossy().into_owned()));
    }
    Ok(files
        .into_iter()
        .map(|f| PathBuf::from(OsString::from_vec(f)))
        .collect())
}

#[cfg(test)]
mod libvirt_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod virtio_pci_tests;
