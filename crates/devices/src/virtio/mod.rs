//! Virtio devices (virtio 1.2) and their MMIO transport (§4.2).
//!
//! A device ([`VirtioDevice`]) knows nothing of its transport: it offers features and a config
//! space, and receives its runtime resources (guest memory, queues with their notification
//! eventfds, the interrupt) in `activate`, where it starts a worker thread so that device work
//! never runs on a vCPU thread.

pub mod backend;
pub mod balloon;
pub mod block;
pub mod block_pool;
pub mod chain;
pub mod input;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod restrict;
pub mod rng;
pub mod stream;
pub mod tap;
#[cfg(test)]
pub(crate) mod testing;
mod transport;
pub use transport::{QueueState, TransportState};
pub mod worker;

pub use chain::{ChainError, DescChain};
pub use mmio::{MmioSlot, MmioTransport, VIRTIO_MMIO_SIZE};

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as devices hold it: shared with the vCPUs, alive for the VM's lifetime.
pub type GuestMemory = Arc<GuestMemoryMmap>;

/// Device IDs (§5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_INPUT: u32 = 18;

/// Reserved feature bits (§6).
pub const VIRTIO_F_RING_INDIRECT_DESC: u32 = 28;
pub const VIRTIO_F_RING_EVENT_IDX: u32 = 29;
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Device status bits (§2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// InterruptStatus bits (§4.2.2).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Avail ring flag: the driver does not want used-buffer interrupts (§2.7.6).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Features every rvmm device offers on top of its own.
pub const COMMON_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_RING_INDIRECT_DESC) | (1 << VIRTIO_F_RING_EVENT_IDX);

