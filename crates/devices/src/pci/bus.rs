//! The PCI bus tree: bus 0 and the secondary bus of every bridge, up to 32 devices of 8
//! functions each per bus, addressed by devfn (device << 3 | function).
//!
//! rvmm names a function by where it was attached ([`PciLoc`]: the index of its bus in the
//! order buses were added, 0 for the root bus, and its devfn). The guest names it by bus
//! *number*, which firmware assigns by writing the bridges' secondary and subordinate bus
//! registers; a config cycle for bus N > 0 goes down through the bridge whose range holds N
//! (PCI-to-PCI bridge spec 1.2, 3.1.2.1: type 1 cycles are forwarded, and turned into type 0
//! on the bridge's secondary bus). Before firmware numbers a bridge, what sits behind it is
//! unreachable, as on hardware.
//!
//! Config writes can move BARs. The bus never maps anything itself: it hands the changes each
//! write returns to a [`BarRelocation`] that the VMM's device manager installs.

use std::sync::{Arc, Mutex};

use super::BarChange;

/// A PCI function's configuration space (256 bytes for conventional PCI, 4 KiB for PCIe).
pub trait PciDevice: Send + Sync {
    /// The 32-bit register at dword index `reg` (byte offset `reg * 4`).
    fn config_read(&self, reg: usize) -> u32;
    /// Write `data` (1 to 4 bytes) at byte `offset` inside dword `reg`; returns the regions
    /// whose decoded address changed.
    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange>;
    /// Power-on reset (RST#): returns the regions it unmapped.
    fn reset(&self) -> Vec<BarChange> {
        Vec::new()
    }
    /// Whether dword `reg` is a window onto something else, whose accesses act beyond config
    /// space (virtio's PCI cfg access data): a snapshot neither reads nor replays it.
    fn is_window(&self, _reg: usize) -> bool {
        false
    }
    /// A bridge's secondary and subordinate bus numbers as the guest programmed them; None
    /// for a function that is not a bridge.
    fn bus_range(&self) -> Option<(u8, u8)> {
        None
    }
}

/// Where a function is attached: rvmm's index of its bus (0: the root bus; n: the secondary
/// bus of the n-th bridge added) and its devfn there. Fixed for the VM's lifetime, whatever bus
/// numbers the guest programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciLoc {
    pub bus: u8,
    pub devfn: u8,
}

impl PciLoc {
    /// A function of the root bus.
    pub const fn root(devfn: u8) -> Self {
        Self { bus: 0, devfn }
    }

    pub const fn slot(self) -> u8 {
        self.devfn >> 3
    }

    pub const fn function(self) -> u8 {
        self.devfn & 7
    }
}

/// Applies BAR changes: implemented by the VMM's device manager; the PCI code never touches
/// buses or KVM.
pub trait BarRelocation: Send + Sync {
    /// Called synchronously from the guest's config write, before the vCPU resumes.
    ///
    /// It runs with the `PciBus` read lock held (the config access mechanisms reach the bus
    /// through `RwLock<PciBus>`) and under the bus's config-write mutex, which keeps BAR changes
    /// in the order the writes made them. So it may read config space but must not write it,
    /// reset the bus, or take the bus's write lock.
    fn relocate(&self, loc: PciLoc, changes: &[BarChange]);
}

/// Errors attaching devices to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciBusError {
    #[error("PCI slot {slot:02x}.{function} is already taken")]
    SlotTaken { slot: u8, function: u8 },
    #[error("PCI address {slot:#x}.{function} is out of range (slots 0-31, functions 0-7)")]
    BadAddress { slot: u8, function: u8 },
    #[error("no PCI bus with index {0}")]
    NoBus(u8),
    #[error("the function at bus index {}, {:02x}.{} is not a PCI bridge", .0.bus, .0.slot(), .0.function())]
    NotABridge(PciLoc),
    #[error("too many PCI buses (256)")]
    TooManyBuses,
}

const FUNCTIONS: usize = 256;

/// One bus: its functions and, for a secondary bus, the bridge above it.
struct BusSlots {
    bridge: Option<PciLoc>,
    functions: Vec<Option<Arc<dyn PciDevice>>>,
}

impl BusSlots {
    fn new(bridge: Option<PciLoc>) -> Self {
        Self {
            bridge,
            functions: vec![None; FUNCTIONS],
        }
    }
}

