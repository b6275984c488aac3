//! Unit tests of the ATA command set.

use super::*;
use crate::storage::testing::{MemBackend, Rng};
use std::sync::atomic::Ordering;

/// Run `cmd` as a host would: read every data-in block, or feed `out` into data-out blocks.
/// Returns the final event and the bytes read.
pub(crate) fn run(d: &mut AtaDrive, cmd: u8, out: &[u8]) -> (Event, Vec<u8>) {
    let mut ev = d.execute(cmd);
    let (mut data, mut fed) = (Vec::new(), 0);
    let mut guard = 0;
    while let Event::Block { .. } = ev {
        guard += 1;
        assert!(guard < 1_000_000, "transfer never ends");
        let info = d.transfer().expect("a block without a transfer");
        ev = match info.dir {
            Direction::In => {
                let n = d.block().len();
                data.extend_from_slice(d.block());
                d.advance(n).expect("a full block advances")
            }
            Direction::Out => {
                let blk = d.block_mut();
                let n = blk.len();
                for b in blk.iter_mut() {
                    *b = out.get(fed).copied().unwrap_or(0);
                    fed += 1;
                }
                d.advance(n).expect("a full block advances")
            }
        };
    }
    (ev, data)
}

fn disk(sectors: u64) -> (AtaDrive, Arc<MemBackend>) {
    let b = Arc::new(MemBackend::patterned((sectors * SECTOR_SIZE) as usize));
    (AtaDrive::disk(b.clone(), DriveIdentity::qemu(1)), b)
}

fn word(id: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([id[2 * i], id[2 * i + 1]])
}

fn ata_string(id: &[u8], first: usize, words: usize) -> String {
    let mut s = Vec::new();
    for i in first..first + words {
        s.push(id[2 * i + 1]);
        s.push(id[2 * i]);
    }
    String::from_utf8(s).unwrap().trim_end().to_string()
}

fn set_lba28(d: &mut AtaDrive, lba: u32, count: u8) {
    let t = d.regs_mut();
    t.lba_low = lba as u8;
    t.lba_mid = (lba >> 8) as u8;
    t.lba_high = (lba >> 16) as u8;
    t.device = DEVICE_LBA | ((lba >> 24) as u8 & 0x0f);
    t.nsector = count;
}

fn set_lba48(d: &mut AtaDrive, lba: u64, count: u16) {
    let t = d.regs_mut();
    let b = lba.to_le_bytes();
    (t.lba_low, t.lba_mid, t.lba_high) = (b[0], b[1], b[2]);
    (t.hob_lba_low, t.hob_lba_mid, t.hob_lba_high) = (b[3], b[4], b[5]);
    t.nsector = count as u8;
    t.hob_nsector = (count >> 8) as u8;
    t.device = DEVICE_LBA;
}

#[test]
fn identify_device_fields() {
    let mut d = AtaDrive::disk(
        Arc::new(Sparse((1 << 20) * SECTOR_SIZE)),
        DriveIdentity::qemu(1),
    );
    let (ev, id) = run(&mut d, 0xec, &[]);
    assert_eq!(
        ev,
        Event::Done { irq: false },
        "PIO-in ends without an interrupt"
    );
    assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC);
    assert_eq!(id.len(), 512);
    assert_eq!(word(&id, 0), 0x0040);
    assert_eq!(ata_string(&id, 10, 10), "QM00001");
    assert_eq!(ata_string(&id, 23, 4), "2.5+");
    assert_eq!(ata_string(&id, 27, 20), "QEMU HARDDISK");
    // Raw bytes are swapped per word: "QE" is stored as "EQ".
    assert_eq!(&id[54..56], b"EQ");
    assert_eq!(word(&id, 47), 0x8010);
    assert_eq!(
        u32::from(word(&id, 60)) | u32::from(word(&id, 61)) << 16,
        1 << 20
    );
    assert_eq!(word(&id, 100), 0);
    assert_eq!(word(&id, 101), 0x10);
    assert_ne!(word(&id, 49) & (1 << 9), 0, "LBA");
    assert_ne!(word(&id, 49) & (1 << 8), 0, "DMA");
    assert_eq!(word(&id, 83) & 0x3400, 0x3400, "flush, flush ext, 48-bit");
    assert_eq!(word(&id, 86) & 0x3400, 0x3400);
    assert_eq!(word(&id, 88), 0x3f | 1 << 13, "UDMA 0-5, UDMA5 selected");
}