/// Errors starting a device.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("{device}: expected {expected} queues, got {got}")]
    QueueCount {
        device: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{device}: {what}: {source}")]
    Io {
        device: &'static str,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// "No vector" for a queue or the config space (§4.1.4.3: VIRTIO_MSI_NO_VECTOR).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// The MSI-X vectors a virtio-pci transport assigns (§4.1.4.3: config_msix_vector and each
/// queue's queue_msix_vector), with the function's MSI-X state.
pub struct VirtioVectors {
    pub msix: Arc<crate::pci::Msix>,
    config: std::sync::atomic::AtomicU16,
    queues: Vec<std::sync::atomic::AtomicU16>,
}

impl VirtioVectors {
    pub fn new(msix: Arc<crate::pci::Msix>, queues: usize) -> Self {
        Self {
            msix,
            config: VIRTIO_MSI_NO_VECTOR.into(),
            queues: (0..queues).map(|_| VIRTIO_MSI_NO_VECTOR.into()).collect(),
        }
    }

    pub fn config_vector(&self) -> u16 {
        self.config.load(Ordering::Acquire)
    }

    pub fn set_config_vector(&self, v: u16) {
        self.config.store(v, Ordering::Release);
    }

    pub fn queue_vector(&self, q: usize) -> u16 {
        self.queues
            .get(q)
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    pub fn set_queue_vector(&self, q: usize, v: u16) {
        if let Some(slot) = self.queues.get(q) {
            slot.store(v, Ordering::Release);
        }
    }

    /// (config vector, queue vectors), for a snapshot.
    pub(crate) fn saved(&self) -> (u16, Vec<u16>) {
        (
            self.config_vector(),
            (0..self.queues.len())
                .map(|q| self.queue_vector(q))
                .collect(),
        )
    }

    /// Back to saved assignments; a vector past the table becomes NO_VECTOR, as the driver's
    /// own assignment would (§4.1.5.1.2).
    pub(crate) fn restore(&self, config: u16, queues: &[u16]) -> Result<(), String> {
        if queues.len() != self.queues.len() {
            return Err(format!(
                "{} queue vectors in the snapshot, {} queues here",
                queues.len(),
                self.queues.len()
            ));
        }
        let checked = |v: u16| {
            if usize::from(v) < self.msix.len() {
                v
            } else {
                VIRTIO_MSI_NO_VECTOR
            }
        };
        self.set_config_vector(checked(config));
        for (q, &v) in queues.iter().enumerate() {
            self.set_queue_vector(q, checked(v));
        }
        Ok(())
    }

    fn reset(&self) {
        self.set_config_vector(VIRTIO_MSI_NO_VECTOR);
        for q in &self.queues {
            q.store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        }
    }

    /// Fire `vector` if MSI-X is on; false means "use the INTx line".
    fn notify(&self, vector: u16) -> bool {
        if !self.msix.enabled() {
            return false;
        }
        if vector != VIRTIO_MSI_NO_VECTOR {
            self.msix.notify(vector);
        }
        true
    }
}

/// The interrupt of one virtio device, shared by the transport and the device worker.
///
/// `evt` is written to raise the line; the VMM connects it to the device's GSI (an irqfd, or the
/// user-space IOAPIC) as an edge, or as a level line whose resamples call [`Self::resample`].
/// Under virtio-pci with MSI-X enabled, the queue's or config's vector fires instead.
pub struct VirtioInterrupt {
    evt: EventFd,
    status: AtomicU32,
    needs_reset: AtomicBool,
    config_generation: AtomicU32,
    vectors: Option<VirtioVectors>,
}

impl VirtioInterrupt {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU32::new(0),
            vectors: None,
        })
    }

    /// An interrupt that uses MSI-X `vectors` while the driver has MSI-X enabled.
    pub fn with_vectors(vectors: VirtioVectors) -> std::io::Result<Self> {
        let mut i = Self::new()?;
        i.vectors = Some(vectors);
        Ok(i)
    }

    /// The MSI-X vector assignment, under virtio-pci.
    pub fn vectors(&self) -> Option<&VirtioVectors> {
        self.vectors.as_ref()
    }

    /// The eventfd that raises this line (to register as an irqfd).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        // A full eventfd counter still means "raised"; nothing to do on EAGAIN.
        let _ = self.evt.write(1);
    }

    fn raise_config(&self) {
        if let Some(v) = &self.vectors {
            if v.notify(v.config_vector()) {
                return;
            }
        }
        self.raise(INT_CONFIG);
    }

    /// Tell the driver that queue `queue`'s used ring changed.
    pub fn signal_used_queue(&self, queue: usize) {
        if let Some(v) = &self.vectors {
            if v.notify(v.queue_vector(queue)) {
                return;
            }
        }
        self.raise(INT_USED_RING);
    }

    /// Tell the driver that the config space changed (§4.2.2: bumps ConfigGeneration).
    pub fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.raise_config();
    }

    /// The device hit an error it cannot recover from without a reset (§2.1.1).
    pub fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::AcqRel) {
            self.raise_config();
        }
    }

    /// The interrupt controller lowered the level-triggered line at the guest's EOI: raise it
    /// again while InterruptStatus is non-zero (§4.2.2: the line follows that register).
    pub fn resample(&self) {
        if self.status() != 0 {
            let _ = self.evt.write(1);
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// (InterruptStatus, NEEDS_RESET, ConfigGeneration), for a snapshot.
    pub(crate) fn saved(&self) -> (u32, bool, u32) {
        (
            self.status(),
            self.needs_reset(),
            self.config_generation.load(Ordering::Acquire),
        )
    }

    /// Back to a snapshot's values; a pending interrupt is raised again (the line follows
    /// InterruptStatus, and a spurious edge only makes the driver look at its rings).
    pub(crate) fn restore(&self, status: u32, needs_reset: bool, config_generation: u32) {
        self.status.store(status, Ordering::Release);
        self.needs_reset.store(needs_reset, Ordering::Release);
        self.config_generation
            .store(config_generation, Ordering::Release);
        if status != 0 {
            let _ = self.evt.write(1);
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::Acquire)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Read and clear the status (virtio-pci's ISR, §4.1.4.5: reading it acknowledges).
    pub(crate) fn take_status(&self) -> u32 {
        self.status.swap(0, Ordering::AcqRel)
    }

    fn reset(&self) {
        self.status.store(0, Ordering::Release);
        self.needs_reset.store(false, Ordering::Release);
        if let Some(v) = &self.vectors {
            v.reset();
        }
        // Drain a pending edge so a reset device starts quiet.
        let _ = self.evt.read();
    }
}

/// What a device has moved, for rvmm's statistics (`-exit-stats`, QMP `x-query-exit-stats`).
/// The device's worker updates it with relaxed atomics; any thread may read it at any time.
/// Bytes are payload only: random bytes (rng), sector data and the GET_ID serial (blk), Ethernet
/// frames without the virtio-net header (net).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes_to_guest: AtomicU64,
    bytes_from_guest: AtomicU64,
}

/// A reading of [`DeviceCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCountersSnapshot {
    /// Requests (rng, blk) or frames (net) completed, failed ones included.
    pub requests: u64,
    /// Requests completed with an error status, malformed chains, and RX buffers returned unused.
    pub errors: u64,
    /// Payload the device wrote into guest memory (rng output, blk reads and serials, net RX).
    pub bytes_to_guest: u64,
    /// Payload the device took from guest memory (blk writes, net TX).
    pub bytes_from_guest: u64,
}

impl DeviceCounters {
    /// One request done: `to_guest` bytes written into the guest, `from_guest` read from it.
    pub fn completed(&self, to_guest: u64, from_guest: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes_to_guest.fetch_add(to_guest, Ordering::Relaxed);
        self.bytes_from_guest
            .fetch_add(from_guest, Ordering::Relaxed);
    }

    /// One request failed or was malformed.
    pub fn failed(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A buffer was returned unused while its request goes on (net RX keeps the frame for the
    /// next buffer): an error, but not a request of its own.
    pub fn refused_buffer(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now (each one read atomically, not all at one instant).
    pub fn snapshot(&self) -> DeviceCountersSnapshot {
        DeviceCountersSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bytes_to_guest: self.bytes_to_guest.load(Ordering::Relaxed),
            bytes_from_guest: self.bytes_from_guest.load(Ordering::Relaxed),
        }
    }
}

/// One queue handed to a device at activation, with the eventfd the driver's notifications
/// arrive on (a KVM ioeventfd on QueueNotify).
pub struct ActiveQueue {
    pub queue: Queue,
    pub notify: EventFd,
}

/// What a device receives when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemory,
    pub queues: Vec<ActiveQueue>,
    pub interrupt: Arc<VirtioInterrupt>,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// The transport's pause gate, for the device's workers ([`worker::spawn`]).
    pub pause: Arc<worker::PauseGate>,
}

/// A virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// Device ID (§5).
    fn device_type(&self) -> u32;
    /// A short name for messages and thread names.
    fn name(&self) -> &'static str;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers, including [`COMMON_FEATURES`].
    fn features(&self) -> u64;
    /// Read from the device-specific config space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Bytes of config space, for transports that size a window after it (virtio-pci's legacy
    /// I/O BAR).
    fn config_size(&self) -> usize {
        0
    }
    /// PCI class and subclass, where QEMU gives a device of this type a more specific one than
    /// its type's (virtio-keyboard-pci and virtio-mouse-pci).
    fn pci_class(&self) -> Option<(u8, u8)> {
        None
    }
    /// Write to the config space; read-only fields ignore writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Start processing the queues (on a worker thread).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError>;
    /// Stop the worker and drop the queues (device reset, §2.4).
    fn reset(&mut self);
    /// Write any cached data to stable storage (clean VM shutdown).
    fn flush(&self) {}
    /// The device's statistics; the same counters for the device's whole life (resets keep them).
    fn counters(&self) -> Arc<DeviceCounters>;
    /// What the device keeps beyond its rings and the transport (config-space selectors,
    /// queued reports), for snapshots; Null for a device without such state.
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Back to `state` from [`Self::save_state`], after a reset and before the activation.
    /// Untrusted: sizes are checked.
    fn restore_state(&mut self, _state: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// Copy `data` out of a config-space byte image at `offset`, zero-filling past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Why a queue stopped being usable; the device then enters NEEDS_RESET (§2.1.1).
#[derive(Debug, thiserror::Error)]
pub enum QueueFault {
    #[error("available ring: {0:?}")]
    Avail(virtio_queue::Error),
    #[error("used ring: {0:?}")]
    Used(virtio_queue::Error),
    #[error(
        "the available index keeps announcing chains the ring does not give (rings overlapping?)"
    )]
    NoProgress,
    /// Reported already: another thread's used-ring write failed (block_pool.rs).
    #[error("the used ring failed earlier")]
    Broken,
}

/// What [`process_queue`] left on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No chain is available any more.
    All,
    /// It stopped after a queue's worth of chains with more still available: the caller comes
    /// back later (a worker signals the queue's notification eventfd again). Otherwise a
    /// driver whose rings overlap, or whose buffers the device writes over the avail ring,
    /// can make every completed chain announce another one, and the worker (and a pause or
    /// reset that waits for it) never gets out.
    Budget,
}

