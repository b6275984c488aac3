//! Linux bzImage through the 64-bit boot protocol (Documentation/x86/boot.rst), and the zero
//! page (`struct boot_params`, Documentation/x86/zero-page.rst) shared with vmlinux boot.
//!
//! The protected-mode kernel is always loaded at 1 MiB, like QEMU: the 64-bit entry of a
//! relocatable kernel moves itself to `pref_address` (aligned to `kernel_alignment`) before
//! decompressing, and a non-relocatable one decompresses to `pref_address` anyway, so the
//! load address does not matter to the kernel; rvmm only reserves `[pref_address,
//! pref_address + init_size)` so that the initrd is not placed where the kernel will unpack.

use std::io::Cursor;
use std::mem::size_of;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams as ConfiguratorParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend};

use crate::elf::{ElfError, ElfImage};
use crate::layout::{
    e820_entries, fmt_size, low_ram_end, BootData, BOOT_STACK_POINTER, CMDLINE_MAX, HIMEM_START,
    ZERO_PAGE_START,
};
use crate::payload::{Compression, PayloadError};
use crate::{
    place_high, write_cmdline, BootEntry, BootParams, BootProtocol, CpuMode, KernelImage, LoadError,
};

/// Offset of the setup header in the image and in the zero page.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// "HdrS" at 0x202.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// 2.12 is the first protocol with `xloadflags` and so the first with a 64-bit entry.
const MIN_PROTOCOL: u16 = 0x020c;
/// `loadflags` bit 0: protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 0x01;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 0x01;
/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Highest initrd address for protocols that do not state one (boot.rst, initrd_addr_max).
const DEFAULT_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// `boot_flag` magic.
pub(crate) const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// Offset of the 64-bit entry point from the protected-mode load address.
const ENTRY_64_OFFSET: u64 = 0x200;

/// Why a bzImage was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BzImageError {
    #[error("truncated: the setup header needs {need} bytes, the file has {len}")]
    TruncatedSetupHeader { need: usize, len: usize },
    #[error("boot protocol {major}.{minor:02} is older than 2.12, the first with a 64-bit entry point", major = .0 >> 8, minor = .0 & 0xff)]
    OldProtocol(u16),
    #[error("needs 64-bit boot protocol support (xloadflags)")]
    No64BitEntry,
    #[error("protected-mode kernel is not loaded high (loadflags LOADED_HIGH clear)")]
    NotLoadedHigh,
    #[error("truncated: {setup_size} bytes of setup code leave no protected-mode kernel in a {len}-byte file")]
    NoKernel { setup_size: usize, len: usize },
    #[error("kernel needs RAM up to {end:#x} ({what}), more than the {ram} of RAM below 3 GiB")]
    KernelTooBig {
        end: u64,
        what: &'static str,
        ram: String,
    },
    #[error("linux-loader could not load the protected-mode kernel")]
    Loader(#[source] linux_loader::loader::Error),
    #[error("unpacking the payload")]
    Payload(#[source] PayloadError),
    #[error("the unpacked payload is not a usable vmlinux")]
    UnpackedElf(#[source] ElfError),
}

/// Whether the file has the "HdrS" setup header magic at 0x202.
pub fn has_setup_header(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS".as_slice())
}

/// A validated bzImage setup header.
pub struct SetupHeader {
    /// The header as the kernel wrote it, with bytes past its end (0x202 + byte 0x201) zeroed.
    pub hdr: setup_header,
    /// Bytes of real-mode setup code before the protected-mode kernel.
    pub setup_size: usize,
}

impl SetupHeader {
    /// Reads and validates the setup header of a bzImage.
    pub fn parse(bytes: &[u8]) -> Result<Self, BzImageError> {
        let need = SETUP_HEADER_OFFSET + size_of::<setup_header>();
        let raw =
            bytes
                .get(SETUP_HEADER_OFFSET..need)
                .ok_or(BzImageError::TruncatedSetupHeader {
                    need,
                    len: bytes.len(),
                })?;
        // The header ends at 0x202 + the jump offset stored at 0x201 (boot.rst, 64-bit protocol).
        let header_end = (0x202 + usize::from(bytes[0x201])).clamp(0x206, need);
        let mut hdr = setup_header::default();
        let copy = header_end - SETUP_HEADER_OFFSET;
        hdr.as_mut_slice()[..copy].copy_from_slice(&raw[..copy]);
        let (magic, version, xloadflags) = (hdr.header, hdr.version, hdr.xloadflags);
        if magic != HDRS_MAGIC {
            return Err(BzImageError::TruncatedSetupHeader {
                need,
                len: bytes.len(),
            });
        }
        if version < MIN_PROTOCOL {
            return Err(BzImageError::OldProtocol(version));
        }
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BzImageError::No64BitEntry);
        }
        if hdr.loadflags & LOADED_HIGH == 0 {
            return Err(BzImageError::NotLoadedHigh);
        }
        // setup_sects == 0 means 4 (boot.rst note 1); the boot sector adds one more.
        let sects = match hdr.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let setup_size = (sects + 1) * 512;
        if setup_size >= bytes.len() {
            return Err(BzImageError::NoKernel {
                setup_size,
                len: bytes.len(),
            });
        }
        Ok(SetupHeader { hdr, setup_size })
    }
}

