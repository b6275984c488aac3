//! The validated VM configuration that the command line produces.

use std::path::PathBuf;

use thiserror::Error;

use crate::size::{format_size, MIB, TIB};

/// Guest RAM when `-m` is absent (QEMU's x86 default).
pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;
/// Smallest accepted guest RAM: below this no x86 boot protocol has room to work.
pub const MIN_MEMORY_BYTES: u64 = MIB;
/// Largest accepted guest RAM; beyond this is a typo, not a VM this VMM can back.
pub const MAX_MEMORY_BYTES: u64 = TIB;
/// QEMU rounds `-m` up to this granularity (`QEMU_ALIGN_UP(sz, 8192)` in `vl.c`).
pub const MEMORY_ALIGNMENT: u64 = 8192;
/// x86 I/O port space is 64 KiB.
const IO_PORT_SPACE: u32 = 0x1_0000;

/// Why a configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("memory size {} is below the minimum of {}", format_size(*.0), format_size(MIN_MEMORY_BYTES))]
    MemoryTooSmall(u64),
    #[error("memory size {} exceeds the maximum of {}", format_size(*.0), format_size(MAX_MEMORY_BYTES))]
    MemoryTooLarge(u64),
    #[error("invalid CPU topology {0:?}")]
    Topology(SmpConfig),
    #[error("too many CPUs: {maxcpus} (machine '{machine}' supports at most {max})")]
    TooManyCpus {
        maxcpus: u32,
        machine: &'static str,
        max: u32,
    },
    #[error("isa-debug-exit: iosize must be at least 1")]
    DebugExitEmpty,
    #[error("isa-debug-exit: ports {iobase:#x}+{iosize} extend past the I/O port space (0xffff)")]
    DebugExitRange { iobase: u16, iosize: u16 },
    #[error("-device {0}: No 'PCI' bus found for device '{0}' (-machine microvm has no PCI; use pc or q35)")]
    NoPciBus(&'static str),
    #[error("pc-testdev: only one instance is supported")]
    DuplicateTestdev,
    #[error("-device pcie-root-port: Can't add chassis slot, error -16 (chassis {chassis}, slot {slot} is taken)")]
    ChassisSlotTaken { chassis: u8, slot: u16 },
    #[error("-device {driver}: Bus '{bus}' not found")]
    BusNotFound { driver: String, bus: String },
}

/// The board model (`-machine type=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MachineKind {
    /// Minimal virtio-mmio machine without PCI or ACPI firmware.
    Microvm,
    /// i440FX + PIIX, QEMU's x86 default.
    #[default]
    Pc,
    /// Q35 + ICH9.
    Q35,
}

impl MachineKind {
    /// The short machine name as QEMU spells it.
    pub fn name(self) -> &'static str {
        match self {
            MachineKind::Microvm => "microvm",
            MachineKind::Pc => "pc",
            MachineKind::Q35 => "q35",
        }
    }

    /// Largest `maxcpus` the machine accepts (QEMU 7.2 `mc->max_cpus`).
    pub fn max_cpus(self) -> u32 {
        match self {
            MachineKind::Pc => 255,
            MachineKind::Q35 | MachineKind::Microvm => 288,
        }
    }

    /// Maps a QEMU machine name, including versioned ones, to a machine kind.
    pub fn from_qemu_name(name: &str) -> Option<MachineKind> {
        match name {
            "microvm" => Some(MachineKind::Microvm),
            "pc" | "pc-i440fx" => Some(MachineKind::Pc),
            "q35" | "pc-q35" => Some(MachineKind::Q35),
            _ => {
                if is_versioned(name, "pc-i440fx-") {
                    Some(MachineKind::Pc)
                } else if is_versioned(name, "pc-q35-") {
                    Some(MachineKind::Q35)
                } else {
                    None
                }
            }
        }
    }
}

