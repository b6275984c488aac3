//! A small ELF32/ELF64 program-header reader and segment loader.
//!
//! linux-loader's ELF loader only takes ELF64, but PVH and multiboot kernels are often ELF32
//! (QEMU loads both), so rvmm reads the program headers itself: every offset and size comes
//! from the file and is checked before use.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    fmt_size, ram_contains, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START,
};
use crate::LoadError;

/// `PT_LOAD`: a segment to copy into memory.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`: a segment holding ELF notes.
pub const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: 32-bit physical PVH entry point (Xen public/elfnote.h).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const ELF32_EHDR_SIZE: usize = 52;
const ELF64_EHDR_SIZE: usize = 64;
const ELF32_PHDR_SIZE: usize = 32;
const ELF64_PHDR_SIZE: usize = 56;
/// `e_phnum` value meaning "the real count is in section header 0" (not supported).
const PN_XNUM: u16 = 0xffff;

/// Why an ELF image was rejected. Messages name the offending header or segment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("truncated: the ELF header needs {need} bytes, the file has {len}")]
    TruncatedHeader { need: usize, len: usize },
    #[error("unsupported ELF class {0} (expected 1 for ELF32 or 2 for ELF64)")]
    Class(u8),
    #[error("big-endian ELF images are not supported on x86")]
    BigEndian,
    #[error("ELF machine {0} is not x86 (EM_386 = 3 or EM_X86_64 = 62)")]
    Machine(u16),
    #[error("ELF has no program headers")]
    NoProgramHeaders,
    #[error("ELF extended program header numbering (e_phnum = 0xffff) is not supported")]
    ExtendedNumbering,
    #[error("ELF program headers are {size} bytes each, less than the {need} this class needs")]
    ProgramHeaderSize { size: u16, need: usize },
    #[error("truncated: program header {0} lies past the end of the file")]
    TruncatedProgramHeader(usize),
    #[error("truncated: segment {index} (file offset {offset:#x} + {size:#x}) lies past the end of the file")]
    TruncatedSegment {
        index: usize,
        offset: u64,
        size: u64,
    },
    #[error("segment {index} has p_filesz {filesz:#x} larger than p_memsz {memsz:#x}")]
    FileszOverMemsz {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error("segment at {addr:#x} + {size:#x} does not fit in {ram} of RAM")]
    SegmentOutsideRam { addr: u64, size: u64, ram: String },
    #[error("segment at {addr:#x} + {size:#x} overlaps the BIOS area {start:#x}-{end:#x} (EBDA, ACPI and MP tables)")]
    SegmentOverlapsBiosArea {
        addr: u64,
        size: u64,
        start: u64,
        end: u64,
    },
    #[error("segment at {addr:#x} + {size:#x} overlaps the MMIO hole {start:#x}-{end:#x}")]
    SegmentOverlapsMmioHole {
        addr: u64,
        size: u64,
        start: u64,
        end: u64,
    },
    #[error("segment at {addr:#x} + {size:#x} is not below 4 GiB, out of reach of a 32-bit entry")]
    SegmentAbove4G { addr: u64, size: u64 },
    #[error("ELF has no loadable (PT_LOAD) segments")]
    NoLoadSegments,
    #[error(
        "truncated: note at file offset {offset:#x} runs past the end of note segment {index}"
    )]
    TruncatedNote { index: usize, offset: u64 },
    #[error("PVH note descriptor is {0} bytes, expected 4 or 8")]
    PvhNoteSize(u32),
    #[error("PVH entry point {0:#x} is not a 32-bit address")]
    PvhEntryAbove4G(u64),
    #[error("entry point {0:#x} is not inside any loadable segment")]
    EntryOutsideSegments(u64),
    #[error("entry point {entry:#x} translated through the segment at virtual {vaddr:#x} lies past 2^64 (p_paddr {paddr:#x})")]
    EntryPastAddressSpace { entry: u64, vaddr: u64, paddr: u64 },
}

/// ELF file class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

/// One program header, widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub index: usize,
    pub p_type: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// The parts of an ELF image the loaders use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    pub class: ElfClass,
    pub entry: u64,
    pub headers: Vec<ProgramHeader>,
}

