//! The type 1 header of a PCI-to-PCI bridge (PCI-to-PCI Bridge Architecture spec 1.2, 3.2;
//! PCIe base spec 7.5.1.3): bus numbers, the I/O, memory and prefetchable windows and the bridge
//! control register, with QEMU's write masks (`pci_init_mask_bridge`) and reset values
//! (`pci_bridge_reset`, `pci_bridge_disable_base_limit`).
//!
//! A bridge has BAR0 and BAR1 only; bytes 0x18-0x3f are the bridge's own registers.

use super::{PciConfig, PciIdentity, HEADER_TYPE, STATUS};

const PRIMARY_BUS: usize = 0x18;
const SECONDARY_BUS: usize = 0x19;
const SUBORDINATE_BUS: usize = 0x1a;
const IO_BASE: usize = 0x1c;
const IO_LIMIT: usize = 0x1d;
const SEC_STATUS: usize = 0x1e;
const MEMORY_BASE: usize = 0x20;
const MEMORY_LIMIT: usize = 0x22;
const PREF_BASE: usize = 0x24;
const PREF_LIMIT: usize = 0x26;
const PREF_BASE_UPPER: usize = 0x28;
const PREF_LIMIT_UPPER: usize = 0x2c;
const IO_BASE_UPPER: usize = 0x30;
const BRIDGE_CONTROL: usize = 0x3e;

/// HEADER_TYPE's layout field: a PCI-to-PCI bridge.
const HEADER_TYPE_BRIDGE: u8 = 0x01;
/// The address bits of the I/O base/limit bytes (the low nibble is the 16/32-bit type).
const IO_RANGE_MASK: u8 = 0xf0;
/// The address bits of the memory base/limit words.
const MEMORY_RANGE_MASK: u16 = 0xfff0;
/// Prefetchable base/limit type: 64-bit (the upper dwords at 0x28/0x2c exist).
const PREF_RANGE_TYPE_64: u16 = 0x1;
/// 66 MHz capable and fast back-to-back capable: set on a conventional bridge's STATUS and
/// secondary status (QEMU's `pci_bridge_initfn`); PCIe ports hard-wire them to 0.
const STATUS_66MHZ_FAST_BACK: u16 = 0x0020 | 0x0080;
/// Bridge control bits QEMU lets the guest write (`pci_init_mask_bridge`): parity error
/// response, SERR#, ISA, VGA, VGA 16-bit, master abort, secondary bus reset, fast back-to-back,
/// primary/secondary discard timeouts, discard timer SERR#.
const BRIDGE_CONTROL_WRITABLE: u16 = 0x0bff;
/// What a PCIe port cannot do (`pcie_port_init_reg`): master abort mode, fast back-to-back,
/// the discard timers and their status and SERR#.
const BRIDGE_CONTROL_NOT_EXPRESS: u16 = 0x0020 | 0x0080 | 0x0100 | 0x0200 | 0x0400 | 0x0800;

/// Whether the bridge is conventional PCI (`pci-bridge`) or a PCIe port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    Conventional,
    Express,
}

/// A bridge's windows as the guest programmed them: each an inclusive range, None when
/// closed (base above limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeWindows {
    pub io: Option<(u64, u64)>,
    pub memory: Option<(u64, u64)>,
    pub prefetchable: Option<(u64, u64)>,
}

impl PciConfig {
    /// A bridge's configuration space: 256 bytes (conventional) or 4 KiB (PCIe), type 1
    /// header, class 06.04 from `id`, bus numbers 0 and windows as `reset_bridge` leaves them.
    /// `id`'s subsystem fields are ignored: a type 1 header has none there.
    pub fn new_bridge(id: &PciIdentity, kind: BridgeKind) -> Self {
        let mut c = match kind {
            BridgeKind::Conventional => Self::new(id),
            BridgeKind::Express => Self::new_express(id),
        };
        c.bytes[PREF_LIMIT_UPPER..IO_BASE_UPPER].fill(0);
        c.bytes[HEADER_TYPE] = HEADER_TYPE_BRIDGE;
        c.wmask[PRIMARY_BUS..IO_BASE].fill(0xff);
        c.wmask[IO_BASE] = IO_RANGE_MASK;
        c.wmask[IO_LIMIT] = IO_RANGE_MASK;
        for offset in [MEMORY_BASE, MEMORY_LIMIT, PREF_BASE, PREF_LIMIT] {
            c.wmask[offset..offset + 2].copy_from_slice(&MEMORY_RANGE_MASK.to_le_bytes());
        }
        c.wmask[PREF_BASE_UPPER..IO_BASE_UPPER].fill(0xff);
        let control = match kind {
            BridgeKind::Conventional => BRIDGE_CONTROL_WRITABLE,
            BridgeKind::Express => BRIDGE_CONTROL_WRITABLE & !BRIDGE_CONTROL_NOT_EXPRESS,
        };
        c.wmask[BRIDGE_CONTROL..BRIDGE_CONTROL + 2].copy_from_slice(&control.to_le_bytes());
        // Type bits: 16-bit I/O (0), 64-bit prefetchable memory.
        c.put(PREF_BASE, &PREF_RANGE_TYPE_64.to_le_bytes());
        c.put(PREF_LIMIT, &PREF_RANGE_TYPE_64.to_le_bytes());
        if kind == BridgeKind::Conventional {
            let status = c.word(STATUS) | STATUS_66MHZ_FAST_BACK;
            c.put(STATUS, &status.to_le_bytes());
            c.put(SEC_STATUS, &STATUS_66MHZ_FAST_BACK.to_le_bytes());
        }
        c.reset_bridge(kind == BridgeKind::Express);
        c
    }

