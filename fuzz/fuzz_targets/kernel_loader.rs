//! Kernel images (-kernel), with an -initrd and -append: bzImage (rvmm unpacking the payload or
//! the guest doing it), ELF64 vmlinux, PVH ELF32/64 and multiboot (ELF or a.out kludge), loaded
//! into a small guest memory laid out as the VMM lays it out.
//!
//! Input: flags (bit 0: the guest decompresses a bzImage; bit 1: an initrd follows; bit 2: a
//! command line follows; bits 3-4: RAM size), [initrd length u16, initrd], [cmdline length u8,
//! cmdline], then the kernel image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_arch::{guest_memory_regions, BootParams, BzImageDecompress, KernelImage};
use rvmm_fuzz::Reader;
use std::sync::OnceLock;
use vm_memory::GuestMemoryMmap;

const MIB: u64 = 1 << 20;
/// RAM sizes to load into; the memories are made once and reused (loaders only write).
const RAM: [u64; 4] = [2 * MIB, 16 * MIB, 64 * MIB, 130 * MIB];

fn memory(i: usize) -> &'static GuestMemoryMmap {
    static MEMS: [OnceLock<GuestMemoryMmap>; 4] = [const { OnceLock::new() }; 4];
    MEMS[i].get_or_init(|| {
        GuestMemoryMmap::from_ranges(&guest_memory_regions(RAM[i])).expect("guest memory")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let decompress = if flags & 1 != 0 {
        BzImageDecompress::Guest
    } else {
        BzImageDecompress::Host
    };
    let initrd = if flags & 2 != 0 {
        let len = usize::from(r.u16());
        Some(r.take(len))
    } else {
        None
    };
    let cmdline = if flags & 4 != 0 {
        let len = usize::from(r.u8());
        r.take(len)
    } else {
        &[]
    };
    let ram = usize::from((flags >> 3) & 3);
    let kernel = KernelImage {
        name: "kernel",
        bytes: r.rest(),
    };
    let initrds: Vec<KernelImage> = initrd
        .map(|bytes| KernelImage {
            name: "initrd",
            bytes,
        })
        .into_iter()
        .collect();
    let params = BootParams {
        initrds: &initrds,
        cmdline,
        mem_size: RAM[ram],
    };
    let _ = rvmm_arch::load_kernel_with(memory(ram), &kernel, &params, decompress);
});
