//! Multiboot v1 (Multiboot Specification 0.6.96): ELF32/ELF64 images or the a.out kludge
//! (header flag bit 16), entered in 32-bit protected mode with EAX = 0x2BADB002 and EBX =
//! the multiboot information structure.
//!
//! Like QEMU: modules follow the kernel page-aligned (so flag bit 0 always holds), memory
//! information and the memory map are always given (flag bit 1), video requests (bit 2) are
//! ignored, the kernel command line is "<kernel path> <cmdline>" and each module's string is
//! its file name. Unknown required flags (bits 3-15) are refused as section 3.1.2 asks.
//!
//! The image's segments win over rvmm's boot data: an image linked below 1 MiB (0x8000,
//! 0x10000, ...) gets the information structure, tables, command line, GDT and stack moved
//! out of its way (`BootData::place`), as QEMU puts its multiboot data after the image.

use vm_memory::GuestMemoryBackend;

use crate::elf::{check_guest_range, file_range, write_and_zero, ElfError, ElfImage};
use crate::layout::{
    e820_entries, fmt_size, low_ram_end, BootData, BOOT_TABLES_END, BOOT_TABLES_START, CMDLINE_MAX,
    EBDA_START, HIMEM_START, PAGE_SIZE,
};
use crate::{
    align_up, write_cmdline, write_guest, BootEntry, BootParams, BootProtocol, CpuMode,
    KernelImage, LoadError,
};

/// Header magic (section 3.1.2).
pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1bad_b002;
/// EAX value at entry (section 3.2).
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie in the first 8192 bytes, 32-bit aligned (section 3.1.1).
const SEARCH_LIMIT: usize = 8192;
/// Header flag bits 0-2 (page-aligned modules, memory info, video mode) are understood.
const KNOWN_REQUIRED_FLAGS: u32 = 0x7;
const REQUIRED_FLAGS_MASK: u32 = 0xffff;
/// Header flag bit 16: the address fields are valid (a.out kludge).
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Information structure flags (section 3.3).
const INFO_MEMORY: u32 = 1 << 0;
const INFO_BOOT_DEVICE: u32 = 1 << 1;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;
/// BIOS drive 0x80 (first hard disk), no partition: what QEMU reports.
const BOOT_DEVICE: u32 = 0x8000_ffff;
/// Size of the information structure up to and including the VBE fields.
const INFO_SIZE: usize = 88;
/// Each mmap entry: size (u32, not counted in itself), base_addr, length, type.
const MMAP_ENTRY_SIZE: u32 = 20;
const MODULE_SIZE: usize = 16;
const LOADER_NAME: &[u8] = b"rvmm\0";

/// Why a multiboot image was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultibootError {
    #[error("multiboot header requires unsupported features (flags {0:#x})")]
    UnsupportedFlags(u32),
    #[error("truncated: the multiboot header at {0:#x} has its address fields (flag bit 16) past the end of the file")]
    TruncatedHeader(usize),
    #[error("multiboot load_addr {load_addr:#x} is above header_addr {header_addr:#x}")]
    LoadAddrAboveHeader { load_addr: u32, header_addr: u32 },
    #[error("multiboot header_addr - load_addr ({distance:#x}) is larger than the header's file offset {offset:#x}")]
    LoadBeforeFileStart { distance: u32, offset: usize },
    #[error("multiboot load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}")]
    LoadEndBeforeLoad { load_addr: u32, load_end_addr: u32 },
    #[error("truncated: multiboot load_end_addr - load_addr asks for {size:#x} bytes at file offset {offset:#x}, past the end of the file")]
    TruncatedText { offset: u64, size: u64 },
    #[error("multiboot bss_end_addr {bss_end_addr:#x} is below load_end_addr {load_end:#x}")]
    BssEndBeforeLoadEnd { bss_end_addr: u32, load_end: u64 },
    #[error("multiboot header has no address fields (flag bit 16) and the file is not ELF")]
    NoLoadInformation,
    #[error("multiboot entry point {0:#x} is not a 32-bit address")]
    EntryAbove4G(u64),
    #[error(transparent)]
    Image(ElfError),
}

fn le_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// File offset of a valid multiboot header (magic and checksum) in the first 8 KiB.
pub fn find_header(bytes: &[u8]) -> Option<usize> {
    let limit = bytes.len().min(SEARCH_LIMIT);
    (0..limit.saturating_sub(11)).step_by(4).find(|&off| {
        match (
            le_u32(bytes, off),
            le_u32(bytes, off + 4),
            le_u32(bytes, off + 8),
        ) {
            (Some(magic), Some(flags), Some(checksum)) => {
                magic == MULTIBOOT_HEADER_MAGIC
                    && magic.wrapping_add(flags).wrapping_add(checksum) == 0
            }
            _ => false,
        }
    })
}

