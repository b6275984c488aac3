//! Unit tests of [`PciConfig`](super::PciConfig).

use super::*;

const ID: PciIdentity = PciIdentity {
    vendor: 0x1b36,
    device: 0x0005,
    class: 0x00,
    subclass: 0xff,
    prog_if: 0x00,
    revision: 0x00,
    subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
    subsystem: PCI_SUBDEVICE_ID_QEMU,
};

const IO_256: BarSpec = BarSpec {
    size: 0x100,
    kind: BarKind::Io,
    prefetchable: false,
};
const MEM32_4K: BarSpec = BarSpec {
    size: 0x1000,
    kind: BarKind::Mem32,
    prefetchable: false,
};
const MEM64_16K_PREF: BarSpec = BarSpec {
    size: 0x4000,
    kind: BarKind::Mem64,
    prefetchable: true,
};

/// BAR0 mem32 4 KiB, BAR1 io 256, BAR2/3 mem64 prefetchable 16 KiB, ROM 32 KiB.
fn device() -> PciConfig {
    let mut c = PciConfig::new(&ID);
    c.add_bar(0, MEM32_4K).unwrap();
    c.add_bar(1, IO_256).unwrap();
    c.add_bar(2, MEM64_16K_PREF).unwrap();
    c.add_rom(0x8000).unwrap();
    c
}

fn write32(c: &mut PciConfig, offset: usize, value: u32) -> Vec<BarChange> {
    c.write(offset / 4, 0, &value.to_le_bytes())
}

fn read32(c: &PciConfig, offset: usize) -> u32 {
    c.read(offset / 4)
}

fn change(region: PciRegion, old: Option<u64>, new: Option<u64>) -> BarChange {
    let (space, size) = match region {
        PciRegion::Bar(0) => (PciSpace::Memory, 0x1000),
        PciRegion::Bar(1) => (PciSpace::Io, 0x100),
        PciRegion::Bar(2) => (PciSpace::Memory, 0x4000),
        _ => (PciSpace::Memory, 0x8000),
    };
    BarChange {
        region,
        space,
        size,
        old,
        new,
    }
}

#[test]
fn identity_reads_and_is_read_only() {
    let mut c = device();
    c.set_interrupt_pin(1);
    let before: Vec<u32> = (0..64).map(|r| c.read(r)).collect();
    assert_eq!(before[0], 0x0005_1b36);
    assert_eq!(
        before[2], 0x00ff_0000,
        "class 00, subclass ff, prog-if 0, revision 0"
    );
    assert_eq!(before[3], 0, "header type 0");
    assert_eq!(before[11], 0x1100_1af4);
    assert_eq!(before[15], 0x0000_0100, "pin INTA, line 0");
    for reg in [0, 2, 10, 11, 13, 14] {
        c.write(reg, 0, &[0xff; 4]);
        assert_eq!(c.read(reg), before[reg], "register {reg:#x}");
    }
    // Cache line size and interrupt line are writable; latency timer, BIST and pin are not.
    c.write(3, 0, &[0xff; 4]);
    assert_eq!(c.read(3), 0x0000_00ff);
    c.write(15, 0, &[0xff; 4]);
    assert_eq!(c.read(15), 0x0000_01ff);
    // Past the 256 bytes: zero, and writes are dropped.
    assert!(c.write(64, 0, &[0xff; 4]).is_empty());
    assert_eq!(c.read(64), 0);
    assert_eq!(c.read(1023), 0);
    assert_eq!(c.read(usize::MAX), 0);
}

#[test]
fn command_mask_and_status() {
    let mut c = device();
    c.set_status(0x0200);
    write32(&mut c, 0x04, 0xffff_ffff);
    assert_eq!(
        read32(&c, 0x04),
        0x0200_0507,
        "QEMU's command mask; status unchanged"
    );
    // Writing 1s to the write-1-to-clear status bits does not set them.
    c.write(1, 2, &[0xff, 0xff]);
    assert_eq!(read32(&c, 0x04) >> 16, 0x0200);
    c.set_command(0);
    assert_eq!(read32(&c, 0x04), 0x0200_0000);
}