/// Loads a bzImage at 1 MiB, its first initrd high, and the zero page; 64-bit entry.
pub fn load<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    setup: &SetupHeader,
    params: &BootParams,
) -> Result<BootEntry, LoadError> {
    let err = |reason| LoadError::BzImage {
        name: kernel.name.to_string(),
        reason,
    };
    let ram_end = low_ram_end(params.mem_size);
    let too_big = |end, what| {
        err(BzImageError::KernelTooBig {
            end,
            what,
            ram: fmt_size(params.mem_size),
        })
    };
    let kernel_size = (kernel.bytes.len() - setup.setup_size) as u64;
    let load_end = HIMEM_START + kernel_size;
    if load_end > ram_end {
        return Err(too_big(load_end, "1 MiB + protected-mode kernel size"));
    }
    let (pref_address, init_size) = (setup.hdr.pref_address, setup.hdr.init_size);
    let unpack_end = pref_address.saturating_add(u64::from(init_size));
    if unpack_end > ram_end {
        return Err(too_big(unpack_end, "pref_address + init_size"));
    }

    BzImage::load(
        mem,
        Some(GuestAddress(HIMEM_START)),
        &mut Cursor::new(kernel.bytes),
        None,
    )
    .map_err(|e| err(BzImageError::Loader(e)))?;

    let mut hdr = setup.hdr;
    hdr.code32_start = HIMEM_START as u32;
    let max_cmdline = match hdr.cmdline_size {
        0 => CMDLINE_MAX - 1,
        n => n as usize,
    };
    write_cmdline(mem, &Default::default(), params.cmdline, max_cmdline)?;
    let initrd_max = match hdr.initrd_addr_max {
        0 => DEFAULT_INITRD_ADDR_MAX,
        n => n,
    };
    let top = ram_end.min(u64::from(initrd_max) + 1);
    let initrd = load_initrd(mem, params, top, load_end.max(unpack_end))?;
    write_zero_page(mem, &BootData::default(), hdr, params, initrd)?;

    Ok(BootEntry {
        protocol: BootProtocol::BzImage,
        mode: CpuMode::Long64,
        rip: HIMEM_START + ENTRY_64_OFFSET,
        rsp: BOOT_STACK_POINTER,
        rax: 0,
        rbx: 0,
        rsi: ZERO_PAGE_START,
        data: Default::default(),
    })
}

