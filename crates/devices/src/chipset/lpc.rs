//! The ICH9 LPC bridge (00:1f.0, 8086:2918) and SMBus controller (00:1f.3, 8086:2930) of
//! QEMU's q35 (hw/isa/lpc_ich9.c, hw/i2c/smbus_ich9.c; register names from the ICH9
//! datasheet, chapters 13.1 and 17.1).
//!
//! LPC registers: PMBASE (0x40, bits 15:7, RTE bit 0 reads 1), ACPI_CNTL (0x44: ACPI_EN bit 7,
//! SCI_IRQ_SEL bits 2:0), PIRQA-D_ROUT (0x60-0x63) and PIRQE-H_ROUT (0x68-0x6b), power-on 0x80
//! (routing to the 8259 disabled), GEN_PMCON_1-3 (0xa0-0xa4) and RCBA (0xf0, bits 31:14 + EN).
//! The power-on values are QEMU's `ich9_lpc_reset`. rvmm's SCI stays on IRQ 9 whatever
//! SCI_IRQ_SEL says (SeaBIOS and QEMU's tables select 9); an enabled PMBASE moves the PM block
//! (see [`super::PmBaseRelocation`]). QEMU hides the block while ACPI_EN is clear; rvmm keeps
//! it where it is, because without firmware nobody sets ACPI_EN and its FADT points at 0x600.
//!
//! SMBus: SMB_BASE is BAR 4 (32 ports of I/O, QEMU `ICH9_SMB_SMB_BASE_SIZE`), HOSTC (0x40)
//! power-on 0. The host controller behind the BAR is not implemented: SeaBIOS only programs the
//! base (0x701) and HST_EN; a Linux i2c-i801 that probes it finds an absent (0xff) controller.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{chipset_config, set_defaults, PmBaseDecode, PmBaseRelocation, PmConfig, VENDOR_INTEL};
use crate::pci::{
    BarChange, BarKind, BarSpec, PciConfig, PciDevice, PciIdentity, PCI_SUBDEVICE_ID_QEMU,
    PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};

/// Where QEMU's q35 puts the LPC bridge and the SMBus controller.
pub const ICH9_LPC_DEVFN: (u8, u8) = (0x1f, 0);
pub const ICH9_SMBUS_DEVFN: (u8, u8) = (0x1f, 3);

const LPC_DEVICE_ID: u16 = 0x2918;
/// ICH9 A2 stepping (QEMU `ICH9_A2_LPC_REVISION`, `ICH9_A2_SMB_REVISION`).
const ICH9_A2_REVISION: u8 = 0x02;
const SMBUS_DEVICE_ID: u16 = 0x2930;

const PMBASE: usize = 0x40;
/// Bits 15:7: the PM block is 128 ports, 128-aligned.
const PMBASE_ADDR_MASK: u32 = 0xff80;
/// Bit 0 (resource type: I/O) is hard-wired to 1.
const PMBASE_DEFAULT: u32 = 0x1;
const ACPI_CNTL: usize = 0x44;
const ACPI_CNTL_ACPI_EN: u8 = 0x80;
const ACPI_CNTL_SCI_IRQ_SEL: u8 = 0x07;
const PIRQA_ROUT: usize = 0x60;
const PIRQE_ROUT: usize = 0x68;
/// IRQEN (bit 7) set: not routed to the 8259.
const PIRQ_ROUT_DEFAULT: u8 = 0x80;
const RCBA: usize = 0xf0;
/// Base address bits 31:14 and the enable bit.
const RCBA_WMASK: u32 = 0xffff_c001;

const SMB_BASE_BAR: u8 = 4;
const SMB_BASE_SIZE: u64 = 32;
const SMB_HOSTC: usize = 0x40;

fn lock(m: &Mutex<PciConfig>) -> MutexGuard<'_, PciConfig> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ICH9 LPC bridge, function 0 of device 31.
pub struct Ich9Lpc {
    pm: PmConfig,
}

impl Ich9Lpc {
    /// `relocation` moves the PM block when the guest enables another PMBASE (None: fixed).
    pub fn new(relocation: Option<Arc<dyn PmBaseRelocation>>) -> Self {
        let mut c = chipset_config(
            &PciIdentity {
                vendor: VENDOR_INTEL,
                device: LPC_DEVICE_ID,
                class: 0x06,
                subclass: 0x01,
                prog_if: 0,
                revision: ICH9_A2_REVISION,
                subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
                subsystem: PCI_SUBDEVICE_ID_QEMU,
            },
            true,
        );
        // In range by construction.
        let _ = c.set_write_mask(PMBASE, &PMBASE_ADDR_MASK.to_le_bytes());
        let _ = c.set_write_mask(ACPI_CNTL, &[ACPI_CNTL_ACPI_EN | ACPI_CNTL_SCI_IRQ_SEL]);
        let _ = c.set_write_mask(RCBA, &RCBA_WMASK.to_le_bytes());
        Self::power_on(&mut c);
        Self {
            pm: PmConfig {
                config: Mutex::new(c),
                relocation,
                decode: PmBaseDecode {
                    base: PMBASE,
                    mask: PMBASE_ADDR_MASK,
                    enable: ACPI_CNTL,
                    enable_bit: ACPI_CNTL_ACPI_EN,
                },
                power_on: Self::power_on,
            },
        }
    }

