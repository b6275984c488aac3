//! Unit tests of [`PciTestdev`](super::PciTestdev).

use super::*;
use crate::pci::{PciSpace, PCI_COMMAND_IO, PCI_COMMAND_MEMORY};

fn mmio(dev: &PciTestdev) -> Arc<dyn BusDevice> {
    dev.region_device(PciRegion::Bar(0)).unwrap()
}

fn portio(dev: &PciTestdev) -> Arc<dyn BusDevice> {
    dev.region_device(PciRegion::Bar(1)).unwrap()
}

fn read_u32(region: &Arc<dyn BusDevice>, offset: u64) -> u32 {
    let mut d = [0u8; 4];
    region.read(offset, &mut d);
    u32::from_le_bytes(d)
}

fn read_u8(region: &Arc<dyn BusDevice>, offset: u64) -> u8 {
    let mut d = [0u8; 1];
    region.read(offset, &mut d);
    d[0]
}

/// The NUL-terminated name as kvm-unit-tests' `pci_testdev_print` reads it, byte by byte.
fn name(region: &Arc<dyn BusDevice>) -> String {
    (HDR_NAME as u64..)
        .map(|o| read_u8(region, o))
        .take_while(|c| *c != 0)
        .map(char::from)
        .collect()
}

#[test]
fn config_space_identity_and_bars() {
    let dev = PciTestdev::new();
    assert_eq!(dev.config_read(0), 0x0005_1b36);
    assert_eq!(
        dev.config_read(2),
        0x00ff_0000,
        "PCI_CLASS_OTHERS, revision 0"
    );
    assert_eq!(dev.config_read(3), 0, "header type 0");
    assert_eq!(dev.config_read(11), 0x1100_1af4);
    assert_eq!(dev.config_read(15), 0, "no interrupt pin");
    assert_eq!(dev.config_read(4), 0x0000_0000, "BAR0: 32-bit memory");
    assert_eq!(dev.config_read(5), 0x0000_0001, "BAR1: I/O");
    assert_eq!(dev.config_read(6), 0, "no BAR2 without membar");
    for reg in 4..=6 {
        dev.config_write(reg, 0, &[0xff; 4]);
    }
    assert_eq!(dev.config_read(4), 0xffff_f000);
    assert_eq!(dev.config_read(5), 0xffff_ff01);
    assert_eq!(dev.config_read(6), 0);
    // The device-specific area is scratch storage, as in QEMU.
    dev.config_write(0x40 / 4, 0, &[1, 2, 3, 4]);
    dev.config_write(0xfc / 4, 2, &[0xaa]);
    assert_eq!(dev.config_read(0x40 / 4), 0x0403_0201);
    assert_eq!(dev.config_read(0xfc / 4), 0x00aa_0000);
    assert_eq!(dev.config_read(0x100 / 4), 0);
}

#[test]
fn bar_changes_come_back_from_config_writes() {
    let dev = PciTestdev::new();
    assert!(dev
        .config_write(4, 0, &0xfebf_0000u32.to_le_bytes())
        .is_empty());
    assert!(dev.config_write(5, 0, &0xc000u32.to_le_bytes()).is_empty());
    let changes = dev.config_write(1, 0, &(PCI_COMMAND_IO | PCI_COMMAND_MEMORY).to_le_bytes());
    assert_eq!(
        changes,
        vec![
            BarChange {
                region: PciRegion::Bar(0),
                space: PciSpace::Memory,
                size: PCI_TESTDEV_MMIO_SIZE,
                old: None,
                new: Some(0xfebf_0000),
            },
            BarChange {
                region: PciRegion::Bar(1),
                space: PciSpace::Io,
                size: PCI_TESTDEV_PORTIO_SIZE,
                old: None,
                new: Some(0xc000),
            },
        ]
    );
    let unmapped = dev.reset();
    assert_eq!(unmapped.len(), 2);
    assert!(unmapped.iter().all(|c| c.new.is_none()));
    assert_eq!(dev.config_read(4), 0);
}

