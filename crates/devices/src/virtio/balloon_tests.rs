use super::*;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::testing::{init_device, memory, notify, rd, wr, Ring, F_NEXT, MEM_SIZE};
use crate::virtio::{STATUS_DEVICE_NEEDS_RESET, VIRTIO_F_VERSION_1};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestMemoryBackend};

/// Where the PFN arrays and statistics buffers go.
const BUFS: u64 = 0x8_0000;
/// The pages the tests inflate.
const PAGES: u64 = 0xa_0000;
/// The config space in the virtio-mmio window.
const CONFIG: u64 = 0x100;

struct Driven {
    t: MmioTransport,
    shared: Arc<BalloonShared>,
    mem: crate::virtio::GuestMemory,
    rings: Vec<Ring>,
}

fn drive(options: BalloonOptions, features: u64) -> Driven {
    let mem = memory();
    let dev = BalloonDevice::new(options, MEM_SIZE).unwrap();
    let shared = dev.shared();
    let t = MmioTransport::new(Box::new(dev), mem.clone()).unwrap();
    let n = if options.free_page_reporting { 4 } else { 3 };
    let rings: Vec<Ring> = (0..n).map(|q| Ring::new(q, 16)).collect();
    let layout: Vec<Ring> = (0..n).map(|q| Ring::new(q, 16)).collect();
    let status = init_device(&t, features | (1 << VIRTIO_F_VERSION_1), &layout);
    assert_eq!(status & STATUS_DEVICE_NEEDS_RESET, 0);
    Driven {
        t,
        shared,
        mem,
        rings,
    }
}

fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Post `pfns` as one buffer (descriptor `desc`) on queue `q`.
fn post_pfns(d: &mut Driven, q: usize, desc: u16, pfns: &[u32]) {
    let addr = BUFS + u64::from(desc) * 0x1000;
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    d.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
    d.rings[q].set_desc(&d.mem, desc, addr, bytes.len() as u32, 0, 0);
    d.rings[q].push(&d.mem, desc);
    notify(&d.t, q as u32);
}

#[test]
fn identity_features_and_config() {
    let dev = BalloonDevice::new(BalloonOptions::default(), 1 << 30).unwrap();
    assert_eq!(dev.device_type(), 5);
    assert_eq!(dev.queue_max_sizes(), &[128, 128, 128]);
    // QEMU 7.2's defaults: statistics and page poison, 16 bytes of config.
    assert_eq!(
        dev.features() & 0xff,
        (1 << F_STATS_VQ) | (1 << F_PAGE_POISON)
    );
    assert_eq!(dev.config_size(), 16);
    let plain = BalloonDevice::new(
        BalloonOptions {
            page_poison: false,
            ..BalloonOptions::default()
        },
        1 << 30,
    )
    .unwrap();
    assert_eq!(plain.features() & 0xff, 1 << F_STATS_VQ);
    assert_eq!(plain.config_size(), 8);
    let all = BalloonDevice::new(
        BalloonOptions {
            deflate_on_oom: true,
            free_page_reporting: true,
            page_poison: true,
        },
        1 << 30,
    )
    .unwrap();
    assert_eq!(
        all.features() & 0xff,
        (1 << F_STATS_VQ) | (1 << F_DEFLATE_ON_OOM) | (1 << F_REPORTING) | (1 << F_PAGE_POISON)
    );
    assert_eq!(all.queue_max_sizes(), &[128, 128, 128, 32]);
    // QMP balloon: 256 MiB of 1 GiB -> 768 MiB in the balloon; above RAM means empty.
    let s = all.shared();
    s.set_target(256 << 20);
    let mut b = [0u8; 4];
    all.read_config(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), (768 << 20) >> 12);
    s.set_target(4 << 30);
    assert_eq!(s.num_pages(), 0);
    // 0 changes nothing (QEMU's `if (target)`).
    s.set_target(256 << 20);
    s.set_target(0);
    assert_eq!(s.num_pages(), (768 << 20) >> 12);
    assert_eq!(s.actual_bytes(), 1 << 30);
}