/// Loads a multiboot kernel whose header is at file offset `offset`, its modules and the
/// multiboot information.
pub fn load<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    offset: usize,
    params: &BootParams,
) -> Result<BootEntry, LoadError> {
    let name = || kernel.name.to_string();
    let err = |reason| LoadError::Multiboot {
        name: name(),
        reason,
    };
    let bytes = kernel.bytes;
    let flags = le_u32(bytes, offset + 4).unwrap_or(0);
    if flags & REQUIRED_FLAGS_MASK & !KNOWN_REQUIRED_FLAGS != 0 {
        return Err(err(MultibootError::UnsupportedFlags(flags)));
    }
    let (entry, kernel_ranges) = if flags & FLAG_AOUT_KLUDGE != 0 {
        let (entry, start, end) = load_kludge(mem, bytes, offset, params.mem_size).map_err(err)?;
        (entry, vec![(start, end)])
    } else if crate::elf::is_elf(bytes) {
        let elf_err = |reason| LoadError::Elf {
            name: name(),
            reason,
        };
        let image = ElfImage::parse(bytes).map_err(elf_err)?;
        let entry = image.physical_entry().map_err(elf_err)?;
        if entry > u64::from(u32::MAX) {
            return Err(err(MultibootError::EntryAbove4G(entry)));
        }
        image
            .load(mem, bytes, params.mem_size, true)
            .map_err(elf_err)?;
        (entry, image.segment_ranges())
    } else {
        return Err(err(MultibootError::NoLoadInformation));
    };

    // The command line is bytes (Linux paths and -append need not be UTF-8).
    let mut cmdline = kernel.name.as_bytes().to_vec();
    if !params.cmdline.is_empty() {
        cmdline.push(b' ');
        cmdline.extend_from_slice(params.cmdline);
    }
    let data = BootData::place(&kernel_ranges, params.mem_size).map_err(|reason| {
        LoadError::NoRoomForBootData {
            name: name(),
            reason,
        }
    })?;
    write_cmdline(mem, &data, &cmdline, CMDLINE_MAX - 1)?;
    let kernel_end = kernel_ranges.iter().map(|&(_, end)| end).max().unwrap_or(0);
    // Modules go after the image, and after the boot data when it moved above 1 MiB.
    let after = if data.base >= HIMEM_START {
        kernel_end.max(data.end())
    } else {
        kernel_end
    };
    let modules = load_modules(mem, params, after)?;
    write_info(mem, &data, params, &modules)?;

    Ok(BootEntry {
        protocol: BootProtocol::Multiboot,
        mode: CpuMode::Protected32,
        rip: entry,
        rsp: data.stack_pointer(),
        rax: u64::from(MULTIBOOT_BOOTLOADER_MAGIC),
        rbx: data.info(),
        rsi: 0,
        data,
    })
}

/// Loads an a.out-kludge image from the header's address fields (section 3.1.3); returns the
/// entry point, the load address and the end of the bss.
fn load_kludge<M: GuestMemoryBackend>(
    mem: &M,
    bytes: &[u8],
    offset: usize,
    mem_size: u64,
) -> Result<(u64, u64, u64), MultibootError> {
    let field = |i: usize| le_u32(bytes, offset + 12 + 4 * i);
    let (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr), Some(entry)) =
        (field(0), field(1), field(2), field(3), field(4))
    else {
        return Err(MultibootError::TruncatedHeader(offset));
    };
    if load_addr > header_addr {
        return Err(MultibootError::LoadAddrAboveHeader {
            load_addr,
            header_addr,
        });
    }
    let distance = header_addr - load_addr;
    let file_offset = offset
        .checked_sub(distance as usize)
        .ok_or(MultibootError::LoadBeforeFileStart { distance, offset })?
        as u64;
    let load_size = if load_end_addr == 0 {
        bytes.len() as u64 - file_offset
    } else {
        u64::from(load_end_addr.checked_sub(load_addr).ok_or(
            MultibootError::LoadEndBeforeLoad {
                load_addr,
                load_end_addr,
            },
        )?)
    };
    let data = file_range(bytes, file_offset, load_size).ok_or(MultibootError::TruncatedText {
        offset: file_offset,
        size: load_size,
    })?;
    let load_end = u64::from(load_addr) + load_size;
    let mem_end = if bss_end_addr == 0 {
        load_end
    } else if u64::from(bss_end_addr) < load_end {
        return Err(MultibootError::BssEndBeforeLoadEnd {
            bss_end_addr,
            load_end,
        });
    } else {
        u64::from(bss_end_addr)
    };
    let memsz = mem_end - u64::from(load_addr);
    check_guest_range(u64::from(load_addr), memsz, mem_size, true)
        .map_err(MultibootError::Image)?;
    write_and_zero(mem, u64::from(load_addr), data, memsz, mem_size)
        .map_err(MultibootError::Image)?;
    Ok((u64::from(entry), u64::from(load_addr), mem_end))
}