/// True for `prefix` followed by a dotted version such as `7.2` or `2.12`.
fn is_versioned(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|v| {
        !v.is_empty()
            && v.split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The guest CPU topology after `-smp` defaults are filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmpConfig {
    /// vCPUs present at boot.
    pub cpus: u32,
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    /// vCPUs possible with hotplug; equals sockets * dies * cores * threads.
    pub maxcpus: u32,
}

impl Default for SmpConfig {
    fn default() -> Self {
        SmpConfig {
            cpus: 1,
            sockets: 1,
            dies: 1,
            cores: 1,
            threads: 1,
            maxcpus: 1,
        }
    }
}

impl SmpConfig {
    /// Checks the invariants that the `-smp` parser establishes.
    pub fn validate(&self, machine: MachineKind) -> Result<(), ConfigError> {
        let product = [self.sockets, self.dies, self.cores, self.threads]
            .iter()
            .try_fold(1u32, |acc, &l| acc.checked_mul(l));
        if self.cpus == 0 || self.cpus > self.maxcpus || product != Some(self.maxcpus) {
            return Err(ConfigError::Topology(*self));
        }
        if self.maxcpus > machine.max_cpus() {
            return Err(ConfigError::TooManyCpus {
                maxcpus: self.maxcpus,
                machine: machine.name(),
                max: machine.max_cpus(),
            });
        }
        Ok(())
    }
}

/// Where COM1 (the first 16550 UART) sends its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialConfig {
    /// The terminal rvmm runs in.
    Stdio,
    /// No serial port at all.
    None,
    /// Output written to a file, truncated first (`-serial null` is `/dev/null`: the port
    /// exists, output is dropped).
    File(PathBuf),
    /// `-chardev file,append=on`: output appended to a file.
    Append(PathBuf),
    /// `-chardev pty`: a new pseudo-terminal; QMP `query-chardev` names its `/dev/pts/N`.
    Pty,
}

/// Devices added with `-device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceConfig {
    /// Writing value `v` to `iobase` exits rvmm with status `(v << 1) | 1`.
    IsaDebugExit { iobase: u16, iosize: u16 },
    /// QEMU's `pc-testdev` used by kvm-unit-tests.
    PcTestdev,
    /// QEMU's `pci-testdev` (1b36:0005), at `addr` (slot, function) or the first free slot.
    PciTestdev(PciTestdevConfig),
    /// A display device (`-device VGA`, `-device bochs-display`), at `addr` or the first free
    /// slot.
    Display(DisplayDeviceConfig),
    /// `-device qemu-xhci`: a USB 3 controller (no USB devices behind it yet).
    Xhci(XhciConfig),
    /// QEMU's generic PCIe root port (1b36:000c), a bridge whose secondary bus is named by its
    /// `id=`.
    PcieRootPort(PcieRootPortConfig),
}

/// `-device qemu-xhci[,bus=][,addr=][,p2=][,p3=]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XhciConfig {
    /// `bus=`: a root port's id (libvirt's place for it); None: the root bus.
    pub bus: Option<String>,
    pub addr: Option<(u8, u8)>,
    /// USB 2 and USB 3 root ports (QEMU's defaults 4 and 4, each capped at 15).
    pub p2: u8,
    pub p3: u8,
}

/// `-device pcie-root-port[,id=][,bus=][,addr=][,multifunction=][,port=][,chassis=][,slot=]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcieRootPortConfig {
    /// `id=`: also the name of the port's secondary bus (`bus=` of the device behind it).
    pub id: Option<String>,
    /// `bus=`: the bus the port sits on; None: the root bus.
    pub bus: Option<String>,
    /// Slot and function on that bus; None: the first free slot.
    pub addr: Option<(u8, u8)>,
    /// `multifunction=on`: the header type's multi-function bit.
    pub multifunction: bool,
    /// `port=`: the link's port number.
    pub port: u8,
    /// `chassis=` and `slot=`: unique per port, as QEMU's `pcie_chassis_add_slot` demands.
    pub chassis: u8,
    pub slot: u16,
}

/// Which display device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayModel {
    /// QEMU's standard VGA (1234:1111 with the VGA BIOS): `-vga std`, `-device VGA`.
    StdVga,
    /// `-device bochs-display`: the same framebuffer and DISPI registers, no legacy VGA.
    BochsDisplay,
}

