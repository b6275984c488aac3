//! Unit tests of the ATAPI/MMC command set.

use super::super::ata::tests::run;
use super::super::ata::{Direction, DriveIdentity, STATUS_DRQ};
use super::*;
use crate::storage::testing::{MemBackend, Rng};
use crate::storage::BlockBackend;
use std::sync::Arc;

fn cd(bytes: usize) -> AtaDrive {
    let b: Arc<dyn BlockBackend> = Arc::new(MemBackend::patterned(bytes));
    AtaDrive::cdrom(Some(b), DriveIdentity::qemu(3))
}

/// Issue PACKET with `cdb` (PIO, byte count limit `limit`) and collect the reply.
fn packet(d: &mut AtaDrive, cdb: &[u8], limit: u16) -> (Event, Vec<u8>) {
    let mut full = [0u8; 12];
    full[..cdb.len()].copy_from_slice(cdb);
    let t = d.regs_mut();
    t.feature = 0;
    t.lba_mid = limit as u8;
    t.lba_high = (limit >> 8) as u8;
    run(d, 0xa0, &full)
}

fn sense_of(d: &mut AtaDrive) -> (u8, u8) {
    let (_, r) = packet(d, &[0x03, 0, 0, 0, 18], 0xfffe);
    assert_eq!(r.len(), 18);
    assert_eq!(r[0], 0xf0);
    (r[2] & 0x0f, r[12])
}

fn ok(d: &AtaDrive) -> bool {
    d.status() & STATUS_ERR == 0
}

#[test]
fn identify_packet_and_signature() {
    let mut d = cd(2048 * 10);
    assert_eq!(d.signature(), 0xeb14_0101);
    let (_, id) = run(&mut d, 0xa1, &[]);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x85c0);
    assert_eq!(&id[54..58], b"EQUM");
    // IDENTIFY DEVICE aborts and leaves the ATAPI signature for the host.
    d.regs_mut().lba_mid = 0;
    let (ev, data) = run(&mut d, 0xec, &[]);
    assert_eq!(ev, Event::Done { irq: true });
    assert!(data.is_empty());
    assert_eq!(d.error() & 0x04, 0x04);
    assert_eq!((d.regs().lba_mid, d.regs().lba_high), (0x14, 0xeb));
    // Write commands are aborted.
    run(&mut d, 0x30, &[0; 512]);
    assert_eq!(d.error(), 0x04);
    assert_eq!(run(&mut d, 0x08, &[]).0, Event::Done { irq: false });
    assert_eq!(d.status(), 0);
}

#[test]
fn packet_phases_and_interrupt_reason() {
    let mut d = cd(2048 * 10);
    d.regs_mut().lba_mid = 0x00;
    d.regs_mut().lba_high = 0x08;
    assert_eq!(d.execute(0xa0), Event::Block { irq: false });
    assert_eq!(d.regs().nsector & 3, 1, "CoD, to the device");
    assert_eq!(d.status() & STATUS_DRQ, STATUS_DRQ);
    let mut cdb = [0u8; 12];
    cdb[0] = 0x28;
    cdb[8] = 2;
    assert_eq!(d.pio_write(&cdb[..6]), None);
    // READ(10) of two sectors with a 2 KiB byte count limit: two data blocks.
    assert_eq!(d.pio_write(&cdb[6..]), Some(Event::Block { irq: true }));
    assert_eq!(d.regs().nsector & 3, 2, "IO, data to the host");
    assert_eq!((d.regs().lba_mid, d.regs().lba_high), (0x00, 0x08));
    let mut buf = vec![0u8; 2048];
    assert_eq!(d.pio_read(&mut buf), Some(Event::Block { irq: true }));
    assert_eq!(buf[..4], [0, 1, 2, 3]);
    assert_eq!(d.pio_read(&mut buf), Some(Event::Done { irq: true }));
    assert_eq!(buf[0], (2048 % 251) as u8);
    assert_eq!(d.regs().nsector & 3, 3, "status phase");
    assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn odd_and_zero_byte_count_limits() {
    let mut d = cd(2048 * 4);
    let (_, r) = packet(&mut d, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1], 1001);
    assert_eq!(r.len(), 2048, "1000-byte blocks");
    let (_, r) = packet(&mut d, &[0x28, 0, 0, 0, 0, 0, 0, 0, 4], 0);
    assert_eq!(r.len(), 8192);
}