/// A loaded module: where it is and the file name passed as its string.
struct Module<'a> {
    start: u64,
    end: u64,
    name: &'a str,
}

/// Loads each initrd as a module, page-aligned right after the kernel (as QEMU does).
fn load_modules<'a, M: GuestMemoryBackend>(
    mem: &M,
    params: &BootParams<'a>,
    kernel_end: u64,
) -> Result<Vec<Module<'a>>, LoadError> {
    let ram_end = low_ram_end(params.mem_size);
    let mut next = kernel_end.max(HIMEM_START);
    let mut modules = Vec::with_capacity(params.initrds.len());
    for initrd in params.initrds {
        let size = initrd.bytes.len() as u64;
        let start = align_up(next, PAGE_SIZE).unwrap_or(u64::MAX);
        let end = start
            .checked_add(size)
            .filter(|&end| end <= ram_end)
            .ok_or_else(|| LoadError::InitrdDoesNotFit {
                name: initrd.name.to_string(),
                size,
                low: start,
                high: ram_end,
                ram: fmt_size(params.mem_size),
            })?;
        write_guest(mem, "multiboot module", start, initrd.bytes)?;
        modules.push(Module {
            start,
            end,
            name: initrd.name,
        });
        next = end;
    }
    Ok(modules)
}

/// Writes the memory map, module list, strings and the information structure.
fn write_info<M: GuestMemoryBackend>(
    mem: &M,
    data: &BootData,
    params: &BootParams,
    modules: &[Module],
) -> Result<(), LoadError> {
    let e820 = e820_entries(params.mem_size);
    let mut tables = Vec::new();
    for e in &e820 {
        tables.extend_from_slice(&MMAP_ENTRY_SIZE.to_le_bytes());
        tables.extend_from_slice(&e.addr.to_le_bytes());
        tables.extend_from_slice(&e.size.to_le_bytes());
        tables.extend_from_slice(&e.kind.to_le_bytes());
    }
    let mmap_length = tables.len();
    let mods_offset = mmap_length;
    tables.resize(mods_offset + modules.len() * MODULE_SIZE, 0);
    let mut strings = Vec::new();
    let strings_offset = tables.len() as u64;
    for (i, m) in modules.iter().enumerate() {
        let string_addr = data.tables() + strings_offset + strings.len() as u64;
        strings.extend_from_slice(m.name.as_bytes());
        strings.push(0);
        let entry = &mut tables[mods_offset + i * MODULE_SIZE..][..MODULE_SIZE];
        entry[0..4].copy_from_slice(&(m.start as u32).to_le_bytes());
        entry[4..8].copy_from_slice(&(m.end as u32).to_le_bytes());
        entry[8..12].copy_from_slice(&(string_addr as u32).to_le_bytes());
    }
    let loader_name_addr = data.tables() + strings_offset + strings.len() as u64;
    strings.extend_from_slice(LOADER_NAME);
    tables.extend_from_slice(&strings);
    let have = BOOT_TABLES_END - BOOT_TABLES_START;
    if tables.len() as u64 > have {
        return Err(LoadError::BootTablesFull {
            need: tables.len() as u64,
            have,
        });
    }
    write_guest(mem, "multiboot tables", data.tables(), &tables)?;

    let low_end = low_ram_end(params.mem_size);
    let mut info = [0u32; INFO_SIZE / 4];
    info[0] =
        INFO_MEMORY | INFO_BOOT_DEVICE | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME;
    info[1] = (low_end.min(EBDA_START) / 1024) as u32;
    info[2] = (low_end.saturating_sub(HIMEM_START) / 1024) as u32;
    info[3] = BOOT_DEVICE;
    info[4] = data.cmdline() as u32;
    info[5] = modules.len() as u32;
    info[6] = (data.tables() + mods_offset as u64) as u32;
    info[11] = mmap_length as u32;
    info[12] = data.tables() as u32;
    info[16] = loader_name_addr as u32;
    let bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_guest(mem, "multiboot information", data.info(), &bytes)
}

#[cfg(test)]
pub(crate) mod tests;
