//! The PIIX3 PCI-to-ISA bridge (00:01.0, 8086:7000) and the PIIX4 power management function
//! (00:01.3, 8086:7113) of QEMU's `pc` (hw/isa/piix.c `piix3_reset`, hw/acpi/piix4.c
//! `piix4_pm_realize` / `piix4_pm_reset`; 82371AB datasheet section 3.3 and 7.2).
//!
//! PIIX3: PIRQRC A-D (0x60-0x63), power-on 0x80 (routing disabled), and the other power-on
//! values QEMU's reset gives (COMMAND 0x0007, 0x4c 0x4d, 0x69 0x02, 0x70 0x80, ...).
//!
//! PIIX4 PM: PMBA (0x40, bits 15:6, bit 0 reads 1), DEVACTB (0x58-0x5b), PMREGMISC (0x80,
//! bit 0 enables the PM I/O block), SMBBA (0x90, bits 15:4, bit 0 reads 1, QEMU's 0xb100) and
//! SMBHSTCFG (0xd2, 0x09). Without SMM, QEMU sets DEVACTB bit 25 (APMC_EN, byte 0x5b = 0x02) at
//! power-on and reset, which tells SeaBIOS the SMM setup is done (sb/fw/smm.c
//! `piix4_apmc_smm_setup`). An enabled PMBA moves the PM block ([`super::PmBaseRelocation`]);
//! the SMBus host controller behind SMBBA is not implemented.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{chipset_config, set_defaults, PmBaseDecode, PmBaseRelocation, PmConfig, VENDOR_INTEL};
use crate::pci::{
    BarChange, PciConfig, PciDevice, PciIdentity, PCI_SUBDEVICE_ID_QEMU,
    PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};

/// Where QEMU's pc puts the PIIX3 bridge and the PIIX4 PM function.
pub const PIIX3_DEVFN: (u8, u8) = (1, 0);
pub const PIIX4_PM_DEVFN: (u8, u8) = (1, 3);

const PIIX3_DEVICE_ID: u16 = 0x7000;
const PIIX4_PM_DEVICE_ID: u16 = 0x7113;
const PIIX4_PM_REVISION: u8 = 0x03;

/// Bus master, memory and I/O (QEMU's `piix3_reset`).
const PIIX3_COMMAND: u16 = 0x0007;
/// STATUS: medium DEVSEL timing.
const STATUS_DEVSEL_MEDIUM: u16 = 0x0200;
/// STATUS: medium DEVSEL, fast back-to-back capable (QEMU's piix4 config 0x06 = 0x80).
const STATUS_PIIX4_PM: u16 = 0x0280;
const PIRQRC: usize = 0x60;
/// QEMU's `piix3_reset` values of the device area.
const PIIX3_DEFAULTS: [(usize, &[u8]); 14] = [
    (0x4c, &[0x4d]),
    (0x4e, &[0x03, 0x00]),
    (PIRQRC, &[0x80; 4]),
    (0x69, &[0x02]),
    (0x70, &[0x80]),
    (0x76, &[0x0c, 0x0c, 0x02, 0x00]),
    (0x80, &[0x00]),
    (0x82, &[0x00]),
    (0xa0, &[0x08]),
    (0xa2, &[0x00; 6]),
    (0xa8, &[0x0f]),
    (0xaa, &[0x00, 0x00]),
    (0xac, &[0x00]),
    (0xae, &[0x00]),
];

const PMBA: usize = 0x40;
/// Bits 15:6: a 64-port block.
const PMBA_ADDR_MASK: u32 = 0xffc0;
const DEVACTB: usize = 0x58;
/// DEVACTB with APMC_EN (bit 25): "SMM already set up", as QEMU without SMM.
const DEVACTB_SMM_OFF: [u8; 4] = [0, 0, 0, 0x02];
const PMREGMISC: usize = 0x80;
const PMREGMISC_PMIOSE: u8 = 0x01;
const SMBBA: usize = 0x90;
const SMBBA_ADDR_MASK: u32 = 0xfff0;
/// QEMU pc's `smb_io_base`, with the I/O indicator bit.
const SMBBA_DEFAULT: u32 = 0xb101;
const SMBHSTCFG: usize = 0xd2;
const SMBHSTCFG_DEFAULT: u8 = 0x09;

