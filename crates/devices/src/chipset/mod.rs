//! The chipset PCI functions QEMU's `q35` and `pc` machines have besides the host bridge, with
//! the registers SeaBIOS programs in them (sb/fw/pciinit.c, sb/fw/smm.c):
//! - q35: the ICH9 LPC bridge at 00:1f.0 ([`Ich9Lpc`]) and the ICH9 SMBus controller at
//!   00:1f.3 ([`Ich9Smbus`]);
//! - pc: the PIIX3 PCI-to-ISA bridge at 00:01.0 ([`Piix3`]) and the PIIX4 power management
//!   function at 00:01.3 ([`Piix4Pm`]); 00:01.1 is the PIIX IDE function (storage);
//! - both: the APM control/status ports 0xb2/0xb3 ([`Apm`]).
//!
//! Like QEMU's, the device-specific area (0x40-0xff) of these functions is guest-writable
//! storage except where a register has its own mask. What rvmm acts on:
//! - the ACPI PM I/O base (ICH9 PMBASE + ACPI_CNTL.ACPI_EN, PIIX4 PMBA + PMREGMISC bit 0): the
//!   PM block ([`crate::legacy::AcpiPm`]) moves there through a [`PmBaseRelocation`], and back
//!   to [`crate::legacy::PM_BASE`] at reset, where rvmm's own FADT says it is;
//! - SMM stays off: PIIX4 DEVACTB reads APMC_EN (0x5b bit 1) and the ICH9 PM block's SMI_EN
//!   reads APMC_EN, as QEMU presets them without SMM, so SeaBIOS skips its SMM setup
//!   (sb/fw/smm.c `piix4_apmc_smm_setup`, `ich9_lpc_apmc_smm_setup`) instead of raising an SMI
//!   and waiting on port 0xb3 for ever.
//!
//! Everything else (PIRQ routing, RCBA, GEN_PMCON, SMBus base and host configuration) is
//! stored and read back only: PCI INTx lines are wired to fixed GSIs
//! (`rvmm_arch::pci_irq`), the RCBA chipset registers and the SMBus host controller I/O are not
//! implemented (reads of their MMIO/ports find nothing).

mod apm;
mod lpc;
mod piix;

pub use apm::{Apm, ApmKind, APM_PORT_BASE, APM_PORT_LEN};
pub use lpc::{Ich9Lpc, Ich9Smbus, ICH9_LPC_DEVFN, ICH9_SMBUS_DEVFN};
pub use piix::{Piix3, Piix4Pm, PIIX3_DEVFN, PIIX4_PM_DEVFN};

use std::sync::{Arc, Mutex, MutexGuard};

use crate::legacy::PM_BASE;
use crate::pci::{BarChange, PciConfig, PciIdentity, PCI_CONFIG_SPACE_SIZE};

/// Moves the ACPI PM I/O block when firmware programs the chipset's PM base; implemented by the
/// VMM's device manager (a bus range move). Called from the guest's config write, under the
/// PCI bus's config-write lock (see [`crate::pci::BarRelocation`] for what that allows).
pub trait PmBaseRelocation: Send + Sync {
    /// Decode the PM block at port `base` from now on.
    fn move_pm_block(&self, base: u16);
}

pub(crate) const VENDOR_INTEL: u16 = 0x8086;
/// Start of the device-specific registers.
const DEVICE_AREA: usize = 0x40;

/// A function's config space with the whole device area writable, as QEMU's `pci_init_wmask`.
fn chipset_config(id: &PciIdentity, multifunction: bool) -> PciConfig {
    let mut c = PciConfig::new(id);
    // In range by construction.
    let _ = c.set_write_mask(DEVICE_AREA, &[0xff; PCI_CONFIG_SPACE_SIZE - DEVICE_AREA]);
    if multifunction {
        c.set_multifunction();
    }
    c
}

/// Store power-on values `(offset, bytes)` in the device area.
fn set_defaults(c: &mut PciConfig, defaults: &[(usize, &[u8])]) {
    for (offset, bytes) in defaults {
        // Constant offsets inside the device area.
        let _ = c.set_device_bytes(*offset, bytes);
    }
}

