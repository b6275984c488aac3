//! The host bridge at 00:00.0 with QEMU's identities: the Q35 MCH (82G33 DRAM controller,
//! 8086:29c0) or the i440FX PMC (8086:1237), and the chipset registers firmware programs in it.
//!
//! As in QEMU (hw/pci-host/q35.c, hw/pci-host/i440fx.c) the whole device-specific area
//! (0x40-0xff) is guest-writable storage, except where a register says otherwise:
//! - Q35: PCIEXBAR (0x60, 64 bits), PAM0-6 (0x90-0x96), SMRAM (0x9d: D_OPEN, D_CLS, D_LCK,
//!   G_SMRAME writable, C_BASE_SEG hard-wired to 010b; D_LCK locks SMRAM and ESMRAMC as QEMU's
//!   `mch_update_smram`) and ESMRAMC (0x9e: H_SMRAME, TSEG_SZ, T_EN writable).
//! - i440FX: PAM0-6 (0x59-0x5f) and SMRAM (0x72, power-on 0x02; QEMU has no D_LCK there).
//!
//! Nothing is remapped: PAM is only stored ([`HostBridge::pam`] hands the values to the VMM),
//! SMRAM needs SMM, which rvmm does not have, and ECAM stays at 0xb0000000 (256 MiB), so a
//! PCIEXBAR that enables another window is stored and warned about once.
//!
//! Reset follows QEMU's `mch_reset`: PCIEXBAR, SMRAM and ESMRAMC (and their lock) go back to
//! their power-on values. PAM differs from QEMU on purpose: QEMU keeps it across a system reset,
//! so the RAM behind 0xc0000-0xfffff still holds the last boot's BIOS and SeaBIOS takes its
//! reboot path (`qemu_reboot` copies the image from flash again and resets once more). rvmm does
//! not remap that RAM; it copies the ROM's tail into it at every reset instead, which is what
//! the power-on PAM value (all ROM) describes. So PAM goes back to 0 and SeaBIOS does a cold
//! POST, copying its whole image from flash itself (sb/fw/shadow.c `make_bios_writable`); with
//! PAM kept, it would skip that copy and run the stale lower half of a 256 KiB image.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{
    BarChange, PciConfig, PciDevice, PciIdentity, PCI_CONFIG_SPACE_SIZE, PCI_SUBDEVICE_ID_QEMU,
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
/// Start of the device-specific registers.
const DEVICE_AREA: usize = 0x40;

/// Number of PAM registers on both chipsets.
pub const PAM_COUNT: usize = 7;

/// Q35 MCH: PCIEXBAR (64-bit), its power-on value (QEMU `MCH_HOST_BRIDGE_PCIEXBAR_DEFAULT`:
/// base 0xb0000000, 256 MiB, disabled) and fields.
const MCH_PCIEXBAR: usize = 0x60;
const MCH_PCIEXBAR_DEFAULT: u64 = 0xb000_0000;
const PCIEXBAR_EN: u64 = 1;
const PCIEXBAR_LENGTH_MASK: u64 = 0x6;
/// Address bits 35:26 (the 64 and 128 MiB sizes use the low ones).
const PCIEXBAR_ADDR_MASK: u64 = 0xf_fc00_0000;
/// The only ECAM window rvmm decodes.
const ECAM_BASE: u64 = 0xb000_0000;
/// Q35 MCH PAM0.
const MCH_PAM0: usize = 0x90;
/// Q35 MCH SMRAM and ESMRAMC with QEMU's power-on values and write masks.
const MCH_SMRAM: usize = 0x9d;
const MCH_ESMRAMC: usize = 0x9e;
const SMRAM_DEFAULT: u8 = 0x02;
const SMRAM_D_OPEN: u8 = 1 << 6;
const SMRAM_D_CLS: u8 = 1 << 5;
const SMRAM_D_LCK: u8 = 1 << 4;
const SMRAM_G_SMRAME: u8 = 1 << 3;
const SMRAM_WMASK: u8 = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME;
const SMRAM_WMASK_LCK: u8 = SMRAM_D_CLS;
/// SM_CACHE | SM_L1 | SM_L2.
const ESMRAMC_DEFAULT: u8 = 0x38;
/// H_SMRAME | TSEG_SZ | T_EN.
const ESMRAMC_WMASK: u8 = 0x47;
const ESMRAMC_WMASK_LCK: u8 = 0;
/// i440FX PAM0 and SMRAM (QEMU `I440FX_PAM`, `I440FX_SMRAM`).
const I440FX_PAM0: usize = 0x59;
const I440FX_SMRAM: usize = 0x72;

