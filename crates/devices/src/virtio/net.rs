//! virtio-net (virtio 1.2 §5.1) on a [`NetBackend`] (a tap or a stream socket): one RX and one TX
//! queue, the 12-byte virtio-net header passed through to a tap (so checksum and TSO offloads go
//! straight to the host kernel; a stream back-end gets no offloads), mergeable RX buffers, the MAC
//! and the link status in the config space. A legacy driver (virtio-pci's I/O BAR) that accepts
//! neither VERSION_1 nor MRG_RXBUF uses the 10-byte header without `num_buffers` (§5.1.6.1
//! legacy note, QEMU's `guest_hdr_len`); the device converts at the guest's side. A back-end losing its peer (passt exiting) clears
//! VIRTIO_NET_S_LINK_UP and raises a config-change interrupt.

use super::backend::NetBackend;
use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, VNET_HDR_LEN};
use super::worker::{self, Flow, Worker, WorkerEvent};
use super::{
    process_queue, queue_fault, ActivateContext, DescChain, DeviceCounters, Drained, QueueFault,
    VirtioDevice, VirtioError, VirtioInterrupt, COMMON_FEATURES, TYPE_NET,
};
use std::sync::Arc;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

// Feature bits (§5.1.3).
const F_CSUM: u32 = 0;
const F_GUEST_CSUM: u32 = 1;
const F_MAC: u32 = 5;
const F_GUEST_TSO4: u32 = 7;
const F_GUEST_TSO6: u32 = 8;
const F_HOST_TSO4: u32 = 11;
const F_HOST_TSO6: u32 = 12;
const F_MRG_RXBUF: u32 = 15;
const F_STATUS: u32 = 16;
/// Config `status`: link up (§5.1.4).
const S_LINK_UP: u16 = 1;
/// Largest frame plus header either way: a 64 KiB TSO frame, its Ethernet header and ours.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 14 + 65535;
/// The legacy header without `num_buffers` (`struct virtio_net_hdr`).
const LEGACY_HDR_LEN: usize = 10;

/// The header length the driver uses with `acked` features: 12 bytes with VERSION_1 or
/// MRG_RXBUF, else the legacy 10.
fn guest_hdr_len(acked: u64) -> usize {
    if acked & ((1 << super::VIRTIO_F_VERSION_1) | (1 << F_MRG_RXBUF)) != 0 {
        VNET_HDR_LEN
    } else {
        LEGACY_HDR_LEN
    }
}

/// The network device.
pub struct NetDevice {
    backend: Arc<dyn NetBackend>,
    mac: [u8; 6],
    worker: Option<Worker>,
    counters: Arc<DeviceCounters>,
}

impl NetDevice {
    pub fn new(backend: Arc<dyn NetBackend>, mac: [u8; 6]) -> Self {
        Self {
            backend,
            mac,
            worker: None,
            counters: Arc::default(),
        }
    }
}

/// The guest-visible offloads the tap must apply to frames it hands us (TUNSETOFFLOAD).
fn tap_offloads(acked: u64) -> u32 {
    let mut f = 0;
    if acked & (1 << F_GUEST_CSUM) != 0 {
        f |= TUN_F_CSUM;
        if acked & (1 << F_GUEST_TSO4) != 0 {
            f |= TUN_F_TSO4;
        }
        if acked & (1 << F_GUEST_TSO6) != 0 {
            f |= TUN_F_TSO6;
        }
    }
    f
}

/// Send one TX chain to the back-end and count it; returns the used length (always 0: TX buffers
/// are read-only).
pub(crate) fn transmit(
    mem: &GuestMemoryMmap,
    backend: &dyn NetBackend,
    counters: &DeviceCounters,
    chain: Result<DescChain, super::ChainError>,
    hdr_len: usize,
) -> u32 {
    match send(mem, backend, chain, hdr_len) {
        Some(n) => counters.completed(0, n as u64),
        None => counters.failed(),
    }
    0
}