/// Take the available chains of `queue` (at most a queue's worth), hand each (checked) to
/// `handle`, and put it on the used ring with the length `handle` returns; then interrupt the
/// driver if it asked for one (EVENT_IDX, §2.7.10). A malformed chain reaches `handle` as `Err`,
/// with its head index, so the device can complete it with an error status. Public for the
/// fuzz targets (fuzz/).
#[doc(hidden)]
pub fn process_queue(
    queue: &mut Queue,
    index: usize,
    mem: &GuestMemoryMmap,
    interrupt: &VirtioInterrupt,
    mut handle: impl FnMut(Result<DescChain, ChainError>) -> u32,
) -> Result<Drained, QueueFault> {
    use virtio_queue::{QueueOwnedT, QueueT};
    if !queue.ready() {
        return Ok(Drained::All);
    }
    let mut budget = queue.size().max(1);
    let mut drained = Drained::All;
    let mut used_any = false;
    // Passes in a row that took no chain although the avail index said there were some.
    let mut idle = 0;
    'passes: loop {
        queue.disable_notification(mem).map_err(QueueFault::Used)?;
        let mut took = false;
        loop {
            if budget == 0 {
                drained = Drained::Budget;
                break 'passes;
            }
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(QueueFault::Avail(e)),
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let len = handle(DescChain::parse(chain, mem));
            queue.add_used(mem, head, len).map_err(QueueFault::Used)?;
            used_any = true;
            took = true;
            budget -= 1;
        }
        // Re-enable, then look again: a chain added in between would otherwise wait (§2.7.10).
        if !queue.enable_notification(mem).map_err(QueueFault::Used)? {
            break;
        }
        // A driver's new chain shows up in the next pass. Twice nothing: the device's own ring
        // writes move the avail index (a used ring over it), which no pass will ever satisfy.
        idle = if took { 0 } else { idle + 1 };
        if idle == 2 {
            return Err(QueueFault::NoProgress);
        }
    }
    if used_any && driver_wants_interrupt(queue, mem)? {
        interrupt.signal_used_queue(index);
    }
    Ok(drained)
}

