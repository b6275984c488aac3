//! x86_64 guest physical memory layout: where rvmm puts RAM, the 32-bit MMIO gap, and the
//! boot structures it writes in the first 1 MiB before a direct kernel boot.
//!
//! Low memory map by default (all below `LOW_STRUCTS_END`). A kernel whose segments reach into
//! it wins: the whole block moves, unchanged inside, to free RAM out of the image's way
//! (`BootData::place`), as QEMU moves its multiboot data after the image.
//!
//! ```text
//! 0x0500  GDT (5 entries: null, null, code 0x10, data 0x18, TSS 0x20)
//! 0x0540  IDT (one empty entry: interrupts stay off until the guest loads its own)
//! 0x6000  PVH hvm_start_info or multiboot info
//! 0x7000  Linux zero page (struct boot_params)
//! 0x8000  boot stack page, initial RSP 0x8ff0
//! 0x9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories (2 MiB pages, 4 GiB)
//! 0x10000 boot tables: PVH memmap and module list, multiboot mmap, modules and strings
//! 0x20000 kernel command line (CMDLINE_MAX bytes with the NUL)
//! ```

use vm_memory::GuestAddress;

/// Start of high memory: where protected-mode kernels are loaded (boot.rst, LOADED_HIGH).
pub const HIMEM_START: u64 = 0x10_0000;
/// Global descriptor table used for the initial CPU mode.
pub const GDT_START: u64 = 0x500;
/// Number of GDT entries rvmm writes.
pub const GDT_ENTRIES: usize = 5;
/// Empty interrupt descriptor table.
pub const IDT_START: u64 = 0x540;
/// Selector of the flat code segment (`__BOOT_CS` in the Linux 64-bit boot protocol).
pub const BOOT_CS_SELECTOR: u16 = 0x10;
/// Selector of the flat data segment (`__BOOT_DS` in the Linux 64-bit boot protocol).
pub const BOOT_DS_SELECTOR: u16 = 0x18;
/// Selector of the TSS the PVH ABI asks for (base 0, limit 0x67).
pub const BOOT_TSS_SELECTOR: u16 = 0x20;
/// PVH `hvm_start_info` or multiboot information structure (only one protocol is used).
pub const BOOT_INFO_START: u64 = 0x6000;
/// PVH `hvm_start_info` address passed in EBX.
pub const PVH_INFO_START: u64 = BOOT_INFO_START;
/// Multiboot information structure address passed in EBX.
pub const MULTIBOOT_INFO_START: u64 = BOOT_INFO_START;
/// Linux `struct boot_params` ("zero page") address passed in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer: top of the page at 0x8000, 16-byte aligned.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 of the identity map used for `CpuMode::Long64`.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table of the identity map.
pub const PDPT_START: u64 = 0xa000;
/// First of `PD_COUNT` page directories of the identity map.
pub const PD_START: u64 = 0xb000;
/// Page directories: each maps 1 GiB with 2 MiB pages, so 4 of them map 4 GiB.
pub const PD_COUNT: u64 = 4;
/// Variable-size boot tables (memory maps, module lists, module strings).
pub const BOOT_TABLES_START: u64 = 0x1_0000;
/// End (exclusive) of the boot tables area.
pub const BOOT_TABLES_END: u64 = 0x2_0000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Room for the command line including its NUL terminator.
pub const CMDLINE_MAX: usize = 0x1000;
/// End (exclusive) of the structures rvmm writes in low memory.
pub const LOW_STRUCTS_END: u64 = CMDLINE_START + CMDLINE_MAX as u64;
/// Start of the extended BIOS data area, reserved in the e820 map up to `HIMEM_START`.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of the 32-bit MMIO gap (PCI holes, IOAPIC, LAPIC): no RAM in [3 GiB, 4 GiB).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO gap; RAM above 3 GiB continues here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Guest page size used for module alignment.
pub const PAGE_SIZE: u64 = 0x1000;

/// Where rvmm's boot data block (GDT, IDT, boot info, zero page, stack, page tables, boot
/// tables, command line) lies: the low memory map above shifted by `base`. `base` is 0 unless
/// the kernel image occupies part of that map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootData {
    /// Offset added to every address of the default low memory map.
    pub base: u64,
}

/// Size of the block `BootData` moves as one piece (from address 0 of the default map).
pub const BOOT_DATA_SIZE: u64 = LOW_STRUCTS_END;

/// Why the boot data could not be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free RAM for rvmm's {size:#x}-byte boot data block out of the kernel image's way ({ram} of RAM)")]
pub struct NoRoomForBootData {
    pub size: u64,
    pub ram: String,
}