    /// QEMU's `ich9_lpc_reset`.
    fn power_on(c: &mut PciConfig) {
        let pirq = [PIRQ_ROUT_DEFAULT; 4];
        set_defaults(
            c,
            &[
                (PIRQA_ROUT, &pirq),
                (PIRQE_ROUT, &pirq),
                (ACPI_CNTL, &[0]),
                (PMBASE, &PMBASE_DEFAULT.to_le_bytes()),
                (RCBA, &[0; 4]),
            ],
        );
    }

    /// PIRQA-H routing as the guest programmed it (bit 7 set: not routed to the 8259).
    pub fn pirq_routes(&self) -> [u8; 8] {
        let c = self.pm.lock();
        let (a, e) = (c.bytes_at::<4>(PIRQA_ROUT), c.bytes_at::<4>(PIRQE_ROUT));
        [a[0], a[1], a[2], a[3], e[0], e[1], e[2], e[3]]
    }

    /// The PM block's base if the guest enabled one (ACPI_EN and a non-zero PMBASE).
    pub fn pm_base(&self) -> Option<u16> {
        self.pm.pm_base()
    }
}

impl PciDevice for Ich9Lpc {
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

/// The ICH9 SMBus controller, function 3 of device 31.
pub struct Ich9Smbus {
    config: Mutex<PciConfig>,
}

impl Default for Ich9Smbus {
    fn default() -> Self {
        Self::new()
    }
}

impl Ich9Smbus {
    pub fn new() -> Self {
        let mut c = chipset_config(
            &PciIdentity {
                vendor: VENDOR_INTEL,
                device: SMBUS_DEVICE_ID,
                class: 0x0c,
                subclass: 0x05,
                prog_if: 0,
                revision: ICH9_A2_REVISION,
                subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
                subsystem: PCI_SUBDEVICE_ID_QEMU,
            },
            true,
        );
        c.set_interrupt_pin(1);
        // A valid spec (32 ports of I/O, BAR 4 free): this cannot fail.
        let _ = c.add_bar(
            SMB_BASE_BAR,
            BarSpec {
                size: SMB_BASE_SIZE,
                kind: BarKind::Io,
                prefetchable: false,
            },
        );
        set_defaults(&mut c, &[(SMB_HOSTC, &[0])]);
        Self {
            config: Mutex::new(c),
        }
    }

