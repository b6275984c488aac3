//! Transport and descriptor-chain tests, driven through the MMIO registers with virtio-rng (the
//! simplest device: it writes every writable byte it is given).

use super::mmio::MmioTransport;
use super::rng::RngDevice;
use super::testing::*;
use super::{
    COMMON_FEATURES, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
};
use crate::BusDevice;
use vm_memory::{Bytes, GuestAddress};

const V1: u64 = 1 << VIRTIO_F_VERSION_1;

fn rng() -> (MmioTransport, super::GuestMemory) {
    let mem = memory();
    let t = MmioTransport::new(Box::new(RngDevice::new()), mem.clone()).unwrap();
    (t, mem)
}

/// An rng driven to DRIVER_OK with `features` and one 16-entry queue at guest address 0.
fn rng_ready(features: u64) -> (MmioTransport, super::GuestMemory, Ring) {
    let (t, mem) = rng();
    let ring = Ring::new(0, 16);
    init_device(&t, features, std::slice::from_ref(&ring));
    (t, mem, ring)
}

#[test]
fn identity_registers() {
    let (t, _) = rng();
    assert_eq!(rd(&t, 0x0), 0x7472_6976);
    assert_eq!(rd(&t, 0x4), 2);
    assert_eq!(rd(&t, 0x8), 4);
    assert_eq!(rd(&t, 0xc), 0x554d_4551);
    assert_eq!(rd(&t, 0x34), 256);
    wr(&t, 0x30, 1);
    assert_eq!(rd(&t, 0x34), 0, "queue 1 does not exist");
    wr(&t, 0x14, 1);
    assert_eq!(rd(&t, 0x10), (COMMON_FEATURES >> 32) as u32);
    wr(&t, 0x14, 0);
    assert_eq!(rd(&t, 0x10), COMMON_FEATURES as u32);
    // Odd-sized and unaligned register accesses are ignored, not a crash.
    let mut b = [0xffu8; 2];
    t.read(0x0, &mut b);
    assert_eq!(b, [0, 0]);
    t.write(0x71, &[1]);
    assert_eq!(rd(&t, 0x70), 0);
    // Config space past its end reads zero.
    let mut c = [0xffu8; 8];
    t.read(0x100, &mut c);
    assert_eq!(c, [0; 8]);
}

#[test]
fn feature_negotiation() {
    let (t, _) = rng();
    // Without VERSION_1 the device refuses FEATURES_OK (modern only).
    let s = init_device(&t, 0, &[]);
    assert_eq!(s & STATUS_FEATURES_OK, 0);
    // Features the device never offered are refused too.
    let s = init_device(&t, V1 | (1 << 40), &[]);
    assert_eq!(s & STATUS_FEATURES_OK, 0);
    let s = init_device(&t, V1, &[Ring::new(0, 16)]);
    assert_eq!(
        s & (STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    assert_eq!(s & STATUS_DEVICE_NEEDS_RESET, 0);
}

/// One 64-byte writable buffer at 0x40000 as chain 0.
fn simple_request(mem: &super::GuestMemory, ring: &mut Ring) {
    ring.set_desc(mem, 0, 0x40000, 64, F_WRITE, 0);
    ring.push(mem, 0);
}

#[test]
fn rng_request_interrupt_and_reset() {
    let (t, mem, mut ring) = rng_ready(V1);
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1));
    assert_eq!(ring.used(&mem, 0), (0, 64));
    let c = t.counters().snapshot();
    assert_eq!(
        (c.requests, c.errors, c.bytes_to_guest, c.bytes_from_guest),
        (1, 0, 64, 0),
        "one 64-byte request counted"
    );
    let mut buf = [0u8; 64];
    mem.read_slice(&mut buf, GuestAddress(0x40000)).unwrap();
    assert!(buf.iter().any(|&b| b != 0), "random bytes written");
    assert_eq!(rd(&t, 0x60), 1, "used-ring interrupt pending");
    assert_eq!(t.interrupt().eventfd().read().unwrap(), 1);
    wr(&t, 0x64, 1);
    assert_eq!(rd(&t, 0x60), 0);

    // Reset: the status clears, queues are no longer ready, and notifications do nothing.
    wr(&t, 0x70, 0);
    assert_eq!(rd(&t, 0x70), 0);
    assert_eq!(rd(&t, 0x44), 0);
    ring.push(&mem, 0);
    notify(&t, 0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(ring.used_idx(&mem), 1);

    // And the device works again after a fresh initialization.
    let mut ring = Ring::new(1, 16);
    init_device(&t, V1, std::slice::from_ref(&ring));
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1));
}