#[test]
fn the_driver_writing_actual_signals_a_change() {
    let d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    assert!(
        d.shared.changed_fd().read().is_err(),
        "changed before any write"
    );
    // Byte-wise writes, as a driver may do: the value is what the bytes make.
    wr(&d.t, CONFIG + 4, 16);
    assert_eq!(d.shared.changed_fd().read().unwrap(), 1);
    assert_eq!(d.shared.actual_bytes(), MEM_SIZE - 16 * 4096);
    assert_eq!(rd(&d.t, CONFIG + 4), 16);
    // The same value again is no change; num_pages is not the driver's to write.
    wr(&d.t, CONFIG + 4, 16);
    wr(&d.t, CONFIG, 99);
    assert!(d.shared.changed_fd().read().is_err());
    assert_eq!(rd(&d.t, CONFIG), 0);
    // A write past the config space is ignored.
    wr(&d.t, CONFIG + 8, 5);
    assert_eq!(rd(&d.t, CONFIG + 4), 16);
}

#[test]
fn inflated_pages_are_discarded_and_out_of_ram_pfns_ignored() {
    let mut d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    for i in 0..4u64 {
        d.mem
            .write_slice(&[0xaa; 4096], GuestAddress(PAGES + i * 4096))
            .unwrap();
    }
    let first = (PAGES >> 12) as u32;
    // Two contiguous pages, one page elsewhere, and garbage: past RAM, the last PFN.
    post_pfns(
        &mut d,
        INFLATEQ,
        0,
        &[first, first + 1, first + 3, 0x10_0000, u32::MAX],
    );
    wait("the inflate buffer", || d.rings[0].used_idx(&d.mem) == 1);
    let mem = d.mem.clone();
    let byte = |i: u64| mem.read_obj::<u8>(GuestAddress(PAGES + i * 4096)).unwrap();
    assert_eq!(byte(0), 0, "page 0 kept its data");
    assert_eq!(byte(1), 0);
    assert_eq!(byte(2), 0xaa, "a page not in the balloon lost its data");
    assert_eq!(byte(3), 0);
    // Deflate does not touch memory.
    d.mem.write_slice(&[0x55; 16], GuestAddress(PAGES)).unwrap();
    post_pfns(&mut d, DEFLATEQ, 0, &[first]);
    wait("the deflate buffer", || d.rings[1].used_idx(&d.mem) == 1);
    assert_eq!(byte(0), 0x55);
    assert_eq!(d.rings[0].used(&d.mem, 0), (0, 0));
}

#[test]
fn a_broken_inflate_chain_is_returned_not_fatal() {
    let mut d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    // A chain whose next descriptor is past the queue.
    d.rings[0].set_desc(&d.mem, 0, BUFS, 8, F_NEXT, 77);
    d.rings[0].push(&d.mem, 0);
    notify(&d.t, 0);
    wait("the broken chain", || d.rings[0].used_idx(&d.mem) == 1);
    // A buffer outside RAM.
    d.rings[0].set_desc(&d.mem, 1, MEM_SIZE + 0x1000, 8, 0, 0);
    d.rings[0].push(&d.mem, 1);
    notify(&d.t, 0);
    wait("the buffer outside RAM", || {
        d.rings[0].used_idx(&d.mem) == 2
    });
    assert_eq!(rd(&d.t, 0x70) & STATUS_DEVICE_NEEDS_RESET, 0);
}

fn stat(tag: u16, val: u64) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&val.to_le_bytes());
    v
}