/// Unpacks the bzImage's compressed vmlinux in rvmm and loads it at its physical addresses, with
/// the first initrd and a zero page built from the bzImage's own setup header; 64-bit entry at
/// vmlinux's `startup_64` (boot.rst, "64-bit boot protocol": the same state the kernel's own
/// decompressor leaves). Skips the decompressor, which runs at CPL0 and so is emulated on some
/// hosts (docs/EMULATED-KVM.md). Returns `None`, having written nothing, when rvmm has no
/// decompressor for the payload's format: the kernel's own decompressor must do it.
pub fn load_unpacked<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &KernelImage,
    setup: &SetupHeader,
    params: &BootParams,
) -> Result<Option<(Compression, BootEntry)>, LoadError> {
    let err = |reason| LoadError::BzImage {
        name: kernel.name.to_string(),
        reason,
    };
    let hdr = setup.hdr;
    let protected = &kernel.bytes[setup.setup_size..];
    let payload = crate::payload::locate(
        protected,
        hdr.version,
        hdr.payload_offset,
        hdr.payload_length,
    )
    .map_err(|e| err(BzImageError::Payload(e)))?;
    let ram_end = low_ram_end(params.mem_size);
    let (format, elf) = match crate::payload::unpack(payload, ram_end) {
        Ok(v) => v,
        Err(PayloadError::Unsupported(_) | PayloadError::UnknownFormat(_)) => return Ok(None),
        Err(e) => return Err(err(BzImageError::Payload(e))),
    };
    let elf_err = |e| err(BzImageError::UnpackedElf(e));
    let image = ElfImage::parse(&elf).map_err(elf_err)?;
    let entry = image.physical_entry().map_err(elf_err)?;
    let kernel_end = image
        .load(mem, &elf, params.mem_size, false)
        .map_err(elf_err)?;
    let data = BootData::place(&image.segment_ranges(), params.mem_size).map_err(|reason| {
        LoadError::NoRoomForBootData {
            name: kernel.name.to_string(),
            reason,
        }
    })?;
    let max_cmdline = match hdr.cmdline_size {
        0 => CMDLINE_MAX - 1,
        n => n as usize,
    };
    write_cmdline(mem, &data, params.cmdline, max_cmdline)?;
    let initrd_max = match hdr.initrd_addr_max {
        0 => DEFAULT_INITRD_ADDR_MAX,
        n => n,
    };
    let top = ram_end.min(u64::from(initrd_max) + 1);
    let initrd = load_initrd(mem, params, top, kernel_end.max(data.end()))?;
    write_zero_page(mem, &data, hdr, params, initrd)?;
    Ok(Some((
        format,
        BootEntry {
            protocol: BootProtocol::BzImage,
            mode: CpuMode::Long64,
            rip: entry,
            rsp: data.stack_pointer(),
            rax: 0,
            rbx: 0,
            rsi: data.zero_page(),
            data,
        },
    )))
}

/// Places the first initrd page-aligned as high as possible below `top` and above `floor`, and
/// returns its (address, size). Linux takes one initrd; further ones are ignored.
pub(crate) fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    params: &BootParams,
    top: u64,
    floor: u64,
) -> Result<Option<(u64, u64)>, LoadError> {
    let Some(initrd) = params.initrds.first() else {
        return Ok(None);
    };
    let addr = place_high(std::slice::from_ref(initrd), top, floor, params.mem_size)?[0];
    crate::write_guest(mem, "initrd", addr, initrd.bytes)?;
    Ok(Some((addr, initrd.bytes.len() as u64)))
}