fn le_u16(bytes: &[u8], off: usize) -> Option<u16> {
    let b = bytes.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Whether the file starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

impl ElfImage {
    /// Parses the ELF header and all program headers of `bytes` (which must start with the
    /// ELF magic), checking that each header lies inside the file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ElfError> {
        let class = match bytes.get(4).copied() {
            Some(1) => ElfClass::Elf32,
            Some(2) => ElfClass::Elf64,
            Some(c) => return Err(ElfError::Class(c)),
            None => {
                return Err(ElfError::TruncatedHeader {
                    need: ELF32_EHDR_SIZE,
                    len: bytes.len(),
                })
            }
        };
        let (ehdr_size, phdr_size) = match class {
            ElfClass::Elf32 => (ELF32_EHDR_SIZE, ELF32_PHDR_SIZE),
            ElfClass::Elf64 => (ELF64_EHDR_SIZE, ELF64_PHDR_SIZE),
        };
        if bytes.len() < ehdr_size {
            return Err(ElfError::TruncatedHeader {
                need: ehdr_size,
                len: bytes.len(),
            });
        }
        // EI_DATA: 1 = little-endian.
        if bytes[5] != 1 {
            return Err(ElfError::BigEndian);
        }
        let truncated = || ElfError::TruncatedHeader {
            need: ehdr_size,
            len: bytes.len(),
        };
        let machine = le_u16(bytes, 18).ok_or_else(truncated)?;
        if machine != EM_386 && machine != EM_X86_64 {
            return Err(ElfError::Machine(machine));
        }
        let (entry, phoff, phentsize, phnum) = match class {
            ElfClass::Elf32 => (
                u64::from(le_u32(bytes, 24).ok_or_else(truncated)?),
                u64::from(le_u32(bytes, 28).ok_or_else(truncated)?),
                le_u16(bytes, 42).ok_or_else(truncated)?,
                le_u16(bytes, 44).ok_or_else(truncated)?,
            ),
            ElfClass::Elf64 => (
                le_u64(bytes, 24).ok_or_else(truncated)?,
                le_u64(bytes, 32).ok_or_else(truncated)?,
                le_u16(bytes, 54).ok_or_else(truncated)?,
                le_u16(bytes, 56).ok_or_else(truncated)?,
            ),
        };
        if phnum == 0 {
            return Err(ElfError::NoProgramHeaders);
        }
        if phnum == PN_XNUM {
            return Err(ElfError::ExtendedNumbering);
        }
        if usize::from(phentsize) < phdr_size {
            return Err(ElfError::ProgramHeaderSize {
                size: phentsize,
                need: phdr_size,
            });
        }
        let mut headers = Vec::with_capacity(usize::from(phnum));
        for index in 0..usize::from(phnum) {
            let start = (index as u64)
                .checked_mul(u64::from(phentsize))
                .and_then(|o| o.checked_add(phoff))
                .and_then(|o| usize::try_from(o).ok())
                .ok_or(ElfError::TruncatedProgramHeader(index))?;
            let ph = start
                .checked_add(phdr_size)
                .and_then(|end| bytes.get(start..end))
                .ok_or(ElfError::TruncatedProgramHeader(index))?;
            // The slice has exactly phdr_size bytes, so these reads cannot fail.
            let r32 = |o| le_u32(ph, o).map(u64::from).unwrap_or(0);
            let r64 = |o| le_u64(ph, o).unwrap_or(0);
            headers.push(match class {
                ElfClass::Elf32 => ProgramHeader {
                    index,
                    p_type: r32(0) as u32,
                    offset: r32(4),
                    vaddr: r32(8),
                    paddr: r32(12),
                    filesz: r32(16),
                    memsz: r32(20),
                    align: r32(28),
                },
                ElfClass::Elf64 => ProgramHeader {
                    index,
                    p_type: r32(0) as u32,
                    offset: r64(8),
                    vaddr: r64(16),
                    paddr: r64(24),
                    filesz: r64(32),
                    memsz: r64(40),
                    align: r64(48),
                },
            });
        }
        Ok(ElfImage {
            class,
            entry,
            headers,
        })
    }

    /// The `PT_LOAD` segments that occupy memory.
    pub fn load_segments(&self) -> impl Iterator<Item = &ProgramHeader> {
        self.headers
            .iter()
            .filter(|h| h.p_type == PT_LOAD && h.memsz > 0)
    }

    /// The file bytes of segment `h`, checked against the file and its memory size.
    fn segment_bytes<'a>(&self, bytes: &'a [u8], h: &ProgramHeader) -> Result<&'a [u8], ElfError> {
        if h.filesz > h.memsz {
            return Err(ElfError::FileszOverMemsz {
                index: h.index,
                filesz: h.filesz,
                memsz: h.memsz,
            });
        }
        file_range(bytes, h.offset, h.filesz).ok_or(ElfError::TruncatedSegment {
            index: h.index,
            offset: h.offset,
            size: h.filesz,
        })
    }

    /// The PVH entry point from a `XEN_ELFNOTE_PHYS32_ENTRY` note named "Xen" in a `PT_NOTE`
    /// segment, or `None` when there is no such note.
    pub fn pvh_entry(&self, bytes: &[u8]) -> Result<Option<u64>, ElfError> {
        for h in self.headers.iter().filter(|h| h.p_type == PT_NOTE) {
            let notes =
                file_range(bytes, h.offset, h.filesz).ok_or(ElfError::TruncatedSegment {
                    index: h.index,
                    offset: h.offset,
                    size: h.filesz,
                })?;
            // Notes are 4-byte aligned; some toolchains align 8-byte note segments to 8.
            let align = if h.align == 8 { 8 } else { 4 };
            let mut pos = 0usize;
            while pos < notes.len() {
                let truncated = || ElfError::TruncatedNote {
                    index: h.index,
                    offset: h.offset.saturating_add(pos as u64),
                };
                let namesz = le_u32(notes, pos).ok_or_else(truncated)? as usize;
                let descsz = le_u32(notes, pos + 4).ok_or_else(truncated)?;
                let n_type = le_u32(notes, pos + 8).ok_or_else(truncated)?;
                let name_start = pos + 12;
                let desc_start =
                    align_up_usize(name_start.checked_add(namesz), align).ok_or_else(truncated)?;
                let desc_end = desc_start
                    .checked_add(descsz as usize)
                    .filter(|&end| end <= notes.len())
                    .ok_or_else(truncated)?;
                let name = notes
                    .get(name_start..name_start + namesz)
                    .ok_or_else(truncated)?;
                if n_type == XEN_ELFNOTE_PHYS32_ENTRY && name == b"Xen\0" {
                    let desc = &notes[desc_start..desc_end];
                    let entry = match descsz {
                        4 => u64::from(le_u32(desc, 0).ok_or_else(truncated)?),
                        8 => le_u64(desc, 0).ok_or_else(truncated)?,
                        n => return Err(ElfError::PvhNoteSize(n)),
                    };
                    if entry > u64::from(u32::MAX) {
                        return Err(ElfError::PvhEntryAbove4G(entry));
                    }
                    return Ok(Some(entry));
                }
                pos = match align_up_usize(Some(desc_end), align) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
        Ok(None)
    }

    /// The physical entry address: `e_entry` translated through the segment whose virtual
    /// range contains it, or `e_entry` itself when it is already inside a segment's
    /// physical range (x86_64 vmlinux points e_entry at the physical `startup_64`).
    pub fn physical_entry(&self) -> Result<u64, ElfError> {
        let inside = |start: u64, size: u64| self.entry >= start && self.entry - start < size;
        if let Some(h) = self.load_segments().find(|h| inside(h.vaddr, h.memsz)) {
            return (self.entry - h.vaddr).checked_add(h.paddr).ok_or(
                ElfError::EntryPastAddressSpace {
                    entry: self.entry,
                    vaddr: h.vaddr,
                    paddr: h.paddr,
                },
            );
        }
        if self.load_segments().any(|h| inside(h.paddr, h.memsz)) {
            return Ok(self.entry);
        }
        Err(ElfError::EntryOutsideSegments(self.entry))
    }

    /// `[start, end)` of every loadable segment in guest physical memory (saturating).
    pub fn segment_ranges(&self) -> Vec<(u64, u64)> {
        self.load_segments()
            .map(|h| (h.paddr, h.paddr.saturating_add(h.memsz)))
            .collect()
    }

    /// Checks every loadable segment (file range, sizes, RAM, the BIOS area and MMIO hole, and
    /// with `below_4g` that it ends below 4 GiB), then copies them to their physical addresses and zeroes their bss. Returns the
    /// end of the highest segment.
    pub fn load<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        bytes: &[u8],
        mem_size: u64,
        below_4g: bool,
    ) -> Result<u64, ElfError> {
        let mut kernel_end = 0;
        let mut any = false;
        for h in self.load_segments() {
            self.segment_bytes(bytes, h)?;
            check_guest_range(h.paddr, h.memsz, mem_size, below_4g)?;
            kernel_end = kernel_end.max(h.paddr + h.memsz);
            any = true;
        }
        if !any {
            return Err(ElfError::NoLoadSegments);
        }
        for h in self.load_segments() {
            let data = self.segment_bytes(bytes, h)?;
            write_and_zero(mem, h.paddr, data, h.memsz, mem_size)?;
        }
        Ok(kernel_end)
    }
}

