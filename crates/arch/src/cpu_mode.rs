//! The initial CPU mode of the boot vCPU: a flat GDT, a TSS, an empty IDT, and for long mode
//! an identity map of the first 4 GiB with 2 MiB pages.
//!
//! Selectors follow the Linux 64-bit boot protocol (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18,
//! Documentation/x86/boot.rst); the TSS (base 0, limit 0x67) is what the PVH ABI asks for and
//! gives KVM a valid, busy TR.

use kvm_bindings::{kvm_segment, kvm_sregs};
use vm_memory::GuestMemoryBackend;

use crate::layout::{
    BootData, BOOT_CS_SELECTOR, BOOT_DS_SELECTOR, BOOT_TSS_SELECTOR, GDT_ENTRIES, PD_COUNT,
};
use crate::{write_guest, CpuMode, LoadError};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page table entry bits: present, writable, and (in a PD) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PAGE_2M: u64 = 0x80;

/// Descriptor flags (access byte in bits 0-7, AVL/L/DB/G in bits 12-15).
const CODE64_FLAGS: u16 = 0xa09b;
const CODE32_FLAGS: u16 = 0xc09b;
const DATA_FLAGS: u16 = 0xc093;
const TSS_FLAGS: u16 = 0x008b;
const TSS_LIMIT: u32 = 0x67;

/// A GDT descriptor from flags, base and limit (Intel SDM vol. 3, 3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The KVM segment register state that loading `selector` with descriptor `entry` gives.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let granular = (entry >> 55) & 1 == 1;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// The GDT rvmm writes for `mode`: null, null, code (0x10), data (0x18), TSS (0x20).
pub fn gdt_for(mode: CpuMode) -> [u64; GDT_ENTRIES] {
    let code = match mode {
        CpuMode::Protected32 => CODE32_FLAGS,
        CpuMode::Long64 => CODE64_FLAGS,
    };
    [
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, TSS_LIMIT),
    ]
}

