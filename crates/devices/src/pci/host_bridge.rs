//! The host bridge at 00:00.0 with QEMU's identities: the Q35 MCH (82G33 DRAM controller,
//! 8086:29c0) or the i440FX PMC (8086:1237).

use std::sync::Mutex;

use super::PciDevice;

/// Which chipset's host bridge to present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBridgeKind {
    Q35,
    I440fx,
}

const CONFIG_DWORDS: usize = 64;
const VENDOR_INTEL: u32 = 0x8086;
/// Subsystem IDs QEMU gives its devices (Red Hat / QEMU).
const SUBSYSTEM: u32 = 0x1100 << 16 | 0x1af4;
/// Class 06 (bridge), subclass 00 (host bridge), prog-if 00.
const CLASS_HOST_BRIDGE: u32 = 0x0600_0000;
/// Command register bits the guest may change: I/O, memory, bus master, parity, SERR.
const COMMAND_WRITABLE: u32 = 0x0147;

/// A conventional-PCI host bridge function: a read-only identity plus a writable command word.
pub struct HostBridge {
    config: Mutex<[u32; CONFIG_DWORDS]>,
}

impl HostBridge {
    pub fn new(kind: HostBridgeKind) -> Self {
        let mut c = [0u32; CONFIG_DWORDS];
        let (device, revision) = match kind {
            HostBridgeKind::Q35 => (0x29c0, 0x00),
            HostBridgeKind::I440fx => (0x1237, 0x02),
        };
        c[0] = device << 16 | VENDOR_INTEL;
        // Status: medium DEVSEL timing (bits 10:9 = 01), as QEMU's default status.
        c[1] = 0x0200 << 16;
        c[2] = CLASS_HOST_BRIDGE | revision;
        // Header type 0, single function.
        c[3] = 0;
        c[11] = SUBSYSTEM;
        Self {
            config: Mutex::new(c),
        }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&self, reg: usize) -> u32 {
        let c = self.config.lock().unwrap_or_else(|e| e.into_inner());
        // Registers past the 256-byte space (ECAM offsets up to 4 KiB) read as zero.
        c.get(reg).copied().unwrap_or(0)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) {
        if reg != 1 {
            return;
        }
        let mut c = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = c[1];
        for (i, &b) in data.iter().enumerate() {
            let shift = (offset + i) * 8;
            if shift >= 32 {
                break;
            }
            let mask = (0xffu32 << shift) & COMMAND_WRITABLE;
            value = (value & !mask) | ((u32::from(b) << shift) & mask);
        }
        c[1] = value;
    }
}