#[test]
fn nothing_selected_reads_zero() {
    let dev = PciTestdev::new();
    for region in [mmio(&dev), portio(&dev)] {
        for offset in [0, 1, 4, 8, 12, 16, 128, 131, 2048] {
            assert_eq!(read_u32(&region, offset), 0);
        }
        // Writes at the test offsets count nothing while no test is selected.
        region.write(2048, &[IOTEST_DATAMATCH]);
        region.write(131, &[IOTEST_DATAMATCH]);
    }
    mmio(&dev).write(0, &[0]);
    assert_eq!(read_u32(&mmio(&dev), 12), 0);
}

#[test]
fn every_test_header() {
    let dev = PciTestdev::new();
    let expected = [
        (0, "mmio-no-eventfd", 2048, 0xfa),
        (1, "mmio-wildcard-eventfd", 2049, 0xce),
        (2, "mmio-datamatch-eventfd", 2050, 0xfa),
        (3, "portio-no-eventfd", 131, 0xfa),
        (4, "portio-wildcard-eventfd", 132, 0xce),
        (5, "portio-datamatch-eventfd", 133, 0xfa),
    ];
    for (i, want_name, offset, data) in expected {
        let (select, n) = if i < 3 {
            (mmio(&dev), i)
        } else {
            (portio(&dev), i - 3)
        };
        select.write(0, &[n as u8]);
        // The header reads the same through either BAR.
        for region in [mmio(&dev), portio(&dev)] {
            assert_eq!(read_u32(&region, 0), 0x0000_0100 | i as u32, "test, width");
            assert_eq!(read_u32(&region, 4), offset);
            assert_eq!(read_u32(&region, 8), data);
            assert_eq!(read_u32(&region, 12), 0, "count");
            assert_eq!(name(&region), want_name);
        }
    }
    // Test 0's name as dwords: "mmio", "-no-".
    mmio(&dev).write(0, &[0]);
    assert_eq!(read_u32(&mmio(&dev), 16), u32::from_le_bytes(*b"mmio"));
    assert_eq!(read_u32(&mmio(&dev), 20), u32::from_le_bytes(*b"-no-"));
    // The NUL (bufsize - 1) and everything past it read 0; so does a dword straddling it.
    let bufsize = (HDR_NAME + "mmio-no-eventfd".len() + 1) as u64;
    assert_eq!(read_u8(&mmio(&dev), bufsize - 2), b'd');
    assert_eq!(read_u8(&mmio(&dev), bufsize - 1), 0);
    assert_eq!(read_u32(&mmio(&dev), bufsize - 2), u32::from(b'd'));
    assert_eq!(read_u32(&mmio(&dev), 4092), 0);
}

#[test]
fn counting_writes() {
    let dev = PciTestdev::new();
    let m = mmio(&dev);
    m.write(0, &[0]);
    for _ in 0..16 {
        m.write(2048, &[IOTEST_DATAMATCH]);
    }
    assert_eq!(read_u32(&m, 12), 16);
    // Wrong value, wrong offset: no count.
    m.write(2048, &[0xfb]);
    m.write(2049, &[IOTEST_DATAMATCH]);
    assert_eq!(read_u32(&m, 12), 16);
    // A dword write is four byte writes: only the low byte lands on the offset.
    m.write(2048, &0x0000_00fau32.to_le_bytes());
    m.write(2047, &0xfafa_fafau32.to_le_bytes());
    assert_eq!(read_u32(&m, 12), 18);
    // Re-selecting zeroes the count; a dword write to 0 selects with its low byte.
    m.write(0, &0xffff_ff00u32.to_le_bytes());
    assert_eq!(read_u32(&m, 12), 0);
    assert_eq!(read_u8(&m, 0), 0);

    // Wildcard: any value counts.
    m.write(0, &[1]);
    m.write(2049, &[0]);
    m.write(2049, &[0x55]);
    assert_eq!(read_u32(&m, 12), 2);

    // Port I/O, and the count sits at the selected test's offset whichever BAR it comes through.
    let p = portio(&dev);
    p.write(0, &[2]);
    assert_eq!(read_u8(&p, 0), 5);
    p.write(133, &[IOTEST_DATAMATCH]);
    m.write(133, &[IOTEST_DATAMATCH]);
    p.write(133, &[IOTEST_NOMATCH]);
    assert_eq!(read_u32(&p, 12), 2);

    // n >= 3 deselects.
    p.write(0, &[3]);
    assert_eq!(read_u32(&p, 0), 0);
    assert_eq!(read_u32(&m, 12), 0);
}