/// Whether the driver wants an interrupt for the chains just used: EVENT_IDX's used_event
/// when negotiated (§2.7.10), else the avail ring's VRING_AVAIL_F_NO_INTERRUPT flag (§2.7.7.2:
/// the device should not interrupt while it is set), which virtio-queue does not look at.
pub(crate) fn driver_wants_interrupt(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, QueueFault> {
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem).map_err(QueueFault::Used);
    }
    // The used ring writes before the flags read (as needs_notification does).
    std::sync::atomic::fence(Ordering::SeqCst);
    let flags: u16 = mem
        .load(GuestAddress(queue.avail_ring()), Ordering::Acquire)
        .map_err(|e| QueueFault::Avail(virtio_queue::Error::GuestMemory(e)))?;
    Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
}

/// The device-wide reaction to a queue fault: log it and enter NEEDS_RESET.
pub(crate) fn queue_fault(name: &str, q: usize, e: QueueFault, interrupt: &VirtioInterrupt) {
    tracing::warn!("{name}: queue {q}: {e}; device needs reset");
    interrupt.set_needs_reset();
}

/// Activate a device with one request queue (rng, blk): its worker drains the queue on every
/// notification through `handle`, which returns the used length of a request; a queue the
/// driver broke stops the worker and flags NEEDS_RESET.
pub(crate) fn activate_request_queue(
    device: &'static str,
    ctx: ActivateContext,
    mut handle: impl FnMut(&GuestMemoryMmap, Result<DescChain, ChainError>) -> u32 + Send + 'static,
) -> Result<worker::Worker, VirtioError> {
    let ActivateContext {
        mem,
        mut queues,
        interrupt,
        pause,
        ..
    } = ctx;
    if queues.len() != 1 {
        return Err(VirtioError::QueueCount {
            device,
            expected: 1,
            got: queues.len(),
        });
    }
    let q = queues.remove(0);
    let mut queue = q.queue;
    let again = q.notify.try_clone().map_err(|source| VirtioError::Io {
        device,
        what: "clone the queue notification eventfd",
        source,
    })?;
    worker::spawn(
        device.into(),
        vec![q.notify],
        Vec::new(),
        &pause,
        move |ev| {
            if let worker::WorkerEvent::Queue(0) = ev {
                match process_queue(&mut queue, 0, &mem, &interrupt, |c| handle(&mem, c)) {
                    Ok(Drained::All) => {}
                    // Come back after the other events (and a pause) had their turn.
                    Ok(Drained::Budget) => {
                        let _ = again.write(1);
                    }
                    Err(e) => {
                        queue_fault(device, 0, e, &interrupt);
                        return worker::Flow::Stop;
                    }
                }
            }
            worker::Flow::Continue
        },
    )
    .map_err(|source| VirtioError::Io {
        device,
        what: "spawn worker",
        source,
    })
}
#[cfg(test)]
mod block_pool_tests;
#[cfg(test)]
mod block_tests;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod pci_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
