//! Where the INTx pins of PCI bus 0 interrupt: the one answer both the ACPI tables (`_PRT` and
//! its link devices, `acpi::dsdt`) and the VMM (which GSI a function's INTx eventfd raises) use,
//! so the two cannot disagree.
//!
//! Both follow QEMU:
//! - q35: the ICH9 maps device/pin to PIRQA-H and, in APIC mode, PIRQx to GSI 16 + x
//!   (hw/isa/lpc_ich9.c `ich9_pirq_to_gsi`). Slots 0-24 rotate over PIRQE-H
//!   (`ich9_cc_init`: `(slot + pin) % 4 + 4`), slots 25-31 use the D25IR-D31IR power-on
//!   routing, INTA-D to PIRQA-D (`ICH9_CC_DIR_DEFAULT`; QEMU's D30 behind-the-bridge exception
//!   does not apply, rvmm has no DMI-to-PCI bridge). QEMU's ACPI names the links GSIA-GSIH.
//! - pc: the PIIX3 swizzle PIRQ = (slot - 1 + pin) & 3 (hw/isa/piix.c `pci_slot_get_pirq`) and
//!   the ISA IRQs SeaBIOS routes PIRQA-D to, 10, 10, 11, 11 (sb/fw/pciinit.c `pci_irqs`), which
//!   the MADT already declares level-triggered, active high. QEMU lets the guest reroute them
//!   through PIIX3 PIRQRC and LNKA-LNKD `_SRS`; rvmm's wiring is fixed, so its links offer only
//!   their one IRQ and PIRQRC is plain storage.
//!
//! Pins are numbered as the interrupt pin register minus one: 0 = INTA ... 3 = INTD.
//!
//! On q35 GSIs 16-23 are also where rvmm's virtio-mmio transports interrupt when ACPI is on
//! (`VIRTIO_IRQ_BASE_ACPI`): a PCI function sharing one of them shares a level-triggered line,
//! which Linux and KVM's irqfd resampler handle and rvmm's user-space IOAPIC does not.

/// PCI bus 0 has 32 slots of four INTx pins.
pub const PCI_SLOTS: u8 = 32;
pub const PCI_INTX_PINS: u8 = 4;

/// Which chipset routes INTx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciIntxRouting {
    /// ICH9: PIRQA-H on GSIs 16-23.
    Q35,
    /// PIIX3: PIRQA-D on ISA IRQs 10, 10, 11, 11.
    I440fx,
}

/// ISA IRQs of PIRQA-D on pc, as SeaBIOS programs PIRQRC.
const PIIX_PIRQ_IRQS: [u32; 4] = [10, 10, 11, 11];
/// ICH9 PIRQA's GSI in APIC mode (`ICH9_LPC_PIC_NUM_PINS`).
const ICH9_PIRQ_GSI_BASE: u32 = 16;
/// The first slot whose INTx follows the D25IR-D31IR registers.
const ICH9_FIRST_DIR_SLOT: u8 = 25;

impl PciIntxRouting {
    /// How many PIRQ lines (ACPI link devices) there are.
    pub fn pirq_count(self) -> u8 {
        match self {
            PciIntxRouting::Q35 => 8,
            PciIntxRouting::I440fx => 4,
        }
    }

    /// The PIRQ line (0 = PIRQA) INTx `pin` (0-3) of `slot` (0-31) drives; out-of-range
    /// values wrap.
    pub fn pirq(self, slot: u8, pin: u8) -> u8 {
        let (slot, pin) = (slot % PCI_SLOTS, pin % PCI_INTX_PINS);
        match self {
            PciIntxRouting::Q35 if slot >= ICH9_FIRST_DIR_SLOT => pin,
            PciIntxRouting::Q35 => (slot + pin) % 4 + 4,
            PciIntxRouting::I440fx => (slot.wrapping_sub(1).wrapping_add(pin)) & 3,
        }
    }

    /// The GSI PIRQ line `pirq` is wired to.
    pub fn pirq_gsi(self, pirq: u8) -> u32 {
        match self {
            PciIntxRouting::Q35 => ICH9_PIRQ_GSI_BASE + u32::from(pirq % 8),
            PciIntxRouting::I440fx => PIIX_PIRQ_IRQS[usize::from(pirq % 4)],
        }
    }

    /// The GSI INTx `pin` (0-3) of any function in `slot` raises.
    pub fn gsi(self, slot: u8, pin: u8) -> u32 {
        self.pirq_gsi(self.pirq(slot, pin))
    }

    /// The ACPI name of PIRQ line `pirq`'s link device (QEMU's: GSIA-GSIH on q35, LNKA-LNKD
    /// on pc).
    pub fn link_name(self, pirq: u8) -> String {
        let prefix = match self {
            PciIntxRouting::Q35 => "GSI",
            PciIntxRouting::I440fx => "LNK",
        };
        format!("{prefix}{}", char::from(b'A' + pirq % self.pirq_count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_matches_qemus_ich9_defaults() {
        let r = PciIntxRouting::Q35;
        // ich9_cc_init: (slot + intx) % 4 + 4.
        assert_eq!(r.pirq(0, 0), 4);
        assert_eq!(r.pirq(1, 0), 5);
        assert_eq!(r.pirq(3, 2), 5);
        assert_eq!(r.gsi(2, 0), 22);
        assert_eq!(r.gsi(24, 3), 23);
        // D31IR = 0x3210: the AHCI at 00:1f.2, INTA, is on PIRQA = GSI 16.
        assert_eq!(r.gsi(31, 0), 16);
        assert_eq!(r.gsi(31, 3), 19);
        assert_eq!(r.gsi(25, 1), 17);
        for slot in 0..PCI_SLOTS {
            for pin in 0..PCI_INTX_PINS {
                assert!((16..24).contains(&r.gsi(slot, pin)));
            }
        }
        assert_eq!(r.link_name(0), "GSIA");
        assert_eq!(r.link_name(7), "GSIH");
    }

    #[test]
    fn pc_matches_piix_swizzle_and_seabios_irqs() {
        let r = PciIntxRouting::I440fx;
        // sb/fw/pciinit.c piix_pci_slot_get_irq: pci_irqs[(pin - 1 + slot - 1) & 3], pin 1-based.
        let seabios = |slot: u8, pin1: u8| [10, 10, 11, 11][usize::from((pin1 - 1 + slot - 1) & 3)];
        for slot in 1..PCI_SLOTS {
            for pin in 0..PCI_INTX_PINS {
                assert_eq!(r.gsi(slot, pin), seabios(slot, pin + 1), "{slot}/{pin}");
            }
        }
        // Slot 0 (the host bridge) wraps like QEMU's (slot - 1) & 3.
        assert_eq!(r.pirq(0, 0), 3);
        assert_eq!(r.pirq(1, 0), 0);
        assert_eq!(r.pirq(2, 0), 1);
        assert_eq!(r.gsi(3, 0), 11);
        assert_eq!(r.link_name(3), "LNKD");
        // Out-of-range input wraps instead of panicking.
        assert_eq!(r.gsi(255, 255), r.gsi(31, 3));
    }
}
