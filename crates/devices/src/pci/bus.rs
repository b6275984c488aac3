//! Bus 0: up to 32 devices of 8 functions each, addressed by devfn (device << 3 | function).
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
    fn relocate(&self, devfn: u8, changes: &[BarChange]);
}

/// Errors attaching devices to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciBusError {
    #[error("PCI slot {slot:02x}.{function} is already taken")]
    SlotTaken { slot: u8, function: u8 },
    #[error("PCI address {slot:#x}.{function} is out of range (slots 0-31, functions 0-7)")]
    BadAddress { slot: u8, function: u8 },
}

const FUNCTIONS: usize = 256;

/// PCI bus 0.
pub struct PciBus {
    functions: Vec<Option<Arc<dyn PciDevice>>>,
    relocation: Option<Arc<dyn BarRelocation>>,
    /// Serialises a config write with the relocation of its BAR changes.
    config_writes: Mutex<()>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self {
            functions: vec![None; FUNCTIONS],
            relocation: None,
            config_writes: Mutex::new(()),
        }
    }
}

impl PciBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `dev` at `slot`.`function`.
    pub fn add_device(
        &mut self,
        slot: u8,
        function: u8,
        dev: Arc<dyn PciDevice>,
    ) -> Result<(), PciBusError> {
        if slot >= 32 || function >= 8 {
            return Err(PciBusError::BadAddress { slot, function });
        }
        let entry = &mut self.functions[usize::from(slot) << 3 | usize::from(function)];
        if entry.is_some() {
            return Err(PciBusError::SlotTaken { slot, function });
        }
        *entry = Some(dev);
        Ok(())
    }

    /// The lowest free slot (function 0), for devices added without an address.
    pub fn free_slot(&self) -> Option<u8> {
        (0..32u8).find(|s| self.functions[usize::from(*s) << 3].is_none())
    }

    fn function(&self, bus: u8, devfn: u8) -> Option<&Arc<dyn PciDevice>> {
        if bus != 0 {
            return None;
        }
        self.functions.get(usize::from(devfn))?.as_ref()
    }

    /// The devfns of bus 0 that have a function.
    pub fn devfns(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&d| {
                self.functions
                    .get(usize::from(d))
                    .is_some_and(Option::is_some)
            })
            .collect()
    }

    /// Whether dword `reg` of bus 0's `devfn` is a window (see [`PciDevice::is_window`]).
    pub fn is_window(&self, devfn: u8, reg: usize) -> bool {
        self.function(0, devfn).is_some_and(|d| d.is_window(reg))
    }

    /// Read dword `reg` of bus:devfn; all-ones when nothing answers.
    pub fn read(&self, bus: u8, devfn: u8, reg: usize) -> u32 {
        match self.function(bus, devfn) {
            Some(dev) => dev.config_read(reg),
            None => u32::MAX,
        }
    }

    /// Write to bus:devfn; None when nothing answers, else the devfn and its BAR changes.
    /// Nothing is relocated: see [`write_and_relocate`](Self::write_and_relocate).
    pub fn write(
        &self,
        bus: u8,
        devfn: u8,
        reg: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<(u8, Vec<BarChange>)> {
        let dev = self.function(bus, devfn)?;
        Some((devfn, dev.config_write(reg, offset, data)))
    }

    /// Install what applies BAR changes from guest config writes and resets.
    pub fn set_relocation(&mut self, relocation: Arc<dyn BarRelocation>) {
        self.relocation = Some(relocation);
    }

    /// A guest config write: write to bus:devfn, then hand a non-empty change list to the
    /// relocation, both under one mutex so concurrent writers apply changes in order.
    pub fn write_and_relocate(&self, bus: u8, devfn: u8, reg: usize, offset: usize, data: &[u8]) {
        let _serial = self.config_writes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((devfn, changes)) = self.write(bus, devfn, reg, offset, data) {
            self.relocate(devfn, &changes);
        }
    }

    /// Reset every function (machine reset) and relocate what each one unmapped.
    pub fn reset_devices(&self) {
        let _serial = self.config_writes.lock().unwrap_or_else(|e| e.into_inner());
        for (devfn, dev) in self.functions.iter().enumerate() {
            if let Some(dev) = dev {
                // FUNCTIONS is 256, so devfn fits in a u8.
                self.relocate(devfn as u8, &dev.reset());
            }
        }
    }

    fn relocate(&self, devfn: u8, changes: &[BarChange]) {
        if changes.is_empty() {
            return;
        }
        match &self.relocation {
            Some(r) => r.relocate(devfn, changes),
            None => tracing::debug!(devfn, ?changes, "PCI BAR changes with no relocation"),
        }
    }
}
