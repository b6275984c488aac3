//! Port-I/O and MMIO buses: a sorted, immutable-after-build map from address ranges to devices.
//!
//! The bus is built before the vCPUs start and never changes afterwards, so a lookup is a binary
//! search with no lock at all. Devices take `&self` and lock only what they need internally.

use std::sync::Arc;

/// A device on a bus. `offset` is relative to the start of the range the device was inserted at.
pub trait BusDevice: Send + Sync {
    /// Fill `data` with what the device returns for a read of `data.len()` bytes at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Handle a write of `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
}

struct BusEntry {
    base: u64,
    len: u64,
    device: Arc<dyn BusDevice>,
}

/// One address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    entries: Vec<BusEntry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let idx = self.entries.partition_point(|e| e.base < base);
        let overlaps_prev = idx > 0 && {
            let p = &self.entries[idx - 1];
            p.base + p.len > base
        };
        let overlaps_next = self.entries.get(idx).is_some_and(|n| n.base < end);
        if overlaps_prev || overlaps_next {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.insert(idx, BusEntry { base, len, device });
        Ok(())
    }

    /// The device covering `addr`, and the offset of `addr` inside its range.
    /// An access is routed by its first byte, as on real buses.
    #[inline]
    pub fn resolve(&self, addr: u64) -> Option<(&dyn BusDevice, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        let offset = addr - e.base;
        (offset < e.len).then_some((e.device.as_ref(), offset))
    }

    /// Dispatch a read. Returns false (and leaves `data` untouched) if no device claims `addr`.
    #[inline]
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, off)) => {
                dev.read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatch a write. Returns false if no device claims `addr`.
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, off)) => {
                dev.write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);
    impl BusDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let mut bus = Bus::new();
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x80, 1, b.clone()).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert!(bus.write(0x80, &[7]));
        assert_eq!(b.0.lock().unwrap().as_slice(), &[(0, vec![7])]);
        assert!(!bus.read(0x3f7, &mut d));
        assert!(!bus.read(0x400, &mut d));
        assert!(!bus.write(0x81, &[1]));
        assert!(a.0.lock().unwrap().is_empty());
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let d = Arc::new(Recorder::default());
        bus.insert(0x100, 0x10, d.clone()).unwrap();
        assert!(bus.insert(0x10f, 1, d.clone()).is_err());
        assert!(bus.insert(0xf8, 0x9, d.clone()).is_err());
        assert!(bus.insert(0x0, 0, d.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, d.clone()).is_err());
        bus.insert(0x110, 1, d.clone()).unwrap();
        bus.insert(0xf0, 0x10, d).unwrap();
    }
}
