//! A PCI function's configuration space with a type 0 header (PCI Local Bus spec 3.0, 6.1-6.2;
//! PCIe base spec 7.5.1.2 for the 4 KiB extended space), shared by every rvmm PCI function.
//!
//! It follows QEMU's generic PCI code (hw/pci/pci.c): per-byte write masks (`pci_init_wmask`:
//! COMMAND bits 0x0507, cache line size, interrupt line), write-1-to-clear STATUS bits
//! (`pci_init_w1cmask`), BARs whose low address bits are hard-wired so sizing with all-ones reads
//! back `~(size - 1) | type` (`pci_register_bar`), capabilities that are read-only unless a mask
//! says otherwise (`pci_add_capability`), and the decode rules of `pci_bar_address` /
//! `pci_update_mappings`.
//!
//! A write does not map anything itself: [`PciConfig::write`] returns the regions whose decoded
//! address changed ([`BarChange`]) and the VMM's device manager moves the bus entries,
//! ioeventfds and memory slots. This is crosvm's `ConfigWriteResult` idea.
//!
//! One deliberate difference from QEMU: an I/O BAR that ends above port 0xffff counts as
//! unmapped (QEMU maps it into a 4 GiB I/O address space the CPU cannot reach, so the guest sees
//! the same thing either way).

use std::ops::RangeInclusive;

/// Subsystem vendor QEMU gives devices that do not set one (Red Hat / Qumranet).
pub const PCI_SUBVENDOR_ID_REDHAT_QUMRANET: u16 = 0x1af4;
/// Subsystem ID QEMU gives devices that do not set one (`PCI_SUBDEVICE_ID_QEMU`).
pub const PCI_SUBDEVICE_ID_QEMU: u16 = 0x1100;

/// Conventional PCI configuration space.
pub const PCI_CONFIG_SPACE_SIZE: usize = 0x100;
/// PCIe configuration space including the extended capabilities area.
pub const PCIE_CONFIG_SPACE_SIZE: usize = 0x1000;

/// COMMAND: I/O space decode.
pub const PCI_COMMAND_IO: u16 = 1 << 0;
/// COMMAND: memory space decode.
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
/// COMMAND: bus master.
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// COMMAND: SERR# enable.
pub const PCI_COMMAND_SERR: u16 = 1 << 8;
/// COMMAND: INTx emulation disable.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// STATUS: the capability list at 0x34 is valid.
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
/// HEADER_TYPE bit 7: the device has more than one function.
pub const PCI_HEADER_TYPE_MULTI_FUNCTION: u8 = 0x80;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const CACHE_LINE_SIZE: usize = 0x0c;
const HEADER_TYPE: usize = 0x0e;
const BAR0: usize = 0x10;
const BARS_END: usize = 0x28;
const SUBSYSTEM_VENDOR: usize = 0x2c;
const ROM_ADDRESS: usize = 0x30;
const CAPABILITY_LIST: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
/// End of the type 0 header; capabilities and device-specific registers follow.
const HEADER_END: usize = 0x40;

/// QEMU's `pci_init_wmask`: I/O, memory, bus master, SERR, INTx disable. Parity error response
/// (bit 6) and the rest are hard-wired to 0.
const COMMAND_WRITABLE: u16 = PCI_COMMAND_IO
    | PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE;
/// QEMU's `pci_init_w1cmask`: parity, signalled/received target abort, received master abort,
/// signalled system error, detected parity error.
const STATUS_W1C: u16 = 0xf900;

const BAR_IO: u32 = 0x1;
const BAR_MEM_TYPE_64: u32 = 0x4;
const BAR_MEM_PREFETCH: u32 = 0x8;
const ROM_ENABLE: u32 = 0x1;

const IO_SIZES: RangeInclusive<u64> = 4..=0x1_0000;
const MEM32_SIZES: RangeInclusive<u64> = 16..=1 << 31;
const MEM64_SIZES: RangeInclusive<u64> = 16..=1 << 63;
const ROM_SIZES: RangeInclusive<u64> = 0x800..=1 << 31;
/// The highest port an I/O BAR may decode.
const IO_LIMIT: u64 = 0xffff;
/// The last byte of a 32-bit memory BAR must stay below this (QEMU's `UINT32_MAX` check).
const MEM32_LIMIT: u64 = 0xffff_ffff;

