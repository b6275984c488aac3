//! The chipset's fixed registers: the ACPI PM block (PIIX4 PM / ICH9 LPC), the CMOS RTC, and
//! on microvm the reset control register (on pc and q35 it sits inside the PCI config ports).

use super::{DeviceManager, DeviceManagerError};
use rvmm_arch::layout::low_ram_end;
use rvmm_cli::MachineKind;
use rvmm_devices::legacy::{self, AcpiPm, Cmos, CmosMemory, ResetControl};
use rvmm_devices::VmControl;
use std::sync::Arc;

/// What the chipset needs to know of the machine.
pub struct ChipsetConfig {
    pub machine: MachineKind,
    pub memory_bytes: u64,
    pub cpus: u32,
    /// PC firmware's boot order (`-boot` drive letters) for the CMOS; None without firmware.
    pub boot_order: Option<String>,
}

/// The chipset devices the VMM drives itself (reset, power button).
pub struct Chipset {
    pub acpi_pm: Arc<AcpiPm>,
    pub cmos: Arc<Cmos>,
}

/// CMOS boot-order bytes as QEMU's PC writes them (hw/i386/pc.c `set_boot_dev`): the first two
/// devices' nibbles in 0x3d, the third in the high nibble of 0x38 (whose bit 0 clear keeps the
/// floppy boot-signature check, QEMU's default).
pub fn set_cmos_boot_order(cmos: &Cmos, order: &str) {
    let mut nibbles = order.chars().filter_map(rvmm_cli::boot_nibble);
    let (first, second, third) = (
        nibbles.next().unwrap_or(0),
        nibbles.next().unwrap_or(0),
        nibbles.next().unwrap_or(0),
    );
    cmos.set_nvram(0x3d, (second << 4) | first);
    cmos.set_nvram(0x38, third << 4);
}

pub fn attach_chipset(
    dm: &DeviceManager,
    config: &ChipsetConfig,
    control: &Arc<dyn VmControl>,
) -> Result<Chipset, DeviceManagerError> {
    let acpi_pm = Arc::new(AcpiPm::new(control.clone()));
    dm.add_pio("ACPI PM", legacy::PM_BASE, legacy::PM_LEN, acpi_pm.clone())?;
    let below_4g = low_ram_end(config.memory_bytes);
    let cmos = Cmos::new(CmosMemory {
        below_4g,
        above_4g: config.memory_bytes - below_4g,
        cpus: config.cpus,
    });
    let cmos = Arc::new(cmos);
    if let Some(order) = &config.boot_order {
        set_cmos_boot_order(&cmos, order);
    }
    dm.add_pio(
        "CMOS RTC",
        legacy::CMOS_PORT_BASE,
        legacy::CMOS_PORT_LEN,
        cmos.clone(),
    )?;
    if config.machine == MachineKind::Microvm {
        dm.add_pio(
            "reset control",
            legacy::RESET_CONTROL_PORT,
            legacy::RESET_CONTROL_LEN,
            Arc::new(ResetControl::new(control.clone())),
        )?;
    }
    Ok(Chipset { acpi_pm, cmos })
}