/// `-device VGA|bochs-display[,bus=][,addr=]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayDeviceConfig {
    pub model: DisplayModel,
    /// `bus=`: the root bus (libvirt names it) or a root port's id; None: the root bus.
    pub bus: Option<String>,
    pub addr: Option<(u8, u8)>,
}

/// `-device pci-testdev[,bus=][,addr=][,romfile=][,membar=]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciTestdevConfig {
    /// `bus=`: a root port's id; None: the root bus.
    pub bus: Option<String>,
    /// Slot and function; None: the first free slot.
    pub addr: Option<(u8, u8)>,
    /// QEMU's `romfile=` (any PCI device): the expansion ROM's contents.
    pub romfile: Option<PathBuf>,
    /// QEMU's `membar=`: size of the 64-bit prefetchable BAR 2 (0: none).
    pub membar: u64,
}

impl DeviceConfig {
    /// QEMU's default `isa-debug-exit` base port (`hw/misc/debugexit.c`).
    pub const ISA_DEBUG_EXIT_IOBASE: u16 = 0x501;
    /// QEMU's default `isa-debug-exit` port count.
    pub const ISA_DEBUG_EXIT_IOSIZE: u16 = 2;
    /// `-device isa-debug-exit` with QEMU's defaults.
    pub const ISA_DEBUG_EXIT_DEFAULT: DeviceConfig = DeviceConfig::IsaDebugExit {
        iobase: Self::ISA_DEBUG_EXIT_IOBASE,
        iosize: Self::ISA_DEBUG_EXIT_IOSIZE,
    };

    /// The `-device` driver name.
    pub fn driver(&self) -> &'static str {
        match self {
            DeviceConfig::IsaDebugExit { .. } => "isa-debug-exit",
            DeviceConfig::PcTestdev => "pc-testdev",
            DeviceConfig::PciTestdev(_) => "pci-testdev",
            DeviceConfig::Xhci(_) => "qemu-xhci",
            DeviceConfig::Display(d) => match d.model {
                DisplayModel::StdVga => "VGA",
                DisplayModel::BochsDisplay => "bochs-display",
            },
            DeviceConfig::PcieRootPort(_) => "pcie-root-port",
        }
    }
}

/// `-incoming`: where the VM's state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingConfig {
    /// `file:PATH`: the state file QMP `migrate` wrote (RAM in `PATH.mem`).
    File(PathBuf),
    /// `exec:CMD`: the stream `sh -c CMD` writes (QEMU: `-incoming "exec:cat PATH"`).
    Exec(String),
    /// `unix:PATH`: listen on a Unix socket at PATH and read the stream the source sends.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: listen on HOST (any address when empty or `0`) and PORT.
    Tcp(String),
    /// `defer`: wait for QMP `migrate-incoming`.
    Defer,
}

/// QEMU's `kernel-irqchip=`: which interrupt controllers live in KVM.
///
/// `Split` keeps only the LAPICs in the kernel, as Cloud Hypervisor and QEMU's microvm do; on
/// hosts like this project's, a full in-kernel irqchip adds a 5-20 ms RCU wait to VM set-up or
/// teardown (docs/PERFORMANCE.md). `Kernel` adds the in-kernel PIC, IOAPIC and PIT, which guests
/// written for a PC expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqchipMode {
    Kernel,
    Split,
}

impl IrqchipMode {
    /// QEMU's default for a machine type: split on microvm, in-kernel on pc and q35.
    pub fn default_for(machine: MachineKind) -> Self {
        match machine {
            MachineKind::Microvm => Self::Split,
            MachineKind::Pc | MachineKind::Q35 => Self::Kernel,
        }
    }
}

/// Who unpacks a bzImage's compressed kernel (`-machine bzimage-decompress=host|guest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BzImageDecompress {
    /// rvmm, before the guest starts: the kernel's decompressor runs at CPL0, which some hosts
    /// emulate (docs/EMULATED-KVM.md).
    #[default]
    Host,
    /// The kernel's own decompressor, as QEMU boots it.
    Guest,
}

