//! Split virtqueues (§2.7) and the request parsers behind them: the queue setup the transport
//! accepts, then every available chain walked (loops, lengths, indirect tables, buffers outside
//! RAM) and served by virtio-blk (on a scratch raw disk), virtio-rng or virtio-net's TX path,
//! with the used ring and the interrupt decision written back, as a device worker does.
//!
//! Input: flags (bits 0-1: blk, rng, net TX, blk again; bit 2: EVENT_IDX), queue size,
//! descriptor table / avail / used addresses (u32 each), next_avail, then guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_block::{Disk, DiskOptions, ImageFormat};
use rvmm_devices::virtio::{
    block, net, process_queue, rng, ChainError, DescChain, DeviceCounters, VirtioInterrupt,
};
use rvmm_fuzz::{guest_memory, scratch_path, Reader};
use std::sync::{OnceLock, RwLock};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x1_0000;
const DISK_SIZE: u64 = 0x1_0000;

/// One scratch raw disk per process: requests may write it.
fn disk() -> &'static RwLock<Disk> {
    static DISK: OnceLock<RwLock<Disk>> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = scratch_path("virtio-blk.raw");
        let f = std::fs::File::create(&path).expect("scratch disk");
        f.set_len(DISK_SIZE).expect("scratch disk size");
        let (disk, _) = Disk::open(&DiskOptions {
            path: path.clone(),
            format: Some(ImageFormat::Raw),
            readonly: false,
            direct: false,
            locking: false,
            snapshot: false,
            share_rw: false,
        })
        .expect("open the scratch disk");
        // Open files stay usable; nothing is left behind in /tmp.
        let _ = std::fs::remove_file(&path);
        RwLock::new(disk)
    })
}

fn serve(
    device: u8,
    mem: &GuestMemoryMmap,
    counters: &DeviceCounters,
    chain: Result<DescChain, ChainError>,
) -> u32 {
    match device {
        1 => rng::handle_request(mem, counters, chain),
        2 => {
            let _ = net::tx_frame(mem, chain);
            0
        }
        _ => {
            let id = *b"fuzz-serial-01234567";
            block::handle_request(mem, disk(), &id, counters, chain)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let size = r.u16();
    let (desc, avail, used) = (r.u32(), r.u32(), r.u32());
    let next_avail = r.u16();
    let mem = guest_memory(MEM_SIZE, r.rest());
    // The checks MmioTransport::build_queue makes before a queue goes live.
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
    queue.set_event_idx(flags & 4 != 0);
    queue.set_ready(true);
    if !queue.is_valid(&mem) {
        return;
    }
    queue.set_next_avail(next_avail);
    let interrupt = VirtioInterrupt::new().expect("eventfd");
    let counters = DeviceCounters::default();
    let device = flags & 3;
    // Twice: the second pass starts from where the first left the rings.
    for _ in 0..2 {
        let _ = process_queue(&mut queue, 0, &mem, &interrupt, |chain| {
            serve(device, &mem, &counters, chain)
        });
    }
});