#[test]
fn identify_caps_lba28_capacity_for_big_disks() {
    let big = Arc::new(Sparse((1 << 29) * SECTOR_SIZE));
    let mut d = AtaDrive::disk(big, DriveIdentity::qemu(2));
    let (_, id) = run(&mut d, 0xec, &[]);
    assert_eq!(word(&id, 60), 0xffff);
    assert_eq!(word(&id, 61), 0x0fff);
    assert_eq!(word(&id, 100), 0);
    assert_eq!(word(&id, 101), 0x2000);
    assert_eq!(word(&id, 1), 16383);
}

/// A huge sparse disk: reads return zeros, writes are dropped.
pub(crate) struct Sparse(pub u64);

impl crate::storage::BlockBackend for Sparse {
    fn size(&self) -> u64 {
        self.0
    }
    fn readonly(&self) -> bool {
        false
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), rvmm_block::BlockError> {
        assert!(offset + buf.len() as u64 <= self.0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((offset + i as u64) / SECTOR_SIZE) as u8;
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), rvmm_block::BlockError> {
        assert!(offset + buf.len() as u64 <= self.0);
        Ok(())
    }
    fn flush(&self) -> Result<(), rvmm_block::BlockError> {
        Ok(())
    }
}

#[test]
fn lba48_reads_above_2_pow_28() {
    let big = Arc::new(Sparse((1 << 29) * SECTOR_SIZE));
    let mut d = AtaDrive::disk(big, DriveIdentity::qemu(1));
    let lba = (1u64 << 28) + 5;
    set_lba48(&mut d, lba, 2);
    let (ev, data) = run(&mut d, 0x25, &[]);
    assert_eq!(ev, Event::Done { irq: true });
    assert_eq!(data.len(), 1024);
    assert_eq!(data[0], lba as u8);
    assert_eq!(data[512], (lba + 1) as u8);
    // The last sector is readable, one past it is not.
    set_lba48(&mut d, (1 << 29) - 1, 1);
    assert_eq!(run(&mut d, 0x24, &[]).1.len(), 512);
    set_lba48(&mut d, 1 << 29, 1);
    let (ev, data) = run(&mut d, 0x24, &[]);
    assert_eq!(ev, Event::Done { irq: true });
    assert!(data.is_empty());
    assert_eq!(d.status() & STATUS_ERR, STATUS_ERR);
    assert_eq!(d.error(), ERROR_IDNF);
}

#[test]
fn lba28_boundaries_and_count_zero_means_256() {
    let (mut d, _) = disk(300);
    set_lba28(&mut d, 44, 0);
    let (ev, data) = run(&mut d, 0xc8, &[]);
    assert_eq!(ev, Event::Done { irq: true });
    assert_eq!(data.len(), 256 * 512);
    set_lba28(&mut d, 45, 0);
    run(&mut d, 0xc8, &[]);
    assert_eq!(d.error(), ERROR_IDNF);
    // 28-bit LBA wraps nothing: the top nibble counts.
    set_lba28(&mut d, 0x0100_0000, 1);
    run(&mut d, 0x20, &[]);
    assert_eq!(d.error(), ERROR_IDNF);
}

#[test]
fn pio_read_interrupts_per_block_and_data_matches() {
    let (mut d, b) = disk(64);
    set_lba28(&mut d, 3, 2);
    assert_eq!(d.execute(0x20), Event::Block { irq: true });
    assert_eq!(d.status() & STATUS_DRQ, STATUS_DRQ);
    let mut first = vec![0u8; 512];
    for chunk in first.chunks_mut(2).take(255) {
        assert_eq!(d.pio_read(chunk), None);
    }
    assert_eq!(
        d.pio_read(&mut first[510..]),
        Some(Event::Block { irq: true })
    );
    assert_eq!(first, b.data.lock().unwrap()[3 * 512..4 * 512]);
    let mut second = vec![0u8; 512];
    for chunk in second.chunks_mut(4).take(127) {
        assert_eq!(d.pio_read(chunk), None);
    }
    assert_eq!(
        d.pio_read(&mut second[508..]),
        Some(Event::Done { irq: false })
    );
    assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn writes_round_trip_with_every_command() {
    for (cmd, lba48, read) in [
        (0x30u8, false, 0x20u8),
        (0x34, true, 0x24),
        (0xca, false, 0xc8),
        (0x35, true, 0x25),
        (0xc5, false, 0xc4),
        (0x39, true, 0x29),
    ] {
        let (mut d, b) = disk(128);
        let payload: Vec<u8> = (0..3 * 512).map(|i| (i * 7 + cmd as usize) as u8).collect();
        if lba48 {
            set_lba48(&mut d, 10, 3);
        } else {
            set_lba28(&mut d, 10, 3);
        }
        let (ev, _) = run(&mut d, cmd, &payload);
        assert_eq!(ev, Event::Done { irq: true }, "command {cmd:#x}");
        assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC);
        assert_eq!(b.data.lock().unwrap()[10 * 512..13 * 512], payload[..]);
        let (_, back) = run(&mut d, read, &[]);
        assert_eq!(back, payload, "read back with {read:#x}");
    }
}

#[test]
fn write_multiple_uses_multiple_blocks() {
    let (mut d, _) = disk(128);
    d.regs_mut().nsector = 4;
    assert_eq!(run(&mut d, 0xc6, &[]).0, Event::Done { irq: true });
    set_lba28(&mut d, 0, 8);
    assert_eq!(d.execute(0xc5), Event::Block { irq: false });
    assert_eq!(d.transfer().unwrap().block_left, 4 * 512);
    // SET MULTIPLE refuses non-powers of two and more than 16.
    for n in [3u8, 32] {
        d.regs_mut().nsector = n;
        run(&mut d, 0xc6, &[]);
        assert_eq!(d.error(), ERROR_ABRT);
    }
    // Zero disables multiple mode; READ MULTIPLE then aborts.
    d.regs_mut().nsector = 0;
    run(&mut d, 0xc6, &[]);
    set_lba28(&mut d, 0, 1);
    run(&mut d, 0xc4, &[]);
    assert_eq!(d.error(), ERROR_ABRT);
}

#[test]
fn flush_reaches_the_backend() {
    let (mut d, b) = disk(8);
    assert_eq!(run(&mut d, 0xe7, &[]).0, Event::Done { irq: true });
    assert_eq!(run(&mut d, 0xea, &[]).0, Event::Done { irq: true });
    assert_eq!(b.flushes.load(Ordering::SeqCst), 2);
    b.fail.store(true, Ordering::SeqCst);
    run(&mut d, 0xe7, &[]);
    assert_eq!(d.status() & STATUS_ERR, STATUS_ERR);
}

#[test]
fn write_cache_off_flushes_every_write() {
    let (mut d, b) = disk(8);
    d.regs_mut().feature = 0x82;
    run(&mut d, 0xef, &[]);
    set_lba28(&mut d, 0, 2);
    run(&mut d, 0x30, &[1; 1024]);
    assert_eq!(b.flushes.load(Ordering::SeqCst), 1);
    let (_, id) = run(&mut d, 0xec, &[]);
    assert_eq!(word(&id, 85) & (1 << 5), 0);
}

#[test]
fn backend_errors_fail_the_command() {
    let (mut d, b) = disk(8);
    b.fail.store(true, Ordering::SeqCst);
    set_lba28(&mut d, 0, 1);
    let (ev, data) = run(&mut d, 0x20, &[]);
    assert_eq!(ev, Event::Done { irq: true });
    assert!(data.is_empty());
    assert_eq!(d.error(), ERROR_UNC);
    set_lba28(&mut d, 0, 1);
    run(&mut d, 0x30, &[0; 512]);
    assert_eq!(d.error(), ERROR_ABRT);
    assert!(d.transfer().is_none());
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut mem = MemBackend::new(4096);
    mem.readonly = true;
    let mut d = AtaDrive::disk(Arc::new(mem), DriveIdentity::qemu(1));
    set_lba28(&mut d, 0, 1);
    run(&mut d, 0x30, &[0; 512]);
    assert_eq!(d.error(), ERROR_ABRT);
}

#[test]
fn misc_commands() {
    let (mut d, _) = disk(8);
    for cmd in [0x91u8, 0xe1, 0x00] {
        assert_eq!(run(&mut d, cmd, &[]).0, Event::Done { irq: true });
        assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC, "{cmd:#x}");
    }
    run(&mut d, 0xe5, &[]);
    assert_eq!(d.regs().nsector, 0xff, "active");
    run(&mut d, 0xe0, &[]);
    run(&mut d, 0xe5, &[]);
    assert_eq!(d.regs().nsector, 0x00, "standby");
    set_lba28(&mut d, 7, 1);
    run(&mut d, 0x40, &[]);
    assert_eq!(d.status(), STATUS_DRDY | STATUS_DSC);
    set_lba28(&mut d, 8, 1);
    run(&mut d, 0x40, &[]);
    assert_eq!(d.error(), ERROR_IDNF);
    // A disk aborts the packet commands; diagnostics leave the signature.
    for cmd in [0xa1u8, 0xa0, 0x08, 0xb0, 0xff] {
        run(&mut d, cmd, &[]);
        assert_eq!(d.error(), ERROR_ABRT, "{cmd:#x}");
        assert_eq!(d.status(), STATUS_DRDY | STATUS_ERR);
    }
    run(&mut d, 0x90, &[]);
    assert_eq!(d.error(), 0x01);
    assert_eq!(d.signature(), 0x0000_0101);
}