/// Where a `-fw_cfg` item's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgData {
    /// `file=PATH`: the file's bytes, read when the VM is built.
    File(PathBuf),
    /// `string=S`: the string's bytes, without a terminating NUL (as QEMU).
    String(String),
}

/// A user fw_cfg file from `-fw_cfg [name=]NAME,file=PATH|string=S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfgFile {
    /// The fw_cfg file name, e.g. `opt/org.example/config` (at most 55 bytes).
    pub name: String,
    pub data: FwCfgData,
}

impl FwCfgFile {
    /// QEMU warns about (but accepts) user items outside the "opt/" namespace.
    pub fn outside_opt(&self) -> bool {
        !self.name.starts_with("opt/")
    }
}

/// Everything rvmm needs to build and run a VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub machine: MachineKind,
    /// Which interrupt controllers KVM emulates (`kernel-irqchip=`).
    pub irqchip: IrqchipMode,
    /// The i8254 PIT (`-machine pit=on|off`); only the in-kernel irqchip has one.
    pub pit: bool,
    pub smp: SmpConfig,
    /// The guest CPU (`-cpu`); without the option, `host`.
    pub cpu: rvmm_arch::cpu::CpuConfig,
    /// Guest RAM in bytes, a multiple of [`MEMORY_ALIGNMENT`].
    pub memory_bytes: u64,
    pub name: Option<String>,
    pub kernel: Option<PathBuf>,
    /// Multiboot modules or a single initrd, in command-line order.
    pub initrd: Vec<PathBuf>,
    /// The kernel command line, bytes as given (QEMU passes `-append` through unchanged).
    pub append: Option<Vec<u8>>,
    pub serial: SerialConfig,
    pub no_reboot: bool,
    pub devices: Vec<DeviceConfig>,
    /// virtio-mmio devices, in command-line order.
    pub virtio: Vec<crate::VirtioDeviceConfig>,
    /// virtio-pci devices (pc and q35), in command-line order.
    pub virtio_pci: Vec<crate::VirtioPciDeviceConfig>,
    /// IDE drives (PIIX IDE on pc, AHCI on q35), ordered by bus and unit.
    pub ide: Vec<crate::IdeDriveConfig>,
    pub nodefaults: bool,
    /// The default display device (`-vga std`, and QEMU's default on pc and q35 unless
    /// `-vga none`, `-nodefaults` or a `-device VGA`); placed before the `-device`s.
    pub default_vga: bool,
    /// ACPI tables for the guest (`-machine acpi=on|off|auto`); without them only the MP table.
    pub acpi: bool,
    /// User fw_cfg files (`-fw_cfg`), in command-line order.
    pub fw_cfg: Vec<FwCfgFile>,
    /// QMP monitors (`-qmp`, `-chardev socket` + `-mon mode=control`), in command-line order.
    pub qmp: Vec<crate::QmpConfig>,
    /// `-S`: create the vCPUs stopped; a QMP `cont` starts them.
    pub start_paused: bool,
    /// `-incoming`: restore a snapshot instead of booting.
    pub incoming: Option<IncomingConfig>,
    /// `-pidfile`: written once the VM is set up, removed at exit.
    pub pidfile: Option<PathBuf>,
    /// `-daemonize`: detach once the VM is set up (the parent exits 0 when the child is ready).
    pub daemonize: bool,
    /// `-machine none`: no guest at all (no RAM, no vCPUs, no devices), only the QMP monitors,
    /// as libvirt's capability probe starts QEMU.
    pub qmp_only: bool,
    /// Who unpacks a bzImage payload (`-machine bzimage-decompress=host|guest`).
    pub bzimage_decompress: BzImageDecompress,
    /// `-exit-stats`: collect per-vCPU exit statistics and report them at exit.
    pub exit_stats: Option<ExitStatsConfig>,
    /// Firmware image, search path and boot order (`-bios`, `-L`, `-boot`).
    pub firmware: crate::FirmwareConfig,
    /// The `-global` properties rvmm honours.
    pub globals: GlobalProps,
    /// SMBIOS fields for PC firmware (`-smbios type=N,...`, `-uuid`).
    pub smbios: rvmm_arch::smbios::SmbiosFields,
    /// The VNC server (`-vnc`, `-display vnc=`, or rvmm's default when no display is named).
    pub vnc: Option<crate::VncConfig>,
    /// `-sandbox`: seccomp filters per thread (on unless `-sandbox off`).
    pub sandbox: crate::SandboxConfig,
    /// COM1's chardev id (`-chardev ...,id=ID` with `-serial chardev:ID` or
    /// `-device isa-serial,chardev=ID`), QMP `query-chardev`'s label.
    pub serial_label: Option<String>,
    /// The rvmm process around the guest: thread names, power-off, RAM backend, messages.
    pub process: crate::ProcessConfig,
    /// `-device ...,id=ID` as (id, driver): QOM's `/machine/peripheral` children.
    pub peripherals: Vec<(String, String)>,
}

