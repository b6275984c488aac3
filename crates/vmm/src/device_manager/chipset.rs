//! The chipset's fixed registers: the ACPI PM block (PIIX4 PM / ICH9 LPC), the CMOS RTC, the
//! APM ports and system control port A (0x92) on pc and q35, and on microvm the reset control register (on pc and q35 it sits
//! inside the PCI config ports). The chipset's PCI functions are attached with the PCI bus
//! (`pci::attach_pci`); they move the PM block through [`PmBlockMover`].

use super::{DeviceManager, DeviceManagerError};
use rvmm_arch::layout::low_ram_end_below;
use rvmm_cli::MachineKind;
use rvmm_devices::chipset::{Apm, ApmKind, PmBaseRelocation, APM_PORT_BASE, APM_PORT_LEN};
use rvmm_devices::legacy::{self, AcpiPm, Cmos, CmosMemory, ResetControl};
use rvmm_devices::{DeviceId, PioBus, VmControl};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the chipset needs to know of the machine.
pub struct ChipsetConfig {
    pub machine: MachineKind,
    pub memory_bytes: u64,
    /// Where the RAM below 4 GiB ends at the latest (crate::platform::low_ram_limit).
    pub low_ram_limit: u64,
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

/// Moves the PM block's port range when firmware programs the ICH9 PMBASE or PIIX4 PMBA
/// (SeaBIOS: 0x600 with `etc/table-loader`, else 0xb000), and back to 0x600 at reset.
pub struct PmBlockMover {
    pio: Arc<PioBus>,
    id: DeviceId,
    base: Mutex<u64>,
    warned: AtomicBool,
}

impl PmBaseRelocation for PmBlockMover {
    fn move_pm_block(&self, base: u16) {
        let mut current = self.base.lock().unwrap_or_else(|e| e.into_inner());
        let new = u64::from(base);
        if *current == new {
            return;
        }
        match self.pio.move_range(self.id, *current, new) {
            Ok(()) => {
                tracing::debug!(old = *current, new, "ACPI PM block moved");
                *current = new;
            }
            // The guest put it over another device: it stays where it was, as QEMU's overlap
            // rules would hide one of the two anyway.
            Err(e) if !self.warned.swap(true, Ordering::Relaxed) => {
                tracing::warn!("ACPI PM block not moved to {new:#x}: {e}");
            }
            Err(_) => {}
        }
    }
}

pub fn attach_chipset(
    dm: &DeviceManager,
    config: &ChipsetConfig,
    control: &Arc<dyn VmControl>,
) -> Result<Chipset, DeviceManagerError> {
    let acpi_pm = Arc::new(AcpiPm::new(control.clone()));
    let pm_id = dm.add_pio("ACPI PM", legacy::PM_BASE, legacy::PM_LEN, acpi_pm.clone())?;
    dm.states().register("ACPI PM", acpi_pm.clone());
    let mover: Arc<dyn PmBaseRelocation> = Arc::new(PmBlockMover {
        pio: dm.pio.clone(),
        id: pm_id,
        base: Mutex::new(legacy::PM_BASE),
        warned: AtomicBool::new(false),
    });
    // Attached once per device manager; a second chipset would fail on the ports above.
    let _ = dm.pm_block.set(mover);
    let below_4g = low_ram_end_below(config.memory_bytes, config.low_ram_limit);
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
    dm.states().register("CMOS RTC", cmos.clone());
    let apm = match config.machine {
        MachineKind::Microvm => None,
        MachineKind::Pc => Some(ApmKind::Piix4),
        MachineKind::Q35 => Some(ApmKind::Ich9),
    };
    if let Some(kind) = apm {
        let apm = Arc::new(Apm::new(kind, Some(acpi_pm.clone())));
        dm.add_pio("APM", APM_PORT_BASE, APM_PORT_LEN, apm.clone())?;
        dm.states().register("APM", apm);
        let port92 = Arc::new(legacy::Port92::new(control.clone()));
        dm.add_pio(
            "port 92",
            legacy::PORT92_PORT,
            legacy::PORT92_LEN,
            port92.clone(),
        )?;
        dm.states().register("port 92", port92);
    }
    if config.machine == MachineKind::Microvm {
        dm.add_pio(
            "reset control",
            legacy::RESET_CONTROL_PORT,
            legacy::RESET_CONTROL_LEN,
            Arc::new(ResetControl::new(control.clone())),
        )?;
        dm.states().register_stateless("reset control");
    }
    Ok(Chipset { acpi_pm, cmos })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvmm_devices::BusDevice;

    fn nvram(cmos: &Cmos, index: u8) -> u8 {
        cmos.write(0, &[index]);
        let mut b = [0u8];
        cmos.read(1, &mut b);
        b[0]
    }

    #[test]
    fn boot_order_bytes_are_qemus() {
        let cmos = Cmos::new(CmosMemory {
            below_4g: 128 << 20,
            above_4g: 0,
            cpus: 1,
        });
        // QEMU's default "cad": disk (2), floppy (1), CD (3).
        set_cmos_boot_order(&cmos, "cad");
        assert_eq!((nvram(&cmos, 0x3d), nvram(&cmos, 0x38)), (0x12, 0x30));
        set_cmos_boot_order(&cmos, "d");
        assert_eq!((nvram(&cmos, 0x3d), nvram(&cmos, 0x38)), (0x03, 0x00));
        set_cmos_boot_order(&cmos, "ndc");
        assert_eq!((nvram(&cmos, 0x3d), nvram(&cmos, 0x38)), (0x34, 0x20));
    }
}
