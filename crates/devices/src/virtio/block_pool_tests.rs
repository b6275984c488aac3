//! virtio-blk's I/O pool (block_pool.rs) under concurrency: requests complete out of order with
//! their own ids, several are in flight at once, a FLUSH waits for what came before it, a pause
//! and a stop wait for requests in flight. The requests here are served by a probe that holds
//! chosen ones until the test releases them; block_tests.rs covers the real disk.

use super::block_pool::{spawn_worker, IoPool, IO_THREADS};
use super::testing::*;
use super::worker::{PauseGate, Worker};
use super::{DescChain, GuestMemory, VirtioInterrupt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Request headers, 16 bytes per head.
const HDR: u64 = 0x2_0000;
const FLUSH: u32 = 4;
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Start(u64),
    Finish(u64),
}

#[derive(Default)]
struct ProbeState {
    held: HashSet<u64>,
    running: usize,
    max_running: usize,
    log: Vec<Event>,
    /// The thread that served each tag.
    threads: HashMap<u64, String>,
}

/// Serves requests by their tag (the header's sector field), holding the held ones.
#[derive(Default)]
struct Probe {
    st: Mutex<ProbeState>,
    cv: Condvar,
}

impl Probe {
    fn serve(&self, mem: &GuestMemoryMmap, chain: &DescChain) -> u32 {
        let mut hdr = [0u8; 16];
        chain.read_at(mem, 0, &mut hdr).unwrap();
        let tag = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        let mut st = self.st.lock().unwrap();
        st.running += 1;
        st.max_running = st.max_running.max(st.running);
        st.log.push(Event::Start(tag));
        let thread = std::thread::current().name().unwrap_or("").to_string();
        st.threads.insert(tag, thread);
        self.cv.notify_all();
        let deadline = Instant::now() + WAIT;
        while st.held.contains(&tag) && Instant::now() < deadline {
            st = self.cv.wait_timeout(st, WAIT).unwrap().0;
        }
        st.running -= 1;
        st.log.push(Event::Finish(tag));
        self.cv.notify_all();
        // The used length tells which request an entry belongs to.
        1000 + tag as u32
    }

    fn hold(&self, tags: &[u64]) {
        self.st.lock().unwrap().held.extend(tags);
    }

    fn release(&self, tags: &[u64]) {
        let mut st = self.st.lock().unwrap();
        for t in tags {
            st.held.remove(t);
        }
        self.cv.notify_all();
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&ProbeState) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut st = self.st.lock().unwrap();
        while !cond(&st) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }

    fn log(&self) -> Vec<Event> {
        self.st.lock().unwrap().log.clone()
    }
}

struct Rig {
    mem: GuestMemory,
    ring: Ring,
    probe: Arc<Probe>,
    gate: Arc<PauseGate>,
    notify: EventFd,
    worker: Option<Worker>,
    pool: Option<IoPool>,
}

fn is_flush(mem: &GuestMemoryMmap, chain: &DescChain) -> bool {
    let mut kind = [0u8; 4];
    chain.read_at(mem, 0, &mut kind).is_ok() && u32::from_le_bytes(kind) == FLUSH
}

fn rig() -> Rig {
    let mem = memory();
    let ring = Ring::new(0, 16);
    let mut q = Queue::new(16).unwrap();
    q.try_set_size(16).unwrap();
    q.try_set_desc_table_address(GuestAddress(ring.desc))
        .unwrap();
    q.try_set_avail_ring_address(GuestAddress(ring.avail))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(ring.used))
        .unwrap();
    q.set_ready(true);
    let probe = Arc::new(Probe::default());
    let gate = Arc::new(PauseGate::default());
    let p = probe.clone();
    let pool = IoPool::start(
        "blk-test",
        mem.clone(),
        q,
        Arc::new(VirtioInterrupt::new().unwrap()),
        gate.clone(),
        // A refused chain (a test moves a descriptor out of memory) completes with length 0.
        Box::new(move |mem: &GuestMemoryMmap, c| c.map_or(0, |c| p.serve(mem, &c))),
        is_flush,
        IO_THREADS,
    )
    .unwrap();
    let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let worker = spawn_worker(&pool, notify.try_clone().unwrap(), &gate).unwrap();
    Rig {
        mem,
        ring,
        probe,
        gate,
        notify,
        worker: Some(worker),
        pool: Some(pool),
    }
}

/// The tag of head `h`: not the head, so a used entry with the wrong id shows.
fn tag(h: u16) -> u64 {
    u64::from(h) * 7 + 3
}