/// `-global DRIVER.PROP=VALUE` properties rvmm honours: QEMU 7.2's `ICH9-LPC.disable_s3` (q35)
/// and `PIIX4_PM.disable_s3` (pc), which withdraw \_S3 from the DSDT (non-zero = withdrawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalProps {
    pub ich9_disable_s3: bool,
    pub piix4_disable_s3: bool,
}

impl VmConfig {
    /// Whether a standard VGA decodes the legacy window 0xa0000-0xbffff (so it is not RAM).
    pub fn has_vga_window(&self) -> bool {
        self.default_vga
            || self.devices.iter().any(|d| {
                matches!(
                    d,
                    DeviceConfig::Display(DisplayDeviceConfig {
                        model: DisplayModel::StdVga,
                        ..
                    })
                )
            })
    }

    /// Whether the DSDT offers \_S3 (suspend to RAM): by default on pc and q35, as QEMU 7.2;
    /// not on microvm, whose QEMU counterpart has no S3.
    pub fn s3_offered(&self) -> bool {
        match self.machine {
            MachineKind::Q35 => !self.globals.ich9_disable_s3,
            MachineKind::Pc => !self.globals.piix4_disable_s3,
            MachineKind::Microvm => false,
        }
    }
}

/// Where `-exit-stats` reports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatsConfig {
    /// Print a table to stderr at exit.
    pub table: bool,
    /// Write the JSON document (docs/EXIT-STATS.md) to this file at exit.
    pub json: Option<PathBuf>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            machine: MachineKind::default(),
            irqchip: IrqchipMode::default_for(MachineKind::default()),
            pit: true,
            smp: SmpConfig::default(),
            cpu: rvmm_arch::cpu::CpuConfig::default(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            name: None,
            kernel: None,
            initrd: Vec::new(),
            append: None,
            serial: SerialConfig::Stdio,
            no_reboot: false,
            devices: Vec::new(),
            virtio: Vec::new(),
            virtio_pci: Vec::new(),
            nodefaults: false,
            default_vga: false,
            acpi: true,
            fw_cfg: Vec::new(),
            qmp: Vec::new(),
            start_paused: false,
            incoming: None,
            pidfile: None,
            daemonize: false,
            qmp_only: false,
            exit_stats: None,
            firmware: crate::FirmwareConfig::default(),
            vnc: None,
            smbios: Default::default(),
            ide: Vec::new(),
            bzimage_decompress: BzImageDecompress::default(),
            globals: GlobalProps::default(),
            sandbox: crate::SandboxConfig::default(),
            serial_label: None,
            process: crate::ProcessConfig::default(),
            peripherals: Vec::new(),
        }
    }
}

/// Checks a guest RAM size against rvmm's limits.
pub fn check_memory_size(bytes: u64) -> Result<(), ConfigError> {
    if bytes < MIN_MEMORY_BYTES {
        return Err(ConfigError::MemoryTooSmall(bytes));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(ConfigError::MemoryTooLarge(bytes));
    }
    Ok(())
}

