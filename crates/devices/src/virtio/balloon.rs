//! virtio-balloon (virtio 1.2 §5.5) as QEMU 7.2's `virtio-balloon` (hw/virtio/virtio-balloon.c).
//!
//! Queues: inflate (0), deflate (1), statistics (2), and free page reporting (3) when
//! `free-page-reporting=on`. Inflated pages (4 KiB PFNs, §5.5.6) are discarded on the host with
//! `madvise(MADV_DONTNEED)` on the guest memory mapping, so the process's RSS drops; a PFN
//! outside RAM is ignored, as QEMU ignores one outside a RAM section. Deflating needs nothing:
//! the next guest access faults a zero page in. The statistics buffer the driver posts is kept
//! until the host wants fresh numbers (QMP `qom-set guest-stats-polling-interval`), then given
//! back, as QEMU does. The host's target (`num_pages`) and the guest's `actual` live in a
//! [`BalloonShared`] that QMP (`balloon`, `query-balloon`, `qom-get guest-stats`) reads and
//! writes from the VMM thread.

use super::worker::{self, Flow, Worker, WorkerEvent};
use super::{
    driver_wants_interrupt, queue_fault, read_config_bytes, ActivateContext, DescChain,
    DeviceCounters, QueueFault, VirtioDevice, VirtioError, VirtioInterrupt, COMMON_FEATURES,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

pub const TYPE_BALLOON: u32 = 5;

/// Feature bits (§5.5.3).
pub const F_STATS_VQ: u32 = 1;
pub const F_DEFLATE_ON_OOM: u32 = 2;
pub const F_PAGE_POISON: u32 = 4;
pub const F_REPORTING: u32 = 5;

/// The balloon's page: PFNs count 4 KiB pages whatever the host's page size (§5.5.6).
pub const PFN_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PFN_SHIFT;

const INFLATEQ: usize = 0;
const DEFLATEQ: usize = 1;
const STATSQ: usize = 2;
const REPORTQ: usize = 3;

/// QEMU's queue sizes (128 each, 32 for reporting).
const QUEUE_SIZES: [u16; 4] = [128, 128, 128, 32];

/// Config space: num_pages, actual, free_page_hint_cmd_id (always 0 here) and poison_val:
/// QEMU's size with page-poison (its default); 8 bytes without it.
const CONFIG_SIZE: usize = 16;
const CONFIG_SIZE_NO_POISON: usize = 8;

/// PFNs looked at per inflate/deflate buffer (Linux sends at most 256): a hostile driver's
/// gigabyte-long buffer cannot keep the worker (and a pause waiting for it) busy.
const MAX_PFNS_PER_BUFFER: usize = 16384;
/// Statistics entries read per buffer (Linux sends 10).
const MAX_STATS: usize = 64;

/// QEMU's names of the statistics tags (§5.5.6.3), in tag order.
pub const STAT_NAMES: [&str; 10] = [
    "stat-swap-in",
    "stat-swap-out",
    "stat-major-faults",
    "stat-minor-faults",
    "stat-free-memory",
    "stat-total-memory",
    "stat-available-memory",
    "stat-disk-caches",
    "stat-htlb-pgalloc",
    "stat-htlb-pgfail",
];

/// The device options (`-device virtio-balloon-pci,deflate-on-oom=on,free-page-reporting=on,
/// page-poison=off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonOptions {
    pub deflate_on_oom: bool,
    pub free_page_reporting: bool,
    /// VIRTIO_BALLOON_F_PAGE_POISON: on by default in QEMU 7.2.
    pub page_poison: bool,
}

impl Default for BalloonOptions {
    /// QEMU 7.2's defaults.
    fn default() -> Self {
        Self {
            deflate_on_oom: false,
            free_page_reporting: false,
            page_poison: true,
        }
    }
}

/// What the host and the driver agreed on, and the last statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BalloonState {
    /// The host's target: pages the driver should have in the balloon.
    num_pages: u32,
    /// Pages the driver says it has in the balloon.
    actual: u32,
    /// Tag-indexed statistics; u64::MAX where the driver gave none (QEMU's -1).
    stats: [u64; 10],
    /// Seconds since the epoch of the last statistics buffer (0: none yet).
    last_update: i64,
    /// `guest-stats-polling-interval` in seconds; 0 is off.
    poll_interval: u32,
    /// The statistics buffer the device holds (its head index), until it wants new numbers.
    held_stats: Option<u16>,
    /// The driver's page poison value (PAGE_POISON negotiated): free page reports are not
    /// discarded while it is non-zero, as in QEMU (a discarded page would read back as zeros).
    #[serde(default)]
    poison_val: u32,
}