#[test]
fn set_features_transfer_mode() {
    let (mut d, _) = disk(8);
    d.regs_mut().feature = 0x03;
    d.regs_mut().nsector = 0x22;
    run(&mut d, 0xef, &[]);
    let (_, id) = run(&mut d, 0xec, &[]);
    assert_eq!(word(&id, 63), 0x07 | 1 << 10, "MWDMA2 selected");
    assert_eq!(word(&id, 88), 0x3f, "no UDMA mode selected");
    d.regs_mut().feature = 0x03;
    d.regs_mut().nsector = 0x47;
    run(&mut d, 0xef, &[]);
    assert_eq!(d.error(), ERROR_ABRT, "UDMA7 is not supported");
    d.regs_mut().feature = 0x77;
    run(&mut d, 0xef, &[]);
    assert_eq!(d.error(), ERROR_ABRT);
}

#[test]
fn chs_addressing() {
    let (mut d, b) = disk(16 * 63 * 4);
    // Cylinder 1, head 2, sector 3 = (1 * 16 + 2) * 63 + 2.
    let t = d.regs_mut();
    (t.lba_high, t.lba_mid, t.device, t.lba_low, t.nsector) = (0, 1, 2, 3, 1);
    let (_, data) = run(&mut d, 0x20, &[]);
    let lba = (16 + 2) * 63 + 2;
    assert_eq!(data, b.data.lock().unwrap()[lba * 512..(lba + 1) * 512]);
    d.regs_mut().lba_low = 0;
    run(&mut d, 0x20, &[]);
    assert_eq!(d.error(), ERROR_IDNF, "sector 0 does not exist");
}

#[test]
fn random_task_files_never_panic() {
    let (mut d, _) = disk(1000);
    let mut rng = Rng(0x1234_5678);
    for _ in 0..20_000 {
        let t = d.regs_mut();
        for r in [
            &mut t.feature,
            &mut t.hob_feature,
            &mut t.nsector,
            &mut t.hob_nsector,
            &mut t.lba_low,
            &mut t.lba_mid,
            &mut t.lba_high,
            &mut t.hob_lba_low,
            &mut t.hob_lba_mid,
            &mut t.hob_lba_high,
            &mut t.device,
        ] {
            *r = rng.byte();
        }
        let cmd = rng.byte();
        let ev = d.execute(cmd);
        // Move a random amount of data, sometimes abandoning the command midway.
        if let Event::Block { .. } = ev {
            for _ in 0..(rng.next() % 8) {
                let n = (rng.next() % 600) as usize;
                let mut buf = vec![0u8; n];
                match d.transfer().map(|t| t.dir) {
                    Some(Direction::In) => {
                        d.pio_read(&mut buf);
                    }
                    Some(Direction::Out) => {
                        d.pio_write(&buf);
                    }
                    None => break,
                }
            }
        }
    }
}