fn lock(m: &Mutex<PciConfig>) -> MutexGuard<'_, PciConfig> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The PIIX3 PCI-to-ISA bridge, function 0 of device 1.
pub struct Piix3 {
    config: Mutex<PciConfig>,
}

impl Default for Piix3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3 {
    pub fn new() -> Self {
        let mut c = chipset_config(
            &PciIdentity {
                vendor: VENDOR_INTEL,
                device: PIIX3_DEVICE_ID,
                class: 0x06,
                subclass: 0x01,
                prog_if: 0,
                revision: 0,
                subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
                subsystem: PCI_SUBDEVICE_ID_QEMU,
            },
            true,
        );
        c.set_status(STATUS_DEVSEL_MEDIUM);
        Self::power_on(&mut c);
        Self {
            config: Mutex::new(c),
        }
    }

    fn power_on(c: &mut PciConfig) {
        c.set_command(PIIX3_COMMAND);
        set_defaults(c, &PIIX3_DEFAULTS);
    }

    /// PIRQRC A-D as the guest programmed them (bit 7 set: not routed).
    pub fn pirq_routes(&self) -> [u8; 4] {
        lock(&self.config).bytes_at(PIRQRC)
    }
}

impl PciDevice for Piix3 {
    fn config_read(&self, reg: usize) -> u32 {
        lock(&self.config).read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        lock(&self.config).write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        let mut c = lock(&self.config);
        let changes = c.reset();
        Self::power_on(&mut c);
        changes
    }
}

/// The PIIX4 power management function, function 3 of device 1.
pub struct Piix4Pm {
    pm: PmConfig,
}

impl Piix4Pm {
    /// `relocation` moves the PM block when the guest enables another PMBA (None: fixed).
    pub fn new(relocation: Option<Arc<dyn PmBaseRelocation>>) -> Self {
        let mut c = chipset_config(
            &PciIdentity {
                vendor: VENDOR_INTEL,
                device: PIIX4_PM_DEVICE_ID,
                class: 0x06,
                subclass: 0x80,
                prog_if: 0,
                revision: PIIX4_PM_REVISION,
                subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
                subsystem: PCI_SUBDEVICE_ID_QEMU,
            },
            false,
        );
        c.set_status(STATUS_PIIX4_PM);
        // The SCI: SeaBIOS writes 9 to the interrupt line.
        c.set_interrupt_pin(1);
        // In range by construction.
        let _ = c.set_write_mask(PMBA, &PMBA_ADDR_MASK.to_le_bytes());
        let _ = c.set_write_mask(SMBBA, &SMBBA_ADDR_MASK.to_le_bytes());
        // piix4_pm_realize: set once.
        set_defaults(
            &mut c,
            &[
                (SMBBA, &SMBBA_DEFAULT.to_le_bytes()),
                (SMBHSTCFG, &[SMBHSTCFG_DEFAULT]),
            ],
        );
        Self::power_on(&mut c);
        Self {
            pm: PmConfig {
                config: Mutex::new(c),
                relocation,
                decode: PmBaseDecode {
                    base: PMBA,
                    mask: PMBA_ADDR_MASK,
                    enable: PMREGMISC,
                    enable_bit: PMREGMISC_PMIOSE,
                },
                power_on: Self::power_on,
            },
        }
    }

    /// QEMU's `piix4_pm_reset` with SMM off.
    fn power_on(c: &mut PciConfig) {
        set_defaults(
            c,
            &[
                (DEVACTB, &DEVACTB_SMM_OFF),
                (PMBA, &1u32.to_le_bytes()),
                (PMREGMISC, &[0]),
            ],
        );
    }

    /// The PM block's base if the guest enabled one (PMREGMISC.PMIOSE and a non-zero PMBA).
    pub fn pm_base(&self) -> Option<u16> {
        self.pm.pm_base()
    }
}

