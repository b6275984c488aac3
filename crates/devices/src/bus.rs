//! Port-I/O and MMIO buses: typed, remappable maps from address ranges to devices.
//!
//! A device is registered once and gets a stable [`DeviceId`]; its ranges can then be inserted,
//! removed and moved while the guest runs (PCI BARs the guest programs). Lookups stay lock-free:
//! the ranges live in an immutable, sorted [`BusMap`]; a change builds a new map under the bus's
//! writer lock and swaps it in, bumping a generation counter. Each vCPU keeps a [`BusReader`] with
//! its own `Arc` of the map and only re-reads it when the generation moved, so the exit path costs
//! one atomic load and a binary search, with no lock and no reference-count traffic.
//!
//! Lock order: the bus's writer lock is a leaf; nothing else is taken while it is held (device
//! code never runs under it).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A device on a bus. `offset` is relative to the start of the range the access hit.
pub trait BusDevice: Send + Sync {
    /// Fill `data` with what the device returns for a read of `data.len()` bytes at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Handle a write of `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Which address space a bus is: a type parameter, so a port bus cannot be passed as MMIO.
pub trait AddressSpace: Send + Sync + 'static {
    /// Used in messages ("port", "MMIO").
    const NAME: &'static str;
}

/// x86 port I/O (`in`/`out`, 64 KiB of ports).
pub enum Pio {}
/// Memory-mapped I/O (guest-physical addresses no memory slot backs).
pub enum Mmio {}

impl AddressSpace for Pio {
    const NAME: &'static str = "port";
}
impl AddressSpace for Mmio {
    const NAME: &'static str = "MMIO";
}

pub type PioBus = Bus<Pio>;
pub type MmioBus = Bus<Mmio>;

/// A device's identity on one bus, given at registration and never reused. Exit statistics and
/// (later) device state are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(u32);

impl DeviceId {
    /// Dense index: ids are handed out 0, 1, 2... per bus.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Errors changing a bus. The map is unchanged after any of them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error(
        "{space} range {base:#x}+{len:#x} overlaps '{other}' at {other_base:#x}+{other_len:#x}"
    )]
    Overlap {
        space: &'static str,
        base: u64,
        len: u64,
        other: String,
        other_base: u64,
        other_len: u64,
    },
    #[error("{space} range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange {
        space: &'static str,
        base: u64,
        len: u64,
    },
    #[error("no device {id} on the {space} bus")]
    UnknownDevice { space: &'static str, id: DeviceId },
    #[error("device {id} has no {space} range at {base:#x}")]
    NoRange {
        space: &'static str,
        id: DeviceId,
        base: u64,
    },
}

#[derive(Clone)]
struct Entry {
    base: u64,
    len: u64,
    id: DeviceId,
    device: Arc<dyn BusDevice>,
}

/// An immutable snapshot of a bus's ranges, sorted by base address; what vCPUs search.
#[derive(Default, Clone)]
pub struct BusMap {
    entries: Vec<Entry>,
}

/// A mapped range, as listed by [`Bus::ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRange {
    pub id: DeviceId,
    pub base: u64,
    pub len: u64,
    pub name: String,
}

