//! Format detection tests across the boot protocols, and a fuzz-like test.

use crate::test_utils::guest_mem;
use vm_memory::GuestMemoryMmap;

use crate::bzimage::tests::build_bzimage;
use crate::elf::tests::{build_elf, note, Seg};
use crate::multiboot::tests::{header, multiboot_elf};
use crate::{load_kernel, BootParams, BootProtocol, KernelImage};

fn pvh_elf32() -> Vec<u8> {
    let n = note(b"Xen\0", 18, &0x100000u32.to_le_bytes());
    build_elf(
        false,
        0x100000,
        &[Seg::at(0x100000, vec![0xf4; 32])],
        Some(&n),
    )
}

fn vmlinux() -> Vec<u8> {
    build_elf(
        true,
        0x100_0000,
        &[Seg::at(0x100_0000, vec![0xf4; 32])],
        None,
    )
}

fn aout_kludge() -> Vec<u8> {
    let mut img = header(1 << 16, Some([0x100000, 0x100000, 0, 0x101000, 0x100020]));
    img.extend_from_slice(&[0x90; 64]);
    img
}

fn load(
    mem: &GuestMemoryMmap,
    name: &str,
    bytes: &[u8],
) -> Result<crate::BootEntry, crate::LoadError> {
    let params = BootParams {
        initrds: &[],
        cmdline: b"",
        mem_size: 32 << 20,
    };
    load_kernel(mem, &KernelImage { name, bytes }, &params)
}

#[test]
fn detects_each_protocol() {
    let mem = guest_mem(32 << 20);
    let cases: [(Vec<u8>, BootProtocol); 6] = [
        (build_bzimage(0x020f, 1, &[0; 64]), BootProtocol::BzImage),
        (multiboot_elf(false, 0), BootProtocol::Multiboot),
        (aout_kludge(), BootProtocol::Multiboot),
        (pvh_elf32(), BootProtocol::Pvh),
        (vmlinux(), BootProtocol::Elf64Linux),
        // Multiboot comes before the PVH note, as in QEMU.
        (
            {
                let mut text = header(0, None);
                text.extend_from_slice(&[0; 16]);
                let n = note(b"Xen\0", 18, &0x100000u32.to_le_bytes());
                build_elf(false, 0x100000, &[Seg::at(0x100000, text)], Some(&n))
            },
            BootProtocol::Multiboot,
        ),
    ];
    for (img, protocol) in cases {
        assert_eq!(load(&mem, "k", &img).unwrap().protocol, protocol);
    }
}

#[test]
fn unbootable_bzimage_with_multiboot_header_falls_back_to_multiboot() {
    let mem = guest_mem(32 << 20);
    // No XLF_KERNEL_64, but a multiboot a.out kludge header in the setup code.
    let mut img = build_bzimage(0x020f, 0, &[0; 64]);
    let h = header(1 << 16, Some([0x100400, 0x100000, 0, 0, 0x100000]));
    img[0x400..0x400 + h.len()].copy_from_slice(&h);
    assert_eq!(
        load(&mem, "k", &img).unwrap().protocol,
        BootProtocol::Multiboot
    );
}

#[test]
fn unknown_and_empty_files_are_errors() {
    let mem = guest_mem(32 << 20);
    assert_eq!(
        load(&mem, "empty", &[]).unwrap_err().to_string(),
        "empty: empty file"
    );
    assert_eq!(
        load(&mem, "guest.elf", &[0x42; 4096])
            .unwrap_err()
            .to_string(),
        "guest.elf: not a multiboot, PVH ELF, bzImage or ELF64 kernel image"
    );
    let img = build_elf(false, 0x100000, &[Seg::at(0x100000, vec![0; 8])], None);
    assert!(load(&mem, "x.elf", &img)
        .unwrap_err()
        .to_string()
        .starts_with("x.elf: 32-bit ELF without a PVH note"));
    let img = vmlinux();
    assert_eq!(
        load(&mem, "guest.elf", &img[..64 + 10])
            .unwrap_err()
            .to_string(),
        "guest.elf: truncated: program header 0 lies past the end of the file"
    );
}

#[test]
fn filesz_over_memsz_is_an_error() {
    let mem = guest_mem(32 << 20);
    let mut seg = Seg::at(0x100_0000, vec![0; 64]);
    seg.memsz = 16;
    let img = build_elf(true, 0x100_0000, &[seg], None);
    assert_eq!(
        load(&mem, "v", &img).unwrap_err().to_string(),
        "v: segment 0 has p_filesz 0x40 larger than p_memsz 0x10"
    );
}