impl Default for BalloonState {
    fn default() -> Self {
        Self {
            num_pages: 0,
            actual: 0,
            stats: [u64::MAX; 10],
            last_update: 0,
            poll_interval: 0,
            held_stats: None,
            poison_val: 0,
        }
    }
}

/// The worker's extra "queues" after the virtqueues: the host wants statistics, the host
/// changed the target.
const WAKE_POLL: usize = 4;
const WAKE_CONFIG: usize = 5;

/// What QMP and the VMM's event loop share with the device.
pub struct BalloonShared {
    ram_size: u64,
    state: Mutex<BalloonState>,
    /// Written when the driver changed `actual`: the VMM thread emits BALLOON_CHANGE.
    changed: EventFd,
    /// The statistics poll timer, served by the VMM thread's event loop.
    timer: Mutex<TimerFd>,
    /// Wakes the worker to give the statistics buffer back.
    poll: EventFd,
    /// Wakes the worker to raise the config interrupt (a new target).
    config: EventFd,
    /// Stands in for the reporting queue's eventfd when there is no such queue (made here:
    /// activation runs on a vCPU, whose filter has no eventfd2).
    no_report: EventFd,
}

impl BalloonShared {
    fn lock(&self) -> MutexGuard<'_, BalloonState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest's RAM in bytes, as the target and `actual` are measured.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// QMP `balloon`: the guest should have `target` bytes (QEMU's `virtio_balloon_to_target`:
    /// capped at the RAM size, 0 changes nothing).
    pub fn set_target(&self, target: u64) {
        let target = target.min(self.ram_size);
        if target == 0 {
            return;
        }
        let pages = (self.ram_size - target) >> PFN_SHIFT;
        self.lock().num_pages = u32::try_from(pages).unwrap_or(u32::MAX);
        let _ = self.config.write(1);
    }

    /// The target in pages (config `num_pages`).
    pub fn num_pages(&self) -> u32 {
        self.lock().num_pages
    }

    /// QMP `query-balloon`'s `actual`: the RAM the guest has, in bytes.
    pub fn actual_bytes(&self) -> u64 {
        let pages = u64::from(self.lock().actual);
        self.ram_size.saturating_sub(pages << PFN_SHIFT)
    }

    /// The eventfd that says `actual` changed (BALLOON_CHANGE); reading it clears it.
    pub fn changed_fd(&self) -> &EventFd {
        &self.changed
    }

    /// The statistics poll timer's fd (for the event loop).
    pub fn timer_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_raw_fd()
    }

    /// The poll timer expired: have the worker give the statistics buffer back.
    pub fn timer_fired(&self) {
        let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = timer.wait();
        let _ = self.poll.write(1);
    }

    /// `guest-stats-polling-interval`.
    pub fn poll_interval(&self) -> u32 {
        self.lock().poll_interval
    }

    /// Set `guest-stats-polling-interval` (seconds, 0 is off) and arm the timer.
    pub fn set_poll_interval(&self, secs: u32) -> std::io::Result<()> {
        self.lock().poll_interval = secs;
        self.arm_timer(secs)
    }

    fn arm_timer(&self, secs: u32) -> std::io::Result<()> {
        let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        let res = if secs == 0 {
            timer.clear()
        } else {
            let d = std::time::Duration::from_secs(u64::from(secs));
            timer.reset(d, Some(d))
        };
        res.map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    /// QMP `qom-get guest-stats`: `{"stats": {...}, "last-update": N}` as QEMU's
    /// `balloon_stats_get_all` (unset statistics are u64::MAX, QEMU's -1).
    pub fn guest_stats(&self) -> serde_json::Value {
        let st = self.lock();
        let stats: serde_json::Map<String, serde_json::Value> = STAT_NAMES
            .iter()
            .zip(st.stats.iter())
            .map(|(n, v)| (n.to_string(), (*v).into()))
            .collect();
        serde_json::json!({"stats": stats, "last-update": st.last_update})
    }
}

