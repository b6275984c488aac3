use super::*;
use crate::elf::tests::{build_elf, Seg};
use crate::layout::{CMDLINE_START, MULTIBOOT_INFO_START};
use crate::load_kernel;
use crate::test_utils::{guest_mem, read_cstr, read_obj};

/// A multiboot header with `flags`; with the a.out kludge the address fields follow.
pub(crate) fn header(flags: u32, addrs: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&MULTIBOOT_HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    let checksum = 0u32
        .wrapping_sub(MULTIBOOT_HEADER_MAGIC)
        .wrapping_sub(flags);
    h.extend_from_slice(&checksum.to_le_bytes());
    if let Some(a) = addrs {
        for v in a {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

/// A multiboot ELF whose only segment at 1 MiB starts with the header.
pub(crate) fn multiboot_elf(class64: bool, flags: u32) -> Vec<u8> {
    let mut text = header(flags, None);
    text.extend_from_slice(&[0xf4; 0x40]);
    let mut seg = Seg::at(0x100000, text);
    seg.memsz = 0x1800;
    build_elf(class64, 0x10000c, &[seg], None)
}

fn info(mem: &vm_memory::GuestMemoryMmap, index: u64) -> u32 {
    read_obj(mem, MULTIBOOT_INFO_START + 4 * index)
}

#[test]
fn loads_multiboot_elf_with_modules() {
    for class64 in [false, true] {
        let mem_size = 32 << 20;
        let mem = guest_mem(mem_size);
        let img = multiboot_elf(class64, 0x3);
        let (m1, m2) = (vec![0x11u8; 0x1001], vec![0x22u8; 10]);
        let initrds = [
            KernelImage {
                name: "mod1.bin",
                bytes: &m1,
            },
            KernelImage {
                name: "dir/mod2 arg",
                bytes: &m2,
            },
        ];
        let params = BootParams {
            initrds: &initrds,
            cmdline: b"verbose",
            mem_size,
        };
        let entry = load_kernel(
            &mem,
            &KernelImage {
                name: "kernel.elf",
                bytes: &img,
            },
            &params,
        )
        .unwrap();
        assert_eq!(entry.protocol, BootProtocol::Multiboot);
        assert_eq!(entry.mode, CpuMode::Protected32);
        assert_eq!(entry.rip, 0x10000c);
        assert_eq!(entry.rax, 0x2bad_b002);
        assert_eq!(entry.rbx, MULTIBOOT_INFO_START);

        assert_eq!(info(&mem, 0), 0x24f);
        assert_eq!(info(&mem, 1), 639);
        assert_eq!(info(&mem, 2), ((mem_size - 0x100000) / 1024) as u32);
        assert_eq!(
            read_cstr(&mem, u64::from(info(&mem, 4))),
            "kernel.elf verbose"
        );
        assert_eq!(info(&mem, 5), 2);
        let mods = u64::from(info(&mem, 6));
        let m: [u32; 8] = read_obj(&mem, mods);
        // Kernel ends at 0x101800: modules are page aligned after it.
        assert_eq!((m[0], m[1]), (0x102000, 0x103001));
        assert_eq!((m[4], m[5]), (0x104000, 0x10400a));
        assert_eq!((m[3], m[7]), (0, 0));
        assert_eq!(read_cstr(&mem, u64::from(m[2])), "mod1.bin");
        assert_eq!(read_cstr(&mem, u64::from(m[6])), "dir/mod2 arg");
        let data: [u8; 4] = read_obj(&mem, 0x104000);
        assert_eq!(data, [0x22; 4]);

        // mmap: three 24-byte entries with size 20.
        assert_eq!(info(&mem, 11), 72);
        let mmap = u64::from(info(&mem, 12));
        let size: u32 = read_obj(&mem, mmap);
        let base: u64 = read_obj(&mem, mmap + 24 + 4);
        let len: u64 = read_obj(&mem, mmap + 24 + 12);
        let kind: u32 = read_obj(&mem, mmap + 24 + 20);
        assert_eq!((size, base, len, kind), (20, 0x9fc00, 0x60400, 2));
        let kind: u32 = read_obj(&mem, mmap + 48 + 20);
        assert_eq!(kind, 1);
        assert_eq!(read_cstr(&mem, u64::from(info(&mem, 16))), "rvmm");
        // The bss after the segment's file bytes is zero.
        let bss: [u8; 8] = read_obj(&mem, 0x101000);
        assert_eq!(bss, [0; 8]);
    }
}

#[test]
fn loads_aout_kludge_and_zeroes_bss() {
    let mem_size = 16 << 20;
    let mem = guest_mem(mem_size);
    // File: 0x40 bytes of code, then the header at file offset 0x40 (address 0x200040).
    let mut img = vec![0x90u8; 0x40];
    img.extend(header(
        1 << 16,
        Some([0x200040, 0x200000, 0, 0x203000, 0x200010]),
    ));
    img.extend_from_slice(&[0xcc; 0x100]);
    vm_memory::Bytes::write_slice(&mem, &[0x55; 16], vm_memory::GuestAddress(0x202000)).unwrap();
    let m = vec![9u8; 3];
    let initrds = [KernelImage {
        name: "m",
        bytes: &m,
    }];
    let params = BootParams {
        initrds: &initrds,
        cmdline: b"",
        mem_size,
    };
    let entry = load_kernel(
        &mem,
        &KernelImage {
            name: "kludge.bin",
            bytes: &img,
        },
        &params,
    )
    .unwrap();
    assert_eq!(entry.rip, 0x200010);
    assert_eq!(entry.rax, 0x2bad_b002);
    let first: [u8; 4] = read_obj(&mem, 0x200000);
    assert_eq!(first, [0x90; 4]);
    let magic: u32 = read_obj(&mem, 0x200040);
    assert_eq!(magic, MULTIBOOT_HEADER_MAGIC);
    let bss: [u8; 16] = read_obj(&mem, 0x202000);
    assert_eq!(bss, [0; 16]);
    assert_eq!(read_cstr(&mem, CMDLINE_START), "kludge.bin");
    assert_eq!(entry.data, crate::layout::BootData::default());
    let m: [u32; 2] = read_obj(&mem, u64::from(info(&mem, 6)));
    assert_eq!(m, [0x203000, 0x203003]);
}

/// Loads `img` in `mem_size` bytes of RAM with one module and `-append lo`.
fn load_low(img: &[u8], mem_size: u64) -> (vm_memory::GuestMemoryMmap, BootEntry) {
    let mem = guest_mem(mem_size);
    let m = vec![7u8; 5];
    let initrds = [KernelImage {
        name: "mod",
        bytes: &m,
    }];
    let params = BootParams {
        initrds: &initrds,
        cmdline: b"lo",
        mem_size,
    };
    let kernel = KernelImage {
        name: "low",
        bytes: img,
    };
    let entry = load_kernel(&mem, &kernel, &params).unwrap();
    (mem, entry)
}

#[test]
fn low_images_move_the_boot_data() {
    for (addr, memsz) in [(0x8000u32, 0x1800u32), (0x10000, 0x3000), (0x90000, 0x2000)] {
        // ELF: one segment at `addr` starting with the header.
        let mut text = header(0, None);
        text.extend_from_slice(&[0xf4; 0x40]);
        let mut seg = Seg::at(u64::from(addr), text);
        seg.memsz = u64::from(memsz);
        let elf = build_elf(false, u64::from(addr) + 12, &[seg], None);
        // a.out kludge: the header at file offset 0 loaded at `addr`.
        let mut kludge = header(1 << 16, Some([addr, addr, 0, addr + memsz, addr + 0x30]));
        kludge.extend_from_slice(&[0xf4; 0x40]);
        for img in [elf, kludge] {
            let (mem, entry) = load_low(&img, 64 << 20);
            let data = entry.data;
            let (start, end) = (u64::from(addr), u64::from(addr + memsz));
            // Nothing of rvmm's block lies in the image.
            assert!(
                data.end() <= start || data.base >= end,
                "{addr:#x}: {data:?}"
            );
            assert_eq!(entry.rbx, data.info());
            assert_eq!(entry.rsp, data.stack_pointer());
            let magic: u32 = read_obj(&mem, start);
            assert_eq!(magic, MULTIBOOT_HEADER_MAGIC);
            let info: [u32; 5] = read_obj(&mem, entry.rbx);
            assert_eq!(read_cstr(&mem, u64::from(info[4])), "low lo");
            assert_eq!((info[1], info[2]), (639, 63 * 1024));
            let module: [u32; 2] = read_obj(&mem, u64::from(read_obj::<u32>(&mem, entry.rbx + 24)));
            assert_eq!(module[1] - module[0], 5);
            assert!(u64::from(module[0]) >= 0x10_0000);
            if addr == 0x90000 {
                assert_eq!(data.base, 0, "the default map is free below 0x90000");
            } else {
                assert_ne!(data.base, 0);
            }
        }
    }
}

#[test]
fn rejects_bad_multiboot_headers() {
    let mem = guest_mem(16 << 20);
    let params = BootParams {
        initrds: &[],
        cmdline: b"",
        mem_size: 16 << 20,
    };
    let load = |img: &[u8]| {
        load_kernel(
            &mem,
            &KernelImage {
                name: "mb",
                bytes: img,
            },
            &params,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        load(&multiboot_elf(false, 0x8)),
        "mb: multiboot header requires unsupported features (flags 0x8)"
    );
    // Video requests are ignored, like QEMU.
    let img = multiboot_elf(false, 0x4);
    load_kernel(
        &mem,
        &KernelImage {
            name: "mb",
            bytes: &img,
        },
        &params,
    )
    .unwrap();

    let mut img = vec![0u8; 8];
    img.extend(header(1 << 16, Some([0x200000, 0x200010, 0, 0, 0x200000])));
    assert_eq!(
        load(&img),
        "mb: multiboot load_addr 0x200010 is above header_addr 0x200000"
    );
    let mut img = vec![0u8; 8];
    img.extend(header(1 << 16, Some([0x200100, 0x200000, 0, 0, 0x200000])));
    assert!(load(&img).contains("larger than the header's file offset 0x8"));
    let mut img = header(1 << 16, Some([0x200000, 0x200000, 0x300000, 0, 0x200000]));
    img.extend_from_slice(&[0; 16]);
    assert!(load(&img).starts_with("mb: truncated: multiboot load_end_addr"));
    let img = header(1 << 16, Some([0x200000, 0x200000, 0, 0x100, 0x200000]));
    assert!(load(&img).contains("bss_end_addr 0x100 is below load_end_addr"));
    // Fixed things win over the image: the BIOS area, the MMIO hole, RAM that does not exist.
    let img = header(1 << 16, Some([0x9f000, 0x9f000, 0, 0xa0000, 0x9f000]));
    assert_eq!(
        load(&img),
        "mb: segment at 0x9f000 + 0x1000 overlaps the BIOS area 0x9fc00-0x100000 (EBDA, ACPI and MP tables)"
    );
    let img = header(
        1 << 16,
        Some([0xbfff_0000, 0xbfff_0000, 0, 0xc001_0000, 0xbfff_0000]),
    );
    assert_eq!(
        load(&img),
        "mb: segment at 0xbfff0000 + 0x20000 overlaps the MMIO hole 0xc0000000-0x100000000"
    );
    let img = header(
        1 << 16,
        Some([0x100_0000, 0x100_0000, 0, 0x200_0000, 0x100_0000]),
    );
    assert_eq!(
        load(&img),
        "mb: segment at 0x1000000 + 0x1000000 does not fit in 16 MiB of RAM"
    );
    let mut img = header(1 << 16, None);
    img.extend_from_slice(&[0; 8]);
    assert!(load(&img).starts_with("mb: truncated: the multiboot header at 0x0"));
    let mut img = header(0, None);
    img.extend_from_slice(&[0; 64]);
    assert_eq!(
        load(&img),
        "mb: multiboot header has no address fields (flag bit 16) and the file is not ELF"
    );
}

#[test]
fn header_search_needs_alignment_and_checksum() {
    let mut img = vec![0u8; 2];
    img.extend(header(0, None));
    assert_eq!(find_header(&img), None);
    let mut img = vec![0u8; 8188];
    img.extend(header(0, None));
    assert_eq!(find_header(&img), None, "beyond the first 8 KiB");
    let mut img = vec![0u8; 8176];
    img.extend(header(0, None));
    assert_eq!(find_header(&img), Some(8176));
    let mut bad = header(0, None);
    bad[8] ^= 1;
    assert_eq!(find_header(&bad), None);
}
