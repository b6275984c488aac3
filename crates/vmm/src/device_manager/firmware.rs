//! The PC firmware image: mapped read-only at the top of the 32-bit address space, where the
//! CPU fetches its first instruction after RESET, with its last 128 KiB also in the legacy BIOS
//! segment below 1 MiB (QEMU hw/i386/x86.c `x86_bios_rom_init`: "map the last 128KB of the
//! BIOS in ISA space").
//!
//! QEMU aliases the ROM at 0xe0000 and lets the chipset's PAM registers switch that range
//! between the ROM and RAM; SeaBIOS copies itself into the RAM behind it ("shadowing") early in
//! POST. rvmm keeps plain RAM there and copies the ROM's tail into it at every power-on and
//! reset, so the guest sees what it would after a reset on QEMU: the ROM's bytes at 0xe0000.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::pci::{RegionMemory, RegionMemoryDevice};
use super::{DeviceManager, DeviceManagerError};

/// The top of the 32-bit address space; the image ends here.
const FOUR_GIB: u64 = 1 << 32;
/// How much of the image appears below 1 MiB: the last 128 KiB (or all of a smaller image).
pub const ISA_BIOS_MAX: u64 = 128 << 10;
/// The end of the legacy BIOS segment.
const ISA_BIOS_END: u64 = 0x10_0000;

/// A mapped firmware image.
pub struct FirmwareImage {
    memory: Arc<RegionMemory>,
}

impl FirmwareImage {
    /// Where the image starts (4 GiB minus its size).
    pub fn base(&self) -> u64 {
        FOUR_GIB - self.memory.size()
    }

    /// Copies the image's tail into guest RAM below 1 MiB, as after a reset.
    pub fn restore_isa_alias(&self, mem: &GuestMemoryMmap) -> Result<(), DeviceManagerError> {
        let size = self.memory.size();
        let len = size.min(ISA_BIOS_MAX);
        let mut tail = vec![0u8; len as usize];
        self.memory
            .contents()
            .offset((size - len) as usize)
            .and_then(|s| s.read_slice(&mut tail, 0))
            .and_then(|()| {
                mem.write_slice(&tail, GuestAddress(ISA_BIOS_END - len))
                    .map_err(|_| vm_memory::VolatileMemoryError::OutOfBounds {
                        addr: (ISA_BIOS_END - len) as usize,
                    })
            })
            .map_err(|e| DeviceManagerError::Io {
                name: "firmware".into(),
                source: std::io::Error::other(format!(
                    "cannot copy the BIOS into the legacy segment: {e}"
                )),
            })
    }
}

impl DeviceManager {
    /// Maps `image` read-only so that it ends at 4 GiB. Its size must be a multiple of 64 KiB
    /// (the caller checks, naming the file, as QEMU does).
    pub fn attach_firmware(
        &self,
        name: &str,
        image: &[u8],
    ) -> Result<FirmwareImage, DeviceManagerError> {
        let size = image.len() as u64;
        let io = |source| DeviceManagerError::Io {
            name: name.into(),
            source,
        };
        let memory = Arc::new(RegionMemory::new(image, size, true).map_err(io)?);
        let base = FOUR_GIB - size;
        // On the MMIO bus too, so an overlap with a device is refused and the guest's writes to
        // the ROM (which exit) are dropped under the image's name.
        self.add_mmio(
            name,
            base,
            size,
            Arc::new(RegionMemoryDevice(memory.clone())),
        )?;
        // Read-only: its contents come from the command line.
        self.states().register_stateless(name);
        // SAFETY: `memory` is kept by the returned FirmwareImage, which the VMM holds for as
        // long as the VM exists, so the mapping outlives the slot.
        unsafe {
            self.vm()
                .add_memory_slot(base, size, memory.host_addr(), memory.flags())
        }
        .map_err(|source| DeviceManagerError::Hypervisor {
            name: name.into(),
            source,
        })?;
        Ok(FirmwareImage { memory })
    }
}
