//! What a PC guest finds instead of a BIOS: ACPI and MP tables in the BIOS area and the fw_cfg
//! items QEMU provides (the CMOS RTC and the reset control register are the chipset's, in
//! `device_manager::chipset`).

use std::sync::Arc;

use rvmm_arch::acpi::{AcpiConfig, AcpiError, PciHostBridge};
use rvmm_arch::layout::{low_ram_end_below, CMDLINE_START, HIMEM_START, MMIO_GAP_END};
use rvmm_arch::mptable::MpTableError;
use rvmm_arch::topology::CpuTopology;
use rvmm_arch::{BootEntry, BootProtocol};
use rvmm_cli::{FwCfgData, FwCfgFile, MachineKind, SerialConfig, VmConfig};
use rvmm_devices::legacy::{self, fw_cfg as fc, FwCfg};
use vm_memory::GuestMemoryMmap;

use crate::device_manager::DeviceManager;
use crate::VmmError;

/// Errors writing the firmware tables or building fw_cfg's items.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("firmware tables: {0}")]
    MpTable(#[source] MpTableError),
    #[error("firmware tables: {0}")]
    Acpi(#[source] AcpiError),
    #[error("firmware tables: {0}")]
    Smbios(#[source] rvmm_arch::smbios::SmbiosError),
    #[error("fw_cfg: {0}")]
    FwCfg(#[source] fc::FwCfgError),
    #[error("-fw_cfg name={name}: {source}")]
    UserFile {
        name: String,
        #[source]
        source: fc::FwCfgError,
    },
    #[error("-fw_cfg name={name}: {source}")]
    UserFileRead {
        name: String,
        #[source]
        source: crate::input::InputError,
    },
}

/// e820 type of RAM in `etc/e820`.
const E820_RAM: u32 = 1;
/// QEMU loads the bzImage setup code here (`real_addr` for boot protocol 2.00+).
const BZIMAGE_SETUP_ADDR: u32 = 0x1_0000;

/// The APIC IDs of the boot CPUs, from the `-smp` topology as QEMU assigns them.
pub(crate) fn apic_ids(config: &VmConfig) -> Vec<u32> {
    let topo = CpuTopology {
        sockets: config.smp.sockets,
        dies: config.smp.dies,
        cores: config.smp.cores,
        threads: config.smp.threads,
    };
    topo.apic_ids(config.smp.cpus)
}

/// The firmware tables of one VM, rewritten at every boot (a reset may have clobbered them).
pub(crate) struct FirmwareTables {
    acpi: Option<AcpiConfig>,
    apic_ids: Vec<u32>,
}

impl FirmwareTables {
    /// `virtio_mmio`: the transports the DSDT announces.
    pub(crate) fn new(
        config: &VmConfig,
        virtio_mmio: Vec<rvmm_arch::acpi::VirtioMmioDevice>,
    ) -> Self {
        let apic_ids = apic_ids(config);
        let acpi = config.acpi.then(|| AcpiConfig {
            apic_ids: apic_ids.clone(),
            com1: config.serial != SerialConfig::None,
            pci: match config.machine {
                MachineKind::Q35 => PciHostBridge::Pcie,
                MachineKind::Pc => PciHostBridge::Pci,
                MachineKind::Microvm => PciHostBridge::None,
            },
            virtio_mmio,
            s3: config.s3_offered(),
            // QEMU's microvm has no i8042; rvmm's keeps one (for reboot) but does not announce it.
            i8042: config.machine != MachineKind::Microvm,
        });
        Self { acpi, apic_ids }
    }

    /// The ACPI tables for PC firmware to link (unless `acpi=off`); the firmware builds its own
    /// MP table.
    pub(crate) fn firmware_acpi(
        &self,
    ) -> Result<Option<rvmm_arch::acpi::FirmwareAcpi>, FirmwareError> {
        self.acpi
            .as_ref()
            .map(rvmm_arch::acpi::firmware_tables)
            .transpose()
            .map_err(FirmwareError::Acpi)
    }

    /// The FACS address the tables get without firmware (None with `acpi=off`).
    pub(crate) fn facs_addr(&self) -> Option<u64> {
        self.acpi.as_ref().and_then(rvmm_arch::acpi::facs_addr)
    }

    /// Writes the MP table and (unless `acpi=off`) the ACPI tables, and hands the kernel the
    /// RSDP address.
    pub(crate) fn write(
        &self,
        mem: &GuestMemoryMmap,
        entry: &BootEntry,
    ) -> Result<(), FirmwareError> {
        rvmm_arch::mptable::write_mptable(mem, &self.apic_ids).map_err(FirmwareError::MpTable)?;
        if let Some(acpi) = &self.acpi {
            let rsdp =
                rvmm_arch::acpi::write_acpi_tables(mem, acpi).map_err(FirmwareError::Acpi)?;
            rvmm_arch::acpi::publish_rsdp(mem, entry, rsdp).map_err(FirmwareError::Acpi)?;
        }
        Ok(())
    }
}

/// The kernel, initrd and command line given with `-kernel`, for the fw_cfg kernel items.
pub(crate) struct KernelFiles<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a [u8],
    pub entry: &'a BootEntry,
}

/// The RAM ranges of the e820 map: below the PCI hole from 0 (ending at `low_limit` at the
/// latest), and above 4 GiB.
fn ram_ranges(mem_size: u64, low_limit: u64) -> Vec<(u64, u64)> {
    let low = low_ram_end_below(mem_size, low_limit);
    [(0, low), (MMIO_GAP_END, mem_size - low)]
        .into_iter()
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// QEMU's `etc/e820`: packed {u64 address, u64 length, u32 type} little-endian entries, RAM
/// below the PCI hole from 0 and RAM above 4 GiB (hw/i386/e820_memory_layout.h).
fn e820_file(mem_size: u64, low_limit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (addr, len) in ram_ranges(mem_size, low_limit) {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&E820_RAM.to_le_bytes());
    }
    out
}

/// QEMU 7.2's machine description and versioned name, its SMBIOS type 1 product and version
/// (hw/i386/pc_q35.c, pc_piix.c `mc->desc`, `mc->name`).
fn smbios_machine(machine: MachineKind) -> (&'static str, &'static str) {
    match machine {
        MachineKind::Q35 => ("Standard PC (Q35 + ICH9, 2009)", "pc-q35-7.2"),
        MachineKind::Pc | MachineKind::Microvm => {
            ("Standard PC (i440FX + PIIX, 1996)", "pc-i440fx-7.2")
        }
    }
}

/// The SMBIOS files QEMU gives PC firmware (hw/i386/fw_cfg.c `fw_cfg_build_smbios`): the
/// processor ID is the boot CPU's CPUID leaf 1 EAX and EDX.
pub(crate) fn smbios_blobs(
    config: &VmConfig,
    cpuid_leaf1: Option<(u32, u32)>,
) -> Result<rvmm_arch::smbios::SmbiosBlobs, FirmwareError> {
    let (product, version) = smbios_machine(config.machine);
    let (cpuid_version, cpuid_features) = cpuid_leaf1.unwrap_or_default();
    let ranges = ram_ranges(config.memory_bytes, crate::platform::low_ram_limit(config));
    rvmm_arch::smbios::build(&rvmm_arch::smbios::SmbiosConfig {
        fields: &config.smbios,
        product,
        version,
        sockets: config.smp.sockets,
        dies: config.smp.dies,
        cores: config.smp.cores,
        threads: config.smp.threads,
        cpuid_version,
        cpuid_features,
        ram_size: config.memory_bytes,
        ram_ranges: &ranges,
        entry_point: rvmm_arch::smbios::EntryPointType::Bits32,
    })
    .map_err(FirmwareError::Smbios)
}

/// The kernel items QEMU's `x86_load_linux` sets for `-kernel`: a bzImage is split into its
/// setup sectors and protected-mode part; other formats are given whole with their entry.
fn add_kernel_items(fw: &mut FwCfg, k: &KernelFiles) -> Result<(), fc::FwCfgError> {
    let len32 = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX);
    let kernel = if k.entry.protocol == BootProtocol::BzImage && k.kernel.len() > 0x1f1 {
        // Boot protocol: setup_sects at 0x1f1, 0 meaning 4.
        let sects = match k.kernel[0x1f1] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = ((sects + 1) * 512).min(k.kernel.len());
        let (setup, rest) = k.kernel.split_at(setup_len);
        fw.add_u32(fc::FW_CFG_SETUP_ADDR, BZIMAGE_SETUP_ADDR)?;
        fw.add_u32(fc::FW_CFG_SETUP_SIZE, len32(setup))?;
        fw.add_item(fc::FW_CFG_SETUP_DATA, setup.to_vec())?;
        rest
    } else {
        fw.add_u32(fc::FW_CFG_KERNEL_ENTRY, k.entry.rip as u32)?;
        k.kernel
    };
    fw.add_u32(fc::FW_CFG_KERNEL_ADDR, HIMEM_START as u32)?;
    fw.add_u32(fc::FW_CFG_KERNEL_SIZE, len32(kernel))?;
    fw.add_item(fc::FW_CFG_KERNEL_DATA, kernel.to_vec())?;
    let mut cmdline = k.cmdline.to_vec();
    cmdline.push(0);
    fw.add_u32(fc::FW_CFG_CMDLINE_ADDR, CMDLINE_START as u32)?;
    fw.add_u32(fc::FW_CFG_CMDLINE_SIZE, len32(&cmdline))?;
    fw.add_item(fc::FW_CFG_CMDLINE_DATA, cmdline)?;
    if let Some(initrd) = k.initrd {
        fw.add_u32(fc::FW_CFG_INITRD_SIZE, len32(initrd))?;
        fw.add_item(fc::FW_CFG_INITRD_DATA, initrd.to_vec())?;
    }
    Ok(())
}

/// What fw_cfg tells the firmware about the machine, and the user's `-fw_cfg` files.
pub(crate) struct FwCfgConfig<'a> {
    pub memory_bytes: u64,
    /// Where the RAM below 4 GiB ends at the latest (crate::platform::low_ram_limit).
    pub low_ram_limit: u64,
    pub cpus: u32,
    pub max_cpus: u32,
    pub files: &'a [FwCfgFile],
    /// `etc/msr_feature_control` (rvmm_arch::cpu::feature_control), for SeaBIOS.
    pub feature_control: Option<u64>,
    /// Set when PC firmware boots the VM: what it reads beyond the basics.
    pub firmware: Option<FirmwareItems<'a>>,
}