#[test]
fn indirect_descriptors() {
    let (t, mem, mut ring) = rng_ready(V1 | (1 << VIRTIO_F_RING_INDIRECT_DESC));
    let table = 0x30000;
    ring.set_desc_at(&mem, table, 0, 0x40000, 16, F_WRITE | F_NEXT, 1);
    ring.set_desc_at(&mem, table, 1, 0x41000, 16, F_WRITE, 0);
    ring.set_desc(&mem, 0, table, 32, F_INDIRECT, 0);
    ring.push(&mem, 0);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1));
    assert_eq!(ring.used(&mem, 0), (0, 32));
}

#[test]
fn event_idx_suppresses_interrupts() {
    let (t, mem, mut ring) = rng_ready(V1 | (1 << VIRTIO_F_RING_EVENT_IDX));
    // used_event (after the avail ring) = 5: interrupt only once used idx passes 5 (§2.7.10).
    mem.write_obj(5u16, GuestAddress(ring.avail + 4 + 2 * 16))
        .unwrap();
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(rd(&t, 0x60), 0, "no interrupt requested yet");
    // The device publishes avail_event for the driver.
    let avail_event: u16 = mem.read_obj(GuestAddress(ring.used + 4 + 8 * 16)).unwrap();
    assert_eq!(avail_event, 1);
    mem.write_obj(0u16, GuestAddress(ring.avail + 4 + 2 * 16))
        .unwrap();
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 2));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        rd(&t, 0x60),
        0,
        "used_event 0 was passed already: no interrupt"
    );
}

#[test]
fn avail_no_interrupt_flag_suppresses_interrupts_without_event_idx() {
    let (t, mem, mut ring) = rng_ready(V1);
    // VRING_AVAIL_F_NO_INTERRUPT (§2.7.7.2): a polling driver.
    mem.write_obj(1u16, GuestAddress(ring.avail)).unwrap();
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(rd(&t, 0x60), 0, "no interrupt while the flag is set");
    assert!(t.interrupt().eventfd().read().is_err(), "line not raised");
    // Flag cleared: the next completion interrupts.
    mem.write_obj(0u16, GuestAddress(ring.avail)).unwrap();
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 2));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(rd(&t, 0x60), 1);
}

/// Submit chain 0 as set up by `build` and return the used length; the buffer at 0x40000 must
/// stay untouched (the request is refused, not half-done).
fn malformed(build: impl FnOnce(&super::GuestMemory, &Ring)) -> u32 {
    let (t, mem, mut ring) = rng_ready(V1 | (1 << VIRTIO_F_RING_INDIRECT_DESC));
    build(&mem, &ring);
    ring.push(&mem, 0);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 1), "malformed chain still completed");
    let mut buf = [0u8; 16];
    mem.read_slice(&mut buf, GuestAddress(0x40000)).unwrap();
    assert_eq!(buf, [0; 16], "nothing written for a malformed chain");
    assert_eq!(rd(&t, 0x70) & STATUS_DEVICE_NEEDS_RESET, 0);
    // The device still serves a good request afterwards.
    ring.set_desc(&mem, 5, 0x50000, 8, F_WRITE, 0);
    ring.push(&mem, 5);
    notify(&t, 0);
    assert!(ring.wait_used(&mem, 2));
    assert_eq!(ring.used(&mem, 1), (5, 8));
    let c = t.counters().snapshot();
    assert_eq!(
        (c.requests, c.errors, c.bytes_to_guest),
        (2, 1, 8),
        "the malformed chain counts as an error, the good one as 8 bytes served"
    );
    ring.used(&mem, 0).1
}