#[test]
fn ioevents_per_region() {
    let dev = PciTestdev::new();
    let summary = |region| {
        dev.ioevents(region)
            .iter()
            .map(|e| (e.offset, e.len, e.datamatch))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(PciRegion::Bar(0)),
        vec![(2049, 0, None), (2050, 1, Some(0xfa))]
    );
    assert_eq!(
        summary(PciRegion::Bar(1)),
        vec![(132, 1, None), (133, 1, Some(0xfa))]
    );
    assert!(summary(PciRegion::Bar(2)).is_empty());
    assert!(summary(PciRegion::Rom).is_empty());
    // The same eventfds every time, so the VMM can move them with the BAR.
    let a = dev.ioevents(PciRegion::Bar(0));
    let b = dev.ioevents(PciRegion::Bar(0));
    assert!(Arc::ptr_eq(&a[0].fd, &b[0].fd));

    // What KVM would do: signal instead of exiting. A read drains it and the count stays 0.
    let m = mmio(&dev);
    m.write(0, &[2]);
    a[1].fd.write(1).unwrap();
    assert_eq!(read_u32(&m, 12), 0);
    assert!(a[1].fd.read().is_err(), "drained by the read");
}

#[test]
fn reset_deselects() {
    let dev = PciTestdev::new();
    mmio(&dev).write(0, &[0]);
    assert_eq!(read_u8(&mmio(&dev), 1), 1);
    assert!(dev.reset().is_empty(), "nothing was mapped");
    assert_eq!(read_u32(&mmio(&dev), 0), 0);
}

#[test]
fn membar() {
    let dev = PciTestdev::with_membar(1 << 20).unwrap();
    assert_eq!(dev.config_read(6), 0x0000_000c, "64-bit prefetchable");
    dev.config_write(6, 0, &[0xff; 4]);
    dev.config_write(7, 0, &[0xff; 4]);
    assert_eq!(dev.config_read(6), 0xfff0_000c);
    assert_eq!(dev.config_read(7), 0xffff_ffff);
    let bar = dev.region_device(PciRegion::Bar(2)).unwrap();
    bar.write(0, &[1; 8]);
    assert_eq!(read_u32(&bar, 0), 0);
    assert!(PciTestdev::new().region_device(PciRegion::Bar(2)).is_none());
    assert!(dev.region_device(PciRegion::Rom).is_none());
    assert!(matches!(
        PciTestdev::with_membar(3000),
        Err(PciConfigError::BadBarSize { index: 2, .. })
    ));
}

#[test]
fn garbage_accesses_never_panic() {
    let dev = PciTestdev::with_membar(1 << 12).unwrap();
    let regions: Vec<_> = (0..4)
        .filter_map(|i| dev.region_device(PciRegion::Bar(i)))
        .collect();
    for region in &regions {
        for select in 0..=3u8 {
            region.write(0, &[select]);
            for offset in (0..4200).chain(u64::MAX - 8..=u64::MAX) {
                for len in 0..=8 {
                    let mut d = vec![0u8; len];
                    region.read(offset, &mut d);
                    region.write(offset, &vec![offset as u8; len]);
                }
            }
        }
    }
    for reg in 0..1024 {
        dev.config_write(reg, reg % 5, &[0xff; 8][..reg % 9]);
        let _ = dev.config_read(reg);
    }
}