#[test]
fn read_10_12_and_range_checks() {
    let mut d = cd(2048 * 100);
    let (_, r) = packet(&mut d, &[0x28, 0, 0, 0, 0, 99, 0, 0, 1], 0xfffe);
    assert_eq!(r.len(), 2048);
    assert_eq!(r[0], ((99 * 2048) % 251) as u8);
    let (_, r) = packet(&mut d, &[0xa8, 0, 0, 0, 0, 10, 0, 0, 0, 5], 0xfffe);
    assert_eq!(r.len(), 5 * 2048);
    let (ev, r) = packet(&mut d, &[0x28, 0, 0, 0, 0, 99, 0, 0, 2], 0xfffe);
    assert_eq!(ev, Event::Done { irq: true });
    assert!(r.is_empty());
    assert_eq!(d.error() >> 4, SENSE_ILLEGAL_REQUEST);
    assert_eq!(
        sense_of(&mut d),
        (SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
    );
    // READ(12) of 2^32-1 sectors is refused without allocating anything.
    packet(
        &mut d,
        &[0xa8, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        0xfffe,
    );
    assert_eq!(
        sense_of(&mut d),
        (SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
    );
    packet(&mut d, &[0x28, 0, 0, 0, 0, 0, 0, 0, 0], 0xfffe);
    assert!(ok(&d), "zero sectors is fine");
    packet(&mut d, &[0x2b, 0, 0, 0, 0, 100], 0xfffe);
    assert_eq!(sense_of(&mut d).1, ASC_LBA_OUT_OF_RANGE);
    let (_, r) = packet(&mut d, &[0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0x10], 0xfffe);
    assert_eq!(r.len(), 2048);
}

#[test]
fn dma_packets_use_big_blocks_and_no_byte_count() {
    let mut d = cd(2048 * 100);
    let t = d.regs_mut();
    t.feature = 1;
    let mut cdb = [0u8; 12];
    cdb[0] = 0x28;
    cdb[8] = 64;
    let ev = d.execute(0xa0);
    assert_eq!(ev, Event::Block { irq: false });
    assert_eq!(d.pio_write(&cdb), Some(Event::Block { irq: false }));
    let info = d.transfer().unwrap();
    assert!(info.dma && info.atapi && info.dir == Direction::In);
    assert_eq!(info.block_left, 64 * 1024);
    assert_eq!(info.left, 64 * 1024);
}

#[test]
fn empty_drive_is_not_ready() {
    let mut d = AtaDrive::cdrom(None, DriveIdentity::qemu(3));
    for cdb in [
        &[0x00u8][..],
        &[0x25],
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0x43],
    ] {
        let (ev, r) = packet(&mut d, cdb, 0xfffe);
        assert_eq!(ev, Event::Done { irq: true });
        assert!(r.is_empty());
        assert_eq!(d.error() >> 4, SENSE_NOT_READY);
        assert_eq!(sense_of(&mut d), (SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
    }
    // INQUIRY and GET CONFIGURATION still answer; no current profile.
    let (_, r) = packet(&mut d, &[0x12, 0, 0, 0, 36], 0xfffe);
    assert_eq!(r.len(), 36);
    let (_, r) = packet(&mut d, &[0x46, 0, 0, 0, 0, 0, 0, 0, 8], 0xfffe);
    assert_eq!(r[6..8], [0, 0]);
}

#[test]
fn media_change_unit_attention_sequence() {
    let mut d = cd(2048 * 10);
    packet(&mut d, &[0x00], 0xfffe);
    assert!(ok(&d), "no unit attention at power-on, as QEMU");
    d.change_media(Some(Arc::new(MemBackend::new(2048 * 20))));
    // TUR: CHECK CONDITION with the unit attention; INQUIRY is allowed under it.
    packet(&mut d, &[0x00], 0xfffe);
    assert_eq!(d.error() >> 4, SENSE_UNIT_ATTENTION);
    let (_, r) = packet(&mut d, &[0x12, 0, 0, 0, 96], 0xfffe);
    assert_eq!(&r[8..12], b"QEMU");
    assert_eq!(&r[16..28], b"QEMU DVD-ROM");
    assert_eq!(r.len(), 36, "allocation length above the data");
    packet(&mut d, &[0x00], 0xfffe);
    assert_eq!(d.error() >> 4, SENSE_UNIT_ATTENTION, "still pending");
    assert_eq!(sense_of(&mut d), (SENSE_UNIT_ATTENTION, ASC_MEDIUM_CHANGED));
    // QEMU then reports the tray open once, and the change once more.
    packet(&mut d, &[0x00], 0xfffe);
    assert_eq!(sense_of(&mut d), (SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT));
    packet(&mut d, &[0x00], 0xfffe);
    assert_eq!(sense_of(&mut d), (SENSE_UNIT_ATTENTION, ASC_MEDIUM_CHANGED));
    packet(&mut d, &[0x00], 0xfffe);
    assert!(ok(&d));
    assert_eq!(sense_of(&mut d), (0, 0));
    // The new medium is there.
    let (_, r) = packet(&mut d, &[0x25], 0xfffe);
    assert_eq!(r, [0, 0, 0, 19, 0, 0, 8, 0]);
}

#[test]
fn event_status_reports_new_media_once() {
    let mut d = cd(2048 * 10);
    d.change_media(Some(Arc::new(MemBackend::new(2048 * 20))));
    let gesn = [0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8];
    let (_, r) = packet(&mut d, &gesn, 0xfffe);
    assert_eq!(r, [0, 4, 4, 0x10, 2, 2, 0, 0]);
    let (_, r) = packet(&mut d, &gesn, 0xfffe);
    assert_eq!(r, [0, 4, 4, 0x10, 0, 2, 0, 0]);
    // Asynchronous mode is refused; no class requested: "no event available".
    packet(&mut d, &[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8], 0xfffe);
    assert_eq!(d.error() >> 4, SENSE_ILLEGAL_REQUEST);
    let (_, r) = packet(&mut d, &[0x4a, 1, 0, 0, 0, 0, 0, 0, 8], 0xfffe);
    assert_eq!(r, [0, 0, 0x80, 0x10]);
}

#[test]
fn read_toc_formats() {
    let mut d = cd(2048 * 1000);
    let (_, r) = packet(&mut d, &[0x43, 0, 0, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(
        r,
        [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x16, 0xaa, 0, 0, 0, 0x03, 0xe8]
    );
    // MSF: track 1 at 00:02:00, lead-out at 1000 + 150 frames = 00:15:25.
    let (_, r) = packet(&mut d, &[0x43, 2, 0, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(&r[8..12], [0, 0, 2, 0]);
    assert_eq!(&r[16..20], [0, 0, 15, 25]);
    // Only the lead-out; a track past the last is an error.
    let (_, r) = packet(&mut d, &[0x43, 0, 0, 0, 0, 0, 0xaa, 0, 0xff], 0xfffe);
    assert_eq!(r.len(), 12);
    packet(&mut d, &[0x43, 0, 0, 0, 0, 0, 2, 0, 0xff], 0xfffe);
    assert_eq!(sense_of(&mut d), (SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD));
    // Session info, by the MMC format field and by the old control-byte one.
    let (_, a) = packet(&mut d, &[0x43, 0, 1, 0, 0, 0, 0, 0, 12], 0xfffe);
    let (_, b) = packet(&mut d, &[0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40], 0xfffe);
    assert_eq!(a, b);
    assert_eq!(a[..4], [0, 10, 1, 1]);
    // The allocation length truncates.
    let (_, r) = packet(&mut d, &[0x43, 0, 0, 0, 0, 0, 0, 0, 4], 0xfffe);
    assert_eq!(r, [0, 18, 1, 1]);
}

#[test]
fn get_configuration_profiles() {
    let mut small = cd(2048 * 1000);
    let (_, r) = packet(&mut small, &[0x46, 0, 0, 0, 0, 0, 0, 0x01, 0], 0xfffe);
    assert_eq!(r[6..8], PROFILE_CD_ROM.to_be_bytes());
    assert_eq!(
        u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize,
        r.len() - 4
    );
    // Feature 0 lists DVD-ROM then CD-ROM, CD-ROM current.
    assert_eq!(r[8..20], [0, 0, 3, 8, 0, 0x10, 0, 0, 0, 0x08, 1, 0]);
    // Features 1, 2, 3 follow.
    assert_eq!([r[21], r[33], r[41]], [1, 2, 3]);
    let big = Arc::new(crate::storage::ata::tests::Sparse(CD_MAX_BYTES + 2048));
    let mut dvd = AtaDrive::cdrom(Some(big), DriveIdentity::qemu(3));
    let (_, r) = packet(&mut dvd, &[0x46, 0, 0, 0, 0, 0, 0, 0, 8], 0xfffe);
    assert_eq!(r[6..8], PROFILE_DVD_ROM.to_be_bytes());
    // RT 2: exactly feature 3.
    let (_, r) = packet(&mut dvd, &[0x46, 2, 0, 3, 0, 0, 0, 1, 0], 0xfffe);
    assert_eq!(r.len(), 16);
    assert_eq!(r[9], 3);
    // RT 3 is reserved.
    packet(&mut dvd, &[0x46, 3, 0, 0, 0, 0, 0, 1, 0], 0xfffe);
    assert_eq!(dvd.error() >> 4, SENSE_ILLEGAL_REQUEST);
    // READ DVD STRUCTURE works on the DVD, not on the CD.
    let (_, r) = packet(&mut dvd, &[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04], 0xfffe);
    assert_eq!(r.len(), 2052);
    packet(&mut small, &[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04], 0xfffe);
    assert_eq!(
        sense_of(&mut small),
        (SENSE_ILLEGAL_REQUEST, ASC_INCOMPATIBLE_FORMAT)
    );
}

#[test]
fn mode_sense_pages() {
    let mut d = cd(2048 * 10);
    let (_, r) = packet(&mut d, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(r.len(), 30);
    assert_eq!(r[..2], [0, 28]);
    assert_eq!(r[8..10], [0x2a, 20]);
    let (_, r) = packet(&mut d, &[0x5a, 0, 0x01, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(r.len(), 16);
    let (_, r) = packet(&mut d, &[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(r.len(), 8 + 8 + 16 + 22);
    packet(&mut d, &[0x5a, 0, 0x05, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(sense_of(&mut d), (SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD));
    packet(&mut d, &[0x5a, 0, 0xea, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(sense_of(&mut d).1, ASC_SAVING_NOT_SUPPORTED);
    // PREVENT shows in the capabilities page's lock bit; eject is then refused.
    packet(&mut d, &[0x1e, 0, 0, 0, 1], 0xfffe);
    let (_, r) = packet(&mut d, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(r[14] & 2, 2);
    packet(&mut d, &[0x1b, 0, 0, 0, 2], 0xfffe);
    assert_eq!(sense_of(&mut d), (SENSE_NOT_READY, ASC_REMOVAL_PREVENTED));
    packet(&mut d, &[0x1e, 0, 0, 0, 0], 0xfffe);
    packet(&mut d, &[0x1b, 0, 0, 0, 2], 0xfffe);
    assert!(ok(&d));
    packet(&mut d, &[0x00], 0xfffe);
    assert_eq!(sense_of(&mut d).1, ASC_MEDIUM_NOT_PRESENT, "tray open");
    packet(&mut d, &[0x1b, 0, 0, 0, 3], 0xfffe);
    packet(&mut d, &[0x00], 0xfffe);
    assert!(ok(&d), "tray closed again");
}

#[test]
fn other_commands() {
    let mut d = cd(2048 * 10);
    let (_, r) = packet(&mut d, &[0x51, 0, 0, 0, 0, 0, 0, 0, 0xff], 0xfffe);
    assert_eq!(r.len(), 34);
    assert_eq!(r[2], 0x0e);
    let (_, r) = packet(&mut d, &[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8], 0xfffe);
    assert_eq!(r.len(), 8);
    packet(&mut d, &[0xbb], 0xfffe);
    assert!(ok(&d));
    for op in [0x01u8, 0x1a, 0x2a, 0xff, 0x55] {
        packet(&mut d, &[op], 0xfffe);
        assert_eq!(
            sense_of(&mut d),
            (SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
        );
    }
    // REQUEST SENSE with a short allocation length.
    packet(&mut d, &[0xff], 0xfffe);
    let (_, r) = packet(&mut d, &[0x03, 0, 0, 0, 4], 0xfffe);
    assert_eq!(r.len(), 4);
}

#[test]
fn random_packets_never_panic() {
    let mut rng = Rng(42);
    let mut d = cd(2048 * 64);
    for i in 0..20_000 {
        if i % 1000 == 0 {
            let media: Option<Arc<dyn BlockBackend>> = if rng.next().is_multiple_of(3) {
                None
            } else {
                Some(Arc::new(MemBackend::new((rng.next() % 100_000) as usize)))
            };
            d.change_media(media);
        }
        let mut cdb = [0u8; 12];
        for b in cdb.iter_mut() {
            *b = rng.byte();
        }
        // Mostly real opcodes, so their parameter handling gets exercised.
        const OPS: [u8; 19] = [
            0x00, 0x03, 0x12, 0x1b, 0x1e, 0x25, 0x28, 0x2b, 0x43, 0x46, 0x4a, 0x51, 0x5a, 0xa8,
            0xad, 0xbb, 0xbd, 0xbe, 0x12,
        ];
        if !rng.next().is_multiple_of(4) {
            cdb[0] = OPS[(rng.next() % OPS.len() as u64) as usize];
        }
        let limit = rng.next() as u16;
        let t = d.regs_mut();
        t.feature = rng.byte() & 1;
        t.lba_mid = limit as u8;
        t.lba_high = (limit >> 8) as u8;
        if d.execute(0xa0) != (Event::Block { irq: false }) {
            continue;
        }
        d.pio_write(&cdb);
        let mut buf = vec![0u8; 4096];
        for _ in 0..(rng.next() % 4) {
            if d.transfer().is_none() {
                break;
            }
            d.pio_read(&mut buf);
        }
    }
}