    /// QEMU's `pci_bridge_reset`: bus numbers, windows' address bits and bridge control
    /// cleared; with `close_windows` the windows are then closed (base above limit, QEMU's
    /// `pci_bridge_disable_base_limit`, which its PCIe root ports do).
    pub fn reset_bridge(&mut self, close_windows: bool) {
        self.bytes[PRIMARY_BUS..IO_BASE].fill(0);
        let (io_base, mem_base) = if close_windows {
            (IO_RANGE_MASK, MEMORY_RANGE_MASK)
        } else {
            (0, 0)
        };
        self.bytes[IO_BASE] = (self.bytes[IO_BASE] & !IO_RANGE_MASK) | io_base;
        self.bytes[IO_LIMIT] &= !IO_RANGE_MASK;
        for (offset, value) in [
            (MEMORY_BASE, mem_base),
            (MEMORY_LIMIT, 0),
            (PREF_BASE, mem_base),
            (PREF_LIMIT, 0),
        ] {
            let word = (self.word(offset) & !MEMORY_RANGE_MASK) | value;
            self.put(offset, &word.to_le_bytes());
        }
        self.bytes[PREF_BASE_UPPER..IO_BASE_UPPER].fill(0);
        self.put(BRIDGE_CONTROL, &[0, 0]);
    }

    /// The secondary and subordinate bus numbers the guest programmed.
    pub fn bus_range(&self) -> (u8, u8) {
        (self.bytes[SECONDARY_BUS], self.bytes[SUBORDINATE_BUS])
    }

    /// The windows the bridge forwards (PCI-to-PCI bridge spec 1.2, 3.2.5.6-3.2.5.10).
    pub fn bridge_windows(&self) -> BridgeWindows {
        let io = (
            u64::from(self.bytes[IO_BASE] & IO_RANGE_MASK) << 8,
            u64::from(self.bytes[IO_LIMIT] & IO_RANGE_MASK) << 8 | 0xfff,
        );
        let mem = |offset: usize| u64::from(self.word(offset) & MEMORY_RANGE_MASK) << 16;
        let memory = (mem(MEMORY_BASE), mem(MEMORY_LIMIT) | 0xf_ffff);
        let upper = |offset: usize| u64::from(self.dword(offset)) << 32;
        let prefetchable = (
            mem(PREF_BASE) | upper(PREF_BASE_UPPER),
            mem(PREF_LIMIT) | 0xf_ffff | upper(PREF_LIMIT_UPPER),
        );
        let open = |(base, limit): (u64, u64)| (base <= limit).then_some((base, limit));
        BridgeWindows {
            io: open(io),
            memory: open(memory),
            prefetchable: open(prefetchable),
        }
    }

    /// Make bits of the device-specific area write-1-to-clear (status registers of a
    /// capability). They are cleared from the write mask.
    pub fn set_w1c_mask(
        &mut self,
        offset: usize,
        mask: &[u8],
    ) -> Result<(), super::PciConfigError> {
        let size = self.bytes.len();
        let end = offset
            .checked_add(mask.len())
            .filter(|end| offset >= super::HEADER_END && *end <= size)
            .ok_or(super::PciConfigError::BadWriteMask {
                offset,
                len: mask.len(),
                end: size,
            })?;
        for (i, m) in (offset..end).zip(mask) {
            self.w1cmask[i] = *m;
            self.wmask[i] &= !m;
        }
        Ok(())
    }
}