#[test]
fn looping_chain_is_refused() {
    assert_eq!(
        malformed(|mem, r| {
            r.set_desc(mem, 0, 0x40000, 8, F_WRITE | F_NEXT, 1);
            r.set_desc(mem, 1, 0x40008, 8, F_WRITE | F_NEXT, 0);
        }),
        0
    );
}

#[test]
fn chain_longer_than_queue_is_refused() {
    assert_eq!(
        malformed(|mem, r| {
            for i in 0..16u16 {
                r.set_desc(
                    mem,
                    i,
                    0x40000 + u64::from(i),
                    1,
                    F_WRITE | F_NEXT,
                    (i + 1) % 16,
                );
            }
        }),
        0
    );
}

#[test]
fn next_index_past_queue_is_refused() {
    assert_eq!(
        malformed(|mem, r| r.set_desc(mem, 0, 0x40000, 8, F_WRITE | F_NEXT, 16)),
        0
    );
}

#[test]
fn buffer_outside_memory_is_refused() {
    assert_eq!(
        malformed(|mem, r| {
            r.set_desc(mem, 0, 0x40000, 8, F_WRITE | F_NEXT, 1);
            r.set_desc(mem, 1, MEM_SIZE - 4, 64, F_WRITE, 0);
        }),
        0
    );
    assert_eq!(
        malformed(|mem, r| r.set_desc(mem, 0, u64::MAX - 8, 64, F_WRITE, 0)),
        0
    );
}

#[test]
fn wrong_direction_is_refused() {
    // rng only writes: a device-readable buffer is a malformed request.
    assert_eq!(malformed(|mem, r| r.set_desc(mem, 0, 0x40000, 8, 0, 0)), 0);
    // Readable after writable violates §2.7.4.2.
    assert_eq!(
        malformed(|mem, r| {
            r.set_desc(mem, 0, 0x40000, 8, F_WRITE | F_NEXT, 1);
            r.set_desc(mem, 1, 0x40008, 8, 0, 0);
        }),
        0
    );
}

#[test]
fn bad_indirect_tables_are_refused() {
    // Indirect table with a loop.
    assert_eq!(
        malformed(|mem, r| {
            let table = 0x30000;
            r.set_desc_at(mem, table, 0, 0x40000, 8, F_WRITE | F_NEXT, 1);
            r.set_desc_at(mem, table, 1, 0x40008, 8, F_WRITE | F_NEXT, 0);
            r.set_desc(mem, 0, table, 32, F_INDIRECT, 0);
        }),
        0
    );
    // Nested indirect, and a table length that is not a multiple of 16.
    assert_eq!(
        malformed(|mem, r| {
            let table = 0x30000;
            r.set_desc_at(mem, table, 0, 0x31000, 16, F_INDIRECT, 0);
            r.set_desc(mem, 0, table, 16, F_INDIRECT, 0);
        }),
        0
    );
    assert_eq!(
        malformed(|mem, r| r.set_desc(mem, 0, 0x30000, 17, F_INDIRECT, 0)),
        0
    );
    // Indirect table outside guest memory.
    assert_eq!(
        malformed(|mem, r| r.set_desc(mem, 0, MEM_SIZE - 16, 64, F_INDIRECT, 0)),
        0
    );
}