/// The PCI bus tree below the host bridge.
pub struct PciBus {
    buses: Vec<BusSlots>,
    relocation: Option<Arc<dyn BarRelocation>>,
    /// Serialises a config write with the relocation of its BAR changes.
    config_writes: Mutex<()>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self {
            buses: vec![BusSlots::new(None)],
            relocation: None,
            config_writes: Mutex::new(()),
        }
    }
}

impl PciBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `dev` at `slot`.`function` of the root bus.
    pub fn add_device(
        &mut self,
        slot: u8,
        function: u8,
        dev: Arc<dyn PciDevice>,
    ) -> Result<(), PciBusError> {
        self.add_device_on(0, slot, function, dev).map(|_| ())
    }

    /// Attach `dev` at `slot`.`function` of the bus with index `bus`.
    pub fn add_device_on(
        &mut self,
        bus: u8,
        slot: u8,
        function: u8,
        dev: Arc<dyn PciDevice>,
    ) -> Result<PciLoc, PciBusError> {
        if slot >= 32 || function >= 8 {
            return Err(PciBusError::BadAddress { slot, function });
        }
        let slots = self
            .buses
            .get_mut(usize::from(bus))
            .ok_or(PciBusError::NoBus(bus))?;
        let devfn = slot << 3 | function;
        let entry = &mut slots.functions[usize::from(devfn)];
        if entry.is_some() {
            return Err(PciBusError::SlotTaken { slot, function });
        }
        *entry = Some(dev);
        Ok(PciLoc { bus, devfn })
    }

    /// Take the function at `loc` off its bus (hot-unplug); config cycles there read all-ones.
    pub fn remove(&mut self, loc: PciLoc) -> Option<Arc<dyn PciDevice>> {
        self.buses
            .get_mut(usize::from(loc.bus))?
            .functions
            .get_mut(usize::from(loc.devfn))?
            .take()
    }

    /// Give the bridge at `bridge` its secondary bus; returns the new bus's index.
    pub fn add_secondary_bus(&mut self, bridge: PciLoc) -> Result<u8, PciBusError> {
        let is_bridge = self
            .function_at(bridge)
            .is_some_and(|d| d.bus_range().is_some());
        if !is_bridge {
            return Err(PciBusError::NotABridge(bridge));
        }
        let index = u8::try_from(self.buses.len()).map_err(|_| PciBusError::TooManyBuses)?;
        self.buses.push(BusSlots::new(Some(bridge)));
        Ok(index)
    }

    /// The bridge above the bus with index `bus` (None for the root bus or no such bus).
    pub fn bridge_of(&self, bus: u8) -> Option<PciLoc> {
        self.buses.get(usize::from(bus))?.bridge
    }

    /// How many buses there are (the root bus and one per bridge).
    pub fn bus_count(&self) -> usize {
        self.buses.len()
    }

    /// The lowest free slot (function 0) of the root bus, for devices added without an address.
    pub fn free_slot(&self) -> Option<u8> {
        self.free_slot_on(0)
    }

    /// The lowest free slot (function 0) of the bus with index `bus`.
    pub fn free_slot_on(&self, bus: u8) -> Option<u8> {
        let slots = self.buses.get(usize::from(bus))?;
        (0..32u8).find(|s| slots.functions[usize::from(*s) << 3].is_none())
    }

    /// The function attached at `loc`.
    pub fn function_at(&self, loc: PciLoc) -> Option<&Arc<dyn PciDevice>> {
        self.buses
            .get(usize::from(loc.bus))?
            .functions
            .get(usize::from(loc.devfn))?
            .as_ref()
    }

    /// The index of the bus the guest numbers `number`: bus 0 is the root bus; any other is
    /// found by walking down the bridges whose secondary..=subordinate range holds it.
    pub fn route(&self, number: u8) -> Option<u8> {
        let mut current = 0u8;
        if number == 0 {
            return Some(0);
        }
        // Each step goes one bus deeper; a tree of n buses is at most n deep.
        for _ in 0..self.buses.len() {
            let mut next = None;
            for (index, slots) in self.buses.iter().enumerate().skip(1) {
                let Some(bridge) = slots.bridge.filter(|b| b.bus == current) else {
                    continue;
                };
                let Some((secondary, subordinate)) =
                    self.function_at(bridge).and_then(|d| d.bus_range())
                else {
                    continue;
                };
                if secondary != 0 && (secondary..=subordinate).contains(&number) {
                    // Bus indexes fit in a u8 (add_secondary_bus).
                    next = Some((index as u8, secondary == number));
                    break;
                }
            }
            match next {
                Some((index, true)) => return Some(index),
                Some((index, false)) => current = index,
                None => return None,
            }
        }
        None
    }

    fn function(&self, number: u8, devfn: u8) -> Option<(PciLoc, &Arc<dyn PciDevice>)> {
        let loc = PciLoc {
            bus: self.route(number)?,
            devfn,
        };
        Some((loc, self.function_at(loc)?))
    }

    /// Every attached function, root bus first, each bus in devfn order.
    pub fn locations(&self) -> Vec<PciLoc> {
        let mut out = Vec::new();
        for (bus, slots) in self.buses.iter().enumerate() {
            for (devfn, f) in slots.functions.iter().enumerate() {
                if f.is_some() {
                    // Both fit in a u8: at most 256 buses of 256 functions.
                    out.push(PciLoc {
                        bus: bus as u8,
                        devfn: devfn as u8,
                    });
                }
            }
        }
        out
    }

    /// The devfns of the root bus that have a function.
    pub fn devfns(&self) -> Vec<u8> {
        self.locations()
            .into_iter()
            .filter(|l| l.bus == 0)
            .map(|l| l.devfn)
            .collect()
    }

    /// Whether dword `reg` of the function at `loc` is a window (see [`PciDevice::is_window`]).
    pub fn is_window(&self, loc: PciLoc, reg: usize) -> bool {
        self.function_at(loc).is_some_and(|d| d.is_window(reg))
    }

    /// Read dword `reg` of bus number `number`, `devfn`; all-ones when nothing answers.
    pub fn read(&self, number: u8, devfn: u8, reg: usize) -> u32 {
        match self.function(number, devfn) {
            Some((_, dev)) => dev.config_read(reg),
            None => u32::MAX,
        }
    }

    /// Read dword `reg` of the function at `loc`; all-ones when there is none.
    pub fn read_at(&self, loc: PciLoc, reg: usize) -> u32 {
        self.function_at(loc)
            .map_or(u32::MAX, |d| d.config_read(reg))
    }

    /// Write to bus number `number`, `devfn`; None when nothing answers, else the function's
    /// location and its BAR changes. Nothing is relocated: see
    /// [`write_and_relocate`](Self::write_and_relocate).
    pub fn write(
        &self,
        number: u8,
        devfn: u8,
        reg: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<(PciLoc, Vec<BarChange>)> {
        let (loc, dev) = self.function(number, devfn)?;
        Some((loc, dev.config_write(reg, offset, data)))
    }

    /// Install what applies BAR changes from guest config writes and resets.
    pub fn set_relocation(&mut self, relocation: Arc<dyn BarRelocation>) {
        self.relocation = Some(relocation);
    }

    /// A guest config write: write to bus number `number`, `devfn`, then hand a non-empty
    /// change list to the relocation, both under one mutex so concurrent writers apply changes
    /// in order.
    pub fn write_and_relocate(
        &self,
        number: u8,
        devfn: u8,
        reg: usize,
        offset: usize,
        data: &[u8],
    ) {
        let _serial = self.config_writes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((loc, changes)) = self.write(number, devfn, reg, offset, data) {
            self.relocate(loc, &changes);
        }
    }

    /// [`write_and_relocate`](Self::write_and_relocate) to the function at `loc`, whatever
    /// bus numbers the guest programmed (rvmm's own BAR programming, snapshot restore).
    pub fn write_at_and_relocate(&self, loc: PciLoc, reg: usize, offset: usize, data: &[u8]) {
        let _serial = self.config_writes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dev) = self.function_at(loc) {
            let changes = dev.config_write(reg, offset, data);
            self.relocate(loc, &changes);
        }
    }

    /// Reset every function (machine reset) and relocate what each one unmapped.
    pub fn reset_devices(&self) {
        let _serial = self.config_writes.lock().unwrap_or_else(|e| e.into_inner());
        for loc in self.locations() {
            if let Some(dev) = self.function_at(loc) {
                self.relocate(loc, &dev.reset());
            }
        }
    }

    fn relocate(&self, loc: PciLoc, changes: &[BarChange]) {
        if changes.is_empty() {
            return;
        }
        match &self.relocation {
            Some(r) => r.relocate(loc, changes),
            None => tracing::debug!(?loc, ?changes, "PCI BAR changes with no relocation"),
        }
    }
}