impl VmConfig {
    /// Checks the whole configuration; `parse_args` only returns configs that pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_memory_size(self.memory_bytes)?;
        self.smp.validate(self.machine)?;
        let mut testdevs = 0;
        for device in &self.devices {
            match device {
                &DeviceConfig::IsaDebugExit { iobase, iosize } => {
                    if iosize == 0 {
                        return Err(ConfigError::DebugExitEmpty);
                    }
                    if u32::from(iobase) + u32::from(iosize) > IO_PORT_SPACE {
                        return Err(ConfigError::DebugExitRange { iobase, iosize });
                    }
                }
                DeviceConfig::PcTestdev => {
                    testdevs += 1;
                    if testdevs > 1 {
                        return Err(ConfigError::DuplicateTestdev);
                    }
                }
                DeviceConfig::PciTestdev(_) => {
                    if self.machine == MachineKind::Microvm {
                        return Err(ConfigError::NoPciBus("pci-testdev"));
                    }
                }
                DeviceConfig::Display(_)
                | DeviceConfig::Xhci(_)
                | DeviceConfig::PcieRootPort(_) => {
                    if self.machine == MachineKind::Microvm {
                        return Err(ConfigError::NoPciBus(device.driver()));
                    }
                }
            }
        }
        self.validate_pci_buses()
    }

    /// The root bus's name: `pcie.0` on q35, `pci.0` on pc.
    pub fn root_bus_name(&self) -> &'static str {
        match self.machine {
            MachineKind::Q35 => "pcie.0",
            _ => "pci.0",
        }
    }

    /// Root ports: chassis/slot pairs unique (the parser refuses duplicate ids); every `bus=`
    /// names this machine's root bus or a port.
    fn validate_pci_buses(&self) -> Result<(), ConfigError> {
        let ports: Vec<&PcieRootPortConfig> = self
            .devices
            .iter()
            .filter_map(|d| match d {
                DeviceConfig::PcieRootPort(p) => Some(p),
                _ => None,
            })
            .collect();
        for (i, p) in ports.iter().enumerate() {
            let earlier = &ports[..i];
            if earlier
                .iter()
                .any(|q| (q.chassis, q.slot) == (p.chassis, p.slot))
            {
                return Err(ConfigError::ChassisSlotTaken {
                    chassis: p.chassis,
                    slot: p.slot,
                });
            }
        }
        let root = self.root_bus_name();
        let known = |bus: &str| bus == root || ports.iter().any(|p| p.id.as_deref() == Some(bus));
        let buses = self
            .devices
            .iter()
            .filter_map(|d| match d {
                DeviceConfig::PcieRootPort(p) => Some((d.driver(), p.bus.as_deref())),
                DeviceConfig::PciTestdev(t) => Some((d.driver(), t.bus.as_deref())),
                DeviceConfig::Xhci(x) => Some((d.driver(), x.bus.as_deref())),
                DeviceConfig::Display(v) => Some((d.driver(), v.bus.as_deref())),
                _ => None,
            })
            .chain(
                self.virtio_pci
                    .iter()
                    .map(|v| ("virtio-pci", v.pci.bus.as_deref())),
            );
        for (driver, bus) in buses {
            if let Some(bus) = bus.filter(|b| !known(b)) {
                return Err(ConfigError::BusNotFound {
                    driver: driver.into(),
                    bus: bus.into(),
                });
            }
        }
        // A port on its own bus (or in a cycle) would never be reachable.
        for p in &ports {
            let mut bus = p.bus.as_deref();
            for _ in 0..=ports.len() {
                match bus.filter(|b| *b != root) {
                    None => break,
                    Some(b) if Some(b) == p.id.as_deref() => {
                        return Err(ConfigError::BusNotFound {
                            driver: "pcie-root-port".into(),
                            bus: b.into(),
                        })
                    }
                    Some(b) => {
                        bus = ports
                            .iter()
                            .find(|q| q.id.as_deref() == Some(b))
                            .and_then(|q| q.bus.as_deref())
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_qemu() {
        let c = VmConfig::default();
        assert_eq!(c.machine, MachineKind::Pc);
        assert_eq!(c.memory_bytes, 128 * MIB);
        assert_eq!(c.smp, SmpConfig::default());
        assert_eq!(c.serial, SerialConfig::Stdio);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn machine_names() {
        assert_eq!(MachineKind::from_qemu_name("pc"), Some(MachineKind::Pc));
        assert_eq!(MachineKind::from_qemu_name("q35"), Some(MachineKind::Q35));
        assert_eq!(
            MachineKind::from_qemu_name("microvm"),
            Some(MachineKind::Microvm)
        );
        assert_eq!(
            MachineKind::from_qemu_name("pc-q35-7.2"),
            Some(MachineKind::Q35)
        );
        assert_eq!(
            MachineKind::from_qemu_name("pc-i440fx-2.12"),
            Some(MachineKind::Pc)
        );
        assert_eq!(MachineKind::from_qemu_name("pc-i440fx-"), None);
        assert_eq!(MachineKind::from_qemu_name("pc-q35-7..2"), None);
        assert_eq!(MachineKind::from_qemu_name("pc-q35-x"), None);
        assert_eq!(MachineKind::from_qemu_name("isapc"), None);
        assert_eq!(MachineKind::from_qemu_name("PC"), None);
        for m in [MachineKind::Pc, MachineKind::Q35, MachineKind::Microvm] {
            assert_eq!(MachineKind::from_qemu_name(m.name()), Some(m));
        }
    }

    #[test]
    fn memory_limits() {
        assert_eq!(check_memory_size(MIB), Ok(()));
        assert_eq!(check_memory_size(TIB), Ok(()));
        assert_eq!(
            check_memory_size(MIB - 1),
            Err(ConfigError::MemoryTooSmall(MIB - 1))
        );
        assert_eq!(
            check_memory_size(512 * 1024).unwrap_err().to_string(),
            "memory size 512 KiB is below the minimum of 1 MiB"
        );
        assert_eq!(
            check_memory_size(2 * TIB).unwrap_err().to_string(),
            "memory size 2 TiB exceeds the maximum of 1 TiB"
        );
    }

    #[test]
    fn smp_validation() {
        let ok = SmpConfig {
            cpus: 2,
            sockets: 2,
            dies: 1,
            cores: 2,
            threads: 1,
            maxcpus: 4,
        };
        assert_eq!(ok.validate(MachineKind::Pc), Ok(()));
        for bad in [
            SmpConfig { cpus: 0, ..ok },
            SmpConfig { cpus: 5, ..ok },
            SmpConfig { maxcpus: 3, ..ok },
            SmpConfig {
                threads: u32::MAX,
                ..ok
            },
        ] {
            assert_eq!(
                bad.validate(MachineKind::Pc),
                Err(ConfigError::Topology(bad))
            );
        }
        let big = SmpConfig {
            cpus: 256,
            cores: 256,
            maxcpus: 256,
            ..SmpConfig::default()
        };
        assert!(matches!(
            big.validate(MachineKind::Pc),
            Err(ConfigError::TooManyCpus { max: 255, .. })
        ));
        assert_eq!(big.validate(MachineKind::Q35), Ok(()));
    }

    #[test]
    fn device_validation() {
        let mut c = VmConfig::default();
        c.devices.push(DeviceConfig::ISA_DEBUG_EXIT_DEFAULT);
        c.devices.push(DeviceConfig::IsaDebugExit {
            iobase: 0xfffc,
            iosize: 4,
        });
        c.devices.push(DeviceConfig::PcTestdev);
        assert_eq!(c.validate(), Ok(()));

        c.devices.push(DeviceConfig::PcTestdev);
        assert_eq!(c.validate(), Err(ConfigError::DuplicateTestdev));

        c.devices = vec![DeviceConfig::IsaDebugExit {
            iobase: 0xfffd,
            iosize: 4,
        }];
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "isa-debug-exit: ports 0xfffd+4 extend past the I/O port space (0xffff)"
        );
        c.devices = vec![DeviceConfig::IsaDebugExit {
            iobase: 0xf4,
            iosize: 0,
        }];
        assert_eq!(c.validate(), Err(ConfigError::DebugExitEmpty));
        assert_eq!(DeviceConfig::PcTestdev.driver(), "pc-testdev");
    }
}