impl PciDevice for Piix4Pm {
    fn config_read(&self, reg: usize) -> u32 {
        self.pm.lock().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        self.pm.write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        self.pm.reset()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{read8, write32, write8, RecordingRelocation};
    use super::*;

    #[test]
    fn piix3_identity_and_reset_values() {
        let p = Piix3::new();
        assert_eq!(p.config_read(0), 0x7000_8086);
        assert_eq!(p.config_read(2), 0x0601_0000);
        assert_eq!(read8(&p, 0x0e), 0x80, "multi-function header");
        assert_eq!(p.config_read(1), 0x0200_0007);
        assert_eq!(p.pirq_routes(), [0x80; 4]);
        assert_eq!(read8(&p, 0x4c), 0x4d);
        assert_eq!(read8(&p, 0x76), 0x0c);
        assert_eq!(read8(&p, 0xa8), 0x0f);
        // sb/fw/pciinit.c piix_isa_bridge_setup.
        for (i, irq) in [10u8, 10, 11, 11].into_iter().enumerate() {
            write8(&p, PIRQRC + i, irq);
        }
        assert_eq!(p.pirq_routes(), [10, 10, 11, 11]);
        assert_eq!(p.config_read(PIRQRC / 4), 0x0b0b_0a0a);
        write8(&p, 0x4c, 0);
        p.config_write(1, 0, &[0]);
        p.reset();
        assert_eq!(p.pirq_routes(), [0x80; 4]);
        assert_eq!(read8(&p, 0x4c), 0x4d);
        assert_eq!(p.config_read(1), 0x0200_0007);
    }

    #[test]
    fn piix4_pm_identity_and_smm_off_bit() {
        let pm = Piix4Pm::new(None);
        assert_eq!(pm.config_read(0), 0x7113_8086);
        assert_eq!(pm.config_read(2), 0x0680_0003);
        assert_eq!(read8(&pm, 0x0e), 0);
        assert_eq!(pm.config_read(1) >> 16, 0x0280);
        assert_eq!(read8(&pm, 0x3d), 1);
        // sb/fw/smm.c reads the dword at 0x58 and tests bit 25.
        assert_eq!(pm.config_read(DEVACTB / 4), 1 << 25);
        assert_eq!(read8(&pm, 0x5b), 0x02);
        assert_eq!(pm.config_read(PMBA / 4), 1);
        assert_eq!(read8(&pm, PMREGMISC), 0);
        assert_eq!(pm.config_read(SMBBA / 4), 0xb101);
        assert_eq!(read8(&pm, SMBHSTCFG), 0x09);
        // A guest may clear it; reset sets it again.
        write32(&pm, DEVACTB, 0);
        assert_eq!(pm.config_read(DEVACTB / 4), 0);
        pm.reset();
        assert_eq!(pm.config_read(DEVACTB / 4), 1 << 25);
    }

    #[test]
    fn piix4_pm_seabios_programming_moves_the_pm_block() {
        let r = Arc::new(RecordingRelocation::default());
        let pm = Piix4Pm::new(Some(r.clone()));
        // sb/fw/pciinit.c piix4_pm_config_setup.
        write8(&pm, 0x3c, 9);
        write32(&pm, PMBA, 0x601);
        assert!(r.moves().is_empty(), "PMIOSE still clear");
        write8(&pm, PMREGMISC, 0x01);
        assert_eq!(r.moves(), vec![0x600]);
        write32(&pm, SMBBA, 0x701);
        write8(&pm, SMBHSTCFG, 0x09);
        assert_eq!(read8(&pm, 0x3c), 9);
        assert_eq!(pm.config_read(PMBA / 4), 0x601);
        assert_eq!(pm.config_read(SMBBA / 4), 0x701);
        assert_eq!(pm.pm_base(), Some(0x600));
        write32(&pm, PMBA, 0xffff_ffff);
        assert_eq!(pm.config_read(PMBA / 4), 0xffc1);
        write32(&pm, SMBBA, 0xffff_ffff);
        assert_eq!(pm.config_read(SMBBA / 4), 0xfff1);
        pm.reset();
        assert_eq!(r.moves(), vec![0x600, 0xffc0, 0x600]);
        assert_eq!(pm.pm_base(), None);
        assert_eq!(read8(&pm, 0x3c), 0, "interrupt line cleared by reset");
        // QEMU sets SMBBA and SMBHSTCFG at realize only.
        assert_eq!(pm.config_read(SMBBA / 4), 0xfff1);
    }
}