impl BootData {
    /// Chooses where the boot data goes for an image occupying `occupied` ([start, end)
    /// ranges): the default map when it is free, else the first page-aligned spot after one
    /// of the image's ranges (or at 1 MiB) that is RAM, below the EBDA or above 1 MiB, and
    /// clear of the image.
    pub fn place(occupied: &[(u64, u64)], mem_size: u64) -> Result<Self, NoRoomForBootData> {
        let ram_end = low_ram_end(mem_size);
        let fits = |base: u64| {
            let Some(end) = base.checked_add(BOOT_DATA_SIZE) else {
                return false;
            };
            let area_ok = end <= EBDA_START || (base >= HIMEM_START && end <= ram_end);
            area_ok
                && end <= ram_end
                && occupied
                    .iter()
                    .all(|&(start, stop)| stop <= base || start >= end)
        };
        let mut candidates = vec![0, HIMEM_START];
        candidates.extend(
            occupied
                .iter()
                .filter_map(|&(_, end)| end.checked_add(PAGE_SIZE - 1))
                .map(|end| end & !(PAGE_SIZE - 1)),
        );
        // Stable order: keep today's map first, then the lowest free spot.
        candidates[1..].sort_unstable();
        candidates
            .into_iter()
            .find(|&base| fits(base))
            .map(|base| BootData { base })
            .ok_or_else(|| NoRoomForBootData {
                size: BOOT_DATA_SIZE,
                ram: fmt_size(mem_size),
            })
    }