#[test]
fn bar_sizing_reads() {
    let mut c = device();
    assert_eq!(read32(&c, 0x10), 0x0000_0000, "mem32, non-prefetchable");
    assert_eq!(read32(&c, 0x14), 0x0000_0001, "io");
    assert_eq!(read32(&c, 0x18), 0x0000_000c, "mem64, prefetchable");
    assert_eq!(read32(&c, 0x1c), 0);
    for offset in [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30] {
        assert!(write32(&mut c, offset, 0xffff_ffff).is_empty());
    }
    assert_eq!(read32(&c, 0x10), 0xffff_f000);
    assert_eq!(read32(&c, 0x14), 0xffff_ff01);
    assert_eq!(read32(&c, 0x18), 0xffff_c00c);
    assert_eq!(read32(&c, 0x1c), 0xffff_ffff);
    assert_eq!(read32(&c, 0x20), 0, "unused BAR 4 reads 0");
    assert_eq!(read32(&c, 0x24), 0, "unused BAR 5 reads 0");
    assert_eq!(
        read32(&c, 0x30),
        0xffff_8001,
        "ROM: address bits and enable"
    );
    // Linux sizes the ROM without the enable bit.
    write32(&mut c, 0x30, 0xffff_f800);
    assert_eq!(read32(&c, 0x30), 0xffff_8000);
    // With decode on, the all-ones addresses still do not map (wrap and 4 GiB rules).
    assert!(c
        .set_command_changes(PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
        .is_empty());
    write32(&mut c, 0x30, 0xffff_ffff);
    for region in [0, 1, 2]
        .map(PciRegion::Bar)
        .into_iter()
        .chain([PciRegion::Rom])
    {
        assert_eq!(c.region_address(region), None, "{region:?}");
    }
    // A 64-bit BAR bigger than 4 GiB sizes through both dwords.
    let mut big = PciConfig::new(&ID);
    big.add_bar(
        4,
        BarSpec {
            size: 1 << 33,
            kind: BarKind::Mem64,
            prefetchable: false,
        },
    )
    .unwrap();
    write32(&mut big, 0x20, 0xffff_ffff);
    write32(&mut big, 0x24, 0xffff_ffff);
    assert_eq!(read32(&big, 0x20), 0x0000_0004);
    assert_eq!(read32(&big, 0x24), 0xffff_fffe);
}

impl PciConfig {
    /// A guest write of the COMMAND word, for tests.
    fn set_command_changes(&mut self, bits: u16) -> Vec<BarChange> {
        self.write(1, 0, &bits.to_le_bytes())
    }
}

#[test]
fn decode_follows_command() {
    let mut c = device();
    assert!(write32(&mut c, 0x10, 0xfebf_0000).is_empty());
    assert!(write32(&mut c, 0x14, 0xc000).is_empty());
    assert!(write32(&mut c, 0x18, 0x0000_0000).is_empty());
    assert!(write32(&mut c, 0x1c, 0x0000_0080).is_empty());
    assert!(write32(&mut c, 0x30, 0xfeb8_0001).is_empty());
    assert_eq!(c.region_address(PciRegion::Bar(0)), None);

    assert_eq!(
        c.set_command_changes(PCI_COMMAND_IO),
        vec![change(PciRegion::Bar(1), None, Some(0xc000))]
    );
    assert!(
        c.set_command_changes(PCI_COMMAND_IO).is_empty(),
        "no change"
    );
    assert!(
        c.set_command_changes(PCI_COMMAND_IO | PCI_COMMAND_MASTER)
            .is_empty(),
        "bus master does not move anything"
    );
    assert_eq!(
        c.set_command_changes(PCI_COMMAND_IO | PCI_COMMAND_MEMORY),
        vec![
            change(PciRegion::Bar(0), None, Some(0xfebf_0000)),
            change(PciRegion::Bar(2), None, Some(0x80_0000_0000)),
            change(PciRegion::Rom, None, Some(0xfeb8_0000)),
        ]
    );
    assert_eq!(c.region_address(PciRegion::Bar(2)), Some(0x80_0000_0000));
    assert_eq!(c.region_address(PciRegion::Bar(3)), None, "upper half");
    // Disabling the ROM alone.
    assert_eq!(
        write32(&mut c, 0x30, 0xfeb8_0000),
        vec![change(PciRegion::Rom, Some(0xfeb8_0000), None)]
    );
    // Unrelated registers never report changes.
    assert!(c.write(15, 0, &[0x0b]).is_empty());
    assert!(c.write(1, 1, &[0x04]).is_empty(), "INTx disable byte");
    assert_eq!(
        c.set_command_changes(0),
        vec![
            change(PciRegion::Bar(0), Some(0xfebf_0000), None),
            change(PciRegion::Bar(1), Some(0xc000), None),
            change(PciRegion::Bar(2), Some(0x80_0000_0000), None),
        ]
    );
    assert_eq!(
        c.regions(),
        vec![
            (PciRegion::Bar(0), PciSpace::Memory, 0x1000),
            (PciRegion::Bar(1), PciSpace::Io, 0x100),
            (PciRegion::Bar(2), PciSpace::Memory, 0x4000),
            (PciRegion::Rom, PciSpace::Memory, 0x8000),
        ]
    );
}

#[test]
fn decode_limits() {
    let mut c = device();
    c.set_command_changes(PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    // I/O: the last port must be at most 0xffff.
    assert_eq!(
        write32(&mut c, 0x14, 0xff00),
        vec![change(PciRegion::Bar(1), None, Some(0xff00))]
    );
    assert_eq!(
        write32(&mut c, 0x14, 0x1_0000),
        vec![change(PciRegion::Bar(1), Some(0xff00), None)]
    );
    // 32-bit memory: the last byte must be below 0xffffffff.
    assert_eq!(
        write32(&mut c, 0x10, 0xffff_e000),
        vec![change(PciRegion::Bar(0), None, Some(0xffff_e000))]
    );
    assert_eq!(
        write32(&mut c, 0x10, 0xffff_f000),
        vec![change(PciRegion::Bar(0), Some(0xffff_e000), None)]
    );
    // Address 0 is unmapped.
    assert!(write32(&mut c, 0x10, 0).is_empty());
    // 64-bit memory may sit above 4 GiB but not end at the top of the address space.
    assert_eq!(
        write32(&mut c, 0x1c, 0xffff_ffff),
        vec![change(PciRegion::Bar(2), None, Some(0xffff_ffff_0000_0000))]
    );
    assert_eq!(
        write32(&mut c, 0x18, 0xffff_8000),
        vec![change(
            PciRegion::Bar(2),
            Some(0xffff_ffff_0000_0000),
            Some(0xffff_ffff_ffff_8000)
        )]
    );
    assert_eq!(
        write32(&mut c, 0x18, 0xffff_c000),
        vec![change(PciRegion::Bar(2), Some(0xffff_ffff_ffff_8000), None)]
    );
}

#[test]
fn mem64_bar_moves_high_then_low() {
    let mut c = device();
    c.set_region_address(PciRegion::Bar(2), 0x1_0000_0000);
    c.set_command(PCI_COMMAND_MEMORY);
    assert_eq!(c.region_address(PciRegion::Bar(2)), Some(0x1_0000_0000));
    assert_eq!(read32(&c, 0x18), 0x0000_000c);
    assert_eq!(read32(&c, 0x1c), 0x0000_0001);
    // The high dword first: the BAR decodes at the half-written address in between, as in QEMU.
    assert_eq!(
        write32(&mut c, 0x1c, 0x2),
        vec![change(
            PciRegion::Bar(2),
            Some(0x1_0000_0000),
            Some(0x2_0000_0000)
        )]
    );
    assert_eq!(
        write32(&mut c, 0x18, 0x8000_0000),
        vec![change(
            PciRegion::Bar(2),
            Some(0x2_0000_0000),
            Some(0x2_8000_0000)
        )]
    );
    assert_eq!(read32(&c, 0x18), 0x8000_000c, "type bits kept");
    assert!(write32(&mut c, 0x18, 0x8000_0000).is_empty(), "same value");
}

#[test]
fn byte_and_word_writes() {
    let mut c = device();
    c.set_command(PCI_COMMAND_MEMORY);
    // Build BAR0 = 0xfebf0000 one byte at a time; the low 12 bits are read-only.
    assert!(c.write(4, 0, &[0xff]).is_empty());
    assert_eq!(
        c.write(4, 1, &[0xff]),
        vec![change(PciRegion::Bar(0), None, Some(0xf000))]
    );
    assert_eq!(
        c.write(4, 1, &[0x0f]),
        vec![change(PciRegion::Bar(0), Some(0xf000), None)]
    );
    assert_eq!(
        c.write(4, 2, &[0xbf]),
        vec![change(PciRegion::Bar(0), None, Some(0x00bf_0000))]
    );
    assert_eq!(
        c.write(4, 3, &[0xfe]),
        vec![change(
            PciRegion::Bar(0),
            Some(0x00bf_0000),
            Some(0xfebf_0000)
        )]
    );
    assert_eq!(read32(&c, 0x10), 0xfebf_0000);
    // A word write to the upper half.
    assert_eq!(
        c.write(4, 2, &[0xc0, 0xfe]),
        vec![change(
            PciRegion::Bar(0),
            Some(0xfebf_0000),
            Some(0xfec0_0000)
        )]
    );
    // Bytes past the dword are dropped.
    assert!(c.write(1, 3, &[0x00, 0xff, 0xff]).is_empty());
    assert_eq!(c.read(2), 0x00ff_0000);
    // A word write to COMMAND through its high byte does not touch decode.
    assert!(c.write(1, 1, &[0x04, 0x00]).is_empty());
    assert_eq!(read32(&c, 0x04) & 0xffff, 0x0402);
}

#[test]
fn capability_list() {
    let mut c = PciConfig::new(&ID);
    assert_eq!(read32(&c, 0x04) >> 16 & PCI_STATUS_CAP_LIST as u32, 0);
    let first = c.add_capability(0x09, &[0xaa, 0xbb, 0xcc]).unwrap();
    let second = c
        .add_capability_with_mask(0x05, &[1, 2, 3, 4, 5, 6], &[0, 0xff, 0, 0, 0, 0])
        .unwrap();
    assert_eq!((first, second), (0x40, 0x48));
    assert_ne!(read32(&c, 0x04) >> 16 & PCI_STATUS_CAP_LIST as u32, 0);
    // Walk the list from 0x34 as a guest does: newest first, as QEMU links it.
    let mut seen = Vec::new();
    let mut ptr = (c.read(0x34 / 4) & 0xff) as usize;
    while ptr != 0 {
        let header = c.read(ptr / 4) >> ((ptr % 4) * 8);
        seen.push((ptr, header as u8));
        ptr = (header >> 8 & 0xff) as usize;
    }
    assert_eq!(seen, vec![(0x48, 0x05), (0x40, 0x09)]);
    assert_eq!(read32(&c, 0x40), 0xbbaa_0009);
    assert_eq!(read32(&c, 0x44), 0x0000_00cc);
    // Read-only capability; one writable byte in the second; ID and next are never writable.
    write32(&mut c, 0x40, 0xffff_ffff);
    assert_eq!(read32(&c, 0x40), 0xbbaa_0009);
    write32(&mut c, 0x48, 0xffff_ffff);
    assert_eq!(read32(&c, 0x48), 0xff01_4005);
    // No room: 0x50 + 2 + 180 > 0x100.
    assert_eq!(
        c.add_capability(0x10, &[0; 180]),
        Err(PciConfigError::NoCapabilitySpace { id: 0x10, len: 182 })
    );
    assert_eq!(
        c.add_capability_with_mask(0x11, &[0; 2], &[0; 1]),
        Err(PciConfigError::CapabilityMaskLength {
            id: 0x11,
            mask: 1,
            body: 2
        })
    );
    // The rest of the device area is read-only unless made writable.
    write32(&mut c, 0x80, 0xffff_ffff);
    assert_eq!(read32(&c, 0x80), 0);
    c.set_write_mask(0x80, &[0xff, 0x0f]).unwrap();
    write32(&mut c, 0x80, 0xffff_ffff);
    assert_eq!(read32(&c, 0x80), 0x0fff);
    assert!(c.set_write_mask(0x3c, &[0xff; 8]).is_err());
    assert!(c.set_write_mask(0xff, &[0xff; 2]).is_err());
    assert!(c.set_write_mask(usize::MAX, &[0xff; 2]).is_err());
}

#[test]
fn reset_unmaps_and_restores_power_on_values() {
    let mut c = device();
    c.set_interrupt_pin(1);
    c.set_status(0x0200);
    c.set_region_address(PciRegion::Bar(0), 0xfebf_0000);
    c.set_region_address(PciRegion::Bar(1), 0xc000);
    write32(&mut c, 0x30, 0xfeb8_0001);
    write32(&mut c, 0x0c, 0x10);
    c.write(15, 0, &[0x0b]);
    c.set_command(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    assert_eq!(
        c.reset(),
        vec![
            change(PciRegion::Bar(0), Some(0xfebf_0000), None),
            change(PciRegion::Bar(1), Some(0xc000), None),
            change(PciRegion::Rom, Some(0xfeb8_0000), None),
        ]
    );
    assert_eq!(read32(&c, 0x04), 0x0200_0000);
    assert_eq!(read32(&c, 0x0c), 0);
    assert_eq!(read32(&c, 0x10), 0);
    assert_eq!(read32(&c, 0x14), 1);
    assert_eq!(read32(&c, 0x18), 0xc);
    assert_eq!(read32(&c, 0x30), 0);
    assert_eq!(read32(&c, 0x3c), 0x0100, "line cleared, pin kept");
    assert!(c.reset().is_empty(), "nothing left to unmap");
}

#[test]
fn firmware_style_programming_returns_nothing_later() {
    let mut c = device();
    c.set_region_address(PciRegion::Bar(0), 0xfebf_0123);
    c.set_region_address(PciRegion::Bar(2), 0x80_0000_0000);
    c.set_region_address(PciRegion::Rom, 0xfeb8_0000);
    c.set_region_address(PciRegion::Bar(3), 0x1234); // the upper half: ignored
    c.set_region_address(PciRegion::Bar(9), 0x1234);
    c.set_command(PCI_COMMAND_MEMORY);
    assert_eq!(c.region_address(PciRegion::Bar(0)), Some(0xfebf_0000));
    assert_eq!(c.region_address(PciRegion::Bar(2)), Some(0x80_0000_0000));
    assert_eq!(c.region_address(PciRegion::Rom), None, "ROM stays disabled");
    assert_eq!(read32(&c, 0x10), 0xfebf_0000);
    assert_eq!(read32(&c, 0x30), 0xfeb8_0000);
    // The VMM already knows; a later unrelated write reports nothing.
    assert!(c.set_command_changes(PCI_COMMAND_MEMORY).is_empty());
}

#[test]
fn bad_bars_are_refused() {
    let mut c = PciConfig::new(&ID);
    let spec = |size, kind| BarSpec {
        size,
        kind,
        prefetchable: false,
    };
    assert_eq!(
        c.add_bar(6, MEM32_4K),
        Err(PciConfigError::BadBarIndex { index: 6 })
    );
    assert_eq!(
        c.add_bar(5, MEM64_16K_PREF),
        Err(PciConfigError::BadBarIndex { index: 5 })
    );
    for (size, kind) in [
        (2, BarKind::Io),
        (0x2_0000, BarKind::Io),
        (0x300, BarKind::Io),
        (8, BarKind::Mem32),
        (1 << 32, BarKind::Mem32),
        (0, BarKind::Mem64),
    ] {
        assert!(
            matches!(
                c.add_bar(0, spec(size, kind)),
                Err(PciConfigError::BadBarSize { .. })
            ),
            "{size:#x} {kind:?}"
        );
    }
    assert_eq!(
        c.add_bar(
            0,
            BarSpec {
                prefetchable: true,
                ..IO_256
            }
        ),
        Err(PciConfigError::PrefetchableIo { index: 0 })
    );
    c.add_bar(1, IO_256).unwrap();
    assert_eq!(
        c.add_bar(1, MEM32_4K),
        Err(PciConfigError::BarTaken { index: 1 })
    );
    assert_eq!(
        c.add_bar(0, MEM64_16K_PREF),
        Err(PciConfigError::BarTaken { index: 1 })
    );
    c.add_bar(2, MEM64_16K_PREF).unwrap();
    assert_eq!(
        c.add_bar(3, MEM32_4K),
        Err(PciConfigError::BarTaken { index: 3 })
    );
    assert_eq!(
        c.add_rom(0x400),
        Err(PciConfigError::BadRomSize { size: 0x400 })
    );
    c.add_rom(0x800).unwrap();
    assert_eq!(c.add_rom(0x800), Err(PciConfigError::RomTaken));
}

#[test]
fn garbage_never_panics() {
    for mut c in [device(), PciConfig::new_express(&ID)] {
        for reg in 0..1024 {
            for len in 0..=8 {
                for offset in [0, 1, 3, 4, 7, usize::MAX] {
                    let _ = c.write(reg, offset, &vec![0xff; len]);
                    let _ = c.write(reg, offset, &vec![0x5a; len]);
                }
            }
            let _ = c.read(reg);
        }
        let _ = c.write(usize::MAX, 0, &[0xff; 4]);
        let _ = c.write(usize::MAX / 4, 3, &[0xff; 4]);
        let _ = c.read(usize::MAX / 4);
        let _ = c.reset();
    }
    let e = PciConfig::new_express(&ID);
    assert_eq!(e.read(0), 0x0005_1b36);
    assert_eq!(e.read(1023), 0);
}
