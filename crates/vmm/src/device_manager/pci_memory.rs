//! Host memory behind a PCI region (a ROM, a framebuffer): a KVM memory slot that moves with
//! the region's BAR, and `romfile=` ROMs. Split from pci.rs, which moves the slots.

use super::pci::RegionParts;
use super::DeviceManagerError;
use rvmm_devices::pci::{PciRegion, PciSpace};
use rvmm_devices::BusDevice;
use rvmm_hypervisor::MemoryFlags;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{MmapRegion, VolatileMemory};

/// The largest expansion ROM a ROM BAR can decode (2 GiB: `PciConfig::add_rom`'s limit).
const MAX_ROM_SIZE: u64 = 0x8000_0000;
/// The smallest expansion ROM (PCI 3.0, 6.2.5.2).
const MIN_ROM_SIZE: u64 = 0x800;

/// Host memory behind a region, mapped into the guest as a KVM memory slot that moves with the
/// region. Read-only regions make guest writes exit (and be dropped).
pub struct RegionMemory {
    pub(super) map: Arc<MmapRegion<()>>,
    readonly: bool,
    /// KVM logs the guest's writes (a framebuffer); see [`RegionMemory::dirty_log`].
    log_dirty: bool,
    /// The KVM slot while mapped (`NO_SLOT` otherwise), and a count of slot changes.
    pub(super) slot: AtomicU32,
    pub(super) moves: AtomicU64,
}

pub(super) const NO_SLOT: u32 = u32::MAX;

impl RegionMemory {
    /// `size` bytes (the region's size) starting with `contents`, the rest zero.
    pub(crate) fn new(contents: &[u8], size: u64, readonly: bool) -> std::io::Result<Self> {
        let len = usize::try_from(size).map_err(std::io::Error::other)?;
        let map = MmapRegion::<()>::new(len).map_err(std::io::Error::other)?;
        let n = contents.len().min(len);
        map.as_volatile_slice().copy_from(&contents[..n]);
        Ok(Self::shared(Arc::new(map), readonly, false))
    }

    /// Memory a device also uses (video memory), optionally dirty-logged.
    pub(crate) fn shared(map: Arc<MmapRegion<()>>, readonly: bool, log_dirty: bool) -> Self {
        Self {
            map,
            readonly,
            log_dirty,
            slot: AtomicU32::new(NO_SLOT),
            moves: AtomicU64::new(0),
        }
    }

    /// The KVM slot the region is mapped as, if any.
    pub(crate) fn slot(&self) -> Option<u32> {
        Some(self.slot.load(Ordering::Acquire)).filter(|&s| s != NO_SLOT)
    }

    /// How many times the slot was added, moved or removed.
    pub(crate) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Acquire)
    }

    pub(crate) fn size(&self) -> u64 {
        self.map.size() as u64
    }

    /// The host address of the mapping, for a memory slot.
    pub(crate) fn host_addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// The region's bytes, for copying out.
    pub(crate) fn contents(&self) -> vm_memory::VolatileSlice<'_, vm_memory::bitmap::BS<'_, ()>> {
        self.map.as_volatile_slice()
    }

    pub(crate) fn flags(&self) -> MemoryFlags {
        MemoryFlags {
            readonly: self.readonly,
            log_dirty: self.log_dirty,
        }
    }
}

/// The bus side of a memory-backed region: its range stays on the MMIO bus, so overlaps are
/// refused like any device's; reads only arrive while KVM has no slot there, writes to a
/// read-only slot arrive and are dropped (QEMU's ROMs ignore writes).
pub(crate) struct RegionMemoryDevice(pub(crate) Arc<RegionMemory>);

impl BusDevice for RegionMemoryDevice {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let slice = self.0.map.as_volatile_slice();
        let ok = usize::try_from(offset)
            .ok()
            .and_then(|o| slice.offset(o).ok())
            .is_some_and(|s| s.copy_to(data) == data.len());
        if !ok {
            data.fill(0xff);
        }
    }

    fn write(&self, _offset: u64, _data: &[u8]) {}
}

/// QEMU's `romfile=`: the file's contents as the function's expansion ROM, sized to the next
/// power of two (at least the 2 KiB the PCI spec allows), read-only to the guest.
pub(crate) fn rom_region(device: &str, path: &Path) -> Result<RegionParts, DeviceManagerError> {
    let io = |source| DeviceManagerError::Io {
        name: format!("{device}: romfile {}", path.display()),
        source,
    };
    let contents = crate::input::read_input(
        "romfile",
        path,
        MAX_ROM_SIZE,
        "a PCI expansion ROM can have",
    )
    .map_err(|source| DeviceManagerError::Input {
        name: device.into(),
        source,
    })?;
    if contents.is_empty() {
        return Err(io(std::io::Error::other("the file is empty")));
    }
    let size = (contents.len() as u64)
        .next_power_of_two()
        .max(MIN_ROM_SIZE);
    let memory = Arc::new(RegionMemory::new(&contents, size, true).map_err(io)?);
    Ok(RegionParts {
        region: PciRegion::Rom,
        space: PciSpace::Memory,
        size,
        device: Arc::new(RegionMemoryDevice(memory.clone())),
        ioevents: Vec::new(),
        memory: Some(memory),
    })
}
