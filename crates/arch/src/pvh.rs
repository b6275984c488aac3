//! Xen PVH direct boot (x86/HVM direct boot ABI, Xen docs/misc/pvh.pandoc and
//! public/arch-x86/hvm/start_info.h): segments at their physical addresses, 32-bit protected
//! mode with paging off, EBX = `hvm_start_info` (version 1, with the e820 memory map).
//! Segments linked below 1 MiB win: rvmm's boot data moves out of their way (`BootData::place`).

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams as ConfiguratorParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::elf::ElfImage;
use crate::layout::{
    e820_entries, low_ram_end, BootData, BOOT_TABLES_END, BOOT_TABLES_START, CMDLINE_MAX,
};
use crate::{
    place_high, write_cmdline, write_guest, BootEntry, BootParams, BootProtocol, CpuMode,
    KernelImage, LoadError,
};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// start_info version 1 adds the memory map.
const START_INFO_VERSION: u32 = 1;
/// The memory map goes first in the boot tables, the module list this far after it.
const PVH_MODLIST_OFFSET: u64 = 0x400;

/// Loads a PVH ELF (ELF32 or ELF64), its modules and `hvm_start_info`.
pub fn load<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    image: &ElfImage,
    entry: u64,
    params: &BootParams,
) -> Result<BootEntry, LoadError> {
    let kernel_end = image
        .load(mem, kernel.bytes, params.mem_size, true)
        .map_err(|reason| LoadError::Elf {
            name: kernel.name.to_string(),
            reason,
        })?;
    let data = BootData::place(&image.segment_ranges(), params.mem_size).map_err(|reason| {
        LoadError::NoRoomForBootData {
            name: kernel.name.to_string(),
            reason,
        }
    })?;
    write_cmdline(mem, &data, params.cmdline, CMDLINE_MAX - 1)?;
    let memmap_start = data.tables();
    let modlist_start = data.tables() + PVH_MODLIST_OFFSET;

    let need = PVH_MODLIST_OFFSET
        + (params.initrds.len() * std::mem::size_of::<hvm_modlist_entry>()) as u64;
    if need > BOOT_TABLES_END - BOOT_TABLES_START {
        return Err(LoadError::BootTablesFull {
            need,
            have: BOOT_TABLES_END - BOOT_TABLES_START,
        });
    }
    let addrs = place_high(
        params.initrds,
        low_ram_end(params.mem_size),
        kernel_end.max(data.end()),
        params.mem_size,
    )?;
    let mut modules = Vec::with_capacity(addrs.len());
    for (initrd, &addr) in params.initrds.iter().zip(&addrs) {
        write_guest(mem, "PVH module", addr, initrd.bytes)?;
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size: initrd.bytes.len() as u64,
            ..Default::default()
        });
    }

    let memmap: Vec<hvm_memmap_table_entry> = e820_entries(params.mem_size)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { modlist_start },
        cmdline_paddr: data.cmdline(),
        memmap_paddr: memmap_start,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut boot = ConfiguratorParams::new(&start_info, GuestAddress(data.info()));
    boot.set_sections(&memmap, GuestAddress(memmap_start));
    if !modules.is_empty() {
        boot.set_modules(&modules, GuestAddress(modlist_start));
    }
    PvhBootConfigurator::write_bootparams::<M>(&boot, mem).map_err(|source| {
        LoadError::BootConfigurator {
            what: "PVH start info",
            source,
        }
    })?;

    Ok(BootEntry {
        protocol: BootProtocol::Pvh,
        mode: CpuMode::Protected32,
        rip: entry,
        rsp: data.stack_pointer(),
        rax: 0,
        rbx: data.info(),
        rsi: 0,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::{build_elf, note, Seg};
    use crate::layout::{CMDLINE_START, PAGE_SIZE, PVH_INFO_START};
    use crate::load_kernel;
    use crate::test_utils::{guest_mem, read_cstr, read_obj};

    #[test]
    fn pvh_linked_at_0x8000_gets_its_boot_data_moved() {
        let mem_size = 32 << 20;
        let mem = guest_mem(mem_size);
        let notes = note(b"Xen\0", 18, &0x8000u32.to_le_bytes());
        let mut seg = Seg::at(0x8000, vec![0xf4; 0x80]);
        seg.memsz = 0x2000;
        let img = build_elf(false, 0x8000, &[seg], Some(&notes));
        let m = vec![3u8; 0x100];
        let initrds = [KernelImage {
            name: "m",
            bytes: &m,
        }];
        let params = BootParams {
            initrds: &initrds,
            cmdline: b"low",
            mem_size,
        };
        let kernel = KernelImage {
            name: "low.elf",
            bytes: &img,
        };
        let entry = load_kernel(&mem, &kernel, &params).unwrap();
        let data = entry.data;
        assert_eq!(data.base, 0xa000);
        assert_eq!((entry.rbx, entry.rsp), (data.info(), data.stack_pointer()));
        let code: [u8; 4] = read_obj(&mem, 0x8000);
        assert_eq!(code, [0xf4; 4]);
        let si: hvm_start_info = read_obj(&mem, entry.rbx);
        assert_eq!(si.magic, XEN_HVM_START_MAGIC);
        assert_eq!(read_cstr(&mem, si.cmdline_paddr), "low");
        let module: hvm_modlist_entry = read_obj(&mem, si.modlist_paddr);
        assert_eq!(module.size, 0x100);
        assert!(module.paddr >= data.end());
    }

    #[test]
    fn loads_elf32_and_elf64_pvh_with_modules() {
        for class64 in [false, true] {
            let mem_size = 32 << 20;
            let mem = guest_mem(mem_size);
            let desc: Vec<u8> = if class64 {
                0x100040u64.to_le_bytes().to_vec()
            } else {
                0x100040u32.to_le_bytes().to_vec()
            };
            let notes = note(b"Xen\0", 18, &desc);
            let mut seg = Seg::at(0x100000, vec![0xf4; 0x80]);
            seg.memsz = 0x3000;
            let img = build_elf(class64, 0x100000, &[seg], Some(&notes));
            let (m1, m2) = (vec![1u8; 0x1234], vec![2u8; 0x2000]);
            let initrds = [
                KernelImage {
                    name: "m1",
                    bytes: &m1,
                },
                KernelImage {
                    name: "m2",
                    bytes: &m2,
                },
            ];
            let params = BootParams {
                initrds: &initrds,
                cmdline: b"console=hvc0",
                mem_size,
            };
            let entry = load_kernel(
                &mem,
                &KernelImage {
                    name: "pvh.elf",
                    bytes: &img,
                },
                &params,
            )
            .unwrap();
            assert_eq!(entry.protocol, BootProtocol::Pvh);
            assert_eq!(entry.mode, CpuMode::Protected32);
            assert_eq!(entry.rip, 0x100040);
            assert_eq!(entry.rbx, PVH_INFO_START);

            let si: hvm_start_info = read_obj(&mem, PVH_INFO_START);
            assert_eq!(si.magic, 0x336ec578);
            assert_eq!(si.version, 1);
            assert_eq!(si.nr_modules, 2);
            assert_eq!(si.cmdline_paddr, CMDLINE_START);
            assert_eq!(read_cstr(&mem, CMDLINE_START), "console=hvc0");
            assert_eq!(si.memmap_entries, 3);
            let mm: Vec<hvm_memmap_table_entry> = (0..3)
                .map(|i| read_obj(&mem, si.memmap_paddr + i * 24))
                .collect();
            assert_eq!((mm[0].addr, mm[0].size, mm[0].type_), (0, 0x9fc00, 1));
            assert_eq!((mm[1].addr, mm[1].type_), (0x9fc00, 2));
            assert_eq!((mm[2].addr, mm[2].size), (0x100000, mem_size - 0x100000));
            let mods: Vec<hvm_modlist_entry> = (0..2)
                .map(|i| read_obj(&mem, si.modlist_paddr + i * 32))
                .collect();
            assert_eq!(mods[0].paddr, (mem_size - 0x1234) & !(PAGE_SIZE - 1));
            assert_eq!(mods[0].size, 0x1234);
            assert_eq!(mods[1].paddr, mods[0].paddr - 0x2000);
            assert_eq!(mods[1].size, 0x2000);
            let got: [u8; 4] = read_obj(&mem, mods[1].paddr);
            assert_eq!(got, [2; 4]);
        }
    }

    #[test]
    fn modules_that_do_not_fit_are_reported() {
        let mem_size = 4 << 20;
        let mem = guest_mem(mem_size);
        let notes = note(b"Xen\0", 18, &0x100000u32.to_le_bytes());
        let img = build_elf(
            false,
            0x100000,
            &[Seg::at(0x100000, vec![0; 16])],
            Some(&notes),
        );
        let big = vec![0u8; 4 << 20];
        let initrds = [KernelImage {
            name: "big.img",
            bytes: &big,
        }];
        let params = BootParams {
            initrds: &initrds,
            cmdline: b"",
            mem_size,
        };
        let err = load_kernel(
            &mem,
            &KernelImage {
                name: "pvh.elf",
                bytes: &img,
            },
            &params,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("big.img: 4194304 bytes do not fit in RAM"),
            "{err}"
        );
    }
}