/// Write the chain's frame to the back-end; `Some(Ethernet frame length)` once it took it.
fn send(
    mem: &GuestMemoryMmap,
    backend: &dyn NetBackend,
    chain: Result<DescChain, super::ChainError>,
    hdr_len: usize,
) -> Option<usize> {
    let mut frame = tx_frame(mem, chain)?;
    if hdr_len == LEGACY_HDR_LEN {
        // The back-end takes the 12-byte header: num_buffers (0 on TX) after the legacy one.
        frame.splice(LEGACY_HDR_LEN..LEGACY_HDR_LEN, [0, 0]);
    }
    if let Err(e) = backend.write_frame(&frame) {
        tracing::debug!("virtio-net tx: back-end write failed: {e}");
        return None;
    }
    Some(frame.len() - VNET_HDR_LEN)
}

/// The frame (virtio-net header first) a TX chain carries; `None` if the chain is malformed.
/// Public for the fuzz targets (fuzz/).
#[doc(hidden)]
pub fn tx_frame(
    mem: &GuestMemoryMmap,
    chain: Result<DescChain, super::ChainError>,
) -> Option<Vec<u8>> {
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("virtio-net tx: {e}");
            return None;
        }
    };
    // §5.1.6.2: TX buffers are device-readable only, header first.
    let len = chain.readable_len();
    if !chain.writable().is_empty() || len < VNET_HDR_LEN as u64 || len > MAX_FRAME as u64 {
        tracing::debug!(
            "virtio-net tx: chain {} malformed ({len} readable bytes)",
            chain.head
        );
        return None;
    }
    let mut frame = vec![0u8; len as usize];
    if let Err(e) = chain.read_at(mem, 0, &mut frame) {
        tracing::debug!("virtio-net tx: {e}");
        return None;
    }
    Some(frame)
}

/// The RX side: frames read from the back-end wait here until the driver posts buffers.
/// Public for the fuzz targets (fuzz/).
#[doc(hidden)]
pub struct Rx {
    frame: Vec<u8>,
    pending: Option<usize>,
    /// VIRTIO_NET_F_MRG_RXBUF negotiated: a frame may span several buffers (§5.1.6.3.2).
    mergeable: bool,
    /// The guest's header length ([`guest_hdr_len`]); the back-end's is always 12.
    hdr_len: usize,
    counters: Arc<DeviceCounters>,
}

/// What happened to the pending frame when offered the next buffer(s).
enum Placed {
    /// Written into this many used-ring entries.
    Used,
    /// Not enough buffers yet: the frame stays pending. With mergeable buffers, the avail
    /// index seen (the buffers up to it were too few together).
    Wait(Option<u16>),
}

impl Rx {
    /// An RX side with no frame pending; `mergeable`: VIRTIO_NET_F_MRG_RXBUF was negotiated;
    /// `hdr_len`: the guest's virtio-net header length (12, or 10 for a legacy driver).
    pub fn new(mergeable: bool, hdr_len: usize, counters: Arc<DeviceCounters>) -> Self {
        Rx {
            frame: vec![0u8; MAX_FRAME],
            pending: None,
            mergeable,
            hdr_len,
            counters,
        }
    }

