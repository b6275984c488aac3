//! rvmm-arch: the x86_64 guest memory layout, direct kernel boot (PVH, bzImage, ELF64
//! vmlinux, multiboot v1) and the initial CPU mode (GDT, identity page tables, segments).
//!
//! Format detection follows QEMU's `x86_load_linux`: a "HdrS" setup header at 0x202 means
//! bzImage; otherwise a multiboot header in the first 8 KiB means multiboot; otherwise an ELF
//! with a Xen PVH note means PVH; an ELF64 without the note is booted as a Linux vmlinux.
//! One deviation: a file with both "HdrS" and a multiboot header whose bzImage header rvmm
//! cannot boot (no 64-bit entry) falls back to multiboot instead of failing.

pub mod acpi;
pub mod allocator;
pub mod bzimage;
pub mod cpu;
pub mod cpu_mode;
pub mod elf;
pub mod layout;
pub mod mptable;
pub mod multiboot;
pub mod payload;
pub mod pci_irq;
pub mod pvh;
pub mod smbios;
pub mod topology;
pub mod vmlinux;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use bzimage::BzImageError;
pub use cpu_mode::{set_reset_state, setup_cpu_mode, RESET_IP};
pub use elf::ElfError;
pub use layout::{e820_entries, guest_memory_regions, E820Entry};
pub use multiboot::MultibootError;

use layout::{fmt_size, CMDLINE_MAX, LOW_STRUCTS_END, PAGE_SIZE};

/// A file handed to the loader: its path (for messages) and its contents.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What the guest gets besides the kernel.
#[derive(Clone, Copy, Debug)]
pub struct BootParams<'a> {
    /// `-initrd` files: the Linux initrd (only the first is used by bzImage/vmlinux), PVH
    /// modules, or multiboot modules.
    pub initrds: &'a [KernelImage<'a>],
    /// `-append` kernel command line.
    pub cmdline: &'a [u8],
    /// Guest RAM size in bytes, laid out by `guest_memory_regions`.
    pub mem_size: u64,
}

/// The boot protocol detected from the kernel file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen PVH direct boot (ELF with `XEN_ELFNOTE_PHYS32_ENTRY`).
    Pvh,
    /// Linux bzImage through the 64-bit boot protocol.
    BzImage,
    /// Uncompressed Linux vmlinux (ELF64) through the 64-bit boot protocol.
    Elf64Linux,
    /// Multiboot v1 (ELF or a.out kludge).
    Multiboot,
}

/// The CPU mode at the kernel entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// 32-bit protected mode, flat 4 GiB segments, paging off.
    Protected32,
    /// 64-bit long mode with rvmm's identity-mapped page tables.
    Long64,
}

/// Where and how the boot CPU starts. The vmm sets these GPRs with rflags = 2 (all else 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub protocol: BootProtocol,
    pub mode: CpuMode,
    pub rip: u64,
    pub rsp: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rsi: u64,
    /// Where rvmm's boot data (GDT, IDT, page tables, boot info) was placed.
    pub data: layout::BootData,
}

/// Why a kernel could not be loaded. File-related messages start with the file name.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{name}: empty file")]
    Empty { name: String },
    #[error("{name}: not a multiboot, PVH ELF, bzImage or ELF64 kernel image")]
    UnknownFormat { name: String },
    #[error("{name}: 32-bit ELF without a PVH note or a multiboot header: rvmm cannot boot it")]
    Elf32WithoutEntry { name: String },
    #[error("{name}: {reason}")]
    Elf {
        name: String,
        #[source]
        reason: ElfError,
    },
    #[error("{name}: {reason}")]
    BzImage {
        name: String,
        #[source]
        reason: BzImageError,
    },
    #[error("{name}: {reason}")]
    Multiboot {
        name: String,
        #[source]
        reason: MultibootError,
    },
    #[error("cmdline is {len} bytes, more than the {max} the protocol allows")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("cmdline contains a NUL byte")]
    CmdlineNul,
    #[error(
        "{name}: {size} bytes do not fit in RAM between {low:#x} and {high:#x} ({ram} of RAM)"
    )]
    InitrdDoesNotFit {
        name: String,
        size: u64,
        low: u64,
        high: u64,
        ram: String,
    },
    #[error("{name}: {reason}")]
    NoRoomForBootData {
        name: String,
        #[source]
        reason: layout::NoRoomForBootData,
    },
    #[error("boot data needs {need} bytes, more than the {have} rvmm reserves (too many or too long initrd names)")]
    BootTablesFull { need: u64, have: u64 },
    #[error("writing the {what} to guest memory at {addr:#x}")]
    GuestMemory {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("writing the {what} to guest memory")]
    BootConfigurator {
        what: &'static str,
        #[source]
        source: linux_loader::configurator::Error,
    },
}

