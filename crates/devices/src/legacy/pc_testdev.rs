//! QEMU's `-device pc-testdev` (hw/misc/pc-testdev.c), used by kvm-unit-tests, at the same
//! addresses and with the same semantics, so one test guest exercises port I/O and MMIO in both
//! directions identically on rvmm and on QEMU.
//!
//! QEMU layout:
//! - ports 0xe0..0xe4: a 32-bit little-endian data register; any byte lane can be written and
//!   read back (`test_ioport_write` masks by `addr & 3` and access width).
//! - ports 0xe4..0xe8: "flush page": a 32-bit write of a guest physical address makes QEMU
//!   mprotect that page to PROT_NONE and back to RW, i.e. drop and refault the host mapping.
//!   Guest-visible memory is unchanged, so it is a no-op here; reads return 0.
//! - ports 0xe8..0xec: the same data register again, implemented byte-wide in QEMU (an N-byte
//!   access is split into N byte accesses, which gives the same result).
//! - ports 0x2000..0x2018: one byte per ISA IRQ line, a write sets the line's level. This needs
//!   an interrupt controller: [`PcTestdevIrq`] accepts and ignores writes for now.
//! - MMIO 0xff000000..0xff010000: 64 KiB of RAM-like memory (`iomem_buf`); what is written
//!   reads back. QEMU splits unaligned and 8-byte accesses into aligned pieces, so the result
//!   is plain byte-addressed memory at any width and alignment, which is what we implement.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use crate::BusDevice;

/// First port of the data/flush/data-byte ports.
pub const PC_TESTDEV_PORT_BASE: u64 = 0xe0;
/// Ports 0xe0..0xec: data (4), flush page (4), byte-wide data (4).
pub const PC_TESTDEV_PORT_LEN: u64 = 0xc;
/// First port of the IRQ line region.
pub const PC_TESTDEV_IRQ_BASE: u64 = 0x2000;
/// One port per ISA/IOAPIC line 0..23.
pub const PC_TESTDEV_IRQ_LEN: u64 = 24;
/// QEMU's guest-physical address of the iomem window (this crate's tests use it; the VMM takes
/// the placement from the machine's address map).
pub const PC_TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Size of the iomem window (QEMU's `IOMEM_LEN`).
pub const PC_TESTDEV_IOMEM_LEN: u64 = 0x1_0000;

const FLUSH_PAGE_START: u64 = 4;
const FLUSH_PAGE_END: u64 = 8;

/// The port region 0xe0..0xec. Lock-free: the data register is one atomic.
#[derive(Default)]
pub struct PcTestdevPorts {
    data: AtomicU32,
}

impl PcTestdevPorts {
    /// The byte lane of the data register for port offset `off`, or None for the flush page
    /// and anything outside the region.
    fn data_lane(off: u64) -> Option<u32> {
        let in_data =
            off < FLUSH_PAGE_START || (FLUSH_PAGE_END..PC_TESTDEV_PORT_LEN).contains(&off);
        in_data.then_some((off & 3) as u32)
    }
}

impl BusDevice for PcTestdevPorts {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let value = self.data.load(Ordering::Acquire);
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(Self::data_lane)
                .map_or(0, |lane| (value >> (lane * 8)) as u8);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // One read-modify-write for the whole access, so concurrent writers never tear it.
        let _ = self
            .data
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |mut value| {
                for (i, &byte) in data.iter().enumerate() {
                    if let Some(lane) = offset.checked_add(i as u64).and_then(Self::data_lane) {
                        value = (value & !(0xff << (lane * 8))) | (u32::from(byte) << (lane * 8));
                    }
                }
                Some(value)
            });
    }
}

/// The 64 KiB RAM-like MMIO window at [`PC_TESTDEV_IOMEM_BASE`].
///
/// Bytes are relaxed atomics rather than a locked buffer, so vCPUs hammering the window (the
/// exit benchmarks) never contend; like RAM, a multi-byte access is not atomic as a whole.
pub struct PcTestdevIomem {
    buf: Box<[AtomicU8]>,
}

impl Default for PcTestdevIomem {
    fn default() -> Self {
        Self {
            buf: (0..PC_TESTDEV_IOMEM_LEN)
                .map(|_| AtomicU8::new(0))
                .collect(),
        }
    }
}

impl PcTestdevIomem {
    /// The in-window range of an access, clipped at the end of the window.
    fn span(offset: u64, len: usize) -> Option<(usize, usize)> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < PC_TESTDEV_IOMEM_LEN as usize)?;
        let end = start.saturating_add(len).min(PC_TESTDEV_IOMEM_LEN as usize);
        Some((start, end))
    }
}