impl BusMap {
    #[inline]
    fn entry(&self, addr: u64) -> Option<(&Entry, u64)> {
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

    /// Dispatch a read; returns the id of the device that handled it, or None (and leaves `data`
    /// untouched) if no device claims `addr`.
    #[inline]
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Option<DeviceId> {
        let (e, off) = self.entry(addr)?;
        e.device.read(off, data);
        Some(e.id)
    }

    /// Dispatch a write; returns the id of the device that handled it, or None.
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<DeviceId> {
        let (e, off) = self.entry(addr)?;
        e.device.write(off, data);
        Some(e.id)
    }

    /// The entry `[base, end)` overlaps, if any. `skip` is a range (device,
    /// base) left out of the check, for moves.
    fn overlap(&self, base: u64, end: u64, skip: Option<(DeviceId, u64)>) -> Option<&Entry> {
        let skipped = |e: &Entry| skip == Some((e.id, e.base));
        let idx = self.entries.partition_point(|e| e.base < base);
        let prev = self.entries[..idx].iter().rev().find(|e| !skipped(e));
        if let Some(p) = prev.filter(|p| p.base + p.len > base) {
            return Some(p);
        }
        let next = self.entries[idx..].iter().find(|e| !skipped(e));
        next.filter(|n| n.base < end)
    }
}

struct Registered {
    name: String,
    device: Arc<dyn BusDevice>,
}

struct BusState {
    devices: Vec<Registered>,
    map: Arc<BusMap>,
    generation: u64,
}

/// One address space. Changes take `&self` (the writer lock is inside), so a bus is shared as an
/// `Arc` between the device manager, which changes it, and the vCPUs, which read it.
pub struct Bus<S: AddressSpace> {
    state: Mutex<BusState>,
    /// Equals `state.generation`; read without the lock by [`BusReader`].
    generation: AtomicU64,
    space: PhantomData<S>,
}

impl<S: AddressSpace> Default for Bus<S> {
    fn default() -> Self {
        Self {
            state: Mutex::new(BusState {
                devices: Vec::new(),
                map: Arc::new(BusMap::default()),
                generation: 0,
            }),
            generation: AtomicU64::new(0),
            space: PhantomData,
        }
    }
}

impl<S: AddressSpace> Bus<S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        // The state is replaced whole under the lock, so a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `device` under `name` (e.g. "COM1") without mapping anything yet.
    pub fn register(&self, name: &str, device: Arc<dyn BusDevice>) -> DeviceId {
        let mut st = self.lock();
        let id = DeviceId(st.devices.len() as u32);
        st.devices.push(Registered {
            name: name.to_string(),
            device,
        });
        id
    }

    /// Register `device` and map it at `[base, base + len)`. Nothing is registered on error.
    pub fn add(
        &self,
        name: &str,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<DeviceId, BusError> {
        let mut st = self.lock();
        let end = Self::end(base, len)?;
        Self::check_free(&st, base, len, end, None)?;
        let id = DeviceId(st.devices.len() as u32);
        st.devices.push(Registered {
            name: name.to_string(),
            device: device.clone(),
        });
        self.commit(&mut st, |m| Self::put(m, base, len, id, &device));
        Ok(id)
    }

    /// Map registered device `id` at `[base, base + len)` (a device may have several ranges).
    pub fn insert(&self, id: DeviceId, base: u64, len: u64) -> Result<(), BusError> {
        let mut st = self.lock();
        let device = Self::device(&st, id)?;
        let end = Self::end(base, len)?;
        Self::check_free(&st, base, len, end, None)?;
        self.commit(&mut st, |m| Self::put(m, base, len, id, &device));
        Ok(())
    }

    /// Unmap the range of `id` that starts at `base`; returns its length.
    pub fn remove(&self, id: DeviceId, base: u64) -> Result<u64, BusError> {
        let mut st = self.lock();
        let idx = Self::find(&st, id, base)?;
        let len = st.map.entries[idx].len;
        self.commit(&mut st, |m| {
            m.entries.remove(idx);
        });
        Ok(len)
    }

    /// Move the range of `id` at `old` to start at `new`, keeping its length. Fails, changing
    /// nothing, if the new place overlaps another range (the range itself does not count).
    pub fn move_range(&self, id: DeviceId, old: u64, new: u64) -> Result<(), BusError> {
        let mut st = self.lock();
        let idx = Self::find(&st, id, old)?;
        let len = st.map.entries[idx].len;
        let end = Self::end(new, len)?;
        Self::check_free(&st, new, len, end, Some((id, old)))?;
        let device = st.map.entries[idx].device.clone();
        self.commit(&mut st, |m| {
            m.entries.remove(idx);
            Self::put(m, new, len, id, &device);
        });
        Ok(())
    }

    /// The current map (for readers outside the vCPU loop).
    pub fn snapshot(&self) -> Arc<BusMap> {
        self.lock().map.clone()
    }

    /// A reader for one vCPU thread.
    pub fn reader(self: &Arc<Self>) -> BusReader<S> {
        let st = self.lock();
        BusReader {
            bus: self.clone(),
            map: st.map.clone(),
            generation: st.generation,
        }
    }

    /// Number of devices ever registered: every id is below this.
    pub fn device_count(&self) -> usize {
        self.lock().devices.len()
    }

    /// The name `id` was registered under.
    pub fn name(&self, id: DeviceId) -> Option<String> {
        self.lock().devices.get(id.index()).map(|d| d.name.clone())
    }

    /// Every registered device's name, indexed by [`DeviceId::index`].
    pub fn names(&self) -> Vec<String> {
        self.lock().devices.iter().map(|d| d.name.clone()).collect()
    }

    /// Every mapped range with its device's id and name, in address order.
    pub fn ranges(&self) -> Vec<BusRange> {
        let st = self.lock();
        st.map
            .entries
            .iter()
            .map(|e| BusRange {
                id: e.id,
                base: e.base,
                len: e.len,
                name: st.devices[e.id.index()].name.clone(),
            })
            .collect()
    }

    fn end(base: u64, len: u64) -> Result<u64, BusError> {
        base.checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange {
                space: S::NAME,
                base,
                len,
            })
    }

