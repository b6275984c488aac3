//! Intel MultiProcessor Specification 1.4 tables: the floating pointer structure and the
//! configuration table (chapter 4), for guests without ACPI (`-machine acpi=off`) and old
//! kernels. Linux scans 0xF0000..0xFFFFF for "_MP_" (spec section 4: "BIOS ROM address space").
//!
//! Entries: one processor per CPU whose APIC ID fits the 8-bit field, one ISA bus, the IOAPIC,
//! ISA IRQs 0-15 on IOAPIC pins as the MADT routes them (IRQ 0 on pin 2, ExtINT on pin 0;
//! 5, 9, 10 and 11 level/active-high like QEMU), ExtINT on LINT0 and NMI on LINT1.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::acpi::{IOAPIC_ADDR, LAPIC_ADDR};

/// Floating pointer structure address (16-byte aligned, in the scanned BIOS area).
pub const MPTABLE_START: u64 = 0xf_0000;
/// End (exclusive) of the area the MP table may use.
pub const MPTABLE_END: u64 = 0x10_0000;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
/// Spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version of a modern (integrated) APIC, as KVM reports.
const APIC_VERSION: u8 = 0x14;
/// IOAPIC version of KVM's IOAPIC.
const IOAPIC_VERSION: u8 = 0x11;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Interrupt flags: polarity active high (01), trigger level (11 << 2).
const LEVEL_HIGH: u16 = 0b1101;
const LEVEL_IRQS: [u8; 4] = [5, 9, 10, 11];

