//! The PCI buses in a snapshot: every function's configuration space (the first 256 bytes, where
//! BARs, COMMAND and the capabilities live). Restore replays it as config writes through the
//! same path the guest's writes take, so BAR mappings, ioeventfds and memory slots follow, and
//! chipset registers (PAM, PCIEXBAR, the PM base) take effect as when firmware wrote them.
//! A dword that is a window onto the device (virtio's PCI cfg access data) is neither read nor
//! replayed. What a function keeps outside config space is its own device's state, saved under
//! its bus name (a function with BARs but no registered state blocks the snapshot by that name).

use rvmm_devices::pci::{PciBus, PciLoc};
use rvmm_devices::{Persist, StateError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// Dwords saved per function (256 bytes).
const DWORDS: usize = 64;
/// COMMAND / STATUS.
const REG_COMMAND: usize = 1;
/// Cache line size, latency timer, header type, BIST.
const REG_HEADER: usize = 3;
/// The six BARs of a type-0 header.
const BAR_REGS: std::ops::Range<usize> = 4..10;
/// The expansion ROM BAR of a type-0 header.
const REG_ROM: usize = 12;
/// COMMAND's I/O and memory space enables.
const COMMAND_DECODE: u16 = 0x3;

/// One function, by where rvmm attached it (`bus` is rvmm's bus index, 0 for the root bus;
/// snapshots from before bridges have none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionState {
    #[serde(default)]
    pub bus: u8,
    pub devfn: u8,
    pub config: Vec<u32>,
}

pub struct PciConfigState(pub Arc<RwLock<PciBus>>);

impl Persist for PciConfigState {
    type State = Vec<FunctionState>;

    fn save(&self) -> Self::State {
        let bus = self.0.read().unwrap_or_else(|e| e.into_inner());
        bus.locations()
            .into_iter()
            .map(|loc| FunctionState {
                bus: loc.bus,
                devfn: loc.devfn,
                // A window's read would act on the device (reading the ISR clears it).
                config: (0..DWORDS)
                    .map(|reg| {
                        if bus.is_window(loc, reg) {
                            0
                        } else {
                            bus.read_at(loc, reg)
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn restore(&self, saved: Self::State) -> Result<(), StateError> {
        let bus = self.0.read().unwrap_or_else(|e| e.into_inner());
        let loc = |f: &FunctionState| PciLoc {
            bus: f.bus,
            devfn: f.devfn,
        };
        let ours = bus.locations();
        let theirs: Vec<PciLoc> = saved.iter().map(loc).collect();
        if ours != theirs {
            return Err(StateError::Invalid(format!(
                "PCI functions {theirs:02x?} in the snapshot, {ours:02x?} here"
            )));
        }
        for f in &saved {
            if f.config.len() != DWORDS || f.config[0] != bus.read_at(loc(f), 0) {
                return Err(StateError::Invalid(format!(
                    "PCI {:02x}:{:02x}.{}: another device or a short config space in the snapshot",
                    f.bus,
                    f.devfn >> 3,
                    f.devfn & 7
                )));
            }
        }
        // Root bus first (locations are in bus-index order), so bridges are numbered before
        // what sits behind them.
        for f in &saved {
            let at = loc(f);
            let write = |reg: usize, bytes: &[u8]| bus.write_at_and_relocate(at, reg, 0, bytes);
            // Decoding off while the BARs move, as firmware does; unless they stay where they
            // are (a restore into the VM built from the same command line): unmapping and mapping
            // a BAR again costs KVM a memory-slot change, up to ~15 ms for the VGA framebuffer.
            let decode = |command: u32| command & u32::from(COMMAND_DECODE);
            let stays = decode(bus.read_at(at, REG_COMMAND)) == decode(f.config[REG_COMMAND])
                && BAR_REGS
                    .clone()
                    .chain([REG_ROM])
                    .all(|r| bus.read_at(at, r) == f.config[r]);
            if !stays {
                write(REG_COMMAND, &0u16.to_le_bytes());
            }
            write(REG_HEADER, &f.config[REG_HEADER].to_le_bytes()[..2]);
            for reg in (4..DWORDS).filter(|&r| !bus.is_window(at, r)) {
                write(reg, &f.config[reg].to_le_bytes());
            }
            // COMMAND last (not STATUS: its bits are write-1-to-clear).
            write(REG_COMMAND, &f.config[REG_COMMAND].to_le_bytes()[..2]);
        }
        Ok(())
    }
}