#[test]
fn statistics_are_kept_until_the_host_polls() {
    let mut d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    let mut buf = stat(4, 1234 << 12);
    buf.extend(stat(5, 9999 << 12));
    buf.extend(stat(200, 1)); // unknown tag: ignored
    d.mem.write_slice(&buf, GuestAddress(BUFS)).unwrap();
    d.rings[2].set_desc(&d.mem, 3, BUFS, buf.len() as u32, 0, 0);
    d.rings[2].push(&d.mem, 3);
    notify(&d.t, 2);
    wait("the statistics", || {
        d.shared.guest_stats()["last-update"].as_i64() != Some(0)
    });
    let s = d.shared.guest_stats();
    assert_eq!(s["stats"]["stat-free-memory"], 1234u64 << 12);
    assert_eq!(s["stats"]["stat-total-memory"], 9999u64 << 12);
    assert_eq!(s["stats"]["stat-swap-in"], u64::MAX);
    assert_eq!(s["stats"].as_object().unwrap().len(), 10);
    // Held: not used until the host asks.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.rings[2].used_idx(&d.mem), 0);
    let saved = serde_json::to_value(&*d.shared.lock()).unwrap();
    assert_eq!(saved["held_stats"], 3);
    // A 1 s polling interval gives it back.
    d.shared.set_poll_interval(1).unwrap();
    assert_eq!(d.shared.poll_interval(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.rings[2].used_idx(&d.mem) == 0 {
        assert!(
            Instant::now() < deadline,
            "the timer never returned the buffer"
        );
        let mut p = libc::pollfd {
            fd: d.shared.timer_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 100) } == 1 {
            d.shared.timer_fired();
        }
    }
    assert_eq!(d.rings[2].used(&d.mem, 0), (3, 0));
    d.shared.set_poll_interval(0).unwrap();
}

#[test]
fn state_round_trips_and_bad_state_is_refused() {
    let d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    d.shared.set_target(MEM_SIZE / 2);
    wr(&d.t, CONFIG + 4, 7);
    let mut dev = BalloonDevice::new(BalloonOptions::default(), MEM_SIZE).unwrap();
    let st = serde_json::to_value(&*d.shared.lock()).unwrap();
    dev.restore_state(st.clone()).unwrap();
    assert_eq!(dev.save_state(), st);
    assert_eq!(dev.shared().num_pages(), ((MEM_SIZE / 2) >> 12) as u32);
    let mut bad = st.clone();
    bad["held_stats"] = 4000.into();
    assert!(dev.restore_state(bad).is_err());
    assert!(dev
        .restore_state(serde_json::json!({"num_pages": "x"}))
        .is_err());
}

#[test]
fn large_host_pages_are_discarded_once_whole() {
    let mem = memory();
    mem.write_slice(&[1; 0x4000], GuestAddress(PAGES)).unwrap();
    let mut d = Discarder::new(0x2000);
    let pfn = (PAGES >> 12) as u32;
    d.inflate(&mem, pfn);
    d.flush(&mem);
    assert_eq!(d.discarded, 0, "half a host page discarded");
    // A different host page drops the partial one (QEMU's behaviour).
    d.inflate(&mem, pfn + 2);
    d.inflate(&mem, pfn + 1);
    d.flush(&mem);
    assert_eq!(d.discarded, 0);
    d.inflate(&mem, pfn);
    d.inflate(&mem, pfn + 1);
    d.flush(&mem);
    assert_eq!(d.discarded, 0x2000);
    // Free page reports: aligned ranges in RAM only.
    d.discard_range(&mem, PAGES + 0x1000, 0x2000);
    d.discard_range(&mem, MEM_SIZE - 0x2000, 0x4000);
    d.flush(&mem);
    assert_eq!(d.discarded, 0x2000);
    d.discard_range(&mem, PAGES + 0x2000, 0x2000);
    d.flush(&mem);
    assert_eq!(d.discarded, 0x4000);
}

#[test]
fn free_page_reports_are_discarded() {
    let mut d = drive(
        BalloonOptions {
            free_page_reporting: true,
            ..BalloonOptions::default()
        },
        (1 << F_STATS_VQ) | (1 << F_REPORTING),
    );
    // PAGE_POISON not negotiated: a poison value is not kept.
    wr(&d.t, CONFIG + 12, 0xaa);
    assert_eq!(rd(&d.t, CONFIG + 12), 0);
    d.mem
        .write_slice(&[0x77; 0x2000], GuestAddress(PAGES))
        .unwrap();
    // Device-writable buffers naming the free pages.
    d.rings[3].set_desc(&d.mem, 0, PAGES, 0x2000, crate::virtio::testing::F_WRITE, 0);
    d.rings[3].push(&d.mem, 0);
    notify(&d.t, 3);
    wait("the report", || d.rings[3].used_idx(&d.mem) == 1);
    assert_eq!(
        d.mem.read_obj::<u8>(GuestAddress(PAGES + 0x1fff)).unwrap(),
        0
    );
}

/// RSS really drops: 8 MiB touched, then inflated.
#[test]
fn inflating_returns_memory_to_the_host() {
    let size = 16 << 20;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
    let rss = |mem: &GuestMemoryMmap| {
        let host = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
        let pages = size / 4096;
        let mut v = vec![0u8; pages];
        // SAFETY: mincore on the region's own mapping into a buffer of one byte per page.
        let r = unsafe { libc::mincore(host as *mut _, size, v.as_mut_ptr()) };
        assert_eq!(r, 0);
        v.iter().filter(|b| **b & 1 != 0).count()
    };
    mem.write_slice(&vec![3u8; 8 << 20], GuestAddress(0))
        .unwrap();
    let before = rss(&mem);
    assert!(before >= 2048, "{before} pages resident");
    let mut d = Discarder::new(host_page_size());
    for pfn in 0..2048 {
        d.inflate(&mem, pfn);
    }
    d.flush(&mem);
    assert_eq!(d.discarded, 8 << 20);
    let after = rss(&mem);
    assert!(after + 2048 <= before, "{before} -> {after} pages resident");
}

/// With PAGE_POISON negotiated and a poison value set, free page reports are returned without
/// discarding (QEMU: the pages must keep the guest's poison pattern).
#[test]
fn poisoned_free_pages_are_kept() {
    let mut d = drive(
        BalloonOptions {
            free_page_reporting: true,
            ..BalloonOptions::default()
        },
        (1 << F_STATS_VQ) | (1 << F_REPORTING) | (1 << F_PAGE_POISON),
    );
    wr(&d.t, CONFIG + 12, 0xaa);
    assert_eq!(rd(&d.t, CONFIG + 12), 0xaa);
    d.mem
        .write_slice(&[0xaa; 0x1000], GuestAddress(PAGES))
        .unwrap();
    d.rings[3].set_desc(&d.mem, 0, PAGES, 0x1000, crate::virtio::testing::F_WRITE, 0);
    d.rings[3].push(&d.mem, 0);
    notify(&d.t, 3);
    wait("the report", || d.rings[3].used_idx(&d.mem) == 1);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(PAGES)).unwrap(), 0xaa);
}