    /// End (exclusive) of the block.
    pub fn end(&self) -> u64 {
        self.base + BOOT_DATA_SIZE
    }
    pub fn gdt(&self) -> u64 {
        self.base + GDT_START
    }
    pub fn idt(&self) -> u64 {
        self.base + IDT_START
    }
    pub fn info(&self) -> u64 {
        self.base + BOOT_INFO_START
    }
    pub fn zero_page(&self) -> u64 {
        self.base + ZERO_PAGE_START
    }
    pub fn stack_pointer(&self) -> u64 {
        self.base + BOOT_STACK_POINTER
    }
    pub fn pml4(&self) -> u64 {
        self.base + PML4_START
    }
    pub fn pdpt(&self) -> u64 {
        self.base + PDPT_START
    }
    pub fn pd(&self) -> u64 {
        self.base + PD_START
    }
    pub fn tables(&self) -> u64 {
        self.base + BOOT_TABLES_START
    }
    pub fn cmdline(&self) -> u64 {
        self.base + CMDLINE_START
    }
}

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One entry of the BIOS e820 memory map rvmm reports to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` (1) or `E820_RESERVED` (2).
    pub kind: u32,
}

/// Where QEMU's q35 ends the RAM below 4 GiB (hw/i386/pc_q35.c `pc_q35_init`): all of it
/// below 2.75 GiB, else the first 2 GiB, so the PCIe ECAM window at 0xb0000000 stays free.
pub fn q35_low_ram_limit(mem_size: u64) -> u64 {
    const ECAM_BASE: u64 = 0xb000_0000;
    if mem_size >= ECAM_BASE {
        0x8000_0000
    } else {
        ECAM_BASE
    }
}

/// Guest RAM regions for `mem_size` bytes of RAM: below the MMIO gap, and the rest above 4 GiB.
pub fn guest_memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    guest_memory_regions_below(mem_size, MMIO_GAP_START)
}

/// Guest RAM regions when the RAM below 4 GiB ends at `low_limit` at the latest.
pub fn guest_memory_regions_below(mem_size: u64, low_limit: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_size.min(low_limit);
    let high = mem_size - low;
    let mut regions = Vec::with_capacity(2);
    if low > 0 {
        regions.push((GuestAddress(0), low as usize));
    }
    if high > 0 {
        regions.push((GuestAddress(MMIO_GAP_END), high as usize));
    }
    regions
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// End (exclusive) of the RAM below 4 GiB when it ends at `low_limit` at the latest.
pub fn low_ram_end_below(mem_size: u64, low_limit: u64) -> u64 {
    mem_size.min(low_limit)
}

/// Whether `[addr, addr + size)` lies entirely inside one RAM region of `mem_size` bytes.
pub fn ram_contains(mem_size: u64, addr: u64, size: u64) -> bool {
    let Some(end) = addr.checked_add(size) else {
        return false;
    };
    guest_memory_regions(mem_size)
        .iter()
        .any(|&(start, len)| addr >= start.0 && end <= start.0 + len as u64)
}

/// The e820 map for `mem_size` bytes of RAM: conventional memory below the EBDA, the
/// reserved EBDA/BIOS area up to 1 MiB, RAM from 1 MiB to the MMIO gap, and RAM above 4 GiB.
pub fn e820_entries(mem_size: u64) -> Vec<E820Entry> {
    let low_end = low_ram_end(mem_size);
    let mut entries = vec![E820Entry {
        addr: 0,
        size: low_end.min(EBDA_START),
        kind: E820_RAM,
    }];
    if low_end > EBDA_START {
        entries.push(E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        });
    }
    if low_end > HIMEM_START {
        entries.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem_size > MMIO_GAP_START {
        entries.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    entries.retain(|e| e.size > 0);
    entries
}

/// `size` as "N MiB" when it is a whole number of MiB, else as bytes, for messages.
pub(crate) fn fmt_size(size: u64) -> String {
    const MIB: u64 = 1 << 20;
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else {
        format!("{size} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn q35_keeps_its_ecam_window_free_of_ram() {
        assert_eq!(q35_low_ram_limit(2 * GIB), 0xb000_0000);
        assert_eq!(q35_low_ram_limit(3 * GIB), 2 * GIB);
        let r = guest_memory_regions_below(3 * GIB, q35_low_ram_limit(3 * GIB));
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), (2 * GIB) as usize),
                (GuestAddress(4 * GIB), GIB as usize)
            ]
        );
        assert_eq!(
            low_ram_end_below(2 * GIB, q35_low_ram_limit(2 * GIB)),
            2 * GIB
        );
    }

    #[test]
    fn regions_split_around_the_mmio_gap() {
        assert_eq!(
            guest_memory_regions(256 << 20),
            vec![(GuestAddress(0), 256 << 20)]
        );
        assert_eq!(
            guest_memory_regions(3 * GIB),
            vec![(GuestAddress(0), (3 * GIB) as usize)]
        );
        assert_eq!(
            guest_memory_regions(5 * GIB),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), (2 * GIB) as usize)
            ]
        );
        assert!(guest_memory_regions(0).is_empty());
    }

    #[test]
    fn e820_small_and_large() {
        let e = e820_entries(256 << 20);
        assert_eq!(
            e,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: (256 << 20) - 0x10_0000,
                    kind: E820_RAM
                },
            ]
        );
        let e = e820_entries(5 * GIB);
        assert_eq!(e.len(), 4);
        assert_eq!(e[2].addr + e[2].size, MMIO_GAP_START);
        assert_eq!(
            e[3],
            E820Entry {
                addr: 4 * GIB,
                size: 2 * GIB,
                kind: E820_RAM
            }
        );
        // Less than 640 KiB: only conventional memory.
        assert_eq!(e820_entries(0x8_0000).len(), 1);
        assert!(e820_entries(0).is_empty());
    }

    #[test]
    fn boot_data_keeps_the_default_map_when_free() {
        assert_eq!(BootData::place(&[], 256 << 20), Ok(BootData::default()));
        let high = [(0x10_0000, 0x20_0000)];
        assert_eq!(BootData::place(&high, 256 << 20).unwrap().base, 0);
        // Just above the block: still free.
        let at = [(LOW_STRUCTS_END, LOW_STRUCTS_END + 0x1000)];
        assert_eq!(BootData::place(&at, 256 << 20).unwrap().base, 0);
    }

    #[test]
    fn boot_data_moves_out_of_a_low_image() {
        // Image at 0x8000: the block goes right after it, below the EBDA.
        let low = [(0x8000, 0x9234)];
        let d = BootData::place(&low, 256 << 20).unwrap();
        assert_eq!(d.base, 0xa000);
        assert_eq!(d.info(), 0xa000 + BOOT_INFO_START);
        // Image filling low memory: the block goes to 1 MiB.
        let big = [(0x1000, 0x9_0000)];
        assert_eq!(BootData::place(&big, 256 << 20).unwrap().base, HIMEM_START);
        // Image at 0x8000 and at 1 MiB: after the 1 MiB image.
        let two = [(0x8000, 0x9_0000), (HIMEM_START, 0x10_2100)];
        assert_eq!(BootData::place(&two, 256 << 20).unwrap().base, 0x10_3000);
        // No room at all in a tiny guest.
        let err = BootData::place(&[(0, 0x9_0000)], 0x9_0000).unwrap_err();
        assert!(err.to_string().contains("no free RAM"), "{err}");
    }

    #[test]
    fn ram_contains_respects_the_gap() {
        assert!(ram_contains(5 * GIB, 0x100000, 0x1000));
        assert!(!ram_contains(5 * GIB, MMIO_GAP_START - 0x1000, 0x2000));
        assert!(ram_contains(5 * GIB, 4 * GIB, 2 * GIB));
        assert!(!ram_contains(5 * GIB, 4 * GIB, 2 * GIB + 1));
        assert!(!ram_contains(256 << 20, u64::MAX, 2));
        assert_eq!(fmt_size(256 << 20), "256 MiB");
        assert_eq!(fmt_size(1000), "1000 bytes");
    }
}