/// The balloon device.
pub struct BalloonDevice {
    options: BalloonOptions,
    /// Whether the running driver negotiated PAGE_POISON (None before activation).
    poison_acked: Option<bool>,
    shared: Arc<BalloonShared>,
    worker: Option<Worker>,
    counters: Arc<DeviceCounters>,
}

impl BalloonDevice {
    /// A balloon for a guest with `ram_size` bytes of RAM.
    pub fn new(options: BalloonOptions, ram_size: u64) -> std::io::Result<Self> {
        Ok(Self {
            options,
            poison_acked: None,
            shared: Arc::new(BalloonShared {
                ram_size,
                state: Mutex::new(BalloonState::default()),
                changed: EventFd::new(libc::EFD_NONBLOCK)?,
                timer: Mutex::new(TimerFd::new()?),
                poll: EventFd::new(libc::EFD_NONBLOCK)?,
                config: EventFd::new(libc::EFD_NONBLOCK)?,
                no_report: EventFd::new(libc::EFD_NONBLOCK)?,
            }),
            worker: None,
            counters: Arc::default(),
        })
    }

    pub fn shared(&self) -> Arc<BalloonShared> {
        self.shared.clone()
    }

    fn config_image(&self) -> [u8; CONFIG_SIZE] {
        let st = self.shared.lock();
        let mut c = [0u8; CONFIG_SIZE];
        c[0..4].copy_from_slice(&st.num_pages.to_le_bytes());
        c[4..8].copy_from_slice(&st.actual.to_le_bytes());
        c[12..16].copy_from_slice(&st.poison_val.to_le_bytes());
        c
    }

    fn config_len(&self) -> usize {
        if self.options.page_poison {
            CONFIG_SIZE
        } else {
            CONFIG_SIZE_NO_POISON
        }
    }
}

/// Discards host memory behind guest pages, a run of contiguous pages at a time.
pub struct Discarder {
    /// The host page size of the guest memory mapping.
    host_page: u64,
    /// A run of guest pages waiting to be discarded: (start, length) in bytes.
    run: Option<(u64, u64)>,
    /// QEMU's "partially ballooned page": a host page larger than 4 KiB is discarded only once
    /// every 4 KiB piece of it has been inflated (one such page tracked at a time).
    partial: Option<(u64, Vec<bool>)>,
    /// Bytes handed to madvise (for tests and statistics).
    pub discarded: u64,
}

impl Discarder {
    pub fn new(host_page: u64) -> Self {
        Self {
            host_page: host_page.max(PAGE_SIZE),
            run: None,
            partial: None,
            discarded: 0,
        }
    }

    /// Inflate guest page `pfn` (4 KiB); ignored unless the whole page is RAM.
    pub fn inflate(&mut self, mem: &GuestMemoryMmap, pfn: u32) {
        let gpa = u64::from(pfn) << PFN_SHIFT;
        if !in_one_region(mem, gpa, PAGE_SIZE) {
            tracing::debug!("virtio-balloon: PFN {pfn:#x} is not RAM; ignored");
            return;
        }
        if self.host_page == PAGE_SIZE {
            self.add(mem, gpa, PAGE_SIZE);
            return;
        }
        let base = gpa & !(self.host_page - 1);
        let subpages = (self.host_page / PAGE_SIZE) as usize;
        if self.partial.as_ref().is_some_and(|(b, _)| *b != base) {
            // Another host page: give up on the old one, as QEMU does.
            self.partial = None;
        }
        let (_, bits) = self
            .partial
            .get_or_insert_with(|| (base, vec![false; subpages]));
        bits[((gpa - base) / PAGE_SIZE) as usize] = true;
        if bits.iter().all(|b| *b) {
            self.partial = None;
            if in_one_region(mem, base, self.host_page) {
                self.add(mem, base, self.host_page);
            }
        }
    }

    /// Discard `len` bytes at `gpa` (a free page report), if RAM and host-page aligned.
    pub fn discard_range(&mut self, mem: &GuestMemoryMmap, gpa: u64, len: u64) {
        if (gpa | len) & (self.host_page - 1) != 0 || !in_one_region(mem, gpa, len) {
            return;
        }
        self.add(mem, gpa, len);
    }