/// Errors building or writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("no CPU has an APIC ID below 255 for the MP table")]
    NoCpus,
    #[error("MP table needs {0} bytes, more than the BIOS area from {MPTABLE_START:#x} holds")]
    TooLarge(usize),
    #[error("writing the MP table to guest memory at {addr:#x}")]
    GuestMemory {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// The floating pointer followed by the configuration table, to be written at
/// [`MPTABLE_START`]. CPUs whose APIC ID does not fit 8 bits (x2APIC) are left out.
pub fn build_mptable(apic_ids: &[u32]) -> Result<Vec<u8>, MpTableError> {
    let cpus: Vec<(usize, u8)> = apic_ids
        .iter()
        .enumerate()
        .filter_map(|(i, &id)| {
            u8::try_from(id)
                .ok()
                .filter(|&id| id < 0xff)
                .map(|id| (i, id))
        })
        .collect();
    if cpus.is_empty() {
        return Err(MpTableError::NoCpus);
    }
    // Like Firecracker and SeaBIOS: the IOAPIC ID follows the highest CPU APIC ID.
    let ioapic_id = cpus
        .iter()
        .map(|&(_, id)| id)
        .max()
        .unwrap_or(0)
        .saturating_add(1)
        .min(0xfe);

    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for &(index, id) in &cpus {
        let flags = CPU_ENABLED | if index == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        // CPU signature (family 6) and feature flags (FPU, APIC): informational only.
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    let mut io_int = |kind: u8, flags: u16, irq: u8, pin: u8| {
        entries.push(ENTRY_IO_INTERRUPT);
        entries.push(kind);
        entries.extend_from_slice(&flags.to_le_bytes());
        entries.extend_from_slice(&[0, irq, ioapic_id, pin]);
        count += 1;
    };
    io_int(INT_TYPE_EXTINT, 0, 0, 0);
    for irq in 0u8..16 {
        if irq == 2 {
            continue; // the PIC cascade; IRQ 0 takes pin 2
        }
        let pin = if irq == 0 { 2 } else { irq };
        let flags = if LEVEL_IRQS.contains(&irq) {
            LEVEL_HIGH
        } else {
            0
        };
        io_int(INT_TYPE_INT, flags, irq, pin);
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let table_len = HEADER_LEN + entries.len();
    let total = FLOATING_LEN + table_len;
    if total as u64 > MPTABLE_END - MPTABLE_START {
        return Err(MpTableError::TooLarge(total));
    }
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum
    header.extend_from_slice(b"RVMM    ");
    header.extend_from_slice(b"RVMM PC     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let mut fp = Vec::with_capacity(total);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&((MPTABLE_START + FLOATING_LEN as u64) as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(SPEC_REV);
    fp.push(0); // checksum
    fp.extend_from_slice(&[0; 5]); // feature bytes: the configuration table is present
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&header);
    Ok(fp)
}

/// Writes the MP table at [`MPTABLE_START`].
pub fn write_mptable<M: GuestMemoryBackend>(mem: &M, apic_ids: &[u32]) -> Result<(), MpTableError> {
    let bytes = build_mptable(apic_ids)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|source| MpTableError::GuestMemory {
            addr: MPTABLE_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// (type, entry bytes) of the configuration table.
    fn entries(t: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let cfg = &t[16..];
        let n = u16::from_le_bytes([cfg[34], cfg[35]]);
        let mut off = HEADER_LEN;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = if cfg[off] == ENTRY_PROCESSOR { 20 } else { 8 };
            out.push((cfg[off], cfg[off..off + len].to_vec()));
            off += len;
        }
        assert_eq!(off, cfg.len(), "entry count matches the length");
        out
    }

    #[test]
    fn floating_pointer_and_checksums() {
        let t = build_mptable(&[0, 1, 2, 3]).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0xf0010);
        assert_eq!((t[8], t[9]), (1, 4));
        let cfg = &t[16..];
        assert_eq!(&cfg[..4], b"PCMP");
        assert_eq!(usize::from(u16::from_le_bytes([cfg[4], cfg[5]])), cfg.len());
        assert_eq!(sum(cfg), 0);
        assert_eq!(
            u32::from_le_bytes(cfg[36..40].try_into().unwrap()),
            0xfee0_0000
        );
    }

    #[test]
    fn processors_bus_ioapic_and_interrupts() {
        let t = build_mptable(&[0, 1, 4, 5]).unwrap();
        let e = entries(&t);
        let cpus: Vec<(u8, u8)> = e
            .iter()
            .filter(|(k, _)| *k == ENTRY_PROCESSOR)
            .map(|(_, b)| (b[1], b[3]))
            .collect();
        assert_eq!(cpus, vec![(0, 3), (1, 1), (4, 1), (5, 1)]);
        let bus = e.iter().find(|(k, _)| *k == ENTRY_BUS).unwrap();
        assert_eq!(&bus.1[2..8], b"ISA   ");
        let ioapic = e.iter().find(|(k, _)| *k == ENTRY_IOAPIC).unwrap();
        assert_eq!(ioapic.1[1], 6, "IOAPIC ID after the highest CPU");
        assert_eq!(
            u32::from_le_bytes(ioapic.1[4..8].try_into().unwrap()),
            0xfec0_0000
        );
        let ints: Vec<(u8, u16, u8, u8)> = e
            .iter()
            .filter(|(k, _)| *k == ENTRY_IO_INTERRUPT)
            .map(|(_, b)| (b[1], u16::from_le_bytes([b[2], b[3]]), b[5], b[7]))
            .collect();
        assert_eq!(ints.len(), 16);
        assert_eq!(ints[0], (INT_TYPE_EXTINT, 0, 0, 0));
        assert_eq!(ints[1], (INT_TYPE_INT, 0, 0, 2));
        assert!(ints.contains(&(INT_TYPE_INT, LEVEL_HIGH, 9, 9)));
        assert!(ints.contains(&(INT_TYPE_INT, 0, 4, 4)));
        assert!(!ints.iter().any(|i| i.0 == INT_TYPE_INT && i.2 == 2));
        assert!(ints.iter().all(|i| e.iter().any(|_| true) && i.3 < 16));
        let locals = e
            .iter()
            .filter(|(k, _)| *k == ENTRY_LOCAL_INTERRUPT)
            .count();
        assert_eq!(locals, 2);
    }

    #[test]
    fn x2apic_ids_are_left_out() {
        let ids: Vec<u32> = (0..300).collect();
        let t = build_mptable(&ids).unwrap();
        let e = entries(&t);
        assert_eq!(e.iter().filter(|(k, _)| *k == ENTRY_PROCESSOR).count(), 255);
        assert!(matches!(build_mptable(&[]), Err(MpTableError::NoCpus)));
        assert!(matches!(build_mptable(&[300]), Err(MpTableError::NoCpus)));
    }
}
