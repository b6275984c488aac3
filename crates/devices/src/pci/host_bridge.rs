//! The host bridge at 00:00.0 with QEMU's identities: the Q35 MCH (82G33 DRAM controller,
//! 8086:29c0) or the i440FX PMC (8086:1237).
//!
//! It has no BARs; the guest can change only the generic header bits [`PciConfig`] makes
//! writable (COMMAND, cache line size, interrupt line). The chipset registers QEMU implements
//! past the header (PAM, SMRAM, PCIEXBAR) are not modelled and read as zero.

use std::sync::Mutex;

use super::{
    BarChange, PciConfig, PciDevice, PciIdentity, PCI_SUBDEVICE_ID_QEMU,
    PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};

/// Which chipset's host bridge to present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBridgeKind {
    Q35,
    I440fx,
}

const VENDOR_INTEL: u16 = 0x8086;
/// Class 06 (bridge), subclass 00 (host bridge).
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST: u8 = 0x00;
/// STATUS: medium DEVSEL timing (bits 10:9 = 01).
const STATUS_DEVSEL_MEDIUM: u16 = 0x0200;

/// A conventional-PCI host bridge function: a read-only identity plus a writable command word.
pub struct HostBridge {
    config: Mutex<PciConfig>,
}

impl HostBridge {
    pub fn new(kind: HostBridgeKind) -> Self {
        let (device, revision) = match kind {
            HostBridgeKind::Q35 => (0x29c0, 0x00),
            HostBridgeKind::I440fx => (0x1237, 0x02),
        };
        let mut config = PciConfig::new(&PciIdentity {
            vendor: VENDOR_INTEL,
            device,
            class: CLASS_BRIDGE,
            subclass: SUBCLASS_HOST,
            prog_if: 0,
            revision,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        config.set_status(STATUS_DEVSEL_MEDIUM);
        Self {
            config: Mutex::new(config),
        }
    }

    fn config(&self) -> std::sync::MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PciDevice for HostBridge {
    fn config_read(&self, reg: usize) -> u32 {
        // Registers past the 256-byte space (ECAM offsets up to 4 KiB) read as zero.
        self.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        self.config().write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        self.config().reset()
    }
}
