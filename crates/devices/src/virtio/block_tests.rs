//! virtio-blk through the MMIO transport: every request type, valid and malformed, on raw files,
//! and qcow2 images (with a backing file) checked afterwards by QEMU's own tools.

use super::block::*;
use super::mmio::MmioTransport;
use super::testing::*;
use super::{GuestMemory, VIRTIO_F_VERSION_1};
use rvmm_block::{Disk, DiskOptions, ImageFormat};
use std::path::{Path, PathBuf};
use std::process::Command;
use vm_memory::{Bytes, GuestAddress};

const HDR: u64 = 0x20000;
const DATA: u64 = 0x40000;
const STATUS: u64 = 0x30000;

struct Dev {
    t: MmioTransport,
    mem: GuestMemory,
    ring: Ring,
    done: u16,
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rvmm-blk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &Path, format: ImageFormat, readonly: bool) -> Dev {
    let (disk, _) = Disk::open(&DiskOptions {
        path: path.into(),
        format: Some(format),
        readonly,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .unwrap();
    let mem = memory();
    let t = MmioTransport::new(
        Box::new(BlockDevice::new(disk, Some("rvmm-serial-0123456789"))),
        mem.clone(),
    )
    .unwrap();
    let ring = Ring::new(0, 16);
    let s = init_device(&t, 1 << VIRTIO_F_VERSION_1, std::slice::from_ref(&ring));
    assert_eq!(s & 0x40, 0);
    Dev {
        t,
        mem,
        ring,
        done: 0,
    }
}

impl Dev {
    /// Submit a chain of `(addr, len, writable)` buffers; returns (used len, status byte).
    fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u32, u8) {
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let mut flags = if w { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.ring
                .set_desc(&self.mem, i as u16, addr, len, flags, i as u16 + 1);
        }
        self.ring.push(&self.mem, 0);
        notify(&self.t, 0);
        self.done += 1;
        assert!(self.ring.wait_used(&self.mem, self.done));
        let (_, len) = self.ring.used(&self.mem, self.done - 1);
        (len, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn header(&self, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> (u32, u8) {
        self.header(T_OUT, sector);
        self.mem.write_slice(data, GuestAddress(DATA)).unwrap();
        // Data split over two descriptors, to cover chained buffers.
        let half = (data.len() / 2) as u32;
        self.submit(&[
            (HDR, 16, false),
            (DATA, half, false),
            (DATA + u64::from(half), data.len() as u32 - half, false),
            (STATUS, 1, true),
        ])
    }

    fn read(&mut self, sector: u64, len: usize) -> (u32, u8, Vec<u8>) {
        self.header(T_IN, sector);
        self.mem
            .write_slice(&vec![0xeeu8; len], GuestAddress(DATA))
            .unwrap();
        let (used, status) = self.submit(&[
            (HDR, 16, false),
            (DATA, len as u32, true),
            (STATUS, 1, true),
        ]);
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        (used, status, buf)
    }

    fn segment(&mut self, kind: u32, sector: u64, count: u32, flags: u32) -> u8 {
        self.header(kind, sector);
        self.mem.write_obj(sector, GuestAddress(DATA)).unwrap();
        self.mem.write_obj(count, GuestAddress(DATA + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(DATA + 12)).unwrap();
        self.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .1
    }

    fn shutdown(self) {
        self.t.shutdown();
    }
}

fn raw_disk(dir: &Path, size: usize) -> PathBuf {
    let p = dir.join("disk.raw");
    std::fs::write(&p, vec![0u8; size]).unwrap();
    p
}

#[test]
fn config_space() {
    let dir = tempdir("config");
    let p = raw_disk(&dir, 1 << 20);
    let d = open(&p, ImageFormat::Raw, false);
    assert_eq!(rd(&d.t, 0x8), 2);
    let capacity = u64::from(rd(&d.t, 0x100)) | (u64::from(rd(&d.t, 0x104)) << 32);
    assert_eq!(capacity, 2048);
    assert_eq!(rd(&d.t, 0x114), 512, "blk_size");
    wr(&d.t, 0x14, 0);
    let f = rd(&d.t, 0x10);
    assert_ne!(f & (1 << 9), 0, "FLUSH");
    assert_ne!(f & (1 << 13), 0, "DISCARD");
    assert_ne!(f & (1 << 14), 0, "WRITE_ZEROES");
    assert_eq!(f & (1 << 5), 0, "not RO");
    d.shutdown();
    let d = open(&p, ImageFormat::Raw, true);
    wr(&d.t, 0x14, 0);
    assert_ne!(rd(&d.t, 0x10) & (1 << 5), 0, "RO");
    d.shutdown();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn raw_requests() {
    let dir = tempdir("raw");
    let p = raw_disk(&dir, 1 << 20);
    let mut d = open(&p, ImageFormat::Raw, false);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(d.write(8, &pattern), (1, S_OK));
    let (used, status, data) = d.read(8, 4096);
    assert_eq!((used, status), (4097, S_OK));
    assert_eq!(data, pattern);
    let c = d.t.counters().snapshot();
    assert_eq!(
        (c.requests, c.errors, c.bytes_to_guest, c.bytes_from_guest),
        (2, 0, 4096, 4096),
        "one 4 KiB write and one 4 KiB read counted"
    );

    // GET_ID: 20 bytes of serial.
    d.header(T_GET_ID, 0);
    let (used, status) = d.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!((used, status), (21, S_OK));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"rvmm-serial-01234567");

    // FLUSH.
    d.header(T_FLUSH, 0);
    assert_eq!(d.submit(&[(HDR, 16, false), (STATUS, 1, true)]), (1, S_OK));

    // WRITE_ZEROES and DISCARD (§5.2.6.2).
    assert_eq!(d.segment(T_WRITE_ZEROES, 8, 4, 0), S_OK);
    let (_, _, data) = d.read(8, 4096);
    assert!(data[..2048].iter().all(|&b| b == 0));
    assert_eq!(data[2048..], pattern[2048..]);
    assert_eq!(d.segment(T_WRITE_ZEROES, 16, 4, 1), S_OK, "with unmap");
    assert_eq!(d.segment(T_DISCARD, 0, 8, 0), S_OK);
    assert_eq!(
        d.segment(T_DISCARD, 0, 8, 1),
        S_UNSUPP,
        "unmap flag on discard"
    );
    assert_eq!(d.segment(T_WRITE_ZEROES, 0, 8, 2), S_UNSUPP, "unknown flag");
    assert_eq!(d.segment(T_DISCARD, 2047, 2, 0), S_IOERR, "past the end");
    assert_eq!(
        d.segment(T_WRITE_ZEROES, u64::MAX / 4, 1, 0),
        S_IOERR,
        "sector overflow"
    );

    // Unknown request type.
    d.header(99, 0);
    assert_eq!(d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).1, S_UNSUPP);
    let c = d.t.counters().snapshot();
    assert_eq!(
        c.errors, 5,
        "the five refused requests above are counted as errors"
    );
    d.shutdown();
    // The write reached the file.
    let file = std::fs::read(&p).unwrap();
    assert_eq!(&file[8 * 512 + 2048..8 * 512 + 4096], &pattern[2048..]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_requests_get_ioerr() {
    let dir = tempdir("malformed");
    let p = raw_disk(&dir, 1 << 20);
    let mut d = open(&p, ImageFormat::Raw, false);
    // Past the end, straddling the end, and a sector number that overflows.
    assert_eq!(d.read(2048, 512).1, S_IOERR);
    assert_eq!(d.read(2047, 1024).1, S_IOERR);
    assert_eq!(d.read(u64::MAX, 512).1, S_IOERR);
    assert_eq!(d.write(u64::MAX / 512 + 1, &[1; 512]).1, S_IOERR);
    // Lengths that are not whole sectors.
    assert_eq!(d.read(0, 100).1, S_IOERR);
    assert_eq!(d.write(0, &[1; 700]).1, S_IOERR);
    // A header shorter than 16 bytes.
    d.header(T_IN, 0);
    assert_eq!(
        d.submit(&[(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)])
            .1,
        S_IOERR
    );
    // Wrong direction: read data in a device-readable buffer, write data in a writable one.
    d.header(T_IN, 0);
    assert_eq!(
        d.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)])
            .1,
        S_IOERR
    );
    d.header(T_OUT, 0);
    assert_eq!(
        d.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
            .1,
        S_IOERR
    );
    // No writable status byte at all: completed with nothing written.
    d.header(T_FLUSH, 0);
    assert_eq!(d.submit(&[(HDR, 16, false)]), (0, 0xff));
    // Discard with the wrong segment size.
    d.header(T_DISCARD, 0);
    assert_eq!(
        d.submit(&[(HDR, 16, false), (DATA, 32, false), (STATUS, 1, true)])
            .1,
        S_IOERR
    );
    // Data buffer outside guest memory: the chain is refused whole (used length 0, no status).
    d.header(T_IN, 0);
    assert_eq!(
        d.submit(&[
            (HDR, 16, false),
            (MEM_SIZE - 256, 512, true),
            (STATUS, 1, true)
        ]),
        (0, 0xff)
    );
    // The device is still healthy.
    assert_eq!(d.write(0, &[5; 512]), (1, S_OK));
    assert_eq!(d.read(0, 512).2, vec![5; 512]);
    assert_eq!(rd(&d.t, 0x70) & 0x40, 0);
    d.shutdown();
    // Nothing touched the file outside sector 0.
    let file = std::fs::read(&p).unwrap();
    assert!(file[512..].iter().all(|&b| b == 0));

    // Read-only: writes, discards and write-zeroes fail, reads work.
    let mut d = open(&p, ImageFormat::Raw, true);
    assert_eq!(d.write(0, &[9; 512]).1, S_IOERR);
    assert_eq!(d.segment(T_WRITE_ZEROES, 0, 1, 0), S_IOERR);
    assert_eq!(d.read(0, 512).2, vec![5; 512]);
    d.shutdown();
    std::fs::remove_dir_all(dir).unwrap();
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed for this test (Debian: qemu-utils): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed: {text}");
    text
}

/// `qemu-io` reads `len` bytes at `offset` and checks every byte is `pattern`.
fn qemu_io_expect(path: &Path, pattern: u8, offset: u64, len: u64) {
    let cmd = format!("read -P {pattern:#x} {offset} {len}");
    let out = run(
        "qemu-io",
        &["-f", "qcow2", "-c", &cmd, path.to_str().unwrap()],
    );
    assert!(out.contains(&format!("read {len}/{len} bytes")), "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn qcow2_written_by_device_reads_back_in_qemu() {
    let dir = tempdir("qcow2");
    let img = dir.join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "4M"],
    );
    let mut d = open(&img, ImageFormat::Qcow2, false);
    assert_eq!(d.write(8, &[0xa5; 8192]).1, S_OK);
    assert_eq!(d.write(4096, &[0x5a; 4096]).1, S_OK);
    assert_eq!(d.read(8, 8192).2, vec![0xa5; 8192]);
    assert_eq!(d.read(0, 4096).2, vec![0; 4096], "unallocated reads zero");
    d.shutdown();
    qemu_io_expect(&img, 0xa5, 4096, 8192);
    qemu_io_expect(&img, 0x5a, 4096 * 512, 4096);
    qemu_io_expect(&img, 0, 0, 4096);
    let check = run("qemu-img", &["check", img.to_str().unwrap()]);
    assert!(check.contains("No errors were found"), "{check}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn qcow2_over_backing_file() {
    let dir = tempdir("backing");
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    run("qemu-img", &["create", "-q", "-f", "qcow2", b, "4M"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 0x11 0 1M", b]);
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", t],
    );
    let mut d = open(&top, ImageFormat::Qcow2, false);
    assert_eq!(
        d.read(0, 4096).2,
        vec![0x11; 4096],
        "data from the backing file"
    );
    // A write inside a backing-file cluster: the rest of the cluster must be copied up.
    assert_eq!(d.write(16, &[0x22; 1024]).1, S_OK);
    assert_eq!(d.segment(T_WRITE_ZEROES, 1024, 8, 0), S_OK);
    d.shutdown();
    qemu_io_expect(&top, 0x11, 0, 8192);
    qemu_io_expect(&top, 0x22, 8192, 1024);
    qemu_io_expect(
        &top,
        0x11,
        9216,
        1024 * 1024 - 9216 - 512 * 1024 + 512 * 1024 - 1024 * 512,
    );
    qemu_io_expect(&top, 0, 512 * 1024, 4096);
    // The backing file is untouched.
    qemu_io_expect(&base, 0x11, 0, 1024 * 1024);
    for img in [t, b] {
        let check = run("qemu-img", &["check", img]);
        assert!(check.contains("No errors were found"), "{check}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
