//! Disk images (-drive file=): the input is written to a scratch file, opened through the block
//! layer as raw, qcow2 or probed (backing chain, header checks, imago), then read and written at
//! a few offsets. Writes only ever go to `-snapshot`'s temporary overlay: an image may name an
//! external data file or a backing file anywhere on the host, and the fuzzer must not write to
//! those.
//!
//! Input: flags (bits 0-1: format probe/raw/qcow2/qcow2; bit 2: -snapshot writes), four u64
//! offsets, then the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_block::{Disk, DiskOptions, ImageFormat};
use rvmm_fuzz::{scratch_path, Reader};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let offsets = [r.u64(), r.u64(), r.u64(), r.u64()];
    let image = r.rest();
    let path = scratch_path("image");
    std::fs::write(&path, image).expect("write the scratch image");
    let format = match flags & 3 {
        0 => None,
        1 => Some(ImageFormat::Raw),
        _ => Some(ImageFormat::Qcow2),
    };
    let snapshot = flags & 4 != 0;
    let opts = DiskOptions {
        path: path.clone(),
        format,
        readonly: !snapshot,
        direct: false,
        locking: true,
        snapshot,
        share_rw: false,
    };
    if let Ok((mut disk, _warning)) = Disk::open(&opts) {
        let size = disk.size();
        let mut buf = vec![0u8; 4096];
        for (i, &off) in offsets.iter().enumerate() {
            // Inside the disk, near its end, and (for one) wherever the input says.
            let at = match i {
                3 => off,
                _ if size == 0 => 0,
                _ => off % size,
            };
            let len = 512 << (off as usize % 4);
            let _ = disk.read(&mut buf[..len], at);
            if snapshot {
                let _ = disk.write(&buf[..len], at);
                let _ = disk.read(&mut buf[..len], at);
                match i {
                    1 => {
                        let _ = disk.write_zeroes(at, len as u64, off & 1 != 0);
                    }
                    2 => {
                        let _ = disk.discard(at, len as u64);
                    }
                    _ => {}
                }
            }
        }
        let _ = disk.flush();
    }
    let _ = std::fs::remove_file(&path);
});