const BAR_COUNT: usize = 6;

/// Address space a region decodes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    Io,
    Memory,
}

/// What kind of BAR a region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// A BAR a function asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSpec {
    /// A power of two: at least 4 for I/O, 16 for memory.
    pub size: u64,
    pub kind: BarKind,
    /// Memory only.
    pub prefetchable: bool,
}

/// A BAR (0..=5; a 64-bit BAR is named by its low index) or the expansion ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PciRegion {
    Bar(u8),
    Rom,
}

/// One region's decoded address changed because of a config write (or reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarChange {
    pub region: PciRegion,
    pub space: PciSpace,
    pub size: u64,
    /// Where the region decoded before; None when it was unmapped.
    pub old: Option<u64>,
    /// Where it decodes now; None when it is unmapped.
    pub new: Option<u64>,
}

/// The read-only identity registers of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdentity {
    pub vendor: u16,
    pub device: u16,
    /// Base class (0x0b).
    pub class: u8,
    /// Sub-class (0x0a).
    pub subclass: u8,
    /// Programming interface (0x09).
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// Errors building a configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("BAR index {index} is out of range (0-5; a 64-bit BAR 0-4)")]
    BadBarIndex { index: u8 },
    #[error("BAR {index}: size {size:#x} is not a power of two in {min:#x}..={max:#x}")]
    BadBarSize {
        index: u8,
        size: u64,
        min: u64,
        max: u64,
    },
    #[error("BAR {index}: an I/O BAR cannot be prefetchable")]
    PrefetchableIo { index: u8 },
    #[error("BAR {index} is already taken")]
    BarTaken { index: u8 },
    #[error("expansion ROM size {size:#x} is not a power of two in 0x800..=0x80000000")]
    BadRomSize { size: u64 },
    #[error("the expansion ROM is already registered")]
    RomTaken,
    #[error("no room for capability {id:#04x} of {len} bytes in config space")]
    NoCapabilitySpace { id: u8, len: usize },
    #[error("capability {id:#04x}: write mask of {mask} bytes for a body of {body}")]
    CapabilityMaskLength { id: u8, mask: usize, body: usize },
    #[error("write mask at {offset:#x}+{len:#x} is outside the device area 0x40..{end:#x}")]
    BadWriteMask {
        offset: usize,
        len: usize,
        end: usize,
    },
}

/// A registered BAR or ROM and where it decodes now (QEMU's `PCIIORegion::addr`).
#[derive(Debug, Clone, Copy)]
struct Region {
    size: u64,
    kind: BarKind,
    prefetchable: bool,
    mapped: Option<u64>,
}

/// What occupies one of the six BAR registers.
#[derive(Debug, Clone, Copy)]
enum BarSlot {
    Empty,
    Bar(Region),
    /// The upper dword of the 64-bit BAR one index below.
    Upper,
}

/// A function's configuration space: contents, per-byte write and write-1-to-clear masks, and
/// the decode state of its regions.
#[derive(Debug, Clone)]
pub struct PciConfig {
    bytes: Vec<u8>,
    wmask: Vec<u8>,
    w1cmask: Vec<u8>,
    bars: [BarSlot; BAR_COUNT],
    rom: Option<Region>,
    /// First free offset for the next capability.
    next_capability: usize,
}

impl PciConfig {
    /// A conventional function: 256 bytes.
    pub fn new(id: &PciIdentity) -> Self {
        Self::with_size(id, PCI_CONFIG_SPACE_SIZE)
    }

    /// A PCIe function: 4 KiB, the extended area reads as zero.
    pub fn new_express(id: &PciIdentity) -> Self {
        Self::with_size(id, PCIE_CONFIG_SPACE_SIZE)
    }

