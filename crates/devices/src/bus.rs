//! Port-I/O and MMIO buses: a sorted, immutable-after-build map from address ranges to devices.
//!
//! The bus is built before the vCPUs start and never changes afterwards, so a lookup is a binary
//! search with no lock at all. Devices take `&self` and lock only what they need internally.
//!
//! Every entry has a name and a stable id (its insertion order), so exit statistics can say which
//! device an access went to without a second lookup.

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
    /// Insertion order: an index into `names`, stable while entries are added.
    id: usize,
    device: Arc<dyn BusDevice>,
}

/// A named range of a bus, as listed by [`Bus::ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRange {
    pub id: usize,
    pub base: u64,
    pub len: u64,
    pub name: String,
}

/// One address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    entries: Vec<BusEntry>,
    /// Entry names by id.
    names: Vec<String>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `device` at `[base, base + len)`, unnamed.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        self.insert_named(base, len, "", device).map(|_| ())
    }

    /// Map `device` at `[base, base + len)` under `name` (e.g. "COM1"); returns the entry's id.
    pub fn insert_named(
        &mut self,
        base: u64,
        len: u64,
        name: &str,
        device: Arc<dyn BusDevice>,
    ) -> Result<usize, BusError> {
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
        let id = self.names.len();
        self.entries.insert(
            idx,
            BusEntry {
                base,
                len,
                id,
                device,
            },
        );
        self.names.push(name.to_string());
        Ok(id)
    }

    /// Number of entries ever inserted: ids are below this.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every range with its id and name, in address order.
    pub fn ranges(&self) -> Vec<BusRange> {
        self.entries
            .iter()
            .map(|e| BusRange {
                id: e.id,
                base: e.base,
                len: e.len,
                name: self.names[e.id].clone(),
            })
            .collect()
    }

    #[inline]
    fn entry(&self, addr: u64) -> Option<(&BusEntry, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        let offset = addr - e.base;
        (offset < e.len).then_some((e, offset))
    }

    /// The device covering `addr`, and the offset of `addr` inside its range.
    /// An access is routed by its first byte, as on real buses.
    #[inline]
    pub fn resolve(&self, addr: u64) -> Option<(&dyn BusDevice, u64)> {
        self.entry(addr).map(|(e, off)| (e.device.as_ref(), off))
    }

    /// Dispatch a read; returns the id of the entry that handled it, or None (and leaves `data`
    /// untouched) if no device claims `addr`.
    #[inline]
    pub fn read_id(&self, addr: u64, data: &mut [u8]) -> Option<usize> {
        let (e, off) = self.entry(addr)?;
        e.device.read(off, data);
        Some(e.id)
    }

    /// Dispatch a write; returns the id of the entry that handled it, or None.
    #[inline]
    pub fn write_id(&self, addr: u64, data: &[u8]) -> Option<usize> {
        let (e, off) = self.entry(addr)?;
        e.device.write(off, data);
        Some(e.id)
    }

    /// Dispatch a read. Returns false (and leaves `data` untouched) if no device claims `addr`.
    #[inline]
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.read_id(addr, data).is_some()
    }

    /// Dispatch a write. Returns false if no device claims `addr`.
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.write_id(addr, data).is_some()
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
    fn names_and_stable_ids() {
        let mut bus = Bus::new();
        let d = Arc::new(Recorder::default());
        assert_eq!(bus.insert_named(0x3f8, 8, "COM1", d.clone()), Ok(0));
        assert_eq!(bus.insert_named(0xe0, 4, "pc-testdev", d.clone()), Ok(1));
        assert!(bus.insert_named(0xe2, 1, "overlap", d.clone()).is_err());
        bus.insert(0x80, 1, d.clone()).unwrap();
        assert_eq!(bus.len(), 3);
        let mut b = [0u8; 1];
        assert_eq!(bus.read_id(0x3f9, &mut b), Some(0));
        assert_eq!(bus.write_id(0xe3, &[1]), Some(1));
        assert_eq!(bus.write_id(0x80, &[1]), Some(2));
        assert_eq!(bus.write_id(0xe4, &[1]), None);
        let names: Vec<(u64, String)> =
            bus.ranges().into_iter().map(|r| (r.base, r.name)).collect();
        assert_eq!(
            names,
            [
                (0x80, String::new()),
                (0xe0, "pc-testdev".into()),
                (0x3f8, "COM1".into())
            ]
        );
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