    /// Move frames from the back-end into RX buffers until either runs out.
    pub fn pump(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        backend: &dyn NetBackend,
        interrupt: &VirtioInterrupt,
    ) -> Result<(), QueueFault> {
        if !queue.ready() {
            return Ok(());
        }
        let mut used_any = false;
        loop {
            let len = match self.pending {
                Some(n) => n,
                None => match backend.read_frame(&mut self.frame) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!("virtio-net rx: back-end read failed: {e}");
                        break;
                    }
                },
            };
            self.pending = Some(len);
            if len < VNET_HDR_LEN {
                self.pending = None;
                continue;
            }
            let placed = if self.mergeable {
                self.place_merged(queue, mem, len)?
            } else {
                self.place_single(queue, mem, len)?
            };
            match placed {
                Placed::Used => used_any = true,
                Placed::Wait(seen) => {
                    // No buffer: keep the frame, and ask to be told when buffers arrive.
                    let more = queue.enable_notification(mem).map_err(QueueFault::Used)?;
                    let grown = match seen {
                        None => more,
                        Some(idx) => {
                            queue
                                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                                .map_err(QueueFault::Avail)?
                                .0
                                != idx
                        }
                    };
                    if grown {
                        continue;
                    }
                    break;
                }
            }
        }
        // EVENT_IDX's used_event, or else the avail ring's NO_INTERRUPT flag (§2.7.7.2).
        if used_any && super::driver_wants_interrupt(queue, mem)? {
            interrupt.signal_used_queue(RX);
        }
        Ok(())
    }

    /// Without MRG_RXBUF: the frame goes into one buffer.
    fn place_single(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        len: usize,
    ) -> Result<Placed, QueueFault> {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => return Err(QueueFault::Avail(e)),
        };
        let Some(chain) = chain else {
            return Ok(Placed::Wait(None));
        };
        let head = chain.head_index();
        // The legacy 10-byte header drops num_buffers: the guest gets 2 bytes less.
        let short = VNET_HDR_LEN - self.hdr_len;
        let used = match DescChain::parse(chain, mem) {
            Ok(c) if c.readable().is_empty() && c.writable_len() >= (len - short) as u64 => {
                // num_buffers = 1 (§5.1.6.4: present in the v1 header even without MRG_RXBUF).
                self.frame[10..12].copy_from_slice(&1u16.to_le_bytes());
                let written = if short == 0 {
                    c.write_at(mem, 0, &self.frame[..len])
                } else {
                    c.write_at(mem, 0, &self.frame[..self.hdr_len])
                        .and_then(|()| {
                            c.write_at(mem, self.hdr_len as u64, &self.frame[VNET_HDR_LEN..len])
                        })
                };
                match written {
                    Ok(()) => {
                        self.pending = None;
                        self.counters.completed((len - VNET_HDR_LEN) as u64, 0);
                        (len - short) as u32
                    }
                    Err(e) => {
                        // The frame stays pending for the next buffer.
                        tracing::debug!("virtio-net rx: {e}");
                        self.counters.refused_buffer();
                        0
                    }
                }
            }
            Ok(c) => {
                // Too small or wrong direction: the buffer is returned empty and the frame dropped.
                tracing::debug!(
                    "virtio-net rx: chain {} unusable for a {len}-byte frame",
                    c.head
                );
                self.pending = None;
                self.counters.failed();
                0
            }
            Err(e) => {
                // The frame stays pending for the next buffer.
                tracing::debug!("virtio-net rx: {e}");
                self.counters.refused_buffer();
                0
            }
        };
        queue.add_used(mem, head, used).map_err(QueueFault::Used)?;
        Ok(Placed::Used)
    }

    /// With MRG_RXBUF: take buffers until the frame fits, fill them in order and give each its
    /// used entry; `num_buffers` in the header says how many (§5.1.6.4). If the ring runs out
    /// first, the buffers go back on the ring untouched and the frame waits.
    fn place_merged(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        len: usize,
    ) -> Result<Placed, QueueFault> {
        let start = queue.next_avail();
        let mut chains: Vec<DescChain> = Vec::new();
        let mut room = 0u64;
        let mut bad = Vec::new();
        while room < len as u64 {
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(QueueFault::Avail(e)),
            };
            let Some(chain) = chain else {
                // Every buffer up to here was looked at: wait for one past it.
                let seen = queue.next_avail();
                queue.set_next_avail(start);
                return Ok(Placed::Wait(Some(seen)));
            };
            let head = chain.head_index();
            match DescChain::parse(chain, mem) {
                Ok(c) if c.readable().is_empty() && c.writable_len() > 0 => {
                    room += c.writable_len();
                    chains.push(c);
                }
                Ok(c) => bad.push(c.head),
                Err(e) => {
                    tracing::debug!("virtio-net rx: {e}");
                    bad.push(head);
                }
            }
            if chains.len() + bad.len() > usize::from(QUEUE_SIZE) {
                break;
            }
        }
        // Malformed buffers are returned empty, as without MRG_RXBUF.
        for head in bad {
            self.counters.refused_buffer();
            queue.add_used(mem, head, 0).map_err(QueueFault::Used)?;
        }
        if room < len as u64 {
            // More buffers than the ring holds were refused: nothing more to do this round.
            return Ok(Placed::Used);
        }
        let n = chains.len() as u16;
        self.frame[10..12].copy_from_slice(&n.to_le_bytes());
        let mut off = 0usize;
        let mut failed = false;
        for c in &chains {
            let take = (c.writable_len() as usize).min(len - off);
            if !failed {
                if let Err(e) = c.write_at(mem, 0, &self.frame[off..off + take]) {
                    tracing::debug!("virtio-net rx: {e}");
                    failed = true;
                }
            }
            queue
                .add_used(mem, c.head, if failed { 0 } else { take as u32 })
                .map_err(QueueFault::Used)?;
            off += take;
        }
        self.pending = None;
        if failed {
            self.counters.failed();
        } else {
            self.counters.completed((len - VNET_HDR_LEN) as u64, 0);
        }
        Ok(Placed::Used)
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let offloads: &[u32] = if self.backend.offloads() {
            &[
                F_CSUM,
                F_GUEST_CSUM,
                F_GUEST_TSO4,
                F_GUEST_TSO6,
                F_HOST_TSO4,
                F_HOST_TSO6,
            ]
        } else {
            &[]
        };
        COMMON_FEATURES
            | [F_MAC, F_STATUS, F_MRG_RXBUF]
                .iter()
                .chain(offloads)
                .fold(0u64, |f, b| f | (1 << b))
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], status, max_virtqueue_pairs (§5.1.4).
        let mut config = [0u8; 10];
        config[..6].copy_from_slice(&self.mac);
        let status = if self.backend.link_up() { S_LINK_UP } else { 0 };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let ActivateContext {
            mem,
            queues,
            interrupt,
            acked_features,
            pause,
        } = ctx;
        if queues.len() != 2 {
            return Err(VirtioError::QueueCount {
                device: "virtio-net",
                expected: 2,
                got: queues.len(),
            });
        }
        self.backend
            .set_offload(tap_offloads(acked_features))
            .map_err(|source| VirtioError::Io {
                device: "virtio-net",
                what: "TUNSETOFFLOAD",
                source,
            })?;
        let mut notify = Vec::new();
        let mut qs = Vec::new();
        for q in queues {
            notify.push(q.notify);
            qs.push(q.queue);
        }
        let (backend, counters) = (self.backend.clone(), self.counters.clone());
        let hdr_len = guest_hdr_len(acked_features);
        let mut rx = Rx::new(
            acked_features & (1 << F_MRG_RXBUF) != 0,
            hdr_len,
            counters.clone(),
        );
        let mut link = backend.link_up();
        let fds = vec![(self.backend.poll_fd(), EventSet::IN)];
        let tx_again = notify[TX].try_clone().map_err(|source| VirtioError::Io {
            device: "virtio-net",
            what: "clone the TX notification eventfd",
            source,
        })?;
        let w = worker::spawn("virtio-net".into(), notify, fds, &pause, move |ev| {
            let res = match ev {
                WorkerEvent::Queue(TX) => process_queue(&mut qs[TX], TX, &mem, &interrupt, |c| {
                    transmit(&mem, backend.as_ref(), &counters, c, hdr_len)
                })
                .map(|drained| {
                    // More TX chains wait: come back after the other events had their turn.
                    if drained == Drained::Budget {
                        let _ = tx_again.write(1);
                    }
                })
                .map_err(|e| (TX, e)),
                WorkerEvent::Queue(_) | WorkerEvent::Fd(..) => rx
                    .pump(&mut qs[RX], &mem, backend.as_ref(), &interrupt)
                    .map_err(|e| (RX, e)),
            };
            // The back-end lost (or found) its peer: tell the driver (§5.1.4, status).
            if backend.link_up() != link {
                link = !link;
                interrupt.signal_config_change();
            }
            match res {
                Ok(()) => Flow::Continue,
                Err((q, e)) => {
                    queue_fault("virtio-net", q, e, &interrupt);
                    Flow::Stop
                }
            }
        })
        .map_err(|source| VirtioError::Io {
            device: "virtio-net",
            what: "spawn worker",
            source,
        })?;
        self.worker = Some(w);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }
}