    /// HOSTC (0x40): HST_EN is bit 0.
    pub fn hostc(&self) -> u8 {
        lock(&self.config).byte(SMB_HOSTC)
    }
}

impl PciDevice for Ich9Smbus {
    fn config_read(&self, reg: usize) -> u32 {
        lock(&self.config).read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        // SMB_BASE decode changes are returned like any BAR's; nothing is behind it.
        lock(&self.config).write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        let mut c = lock(&self.config);
        let changes = c.reset();
        set_defaults(&mut c, &[(SMB_HOSTC, &[0])]);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{read8, write32, write8, RecordingRelocation};
    use super::*;

    fn lpc() -> (Arc<RecordingRelocation>, Ich9Lpc) {
        let r = Arc::new(RecordingRelocation::default());
        let lpc = Ich9Lpc::new(Some(r.clone()));
        (r, lpc)
    }

    #[test]
    fn lpc_identity_and_power_on_values() {
        let (r, lpc) = lpc();
        assert_eq!(lpc.config_read(0), 0x2918_8086);
        assert_eq!(lpc.config_read(2), 0x0601_0002);
        assert_eq!(read8(&lpc, 0x0e), 0x80, "multi-function header");
        assert_eq!(lpc.config_read(0x2c / 4), 0x1100_1af4);
        assert_eq!(lpc.pirq_routes(), [0x80; 8]);
        assert_eq!(lpc.config_read(0x60 / 4), 0x8080_8080);
        assert_eq!(lpc.config_read(0x68 / 4), 0x8080_8080);
        assert_eq!(lpc.config_read(PMBASE / 4), 1);
        assert_eq!(read8(&lpc, ACPI_CNTL), 0);
        assert_eq!(lpc.config_read(RCBA / 4), 0);
        assert_eq!(lpc.pm_base(), None);
        assert!(r.moves().is_empty());
    }

    #[test]
    fn lpc_seabios_programming_reads_back_and_moves_the_pm_block() {
        let (r, lpc) = lpc();
        // sb/fw/pciinit.c mch_isa_bridge_setup, mch_isa_lpc_setup.
        for i in 0..4 {
            write8(&lpc, PIRQA_ROUT + i, [10, 10, 11, 11][i]);
            write8(&lpc, PIRQE_ROUT + i, [10, 10, 11, 11][i]);
        }
        assert_eq!(lpc.pirq_routes(), [10, 10, 11, 11, 10, 10, 11, 11]);
        write32(&lpc, PMBASE, 0x601);
        assert!(r.moves().is_empty(), "ACPI_EN still clear");
        write8(&lpc, ACPI_CNTL, ACPI_CNTL_ACPI_EN);
        assert_eq!(r.moves(), vec![0x600]);
        write32(&lpc, RCBA, 0xfed1_c001);
        assert_eq!(lpc.config_read(PMBASE / 4), 0x601);
        assert_eq!(read8(&lpc, ACPI_CNTL), 0x80);
        assert_eq!(lpc.config_read(RCBA / 4), 0xfed1_c001);
        // PMBASE keeps its mask: 128-port aligned, RTE reads 1.
        write32(&lpc, PMBASE, 0xffff_ffff);
        assert_eq!(lpc.config_read(PMBASE / 4), 0xff81);
        assert_eq!(r.moves(), vec![0x600, 0xff80]);
        write32(&lpc, PMBASE, 0xb000);
        assert_eq!(lpc.pm_base(), Some(0xb000));
        write8(&lpc, ACPI_CNTL, 0xff);
        assert_eq!(read8(&lpc, ACPI_CNTL), 0x87);
        write32(&lpc, RCBA, 0xffff_ffff);
        assert_eq!(lpc.config_read(RCBA / 4), 0xffff_c001);
        // GEN_PMCON_1 is plain storage (SeaBIOS's SMI_LOCK write lands there).
        write32(&lpc, 0xa0, 0x10);
        assert_eq!(lpc.config_read(0xa0 / 4), 0x10);
    }

    #[test]
    fn lpc_reset_restores_qemu_values_and_the_pm_block() {
        let (r, lpc) = lpc();
        write32(&lpc, PMBASE, 0xb001);
        write8(&lpc, ACPI_CNTL, ACPI_CNTL_ACPI_EN);
        write8(&lpc, PIRQA_ROUT, 10);
        write32(&lpc, RCBA, 0xfed1_c001);
        lpc.reset();
        assert_eq!(r.moves(), vec![0xb000, 0x600]);
        assert_eq!(lpc.config_read(PMBASE / 4), 1);
        assert_eq!(read8(&lpc, ACPI_CNTL), 0);
        assert_eq!(lpc.pirq_routes(), [0x80; 8]);
        assert_eq!(lpc.config_read(RCBA / 4), 0);
        assert_eq!(read8(&lpc, 0x0e), 0x80);
    }

    #[test]
    fn lpc_without_relocation_stores_only() {
        let lpc = Ich9Lpc::new(None);
        write32(&lpc, PMBASE, 0xb001);
        write8(&lpc, ACPI_CNTL, ACPI_CNTL_ACPI_EN);
        assert_eq!(lpc.pm_base(), Some(0xb000));
        lpc.reset();
        // Odd accesses are safe.
        lpc.config_write(0x3f, 3, &[1, 2, 3, 4]);
        lpc.config_write(usize::MAX, 1, &[1]);
    }

    #[test]
    fn smbus_identity_bar_and_hostc() {
        let s = Ich9Smbus::new();
        assert_eq!(s.config_read(0), 0x2930_8086);
        assert_eq!(s.config_read(2), 0x0c05_0002);
        assert_eq!(read8(&s, 0x3d), 1, "INTA");
        assert_eq!(read8(&s, 0x0e), 0x80);
        // BAR 4 sizes as 32 ports of I/O.
        write32(&s, 0x20, 0xffff_ffff);
        assert_eq!(s.config_read(0x20 / 4), 0xffff_ffe1);
        // sb/fw/pciinit.c ich9_smbus_enable.
        write32(&s, 0x20, 0x701);
        assert_eq!(s.config_read(0x20 / 4), 0x701);
        write8(&s, SMB_HOSTC, 1);
        assert_eq!(s.hostc(), 1);
        let changes = s.config_write(1, 0, &[1]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].new, Some(0x700));
        let changes = s.reset();
        assert_eq!(changes[0].new, None);
        assert_eq!(s.hostc(), 0);
        assert_eq!(s.config_read(0x20 / 4), 1);
    }
}