/// A snapshot taken while the device holds the statistics buffer: the restored device takes it
/// from the ring again and holds it (nothing returned), gives it back once when polled, and
/// holds the driver's next posting.
#[test]
fn a_held_statistics_buffer_survives_a_snapshot() {
    use crate::Persist;
    let mut d = drive(BalloonOptions::default(), 1 << F_STATS_VQ);
    let buf = stat(4, 0x5000);
    d.mem.write_slice(&buf, GuestAddress(BUFS)).unwrap();
    d.rings[2].set_desc(&d.mem, 3, BUFS, buf.len() as u32, 0, 0);
    d.rings[2].push(&d.mem, 3);
    notify(&d.t, 2);
    wait("the statistics", || d.shared.lock().held_stats == Some(3));
    d.t.pause();
    let state = d.t.save();
    let dev = BalloonDevice::new(BalloonOptions::default(), MEM_SIZE).unwrap();
    let shared = dev.shared();
    let counters = dev.counters();
    let t = MmioTransport::new(Box::new(dev), d.mem.clone()).unwrap();
    t.restore(state).unwrap();
    wait("the buffer taken again", || {
        counters.snapshot().requests == 1
    });
    assert_eq!(shared.lock().held_stats, Some(3));
    assert_eq!(d.rings[2].used_idx(&d.mem), 0, "returned at restore");
    assert_eq!(shared.guest_stats()["stats"]["stat-free-memory"], 0x5000);
    // Polled: given back once; the driver posts it again and it is held.
    shared.poll.write(1).unwrap();
    wait("the poll", || d.rings[2].used_idx(&d.mem) == 1);
    d.rings[2].push(&d.mem, 3);
    notify(&t, 2);
    wait("the new posting", || counters.snapshot().requests == 2);
    assert_eq!(
        d.rings[2].used_idx(&d.mem),
        1,
        "the new posting came straight back"
    );
    assert_eq!(shared.lock().held_stats, Some(3));
}