    fn with_size(id: &PciIdentity, size: usize) -> Self {
        let mut c = Self {
            bytes: vec![0; size],
            wmask: vec![0; size],
            w1cmask: vec![0; size],
            bars: [BarSlot::Empty; BAR_COUNT],
            rom: None,
            next_capability: HEADER_END,
        };
        c.put(0x00, &id.vendor.to_le_bytes());
        c.put(0x02, &id.device.to_le_bytes());
        c.put(0x08, &[id.revision, id.prog_if, id.subclass, id.class]);
        c.put(SUBSYSTEM_VENDOR, &id.subsystem_vendor.to_le_bytes());
        c.put(SUBSYSTEM_VENDOR + 2, &id.subsystem.to_le_bytes());
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        c.w1cmask[STATUS..STATUS + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        c.wmask[CACHE_LINE_SIZE] = 0xff;
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    /// Store `data` at `offset`; callers pass offsets inside the header.
    fn put(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(offset..offset + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    fn dword(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(src) = offset
            .checked_add(4)
            .and_then(|end| self.bytes.get(offset..end))
        {
            b.copy_from_slice(src);
        }
        u32::from_le_bytes(b)
    }

    fn word(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    fn command(&self) -> u16 {
        self.word(COMMAND)
    }

    /// Register BAR `index`; it starts unmapped at address 0.
    pub fn add_bar(&mut self, index: u8, spec: BarSpec) -> Result<(), PciConfigError> {
        let i = usize::from(index);
        let is64 = spec.kind == BarKind::Mem64;
        if i >= BAR_COUNT || (is64 && i + 1 >= BAR_COUNT) {
            return Err(PciConfigError::BadBarIndex { index });
        }
        let sizes = match spec.kind {
            BarKind::Io => IO_SIZES,
            BarKind::Mem32 => MEM32_SIZES,
            BarKind::Mem64 => MEM64_SIZES,
        };
        if !spec.size.is_power_of_two() || !sizes.contains(&spec.size) {
            return Err(PciConfigError::BadBarSize {
                index,
                size: spec.size,
                min: *sizes.start(),
                max: *sizes.end(),
            });
        }
        if spec.kind == BarKind::Io && spec.prefetchable {
            return Err(PciConfigError::PrefetchableIo { index });
        }
        let taken = |s: &BarSlot| !matches!(s, BarSlot::Empty);
        if taken(&self.bars[i]) {
            return Err(PciConfigError::BarTaken { index });
        }
        if is64 && taken(&self.bars[i + 1]) {
            return Err(PciConfigError::BarTaken { index: index + 1 });
        }
        let offset = BAR0 + 4 * i;
        let wmask = !(spec.size - 1);
        self.put(
            offset,
            &bar_type(spec.kind, spec.prefetchable).to_le_bytes(),
        );
        self.wmask[offset..offset + 4].copy_from_slice(&(wmask as u32).to_le_bytes());
        if is64 {
            self.put(offset + 4, &[0; 4]);
            self.wmask[offset + 4..offset + 8]
                .copy_from_slice(&((wmask >> 32) as u32).to_le_bytes());
            self.bars[i + 1] = BarSlot::Upper;
        }
        self.bars[i] = BarSlot::Bar(Region {
            size: spec.size,
            kind: spec.kind,
            prefetchable: spec.prefetchable,
            mapped: None,
        });
        Ok(())
    }

    /// Register the expansion ROM BAR (0x30): address bits and the enable bit are writable.
    pub fn add_rom(&mut self, size: u64) -> Result<(), PciConfigError> {
        if !size.is_power_of_two() || !ROM_SIZES.contains(&size) {
            return Err(PciConfigError::BadRomSize { size });
        }
        if self.rom.is_some() {
            return Err(PciConfigError::RomTaken);
        }
        let wmask = (!(size - 1) as u32) | ROM_ENABLE;
        self.put(ROM_ADDRESS, &[0; 4]);
        self.wmask[ROM_ADDRESS..ROM_ADDRESS + 4].copy_from_slice(&wmask.to_le_bytes());
        self.rom = Some(Region {
            size,
            kind: BarKind::Mem32,
            prefetchable: false,
            mapped: None,
        });
        Ok(())
    }

    /// Add a read-only capability; `body` is what follows the ID/next pair. Returns its offset.
    /// As QEMU's `pci_add_capability`, the new capability goes at the head of the list.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u8, PciConfigError> {
        self.add_capability_with_mask(id, body, &vec![0; body.len()])
    }

    /// Add a capability whose body bytes are guest-writable where `wmask` (one byte per body
    /// byte) has bits set. The ID and next pointer stay read-only.
    pub fn add_capability_with_mask(
        &mut self,
        id: u8,
        body: &[u8],
        wmask: &[u8],
    ) -> Result<u8, PciConfigError> {
        if wmask.len() != body.len() {
            return Err(PciConfigError::CapabilityMaskLength {
                id,
                mask: wmask.len(),
                body: body.len(),
            });
        }
        let len = body.len() + 2;
        let offset = self.next_capability;
        // Capabilities live in the conventional 256 bytes, even on PCIe.
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= PCI_CONFIG_SPACE_SIZE)
            .ok_or(PciConfigError::NoCapabilitySpace { id, len })?;
        let next = self.bytes[CAPABILITY_LIST];
        self.bytes[offset] = id;
        self.bytes[offset + 1] = next;
        self.bytes[offset + 2..end].copy_from_slice(body);
        self.wmask[offset..offset + 2].fill(0);
        self.wmask[offset + 2..end].copy_from_slice(wmask);
        self.w1cmask[offset..end].fill(0);
        // The offset is below 0x100 by the check above.
        self.bytes[CAPABILITY_LIST] = offset as u8;
        self.bytes[STATUS] |= PCI_STATUS_CAP_LIST as u8;
        self.next_capability = end.next_multiple_of(4);
        Ok(offset as u8)
    }

    /// Make bytes of the device-specific area (0x40 onwards) guest-writable under `mask`, as
    /// QEMU does for the whole area of most devices. Later capabilities turn their bytes
    /// read-only again.
    pub fn set_write_mask(&mut self, offset: usize, mask: &[u8]) -> Result<(), PciConfigError> {
        let size = self.bytes.len();
        let end = offset
            .checked_add(mask.len())
            .filter(|end| offset >= HEADER_END && *end <= size)
            .ok_or(PciConfigError::BadWriteMask {
                offset,
                len: mask.len(),
                end: size,
            })?;
        self.wmask[offset..end].copy_from_slice(mask);
        Ok(())
    }

    /// Store `data` at `offset` in the device-specific area (0x40 onwards) whatever the write
    /// mask says: the power-on values of chipset registers, and what a device's own register
    /// logic changes (QEMU's direct `dev->config[...]` stores).
    pub fn set_device_bytes(&mut self, offset: usize, data: &[u8]) -> Result<(), PciConfigError> {
        let size = self.bytes.len();
        let end = offset
            .checked_add(data.len())
            .filter(|end| offset >= HEADER_END && *end <= size)
            .ok_or(PciConfigError::BadWriteMask {
                offset,
                len: data.len(),
                end: size,
            })?;
        self.bytes[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// The byte at `offset`; 0 past the end of the space.
    pub fn byte(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0)
    }

    /// The `N` bytes from `offset`; zeros past the end of the space.
    pub fn bytes_at<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = offset.checked_add(i).map_or(0, |o| self.byte(o));
        }
        out
    }

    /// Set the multi-function bit of the header type (0x0e), as QEMU does for functions created
    /// with `multifunction=on`. Read-only to the guest.
    pub fn set_multifunction(&mut self) {
        self.bytes[HEADER_TYPE] |= PCI_HEADER_TYPE_MULTI_FUNCTION;
    }

    /// INTx pin (0x3d): 0 none, 1-4 INTA-INTD. Read-only to the guest.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.bytes[INTERRUPT_PIN] = pin;
    }

    /// OR read-only STATUS bits (e.g. DEVSEL timing) into the power-on value.
    pub fn set_status(&mut self, bits: u16) {
        let status = self.word(STATUS) | bits;
        self.put(STATUS, &status.to_le_bytes());
    }

    /// Dword `reg` (byte offset `reg * 4`); 0 past the end of the space.
    pub fn read(&self, reg: usize) -> u32 {
        reg.checked_mul(4).map_or(0, |offset| self.dword(offset))
    }

    /// Write `data` at byte `offset` inside dword `reg`: only writable bits change, bytes past
    /// the dword or the space are dropped. Returns every region whose decoded address changed.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let Some(base) = reg.checked_mul(4) else {
            return Vec::new();
        };
        let mut remap = false;
        for (lane, &value) in (offset..4).zip(data) {
            let Some(addr) = base.checked_add(lane).filter(|a| *a < self.bytes.len()) else {
                break;
            };
            let (w, c) = (self.wmask[addr], self.w1cmask[addr]);
            self.bytes[addr] = (self.bytes[addr] & !w) | (value & w);
            self.bytes[addr] &= !(value & c);
            // The ranges QEMU's pci_default_write_config remaps on.
            remap |= (BAR0..BARS_END).contains(&addr)
                || (ROM_ADDRESS..ROM_ADDRESS + 4).contains(&addr)
                || addr == COMMAND;
        }
        if remap {
            self.update_mappings()
        } else {
            Vec::new()
        }
    }

    /// Where `region` decodes now; None when unmapped or not registered.
    pub fn region_address(&self, region: PciRegion) -> Option<u64> {
        self.region(region)?.mapped
    }

    /// Program `region`'s address register as firmware would (the low bits are masked to the
    /// region's size). Decode still depends on COMMAND; the new decode state is recorded but
    /// not returned. The ROM enable bit is left as it is.
    pub fn set_region_address(&mut self, region: PciRegion, addr: u64) {
        let Some(&r) = self.region(region) else {
            return;
        };
        let addr = addr & !(r.size - 1);
        match region {
            PciRegion::Bar(index) => {
                let offset = BAR0 + 4 * usize::from(index);
                let low = (self.dword(offset) & (r.size - 1) as u32) | addr as u32;
                self.put(offset, &low.to_le_bytes());
                if r.kind == BarKind::Mem64 {
                    self.put(offset + 4, &((addr >> 32) as u32).to_le_bytes());
                }
            }
            PciRegion::Rom => {
                let value = (self.dword(ROM_ADDRESS) & ROM_ENABLE) | addr as u32;
                self.put(ROM_ADDRESS, &value.to_le_bytes());
            }
        }
        self.update_mappings();
    }

    /// Set COMMAND's writable bits to `bits` (e.g. I/O and memory decode for a firmware-less
    /// boot); the new decode state is recorded but not returned.
    pub fn set_command(&mut self, bits: u16) {
        let command = (self.command() & !COMMAND_WRITABLE) | (bits & COMMAND_WRITABLE);
        self.put(COMMAND, &command.to_le_bytes());
        self.update_mappings();
    }

    /// Every registered region with its space and size, BARs first, then the ROM.
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.all_regions()
            .map(|(region, r)| (region, space(r.kind), r.size))
            .collect()
    }

    /// Back to power-on values as QEMU's `pci_do_device_reset`: writable COMMAND and STATUS
    /// bits, the interrupt line and cache line size cleared, BAR addresses 0, ROM disabled.
    /// Returns the regions that got unmapped.
    pub fn reset(&mut self) -> Vec<BarChange> {
        for offset in [COMMAND, STATUS] {
            let clear = u16::from_le_bytes([
                self.wmask[offset] | self.w1cmask[offset],
                self.wmask[offset + 1] | self.w1cmask[offset + 1],
            ]);
            let value = self.word(offset) & !clear;
            self.put(offset, &value.to_le_bytes());
        }
        self.bytes[INTERRUPT_LINE] &= !self.wmask[INTERRUPT_LINE];
        self.bytes[CACHE_LINE_SIZE] = 0;
        for i in 0..BAR_COUNT {
            if let BarSlot::Bar(r) = self.bars[i] {
                let offset = BAR0 + 4 * i;
                self.put(offset, &bar_type(r.kind, r.prefetchable).to_le_bytes());
                if r.kind == BarKind::Mem64 {
                    self.put(offset + 4, &[0; 4]);
                }
            }
        }
        if self.rom.is_some() {
            self.put(ROM_ADDRESS, &[0; 4]);
        }
        self.update_mappings()
    }

    fn region(&self, region: PciRegion) -> Option<&Region> {
        match region {
            PciRegion::Bar(i) => match self.bars.get(usize::from(i))? {
                BarSlot::Bar(r) => Some(r),
                _ => None,
            },
            PciRegion::Rom => self.rom.as_ref(),
        }
    }

    fn all_regions(&self) -> impl Iterator<Item = (PciRegion, Region)> + '_ {
        let bars = (0..BAR_COUNT).filter_map(|i| match self.bars[i] {
            BarSlot::Bar(r) => Some((PciRegion::Bar(i as u8), r)),
            _ => None,
        });
        bars.chain(self.rom.map(|r| (PciRegion::Rom, r)))
    }

    /// QEMU's `pci_bar_address`: where `region` decodes given the registers now.
    fn decode(&self, region: PciRegion, r: &Region) -> Option<u64> {
        let command = self.command();
        let (raw, offset) = match region {
            PciRegion::Bar(i) => {
                let offset = BAR0 + 4 * usize::from(i);
                let mut raw = u64::from(self.dword(offset));
                if r.kind == BarKind::Mem64 {
                    raw |= u64::from(self.dword(offset + 4)) << 32;
                }
                (raw, offset)
            }
            PciRegion::Rom => (u64::from(self.dword(ROM_ADDRESS)), ROM_ADDRESS),
        };
        let addr = raw & !(r.size - 1);
        let last = addr.checked_add(r.size - 1)?;
        if addr == 0 {
            return None;
        }
        if r.kind == BarKind::Io {
            return (command & PCI_COMMAND_IO != 0 && last <= IO_LIMIT).then_some(addr);
        }
        if command & PCI_COMMAND_MEMORY == 0 {
            return None;
        }
        if offset == ROM_ADDRESS && raw & u64::from(ROM_ENABLE) == 0 {
            return None;
        }
        if last == u64::MAX || (r.kind != BarKind::Mem64 && last >= MEM32_LIMIT) {
            return None;
        }
        Some(addr)
    }

    /// QEMU's `pci_update_mappings`: recompute every region, record and return the changes.
    fn update_mappings(&mut self) -> Vec<BarChange> {
        let mut changes = Vec::new();
        let regions: Vec<_> = self.all_regions().collect();
        for (region, r) in regions {
            let new = self.decode(region, &r);
            if new == r.mapped {
                continue;
            }
            changes.push(BarChange {
                region,
                space: space(r.kind),
                size: r.size,
                old: r.mapped,
                new,
            });
            match region {
                PciRegion::Bar(i) => {
                    if let Some(BarSlot::Bar(slot)) = self.bars.get_mut(usize::from(i)) {
                        slot.mapped = new;
                    }
                }
                PciRegion::Rom => {
                    if let Some(rom) = self.rom.as_mut() {
                        rom.mapped = new;
                    }
                }
            }
        }
        changes
    }
}

/// The hard-wired low bits of a BAR register.
fn bar_type(kind: BarKind, prefetchable: bool) -> u32 {
    let prefetch = if prefetchable { BAR_MEM_PREFETCH } else { 0 };
    match kind {
        BarKind::Io => BAR_IO,
        BarKind::Mem32 => prefetch,
        BarKind::Mem64 => BAR_MEM_TYPE_64 | prefetch,
    }
}

fn space(kind: BarKind) -> PciSpace {
    match kind {
        BarKind::Io => PciSpace::Io,
        BarKind::Mem32 | BarKind::Mem64 => PciSpace::Memory,
    }
}

#[path = "config_bridge.rs"]
mod bridge;
pub use bridge::{BridgeKind, BridgeWindows};

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