/// The items QEMU gives PC firmware: the ACPI tables with their linker commands, and how to
/// boot (hw/nvram/fw_cfg.c `fw_cfg_bootsplash`, `fw_cfg_reboot`; hw/i386/fw_cfg.c).
pub(crate) struct FirmwareItems<'a> {
    pub acpi: Option<rvmm_arch::acpi::FirmwareAcpi>,
    pub boot: &'a rvmm_cli::BootConfig,
    /// `bootorder`: one OpenFirmware device path per line, from `bootindex=`.
    pub bootorder: Vec<u8>,
    /// `etc/smbios/smbios-tables` and `etc/smbios/smbios-anchor`.
    pub smbios: Option<rvmm_arch::smbios::SmbiosBlobs>,
}

/// Adds the firmware items of `items` to `fw`.
fn add_firmware_items(fw: &mut FwCfg, items: &FirmwareItems) -> Result<(), fc::FwCfgError> {
    if let Some(acpi) = &items.acpi {
        use rvmm_arch::acpi::{RSDP_FILE, TABLES_FILE, TABLE_LOADER_FILE};
        fw.add_file(TABLES_FILE, acpi.tables.clone())?;
        fw.add_file(RSDP_FILE, acpi.rsdp.clone())?;
        fw.add_file(TABLE_LOADER_FILE, acpi.loader.clone())?;
    }
    if let Some(smbios) = &items.smbios {
        use rvmm_arch::smbios::{ANCHOR_FILE, TABLES_FILE};
        fw.add_file(TABLES_FILE, smbios.tables.clone())?;
        fw.add_file(ANCHOR_FILE, smbios.anchor.clone())?;
    }
    // SeaBIOS's serial console (sercon) on COM1; with a VGA it mirrors the screen (docs/DISPLAY.md).
    fw.add_u16(fc::FW_CFG_NOGRAPHIC, 1)?;
    // KVM's irqchip routes IRQ 0 to IOAPIC pin 2, as QEMU tells the firmware.
    fw.add_u32(fc::FW_CFG_IRQ0_OVERRIDE, 1)?;
    if let Some(ms) = items.boot.splash_time {
        fw.add_file("etc/boot-menu-wait", ms.to_le_bytes().to_vec())?;
    }
    // -1: never retry a failed boot (QEMU's default for reboot-timeout).
    let fail_wait = items.boot.reboot_timeout.map_or(-1i32, |ms| ms as i32);
    fw.add_file("etc/boot-fail-wait", fail_wait.to_le_bytes().to_vec())?;
    Ok(())
}