/// Whether a config write of `len` bytes at byte `at` touches `[start, start + reg_len)`.
fn overlaps(at: usize, len: usize, start: usize, reg_len: usize) -> bool {
    at < start + reg_len && start < at.saturating_add(len)
}

/// The byte offset a `(reg, offset)` config write starts at.
fn write_start(reg: usize, offset: usize) -> usize {
    reg.saturating_mul(4).saturating_add(offset)
}

/// Where a chipset function's config space places the ACPI PM block: a 32-bit base register
/// (address bits in `mask`) and the enable bit of another register (ICH9 LPC: PMBASE and
/// ACPI_CNTL.ACPI_EN; PIIX4 PM: PMBA and PMREGMISC.PMIOSE).
struct PmBaseDecode {
    base: usize,
    mask: u32,
    enable: usize,
    enable_bit: u8,
}

/// The config space of a function that places the PM block, with the relocation that moves
/// the block when the guest programs it and back to [`PM_BASE`] at reset.
struct PmConfig {
    config: Mutex<PciConfig>,
    relocation: Option<Arc<dyn PmBaseRelocation>>,
    decode: PmBaseDecode,
    /// The function's power-on register values (also applied at reset).
    power_on: fn(&mut PciConfig),
}

impl PmConfig {
    fn lock(&self) -> MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The PM block's base if the guest enabled one (enable bit set and a non-zero base).
    fn pm_base(&self) -> Option<u16> {
        self.enabled_base(&self.lock())
    }

    fn enabled_base(&self, c: &PciConfig) -> Option<u16> {
        let d = &self.decode;
        let base = u32::from_le_bytes(c.bytes_at(d.base)) & d.mask;
        // The mask keeps the base below 0x10000.
        (c.byte(d.enable) & d.enable_bit != 0 && base != 0).then_some(base as u16)
    }

    /// A config write; moves the PM block if it touched the base or its enable.
    fn write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let (changes, moved) = {
            let mut c = self.lock();
            let changes = c.write(reg, offset, data);
            let at = write_start(reg, offset);
            let d = &self.decode;
            let pm = overlaps(at, data.len(), d.base, 4) || overlaps(at, data.len(), d.enable, 1);
            (changes, pm.then(|| self.enabled_base(&c)).flatten())
        };
        if let (Some(base), Some(r)) = (moved, &self.relocation) {
            r.move_pm_block(base);
        }
        changes
    }

    /// Power-on values again, and the PM block back where the FADT says.
    fn reset(&self) -> Vec<BarChange> {
        let changes = {
            let mut c = self.lock();
            let changes = c.reset();
            (self.power_on)(&mut c);
            changes
        };
        if let Some(r) = &self.relocation {
            // PM_BASE is a port number.
            r.move_pm_block(PM_BASE as u16);
        }
        changes
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::PmBaseRelocation;
    use std::sync::Mutex;

    /// Records every move.
    #[derive(Default)]
    pub struct RecordingRelocation(pub Mutex<Vec<u16>>);

    impl PmBaseRelocation for RecordingRelocation {
        fn move_pm_block(&self, base: u16) {
            self.0.lock().unwrap().push(base);
        }
    }

    impl RecordingRelocation {
        pub fn moves(&self) -> Vec<u16> {
            self.0.lock().unwrap().clone()
        }
    }

    /// Read byte `offset` of a function.
    pub fn read8(dev: &dyn crate::pci::PciDevice, offset: usize) -> u8 {
        (dev.config_read(offset / 4) >> (8 * (offset % 4))) as u8
    }

    pub fn write8(dev: &dyn crate::pci::PciDevice, offset: usize, value: u8) {
        dev.config_write(offset / 4, offset % 4, &[value]);
    }

    pub fn write32(dev: &dyn crate::pci::PciDevice, offset: usize, value: u32) {
        dev.config_write(offset / 4, 0, &value.to_le_bytes());
    }
}