/// Small deterministic PRNG (xorshift64*), so the fuzz test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random, truncated and mutated versions of valid images of every format must give an
/// `Ok` or an error, never a panic.
#[test]
fn fuzz_like_inputs_never_panic() {
    let mem_size = 32 << 20;
    let mem = guest_mem(mem_size);
    let rd = vec![1u8; 100];
    let initrds = [
        KernelImage {
            name: "rd",
            bytes: &rd,
        },
        KernelImage {
            name: "rd2",
            bytes: &rd,
        },
    ];
    let params = BootParams {
        initrds: &initrds,
        cmdline: b"console=ttyS0",
        mem_size,
    };
    let (ok, err) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let run = |bytes: &[u8]| match load_kernel(
        &mem,
        &KernelImage {
            name: "fuzz",
            bytes,
        },
        &params,
    ) {
        Ok(_) => ok.set(ok.get() + 1),
        Err(_) => err.set(err.get() + 1),
    };
    let mut mb_with_note = header(0, None);
    mb_with_note.extend_from_slice(&[0; 16]);
    let seeds = [
        build_bzimage(0x020f, 1, &[0xf4; 256]),
        multiboot_elf(false, 0x3),
        multiboot_elf(true, 0x3),
        aout_kludge(),
        pvh_elf32(),
        vmlinux(),
        build_elf(
            true,
            0x100_0000,
            &[Seg::at(0x100_0000, vec![1; 8])],
            Some(&note(b"Xen\0", 18, &[0; 8])),
        ),
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for seed in &seeds {
        for len in 0..seed.len().min(1200) {
            run(&seed[..len]);
        }
        for _ in 0..1500 {
            let mut img = seed.clone();
            for _ in 0..1 + rng.below(4) {
                // Mostly hit the headers, sometimes anywhere.
                let span = if rng.below(4) == 0 {
                    img.len()
                } else {
                    img.len().min(0x280)
                };
                let pos = rng.below(span);
                img[pos] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => 0xff,
                    _ => img[pos] ^ (1 << rng.below(8)),
                };
            }
            run(&img);
            let cut = rng.below(img.len() + 1);
            run(&img[..cut]);
        }
    }
    for _ in 0..300 {
        let len = rng.below(9000);
        let mut img: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(4) {
            0 if len >= 4 => img[..4].copy_from_slice(b"\x7fELF"),
            1 if len >= 0x206 => img[0x202..0x206].copy_from_slice(b"HdrS"),
            2 if len >= 12 => {
                let h = header(rng.next() as u32, None);
                img[..12].copy_from_slice(&h);
            }
            _ => {}
        }
        run(&img);
    }
    // Both outcomes must have been exercised for the test to mean something.
    assert!(
        ok.get() > 1000 && err.get() > 1000,
        "ok {} err {}",
        ok.get(),
        err.get()
    );
}

#[test]
fn empty_initrds_load_everywhere() {
    let mem = guest_mem(32 << 20);
    let empty = [KernelImage {
        name: "empty.img",
        bytes: &[],
    }];
    let params = BootParams {
        initrds: &empty,
        cmdline: b"",
        mem_size: 32 << 20,
    };
    for img in [
        build_bzimage(0x020f, 1, &[0; 64]),
        multiboot_elf(false, 0),
        pvh_elf32(),
        vmlinux(),
    ] {
        load_kernel(
            &mem,
            &KernelImage {
                name: "k",
                bytes: &img,
            },
            &params,
        )
        .unwrap();
    }
}

#[test]
fn initrds_stay_below_the_mmio_gap() {
    use crate::layout::MMIO_GAP_START;
    let (a, b) = (vec![0u8; 0x1800], vec![0u8; 0x10]);
    let images = [
        KernelImage {
            name: "a",
            bytes: &a,
        },
        KernelImage {
            name: "b",
            bytes: &b,
        },
    ];
    let mem_size = 8 << 30;
    let addrs = crate::place_high(
        &images,
        crate::layout::low_ram_end(mem_size),
        0x200_0000,
        mem_size,
    )
    .unwrap();
    assert_eq!(
        addrs,
        vec![MMIO_GAP_START - 0x2000, MMIO_GAP_START - 0x3000]
    );
    let err = crate::place_high(&images, 0x200_1000, 0x200_0000, mem_size).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a: 6144 bytes do not fit in RAM between 0x2000000 and 0x2001000 (8192 MiB of RAM)"
    );
}