impl Rig {
    /// Make head `h` (one 16-byte header descriptor) available with `kind`; notify if asked.
    fn submit(&mut self, h: u16, kind: u32, notify: bool) {
        let hdr = HDR + u64::from(h) * 16;
        self.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(tag(h), GuestAddress(hdr + 8)).unwrap();
        self.ring.set_desc(&self.mem, h, hdr, 16, 0, 0);
        self.ring.push(&self.mem, h);
        if notify {
            self.notify.write(1).unwrap();
        }
    }

    fn wait_used(&self, n: u16) {
        assert!(
            self.ring.wait_used_within(&self.mem, n, WAIT),
            "used index {} after {WAIT:?}, expected {n}",
            self.ring.used_idx(&self.mem)
        );
    }

    /// The used entries still in the ring, as (head, used length).
    fn used(&self) -> Vec<(u32, u32)> {
        let idx = self.ring.used_idx(&self.mem);
        (idx.saturating_sub(self.ring.size)..idx)
            .map(|n| self.ring.used(&self.mem, n))
            .collect()
    }

    fn stop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        if let Some(p) = self.pool.take() {
            p.stop();
        }
    }
}

fn entry(h: u16) -> (u32, u32) {
    (u32::from(h), 1000 + tag(h) as u32)
}

#[test]
fn requests_complete_out_of_order_with_their_ids() {
    let mut r = rig();
    r.probe.hold(&[tag(0)]);
    for h in 0..3 {
        r.submit(h, 0, h == 2);
    }
    // Head 0 is held: 1 and 2 overtake it (one thread serving in order would never get there).
    r.wait_used(2);
    let mut first: Vec<_> = r.used();
    first.sort_unstable();
    assert_eq!(first, vec![entry(1), entry(2)]);
    r.probe.release(&[tag(0)]);
    r.wait_used(3);
    assert_eq!(r.used()[2], entry(0));
    r.stop();
    assert_eq!(r.ring.used_idx(&r.mem), 3);
}

#[test]
fn several_requests_are_in_flight_at_once() {
    let mut r = rig();
    let tags: Vec<u64> = (0..12).map(tag).collect();
    r.probe.hold(&tags);
    for h in 0..12 {
        r.submit(h, 0, h == 11);
    }
    // The worker and every I/O thread each hold one request.
    r.probe.wait_for("a request on every thread", |st| {
        st.running == IO_THREADS + 1
    });
    assert_eq!(r.ring.used_idx(&r.mem), 0);
    r.probe.release(&tags);
    r.wait_used(12);
    let mut used = r.used();
    used.sort_unstable();
    assert_eq!(used, (0..12).map(entry).collect::<Vec<_>>());
    assert_eq!(r.probe.st.lock().unwrap().max_running, IO_THREADS + 1);
    r.stop();
}

#[test]
fn a_flush_waits_for_every_request_before_it() {
    let mut r = rig();
    r.probe.hold(&[tag(0), tag(1)]);
    r.submit(0, 0, false);
    r.submit(1, 0, false);
    r.submit(2, FLUSH, false);
    r.submit(3, 0, true);
    r.probe
        .wait_for("both writes to start", |st| st.log.len() >= 2);
    // Give a wrong implementation time to start the flush early.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !r.probe.log().contains(&Event::Start(tag(2))),
        "the flush started while earlier requests ran: {:?}",
        r.probe.log()
    );
    r.probe.release(&[tag(1)]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!r.probe.log().contains(&Event::Start(tag(2))));
    r.probe.release(&[tag(0)]);
    r.wait_used(4);
    let log = r.probe.log();
    let at = |e| log.iter().position(|x| *x == e).unwrap();
    assert!(
        at(Event::Finish(tag(0))) < at(Event::Start(tag(2))),
        "{log:?}"
    );
    assert!(
        at(Event::Finish(tag(1))) < at(Event::Start(tag(2))),
        "{log:?}"
    );
    // On the used ring too: both writes before the flush.
    let used = r.used();
    let pos = |h| used.iter().position(|e| *e == entry(h)).unwrap();
    assert!(pos(0) < pos(2) && pos(1) < pos(2), "{used:?}");
    r.stop();
}