/// The fw_cfg device QEMU's firmware interface describes: RAM, CPUs, boot order, e820, the
/// `-kernel` items and the user's files (read from disk here).
fn fw_cfg_device(
    config: &FwCfgConfig,
    mem: &GuestMemoryMmap,
    kernel: Option<&KernelFiles>,
) -> Result<FwCfg, FirmwareError> {
    let mut fw = FwCfg::new();
    fw.enable_dma(mem.clone());
    fw.set_ram_size(config.memory_bytes);
    fw.set_cpus(config.cpus as u16, config.max_cpus as u16);
    let menu = config.firmware.as_ref().is_some_and(|f| f.boot.menu);
    fw.add_u16(fc::FW_CFG_BOOT_MENU, u16::from(menu))
        .map_err(FirmwareError::FwCfg)?;
    let bootorder = config
        .firmware
        .as_ref()
        .map(|f| f.bootorder.clone())
        .unwrap_or_default();
    fw.add_file("bootorder", bootorder)
        .map_err(FirmwareError::FwCfg)?;
    if let Some(items) = &config.firmware {
        add_firmware_items(&mut fw, items).map_err(FirmwareError::FwCfg)?;
    }
    fw.add_file(
        "etc/e820",
        e820_file(config.memory_bytes, config.low_ram_limit),
    )
    .map_err(FirmwareError::FwCfg)?;
    if let Some(k) = kernel {
        add_kernel_items(&mut fw, k).map_err(FirmwareError::FwCfg)?;
    }
    if let Some(value) = config.feature_control {
        fw.add_file("etc/msr_feature_control", value.to_le_bytes().to_vec())
            .map_err(FirmwareError::FwCfg)?;
    }
    for item in config.files {
        if item.outside_opt() {
            // QEMU's wording (hw/nvram/fw_cfg.c).
            tracing::warn!(
                "-fw_cfg name={}: externally provided fw_cfg item names should be prefixed with \"opt/\"",
                item.name
            );
        }
        let data = match &item.data {
            FwCfgData::String(s) => s.as_bytes().to_vec(),
            FwCfgData::File(path) => {
                // fw_cfg's directory gives each file a 32-bit size.
                crate::input::read_input(
                    "file",
                    path,
                    u64::from(u32::MAX),
                    "a fw_cfg file can have",
                )
                .map_err(|source| FirmwareError::UserFileRead {
                    name: item.name.clone(),
                    source,
                })?
            }
        };
        fw.add_file(&item.name, data)
            .map_err(|source| FirmwareError::UserFile {
                name: item.name.clone(),
                source,
            })?;
    }
    Ok(fw)
}

