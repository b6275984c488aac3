//! Bus 0: up to 32 devices of 8 functions each, addressed by devfn (device << 3 | function).

use std::sync::Arc;

/// A PCI function's configuration space (256 bytes for conventional PCI, 4 KiB for PCIe).
pub trait PciDevice: Send + Sync {
    /// The 32-bit register at dword index `reg` (byte offset `reg * 4`).
    fn config_read(&self, reg: usize) -> u32;
    /// Write `data` (1 to 4 bytes) at byte `offset` inside dword `reg`.
    fn config_write(&self, reg: usize, offset: usize, data: &[u8]);
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
}

impl Default for PciBus {
    fn default() -> Self {
        Self {
            functions: vec![None; FUNCTIONS],
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

    /// Read dword `reg` of bus:devfn; all-ones when nothing answers.
    pub fn read(&self, bus: u8, devfn: u8, reg: usize) -> u32 {
        match self.function(bus, devfn) {
            Some(dev) => dev.config_read(reg),
            None => u32::MAX,
        }
    }

    /// Write to bus:devfn; dropped when nothing answers.
    pub fn write(&self, bus: u8, devfn: u8, reg: usize, offset: usize, data: &[u8]) {
        if let Some(dev) = self.function(bus, devfn) {
            dev.config_write(reg, offset, data);
        }
    }
}
