//! The MADT ("APIC", ACPI 6.5 section 5.2.12), written entry by entry because the
//! `acpi_tables` crate has no x86 interrupt source override or x2APIC entries.

use super::{sdt, IOAPIC_ADDR, LAPIC_ADDR, SCI_IRQ};

/// MADT flags bit 0: the machine also has dual 8259 PICs (PCAT_COMPAT).
const PCAT_COMPAT: u32 = 1;
/// Entry types (ACPI 6.5 table 5.21).
const TYPE_LOCAL_APIC: u8 = 0;
const TYPE_IO_APIC: u8 = 1;
const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
const TYPE_LOCAL_X2APIC: u8 = 9;
const TYPE_LOCAL_X2APIC_NMI: u8 = 0xa;
/// Local APIC flags bit 0: enabled.
const LAPIC_ENABLED: u32 = 1;
/// MPS INTI flags: active high (01) and level triggered (11 << 2).
const INTI_LEVEL_HIGH: u16 = 0b1101;
/// ISA IRQs QEMU routes as PCI-style level, active high (`PCI_ISA_IRQ_MASK`): 5, 9, 10, 11.
const LEVEL_IRQS: [u8; 4] = [5, SCI_IRQ as u8, 10, 11];
/// The IOAPIC's ID in the MADT, as QEMU (`ACPI_BUILD_IOAPIC_ID`).
pub const IOAPIC_ID: u8 = 0;
/// APIC IDs from here up need x2APIC entries (0xff is the broadcast ID).
const XAPIC_LIMIT: u32 = 0xff;

/// The MADT for CPUs with `apic_ids` (index order = ACPI processor UID order).
pub fn madt(apic_ids: &[u32]) -> Vec<u8> {
    let mut t = sdt(b"APIC", 6);
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for (uid, &apic_id) in apic_ids.iter().enumerate() {
        // Like QEMU: xAPIC entries while the ID fits, x2APIC ones above (section 5.2.12.12).
        if apic_id < XAPIC_LIMIT {
            body.extend_from_slice(&[TYPE_LOCAL_APIC, 8, uid as u8, apic_id as u8]);
            body.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
        } else {
            body.extend_from_slice(&[TYPE_LOCAL_X2APIC, 16, 0, 0]);
            body.extend_from_slice(&apic_id.to_le_bytes());
            body.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
            body.extend_from_slice(&(uid as u32).to_le_bytes());
        }
    }
    body.extend_from_slice(&[TYPE_IO_APIC, 12, IOAPIC_ID, 0]);
    body.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
                                                 // ISA IRQ 0 (PIT) arrives on GSI 2 (section 5.2.12.5).
    override_entry(&mut body, 0, 2, 0);
    for irq in LEVEL_IRQS {
        override_entry(&mut body, irq, u32::from(irq), INTI_LEVEL_HIGH);
    }
    // NMI on LINT1 of every processor (UID 0xff / 0xffffffff = all).
    body.extend_from_slice(&[TYPE_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    if apic_ids.iter().any(|&id| id >= XAPIC_LIMIT) {
        body.extend_from_slice(&[TYPE_LOCAL_X2APIC_NMI, 12, 0, 0]);
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&[1, 0, 0, 0]);
    }
    t.append_slice(&body);
    t.as_slice().to_vec()
}

fn override_entry(body: &mut Vec<u8>, source: u8, gsi: u32, flags: u16) {
    body.extend_from_slice(&[TYPE_INTERRUPT_OVERRIDE, 10, 0, source]);
    body.extend_from_slice(&gsi.to_le_bytes());
    body.extend_from_slice(&flags.to_le_bytes());
}