    fn device(st: &BusState, id: DeviceId) -> Result<Arc<dyn BusDevice>, BusError> {
        st.devices
            .get(id.index())
            .map(|d| d.device.clone())
            .ok_or(BusError::UnknownDevice { space: S::NAME, id })
    }

    fn find(st: &BusState, id: DeviceId, base: u64) -> Result<usize, BusError> {
        Self::device(st, id)?;
        st.map
            .entries
            .iter()
            .position(|e| e.id == id && e.base == base)
            .ok_or(BusError::NoRange {
                space: S::NAME,
                id,
                base,
            })
    }

    fn check_free(
        st: &BusState,
        base: u64,
        len: u64,
        end: u64,
        skip: Option<(DeviceId, u64)>,
    ) -> Result<(), BusError> {
        match st.map.overlap(base, end, skip) {
            None => Ok(()),
            Some(other) => Err(BusError::Overlap {
                space: S::NAME,
                base,
                len,
                other: st.devices[other.id.index()].name.clone(),
                other_base: other.base,
                other_len: other.len,
            }),
        }
    }

    /// Insert into a map already checked to have room: the sorted position is the place.
    fn put(m: &mut BusMap, base: u64, len: u64, id: DeviceId, dev: &Arc<dyn BusDevice>) {
        let idx = m.entries.partition_point(|e| e.base < base);
        m.entries.insert(
            idx,
            Entry {
                base,
                len,
                id,
                device: dev.clone(),
            },
        );
    }

    /// Build the next map from the current one and publish it.
    fn commit(&self, st: &mut BusState, change: impl FnOnce(&mut BusMap)) {
        let mut next = BusMap::clone(&st.map);
        change(&mut next);
        st.map = Arc::new(next);
        st.generation += 1;
        self.generation.store(st.generation, Ordering::Release);
    }
}

/// One vCPU's view of a bus: its own `Arc` of the map, refreshed only after a change.
pub struct BusReader<S: AddressSpace> {
    bus: Arc<Bus<S>>,
    map: Arc<BusMap>,
    generation: u64,
}

impl<S: AddressSpace> BusReader<S> {
    /// The current map: one atomic load when nothing changed since the last call.
    #[inline]
    pub fn map(&mut self) -> &BusMap {
        if self.bus.generation.load(Ordering::Acquire) != self.generation {
            self.refresh();
        }
        &self.map
    }

    #[cold]
    fn refresh(&mut self) {
        let st = self.bus.lock();
        self.map = st.map.clone();
        self.generation = st.generation;
    }
}

#[cfg(test)]
mod tests;