#[test]
fn avail_index_jump_needs_reset() {
    let (t, mem, mut ring) = rng_ready(V1);
    // More chains "available" than the queue holds: a broken driver (§2.7.13.3).
    ring.set_avail_idx(&mem, 100);
    notify(&t, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while rd(&t, 0x70) & STATUS_DEVICE_NEEDS_RESET == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_ne!(rd(&t, 0x70) & STATUS_DEVICE_NEEDS_RESET, 0);
    assert_eq!(
        rd(&t, 0x60) & 2,
        2,
        "config interrupt announces NEEDS_RESET"
    );
    assert_eq!(ring.used_idx(&mem), 0);
    // A reset clears it.
    wr(&t, 0x70, 0);
    assert_eq!(rd(&t, 0x70), 0);
}

#[test]
fn bad_queue_setup_needs_reset() {
    let (t, _) = rng();
    let mut ring = Ring::new(0, 16);
    ring.size = 12; // not a power of two
    let s = init_device(&t, V1, std::slice::from_ref(&ring));
    assert_ne!(s & STATUS_DEVICE_NEEDS_RESET, 0);
    let (t, _) = rng();
    let mut ring = Ring::new(0, 16);
    ring.used = MEM_SIZE + 0x1000; // outside guest memory
    let s = init_device(&t, V1, std::slice::from_ref(&ring));
    assert_ne!(s & STATUS_DEVICE_NEEDS_RESET, 0);
}

#[test]
fn paused_transport_takes_no_request_until_resumed() {
    let (t, mem, mut ring) = rng_ready(V1);
    t.pause();
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(ring.used_idx(&mem), 0, "request consumed while paused");
    assert_eq!(rd(&t, 0x60), 0, "interrupt while paused");
    t.resume();
    assert!(ring.wait_used(&mem, 1), "the notification was lost");
    assert_eq!(ring.used(&mem, 0), (0, 64));
    // A reset while paused stops the worker, and the next activation stays paused.
    t.pause();
    let mut ring = Ring::new(1, 16);
    init_device(&t, V1, std::slice::from_ref(&ring));
    simple_request(&mem, &mut ring);
    notify(&t, 0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(ring.used_idx(&mem), 0);
    t.resume();
    assert!(ring.wait_used(&mem, 1));
}

/// Found by fuzz/virtio_queue: with the used ring laid over the avail ring and the device one
/// chain behind, every used entry makes another chain available, and the worker never left
/// `process_queue` (a pause or reset waiting for it hung too). It now stops after a queue's
/// worth of chains and says so.
#[test]
fn overlapping_rings_do_not_hold_the_worker() {
    use super::{process_queue, Drained, VirtioInterrupt};
    use virtio_queue::{Queue, QueueT};
    let mem = memory();
    let ring = Ring::new(0, 16);
    for i in 0..16 {
        ring.set_desc(&mem, i, 0x8000, 16, F_WRITE, 0);
    }
    let mut q = Queue::new(16).unwrap();
    q.try_set_desc_table_address(GuestAddress(ring.desc))
        .unwrap();
    q.try_set_avail_ring_address(GuestAddress(ring.avail))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(ring.avail))
        .unwrap();
    q.set_ready(true);
    q.set_next_avail(0xffff);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let interrupt = VirtioInterrupt::new().unwrap();
        let mut served = 0;
        let drained = process_queue(&mut q, 0, &mem, &interrupt, |_| {
            served += 1;
            0
        });
        let _ = tx.send((drained.unwrap(), served));
    });
    let (drained, served) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("process_queue did not return");
    assert_eq!((drained, served), (Drained::Budget, 16));
}

/// Found by fuzz/virtio_queue: with the used ring's flags over the avail index, disabling and
/// re-enabling notifications flipped the avail index between "one more chain" and "none", and
/// `process_queue` looped for ever without taking a chain. That ring is now a queue fault.
#[test]
fn an_avail_index_the_device_itself_moves_is_a_fault() {
    use super::{process_queue, QueueFault, VirtioInterrupt};
    use virtio_queue::{Queue, QueueT};
    let mem = memory();
    let ring = Ring::new(0, 16);
    for i in 0..16 {
        ring.set_desc(&mem, i, 0x8000, 16, F_WRITE, 0);
    }
    let mut q = Queue::new(16).unwrap();
    q.try_set_desc_table_address(GuestAddress(ring.desc))
        .unwrap();
    // Used flags (VRING_USED_F_NO_NOTIFY while the device works) land on the avail index.
    q.try_set_avail_ring_address(GuestAddress(ring.avail - 2))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(ring.avail))
        .unwrap();
    q.set_ready(true);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let interrupt = VirtioInterrupt::new().unwrap();
        let res = process_queue(&mut q, 0, &mem, &interrupt, |_| 0);
        let _ = tx.send(res);
    });
    let res = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("process_queue did not return");
    assert!(matches!(res, Err(QueueFault::NoProgress)), "{res:?}");
}
