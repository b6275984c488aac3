//! Uncompressed Linux (vmlinux, ELF64 without a PVH note) through the 64-bit boot protocol:
//! segments at their physical addresses, a zero page with a minimal setup header, 64-bit
//! entry at the physical `e_entry` with RSI = zero page (Documentation/x86/boot.rst).

use linux_loader::loader::bootparam::setup_header;

use crate::bzimage::{load_initrd, write_zero_page, BOOT_FLAG_MAGIC};
use crate::elf::ElfImage;
use crate::layout::{low_ram_end, BootData, CMDLINE_MAX};
use crate::{write_cmdline, BootEntry, BootParams, BootProtocol, CpuMode, KernelImage, LoadError};

/// Protocol version rvmm claims in the synthetic setup header: 2.12, the 64-bit protocol.
const SYNTHETIC_PROTOCOL: u16 = 0x020c;
/// x86_64 `CONFIG_PHYSICAL_ALIGN` default, reported as `kernel_alignment`.
const KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// `loadflags` LOADED_HIGH: the kernel sits above 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// Linux x86 `COMMAND_LINE_SIZE` is 2048 with the NUL.
const LINUX_CMDLINE_MAX: usize = 2047;

/// Loads a vmlinux ELF64, its first initrd and the zero page.
pub fn load<M: vm_memory::GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    image: &ElfImage,
    params: &BootParams,
) -> Result<BootEntry, LoadError> {
    let err = |reason| LoadError::Elf {
        name: kernel.name.to_string(),
        reason,
    };
    let entry = image.physical_entry().map_err(err)?;
    let kernel_end = image
        .load(mem, kernel.bytes, params.mem_size, false)
        .map_err(err)?;
    let data = BootData::place(&image.segment_ranges(), params.mem_size).map_err(|reason| {
        LoadError::NoRoomForBootData {
            name: kernel.name.to_string(),
            reason,
        }
    })?;
    write_cmdline(
        mem,
        &data,
        params.cmdline,
        LINUX_CMDLINE_MAX.min(CMDLINE_MAX - 1),
    )?;
    let initrd = load_initrd(
        mem,
        params,
        low_ram_end(params.mem_size),
        kernel_end.max(data.end()),
    )?;
    let hdr = setup_header {
        boot_flag: BOOT_FLAG_MAGIC,
        header: 0x5372_6448,
        version: SYNTHETIC_PROTOCOL,
        loadflags: LOADED_HIGH,
        kernel_alignment: KERNEL_ALIGNMENT,
        cmdline_size: LINUX_CMDLINE_MAX as u32,
        ..Default::default()
    };
    write_zero_page(mem, &data, hdr, params, initrd)?;
    Ok(BootEntry {
        protocol: BootProtocol::Elf64Linux,
        mode: CpuMode::Long64,
        rip: entry,
        rsp: data.stack_pointer(),
        rax: 0,
        rbx: 0,
        rsi: data.zero_page(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use linux_loader::loader::bootparam::boot_params;

    use crate::elf::tests::{build_elf, Seg};
    use crate::layout::{CMDLINE_START, ZERO_PAGE_START};
    use crate::test_utils::{guest_mem, read_cstr, read_obj};
    use crate::{load_kernel, BootParams, BootProtocol, CpuMode, KernelImage};

    #[test]
    fn loads_vmlinux_with_virtual_segments() {
        let mem_size = 64 << 20;
        let mem = guest_mem(mem_size);
        let mut text = Seg::at(0x100_0000, vec![0xf4; 0x300]);
        text.vaddr = 0xffff_ffff_8100_0000;
        text.memsz = 0x2000; // bss must be zeroed
        let img = build_elf(true, 0x100_0010, &[text], None);
        // Dirty the bss first to see it cleared.
        vm_memory::Bytes::write_slice(&mem, &[0x55; 16], vm_memory::GuestAddress(0x100_1000))
            .unwrap();
        let initrd = vec![7u8; 0x1800];
        let initrds = [KernelImage {
            name: "rd",
            bytes: &initrd,
        }];
        let params = BootParams {
            initrds: &initrds,
            cmdline: b"root=/dev/vda",
            mem_size,
        };
        let entry = load_kernel(
            &mem,
            &KernelImage {
                name: "vmlinux",
                bytes: &img,
            },
            &params,
        )
        .unwrap();
        assert_eq!(entry.protocol, BootProtocol::Elf64Linux);
        assert_eq!(entry.mode, CpuMode::Long64);
        assert_eq!(entry.rip, 0x100_0010);
        assert_eq!(entry.rsi, ZERO_PAGE_START);
        let bss: [u8; 16] = read_obj(&mem, 0x100_1000);
        assert_eq!(bss, [0; 16]);
        let zp: boot_params = read_obj(&mem, ZERO_PAGE_START);
        let hdr = zp.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.version }, 0x020c);
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.ramdisk_image }, (mem_size - 0x2000) as u32);
        assert_eq!({ hdr.ramdisk_size }, 0x1800);
        assert_eq!(zp.e820_entries, 3);
        assert_eq!(read_cstr(&mem, CMDLINE_START), "root=/dev/vda");
    }

    #[test]
    fn segment_outside_ram_is_reported() {
        let mem = guest_mem(256 << 20);
        let mut seg = Seg::at(0x100_0000, vec![0; 16]);
        seg.memsz = 0x2000_0000;
        let img = build_elf(true, 0x100_0000, &[seg], None);
        let params = BootParams {
            initrds: &[],
            cmdline: b"",
            mem_size: 256 << 20,
        };
        let err = load_kernel(
            &mem,
            &KernelImage {
                name: "vmlinux",
                bytes: &img,
            },
            &params,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "vmlinux: segment at 0x1000000 + 0x20000000 does not fit in 256 MiB of RAM"
        );
    }

    #[test]
    fn vmlinux_linked_at_0x8000_gets_its_boot_data_moved() {
        let mem = guest_mem(256 << 20);
        let mut seg = Seg::at(0x8000, vec![0xf4; 16]);
        seg.memsz = 0x3000;
        let img = build_elf(true, 0x8000, &[seg], None);
        let params = BootParams {
            initrds: &[],
            cmdline: b"low",
            mem_size: 256 << 20,
        };
        let kernel = KernelImage {
            name: "vmlinux",
            bytes: &img,
        };
        let entry = load_kernel(&mem, &kernel, &params).unwrap();
        let data = entry.data;
        assert_eq!(data.base, 0xb000);
        assert_eq!(
            (entry.rsi, entry.rsp),
            (data.zero_page(), data.stack_pointer())
        );
        let zp: boot_params = read_obj(&mem, entry.rsi);
        assert_eq!({ zp.hdr.cmd_line_ptr }, data.cmdline() as u32);
        assert_eq!(read_cstr(&mem, data.cmdline()), "low");
        let code: [u8; 4] = read_obj(&mem, 0x8000);
        assert_eq!(code, [0xf4; 4]);
    }
}