/// Who unpacks a bzImage's compressed kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BzImageDecompress {
    /// rvmm, before the guest starts (the default; falls back to `Guest` for formats rvmm
    /// cannot unpack).
    #[default]
    Host,
    /// The kernel's own decompressor, entered at the bzImage's 64-bit entry point.
    Guest,
}

/// Detects the boot protocol of `kernel`, loads it, its initrds/modules, command line and boot
/// information into `mem`, and returns the entry state. Call `setup_cpu_mode` with
/// `entry.mode` afterwards. bzImages are unpacked by rvmm.
pub fn load_kernel<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    params: &BootParams,
) -> Result<BootEntry, LoadError> {
    load_kernel_with(mem, kernel, params, BzImageDecompress::Host)
}

/// `load_kernel`, choosing who unpacks a bzImage.
pub fn load_kernel_with<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    params: &BootParams,
    decompress: BzImageDecompress,
) -> Result<BootEntry, LoadError> {
    let name = || kernel.name.to_string();
    let bytes = kernel.bytes;
    if bytes.is_empty() {
        return Err(LoadError::Empty { name: name() });
    }
    let multiboot_header = multiboot::find_header(bytes);
    if bzimage::has_setup_header(bytes) {
        match bzimage::SetupHeader::parse(bytes) {
            Ok(hdr) => {
                if decompress == BzImageDecompress::Host {
                    if let Some((_, entry)) = bzimage::load_unpacked(mem, kernel, &hdr, params)? {
                        return Ok(entry);
                    }
                }
                return bzimage::load(mem, kernel, &hdr, params);
            }
            Err(reason) if multiboot_header.is_none() => {
                return Err(LoadError::BzImage {
                    name: name(),
                    reason,
                })
            }
            Err(_) => {}
        }
    }
    if let Some(offset) = multiboot_header {
        return multiboot::load(mem, kernel, offset, params);
    }
    if elf::is_elf(bytes) {
        let elf_err = |reason| LoadError::Elf {
            name: name(),
            reason,
        };
        let image = elf::ElfImage::parse(bytes).map_err(elf_err)?;
        if let Some(entry) = image.pvh_entry(bytes).map_err(elf_err)? {
            return pvh::load(mem, kernel, &image, entry, params);
        }
        if image.class == elf::ElfClass::Elf64 {
            return vmlinux::load(mem, kernel, &image, params);
        }
        return Err(LoadError::Elf32WithoutEntry { name: name() });
    }
    Err(LoadError::UnknownFormat { name: name() })
}

/// Writes `bytes` to guest memory at `addr`.
pub(crate) fn write_guest<M: GuestMemoryBackend>(
    mem: &M,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), LoadError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| LoadError::GuestMemory { what, addr, source })
}

/// Writes the NUL-terminated command line at `data.cmdline()`; `max_len` excludes the NUL.
pub(crate) fn write_cmdline<M: GuestMemoryBackend>(
    mem: &M,
    data: &layout::BootData,
    cmdline: &[u8],
    max_len: usize,
) -> Result<(), LoadError> {
    let max = max_len.min(CMDLINE_MAX - 1);
    if cmdline.len() > max {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.contains(&0) {
        return Err(LoadError::CmdlineNul);
    }
    let mut buf = Vec::with_capacity(cmdline.len() + 1);
    buf.extend_from_slice(cmdline);
    buf.push(0);
    write_guest(mem, "kernel command line", data.cmdline(), &buf)
}

/// Chooses page-aligned addresses for `images`, highest first, below `top` and at or above
/// `floor` (and above rvmm's low structures). Returns one address per image.
pub(crate) fn place_high(
    images: &[KernelImage],
    top: u64,
    floor: u64,
    mem_size: u64,
) -> Result<Vec<u64>, LoadError> {
    let floor = align_up(floor.max(LOW_STRUCTS_END), PAGE_SIZE).unwrap_or(u64::MAX);
    let mut top = top & !(PAGE_SIZE - 1);
    let mut addrs = Vec::with_capacity(images.len());
    for image in images {
        let size = image.bytes.len() as u64;
        let addr = top
            .checked_sub(size)
            .map(|a| a & !(PAGE_SIZE - 1))
            .filter(|&a| a >= floor)
            .ok_or_else(|| LoadError::InitrdDoesNotFit {
                name: image.name.to_string(),
                size,
                low: floor,
                high: top,
                ram: fmt_size(mem_size),
            })?;
        addrs.push(addr);
        top = addr;
    }
    Ok(addrs)
}

/// `value` rounded up to a multiple of the power of two `align`, or `None` on overflow.
pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod test_utils;
#[cfg(test)]
mod tests;