#[test]
fn pause_waits_for_requests_in_flight() {
    let mut r = rig();
    r.probe.hold(&[tag(0), tag(1)]);
    r.submit(0, 0, false);
    r.submit(1, 0, true);
    r.probe
        .wait_for("both requests to start", |st| st.running == 2);
    // Let the worker finish its request and return from its handler call; the other one runs
    // on an I/O thread, counted by the pause gate only through its hold.
    let (on_worker, on_io) = {
        let st = r.probe.st.lock().unwrap();
        let name = |h| st.threads[&tag(h)].clone();
        assert_ne!(name(0), name(1));
        if name(0).contains("-io") {
            (1, 0)
        } else {
            (0, 1)
        }
    };
    r.probe.release(&[tag(on_worker)]);
    r.wait_used(1);
    let gate = r.gate.clone();
    let paused = Arc::new(AtomicBool::new(false));
    let p = paused.clone();
    let t = std::thread::spawn(move || {
        gate.pause();
        p.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !paused.load(Ordering::SeqCst),
        "pause returned while a request was in flight"
    );
    r.probe.release(&[tag(on_io)]);
    t.join().unwrap();
    // Paused: every request taken is on the used ring, as a snapshot taken now expects.
    let mut used = r.used();
    used.sort_unstable();
    assert_eq!(used, vec![entry(0), entry(1)]);
    // Nothing is taken while paused.
    r.submit(2, 0, true);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.probe.log().len(), 4);
    r.gate.resume();
    r.wait_used(3);
    r.stop();
}

#[test]
fn stop_finishes_every_request_taken() {
    let mut r = rig();
    let tags: Vec<u64> = (0..10).map(tag).collect();
    r.probe.hold(&tags);
    for h in 0..10 {
        r.submit(h, 0, h == 9);
    }
    r.probe
        .wait_for("every thread busy", |st| st.running == IO_THREADS + 1);
    let probe = r.probe.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        probe.release(&tags);
    });
    r.stop();
    releaser.join().unwrap();
    // Every chain the worker took is on the used ring once stop returns.
    let taken = r.probe.log().len() / 2;
    assert_eq!(usize::from(r.ring.used_idx(&r.mem)), taken);
    assert!(taken > IO_THREADS);
}

#[test]
fn a_driver_reusing_heads_in_flight_is_bounded() {
    let mut r = rig();
    r.probe.hold(&[tag(0)]);
    // The same head 0 made available a queue's worth of times while it is in flight.
    for i in 0..16 {
        r.submit(0, 0, i == 15);
    }
    r.probe
        .wait_for("every thread busy", |st| st.running == IO_THREADS + 1);
    // A queue's worth more; then the descriptor moves out of guest memory, so the chains taken
    // after that are refused (used length 0) rather than served.
    for i in 0..16 {
        r.submit(0, 0, i == 15);
    }
    std::thread::sleep(Duration::from_millis(50));
    r.ring.set_desc(&r.mem, 0, MEM_SIZE + 0x1000, 16, 0, 0);
    std::thread::sleep(Duration::from_millis(50));
    {
        let st = r.probe.st.lock().unwrap();
        assert_eq!(st.max_running, IO_THREADS + 1);
        assert_eq!(st.log.len(), IO_THREADS + 1, "{:?}", st.log);
    }
    r.probe.release(&[tag(0)]);
    r.wait_used(32);
    let used = r.used();
    assert!(
        used.iter().all(|&e| e == entry(0) || e == (0, 0)),
        "{used:?}"
    );
    // The first sixteen were taken before the move and served.
    let served = r.probe.log().len() / 2;
    assert!((16..=32).contains(&served), "{served}");
    r.stop();
}

#[test]
fn flushes_in_a_row_each_wait_for_what_came_before() {
    let mut r = rig();
    r.probe.hold(&[tag(0), tag(5)]);
    // A write, four flushes, a write, four flushes: more barriers than threads.
    for h in 0..10 {
        r.submit(h, if h % 5 == 0 { 0 } else { FLUSH }, h == 9);
    }
    r.probe.wait_for("the first write", |st| st.running >= 1);
    std::thread::sleep(Duration::from_millis(100));
    r.probe.release(&[tag(0)]);
    // Flushes 1-4 finish; 6-9 wait for write 5, which may run meanwhile but is held.
    r.probe.wait_for("the first flushes", |st| {
        (1..5).all(|h| st.log.contains(&Event::Finish(tag(h))))
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        (6..10).all(|h| !r.probe.log().contains(&Event::Start(tag(h)))),
        "{:?}",
        r.probe.log()
    );
    r.probe.release(&[tag(5)]);
    r.wait_used(10);
    let log = r.probe.log();
    let at = |e| log.iter().position(|x| *x == e).unwrap();
    for h in 1..10u16 {
        let write = if h < 5 { 0 } else { 5 };
        if h != 5 {
            assert!(
                at(Event::Finish(tag(write))) < at(Event::Start(tag(h))),
                "{log:?}"
            );
        }
    }
    // Each flush also waits for the flushes before it.
    for h in 2..5u16 {
        assert!(
            at(Event::Finish(tag(h - 1))) < at(Event::Start(tag(h))),
            "{log:?}"
        );
    }
    r.stop();
}