/// `bytes[offset..offset + size]`, or `None` when that range is not inside the file.
pub(crate) fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

fn align_up_usize(value: Option<usize>, align: usize) -> Option<usize> {
    value?.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Checks that the guest range `[addr, addr + size)` a kernel part will occupy is RAM, stays out
/// of the BIOS area and the MMIO hole, and (for 32-bit entries) lies below 4 GiB. rvmm's own boot
/// data is no obstacle: callers move it out of the way with `BootData::place`.
pub(crate) fn check_guest_range(
    addr: u64,
    size: u64,
    mem_size: u64,
    below_4g: bool,
) -> Result<(), ElfError> {
    let end = addr.checked_add(size);
    if below_4g && end.is_none_or(|end| end > 1 << 32) {
        return Err(ElfError::SegmentAbove4G { addr, size });
    }
    let overlaps = |start: u64, stop: u64| size > 0 && addr < stop && end.is_none_or(|e| e > start);
    if overlaps(EBDA_START, HIMEM_START) {
        return Err(ElfError::SegmentOverlapsBiosArea {
            addr,
            size,
            start: EBDA_START,
            end: HIMEM_START,
        });
    }
    if overlaps(MMIO_GAP_START, MMIO_GAP_END) {
        return Err(ElfError::SegmentOverlapsMmioHole {
            addr,
            size,
            start: MMIO_GAP_START,
            end: MMIO_GAP_END,
        });
    }
    if !ram_contains(mem_size, addr, size) {
        return Err(ElfError::SegmentOutsideRam {
            addr,
            size,
            ram: fmt_size(mem_size),
        });
    }
    Ok(())
}

/// Writes `data` at `addr` and zeroes the rest of `[addr, addr + memsz)` (the bss). The range
/// must have been checked with `check_guest_range`.
pub(crate) fn write_and_zero<M: GuestMemoryBackend>(
    mem: &M,
    addr: u64,
    data: &[u8],
    memsz: u64,
    mem_size: u64,
) -> Result<(), ElfError> {
    let outside = || ElfError::SegmentOutsideRam {
        addr,
        size: memsz,
        ram: fmt_size(mem_size),
    };
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|_| outside())?;
    static ZEROES: [u8; 0x1000] = [0; 0x1000];
    let mut pos = addr + data.len() as u64;
    let end = addr + memsz;
    while pos < end {
        let n = (end - pos).min(ZEROES.len() as u64) as usize;
        mem.write_slice(&ZEROES[..n], GuestAddress(pos))
            .map_err(|_| outside())?;
        pos += n as u64;
    }
    Ok(())
}