/// Builds fw_cfg (both interfaces) and puts it on the port bus.
pub(crate) fn attach_fw_cfg(
    dm: &DeviceManager,
    config: &FwCfgConfig,
    mem: &GuestMemoryMmap,
    kernel: Option<&KernelFiles>,
) -> Result<(), VmmError> {
    let fw = Arc::new(fw_cfg_device(config, mem, kernel)?);
    dm.add_pio(
        "fw_cfg",
        legacy::FW_CFG_PORT_BASE,
        legacy::FW_CFG_PORT_LEN,
        fw.clone(),
    )?;
    dm.add_pio(
        "fw_cfg DMA",
        fc::FW_CFG_DMA_PORT,
        fc::FW_CFG_DMA_PORT_LEN,
        fw.dma_port(),
    )?;
    dm.states().register("fw_cfg", fw.clone());
    dm.states().register_stateless("fw_cfg DMA");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_file_matches_qemus_layout() {
        let f = e820_file(256 << 20, rvmm_arch::layout::MMIO_GAP_START);
        assert_eq!(f.len(), 20);
        assert_eq!(f[0..8], 0u64.to_le_bytes());
        assert_eq!(f[8..16], (256u64 << 20).to_le_bytes());
        assert_eq!(f[16..20], 1u32.to_le_bytes());
        let f = e820_file(5 << 30, rvmm_arch::layout::MMIO_GAP_START);
        assert_eq!(f.len(), 40);
        assert_eq!(f[20..28], (4u64 << 30).to_le_bytes());
        assert_eq!(f[28..36], (2u64 << 30).to_le_bytes());
    }

    fn fw_cfg_with(files: &[FwCfgFile]) -> Result<FwCfg, FirmwareError> {
        let mem = GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)])
            .expect("1 MiB of guest memory");
        let config = FwCfgConfig {
            memory_bytes: 1 << 20,
            low_ram_limit: rvmm_arch::layout::MMIO_GAP_START,
            cpus: 1,
            max_cpus: 1,
            files,
            feature_control: None,
            firmware: None,
        };
        fw_cfg_device(&config, &mem, None)
    }

    #[test]
    fn user_file_errors_name_the_option_and_keep_the_cause() {
        let missing = [FwCfgFile {
            name: "opt/rvmm/x".into(),
            data: FwCfgData::File("/nonexistent/fw_cfg-item".into()),
        }];
        let e = fw_cfg_with(&missing)
            .err()
            .expect("a missing file is an error");
        assert!(
            e.to_string().starts_with(
                "-fw_cfg name=opt/rvmm/x: could not load file '/nonexistent/fw_cfg-item': "
            ),
            "{e}"
        );
        assert!(matches!(
            e,
            FirmwareError::UserFileRead {
                source: crate::input::InputError::Io { ref source, .. },
                ..
            } if source.kind() == std::io::ErrorKind::NotFound
        ));
        let twice = [
            FwCfgFile {
                name: "opt/rvmm/y".into(),
                data: FwCfgData::String("a".into()),
            },
            FwCfgFile {
                name: "opt/rvmm/y".into(),
                data: FwCfgData::String("b".into()),
            },
        ];
        let e = fw_cfg_with(&twice).err().expect("a duplicate is an error");
        assert!(
            e.to_string().starts_with("-fw_cfg name=opt/rvmm/y: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(fw_cfg_with(&twice[..1]).is_ok());
    }

    #[test]
    fn apic_ids_follow_the_topology() {
        let mut c = VmConfig::default();
        c.smp.cpus = 6;
        c.smp.sockets = 2;
        c.smp.cores = 3;
        c.smp.maxcpus = 6;
        assert_eq!(apic_ids(&c), vec![0, 1, 2, 4, 5, 6]);
    }
}
