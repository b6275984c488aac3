//! virtio-net's receive path (§5.1.6.3-4): frames from the back-end placed into the RX buffers
//! the driver posted, with and without VIRTIO_NET_F_MRG_RXBUF (a frame spread over several
//! buffers, `num_buffers` in its header), buffers too small, read-only or outside RAM, rings
//! anywhere, frames waiting for buffers across passes, the used ring and the interrupt decision.
//! The back-end is a stand-in that hands out the input's frames, as a tap or passt would.
//!
//! Input: flags (bit 0: MRG_RXBUF; bit 1: EVENT_IDX; bit 2: a legacy 10-byte header), queue size, descriptor table / avail /
//! used addresses (u32 each), next_avail, a frame count (at most 8) and each frame (u16 length,
//! bytes; missing bytes are zero), then guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::virtio::backend::NetBackend;
use rvmm_devices::virtio::net::{Rx, MAX_FRAME};
use rvmm_devices::virtio::{DeviceCounters, VirtioInterrupt};
use rvmm_fuzz::{guest_memory, Reader};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

const MEM_SIZE: usize = 0x1_0000;

/// Hands out its frames one per read, then says none is waiting.
struct Frames(Mutex<Vec<Vec<u8>>>);

impl NetBackend for Frames {
    fn poll_fd(&self) -> RawFd {
        -1
    }

    fn offloads(&self) -> bool {
        true
    }

    fn set_offload(&self, _flags: u32) -> io::Result<()> {
        Ok(())
    }

    fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut frames = self.0.lock().unwrap();
        if frames.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let frame = frames.remove(0);
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&self, _buf: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let size = r.u16();
    let (desc, avail, used) = (r.u32(), r.u32(), r.u32());
    let next_avail = r.u16();
    let nframes = usize::from(r.u8() % 9);
    let mut frames = Vec::with_capacity(nframes);
    for _ in 0..nframes {
        let len = usize::from(r.u16()).min(MAX_FRAME);
        let mut frame = r.take(len).to_vec();
        frame.resize(len, 0);
        frames.push(frame);
    }
    let mem = guest_memory(MEM_SIZE, r.rest());
    // The checks the transports make before a queue goes live.
    let Ok(mut queue) = Queue::new(256) else {
        return;
    };
    if queue.try_set_size(size).is_err()
        || queue
            .try_set_desc_table_address(GuestAddress(desc.into()))
            .is_err()
        || queue
            .try_set_avail_ring_address(GuestAddress(avail.into()))
            .is_err()
        || queue
            .try_set_used_ring_address(GuestAddress(used.into()))
            .is_err()
    {
        return;
    }
    queue.set_event_idx(flags & 2 != 0);
    queue.set_ready(true);
    if !queue.is_valid(&mem) {
        return;
    }
    queue.set_next_avail(next_avail);
    let interrupt = VirtioInterrupt::new().expect("eventfd");
    let backend = Frames(Mutex::new(frames));
    // Bit 2: a legacy driver's 10-byte header (no VERSION_1, no MRG_RXBUF).
    let hdr_len = if flags & 4 != 0 && flags & 1 == 0 {
        10
    } else {
        12
    };
    let mut rx = Rx::new(flags & 1 != 0, hdr_len, Arc::new(DeviceCounters::default()));
    // A few passes, as the worker makes one per wake-up: a frame left waiting for buffers is
    // offered again.
    for _ in 0..3 {
        if rx.pump(&mut queue, &mem, &backend, &interrupt).is_err() {
            break;
        }
    }
});