impl BusDevice for PcTestdevIomem {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some((start, end)) = Self::span(offset, data.len()) {
            if let Some(src) = self.buf.get(start..end) {
                for (d, s) in data.iter_mut().zip(src) {
                    *d = s.load(Ordering::Relaxed);
                }
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some((start, end)) = Self::span(offset, data.len()) {
            if let Some(dst) = self.buf.get(start..end) {
                for (d, s) in dst.iter().zip(data) {
                    d.store(*s, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The IRQ line ports at [`PC_TESTDEV_IRQ_BASE`]. Without an interrupt controller model yet,
/// writes are accepted and ignored; reads return 0 (QEMU has no read handler here).
#[derive(Default)]
pub struct PcTestdevIrq;

impl BusDevice for PcTestdevIrq {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _offset: u64, _data: &[u8]) {}
}

/// All regions of one pc-testdev. Map each `Arc` at its constant:
/// `ports` at [`PC_TESTDEV_PORT_BASE`], `irq` at [`PC_TESTDEV_IRQ_BASE`] (both port I/O) and
/// `iomem` at [`PC_TESTDEV_IOMEM_BASE`] (MMIO).
pub struct PcTestdev {
    pub ports: Arc<PcTestdevPorts>,
    pub irq: Arc<PcTestdevIrq>,
    pub iomem: Arc<PcTestdevIomem>,
}

impl PcTestdev {
    pub fn new() -> Self {
        Self {
            ports: Arc::default(),
            irq: Arc::default(),
            iomem: Arc::default(),
        }
    }
}

impl Default for PcTestdev {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_port(dev: &PcTestdevPorts, off: u64, len: usize) -> Vec<u8> {
        let mut d = vec![0xaa; len];
        dev.read(off, &mut d);
        d
    }

    #[test]
    fn data_port_reads_back_any_width() {
        let t = PcTestdev::new();
        t.ports.write(0, &0x1234_5678u32.to_le_bytes());
        assert_eq!(read_port(&t.ports, 0, 4), 0x1234_5678u32.to_le_bytes());
        // 16-bit write to the upper half keeps the lower half (QEMU's masked update).
        t.ports.write(2, &0xbeefu16.to_le_bytes());
        assert_eq!(read_port(&t.ports, 0, 4), 0xbeef_5678u32.to_le_bytes());
        t.ports.write(1, &[0x00]);
        assert_eq!(read_port(&t.ports, 1, 1), [0x00]);
        assert_eq!(read_port(&t.ports, 2, 2), 0xbeefu16.to_le_bytes());
    }

    #[test]
    fn byte_port_aliases_the_data_register() {
        let t = PcTestdev::new();
        t.ports.write(8, &0xcafe_f00du32.to_le_bytes());
        assert_eq!(read_port(&t.ports, 0, 4), 0xcafe_f00du32.to_le_bytes());
        assert_eq!(read_port(&t.ports, 0xa, 2), 0xcafeu16.to_le_bytes());
    }

    #[test]
    fn flush_page_is_a_no_op_and_reads_zero() {
        let t = PcTestdev::new();
        t.ports.write(0, &[1, 2, 3, 4]);
        t.ports.write(4, &0x1000u32.to_le_bytes());
        assert_eq!(read_port(&t.ports, 4, 4), [0; 4]);
        assert_eq!(read_port(&t.ports, 0, 4), [1, 2, 3, 4]);
        // An access straddling data and flush only touches the data lanes.
        t.ports.write(2, &[9, 9, 9, 9]);
        assert_eq!(read_port(&t.ports, 2, 4), [9, 9, 0, 0]);
        // Past the region: zeros, no panic.
        assert_eq!(read_port(&t.ports, 0xb, 8), [9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_port(&t.ports, u64::MAX, 3), [0, 0, 0]);
        t.ports.write(u64::MAX, &[1, 2]);
    }

    #[test]
    fn iomem_is_ram_like() {
        let t = PcTestdev::new();
        t.iomem.write(0x10, &0x1122_3344_5566_7788u64.to_le_bytes());
        let mut d = [0u8; 8];
        t.iomem.read(0x10, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0x1122_3344_5566_7788);
        let mut w = [0u8; 2];
        t.iomem.read(0x13, &mut w);
        assert_eq!(w, [0x55, 0x44]);
        t.iomem.write(0x11, &[0xab]);
        t.iomem.read(0x10, &mut d);
        assert_eq!(d[..2], [0x88, 0xab]);
    }

    #[test]
    fn iomem_clips_at_the_end_of_the_window() {
        let t = PcTestdev::new();
        let last = PC_TESTDEV_IOMEM_LEN - 2;
        t.iomem.write(last, &[1, 2, 3, 4]);
        let mut d = [0xffu8; 4];
        t.iomem.read(last, &mut d);
        assert_eq!(d, [1, 2, 0, 0]);
        t.iomem.read(PC_TESTDEV_IOMEM_LEN, &mut d);
        assert_eq!(d, [0; 4]);
        t.iomem.write(u64::MAX, &[1; 9]);
        t.iomem.read(u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn irq_region_ignores_writes() {
        let t = PcTestdev::new();
        t.irq.write(4, &[1]);
        let mut d = [0xffu8; 2];
        t.irq.read(23, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