impl From<(String, ElfError)> for LoadError {
    fn from((name, reason): (String, ElfError)) -> Self {
        LoadError::Elf { name, reason }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A segment for `build_elf`: physical and virtual address, file contents, memory size.
    pub struct Seg {
        pub paddr: u64,
        pub vaddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
    }

    impl Seg {
        pub fn at(paddr: u64, data: Vec<u8>) -> Self {
            let memsz = data.len() as u64;
            Seg {
                paddr,
                vaddr: paddr,
                data,
                memsz,
            }
        }
    }

    /// A PT_NOTE payload with one note.
    pub fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&n_type.to_le_bytes());
        v.extend_from_slice(name);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// Builds a little-endian x86 ELF with one PT_LOAD per segment and an optional PT_NOTE.
    pub fn build_elf(class64: bool, entry: u64, segs: &[Seg], notes: Option<&[u8]>) -> Vec<u8> {
        let (ehsize, phsize) = if class64 { (64, 56) } else { (52, 32) };
        let phnum = segs.len() + usize::from(notes.is_some());
        let mut data_off = ehsize + phnum * phsize;
        let mut out = vec![0u8; data_off];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if class64 { 2 } else { 1 };
        out[5] = 1;
        out[6] = 1;
        let machine: u16 = if class64 { 62 } else { 3 };
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        if class64 {
            out[24..32].copy_from_slice(&entry.to_le_bytes());
            out[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
            out[54..56].copy_from_slice(&(phsize as u16).to_le_bytes());
            out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        } else {
            out[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
            out[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
            out[42..44].copy_from_slice(&(phsize as u16).to_le_bytes());
            out[44..46].copy_from_slice(&(phnum as u16).to_le_bytes());
        }
        let mut phdrs = Vec::new();
        for s in segs {
            phdrs.push((PT_LOAD, data_off, s.vaddr, s.paddr, s.data.len(), s.memsz));
            data_off += s.data.len();
        }
        if let Some(n) = notes {
            phdrs.push((PT_NOTE, data_off, 0, 0, n.len(), n.len() as u64));
        }
        for (i, &(t, off, vaddr, paddr, filesz, memsz)) in phdrs.iter().enumerate() {
            let p = ehsize + i * phsize;
            let ph = &mut out[p..p + phsize];
            ph[0..4].copy_from_slice(&t.to_le_bytes());
            if class64 {
                ph[8..16].copy_from_slice(&(off as u64).to_le_bytes());
                ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
                ph[24..32].copy_from_slice(&paddr.to_le_bytes());
                ph[32..40].copy_from_slice(&(filesz as u64).to_le_bytes());
                ph[40..48].copy_from_slice(&memsz.to_le_bytes());
                ph[48..56].copy_from_slice(&4u64.to_le_bytes());
            } else {
                ph[4..8].copy_from_slice(&(off as u32).to_le_bytes());
                ph[8..12].copy_from_slice(&(vaddr as u32).to_le_bytes());
                ph[12..16].copy_from_slice(&(paddr as u32).to_le_bytes());
                ph[16..20].copy_from_slice(&(filesz as u32).to_le_bytes());
                ph[20..24].copy_from_slice(&(memsz as u32).to_le_bytes());
                ph[28..32].copy_from_slice(&4u32.to_le_bytes());
            }
        }
        for s in segs {
            out.extend_from_slice(&s.data);
        }
        if let Some(n) = notes {
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn parses_elf32_and_elf64_headers() {
        for class64 in [false, true] {
            let img = build_elf(
                class64,
                0x100010,
                &[Seg::at(0x100000, vec![0x90; 64])],
                None,
            );
            let elf = ElfImage::parse(&img).unwrap();
            assert_eq!(elf.entry, 0x100010);
            assert_eq!(elf.headers.len(), 1);
            assert_eq!(elf.headers[0].paddr, 0x100000);
            assert_eq!(elf.headers[0].filesz, 64);
            assert_eq!(elf.pvh_entry(&img).unwrap(), None);
            assert_eq!(elf.physical_entry().unwrap(), 0x100010);
        }
    }

    #[test]
    fn finds_pvh_note_with_4_and_8_byte_descriptors() {
        let n4 = [
            note(b"GNU\0", 3, &[1, 2, 3, 4, 5]),
            note(b"Xen\0", 18, &0x100123u32.to_le_bytes()),
        ]
        .concat();
        let img = build_elf(
            false,
            0x100000,
            &[Seg::at(0x100000, vec![0; 16])],
            Some(&n4),
        );
        let elf = ElfImage::parse(&img).unwrap();
        assert_eq!(elf.pvh_entry(&img).unwrap(), Some(0x100123));

        let n8 = note(b"Xen\0", 18, &0x1000200u64.to_le_bytes());
        let img = build_elf(
            true,
            0x1000000,
            &[Seg::at(0x1000000, vec![0; 16])],
            Some(&n8),
        );
        let elf = ElfImage::parse(&img).unwrap();
        assert_eq!(elf.pvh_entry(&img).unwrap(), Some(0x1000200));

        // Right type, wrong name: not a PVH note.
        let other = note(b"Xe\0", 18, &1u32.to_le_bytes());
        let img = build_elf(
            true,
            0x1000000,
            &[Seg::at(0x1000000, vec![0; 16])],
            Some(&other),
        );
        assert_eq!(
            ElfImage::parse(&img).unwrap().pvh_entry(&img).unwrap(),
            None
        );

        let bad = note(b"Xen\0", 18, &[1, 2]);
        let img = build_elf(
            true,
            0x1000000,
            &[Seg::at(0x1000000, vec![0; 16])],
            Some(&bad),
        );
        assert_eq!(
            ElfImage::parse(&img).unwrap().pvh_entry(&img),
            Err(ElfError::PvhNoteSize(2))
        );
    }

    #[test]
    fn translates_virtual_entry() {
        let mut seg = Seg::at(0x1000000, vec![0; 0x100]);
        seg.vaddr = 0xffff_ffff_8100_0000;
        let img = build_elf(true, 0xffff_ffff_8100_0040, &[seg], None);
        let elf = ElfImage::parse(&img).unwrap();
        assert_eq!(elf.physical_entry().unwrap(), 0x1000040);
        let img = build_elf(true, 0x5000, &[Seg::at(0x1000000, vec![0; 16])], None);
        assert_eq!(
            ElfImage::parse(&img).unwrap().physical_entry(),
            Err(ElfError::EntryOutsideSegments(0x5000))
        );
    }

    /// Found by fuzz/kernel_loader: a segment whose p_paddr puts the translated entry past
    /// 2^64 overflowed (a panic in debug builds, a wrapped entry in release ones).
    #[test]
    fn entry_translated_past_the_address_space_is_refused() {
        let mut seg = Seg::at(u64::MAX - 0xf, vec![0; 0x100]);
        seg.vaddr = 0x10_0000;
        let img = build_elf(true, 0x10_0040, &[seg], None);
        assert_eq!(
            ElfImage::parse(&img).unwrap().physical_entry(),
            Err(ElfError::EntryPastAddressSpace {
                entry: 0x10_0040,
                vaddr: 0x10_0000,
                paddr: u64::MAX - 0xf
            })
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = build_elf(true, 0x100000, &[Seg::at(0x100000, vec![0; 16])], None);
        assert!(matches!(
            ElfImage::parse(&good[..40]),
            Err(ElfError::TruncatedHeader { need: 64, .. })
        ));
        assert_eq!(
            ElfImage::parse(&good[..64 + 20]),
            Err(ElfError::TruncatedProgramHeader(0))
        );
        let mut bad = good.clone();
        bad[5] = 2;
        assert_eq!(ElfImage::parse(&bad), Err(ElfError::BigEndian));
        let mut bad = good.clone();
        bad[4] = 7;
        assert_eq!(ElfImage::parse(&bad), Err(ElfError::Class(7)));
        let mut bad = good.clone();
        bad[18] = 40;
        assert_eq!(ElfImage::parse(&bad), Err(ElfError::Machine(40)));
        let mut bad = good.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&bad),
            Err(ElfError::TruncatedProgramHeader(0))
        );
        let mut bad = good.clone();
        bad[54..56].copy_from_slice(&8u16.to_le_bytes());
        assert!(matches!(
            ElfImage::parse(&bad),
            Err(ElfError::ProgramHeaderSize { size: 8, .. })
        ));
        let mut bad = good;
        bad[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(ElfImage::parse(&bad), Err(ElfError::NoProgramHeaders));
    }

    #[test]
    fn truncated_note_is_an_error() {
        let n = note(b"Xen\0", 18, &0x100000u32.to_le_bytes());
        let mut img = build_elf(false, 0x100000, &[Seg::at(0x100000, vec![0; 16])], Some(&n));
        // Shrink the note segment so the descriptor runs past its end.
        let ph = 52 + 32;
        img[ph + 16..ph + 20].copy_from_slice(&18u32.to_le_bytes());
        let elf = ElfImage::parse(&img).unwrap();
        assert!(matches!(
            elf.pvh_entry(&img),
            Err(ElfError::TruncatedNote { index: 1, .. })
        ));
    }
}