/// Writes the GDT, IDT and (for `Long64`) page tables where `boot_data` places them and sets segments,
/// descriptor tables, CR0/CR3/CR4 and EFER in `sregs` for `mode`. Other `sregs` fields (from
/// KVM_GET_SREGS) are kept.
pub fn setup_cpu_mode<M: GuestMemoryBackend>(
    mem: &M,
    mode: CpuMode,
    boot_data: &BootData,
    sregs: &mut kvm_sregs,
) -> Result<(), LoadError> {
    let gdt = gdt_for(mode);
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    write_guest(mem, "GDT", boot_data.gdt(), &gdt_bytes)?;
    write_guest(mem, "IDT", boot_data.idt(), &[0u8; 8])?;

    let index = |selector: u16| gdt[usize::from(selector >> 3)];
    let code = segment_from_gdt(index(BOOT_CS_SELECTOR), BOOT_CS_SELECTOR);
    let data = segment_from_gdt(index(BOOT_DS_SELECTOR), BOOT_DS_SELECTOR);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(index(BOOT_TSS_SELECTOR), BOOT_TSS_SELECTOR);
    sregs.gdt.base = boot_data.gdt();
    sregs.gdt.limit = (gdt_bytes.len() - 1) as u16;
    sregs.idt.base = boot_data.idt();
    sregs.idt.limit = 7;

    match mode {
        CpuMode::Protected32 => {
            // PVH: "cr0: PE set, all other writeable bits cleared; cr4: all bits cleared".
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        CpuMode::Long64 => {
            write_identity_map(mem, boot_data)?;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = boot_data.pml4();
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// PML4[0] -> PDPT, PDPT[0..4] -> four PDs, each PD maps 1 GiB with 2 MiB pages.
fn write_identity_map<M: GuestMemoryBackend>(mem: &M, data: &BootData) -> Result<(), LoadError> {
    write_guest(
        mem,
        "PML4",
        data.pml4(),
        &(data.pdpt() | PTE_PRESENT_RW).to_le_bytes(),
    )?;
    let pdpt: Vec<u8> = (0..PD_COUNT)
        .flat_map(|i| ((data.pd() + i * 0x1000) | PTE_PRESENT_RW).to_le_bytes())
        .collect();
    write_guest(mem, "PDPT", data.pdpt(), &pdpt)?;
    let pds: Vec<u8> = (0..PD_COUNT * 512)
        .flat_map(|i| ((i << 21) | PDE_PAGE_2M | PTE_PRESENT_RW).to_le_bytes())
        .collect();
    write_guest(mem, "page directories", data.pd(), &pds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GDT_START, PDPT_START, PD_START, PML4_START};
    use crate::test_utils::{guest_mem, read_obj};

    #[test]
    fn moved_boot_data_moves_gdt_idt_and_page_tables() {
        let mem = guest_mem(16 << 20);
        let data = BootData { base: 0x10_0000 };
        let mut sregs = kvm_sregs::default();
        setup_cpu_mode(&mem, CpuMode::Long64, &data, &mut sregs).unwrap();
        assert_eq!(sregs.gdt.base, 0x10_0000 + GDT_START);
        assert_eq!(sregs.cr3, 0x10_0000 + PML4_START);
        let pml4: u64 = read_obj(&mem, sregs.cr3);
        assert_eq!(pml4, (0x10_0000 + PDPT_START) | 3);
        let gdt: [u64; 5] = read_obj(&mem, sregs.gdt.base);
        assert_eq!(gdt, gdt_for(CpuMode::Long64));
        let old: u64 = read_obj(&mem, PML4_START);
        assert_eq!(old, 0);
    }

    #[test]
    fn gdt_entries_round_trip() {
        let cs = segment_from_gdt(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x10);
        assert_eq!(
            (cs.base, cs.limit, cs.type_, cs.l, cs.db, cs.g, cs.present, cs.s),
            (0, 0xffff_ffff, 0xb, 1, 0, 1, 1, 1)
        );
        let cs = segment_from_gdt(gdt_entry(CODE32_FLAGS, 0, 0xfffff), 0x10);
        assert_eq!((cs.l, cs.db), (0, 1));
        let tr = segment_from_gdt(gdt_entry(TSS_FLAGS, 0x1234_5678, 0x67), 0x20);
        assert_eq!(
            (tr.base, tr.limit, tr.type_, tr.s, tr.g),
            (0x1234_5678, 0x67, 0xb, 0, 0)
        );
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn long_mode_writes_page_tables_and_sregs() {
        let mem = guest_mem(16 << 20);
        let mut sregs = kvm_sregs::default();
        setup_cpu_mode(&mem, CpuMode::Long64, &BootData::default(), &mut sregs).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert_eq!((sregs.cs.selector, sregs.cs.l, sregs.cs.db), (0x10, 1, 0));
        assert_eq!(
            (sregs.ds.selector, sregs.ss.selector, sregs.ss.type_),
            (0x18, 0x18, 3)
        );
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (GDT_START, 39));
        let gdt: [u64; 5] = read_obj(&mem, GDT_START);
        assert_eq!(gdt, gdt_for(CpuMode::Long64));
        let pml4: u64 = read_obj(&mem, PML4_START);
        assert_eq!(pml4, PDPT_START | 3);
        let pdpt: [u64; 4] = read_obj(&mem, PDPT_START);
        assert_eq!(pdpt, [0xb003, 0xc003, 0xd003, 0xe003]);
        let pd0: [u64; 2] = read_obj(&mem, PD_START);
        assert_eq!(pd0, [0x83, 0x20_0083]);
        // Last 2 MiB page of the 4th GiB.
        let last: u64 = read_obj(&mem, PD_START + 4 * 0x1000 - 8);
        assert_eq!(last, 0xffe0_0083);
    }

    #[test]
    fn protected_mode_is_flat_without_paging() {
        let mem = guest_mem(16 << 20);
        let mut sregs = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        setup_cpu_mode(&mem, CpuMode::Protected32, &BootData::default(), &mut sregs).unwrap();
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit, sregs.cs.base),
            (1, 0, 0xffff_ffff, 0)
        );
        assert_eq!((sregs.es.limit, sregs.es.db), (0xffff_ffff, 1));
        assert_eq!(
            (sregs.tr.selector, sregs.tr.limit, sregs.tr.type_),
            (0x20, 0x67, 0xb)
        );
        let gdt: [u64; 5] = read_obj(&mem, GDT_START);
        assert_eq!(gdt[2], 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn too_little_memory_is_an_error() {
        let mem = guest_mem(0x1000);
        let mut sregs = kvm_sregs::default();
        let err =
            setup_cpu_mode(&mem, CpuMode::Long64, &BootData::default(), &mut sregs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "writing the PML4 to guest memory at 0x9000"
        );
    }
}

/// CR0 after RESET: CD, NW and ET set (Intel SDM vol. 3, table 10-1).
const RESET_CR0: u64 = 0x6000_0010;
/// The reset vector's code segment: selector F000 with base FFFF0000 (SDM vol. 3, 10.1.4).
const RESET_CS_SELECTOR: u16 = 0xf000;
const RESET_CS_BASE: u64 = 0xffff_0000;
/// IP of the first instruction fetched after RESET: FFFF0000 + FFF0 = FFFFFFF0.
pub const RESET_IP: u64 = 0xfff0;

/// A real-mode segment as RESET leaves it: present, accessed, limit FFFF (SDM vol. 3, table 10-1).
fn reset_segment(selector: u16, base: u64, type_: u8, s: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        s,
        ..Default::default()
    }
}

/// Sets `sregs` to the architectural state after RESET, as firmware expects it: real mode, CS
/// at the reset vector, caches off, paging and long mode off. `apic_base` is kept (the caller
/// decides the BSP bit); the interrupt bitmap is cleared.
pub fn set_reset_state(sregs: &mut kvm_sregs) {
    // Code: execute/read, accessed (type 0xb); data: read/write, accessed (type 3).
    sregs.cs = reset_segment(RESET_CS_SELECTOR, RESET_CS_BASE, 0xb, 1);
    let data = reset_segment(0, 0, 3, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // LDTR: an LDT descriptor (type 2); TR: a busy 16-bit TSS (type 3); both system segments.
    sregs.ldt = reset_segment(0, 0, 2, 0);
    sregs.tr = reset_segment(0, 0, 3, 0);
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xffff;
    sregs.cr0 = RESET_CR0;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.cr8 = 0;
    sregs.efer = 0;
    sregs.interrupt_bitmap = [0; 4];
}

#[cfg(test)]
mod reset_tests {
    use super::*;

    #[test]
    fn reset_state_fetches_from_the_reset_vector() {
        let mut s = kvm_sregs {
            cr0: 0x8000_0011,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        };
        set_reset_state(&mut s);
        assert_eq!(s.cs.base + RESET_IP, 0xffff_fff0);
        assert_eq!((s.cs.selector, s.cs.limit), (0xf000, 0xffff));
        assert_eq!(s.cr0 & 1, 0, "real mode");
        assert_eq!(s.efer, 0);
        assert_eq!(s.ss.type_, 3);
    }
}
