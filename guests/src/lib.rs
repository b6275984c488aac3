//! rvmm's tiny test guests, assembled from `src/*.S` by `build.rs`.
//!
//! See `README.md` in this crate for each guest's boot protocol, what it
//! prints on the serial port and its exit status.

use std::path::PathBuf;

/// The built-in default guest (PVH ELF32): prints a banner with the vCPU
/// count and RAM size from fw_cfg and the command line, then powers off.
pub const DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default.elf"));

/// The built-in boot disk PC firmware boots when no disk is given: a boot sector that prints
/// through the BIOS and powers off (`src/bootdisk.S`), padded to whole sectors.
pub const BOOT_DISK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bootdisk.bin"));

/// File names of every built guest, for [`path`].
pub const ALL: &[&str] = &[
    "default.elf",
    "bootdisk.bin",
    "resetdisk.bin",
    "smbiosdisk.bin",
    "vgadisk.bin",
    "vgabench.bin",
    "writedisk.bin",
    "pvh32.elf",
    "pvh64.elf",
    "multiboot.elf",
    "multiboot_aout.bin",
    "pvh32_8000.elf",
    "pvh64_8000.elf",
    "pvh32_10000.elf",
    "pvh64_10000.elf",
    "pvh32_90000.elf",
    "pvh64_90000.elf",
    "multiboot_8000.elf",
    "multiboot_10000.elf",
    "multiboot_90000.elf",
    "multiboot_aout_8000.bin",
    "multiboot_aout_10000.bin",
    "multiboot_aout_90000.bin",
    "bzimage.bin",
    "vmlinux64.elf",
    "pio_mmio.elf",
    "exitcode.elf",
    "kvmcpuid.elf",
    "pit.elf",
    "reset.elf",
    "triplefault.elf",
    "hlt.elf",
    "int3.elf",
    "badinsn.elf",
    "smp.elf",
    "acpi.elf",
    "fwcfg.elf",
    "cmos.elf",
    "smp_ipi.elf",
    "timer.elf",
    "serial_irq.elf",
    "pci_scan.elf",
    "pci_tree.elf",
    "pci_unplug.elf",
    "pci_bar.elf",
    "pio_bench.elf",
    "heartbeat.elf",
    "kbdecho.elf",
    "tablet.elf",
    "balloon.elf",
    "xhci.elf",
    "powerbutton.elf",
    "suspend.elf",
    "suspend_rtc.elf",
    "suspend_rtc15.elf",
    "exits.elf",
    "exits64.elf",
    "virtio.elf",
    "virtio_bench.elf",
    "virtio_bench_pci.elf",
    "virtio_net_bench_pci.elf",
    "emulate_popcnt.elf",
    "emulate_fwait.elf",
    "emulate_mxcsr.elf",
    "emulate_smap.elf",
    "bzimage_gzip.bin",
];

/// Path of the built guest `name` (one of [`ALL`], e.g. `"pvh32.elf"`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_is_built() {
        for name in ALL {
            let p = path(name);
            let len = std::fs::metadata(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .len();
            assert!(len > 0, "{} is empty", p.display());
        }
    }

    #[test]
    fn default_guest_is_an_elf32_with_a_pvh_note() {
        assert_eq!(&DEFAULT_GUEST[..4], b"\x7fELF");
        assert_eq!(DEFAULT_GUEST[4], 1, "ELFCLASS32");
        assert!(DEFAULT_GUEST.windows(4).any(|w| w == b"Xen\0"));
    }

    #[test]
    fn bzimage_header_is_linux_boot_protocol_2_15() {
        let img = std::fs::read(path("bzimage.bin")).unwrap();
        assert_eq!(&img[0x1fe..0x200], &[0x55, 0xaa]);
        assert_eq!(&img[0x202..0x206], b"HdrS");
        assert_eq!(u16::from_le_bytes([img[0x206], img[0x207]]), 0x020f);
        let setup_sects = usize::from(img[0x1f1]);
        assert!(img[0x211] & 1 != 0, "LOADED_HIGH");
        assert!(img[0x236] & 1 != 0, "XLF_KERNEL_64");
        // 64-bit entry: cli; cld at protected-mode offset 0x200.
        let entry = (setup_sects + 1) * 512 + 0x200;
        assert_eq!(&img[entry..entry + 2], &[0xfa, 0xfc]);
        let syssize = u32::from_le_bytes(img[0x1f4..0x1f8].try_into().unwrap()) as usize;
        assert!(syssize * 16 >= img.len() - (setup_sects + 1) * 512);
    }

    #[test]
    fn multiboot_headers_are_in_the_first_8k() {
        for name in ["multiboot.elf", "multiboot_aout.bin"] {
            let img = std::fs::read(path(name)).unwrap();
            let found = img[..img.len().min(8192)]
                .chunks_exact(4)
                .any(|w| w == 0x1BAD_B002u32.to_le_bytes());
            assert!(found, "{name}: no multiboot header");
        }
    }

    #[test]
    fn vmlinux64_has_no_notes() {
        let img = std::fs::read(path("vmlinux64.elf")).unwrap();
        assert_eq!(img[4], 2, "ELFCLASS64");
        assert!(!img.windows(4).any(|w| w == b"Xen\0"));
    }
}