/// A conventional-PCI host bridge function with its chipset registers.
pub struct HostBridge {
    kind: HostBridgeKind,
    config: Mutex<PciConfig>,
    /// A PCIEXBAR rvmm cannot honour was reported.
    warned_ecam: AtomicBool,
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
        // In range by construction: the area is 0x40..0x100 of a 256-byte space.
        let _ = config.set_write_mask(DEVICE_AREA, &[0xff; PCI_CONFIG_SPACE_SIZE - DEVICE_AREA]);
        if kind == HostBridgeKind::I440fx {
            // i440fx_realize: set once, not on reset.
            let _ = config.set_device_bytes(I440FX_SMRAM, &[SMRAM_DEFAULT]);
        }
        let bridge = Self {
            kind,
            config: Mutex::new(config),
            warned_ecam: AtomicBool::new(false),
        };
        bridge.reset_chipset_registers(&mut bridge.config());
        bridge
    }

    fn config(&self) -> std::sync::MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which chipset this is.
    pub fn kind(&self) -> HostBridgeKind {
        self.kind
    }

    /// PAM0-PAM6 as the guest last wrote them (the BIOS area 0xf0000 first, then the
    /// 0xc0000-0xeffff segments in pairs of 16 KiB), for a VMM that maps the shadow areas.
    pub fn pam(&self) -> [u8; PAM_COUNT] {
        let pam0 = match self.kind {
            HostBridgeKind::Q35 => MCH_PAM0,
            HostBridgeKind::I440fx => I440FX_PAM0,
        };
        self.config().bytes_at(pam0)
    }

    /// The SMRAM register (Q35 0x9d, i440FX 0x72).
    pub fn smram(&self) -> u8 {
        self.config().byte(match self.kind {
            HostBridgeKind::Q35 => MCH_SMRAM,
            HostBridgeKind::I440fx => I440FX_SMRAM,
        })
    }

    /// QEMU's `mch_reset` part of the device area, and PAM back to its power-on value (see the
    /// module documentation).
    fn reset_chipset_registers(&self, c: &mut PciConfig) {
        let pam0 = match self.kind {
            HostBridgeKind::Q35 => MCH_PAM0,
            HostBridgeKind::I440fx => I440FX_PAM0,
        };
        let _ = c.set_device_bytes(pam0, &[0; PAM_COUNT]);
        if self.kind != HostBridgeKind::Q35 {
            return;
        }
        // Offsets inside the device area: these cannot fail.
        let _ = c.set_device_bytes(MCH_PCIEXBAR, &MCH_PCIEXBAR_DEFAULT.to_le_bytes());
        let _ = c.set_device_bytes(MCH_SMRAM, &[SMRAM_DEFAULT]);
        let _ = c.set_device_bytes(MCH_ESMRAMC, &[ESMRAMC_DEFAULT]);
        // C_BASE_SEG (bits 2:0) stays 010b.
        let _ = c.set_write_mask(MCH_SMRAM, &[SMRAM_WMASK]);
        let _ = c.set_write_mask(MCH_ESMRAMC, &[ESMRAMC_WMASK]);
    }

    /// QEMU's `mch_update_smram` lock: once D_LCK is set, D_OPEN clears and only D_CLS stays
    /// writable until reset.
    fn update_smram(c: &mut PciConfig) {
        let smram = c.byte(MCH_SMRAM);
        if smram & SMRAM_D_LCK != 0 {
            let _ = c.set_device_bytes(MCH_SMRAM, &[smram & !SMRAM_D_OPEN]);
            let _ = c.set_write_mask(MCH_SMRAM, &[SMRAM_WMASK_LCK]);
            let _ = c.set_write_mask(MCH_ESMRAMC, &[ESMRAMC_WMASK_LCK]);
        }
    }

    /// Warn once if the guest enables an ECAM window other than the one rvmm decodes.
    fn check_pciexbar(&self, c: &PciConfig) {
        let bar = u64::from_le_bytes(c.bytes_at(MCH_PCIEXBAR));
        let fixed = bar & PCIEXBAR_ADDR_MASK == ECAM_BASE && bar & PCIEXBAR_LENGTH_MASK == 0;
        if bar & PCIEXBAR_EN != 0 && !fixed && !self.warned_ecam.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                pciexbar = format_args!("{bar:#x}"),
                "guest moved or resized the PCIe ECAM window; rvmm keeps it at 0xb0000000 (256 MiB)"
            );
        }
    }
}

/// Whether bytes `[start, start + len)` overlap a write of `data.len()` bytes at `offset`.
fn overlaps(offset: usize, len: usize, start: usize, reg_len: usize) -> bool {
    offset < start + reg_len && start < offset + len
}

impl PciDevice for HostBridge {
    fn config_read(&self, reg: usize) -> u32 {
        // Registers past the 256-byte space (ECAM offsets up to 4 KiB) read as zero.
        self.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let mut c = self.config();
        let changes = c.write(reg, offset, data);
        if self.kind == HostBridgeKind::Q35 {
            let at = reg.saturating_mul(4).saturating_add(offset);
            if overlaps(at, data.len(), MCH_SMRAM, 1) {
                Self::update_smram(&mut c);
            }
            if overlaps(at, data.len(), MCH_PCIEXBAR, 8) {
                self.check_pciexbar(&c);
            }
        }
        changes
    }

    fn reset(&self) -> Vec<BarChange> {
        let mut c = self.config();
        let changes = c.reset();
        self.reset_chipset_registers(&mut c);
        changes
    }
}

#[cfg(test)]
#[path = "host_bridge_tests.rs"]
mod tests;