    fn add(&mut self, mem: &GuestMemoryMmap, gpa: u64, len: u64) {
        match &mut self.run {
            Some((start, rlen))
                if *start + *rlen == gpa && in_one_region(mem, *start, *rlen + len) =>
            {
                *rlen += len;
            }
            _ => {
                self.flush(mem);
                self.run = Some((gpa, len));
            }
        }
    }

    /// Discard the pending run.
    pub fn flush(&mut self, mem: &GuestMemoryMmap) {
        let Some((gpa, len)) = self.run.take() else {
            return;
        };
        let Ok(host) = mem.get_host_address(GuestAddress(gpa)) else {
            return;
        };
        // SAFETY: [host, host + len) lies in one region of the guest memory mapping (checked
        // by in_one_region when the run grew); MADV_DONTNEED on a private anonymous mapping
        // only drops its pages, which later read as zero: guest memory stays mapped and valid.
        let r = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
        if r != 0 {
            tracing::warn!(
                "virtio-balloon: madvise(MADV_DONTNEED) of {len:#x} bytes at {gpa:#x}: {}",
                std::io::Error::last_os_error()
            );
        } else {
            self.discarded += len;
        }
    }
}

/// True if [gpa, gpa + len) lies in one region of guest memory.
fn in_one_region(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> bool {
    if len == 0 {
        return false;
    }
    let Some(r) = mem.find_region(GuestAddress(gpa)) else {
        return false;
    };
    let Some(last) = gpa.checked_add(len - 1) else {
        return false;
    };
    last <= r.last_addr().raw_value()
}

/// The worker's side: the queues and what it needs to serve them.
struct BalloonWorker {
    mem: super::GuestMemory,
    queues: Vec<Queue>,
    interrupt: Arc<VirtioInterrupt>,
    shared: Arc<BalloonShared>,
    counters: Arc<DeviceCounters>,
    discarder: Discarder,
}

impl BalloonWorker {
    /// Take every available chain of queue `q`, hand it to `handle`, put it on the used ring
    /// with length 0, and interrupt the driver once if it wants it.
    fn drain(
        &mut self,
        q: usize,
        mut handle: impl FnMut(&mut Discarder, &GuestMemoryMmap, &DescChain),
    ) -> Result<(), QueueFault> {
        let mem = self.mem.clone();
        let Some(queue) = self.queues.get_mut(q) else {
            return Ok(());
        };
        if !queue.ready() {
            return Ok(());
        }
        let mut used = false;
        // At most a queue's worth per call; the driver notifies again for more.
        for _ in 0..queue.size() {
            let chain = match queue.iter(&*mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(QueueFault::Avail(e)),
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match DescChain::parse(chain, &mem) {
                Ok(c) => {
                    handle(&mut self.discarder, &mem, &c);
                    // Discarded before the buffer goes back: the driver may touch the pages
                    // once it sees the buffer used (a page read after that must be zero).
                    self.discarder.flush(&mem);
                    self.counters.completed(0, c.readable_len());
                }
                Err(e) => {
                    tracing::debug!("virtio-balloon: {e}");
                    self.counters.failed();
                }
            }
            queue.add_used(&*mem, head, 0).map_err(QueueFault::Used)?;
            used = true;
        }
        if used && driver_wants_interrupt(queue, &mem)? {
            self.interrupt.signal_used_queue(q);
        }
        Ok(())
    }

    fn inflate_or_deflate(&mut self, q: usize) -> Result<(), QueueFault> {
        self.drain(q, |d, mem, c| {
            let n = (c.readable_len() / 4).min(MAX_PFNS_PER_BUFFER as u64) as usize;
            let mut buf = vec![0u8; n * 4];
            if c.read_at(mem, 0, &mut buf).is_err() {
                return;
            }
            if q != INFLATEQ {
                // Deflated pages fault back in on their next access: nothing to do.
                return;
            }
            for p in buf.chunks_exact(4) {
                d.inflate(mem, u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
            }
        })
    }

    fn report(&mut self) -> Result<(), QueueFault> {
        // QEMU skips the discard while the guest poisons free pages.
        let poisoned = self.shared.lock().poison_val != 0;
        self.drain(REPORTQ, |d, mem, c| {
            if poisoned {
                return;
            }
            for desc in c.writable() {
                d.discard_range(mem, desc.addr.raw_value(), u64::from(desc.len));
            }
        })
    }

    /// The driver posted a statistics buffer: read it and keep it (QEMU's
    /// `virtio_balloon_receive_stats`).
    fn receive_stats(&mut self) -> Result<(), QueueFault> {
        let mem = self.mem.clone();
        let Some(queue) = self.queues.get_mut(STATSQ) else {
            return Ok(());
        };
        if !queue.ready() {
            return Ok(());
        }
        // At most a queue's worth per call (a used ring over the avail ring cannot loop us).
        for _ in 0..queue.size() {
            let chain = match queue.iter(&*mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(QueueFault::Avail(e)),
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut st = self.shared.lock();
            // A second buffer while one is held: the driver broke the protocol; give the old
            // one back (as QEMU does).
            if let Some(old) = st.held_stats.replace(head) {
                drop(st);
                queue.add_used(&*mem, old, 0).map_err(QueueFault::Used)?;
                self.interrupt.signal_used_queue(STATSQ);
                st = self.shared.lock();
            }
            st.stats = [u64::MAX; 10];
            match DescChain::parse(chain, &mem) {
                Ok(c) => {
                    let n = (c.readable_len() / 10).min(MAX_STATS as u64) as usize;
                    let mut buf = vec![0u8; n * 10];
                    if c.read_at(&mem, 0, &mut buf).is_ok() {
                        for s in buf.chunks_exact(10) {
                            let tag = u16::from_le_bytes([s[0], s[1]]) as usize;
                            let mut v = [0u8; 8];
                            v.copy_from_slice(&s[2..10]);
                            if let Some(slot) = st.stats.get_mut(tag) {
                                *slot = u64::from_le_bytes(v);
                            }
                        }
                    }
                    self.counters.completed(0, c.readable_len());
                }
                Err(e) => {
                    tracing::debug!("virtio-balloon: statistics: {e}");
                    self.counters.failed();
                }
            }
            st.last_update = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
        }
        Ok(())
    }

    /// The host wants new statistics: give the held buffer back (QEMU's
    /// `balloon_stats_poll_cb`).
    fn poll_stats(&mut self) -> Result<(), QueueFault> {
        let Some(queue) = self.queues.get_mut(STATSQ) else {
            return Ok(());
        };
        let Some(head) = self.shared.lock().held_stats.take() else {
            return Ok(());
        };
        if !queue.ready() {
            return Ok(());
        }
        queue
            .add_used(&*self.mem, head, 0)
            .map_err(QueueFault::Used)?;
        self.interrupt.signal_used_queue(STATSQ);
        Ok(())
    }
}

impl VirtioDevice for BalloonDevice {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn name(&self) -> &'static str {
        "virtio-balloon"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        if self.options.free_page_reporting {
            &QUEUE_SIZES
        } else {
            &QUEUE_SIZES[..3]
        }
    }

    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES | (1 << F_STATS_VQ);
        if self.options.deflate_on_oom {
            f |= 1 << F_DEFLATE_ON_OOM;
        }
        if self.options.free_page_reporting {
            f |= 1 << F_REPORTING;
        }
        if self.options.page_poison {
            f |= 1 << F_PAGE_POISON;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let image = self.config_image();
        read_config_bytes(&image[..self.config_len()], offset, data);
    }

    fn config_size(&self) -> usize {
        self.config_len()
    }

    /// The driver writes `actual` (QEMU's `virtio_balloon_set_config`); num_pages is the host's.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut image = self.config_image();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        let len = self.config_len();
        let Some(end) = start.checked_add(data.len()).filter(|e| *e <= len) else {
            return;
        };
        image[start..end].copy_from_slice(data);
        let actual = u32::from_le_bytes([image[4], image[5], image[6], image[7]]);
        let mut st = self.shared.lock();
        // Kept only if PAGE_POISON is negotiated (QEMU's set_config); before DRIVER_OK the
        // device does not know the features yet and checks at activation.
        st.poison_val = match self.poison_acked {
            Some(false) => 0,
            _ => u32::from_le_bytes([image[12], image[13], image[14], image[15]]),
        };
        if st.actual != actual {
            st.actual = actual;
            drop(st);
            let _ = self.shared.changed.write(1);
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let ActivateContext {
            mem,
            queues,
            interrupt,
            pause,
            acked_features,
        } = ctx;
        let poison = acked_features & (1 << F_PAGE_POISON) != 0;
        self.poison_acked = Some(poison);
        if !poison {
            self.shared.lock().poison_val = 0;
        }
        let want = self.queue_max_sizes().len();
        if queues.len() != want {
            return Err(VirtioError::QueueCount {
                device: "virtio-balloon",
                expected: want,
                got: queues.len(),
            });
        }
        let io = |what, source| VirtioError::Io {
            device: "virtio-balloon",
            what,
            source,
        };
        let mut notify = Vec::with_capacity(6);
        let mut qs = Vec::with_capacity(4);
        for q in queues {
            notify.push(q.notify);
            qs.push(q.queue);
        }
        // Pad to the fixed indices of the wake events.
        while notify.len() < WAKE_POLL {
            notify.push(
                self.shared
                    .no_report
                    .try_clone()
                    .map_err(|e| io("clone an eventfd", e))?,
            );
        }
        notify.push(
            self.shared
                .poll
                .try_clone()
                .map_err(|e| io("clone the poll eventfd", e))?,
        );
        notify.push(
            self.shared
                .config
                .try_clone()
                .map_err(|e| io("clone the config eventfd", e))?,
        );
        let held = self.shared.lock().held_stats.is_some();
        let mut w = BalloonWorker {
            mem,
            queues: qs,
            interrupt,
            shared: self.shared.clone(),
            counters: self.counters.clone(),
            discarder: Discarder::new(host_page_size()),
        };
        // The driver may have posted its first statistics buffer before DRIVER_OK. A target set
        // before the driver ran needs no interrupt: the driver reads num_pages at probe (QEMU
        // does not notify config changes before DRIVER_OK either).
        if !held {
            let _ = notify[STATSQ].write(1);
        }
        let _ = self.shared.config.read();
        let worker = worker::spawn(
            "virtio-balloon".into(),
            notify,
            Vec::new(),
            &pause,
            move |ev| {
                let res = match ev {
                    WorkerEvent::Queue(q @ (INFLATEQ | DEFLATEQ)) => {
                        w.inflate_or_deflate(q).map_err(|e| (q, e))
                    }
                    WorkerEvent::Queue(STATSQ) => w.receive_stats().map_err(|e| (STATSQ, e)),
                    WorkerEvent::Queue(REPORTQ) => w.report().map_err(|e| (REPORTQ, e)),
                    WorkerEvent::Queue(WAKE_POLL) => w.poll_stats().map_err(|e| (STATSQ, e)),
                    WorkerEvent::Queue(WAKE_CONFIG) => {
                        w.interrupt.signal_config_change();
                        Ok(())
                    }
                    _ => Ok(()),
                };
                match res {
                    Ok(()) => Flow::Continue,
                    Err((q, e)) => {
                        queue_fault("virtio-balloon", q, e, &w.interrupt);
                        Flow::Stop
                    }
                }
            },
        )
        .map_err(|e| io("spawn worker", e))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        // The held buffer belonged to the old rings; the target and `actual` stay (QEMU's
        // reset keeps them, so a rebooted guest inflates to the target again).
        self.poison_acked = None;
        {
            let mut st = self.shared.lock();
            st.held_stats = None;
            st.poison_val = 0;
        }
        let _ = self.shared.poll.read();
        let _ = self.shared.config.read();
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::to_value(&*self.shared.lock()).unwrap_or_default()
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        let s: BalloonState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        if s.held_stats.is_some_and(|h| h >= QUEUE_SIZES[STATSQ]) {
            return Err("held statistics buffer index past the queue".into());
        }
        let interval = s.poll_interval;
        let mut s = s;
        // The held buffer is not kept: the restored transport goes on from the used index and
        // raises every queue's notification, so the worker takes that buffer from the ring
        // again (QEMU rewinds its statistics queue by one for the same reason). Keeping it as
        // well would return one buffer while holding the same one, every time the driver
        // posts it.
        s.held_stats = None;
        *self.shared.lock() = s;
        self.shared
            .arm_timer(interval)
            .map_err(|e| format!("statistics timer: {e}"))
    }
}

/// The host page size behind anonymous guest memory.
fn host_page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(PAGE_SIZE).max(PAGE_SIZE)
}

#[cfg(test)]
#[path = "balloon_tests.rs"]
mod tests;