/// Fills the zero page around `hdr` (command line, initrd, e820) and writes it at
/// `data.zero_page()`.
pub(crate) fn write_zero_page<M: GuestMemoryBackend>(
    mem: &M,
    data: &BootData,
    hdr: setup_header,
    params: &BootParams,
    initrd: Option<(u64, u64)>,
) -> Result<(), LoadError> {
    let mut zp = boot_params {
        hdr,
        ..Default::default()
    };
    zp.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    zp.hdr.cmd_line_ptr = data.cmdline() as u32;
    zp.ext_cmd_line_ptr = 0;
    if let Some((addr, size)) = initrd {
        // Both are below 4 GiB: place_high stays below the MMIO gap.
        zp.hdr.ramdisk_image = addr as u32;
        zp.hdr.ramdisk_size = size as u32;
        zp.ext_ramdisk_image = (addr >> 32) as u32;
        zp.ext_ramdisk_size = (size >> 32) as u32;
    }
    let e820 = e820_entries(params.mem_size);
    for (slot, e) in zp.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    zp.e820_entries = e820.len().min(zp.e820_table.len()) as u8;
    LinuxBootConfigurator::write_bootparams::<M>(
        &ConfiguratorParams::new(&zp, GuestAddress(data.zero_page())),
        mem,
    )
    .map_err(|source| LoadError::BootConfigurator {
        what: "zero page",
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::CMDLINE_START;
    use crate::test_utils::{guest_mem, read_obj};

    /// A minimal bzImage: `setup_sects` sectors of setup after the boot sector, a setup
    /// header, then `payload` as the protected-mode kernel.
    pub fn build_bzimage(version: u16, xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        img[0x200] = 0xeb; // jmp short
        img[0x201] = 0x6a; // header ends at 0x26c
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = LOADED_HIGH;
        img[0x214..0x218].copy_from_slice(&0x100000u32.to_le_bytes());
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        img[0x234] = 1;
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        img[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn loads_bzimage_with_initrd() {
        let mem_size = 64 << 20;
        let mem = guest_mem(mem_size);
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let img = build_bzimage(0x020f, 0x3, &payload);
        let initrd = vec![0xabu8; 5000];
        let initrds = [KernelImage {
            name: "initrd.img",
            bytes: &initrd,
        }];
        let params = BootParams {
            initrds: &initrds,
            cmdline: b"console=ttyS0",
            mem_size,
        };
        let kernel = KernelImage {
            name: "bzImage",
            bytes: &img,
        };
        let entry = crate::load_kernel(&mem, &kernel, &params).unwrap();
        assert_eq!(entry.protocol, BootProtocol::BzImage);
        assert_eq!(entry.mode, CpuMode::Long64);
        assert_eq!(entry.rip, 0x100200);
        assert_eq!(entry.rsi, ZERO_PAGE_START);

        let mut loaded = vec![0u8; payload.len()];
        vm_memory::Bytes::read_slice(&mem, &mut loaded, GuestAddress(0x100000)).unwrap();
        assert_eq!(loaded, payload);

        let zp: boot_params = read_obj(&mem, ZERO_PAGE_START);
        let hdr = zp.hdr;
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.version }, 0x020f);
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.code32_start }, 0x100000);
        assert_eq!(hdr.loadflags & LOADED_HIGH, LOADED_HIGH);
        // Top of RAM, page aligned.
        assert_eq!({ hdr.ramdisk_image }, ((mem_size - 5000) & !0xfff) as u32);
        assert_eq!({ hdr.ramdisk_size }, 5000);
        assert_eq!(zp.e820_entries, 3);
        let e = zp.e820_table[2];
        assert_eq!(
            ({ e.addr }, { e.size }, { e.r#type }),
            (0x100000, mem_size - 0x100000, 1)
        );
        let e = zp.e820_table[1];
        assert_eq!(({ e.addr }, { e.r#type }), (0x9fc00, 2));
        assert_eq!(
            crate::test_utils::read_cstr(&mem, CMDLINE_START),
            "console=ttyS0"
        );
        let mut rd = vec![0u8; 5000];
        vm_memory::Bytes::read_slice(&mem, &mut rd, GuestAddress(u64::from(hdr.ramdisk_image)))
            .unwrap();
        assert_eq!(rd, initrd);
    }

    #[test]
    fn rejects_unbootable_bzimages() {
        let mem = guest_mem(64 << 20);
        let params = BootParams {
            initrds: &[],
            cmdline: b"",
            mem_size: 64 << 20,
        };
        let load = |img: &[u8]| {
            crate::load_kernel(
                &mem,
                &KernelImage {
                    name: "bzImage",
                    bytes: img,
                },
                &params,
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            load(&build_bzimage(0x020f, 0x2, &[0; 16])),
            "bzImage: needs 64-bit boot protocol support (xloadflags)"
        );
        assert_eq!(
            load(&build_bzimage(0x0206, 0x1, &[0; 16])),
            "bzImage: boot protocol 2.06 is older than 2.12, the first with a 64-bit entry point"
        );
        assert!(load(&build_bzimage(0x020f, 0x1, &[])).contains("no protected-mode kernel"));
        let long = "x".repeat(2048);
        let img = build_bzimage(0x020f, 0x1, &[0; 16]);
        let err = crate::load_kernel(
            &mem,
            &KernelImage {
                name: "bzImage",
                bytes: &img,
            },
            &BootParams {
                cmdline: long.as_bytes(),
                ..params
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cmdline is 2048 bytes, more than the 2047 the protocol allows"
        );
        // init_size from pref_address does not fit in 16 MiB.
        let small = guest_mem(16 << 20);
        let err = crate::load_kernel(
            &small,
            &KernelImage {
                name: "bzImage",
                bytes: &img,
            },
            &BootParams {
                mem_size: 16 << 20,
                ..params
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("pref_address + init_size"),
            "{err}"
        );
    }
}
